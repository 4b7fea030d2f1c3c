//! The QM (queue manager) hardware model: N queue pairs, each an SQ of 128-byte SQEs
//! and a CQ of 16-byte CQEs in memory the device reaches by DMA, described by an SQ
//! context (SQC) and a CQ context (CQC) the driver programs (Linux does it through the
//! mailbox; here [`Qm::set_sqc`] / [`Qm::set_cqc`] take the same 32-byte contexts).
//!
//! Software moves work with doorbells: one 64-bit store ([`Doorbell`]) to the queue's own
//! 4 KiB doorbell page ([`Qm::doorbell`], an [`IoMemory`]; doorbell isolation, as on QM
//! v3: a process only ever maps its own queue's page). An SQ doorbell sets the SQ tail
//! and wakes the engines; a CQ doorbell returns CQ slots. A doorbell store only records
//! the index: it never waits for DMA, because the DMA may be waiting for an I/O page
//! fault that other threads resolve.
//!
//! Engine threads ([`QmConfig::engines`]) take one runnable queue at a time (so a
//! queue's requests complete in order, and one queue stuck on a page fault does not hold
//! the others up), fetch the SQE at the head by DMA on the non-PASID context, run it in
//! the queue's PASID ([`crate::engine`]), write the results into the SQE slot and a CQE
//! with the current phase into the CQ, flipping the phase when the CQ wraps. The engine
//! keeps one CQ slot free (at most `cq_depth - 1` completions outstanding), so the head
//! index software returns is never ambiguous; a full CQ stops fetching until software
//! rings the CQ doorbell. A DMA fault on the rings themselves puts the queue in error:
//! it stops, and the error handler ([`Qm::set_error_handler`], the QM's abnormal
//! interrupt) is told.

use crate::cqe::CQE_SIZE;
use crate::engine::{self, Job, JobResult};
use crate::sqe::{ReqType, SQE_SIZE};
use crate::{Error, Result};
use bitfield_struct::bitfield;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use sva_addr::Pasid;
use sva_mm::{IoError, IoMemory};
use sva_pcie::{Dma, DmaCtx, DmaFault};

/// Size of one queue's doorbell page.
pub const DOORBELL_PAGE_SIZE: u64 = 4096;
/// log2 of the SQE size, as the SQC carries it (dw3\[15:12\]).
pub const SQE_SIZE_LOG2: u8 = 7;
/// The CQE size code the CQC carries (dw3\[15:12\]; Linux `QM_QC_CQE_SIZE`).
pub const CQE_SIZE_CODE: u8 = 4;
/// Largest queue depth a context can describe (12-bit depth − 1).
pub const MAX_DEPTH: u16 = 4096;

/// Doorbell commands (`QM_DOORBELL_CMD_*`).
pub mod doorbell_cmd {
    /// Submission queue: the index is the new SQ tail.
    pub const SQ: u8 = 0;
    /// Completion queue: the index is the new CQ head.
    pub const CQ: u8 = 1;
    /// Event queue (not modelled; ignored).
    pub const EQ: u8 = 2;
    /// Asynchronous event queue (not modelled; ignored).
    pub const AEQ: u8 = 3;
}

/// The 64-bit doorbell value (QM v2 layout, Linux `qm_db_v2`, UADK `qm_db_v2`).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct Doorbell {
    /// \[9:0\] queue number; must be the queue whose page is written.
    #[bits(10)]
    pub sqn: u16,
    /// \[11:10\] reserved.
    #[bits(2)]
    __: u8,
    /// \[15:12\] command ([`doorbell_cmd`]).
    #[bits(4)]
    pub cmd: u8,
    /// \[31:16\] random data (ignored).
    #[bits(16)]
    pub rand: u16,
    /// \[47:32\] index: new SQ tail or new CQ head.
    #[bits(16)]
    pub index: u16,
    /// \[55:48\] priority (ignored).
    #[bits(8)]
    pub priority: u8,
    /// \[63:56\] reserved.
    #[bits(8)]
    __: u8,
}

/// SQC / CQC dw3 (QM v2: `QM_MK_SQC_DW3_V2`, `QM_MK_CQC_DW3_V2`).
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct QcDw3 {
    /// \[11:0\] depth − 1.
    #[bits(12)]
    pub depth_m1: u16,
    /// \[15:12\] entry size: log2(SQE size) = 7 in an SQC, 4 (16-byte CQE) in a CQC.
    #[bits(4)]
    pub entry_size: u8,
    /// \[31:16\] reserved.
    #[bits(16)]
    __: u16,
}

/// SQC halfword 11.
#[bitfield(u16)]
#[derive(PartialEq, Eq, Hash)]
pub struct SqcW11 {
    /// \[5:0\] reserved.
    #[bits(6)]
    __: u8,
    /// \[6\] tail index bit (hardware state; ignored).
    pub tail_idx: bool,
    /// \[7\] PASID enable (`QM_QC_PASID_ENABLE_SHIFT`): buffers are in the PASID's
    /// address space; clear: on the non-PASID context (IOVA).
    pub pasid_en: bool,
    /// \[15:8\] reserved.
    #[bits(8)]
    __: u8,
}

/// SQC halfword 13 (`QM_MK_SQC_W13`).
#[bitfield(u16)]
#[derive(PartialEq, Eq, Hash)]
pub struct SqcW13 {
    /// \[3:0\] priority (ignored).
    #[bits(4)]
    pub priority: u8,
    /// \[7:4\] orders (ignored).
    #[bits(4)]
    pub orders: u8,
    /// \[11:8\] queue type: 0 compress, 1 decompress ([`QueueType`]).
    #[bits(4)]
    pub qtype: u8,
    /// \[15:12\] reserved.
    #[bits(4)]
    __: u8,
}

/// CQC halfword 11.
#[bitfield(u16)]
#[derive(PartialEq, Eq, Hash)]
pub struct CqcW11 {
    /// \[0\] phase the first pass writes (`QM_CQ_PHASE_SHIFT`); Linux starts at 1.
    pub phase: bool,
    /// \[1\] interrupt flag (`QM_CQ_FLAG_SHIFT`; no interrupts are modelled).
    pub flag: bool,
    /// \[6:2\] reserved.
    #[bits(5)]
    __: u8,
    /// \[7\] PASID enable (ignored: the SQC's decides).
    pub pasid_en: bool,
    /// \[15:8\] reserved.
    #[bits(8)]
    __: u8,
}

/// The direction of a queue (SQC w13 type; set by the `SET_QP_CTX` ioctl).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QueueType {
    /// Compression queue (type 0).
    #[default]
    Compress,
    /// Decompression queue (type 1): every request decompresses.
    Decompress,
}

impl QueueType {
    /// The type a code names (0, 1).
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Compress),
            1 => Some(Self::Decompress),
            _ => None,
        }
    }

    /// The code.
    pub fn code(self) -> u8 {
        match self {
            Self::Compress => 0,
            Self::Decompress => 1,
        }
    }
}

/// Size of an SQC or CQC.
pub const QC_SIZE: usize = 32;

fn h16(b: &[u8; QC_SIZE], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn w32(b: &[u8; QC_SIZE], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// An SQ context (Linux `struct qm_sqc`, 32 bytes).
///
/// | bytes | field |
/// |---|---|
/// | 0–1 | head |
/// | 2–3 | tail |
/// | 4–11 | base (low, high) |
/// | 12–15 | dw3 ([`QcDw3`]) |
/// | 16–17 | w8 |
/// | 18–19 | reserved |
/// | 20–21 | pasid |
/// | 22–23 | w11 ([`SqcW11`]) |
/// | 24–25 | cq_num |
/// | 26–27 | w13 ([`SqcW13`]) |
/// | 28–31 | reserved |
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Sqc {
    /// Initial head index.
    pub head: u16,
    /// Initial tail index.
    pub tail: u16,
    /// DMA address (IOVA) of the SQ.
    pub base: u64,
    /// Depth and SQE size.
    pub dw3: QcDw3,
    /// Halfword 8 (unused).
    pub w8: u16,
    /// Reserved.
    pub rsvd0: u16,
    /// PASID of the buffers (16 bits, as on the hardware).
    pub pasid: u16,
    /// PASID enable.
    pub w11: SqcW11,
    /// The CQ this SQ completes into (must be the same queue pair).
    pub cq_num: u16,
    /// Priority, orders, queue type.
    pub w13: SqcW13,
    /// Reserved.
    pub rsvd1: u32,
}

impl Sqc {
    /// Encodes into 32 bytes.
    pub fn encode(&self) -> [u8; QC_SIZE] {
        let mut b = [0u8; QC_SIZE];
        b[0..2].copy_from_slice(&self.head.to_le_bytes());
        b[2..4].copy_from_slice(&self.tail.to_le_bytes());
        b[4..12].copy_from_slice(&self.base.to_le_bytes());
        b[12..16].copy_from_slice(&self.dw3.into_bits().to_le_bytes());
        b[16..18].copy_from_slice(&self.w8.to_le_bytes());
        b[18..20].copy_from_slice(&self.rsvd0.to_le_bytes());
        b[20..22].copy_from_slice(&self.pasid.to_le_bytes());
        b[22..24].copy_from_slice(&self.w11.into_bits().to_le_bytes());
        b[24..26].copy_from_slice(&self.cq_num.to_le_bytes());
        b[26..28].copy_from_slice(&self.w13.into_bits().to_le_bytes());
        b[28..32].copy_from_slice(&self.rsvd1.to_le_bytes());
        b
    }

    /// Decodes 32 bytes.
    pub fn decode(b: &[u8; QC_SIZE]) -> Self {
        Self {
            head: h16(b, 0),
            tail: h16(b, 2),
            base: u64::from(w32(b, 4)) | (u64::from(w32(b, 8)) << 32),
            dw3: QcDw3::from_bits(w32(b, 12)),
            w8: h16(b, 16),
            rsvd0: h16(b, 18),
            pasid: h16(b, 20),
            w11: SqcW11::from_bits(h16(b, 22)),
            cq_num: h16(b, 24),
            w13: SqcW13::from_bits(h16(b, 26)),
            rsvd1: w32(b, 28),
        }
    }

    /// The SQ depth.
    pub fn depth(&self) -> u16 {
        self.dw3.depth_m1() + 1
    }
}

/// A CQ context (Linux `struct qm_cqc`, 32 bytes): as [`Sqc`] up to byte 23, then dw6
/// (24–27) and a reserved word.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Cqc {
    /// Initial head index.
    pub head: u16,
    /// Initial tail index.
    pub tail: u16,
    /// DMA address (IOVA) of the CQ.
    pub base: u64,
    /// Depth and CQE size code.
    pub dw3: QcDw3,
    /// Halfword 8 (unused).
    pub w8: u16,
    /// Reserved.
    pub rsvd0: u16,
    /// PASID (unused: the SQC's decides).
    pub pasid: u16,
    /// Phase and flags.
    pub w11: CqcW11,
    /// dw6 (unused).
    pub dw6: u32,
    /// Reserved.
    pub rsvd1: u32,
}

impl Cqc {
    /// Encodes into 32 bytes.
    pub fn encode(&self) -> [u8; QC_SIZE] {
        let mut b = [0u8; QC_SIZE];
        b[0..2].copy_from_slice(&self.head.to_le_bytes());
        b[2..4].copy_from_slice(&self.tail.to_le_bytes());
        b[4..12].copy_from_slice(&self.base.to_le_bytes());
        b[12..16].copy_from_slice(&self.dw3.into_bits().to_le_bytes());
        b[16..18].copy_from_slice(&self.w8.to_le_bytes());
        b[18..20].copy_from_slice(&self.rsvd0.to_le_bytes());
        b[20..22].copy_from_slice(&self.pasid.to_le_bytes());
        b[22..24].copy_from_slice(&self.w11.into_bits().to_le_bytes());
        b[24..28].copy_from_slice(&self.dw6.to_le_bytes());
        b[28..32].copy_from_slice(&self.rsvd1.to_le_bytes());
        b
    }

    /// Decodes 32 bytes.
    pub fn decode(b: &[u8; QC_SIZE]) -> Self {
        Self {
            head: h16(b, 0),
            tail: h16(b, 2),
            base: u64::from(w32(b, 4)) | (u64::from(w32(b, 8)) << 32),
            dw3: QcDw3::from_bits(w32(b, 12)),
            w8: h16(b, 16),
            rsvd0: h16(b, 18),
            pasid: h16(b, 20),
            w11: CqcW11::from_bits(h16(b, 22)),
            dw6: w32(b, 24),
            rsvd1: w32(b, 28),
        }
    }

    /// The CQ depth.
    pub fn depth(&self) -> u16 {
        self.dw3.depth_m1() + 1
    }
}

/// How a queue pair is set up, in one piece: what a driver turns into an SQC and a CQC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpSetup {
    /// Queue pair number (also the CQ number).
    pub qp: u16,
    /// SQ DMA address (IOVA).
    pub sq_base: u64,
    /// SQ entries.
    pub sq_depth: u16,
    /// CQ DMA address (IOVA).
    pub cq_base: u64,
    /// CQ entries.
    pub cq_depth: u16,
    /// The buffers' PASID; `None`: buffers are IOVAs on the non-PASID context.
    pub pasid: Option<u16>,
    /// Direction.
    pub qtype: QueueType,
}

impl QpSetup {
    /// The SQC, head and tail 0.
    pub fn sqc(&self) -> Sqc {
        Sqc {
            base: self.sq_base,
            dw3: QcDw3::new()
                .with_depth_m1(self.sq_depth.saturating_sub(1))
                .with_entry_size(SQE_SIZE_LOG2),
            pasid: self.pasid.unwrap_or(0),
            w11: SqcW11::new().with_pasid_en(self.pasid.is_some()),
            cq_num: self.qp,
            w13: SqcW13::new().with_qtype(self.qtype.code()),
            ..Sqc::default()
        }
    }

    /// The CQC, head and tail 0, first phase 1.
    pub fn cqc(&self) -> Cqc {
        Cqc {
            base: self.cq_base,
            dw3: QcDw3::new()
                .with_depth_m1(self.cq_depth.saturating_sub(1))
                .with_entry_size(CQE_SIZE_CODE),
            pasid: self.pasid.unwrap_or(0),
            w11: CqcW11::new()
                .with_phase(true)
                .with_pasid_en(self.pasid.is_some()),
            ..Cqc::default()
        }
    }
}

/// Why a queue pair stopped on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QpError {
    /// A DMA to the SQ or CQ faulted (e.g. the ring was unmapped).
    RingFault(DmaFault),
}

/// A queue pair's state as the hardware sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpStatus {
    /// Started and not stopped or in error.
    pub running: bool,
    /// Next SQE the engine fetches.
    pub sq_head: u16,
    /// SQ tail from the last SQ doorbell.
    pub sq_tail: u16,
    /// CQ head from the last CQ doorbell.
    pub cq_head: u16,
    /// Next CQE slot the engine writes.
    pub cq_tail: u16,
    /// Phase of the next CQE.
    pub phase: bool,
    /// An engine is working on the queue.
    pub busy: bool,
    /// Why the queue stopped, if it did on its own.
    pub error: Option<QpError>,
}

/// Counters of the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZipStats {
    /// Requests run, by request type (direction as the SQE named it, queue type aside).
    pub by_type: BTreeMap<ReqType, u64>,
    /// Requests whose request type named nothing.
    pub bad_type: u64,
    /// Completions by status code.
    pub by_status: BTreeMap<u8, u64>,
    /// Input bytes consumed.
    pub bytes_in: u64,
    /// Output bytes produced.
    pub bytes_out: u64,
    /// Source/destination DMA faults (requests ended with ADDR_FAULT).
    pub dma_faults: u64,
    /// DMA faults on the rings (the queue went into error).
    pub ring_faults: u64,
    /// Doorbells accepted.
    pub doorbells: u64,
    /// Doorbells ignored: wrong size or offset, another queue's number, an index out of
    /// range, an EQ/AEQ command, or a queue not running.
    pub ignored_doorbells: u64,
}

/// The QM's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QmConfig {
    /// Queue pairs.
    pub qp_num: u16,
    /// Engine threads (at least 1).
    pub engines: usize,
    /// How long [`Qm::stop_qp`] waits for an engine to let go of a queue.
    pub stop_timeout: Duration,
}

impl Default for QmConfig {
    fn default() -> Self {
        Self {
            qp_num: 64,
            engines: 2,
            stop_timeout: Duration::from_secs(10),
        }
    }
}

/// Called with the queue pair number when a queue goes into error (the QM's abnormal
/// interrupt). Runs on an engine thread, with no QM lock held.
pub type ErrorHandler = Arc<dyn Fn(u16, QpError) + Send + Sync>;

#[derive(Debug, Default)]
struct QpHw {
    sqc: Option<Sqc>,
    cqc: Option<Cqc>,
    running: bool,
    sq_head: u16,
    sq_tail: u16,
    cq_head: u16,
    cq_tail: u16,
    phase: bool,
    busy: bool,
    error: Option<QpError>,
}

impl QpHw {
    /// SQEs waiting, and CQ room for another completion.
    fn runnable(&self) -> bool {
        let (Some(_), Some(cqc)) = (&self.sqc, &self.cqc) else {
            return false;
        };
        if !self.running || self.busy || self.error.is_some() || self.sq_head == self.sq_tail {
            return false;
        }
        let depth = u32::from(cqc.depth());
        let used = (u32::from(self.cq_tail) + depth - u32::from(self.cq_head)) % depth;
        used < depth - 1
    }
}

struct State {
    qps: Vec<QpHw>,
    next: usize,
}

pub(crate) struct Inner {
    dma: Arc<dyn Dma>,
    config: QmConfig,
    state: Mutex<State>,
    /// Signalled when a queue may have become runnable, or on shutdown.
    work: Condvar,
    /// Signalled when an engine lets go of a queue.
    idle: Condvar,
    /// Per queue: the queue is being stopped; engines abandon its request.
    aborts: Vec<AtomicBool>,
    stats: Mutex<ZipStats>,
    error_handler: Mutex<Option<ErrorHandler>>,
    shutdown: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The device: queue pairs, doorbells, engines. Dropping it stops the engines (after
/// their current request) and turns every doorbell page into a bus error.
pub struct Qm {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

impl core::fmt::Debug for Qm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Qm")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Qm {
    /// A QM reaching memory through `dma`, with its engine threads running.
    pub fn new(dma: Arc<dyn Dma>, config: QmConfig) -> Self {
        let config = QmConfig {
            engines: config.engines.max(1),
            qp_num: config.qp_num.min(1024),
            ..config
        };
        let inner = Arc::new(Inner {
            dma,
            config,
            state: Mutex::new(State {
                qps: (0..config.qp_num).map(|_| QpHw::default()).collect(),
                next: 0,
            }),
            work: Condvar::new(),
            idle: Condvar::new(),
            aborts: (0..config.qp_num).map(|_| AtomicBool::new(false)).collect(),
            stats: Mutex::new(ZipStats::default()),
            error_handler: Mutex::new(None),
            shutdown: AtomicBool::new(false),
        });
        let threads = (0..config.engines)
            .filter_map(|i| {
                let inner = inner.clone();
                std::thread::Builder::new()
                    .name(format!("zip-engine-{i}"))
                    .spawn(move || inner.engine_loop())
                    .ok()
            })
            .collect();
        Self { inner, threads }
    }

    /// The configuration in force.
    pub fn config(&self) -> QmConfig {
        self.inner.config
    }

    /// Number of queue pairs.
    pub fn qp_num(&self) -> u16 {
        self.inner.config.qp_num
    }

    fn check_qp(&self, qp: u16) -> Result<()> {
        if qp < self.qp_num() {
            Ok(())
        } else {
            Err(Error::NoQp(qp))
        }
    }

    /// Programs queue pair `qp`'s SQ context (the mailbox `SQC` command). The queue must
    /// not be running.
    pub fn set_sqc(&self, qp: u16, sqc: &Sqc) -> Result<()> {
        self.check_qp(qp)?;
        let bad = |why| Err(Error::BadContext { qp, why });
        if sqc.dw3.entry_size() != SQE_SIZE_LOG2 {
            return bad("SQE size is not 128 bytes");
        }
        if sqc.depth() < 2 {
            return bad("SQ depth below 2");
        }
        if sqc.cq_num != qp {
            return bad("cq_num is not the queue pair's own CQ");
        }
        if QueueType::from_code(sqc.w13.qtype()).is_none() {
            return bad("unknown queue type");
        }
        if sqc.head >= sqc.depth() || sqc.tail >= sqc.depth() {
            return bad("head or tail beyond the depth");
        }
        let mut st = lock(&self.inner.state);
        let hw = &mut st.qps[usize::from(qp)];
        if hw.running || hw.busy {
            return Err(Error::Running(qp));
        }
        hw.sqc = Some(*sqc);
        Ok(())
    }

    /// Programs queue pair `qp`'s CQ context (the mailbox `CQC` command).
    pub fn set_cqc(&self, qp: u16, cqc: &Cqc) -> Result<()> {
        self.check_qp(qp)?;
        let bad = |why| Err(Error::BadContext { qp, why });
        if cqc.dw3.entry_size() != CQE_SIZE_CODE {
            return bad("CQE size code is not 16 bytes");
        }
        if cqc.depth() < 2 {
            return bad("CQ depth below 2");
        }
        if cqc.head >= cqc.depth() || cqc.tail >= cqc.depth() {
            return bad("head or tail beyond the depth");
        }
        let mut st = lock(&self.inner.state);
        let hw = &mut st.qps[usize::from(qp)];
        if hw.running || hw.busy {
            return Err(Error::Running(qp));
        }
        hw.cqc = Some(*cqc);
        Ok(())
    }

    /// Programs both contexts from `setup`.
    pub fn setup_qp(&self, setup: &QpSetup) -> Result<()> {
        self.set_sqc(setup.qp, &setup.sqc())?;
        self.set_cqc(setup.qp, &setup.cqc())
    }

    /// Starts queue pair `qp`: indices and phase from its contexts, doorbells accepted.
    pub fn start_qp(&self, qp: u16) -> Result<()> {
        self.check_qp(qp)?;
        let mut st = lock(&self.inner.state);
        let hw = &mut st.qps[usize::from(qp)];
        if hw.running || hw.busy {
            return Err(Error::Running(qp));
        }
        let (Some(sqc), Some(cqc)) = (hw.sqc, hw.cqc) else {
            return Err(Error::NoContext(qp));
        };
        hw.sq_head = sqc.head;
        hw.sq_tail = sqc.tail;
        hw.cq_head = cqc.head;
        hw.cq_tail = cqc.tail;
        hw.phase = cqc.w11.phase();
        hw.error = None;
        hw.running = true;
        self.inner.aborts[usize::from(qp)].store(false, Ordering::Release);
        drop(st);
        self.inner.work.notify_all();
        Ok(())
    }

    /// Stops queue pair `qp`: no more SQEs are fetched, a request in flight is abandoned
    /// (completed with [`crate::sqe::status::ABORTED`]) at its next transfer boundary,
    /// and this returns once no engine works on the queue, i.e. the device no longer
    /// touches its rings or its PASID. [`Error::StopTimeout`] if that takes longer than
    /// [`QmConfig::stop_timeout`].
    pub fn stop_qp(&self, qp: u16) -> Result<()> {
        self.check_qp(qp)?;
        let deadline = Instant::now() + self.inner.config.stop_timeout;
        let mut st = lock(&self.inner.state);
        st.qps[usize::from(qp)].running = false;
        self.inner.aborts[usize::from(qp)].store(true, Ordering::Release);
        while st.qps[usize::from(qp)].busy {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::StopTimeout(qp));
            }
            st = self
                .inner
                .idle
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// Stops `qp` and forgets its contexts.
    pub fn clear_qp(&self, qp: u16) -> Result<()> {
        self.stop_qp(qp)?;
        let mut st = lock(&self.inner.state);
        let hw = &mut st.qps[usize::from(qp)];
        *hw = QpHw::default();
        Ok(())
    }

    /// Queue pair `qp`'s state.
    pub fn qp_status(&self, qp: u16) -> Result<QpStatus> {
        self.check_qp(qp)?;
        let st = lock(&self.inner.state);
        let hw = &st.qps[usize::from(qp)];
        Ok(QpStatus {
            running: hw.running && hw.error.is_none(),
            sq_head: hw.sq_head,
            sq_tail: hw.sq_tail,
            cq_head: hw.cq_head,
            cq_tail: hw.cq_tail,
            phase: hw.phase,
            busy: hw.busy,
            error: hw.error,
        })
    }

    /// Whether an engine is working on `qp` (it must not be handed to a new user yet).
    pub fn is_busy(&self, qp: u16) -> bool {
        lock(&self.inner.state)
            .qps
            .get(usize::from(qp))
            .is_some_and(|hw| hw.busy)
    }

    /// Queue pair `qp`'s doorbell page (what a process maps as the uacce MMIO region).
    pub fn doorbell(&self, qp: u16) -> Result<Arc<dyn IoMemory>> {
        self.check_qp(qp)?;
        Ok(Arc::new(QpDoorbell {
            qm: Arc::downgrade(&self.inner),
            qp,
        }))
    }

    /// Registers what to call when a queue goes into error.
    pub fn set_error_handler(&self, handler: ErrorHandler) {
        *lock(&self.inner.error_handler) = Some(handler);
    }

    /// The counters.
    pub fn stats(&self) -> ZipStats {
        lock(&self.inner.stats).clone()
    }
}

impl Drop for Qm {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::Release);
        for a in &self.inner.aborts {
            a.store(true, Ordering::Release);
        }
        {
            let _st = lock(&self.inner.state);
            self.inner.work.notify_all();
        }
        let me = std::thread::current().id();
        for t in self.threads.drain(..) {
            // The last reference may go away on an engine thread (in the error handler):
            // that thread ends by itself once it sees the shutdown flag.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

impl Inner {
    pub(crate) fn dma(&self) -> &dyn Dma {
        &*self.dma
    }

    pub(crate) fn stats(&self) -> MutexGuard<'_, ZipStats> {
        lock(&self.stats)
    }

    /// Waits for a runnable queue and claims its head SQE; `None` on shutdown.
    fn next_job(&self) -> Option<Job> {
        let mut st = lock(&self.state);
        loop {
            if self.shutdown.load(Ordering::Acquire) {
                return None;
            }
            let n = st.qps.len();
            let start = st.next;
            let found = (0..n)
                .map(|i| (start + i) % n)
                .find(|&i| st.qps[i].runnable());
            if let Some(i) = found {
                st.next = (i + 1) % n;
                let hw = &mut st.qps[i];
                let (Some(sqc), Some(cqc)) = (hw.sqc, hw.cqc) else {
                    continue;
                };
                hw.busy = true;
                let job = Job {
                    qp: i as u16,
                    sq_base: sqc.base,
                    sq_idx: hw.sq_head,
                    cq_base: cqc.base,
                    cq_idx: hw.cq_tail,
                    phase: hw.phase,
                    data_ctx: if sqc.w11.pasid_en() {
                        DmaCtx::pasid(Pasid(u32::from(sqc.pasid)))
                    } else {
                        DmaCtx::iova()
                    },
                    qtype: QueueType::from_code(sqc.w13.qtype()).unwrap_or_default(),
                };
                hw.sq_head = (hw.sq_head + 1) % sqc.depth();
                return Some(job);
            }
            st = self
                .work
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn engine_loop(self: Arc<Self>) {
        while let Some(job) = self.next_job() {
            let abort = &self.aborts[usize::from(job.qp)];
            let result = engine::run(&self, &job, abort);
            self.finish(&job, result);
        }
    }

    fn finish(&self, job: &Job, result: JobResult) {
        let mut failed = None;
        {
            let mut st = lock(&self.state);
            let hw = &mut st.qps[usize::from(job.qp)];
            hw.busy = false;
            match result {
                JobResult::Completed => {
                    if let Some(cqc) = hw.cqc {
                        hw.cq_tail = (hw.cq_tail + 1) % cqc.depth();
                        if hw.cq_tail == 0 {
                            hw.phase = !hw.phase;
                        }
                    }
                }
                JobResult::RingFault(f) => {
                    let e = QpError::RingFault(f);
                    hw.error = Some(e);
                    hw.running = false;
                    failed = Some(e);
                }
            }
        }
        self.idle.notify_all();
        self.work.notify_all();
        if let Some(e) = failed {
            self.stats().ring_faults += 1;
            let handler = lock(&self.error_handler).clone();
            if let Some(h) = handler {
                h(job.qp, e);
            }
        }
    }

    /// A doorbell store on `qp`'s page.
    fn ring(&self, qp: u16, db: Doorbell) {
        let accepted = {
            let mut st = lock(&self.state);
            let hw = &mut st.qps[usize::from(qp)];
            let live = db.sqn() == qp && hw.running && hw.error.is_none();
            match (live, hw.sqc, hw.cqc) {
                (true, Some(sqc), Some(_))
                    if db.cmd() == doorbell_cmd::SQ && db.index() < sqc.depth() =>
                {
                    hw.sq_tail = db.index();
                    true
                }
                (true, Some(_), Some(cqc))
                    if db.cmd() == doorbell_cmd::CQ && db.index() < cqc.depth() =>
                {
                    hw.cq_head = db.index();
                    true
                }
                _ => false,
            }
        };
        let mut stats = self.stats();
        if accepted {
            stats.doorbells += 1;
            drop(stats);
            self.work.notify_all();
        } else {
            stats.ignored_doorbells += 1;
        }
    }
}

/// One queue's doorbell page. Only an aligned 8-byte store at offset 0 rings; other
/// stores are ignored (and counted), loads read zeroes. Bus error once the device is gone.
struct QpDoorbell {
    qm: Weak<Inner>,
    qp: u16,
}

impl QpDoorbell {
    fn device(&self, offset: u64) -> Result<Arc<Inner>, IoError> {
        match self.qm.upgrade() {
            Some(i) if !i.shutdown.load(Ordering::Acquire) => Ok(i),
            _ => Err(IoError::Bus(offset)),
        }
    }
}

impl IoMemory for QpDoorbell {
    fn size(&self) -> u64 {
        DOORBELL_PAGE_SIZE
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.device(offset)?;
        if offset.saturating_add(buf.len() as u64) > DOORBELL_PAGE_SIZE {
            return Err(IoError::Bus(offset));
        }
        buf.fill(0);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        let qm = self.device(offset)?;
        if offset.saturating_add(data.len() as u64) > DOORBELL_PAGE_SIZE {
            return Err(IoError::Bus(offset));
        }
        match (offset, <[u8; 8]>::try_from(data)) {
            (0, Ok(v)) => qm.ring(self.qp, Doorbell::from_bits(u64::from_le_bytes(v))),
            _ => qm.stats().ignored_doorbells += 1,
        }
        Ok(())
    }
}

/// Byte offset of SQE `idx` in an SQ.
pub(crate) fn sqe_offset(idx: u16) -> u64 {
    u64::from(idx) * SQE_SIZE as u64
}

/// Byte offset of CQE `idx` in a CQ.
pub(crate) fn cqe_offset(idx: u16) -> u64 {
    u64::from(idx) * CQE_SIZE as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doorbell_layout_matches_qm_db_v2() {
        // sqn 5, CQ command, index 0x1234, priority 0: Linux
        // qn | cmd << 12 | index << 32 | priority << 48.
        let db = Doorbell::new()
            .with_sqn(5)
            .with_cmd(doorbell_cmd::CQ)
            .with_index(0x1234);
        assert_eq!(db.into_bits(), 5 | (1 << 12) | (0x1234 << 32));
        assert_eq!(
            Doorbell::from_bits(0x0007_0042_0000_0003),
            Doorbell::new()
                .with_sqn(3)
                .with_index(0x42)
                .with_priority(7)
        );
    }

    #[test]
    fn contexts_pinned_to_bytes() {
        let s = QpSetup {
            qp: 3,
            sq_base: 0x1_2345_6000,
            sq_depth: 1024,
            cq_base: 0x1_2346_0000,
            cq_depth: 1024,
            pasid: Some(0x42),
            qtype: QueueType::Decompress,
        };
        let sqc = s.sqc().encode();
        let mut want = [0u8; 32];
        want[4..12].copy_from_slice(&0x1_2345_6000u64.to_le_bytes());
        // QM_MK_SQC_DW3_V2(128, 1024) = 1023 | 7 << 12
        want[12..16].copy_from_slice(&(1023u32 | 7 << 12).to_le_bytes());
        want[20..22].copy_from_slice(&0x42u16.to_le_bytes());
        want[22..24].copy_from_slice(&(1u16 << 7).to_le_bytes());
        want[24..26].copy_from_slice(&3u16.to_le_bytes());
        // QM_MK_SQC_W13(0, 0, 1): type at bit 8
        want[26..28].copy_from_slice(&(1u16 << 8).to_le_bytes());
        assert_eq!(sqc, want);
        assert_eq!(Sqc::decode(&sqc), s.sqc());
        let cqc = s.cqc().encode();
        let mut want = [0u8; 32];
        want[4..12].copy_from_slice(&0x1_2346_0000u64.to_le_bytes());
        // QM_MK_CQC_DW3_V2(4, 1024) = 1023 | 4 << 12
        want[12..16].copy_from_slice(&(1023u32 | 4 << 12).to_le_bytes());
        want[20..22].copy_from_slice(&0x42u16.to_le_bytes());
        want[22..24].copy_from_slice(&(1u16 | 1 << 7).to_le_bytes());
        assert_eq!(cqc, want);
        assert_eq!(Cqc::decode(&cqc), s.cqc());
    }
}
