//! What a device's functional units see of memory: DMA reads and writes in an address
//! space (a PASID, or the non-PASID context), with the fault behaviour the unit asks for.

use sva_addr::Pasid;

/// The address space and fault policy of one DMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaCtx {
    /// The PASID the transactions carry; `None` for the non-PASID context (IOVA).
    pub pasid: Option<Pasid>,
    /// Wait for I/O page faults to be resolved (PRI, or an SMMU stall) and retry. When
    /// clear, a page that does not translate ends the DMA at once with
    /// [`FaultReason::NotPresent`] (DSA's block-on-fault = 0: partial completion).
    pub block_on_fault: bool,
}

impl DmaCtx {
    /// DMA in `pasid`'s address space that waits for page faults.
    pub fn pasid(pasid: Pasid) -> Self {
        Self {
            pasid: Some(pasid),
            block_on_fault: true,
        }
    }

    /// DMA on the non-PASID context (IOVA), e.g. to a queue's ring memory.
    pub fn iova() -> Self {
        Self {
            pasid: None,
            block_on_fault: true,
        }
    }
}

/// Why a DMA stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultReason {
    /// The page did not translate and the DMA does not block on faults (or the function
    /// has no way to fault pages in: no PRI and no stall).
    NotPresent,
    /// The page request was answered Invalid Request, or a stall was terminated: the
    /// address is bad or the access not allowed.
    Invalid,
    /// The page request was answered Response Failure: PRI is stopped on the function
    /// until software re-enables it.
    ResponseFailure,
    /// The SMMU aborted the transaction (a configuration error or a terminated fault).
    Aborted,
    /// The ATS Translation Request completed with Unsupported Request or Completer Abort.
    AtsRejected,
    /// No response came in time (page request or stall).
    Timeout,
    /// The function is disabled (bus mastering off, or PASID/ATS not enabled as needed).
    Disabled,
    /// The output address is outside memory.
    Memory,
}

/// A DMA that stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("DMA {} fault at {addr:#x} after {done} bytes: {reason:?}", if *.write { "write" } else { "read" })]
pub struct DmaFault {
    /// The first address that was not transferred.
    pub addr: u64,
    /// Bytes transferred before it (for a copy: bytes copied).
    pub done: u64,
    /// Whether the faulting access was a write.
    pub write: bool,
    /// What happened.
    pub reason: FaultReason,
}

/// A device's path to memory. Transfers go page by page in address order; a fault leaves
/// everything before [`DmaFault::done`] transferred and nothing after it.
pub trait Dma: Send + Sync {
    /// Reads `buf.len()` bytes at `addr`.
    fn read(&self, ctx: DmaCtx, addr: u64, buf: &mut [u8]) -> Result<(), DmaFault>;

    /// Writes `data` at `addr`.
    fn write(&self, ctx: DmaCtx, addr: u64, data: &[u8]) -> Result<(), DmaFault>;

    /// Copies `len` bytes from `src` to `dst` (memmove semantics are the caller's: the
    /// copy runs in ascending address order).
    fn copy(&self, ctx: DmaCtx, src: u64, dst: u64, len: u64) -> Result<(), DmaFault> {
        bounce_copy(self, ctx, src, dst, len)
    }
}

/// [`Dma::copy`] as separate reads and writes of `dma` through a bounce buffer, one 4 KiB
/// page (of the source or the destination, whichever ends first) at a time.
pub(crate) fn bounce_copy<D: Dma + ?Sized>(
    dma: &D,
    ctx: DmaCtx,
    src: u64,
    dst: u64,
    len: u64,
) -> Result<(), DmaFault> {
    let mut buf = vec![0u8; 4096];
    let mut done = 0;
    while done < len {
        // Stop at whichever page boundary comes first, so a fault is exact.
        let s = src + done;
        let d = dst + done;
        let n = (4096 - s % 4096).min(4096 - d % 4096).min(len - done);
        let chunk = &mut buf[..n as usize];
        // Nothing of a chunk whose read faulted was written.
        dma.read(ctx, s, chunk)
            .map_err(|f| DmaFault { done, ..f })?;
        dma.write(ctx, d, chunk).map_err(|f| DmaFault {
            done: done + f.done,
            ..f
        })?;
        done += n;
    }
    Ok(())
}
