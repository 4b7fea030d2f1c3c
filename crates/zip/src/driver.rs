//! The kernel side: a uacce driver for the ZIP QM (Linux `hisi_zip` + `hisi_qm`'s uacce
//! ops). Opening the device gets a queue pair, its ring memory (DUS: kernel frames that the
//! process maps and the device reaches at an IOVA, as with `dma_alloc_coherent`) and its
//! doorbell page; start programs the SQC/CQC with the IOVAs and the PASID; stop quiesces
//! the queue; put unmaps the IOVA (a device still touching the rings then faults) and frees
//! the queue pair.
//!
//! The TX/RX status words at the end of the DUS are the driver's (as `qm_set_qp_disable`
//! writes them in Linux): cleared on start, set on stop and when the QM reports a queue in
//! error, so the user library refuses to submit to a dead queue.

use crate::Qm;
use crate::cqe::{CQE_SIZE, Cqe};
use crate::layout::{DusLayout, QUEUE_DISABLED, QUEUE_OK};
use crate::qm::{QpError, QpSetup, QueueType};
use crate::sqe::{Alg, SQE_SIZE};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use sva_addr::{Iova, Pa, Pasid};
use sva_iommu::DmaDomain;
use sva_mm::{FrameRegion, IoMemory, Prot};
use sva_physmem::{PhysMemory, Ram};
use sva_uacce::{Error, UACCE_DEV_SVA, UacceInfo, UacceOps, UacceQueueOps};

/// `UACCE_CMD_QM_SET_QP_CTX` = `_IOWR('H', 10, struct hisi_qp_ctx)`: the argument's low 16
/// bits are the queue type (0 compress, 1 decompress); returns the queue pair number.
pub const UACCE_CMD_QM_SET_QP_CTX: u32 = 0xc004_480a;
/// `UACCE_CMD_QM_SET_QP_INFO` = `_IOWR('H', 11, struct hisi_qp_info)`: returns the first
/// 8 bytes of `struct hisi_qp_info` as a little-endian u64: `sqe_size` in bits \[31:0\],
/// `sq_depth` in \[47:32\], `cq_depth` in \[63:48\] ([`QpInfo`]).
pub const UACCE_CMD_QM_SET_QP_INFO: u32 = 0xc010_480b;

/// What `SET_QP_INFO` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpInfo {
    /// Bytes per SQE (128).
    pub sqe_size: u32,
    /// SQ entries.
    pub sq_depth: u16,
    /// CQ entries.
    pub cq_depth: u16,
}

impl QpInfo {
    /// The ioctl's return value.
    pub fn encode(&self) -> u64 {
        u64::from(self.sqe_size)
            | (u64::from(self.sq_depth) << 32)
            | (u64::from(self.cq_depth) << 48)
    }

    /// From the ioctl's return value.
    pub fn decode(v: u64) -> Self {
        Self {
            sqe_size: v as u32,
            sq_depth: (v >> 32) as u16,
            cq_depth: (v >> 48) as u16,
        }
    }
}

/// How the driver makes queue memory reachable by the device at an IOVA. The SVA core's
/// [`DmaDomain`] maps one physically contiguous range per call, while a DUS is a set of
/// separate frames that must appear contiguous at the IOVA; this trait hides how that is
/// done (and lets tests use a plain table).
pub trait QueueMemoryMapper: Send + Sync {
    /// Maps `frames` (each `page_size` bytes) at consecutive IOVAs, readable and
    /// writable by the device; returns the IOVA of the first.
    fn map_frames(&self, frames: &[Pa], page_size: u64) -> Result<Iova, sva_iommu::Error>;

    /// Unmaps what [`QueueMemoryMapper::map_frames`] mapped at `iova`; when this returns,
    /// no device TLB holds the translations.
    fn unmap_frames(
        &self,
        iova: Iova,
        pages: usize,
        page_size: u64,
    ) -> Result<(), sva_iommu::Error>;
}

/// How many times [`DmaDomain`] mapping looks for a free run of IOVA pages.
const MAP_ATTEMPTS: usize = 64;

impl QueueMemoryMapper for DmaDomain {
    fn map_frames(&self, frames: &[Pa], page_size: u64) -> Result<Iova, sva_iommu::Error> {
        let Some((&first, rest)) = frames.split_first() else {
            return Err(sva_iommu::Error::BadMapping { pa: Pa(0), size: 0 });
        };
        // The domain allocates first-fit: map the first frame wherever it lands, then the
        // others right after it. A run cut short by another mapping stays mapped until the
        // end (so the next attempt lands elsewhere) and is then undone.
        let mut abandoned: Vec<Iova> = Vec::new();
        let mut result = Err(sva_iommu::Error::IovaExhausted(
            page_size * frames.len() as u64,
        ));
        for _ in 0..MAP_ATTEMPTS {
            let base = match self.map(first, page_size, Prot::READ | Prot::WRITE) {
                Ok(b) => b,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let mut mapped = vec![base];
            let mut ok = true;
            for (i, &pa) in rest.iter().enumerate() {
                let at = Iova(base.raw() + (i as u64 + 1) * page_size);
                match self.map_at(at, pa, page_size, Prot::READ | Prot::WRITE) {
                    Ok(v) => mapped.push(v),
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                result = Ok(base);
                break;
            }
            abandoned.extend(mapped);
        }
        for iova in abandoned {
            let _ = self.unmap(iova);
        }
        result
    }

    fn unmap_frames(
        &self,
        iova: Iova,
        pages: usize,
        page_size: u64,
    ) -> Result<(), sva_iommu::Error> {
        let mut first_err = Ok(());
        for i in 0..pages {
            let r = self.unmap(Iova(iova.raw() + i as u64 * page_size));
            if first_err.is_ok() {
                first_err = r.map(|_| ());
            }
        }
        first_err
    }
}

/// The driver's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZipDriverConfig {
    /// SQ entries per queue (2..=4096).
    pub sq_depth: u16,
    /// CQ entries per queue (2..=4096).
    pub cq_depth: u16,
    /// Page size of the DUS frames (the processes' page size).
    pub page_size: u64,
}

impl Default for ZipDriverConfig {
    fn default() -> Self {
        Self {
            sq_depth: 1024,
            cq_depth: 1024,
            page_size: 4096,
        }
    }
}

struct DriverInner {
    qm: Arc<Qm>,
    ram: Arc<Ram>,
    mapper: Arc<dyn QueueMemoryMapper>,
    config: ZipDriverConfig,
    /// Per queue pair: the queue using it.
    queues: Mutex<Vec<Option<Weak<QueueInner>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `hisi_zip` uacce driver.
pub struct ZipDriver {
    inner: Arc<DriverInner>,
}

impl core::fmt::Debug for ZipDriver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ZipDriver")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl ZipDriver {
    /// A driver for `qm`, allocating ring memory from `ram` and mapping it for the device
    /// with `mapper` (the device's DMA domain, attached by the caller). Registers the
    /// QM's error handler.
    pub fn new(
        qm: Arc<Qm>,
        ram: Arc<Ram>,
        mapper: Arc<dyn QueueMemoryMapper>,
        config: ZipDriverConfig,
    ) -> Result<Self, Error> {
        let ok = |d: u16| (2..=crate::qm::MAX_DEPTH).contains(&d);
        if !ok(config.sq_depth) || !ok(config.cq_depth) {
            return Err(Error::Invalid("queue depth out of 2..=4096".into()));
        }
        if !config.page_size.is_power_of_two() || config.page_size < 4096 {
            return Err(Error::Invalid("page size".into()));
        }
        let inner = Arc::new(DriverInner {
            queues: Mutex::new(vec![None; usize::from(qm.qp_num())]),
            qm,
            ram,
            mapper,
            config,
        });
        let weak = Arc::downgrade(&inner);
        inner.qm.set_error_handler(Arc::new(move |qp, e| {
            if let Some(d) = weak.upgrade() {
                d.queue_error(qp, e);
            }
        }));
        Ok(Self { inner })
    }

    /// The DUS layout of every queue.
    pub fn layout(&self) -> DusLayout {
        self.inner.layout()
    }

    /// The device.
    pub fn qm(&self) -> &Arc<Qm> {
        &self.inner.qm
    }
}

impl DriverInner {
    fn layout(&self) -> DusLayout {
        DusLayout {
            sq_depth: self.config.sq_depth,
            cq_depth: self.config.cq_depth,
            page_size: self.config.page_size,
        }
    }

    /// The QM's abnormal interrupt: mark the queue's status words.
    fn queue_error(&self, qp: u16, _e: QpError) {
        let q = lock(&self.queues)
            .get(usize::from(qp))
            .and_then(|s| s.as_ref())
            .and_then(Weak::upgrade);
        if let Some(q) = q {
            q.set_status(QUEUE_DISABLED, QUEUE_DISABLED);
        }
    }
}

impl UacceOps for ZipDriver {
    fn info(&self) -> UacceInfo {
        UacceInfo {
            name: "hisi_zip".into(),
            api: "hisi_qm_v2".into(),
            flags: UACCE_DEV_SVA,
            algorithms: Alg::ALL.iter().map(|a| a.name().to_string()).collect(),
            mmio_size: crate::qm::DOORBELL_PAGE_SIZE,
            dus_size: self.inner.layout().size(),
        }
    }

    fn available_instances(&self) -> usize {
        let queues = lock(&self.inner.queues);
        (0..queues.len())
            .filter(|&i| queues[i].is_none() && !self.inner.qm.is_busy(i as u16))
            .count()
    }

    fn get_queue(&self, pasid: Option<Pasid>) -> Result<Arc<dyn UacceQueueOps>, Error> {
        let d = &self.inner;
        let pasid16 = match pasid {
            Some(p) => Some(
                u16::try_from(p.raw())
                    .map_err(|_| Error::Invalid(format!("PASID {p} does not fit the SQC")))?,
            ),
            None => None,
        };
        let layout = d.layout();
        let mut queues = lock(&d.queues);
        let qp = (0..queues.len())
            .find(|&i| queues[i].is_none() && !d.qm.is_busy(i as u16))
            .ok_or(Error::Busy("no free queue pair"))? as u16;
        let dus = FrameRegion::new(d.ram.clone(), layout.pages(), layout.page_size)
            .map_err(|e| Error::Invalid(format!("DUS allocation: {e}")))?;
        let iova = d.mapper.map_frames(dus.frames(), layout.page_size)?;
        let doorbell = match d.qm.doorbell(qp) {
            Ok(db) => db,
            Err(e) => {
                let _ = d
                    .mapper
                    .unmap_frames(iova, layout.pages(), layout.page_size);
                return Err(Error::Invalid(e.to_string()));
            }
        };
        let q = Arc::new(QueueInner {
            drv: d.clone(),
            qp,
            pasid: pasid16,
            dus: Arc::new(dus),
            iova,
            doorbell,
            layout,
            state: Mutex::new(QueueState {
                phase: Phase::Init,
                qtype: QueueType::Compress,
                cursor: 0,
                cursor_phase: true,
            }),
        });
        if let Err(e) = q.program() {
            let _ = d
                .mapper
                .unmap_frames(iova, layout.pages(), layout.page_size);
            return Err(e);
        }
        q.set_status(QUEUE_DISABLED, QUEUE_DISABLED);
        queues[usize::from(qp)] = Some(Arc::downgrade(&q));
        Ok(Arc::new(ZipQueue(q)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Init,
    Started,
    Stopped,
    Released,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Init => "INIT",
            Phase::Started => "STARTED",
            Phase::Stopped => "STOPPED",
            Phase::Released => "RELEASED",
        }
    }
}

struct QueueState {
    phase: Phase,
    qtype: QueueType,
    /// The driver's own CQ cursor for `is_updated`.
    cursor: u16,
    cursor_phase: bool,
}

struct QueueInner {
    drv: Arc<DriverInner>,
    qp: u16,
    pasid: Option<u16>,
    dus: Arc<FrameRegion>,
    iova: Iova,
    doorbell: Arc<dyn IoMemory>,
    layout: DusLayout,
    state: Mutex<QueueState>,
}

impl QueueInner {
    fn ram_at(&self, offset: u64) -> Option<Pa> {
        let page = self.layout.page_size;
        let frame = *self.dus.frames().get((offset / page) as usize)?;
        Some(frame + offset % page)
    }

    fn write_word(&self, offset: u64, v: u32) {
        if let Some(pa) = self.ram_at(offset) {
            let _ = self.drv.ram.write(pa, &v.to_le_bytes());
        }
    }

    fn set_status(&self, rx: u32, tx: u32) {
        self.write_word(self.layout.tx_status_offset(), tx);
        self.write_word(self.layout.rx_status_offset(), rx);
    }

    fn setup(&self, qtype: QueueType) -> QpSetup {
        QpSetup {
            qp: self.qp,
            sq_base: self.iova.raw() + self.layout.sq_offset(),
            sq_depth: self.layout.sq_depth,
            cq_base: self.iova.raw() + self.layout.cq_offset(),
            cq_depth: self.layout.cq_depth,
            pasid: self.pasid,
            qtype,
        }
    }

    /// Writes the SQC and CQC (the queue is not running).
    fn program(&self) -> Result<(), Error> {
        let qtype = lock(&self.state).qtype;
        self.drv
            .qm
            .setup_qp(&self.setup(qtype))
            .map_err(|e| Error::Invalid(e.to_string()))
    }

    fn start(&self) -> Result<(), Error> {
        let mut st = lock(&self.state);
        match st.phase {
            Phase::Init | Phase::Stopped => {}
            p => {
                return Err(Error::State {
                    state: p.name(),
                    op: "start",
                });
            }
        }
        // Fresh rings: no stale CQE may look valid to the first pass (phase 1).
        let rings = self.layout.cq_offset() + (CQE_SIZE as u64) * u64::from(self.layout.cq_depth);
        for off in (0..rings).step_by(self.layout.page_size as usize) {
            if let Some(pa) = self.ram_at(off) {
                let n = (rings - off).min(self.layout.page_size);
                let _ = self.drv.ram.memory().fill(pa, 0, n);
            }
        }
        let qm = &self.drv.qm;
        qm.setup_qp(&self.setup(st.qtype))
            .and_then(|()| qm.start_qp(self.qp))
            .map_err(|e| Error::Invalid(e.to_string()))?;
        st.cursor = 0;
        st.cursor_phase = true;
        st.phase = Phase::Started;
        self.set_status(QUEUE_OK, QUEUE_OK);
        Ok(())
    }

    fn stop(&self) {
        let mut st = lock(&self.state);
        if st.phase != Phase::Started {
            return;
        }
        // Senders first, then the device, then receivers.
        self.write_word(self.layout.tx_status_offset(), QUEUE_DISABLED);
        // A timeout leaves the queue pair busy: `get_queue` will not hand it out again
        // until the engine lets go.
        let _ = self.drv.qm.stop_qp(self.qp);
        self.write_word(self.layout.rx_status_offset(), QUEUE_DISABLED);
        st.phase = Phase::Stopped;
    }

    fn put(&self) {
        self.stop();
        let mut st = lock(&self.state);
        if st.phase == Phase::Released {
            return;
        }
        st.phase = Phase::Released;
        drop(st);
        let _ = self.drv.qm.clear_qp(self.qp);
        let _ = self
            .drv
            .mapper
            .unmap_frames(self.iova, self.layout.pages(), self.layout.page_size);
        let mut queues = lock(&self.drv.queues);
        if let Some(slot) = queues.get_mut(usize::from(self.qp)) {
            *slot = None;
        }
    }

    fn is_updated(&self) -> bool {
        let mut st = lock(&self.state);
        if st.phase != Phase::Started {
            return false;
        }
        let mut updated = false;
        for _ in 0..self.layout.cq_depth {
            let off = self.layout.cq_offset() + u64::from(st.cursor) * CQE_SIZE as u64;
            let Some(pa) = self.ram_at(off) else {
                break;
            };
            let mut raw = [0u8; CQE_SIZE];
            if self.drv.ram.read(pa, &mut raw).is_err() {
                break;
            }
            if Cqe::decode(&raw).phase() != st.cursor_phase {
                break;
            }
            updated = true;
            st.cursor = (st.cursor + 1) % self.layout.cq_depth;
            if st.cursor == 0 {
                st.cursor_phase = !st.cursor_phase;
            }
        }
        updated
    }

    fn ioctl(&self, cmd: u32, arg: u64) -> Result<u64, Error> {
        match cmd {
            UACCE_CMD_QM_SET_QP_CTX => {
                let qtype = QueueType::from_code((arg & 0xffff) as u8)
                    .filter(|_| arg & 0xffff <= 1)
                    .ok_or_else(|| Error::Invalid(format!("queue type {}", arg & 0xffff)))?;
                let mut st = lock(&self.state);
                if st.phase == Phase::Started || st.phase == Phase::Released {
                    return Err(Error::State {
                        state: st.phase.name(),
                        op: "set the queue type",
                    });
                }
                st.qtype = qtype;
                Ok(u64::from(self.qp))
            }
            UACCE_CMD_QM_SET_QP_INFO => Ok(QpInfo {
                sqe_size: SQE_SIZE as u32,
                sq_depth: self.layout.sq_depth,
                cq_depth: self.layout.cq_depth,
            }
            .encode()),
            _ => Err(Error::UnknownIoctl(cmd)),
        }
    }
}

/// One queue handed out by [`ZipDriver`]. Dropping it puts it.
pub struct ZipQueue(Arc<QueueInner>);

impl ZipQueue {
    /// The queue pair number.
    pub fn qp(&self) -> u16 {
        self.0.qp
    }

    /// The IOVA the device reaches the DUS at.
    pub fn dus_iova(&self) -> Iova {
        self.0.iova
    }
}

impl Drop for ZipQueue {
    fn drop(&mut self) {
        self.0.put();
    }
}

impl UacceQueueOps for ZipQueue {
    fn mmio(&self) -> Arc<dyn IoMemory> {
        self.0.doorbell.clone()
    }

    fn dus(&self) -> Option<Arc<FrameRegion>> {
        Some(self.0.dus.clone())
    }

    fn start(&self) -> Result<(), Error> {
        self.0.start()
    }

    fn stop(&self) {
        self.0.stop();
    }

    fn put(&self) {
        self.0.put();
    }

    fn is_updated(&self) -> bool {
        self.0.is_updated()
    }

    fn ioctl(&self, cmd: u32, arg: u64) -> Result<u64, Error> {
        self.0.ioctl(cmd, arg)
    }
}
