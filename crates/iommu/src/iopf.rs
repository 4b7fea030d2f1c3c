//! I/O page faults: page requests from devices (PCI PRI, or SMMU stall events turned into
//! requests by the driver) are grouped per (device, PASID, group index) until the request
//! marked LAST, handled off the driver's interrupt path by worker threads, and answered
//! once per group.
//!
//! The handler finds the address space by PASID, refuses what a user address space must
//! never grant a device (privileged requests), runs the address space's own fault handler
//! for every page of the group, and answers:
//! - `Success`: every page is now mapped with the requested access;
//! - `Invalid`: an address or access the address space does not allow (also an unknown
//!   PASID, or an address space that has exited) — the device must not retry;
//! - `Failure`: the handler itself broke (out of memory, ...) — the device must stop
//!   issuing page requests.
//!
//! Groups of one (device, PASID) are handled in arrival order of their LAST request, on
//! one worker chosen by PASID, so a device sees its responses in order.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use sva_addr::{Pasid, Va};
use sva_mm::{AccessKind, Mm};
use sva_sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use sva_sync::thread::{self, JoinHandle};
use sva_sync::{Condvar, Mutex, RwLock, lock, read, spin_until, wait, write};

/// A device as the core names it (for SMMUv3, the StreamID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u32);

/// One page request, as the driver decoded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// The requesting device.
    pub device: DeviceId,
    /// The address space's PASID.
    pub pasid: Pasid,
    /// Page request group index.
    pub group: u16,
    /// Last request of the group.
    pub last: bool,
    /// The page asked for.
    pub addr: Va,
    /// Read access asked for.
    pub read: bool,
    /// Write access asked for.
    pub write: bool,
    /// Execute access asked for.
    pub exec: bool,
    /// Privileged access asked for.
    pub privileged: bool,
}

/// The answer to one page request group (PCIe PRG response codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PageResponse {
    /// All pages are available; the device retries.
    Success,
    /// An address or access is not allowed; the device must not retry.
    Invalid,
    /// The fault handler failed; the device must stop page requests.
    Failure,
}

/// Where responses go: the IOMMU driver (CMD_PRI_RESP, or CMD_RESUME for stalls).
pub trait ResponseSink: Send + Sync {
    /// Answers group `group` of `(device, pasid)`.
    fn respond(&self, device: DeviceId, pasid: Pasid, group: u16, response: PageResponse);
}

/// Counters of the fault path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IopfStats {
    /// Page requests received.
    pub requests: u64,
    /// Groups answered, by response.
    pub success: u64,
    /// Groups answered Invalid.
    pub invalid: u64,
    /// Groups answered Failure.
    pub failure: u64,
}

type Group = (DeviceId, Pasid, u16);

struct Shared {
    /// Address spaces by PASID (weak: an exited, dropped mm answers Invalid).
    spaces: RwLock<BTreeMap<Pasid, Weak<Mm>>>,
    /// Requests of groups whose LAST has not arrived yet.
    partial: Mutex<BTreeMap<Group, Vec<PageRequest>>>,
    /// Requests received and not yet answered, per PASID (for drain).
    outstanding: Mutex<BTreeMap<Pasid, usize>>,
    idle: Condvar,
    sink: Arc<dyn ResponseSink>,
    stats: Mutex<IopfStats>,
}

/// The I/O page fault queue and its workers.
pub struct IopfQueue {
    shared: Arc<Shared>,
    workers: Vec<(Sender<Vec<PageRequest>>, JoinHandle<()>)>,
}

impl core::fmt::Debug for IopfQueue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IopfQueue")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl IopfQueue {
    /// A queue with `workers` handler threads (at least one) answering through `sink`.
    pub fn new(workers: usize, sink: Arc<dyn ResponseSink>) -> Self {
        let shared = Arc::new(Shared {
            spaces: RwLock::new(BTreeMap::new()),
            partial: Mutex::new(BTreeMap::new()),
            outstanding: Mutex::new(BTreeMap::new()),
            idle: Condvar::new(),
            sink,
            stats: Mutex::new(IopfStats::default()),
        });
        let workers = (0..workers.max(1))
            .map(|i| {
                let (tx, rx) = channel::<Vec<PageRequest>>();
                let shared = shared.clone();
                let handle = thread::Builder::new()
                    .name(format!("iopf-{i}"))
                    .spawn(move || worker(&shared, &rx))
                    .expect("spawning an IOPF worker thread");
                (tx, handle)
            })
            .collect();
        Self { shared, workers }
    }

    /// Routes faults on `pasid` to `mm`.
    pub fn add_space(&self, pasid: Pasid, mm: &Arc<Mm>) {
        write(&self.shared.spaces).insert(pasid, Arc::downgrade(mm));
    }

    /// Stops routing faults on `pasid`: later requests for it are answered Invalid.
    pub fn remove_space(&self, pasid: Pasid) {
        write(&self.shared.spaces).remove(&pasid);
    }

    /// Takes one page request from the driver's interrupt path. Returns at once: the group
    /// is handled on a worker once its LAST request has arrived.
    pub fn report(&self, req: PageRequest) {
        lock(&self.shared.stats).requests += 1;
        *lock(&self.shared.outstanding).entry(req.pasid).or_insert(0) += 1;
        let key = (req.device, req.pasid, req.group);
        let group = {
            let mut partial = lock(&self.shared.partial);
            let reqs = partial.entry(key).or_default();
            reqs.push(req);
            if !req.last {
                return;
            }
            partial.remove(&key).unwrap_or_default()
        };
        let worker = &self.workers[req.pasid.raw() as usize % self.workers.len()];
        // A worker only stops when the queue is dropped, so the send cannot fail here.
        let _ = worker.0.send(group);
    }

    /// Waits until every request received so far for `pasid` has been answered, and
    /// discards partial groups for it (their LAST will never come once the device has
    /// stopped). Part of unbind: after this, no response for `pasid` is in flight.
    pub fn drain(&self, pasid: Pasid) {
        let dropped: usize = {
            let mut partial = lock(&self.shared.partial);
            let keys: Vec<Group> = partial.keys().filter(|k| k.1 == pasid).copied().collect();
            keys.iter()
                .filter_map(|k| partial.remove(k))
                .map(|g| g.len())
                .sum()
        };
        let mut out = lock(&self.shared.outstanding);
        if let Some(n) = out.get_mut(&pasid) {
            *n -= dropped.min(*n);
        }
        while out.get(&pasid).is_some_and(|&n| n > 0) {
            out = wait(&self.shared.idle, out);
        }
        out.remove(&pasid);
    }

    /// Requests received and not yet answered for `pasid`.
    pub fn outstanding(&self, pasid: Pasid) -> usize {
        lock(&self.shared.outstanding)
            .get(&pasid)
            .copied()
            .unwrap_or(0)
    }

    /// Counters.
    pub fn stats(&self) -> IopfStats {
        *lock(&self.shared.stats)
    }
}

impl Drop for IopfQueue {
    fn drop(&mut self) {
        for (tx, handle) in core::mem::take(&mut self.workers) {
            drop(tx);
            let _ = handle.join();
        }
    }
}

/// The next group for a worker (`None` once the queue is dropped): polled for
/// [`sva_sync::SPIN`] first, then waited for.
fn next_group(rx: &Receiver<Vec<PageRequest>>) -> Option<Vec<PageRequest>> {
    spin_until(|| match rx.try_recv() {
        Ok(group) => Some(Some(group)),
        Err(TryRecvError::Disconnected) => Some(None),
        Err(TryRecvError::Empty) => None,
    })
    .unwrap_or_else(|| rx.recv().ok())
}

fn worker(shared: &Shared, rx: &Receiver<Vec<PageRequest>>) {
    while let Some(group) = next_group(rx) {
        let first = group[0];
        let response = handle_group(shared, &group);
        {
            let mut s = lock(&shared.stats);
            match response {
                PageResponse::Success => s.success += 1,
                PageResponse::Invalid => s.invalid += 1,
                PageResponse::Failure => s.failure += 1,
            }
        }
        shared
            .sink
            .respond(first.device, first.pasid, first.group, response);
        let mut out = lock(&shared.outstanding);
        if let Some(n) = out.get_mut(&first.pasid) {
            *n = n.saturating_sub(group.len());
        }
        shared.idle.notify_all();
    }
}

/// Resolves every request of a group; the first refusal decides the answer.
fn handle_group(shared: &Shared, group: &[PageRequest]) -> PageResponse {
    let mm = read(&shared.spaces)
        .get(&group[0].pasid)
        .and_then(Weak::upgrade);
    let Some(mm) = mm else {
        return PageResponse::Invalid;
    };
    for req in group {
        // A user address space never grants privileged device accesses.
        if req.privileged {
            return PageResponse::Invalid;
        }
        let accesses = [
            (req.exec, AccessKind::Execute),
            (req.write, AccessKind::Write),
            (req.read || !(req.write || req.exec), AccessKind::Read),
        ];
        for (wanted, kind) in accesses {
            if !wanted {
                continue;
            }
            match mm.handle_fault(req.addr, kind) {
                Ok(()) => {}
                Err(sva_mm::Error::Segv { .. } | sva_mm::Error::Exited(_)) => {
                    return PageResponse::Invalid;
                }
                Err(_) => return PageResponse::Failure,
            }
        }
    }
    PageResponse::Success
}
