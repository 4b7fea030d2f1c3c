//! Registered devices and their queues: the life cycle of Linux's uacce character device
//! (open = allocate a queue bound to the caller's mm, mmap, ioctl START_Q / PUT_Q, poll,
//! release), device removal, and the process-exit hook.

use crate::{Error, Region, Result, UACCE_DEV_SVA, UacceInfo, UacceOps, UacceQueueOps};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};
use sva_addr::{Pasid, Va};
use sva_iommu::{Bond, DeviceId, Sva};
use sva_mm::{FrameRegion, IoError, IoMemory, MapFlags, Mm, Pid, Prot};

/// Queue states (`UACCE_Q_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueState {
    /// Allocated, not started.
    Init,
    /// Started: the device takes work.
    Started,
    /// Released by PUT_Q, process exit or device removal; only close remains.
    Zombie,
}

impl QueueState {
    fn name(self) -> &'static str {
        match self {
            QueueState::Init => "initialised",
            QueueState::Started => "started",
            QueueState::Zombie => "released",
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A device registered with uacce (`/dev/<name>-<id>`).
pub struct Uacce {
    info: UacceInfo,
    device: DeviceId,
    sva: Arc<Sva>,
    /// The driver; `None` once the device is removed.
    ops: RwLock<Option<Arc<dyn UacceOps>>>,
    queues: Mutex<Vec<Weak<QueueInner>>>,
}

impl core::fmt::Debug for Uacce {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Uacce")
            .field("name", &self.info.name)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Uacce {
    /// Registers `ops` for `device` (`uacce_alloc` + `uacce_register`). An SVA device
    /// must have had SVA enabled on the core already; its exit callback becomes uacce's:
    /// when a bound process exits, its queues on this device are stopped and released.
    pub fn register(ops: Arc<dyn UacceOps>, sva: &Arc<Sva>, device: DeviceId) -> Arc<Self> {
        let dev = Arc::new(Self {
            info: ops.info(),
            device,
            sva: sva.clone(),
            ops: RwLock::new(Some(ops)),
            queues: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&dev);
        sva.set_exit_handler(
            device,
            Arc::new(move |_, pasid| {
                if let Some(dev) = weak.upgrade() {
                    dev.mm_exit(pasid);
                }
            }),
        );
        dev
    }

    /// The device's attributes.
    pub fn info(&self) -> &UacceInfo {
        &self.info
    }

    /// The IOMMU-side device.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// Queues that can still be opened (`available_instances`); 0 after removal.
    pub fn available_instances(&self) -> usize {
        self.ops().map_or(0, |o| o.available_instances())
    }

    /// Whether the device was removed.
    pub fn is_removed(&self) -> bool {
        self.ops().is_none()
    }

    fn ops(&self) -> Option<Arc<dyn UacceOps>> {
        self.ops.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn live_queues(&self) -> Vec<Arc<QueueInner>> {
        let mut qs = lock(&self.queues);
        qs.retain(|q| q.strong_count() > 0);
        qs.iter().filter_map(Weak::upgrade).collect()
    }

    /// The exit callback: every queue of the exiting address space is stopped and
    /// released (the device no longer touches it); the bond stays until the handle is
    /// closed, so the PASID is not reused before that.
    fn mm_exit(&self, pasid: Pasid) {
        for q in self.live_queues() {
            if q.bond.is_some_and(|b| b.pasid == pasid) {
                q.release();
            }
        }
    }

    /// Removes the device (`uacce_remove`): every queue is stopped, released and
    /// unbound, its mappings are zapped; the handles stay, and every later call on them
    /// fails with [`Error::NoDevice`].
    pub fn remove(&self) {
        let ops = self.ops.write().unwrap_or_else(|p| p.into_inner()).take();
        if ops.is_none() {
            return;
        }
        for q in self.live_queues() {
            q.release();
            q.unmap_all();
            q.unbind();
        }
    }
}

/// A user mapping of a queue region.
struct Mapping {
    va: Va,
    len: u64,
}

/// Device registers behind a revocable window: once the queue is gone, loads and stores
/// get a bus error, whatever the driver's registers would do.
struct IoWindow {
    inner: Arc<dyn IoMemory>,
    revoked: AtomicBool,
}

impl IoWindow {
    fn check(&self, offset: u64) -> Result<(), IoError> {
        if self.revoked.load(Ordering::Acquire) {
            Err(IoError::Bus(offset))
        } else {
            Ok(())
        }
    }
}

impl IoMemory for IoWindow {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.check(offset)?;
        self.inner.read(offset, buf)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        self.check(offset)?;
        self.inner.write(offset, data)
    }

    fn enqueue(&self, offset: u64, data: &[u8; 64], pasid: Option<Pasid>) -> Result<bool, IoError> {
        self.check(offset)?;
        self.inner.enqueue(offset, data, pasid)
    }
}

struct QueueInner {
    dev: Arc<Uacce>,
    owner: Pid,
    mm: Weak<Mm>,
    bond: Option<Bond>,
    bound: AtomicBool,
    hw: Arc<dyn UacceQueueOps>,
    mmio: Arc<IoWindow>,
    dus: Option<Arc<FrameRegion>>,
    state: Mutex<QueueState>,
    mappings: Mutex<BTreeMap<Region, Mapping>>,
}

impl QueueInner {
    /// Stops and releases the hardware queue, once.
    fn release(&self) {
        let mut st = lock(&self.state);
        match *st {
            QueueState::Zombie => return,
            QueueState::Started => self.hw.stop(),
            QueueState::Init => {}
        }
        self.hw.put();
        *st = QueueState::Zombie;
    }

    /// Zaps the user mappings and revokes the regions behind them.
    fn unmap_all(&self) {
        self.mmio.revoked.store(true, Ordering::Release);
        if let Some(dus) = &self.dus {
            dus.revoke();
        }
        let maps = core::mem::take(&mut *lock(&self.mappings));
        if let Some(mm) = self.mm.upgrade() {
            for m in maps.values() {
                // The VMA may already be gone (munmap by the process): nothing to zap.
                let _ = mm.zap(m.va, m.len);
            }
        }
    }

    fn unbind(&self) {
        if let Some(bond) = self.bond
            && self.bound.swap(false, Ordering::AcqRel)
        {
            let _ = self.dev.sva.unbind(bond);
        }
    }
}

/// An open queue: what a file descriptor on a uacce device is. Dropping it closes it.
pub struct Queue {
    inner: Arc<QueueInner>,
}

impl core::fmt::Debug for Queue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Queue")
            .field("device", &self.inner.dev.info.name)
            .field("owner", &self.inner.owner)
            .field("pasid", &self.pasid())
            .field("state", &self.state())
            .finish()
    }
}

impl Queue {
    /// open(): allocates a queue on `dev` for the process `mm`, bound to its address
    /// space (an SVA device: the mm's PASID goes into the queue context).
    pub fn open(dev: &Arc<Uacce>, mm: &Arc<Mm>) -> Result<Self> {
        let ops = dev.ops().ok_or(Error::NoDevice)?;
        let bond = if dev.info.flags & UACCE_DEV_SVA != 0 {
            Some(dev.sva.bind(dev.device, mm)?)
        } else {
            None
        };
        let hw = match ops.get_queue(bond.map(|b| b.pasid)) {
            Ok(hw) => hw,
            Err(e) => {
                if let Some(b) = bond {
                    let _ = dev.sva.unbind(b);
                }
                return Err(e);
            }
        };
        let inner = Arc::new(QueueInner {
            dev: dev.clone(),
            owner: mm.pid(),
            mm: Arc::downgrade(mm),
            bond,
            bound: AtomicBool::new(bond.is_some()),
            mmio: Arc::new(IoWindow {
                inner: hw.mmio(),
                revoked: AtomicBool::new(false),
            }),
            dus: hw.dus(),
            hw,
            state: Mutex::new(QueueState::Init),
            mappings: Mutex::new(BTreeMap::new()),
        });
        lock(&dev.queues).push(Arc::downgrade(&inner));
        Ok(Self { inner })
    }

    /// The PASID the queue's DMA carries.
    pub fn pasid(&self) -> Option<Pasid> {
        self.inner.bond.map(|b| b.pasid)
    }

    /// The queue's state.
    pub fn state(&self) -> QueueState {
        *lock(&self.inner.state)
    }

    /// The process that opened the queue.
    pub fn owner(&self) -> Pid {
        self.inner.owner
    }

    /// Every call checks that the device is there and that `caller` opened the queue: a
    /// forked child holding the handle must not drive a queue bound to its parent.
    fn check(&self, caller: &Mm) -> Result<()> {
        if self.inner.dev.is_removed() {
            return Err(Error::NoDevice);
        }
        if caller.pid() != self.inner.owner {
            return Err(Error::NotOwner {
                caller: caller.pid(),
                owner: self.inner.owner,
            });
        }
        Ok(())
    }

    /// mmap(): maps `region` into the caller, once per region, shared and neither copied
    /// nor inherited by fork (VM_DONTCOPY | VM_WIPEONFORK).
    pub fn mmap(&self, caller: &Mm, region: Region) -> Result<Va> {
        self.check(caller)?;
        if self.state() == QueueState::Zombie {
            return Err(Error::State {
                state: QueueState::Zombie.name(),
                op: "mmap",
            });
        }
        let mut maps = lock(&self.inner.mappings);
        if maps.contains_key(&region) {
            return Err(Error::AlreadyMapped(region));
        }
        let flags = MapFlags::SHARED | MapFlags::DONTCOPY | MapFlags::WIPEONFORK;
        let rw = Prot::READ | Prot::WRITE;
        let (va, len) = match region {
            Region::Mmio => {
                let io: Arc<dyn IoMemory> = self.inner.mmio.clone();
                (caller.mmap_io(io, rw, flags)?, self.inner.mmio.size())
            }
            Region::Dus => {
                let dus = self.inner.dus.clone().ok_or(Error::NoRegion(region))?;
                let len = dus.frames().len() as u64 * caller.page_size();
                (caller.mmap_frames(dus, rw, flags)?, len)
            }
        };
        maps.insert(region, Mapping { va, len });
        Ok(va)
    }

    /// `UACCE_CMD_START_Q`.
    pub fn start(&self, caller: &Mm) -> Result<()> {
        self.check(caller)?;
        let mut st = lock(&self.inner.state);
        if *st != QueueState::Init {
            return Err(Error::State {
                state: st.name(),
                op: "start",
            });
        }
        self.inner.hw.start()?;
        *st = QueueState::Started;
        Ok(())
    }

    /// A driver ioctl.
    pub fn ioctl(&self, caller: &Mm, cmd: u32, arg: u64) -> Result<u64> {
        self.check(caller)?;
        if self.state() == QueueState::Zombie {
            return Err(Error::State {
                state: QueueState::Zombie.name(),
                op: "ioctl",
            });
        }
        self.inner.hw.ioctl(cmd, arg)
    }

    /// poll(): whether completions arrived since the last poll.
    pub fn poll(&self, caller: &Mm) -> Result<bool> {
        self.check(caller)?;
        if self.state() != QueueState::Started {
            return Ok(false);
        }
        Ok(self.inner.hw.is_updated())
    }

    /// Polls until completions arrive or `timeout` passes; returns whether they did.
    pub fn wait(&self, caller: &Mm, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.poll(caller)? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// `UACCE_CMD_PUT_Q`: stops and releases the hardware queue now (close may come
    /// late). The mappings stay until close; the device no longer serves them.
    pub fn put(&self, caller: &Mm) -> Result<()> {
        self.check(caller)?;
        self.inner.release();
        Ok(())
    }

    /// release(): puts the queue, zaps its mappings and unbinds the address space.
    /// Works after device removal too.
    pub fn close(self) {
        // Drop does the work.
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.inner.release();
        self.inner.unmap_all();
        self.inner.unbind();
    }
}
