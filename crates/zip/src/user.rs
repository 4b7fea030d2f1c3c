//! The user-space side (UADK's `hisi_qm_udrv` and `wd_comp`): a process that has the
//! queue's DUS and doorbell page mapped writes SQEs into the SQ ring with CPU stores,
//! checks the TX status word, rings the doorbell with one 8-byte store, polls the CQ by
//! phase, copies the completed SQE out and returns the CQ slot with a CQ doorbell.
//!
//! [`QmQueue`] is the ring protocol; [`CompSession`] the compression API on top of it,
//! synchronous ([`CompSession::compress`], [`CompSession::decompress`]) or asynchronous
//! ([`CompSession::submit`] then [`CompSession::poll`], up to depth − 1 in flight).
//! Buffers are plain virtual addresses of the process: the device reaches them through
//! the queue's PASID.

use crate::cqe::{CQE_SIZE, Cqe};
use crate::driver::QpInfo;
use crate::layout::{DusLayout, QUEUE_DISABLED};
use crate::qm::{Doorbell, doorbell_cmd};
use crate::sqe::{Alg, MAX_REQUEST_SIZE, ReqType, SQE_SIZE, Sqe, fault_code, status};
use crate::{Error, Result};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use sva_addr::Va;
use sva_mm::Mm;
use sva_pcie::FaultReason;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a queue is in the process, and its geometry (from `SET_QP_CTX` / `SET_QP_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueMapping {
    /// Where the DUS region is mapped.
    pub dus: Va,
    /// Size of the DUS region (`region_dus_size`).
    pub dus_size: u64,
    /// Where the doorbell page (MMIO region) is mapped.
    pub doorbell: Va,
    /// The queue pair number (`SET_QP_CTX`).
    pub sqn: u16,
    /// Geometry (`SET_QP_INFO`).
    pub info: QpInfo,
}

struct Ring {
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
    used: u16,
    /// Which SQ slots hold a request not yet completed.
    busy: Vec<bool>,
}

/// One queue's rings, driven with the process's own loads and stores.
pub struct QmQueue {
    mm: Arc<Mm>,
    map: QueueMapping,
    layout: DusLayout,
    ring: Mutex<Ring>,
}

impl core::fmt::Debug for QmQueue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("QmQueue")
            .field("map", &self.map)
            .finish_non_exhaustive()
    }
}

impl QmQueue {
    /// The queue mapped in `mm` as `map` says (a started queue, fresh rings).
    pub fn new(mm: &Arc<Mm>, map: QueueMapping) -> Result<Self> {
        if map.info.sqe_size as usize != SQE_SIZE {
            return Err(Error::Invalid("SQE size is not 128"));
        }
        if map.info.sq_depth < 2 || map.info.cq_depth < 2 {
            return Err(Error::Invalid("queue depth below 2"));
        }
        let layout = DusLayout {
            sq_depth: map.info.sq_depth,
            cq_depth: map.info.cq_depth,
            page_size: mm.page_size(),
        };
        if layout.size() != map.dus_size {
            return Err(Error::Invalid("DUS size does not match the queue geometry"));
        }
        Ok(Self {
            mm: mm.clone(),
            map,
            layout,
            ring: Mutex::new(Ring {
                sq_tail: 0,
                cq_head: 0,
                phase: true,
                used: 0,
                busy: vec![false; usize::from(map.info.sq_depth)],
            }),
        })
    }

    /// Where the queue is mapped.
    pub fn mapping(&self) -> QueueMapping {
        self.map
    }

    /// Most requests in flight at once: SQ depth − 1.
    pub fn capacity(&self) -> u16 {
        self.layout.sq_depth - 1
    }

    /// Requests submitted and not yet received.
    pub fn in_flight(&self) -> u16 {
        lock(&self.ring).used
    }

    fn read_u32(&self, offset: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.mm.read(self.map.dus + offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Whether the TX (`tx`) or RX status word says the queue is stopped or in error.
    pub fn disabled(&self, tx: bool) -> Result<bool> {
        let off = if tx {
            self.layout.tx_status_offset()
        } else {
            self.layout.rx_status_offset()
        };
        Ok(self.read_u32(off)? == QUEUE_DISABLED)
    }

    fn ring_doorbell(&self, cmd: u8, index: u16) -> Result<()> {
        let v = Doorbell::new()
            .with_sqn(self.map.sqn)
            .with_cmd(cmd)
            .with_index(index);
        self.mm
            .write(self.map.doorbell, &v.into_bits().to_le_bytes())?;
        Ok(())
    }

    /// Copies `sqe` into the SQ at the tail and rings the doorbell; returns its slot.
    /// [`Error::QueueFull`] with depth − 1 in flight, [`Error::QueueDisabled`] when the TX
    /// status word is set.
    pub fn send(&self, sqe: &Sqe) -> Result<u16> {
        let mut r = lock(&self.ring);
        if r.used >= self.capacity() {
            return Err(Error::QueueFull);
        }
        let slot = r.sq_tail;
        let at = self.map.dus + self.layout.sq_offset() + u64::from(slot) * SQE_SIZE as u64;
        self.mm.write(at, &sqe.encode())?;
        // hisi_qm_send: the TX status is checked after the copy, before the doorbell.
        if self.disabled(true)? {
            return Err(Error::QueueDisabled);
        }
        let tail = (slot + 1) % self.layout.sq_depth;
        self.ring_doorbell(doorbell_cmd::SQ, tail)?;
        r.sq_tail = tail;
        r.used += 1;
        r.busy[usize::from(slot)] = true;
        Ok(slot)
    }

    /// The next completion, if there is one: the slot and the SQE as the engine left it.
    /// Returns the CQ slot to the device. [`Error::QueueDisabled`] if there is none and
    /// the RX status word is set.
    pub fn recv(&self) -> Result<Option<(u16, Sqe)>> {
        let mut r = lock(&self.ring);
        let at = self.map.dus + self.layout.cq_offset() + u64::from(r.cq_head) * CQE_SIZE as u64;
        let mut raw = [0u8; CQE_SIZE];
        self.mm.read(at, &mut raw)?;
        let cqe = Cqe::decode(&raw);
        if cqe.phase() != r.phase {
            drop(r);
            return if self.disabled(false)? {
                Err(Error::QueueDisabled)
            } else {
                Ok(None)
            };
        }
        let slot = cqe.sq_head;
        if !r.busy.get(usize::from(slot)).copied().unwrap_or(false) {
            return Err(Error::StrayCompletion(slot));
        }
        let mut sqe_raw = [0u8; SQE_SIZE];
        let sqe_at = self.map.dus + self.layout.sq_offset() + u64::from(slot) * SQE_SIZE as u64;
        self.mm.read(sqe_at, &mut sqe_raw)?;
        r.busy[usize::from(slot)] = false;
        r.used -= 1;
        r.cq_head = (r.cq_head + 1) % self.layout.cq_depth;
        if r.cq_head == 0 {
            r.phase = !r.phase;
        }
        self.ring_doorbell(doorbell_cmd::CQ, r.cq_head)?;
        Ok(Some((slot, Sqe::decode(&sqe_raw))))
    }
}

/// Compress or decompress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Compress.
    Compress,
    /// Decompress.
    Decompress,
}

/// A completion status, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompStatus {
    /// Compressed.
    Ok,
    /// Compressed, but the output is longer than the input (still a valid stream).
    NegativeCompression,
    /// Decompressed to the end of the stream.
    StreamEnd,
    /// The output did not fit; nothing was written.
    OutputTooSmall,
    /// Checksum mismatch in the stream.
    CrcError,
    /// Not a valid stream.
    DataError,
    /// A buffer address faulted ([`CompResult::fault`] says where).
    AddrFault,
    /// The engine refused the request.
    BadRequest,
    /// A length out of range.
    BadLength,
    /// The queue was stopped while the request ran.
    Aborted,
    /// Another code.
    Other(u8),
}

impl CompStatus {
    /// The status a dw3\[7:0\] code stands for.
    pub fn from_code(code: u8) -> Self {
        match code {
            status::SUCCESS => Self::Ok,
            status::NEGATIVE_COMPRESSION => Self::NegativeCompression,
            status::DECOMP_END => Self::StreamEnd,
            status::OUTPUT_TOO_SMALL => Self::OutputTooSmall,
            status::CRC_ERROR => Self::CrcError,
            status::DATA_ERROR => Self::DataError,
            status::ADDR_FAULT => Self::AddrFault,
            status::BAD_REQUEST => Self::BadRequest,
            status::BAD_LENGTH => Self::BadLength,
            status::ABORTED => Self::Aborted,
            c => Self::Other(c),
        }
    }

    /// Whether the output is complete and valid.
    pub fn is_ok(self) -> bool {
        matches!(self, Self::Ok | Self::NegativeCompression | Self::StreamEnd)
    }
}

/// Where a request's DMA faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultInfo {
    /// The address.
    pub addr: u64,
    /// A destination write (else a source read).
    pub write: bool,
    /// Why, if the code is known.
    pub reason: Option<FaultReason>,
}

/// The result of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompResult {
    /// Status.
    pub status: CompStatus,
    /// Input bytes consumed.
    pub consumed: u32,
    /// Output bytes produced.
    pub produced: u32,
    /// Adler-32 (zlib) or CRC-32 (gzip) of the uncompressed data.
    pub checksum: u32,
    /// Uncompressed size modulo 2^32.
    pub isize: u32,
    /// The fault, for [`CompStatus::AddrFault`].
    pub fault: Option<FaultInfo>,
}

impl CompResult {
    /// Reads the result fields of a completed SQE.
    pub fn from_sqe(sqe: &Sqe) -> Self {
        let status = CompStatus::from_code(sqe.status());
        Self {
            status,
            consumed: sqe.consumed,
            produced: sqe.produced,
            checksum: sqe.checksum,
            isize: sqe.isize,
            fault: (status == CompStatus::AddrFault).then(|| FaultInfo {
                addr: sqe.fault_addr,
                write: sqe.dw3.fault_write(),
                reason: fault_code::decode(sqe.dw3.fault_reason()),
            }),
        }
    }
}

/// An asynchronous request that completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The tag [`CompSession::submit`] returned.
    pub tag: u32,
    /// What was asked.
    pub op: Op,
    /// How it went.
    pub result: CompResult,
}

/// A compression session on one queue, in one format (UADK `wd_comp_sess`).
pub struct CompSession {
    queue: QmQueue,
    /// The uacce queue behind it, when the session opened one: closed with the session.
    handle: Option<sva_uacce::Queue>,
    alg: Alg,
    next_tag: u32,
    pending: BTreeMap<u32, Op>,
    done: VecDeque<Completion>,
    timeout: Duration,
}

impl core::fmt::Debug for CompSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CompSession")
            .field("alg", &self.alg)
            .field("in_flight", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl CompSession {
    /// A session in `alg` on `queue`. Synchronous calls wait at most 10 s.
    pub fn new(queue: QmQueue, alg: Alg) -> Self {
        Self {
            queue,
            handle: None,
            alg,
            next_tag: 0,
            pending: BTreeMap::new(),
            done: VecDeque::new(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Opens a queue of the uacce device `dev` for the process `mm` and starts a session
    /// on it: open (binds `mm`), mmap of the queue memory and the doorbell, START_Q, the
    /// queue's geometry by ioctl. The queue is closed (and `mm` unbound) with the
    /// session.
    pub fn open(dev: &Arc<sva_uacce::Uacce>, mm: &Arc<Mm>, alg: Alg) -> Result<Self> {
        use crate::driver::{UACCE_CMD_QM_SET_QP_CTX, UACCE_CMD_QM_SET_QP_INFO};
        use sva_uacce::{Queue, Region};
        let q = Queue::open(dev, mm)?;
        let dus = q.mmap(mm, Region::Dus)?;
        let doorbell = q.mmap(mm, Region::Mmio)?;
        let sqn = q.ioctl(mm, UACCE_CMD_QM_SET_QP_CTX, 0)?;
        let info = QpInfo::decode(q.ioctl(mm, UACCE_CMD_QM_SET_QP_INFO, 0)?);
        q.start(mm)?;
        let queue = QmQueue::new(
            mm,
            QueueMapping {
                dus,
                dus_size: dev.info().dus_size,
                doorbell,
                sqn: u16::try_from(sqn)
                    .map_err(|_| Error::Invalid("queue number above 16 bits"))?,
                info,
            },
        )?;
        let mut s = Self::new(queue, alg);
        s.handle = Some(q);
        Ok(s)
    }

    /// The uacce queue, when [`CompSession::open`] opened it.
    pub fn handle(&self) -> Option<&sva_uacce::Queue> {
        self.handle.as_ref()
    }

    /// How long synchronous calls wait for their completion.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The queue.
    pub fn queue(&self) -> &QmQueue {
        &self.queue
    }

    /// Requests submitted and not yet returned by [`CompSession::poll`].
    pub fn in_flight(&self) -> usize {
        self.pending.len() + self.done.len()
    }

    /// Submits a request: `len` bytes at `src` into at most `cap` bytes at `dst`.
    /// Returns its tag. [`Error::QueueFull`] when depth − 1 requests are in flight.
    pub fn submit(&mut self, op: Op, src: Va, len: u32, dst: Va, cap: u32) -> Result<u32> {
        if len > MAX_REQUEST_SIZE {
            return Err(Error::Invalid("input above 8 MiB"));
        }
        let req = match op {
            Op::Compress => ReqType::compress(self.alg),
            Op::Decompress => ReqType::decompress(self.alg),
        };
        let tag = self.next_tag;
        let sqe = Sqe::request(
            req,
            src.raw(),
            len,
            dst.raw(),
            cap.min(MAX_REQUEST_SIZE),
            tag,
        );
        self.queue.send(&sqe)?;
        self.next_tag = self.next_tag.wrapping_add(1);
        self.pending.insert(tag, op);
        Ok(tag)
    }

    /// Takes one completion off the CQ, if any, into the done list.
    fn reap(&mut self) -> Result<bool> {
        let Some((_, sqe)) = self.queue.recv()? else {
            return Ok(false);
        };
        let tag = sqe.tag();
        let op = self.pending.remove(&tag).unwrap_or(Op::Compress);
        self.done.push_back(Completion {
            tag,
            op,
            result: CompResult::from_sqe(&sqe),
        });
        Ok(true)
    }

    /// The next completed request, if any (in completion order).
    pub fn poll(&mut self) -> Result<Option<Completion>> {
        if self.done.is_empty() {
            self.reap()?;
        }
        Ok(self.done.pop_front())
    }

    /// Waits up to `timeout` for the next completion.
    pub fn poll_timeout(&mut self, timeout: Duration) -> Result<Option<Completion>> {
        let deadline = Instant::now() + timeout;
        let mut spins = 0u32;
        loop {
            if let Some(c) = self.poll()? {
                return Ok(Some(c));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            spins += 1;
            if spins < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    fn run(&mut self, op: Op, src: Va, len: u32, dst: Va, cap: u32) -> Result<CompResult> {
        let tag = self.submit(op, src, len, dst, cap)?;
        let deadline = Instant::now() + self.timeout;
        let mut spins = 0u32;
        loop {
            if let Some(i) = self.done.iter().position(|c| c.tag == tag) {
                let c = self.done.remove(i).map(|c| c.result);
                if let Some(r) = c {
                    return Ok(r);
                }
            }
            if !self.reap()? {
                if Instant::now() >= deadline {
                    return Err(Error::Timeout(self.timeout));
                }
                spins += 1;
                if spins < 64 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
    }

    /// Compresses `len` bytes at `src` into at most `cap` bytes at `dst`, and waits.
    pub fn compress(&mut self, src: Va, len: u32, dst: Va, cap: u32) -> Result<CompResult> {
        self.run(Op::Compress, src, len, dst, cap)
    }

    /// Decompresses the stream in `len` bytes at `src` into at most `cap` bytes at `dst`,
    /// and waits.
    pub fn decompress(&mut self, src: Va, len: u32, dst: Va, cap: u32) -> Result<CompResult> {
        self.run(Op::Decompress, src, len, dst, cap)
    }
}
