//! The kernel-side driver (Linux `drivers/dma/idxd`, user work queues through uacce):
//! one uacce queue is one opener of a user work queue. A dedicated WQ takes one opener,
//! whose PASID the driver programs into the WQ; a shared WQ takes many, each submitting
//! with its own PASID through ENQCMD. Descriptors and completion records live in user
//! memory, so queues have no device-user-share region.

use crate::{CrFault, Device, Opcode, PORTAL_SIZE, SwErr, WqMode};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use sva_addr::Pasid;
use sva_mm::{FrameRegion, IoMemory};
use sva_uacce::{Error, UACCE_DEV_SVA, UacceInfo, UacceOps, UacceQueueOps};

/// Driver ioctl: the index of the queue's work queue.
pub const IOCTL_WQ_INDEX: u32 = 0x4401;
/// Driver ioctl: 1 if the queue's work queue is shared (submit with ENQCMD), 0 if
/// dedicated (MOVDIR64B).
pub const IOCTL_WQ_SHARED: u32 = 0x4402;

/// Openers a shared work queue admits.
pub const SHARED_WQ_MAX_OPENERS: usize = 1024;

/// Who uses a work queue.
#[derive(Debug, Default)]
struct WqUse {
    /// Dedicated: whether the WQ is taken.
    taken: bool,
    /// Shared: per PASID, (open queues, started queues).
    pasids: BTreeMap<Pasid, (usize, usize)>,
}

impl WqUse {
    fn openers(&self) -> usize {
        usize::from(self.taken) + self.pasids.values().map(|c| c.0).sum::<usize>()
    }
}

struct Shared {
    device: Arc<Device>,
    wqs: Mutex<Vec<WqUse>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<WqUse>> {
        self.wqs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The DSA driver, registered with uacce.
#[derive(Clone)]
pub struct DsaDriver {
    shared: Arc<Shared>,
}

impl core::fmt::Debug for DsaDriver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DsaDriver")
            .field("device", &self.shared.device)
            .finish()
    }
}

fn dev_err(e: crate::Error) -> Error {
    match e {
        crate::Error::Busy(what) => Error::Busy(what),
        other => Error::Invalid(other.to_string()),
    }
}

impl DsaDriver {
    /// Probes `device`: enables its shared work queues (dedicated ones are enabled when
    /// their opener starts its queue, with its PASID programmed).
    pub fn new(device: Arc<Device>) -> crate::Result<Self> {
        let n = device.config().wqs.len();
        for wq in 0..n {
            if device.wq_mode(wq)? == WqMode::Shared {
                device.enable_wq(wq)?;
            }
        }
        Ok(Self {
            shared: Arc::new(Shared {
                device,
                wqs: Mutex::new((0..n).map(|_| WqUse::default()).collect()),
            }),
        })
    }

    /// The device.
    pub fn device(&self) -> &Arc<Device> {
        &self.shared.device
    }

    /// Opens work queue `wq` for `pasid` (opening `/dev/dsa/wqD.Q`). A dedicated WQ
    /// already open is [`Error::Busy`]; a queue without PASID is refused (user work
    /// queues need SVA).
    pub fn get_queue_on(&self, wq: usize, pasid: Option<Pasid>) -> Result<Arc<DsaQueue>, Error> {
        let pasid = Self::need_pasid(pasid)?;
        let mode = self.shared.device.wq_mode(wq).map_err(dev_err)?;
        Self::claim(&mut self.shared.lock()[wq], mode, pasid)?;
        self.queue(wq, mode, pasid)
    }

    fn need_pasid(pasid: Option<Pasid>) -> Result<Pasid, Error> {
        pasid.ok_or_else(|| Error::Invalid("DSA user work queues need SVA (a PASID)".to_string()))
    }

    /// Takes a place on a work queue.
    fn claim(u: &mut WqUse, mode: WqMode, pasid: Pasid) -> Result<(), Error> {
        match mode {
            WqMode::Dedicated if u.taken => Err(Error::Busy("the dedicated work queue is open")),
            WqMode::Dedicated => {
                u.taken = true;
                Ok(())
            }
            WqMode::Shared if u.openers() >= SHARED_WQ_MAX_OPENERS => {
                Err(Error::Busy("the shared work queue has too many openers"))
            }
            WqMode::Shared => {
                u.pasids.entry(pasid).or_default().0 += 1;
                Ok(())
            }
        }
    }

    /// The queue object for a claimed place (the place is given back when it is dropped).
    fn queue(&self, wq: usize, mode: WqMode, pasid: Pasid) -> Result<Arc<DsaQueue>, Error> {
        let queue = DsaQueue {
            shared: self.shared.clone(),
            wq,
            mode,
            pasid,
            portal: self.shared.device.portal(wq).map_err(dev_err)?,
            state: Mutex::new(QueueState::Init),
            seen: AtomicU64::new(0),
        };
        Ok(Arc::new(queue))
    }

    /// The software error register.
    pub fn swerr(&self) -> SwErr {
        self.shared.device.swerr()
    }

    /// Clears the software error register.
    pub fn clear_swerr(&self) {
        self.shared.device.clear_swerr();
    }

    /// Takes the completion records the device could not write (for copying into the
    /// process, as Linux's event-log fault work does).
    pub fn take_cr_faults(&self) -> Vec<CrFault> {
        self.shared.device.take_cr_faults()
    }
}

impl UacceOps for DsaDriver {
    fn info(&self) -> UacceInfo {
        UacceInfo {
            name: "dsa".to_string(),
            api: "dsa_v1".to_string(),
            flags: UACCE_DEV_SVA,
            algorithms: [
                Opcode::Memmove,
                Opcode::Memfill,
                Opcode::Compare,
                Opcode::CrcGen,
                Opcode::Dualcast,
                Opcode::Batch,
            ]
            .iter()
            .map(|op| op.name().to_string())
            .collect(),
            mmio_size: PORTAL_SIZE,
            dus_size: 0,
        }
    }

    fn available_instances(&self) -> usize {
        let device = &self.shared.device;
        self.shared
            .lock()
            .iter()
            .enumerate()
            .map(|(wq, u)| match device.wq_mode(wq) {
                Ok(WqMode::Dedicated) => usize::from(!u.taken),
                Ok(WqMode::Shared) => SHARED_WQ_MAX_OPENERS.saturating_sub(u.openers()),
                Err(_) => 0,
            })
            .sum()
    }

    /// A free dedicated WQ if there is one, else the shared WQ with the fewest openers.
    fn get_queue(&self, pasid: Option<Pasid>) -> Result<Arc<dyn UacceQueueOps>, Error> {
        let pasid = Self::need_pasid(pasid)?;
        let device = &self.shared.device;
        let mode = |wq: usize| device.wq_mode(wq).ok();
        let (wq, m) = {
            let mut wqs = self.shared.lock();
            let free_dedicated = wqs
                .iter()
                .enumerate()
                .find(|(wq, u)| mode(*wq) == Some(WqMode::Dedicated) && !u.taken)
                .map(|(wq, _)| (wq, WqMode::Dedicated));
            let least_used_shared = || {
                wqs.iter()
                    .enumerate()
                    .filter(|(wq, u)| {
                        mode(*wq) == Some(WqMode::Shared) && u.openers() < SHARED_WQ_MAX_OPENERS
                    })
                    .min_by_key(|(_, u)| u.openers())
                    .map(|(wq, _)| (wq, WqMode::Shared))
            };
            let (wq, m) = free_dedicated
                .or_else(least_used_shared)
                .ok_or(Error::Busy("no work queue is free"))?;
            Self::claim(&mut wqs[wq], m, pasid)?;
            (wq, m)
        };
        self.queue(wq, m, pasid)
            .map(|q| q as Arc<dyn UacceQueueOps>)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueState {
    Init,
    Started,
    Stopped,
    Released,
}

impl QueueState {
    fn name(self) -> &'static str {
        match self {
            QueueState::Init => "initialized",
            QueueState::Started => "started",
            QueueState::Stopped => "stopped",
            QueueState::Released => "released",
        }
    }
}

/// One opener of a user work queue.
pub struct DsaQueue {
    shared: Arc<Shared>,
    wq: usize,
    mode: WqMode,
    pasid: Pasid,
    portal: Arc<dyn IoMemory>,
    state: Mutex<QueueState>,
    seen: AtomicU64,
}

impl core::fmt::Debug for DsaQueue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DsaQueue")
            .field("wq", &self.wq)
            .field("mode", &self.mode)
            .field("pasid", &self.pasid)
            .field("state", &self.lock_state())
            .finish()
    }
}

impl DsaQueue {
    /// The work queue.
    pub fn wq(&self) -> usize {
        self.wq
    }

    /// Whether the work queue is dedicated or shared.
    pub fn mode(&self) -> WqMode {
        self.mode
    }

    /// The opener's PASID.
    pub fn pasid(&self) -> Pasid {
        self.pasid
    }

    fn lock_state(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the queue if it is started; called with the state lock held.
    fn stop_locked(&self, state: &mut QueueState) {
        if *state != QueueState::Started {
            return;
        }
        let device = &self.shared.device;
        match self.mode {
            WqMode::Dedicated => {
                // Disabling the WQ drains it; a timeout leaves the WQ disabled anyway.
                let _ = device.disable_wq(self.wq);
            }
            WqMode::Shared => {
                // The driver's table stays locked through the drain so that a start of
                // another queue of this PASID cannot slip between the decision and the
                // drain (engines never take this lock).
                let mut wqs = self.shared.lock();
                let others = wqs[self.wq].pasids.get_mut(&self.pasid).is_some_and(|c| {
                    c.1 = c.1.saturating_sub(1);
                    c.1 > 0
                });
                // With another queue of the process still started the PASID stays in use:
                // its work cannot be told apart, so there is nothing to drain for this one.
                if !others {
                    let _ = device.drain_pasid(self.wq, self.pasid);
                }
                drop(wqs);
            }
        }
        *state = QueueState::Stopped;
    }

    fn release_locked(&self, state: &mut QueueState) {
        if *state == QueueState::Released {
            return;
        }
        self.stop_locked(state);
        let device = &self.shared.device;
        let mut wqs = self.shared.lock();
        let u = &mut wqs[self.wq];
        match self.mode {
            WqMode::Dedicated => {
                u.taken = false;
                let _ = device.set_wq_pasid(self.wq, None);
            }
            WqMode::Shared => {
                if let Some(c) = u.pasids.get_mut(&self.pasid) {
                    c.0 = c.0.saturating_sub(1);
                    if c.0 == 0 {
                        u.pasids.remove(&self.pasid);
                        // The PASID may be given to another process later.
                        let _ = device.unblock_pasid(self.wq, self.pasid);
                    }
                }
            }
        }
        *state = QueueState::Released;
    }
}

impl UacceQueueOps for DsaQueue {
    fn mmio(&self) -> Arc<dyn IoMemory> {
        self.portal.clone()
    }

    fn dus(&self) -> Option<Arc<FrameRegion>> {
        None
    }

    fn start(&self) -> Result<(), Error> {
        let mut state = self.lock_state();
        if !matches!(*state, QueueState::Init | QueueState::Stopped) {
            return Err(Error::State {
                state: state.name(),
                op: "start",
            });
        }
        let device = &self.shared.device;
        match self.mode {
            WqMode::Dedicated => {
                device
                    .set_wq_pasid(self.wq, Some(self.pasid))
                    .map_err(dev_err)?;
                device.enable_wq(self.wq).map_err(dev_err)?;
            }
            WqMode::Shared => {
                let mut wqs = self.shared.lock();
                device.unblock_pasid(self.wq, self.pasid).map_err(dev_err)?;
                if let Some(c) = wqs[self.wq].pasids.get_mut(&self.pasid) {
                    c.1 += 1;
                }
            }
        }
        *state = QueueState::Started;
        Ok(())
    }

    fn stop(&self) {
        let mut state = self.lock_state();
        self.stop_locked(&mut state);
    }

    fn put(&self) {
        let mut state = self.lock_state();
        self.release_locked(&mut state);
    }

    fn is_updated(&self) -> bool {
        let now = self
            .shared
            .device
            .completions(self.wq, Some(self.pasid))
            .unwrap_or(0);
        self.seen.swap(now, Ordering::AcqRel) != now
    }

    /// [`IOCTL_WQ_INDEX`] and [`IOCTL_WQ_SHARED`].
    fn ioctl(&self, cmd: u32, _arg: u64) -> Result<u64, Error> {
        match cmd {
            IOCTL_WQ_INDEX => Ok(self.wq as u64),
            IOCTL_WQ_SHARED => Ok(u64::from(self.mode == WqMode::Shared)),
            _ => Err(Error::UnknownIoctl(cmd)),
        }
    }
}

impl Drop for DsaQueue {
    fn drop(&mut self) {
        let mut state = self.lock_state();
        self.release_locked(&mut state);
    }
}
