//! A scriptable PCIe endpoint: issues DMA, ATS translation requests and page requests at
//! will, and records every message the SMMU sends it. Tests drive the SMMU model with it;
//! the real device models come later and replace it.

use std::sync::Arc;
use std::time::Duration;
use sva_addr::{Pa, Pasid, StreamId, Va};
use sva_physmem::{PhysMemory, Ram};
use sva_smmuv3::{AtsCompletion, AtsRequest, Denied, Endpoint, Smmu, Transaction};
use sva_smmuv3_spec::pri::{PageRequest, PriResponse};
use sva_sync::{Condvar, Deadline, Mutex, MutexGuard, lock};
use sva_vmsa::AccessKind;

/// A message the SMMU sent downstream to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// ATC invalidation request (from CMD_ATC_INV).
    AtcInvalidate {
        /// PASID, if the invalidation is for one.
        ssid: Option<Pasid>,
        /// First byte.
        addr: u64,
        /// Length in bytes.
        size: u64,
    },
    /// PRG response (from CMD_PRI_RESP).
    PriResponse {
        /// PASID of the group.
        ssid: Option<Pasid>,
        /// Page request group index.
        prg_index: u16,
        /// The answer.
        response: PriResponse,
    },
    /// A stalled transaction was resumed or terminated (CMD_RESUME / CMD_STALL_TERM).
    StallResolved {
        /// The stall tag.
        stag: u16,
        /// Retry (true) or abort.
        retry: bool,
    },
}

/// Why a DMA did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DmaError {
    /// The SMMU terminated the transaction.
    #[error("DMA to {addr:#x} aborted by the SMMU ({event:?})")]
    Aborted {
        /// Address of the failing transaction.
        addr: u64,
        /// The event the SMMU recorded, if any.
        event: Option<sva_smmuv3_spec::event::EventId>,
    },
    /// The transaction stalled and nobody resolved it in time.
    #[error("DMA to {addr:#x} stalled (STAG {stag:#x}) and was not resumed")]
    StallTimeout {
        /// Address.
        addr: u64,
        /// Stall tag.
        stag: u16,
    },
    /// The stalled transaction was terminated.
    #[error("stalled DMA to {addr:#x} was terminated")]
    Terminated {
        /// Address.
        addr: u64,
    },
    /// The translated address was outside RAM.
    #[error("memory error at {0}")]
    Memory(Pa),
}

/// The scriptable endpoint behind one StreamID.
pub struct TestEndpoint {
    sid: StreamId,
    smmu: Arc<Smmu>,
    ram: Arc<Ram>,
    messages: Mutex<Vec<Message>>,
    changed: Condvar,
}

impl core::fmt::Debug for TestEndpoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TestEndpoint")
            .field("sid", &self.sid)
            .finish_non_exhaustive()
    }
}

/// How long a stalled DMA waits for CMD_RESUME before giving up.
const STALL_WAIT: Duration = Duration::from_secs(5);

impl TestEndpoint {
    /// An endpoint at `sid`, attached to `smmu` so it receives its messages.
    pub fn attach(smmu: &Arc<Smmu>, ram: &Arc<Ram>, sid: StreamId) -> Arc<Self> {
        let ep = Arc::new(Self {
            sid,
            smmu: smmu.clone(),
            ram: ram.clone(),
            messages: Mutex::new(Vec::new()),
            changed: Condvar::new(),
        });
        smmu.attach_endpoint(sid, &ep);
        ep
    }

    /// The StreamID.
    pub fn sid(&self) -> StreamId {
        self.sid
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Message>> {
        lock(&self.messages)
    }

    fn push(&self, m: Message) {
        self.lock().push(m);
        self.changed.notify_all();
    }

    /// Every message received so far, oldest first, and forgets them.
    pub fn take_messages(&self) -> Vec<Message> {
        core::mem::take(&mut *self.lock())
    }

    /// One untranslated transaction of `access` at `addr`: the physical address, waiting
    /// for a stall to be resolved (and retrying on CMD_RESUME with retry). The address is
    /// only current at the moment of return; DMA goes through [`TestEndpoint::dma_read`]
    /// and [`TestEndpoint::dma_write`], which access memory within the transaction.
    pub fn transact(
        &self,
        ssid: Option<Pasid>,
        addr: u64,
        access: AccessKind,
        privileged: bool,
    ) -> Result<Pa, DmaError> {
        self.with_translation(ssid, addr, access, privileged, Ok)
    }

    /// Runs `f` on the output address of a transaction, inside the transaction: no
    /// invalidation of the translation completes while `f` runs.
    fn with_translation<R>(
        &self,
        ssid: Option<Pasid>,
        addr: u64,
        access: AccessKind,
        privileged: bool,
        mut f: impl FnMut(Pa) -> Result<R, DmaError>,
    ) -> Result<R, DmaError> {
        let txn = Transaction {
            sid: self.sid,
            ssid,
            addr,
            access,
            privileged,
            translated: false,
        };
        loop {
            match self.smmu.transact(&txn, &mut f) {
                Ok(r) => return r,
                Err(Denied::Aborted { event }) => {
                    return Err(DmaError::Aborted { addr, event });
                }
                Err(Denied::Stalled { stag }) => {
                    if !self.wait_stall(stag)? {
                        return Err(DmaError::Terminated { addr });
                    }
                }
            }
        }
    }

    /// Waits for the stall `stag` to be resolved; returns whether to retry.
    fn wait_stall(&self, stag: u16) -> Result<bool, DmaError> {
        let mut msgs = self.lock();
        let deadline = Deadline::after(STALL_WAIT);
        loop {
            if let Some(i) = msgs
                .iter()
                .position(|m| matches!(m, Message::StallResolved { stag: s, .. } if *s == stag))
            {
                let Message::StallResolved { retry, .. } = msgs.remove(i) else {
                    unreachable!("matched above")
                };
                return Ok(retry);
            }
            msgs = deadline
                .wait(&self.changed, msgs)
                .ok_or(DmaError::StallTimeout { addr: 0, stag })?;
        }
    }

    /// Reads `len` bytes at `addr` by DMA, one transaction per 4 KiB page.
    pub fn dma_read(
        &self,
        ssid: Option<Pasid>,
        addr: u64,
        len: usize,
    ) -> Result<Vec<u8>, DmaError> {
        let mut out = vec![0u8; len];
        self.per_page(addr, len, |at, pos, n| {
            self.with_translation(ssid, at, AccessKind::Read, false, |pa| {
                self.ram
                    .read(pa, &mut out[pos..pos + n])
                    .map_err(|_| DmaError::Memory(pa))
            })
        })?;
        Ok(out)
    }

    /// Writes `data` at `addr` by DMA, one transaction per 4 KiB page; nothing is written
    /// past the first page that fails.
    pub fn dma_write(&self, ssid: Option<Pasid>, addr: u64, data: &[u8]) -> Result<(), DmaError> {
        self.per_page(addr, data.len(), |at, pos, n| {
            self.with_translation(ssid, at, AccessKind::Write, false, |pa| {
                self.ram
                    .write(pa, &data[pos..pos + n])
                    .map_err(|_| DmaError::Memory(pa))
            })
        })
    }

    fn per_page(
        &self,
        addr: u64,
        len: usize,
        mut f: impl FnMut(u64, usize, usize) -> Result<(), DmaError>,
    ) -> Result<(), DmaError> {
        let mut pos = 0;
        while pos < len {
            let at = addr + pos as u64;
            let n = ((4096 - at % 4096) as usize).min(len - pos);
            f(at, pos, n)?;
            pos += n;
        }
        Ok(())
    }

    /// An ATS Translation Request.
    pub fn ats(&self, ssid: Option<Pasid>, addr: u64, write: bool) -> AtsCompletion {
        self.smmu.ats_translate(&AtsRequest {
            sid: self.sid,
            ssid,
            addr,
            no_write: !write,
            exec: false,
            privileged: false,
        })
    }

    /// A PRI Page Request message for the page at `addr`.
    pub fn page_request(
        &self,
        ssid: Option<Pasid>,
        addr: u64,
        prg_index: u16,
        last: bool,
        write: bool,
    ) {
        self.smmu.page_request(&PageRequest {
            stream_id: self.sid,
            substream_id: ssid,
            addr: Va(addr & !0xfff),
            prg_index,
            last,
            read: true,
            write,
            exec: false,
            privileged: false,
        });
    }
}

impl Endpoint for TestEndpoint {
    fn atc_invalidate(&self, ssid: Option<Pasid>, addr: u64, size: u64) {
        self.push(Message::AtcInvalidate { ssid, addr, size });
    }

    fn pri_response(&self, ssid: Option<Pasid>, prg_index: u16, response: PriResponse) {
        self.push(Message::PriResponse {
            ssid,
            prg_index,
            response,
        });
    }

    fn stall_resolved(&self, stag: u16, retry: bool) {
        self.push(Message::StallResolved { stag, retry });
    }
}
