//! The uacce queue life cycle on the SMMUv3 platform, with a minimal driver whose
//! "hardware" is a PCIe function: a doorbell store makes it copy the 8 bytes at the
//! address written to the doorbell into the queue memory (DUS) page, by DMA in the
//! queue's PASID. Covers open/bind, mmap once per region, start, poll, put, close,
//! fork, process exit and device removal.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sva_addr::{Pasid, StreamId, Va};
use sva_iommu::DeviceId;
use sva_mm::{AccessKind, FrameRegion, IoError, IoMemory, MapFlags, Mm, Prot};
use sva_pcie::{Capabilities, Dma, DmaCtx, PciFunction};
use sva_physmem::PhysMemory;
use sva_platform::{Platform, PlatformConfig};
use sva_uacce::{
    Error, Queue, QueueState, Region, UACCE_DEV_SVA, Uacce, UacceInfo, UacceOps, UacceQueueOps,
};

const SID: StreamId = StreamId(0x30);

/// A queue of the loopback device.
struct LoopQueue {
    function: Arc<PciFunction>,
    ram: Arc<sva_physmem::Ram>,
    pasid: Option<Pasid>,
    dus: Arc<FrameRegion>,
    started: AtomicBool,
    updated: AtomicBool,
    released: Arc<AtomicUsize>,
}

struct Doorbell(Arc<LoopQueue>);

impl IoMemory for Doorbell {
    fn size(&self) -> u64 {
        4096
    }
    fn read(&self, _: u64, buf: &mut [u8]) -> Result<(), IoError> {
        buf.fill(0);
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        let q = &self.0;
        if offset != 0 || data.len() != 8 {
            return Err(IoError::Bus(offset));
        }
        if !q.started.load(Ordering::Acquire) {
            return Ok(()); // a stopped queue ignores its doorbell
        }
        let addr = u64::from_le_bytes(data.try_into().unwrap());
        let mut word = [0u8; 8];
        let ctx = DmaCtx {
            pasid: q.pasid,
            block_on_fault: true,
        };
        // Done synchronously here only because the test delivers interrupts on a thread.
        if q.function.read(ctx, addr, &mut word).is_ok() {
            q.ram.write(q.dus.frames()[0], &word).unwrap();
            q.updated.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// The driver's handle on a queue; the doorbell shares the queue with it.
struct Handle(Arc<LoopQueue>);

impl UacceQueueOps for Handle {
    fn mmio(&self) -> Arc<dyn IoMemory> {
        Arc::new(Doorbell(self.0.clone()))
    }
    fn dus(&self) -> Option<Arc<FrameRegion>> {
        Some(self.0.dus.clone())
    }
    fn start(&self) -> Result<(), Error> {
        self.0.started.store(true, Ordering::Release);
        Ok(())
    }
    fn stop(&self) {
        self.0.started.store(false, Ordering::Release);
    }
    fn put(&self) {
        self.0.released.fetch_add(1, Ordering::AcqRel);
    }
    fn is_updated(&self) -> bool {
        self.0.updated.swap(false, Ordering::AcqRel)
    }
    fn ioctl(&self, cmd: u32, arg: u64) -> Result<u64, Error> {
        match cmd {
            1 => Ok(arg + 1),
            _ => Err(Error::UnknownIoctl(cmd)),
        }
    }
}

struct LoopDevice {
    function: Arc<PciFunction>,
    ram: Arc<sva_physmem::Ram>,
    queues: usize,
    taken: Arc<Mutex<usize>>,
    released: Arc<AtomicUsize>,
}

impl UacceOps for LoopDevice {
    fn info(&self) -> UacceInfo {
        UacceInfo {
            name: "loop".into(),
            api: "loop_v1".into(),
            flags: UACCE_DEV_SVA,
            algorithms: vec!["copy8".into()],
            mmio_size: 4096,
            dus_size: 4096,
        }
    }
    fn available_instances(&self) -> usize {
        self.queues - *self.taken.lock().unwrap()
    }
    fn get_queue(&self, pasid: Option<Pasid>) -> Result<Arc<dyn UacceQueueOps>, Error> {
        let mut taken = self.taken.lock().unwrap();
        if *taken == self.queues {
            return Err(Error::Busy("no free queue"));
        }
        *taken += 1;
        let dus = FrameRegion::new(self.ram.clone(), 1, 4096)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Arc::new(Handle(Arc::new(LoopQueue {
            function: self.function.clone(),
            ram: self.ram.clone(),
            pasid,
            dus: Arc::new(dus),
            started: AtomicBool::new(false),
            updated: AtomicBool::new(false),
            released: self.released.clone(),
        }))))
    }
}

struct Rig {
    p: Platform,
    dev: Arc<Uacce>,
    released: Arc<AtomicUsize>,
}

fn rig(queues: usize) -> Rig {
    let p = Platform::new(PlatformConfig {
        irq_thread: true,
        ..PlatformConfig::default()
    })
    .unwrap();
    let f = p.sva_function(SID, Capabilities::default()).unwrap();
    let released = Arc::new(AtomicUsize::new(0));
    let ops = Arc::new(LoopDevice {
        function: f,
        ram: p.ram.clone(),
        queues,
        taken: Arc::default(),
        released: released.clone(),
    });
    let dev = Uacce::register(ops, p.sva.as_ref().unwrap(), DeviceId(SID.raw()));
    Rig { p, dev, released }
}

fn ring(mm: &Mm, q: &Queue, doorbell: Va, dus: Va, addr: Va) -> [u8; 8] {
    mm.write(doorbell, &addr.raw().to_le_bytes()).unwrap();
    assert!(q.wait(mm, Duration::from_secs(5)).unwrap());
    let mut out = [0u8; 8];
    mm.read(dus, &mut out).unwrap();
    out
}

#[test]
fn a_queue_runs_work_in_its_process_address_space() {
    let r = rig(4);
    let mm = r.p.system.spawn().unwrap();
    let q = Queue::open(&r.dev, &mm).unwrap();
    assert_eq!(q.pasid(), r.p.sva.as_ref().unwrap().pasid_of(mm.pid()));
    assert_eq!(r.dev.available_instances(), 3);
    let doorbell = q.mmap(&mm, Region::Mmio).unwrap();
    let dus = q.mmap(&mm, Region::Dus).unwrap();
    assert!(matches!(
        q.mmap(&mm, Region::Dus),
        Err(Error::AlreadyMapped(Region::Dus))
    ));
    q.start(&mm).unwrap();
    assert!(matches!(q.start(&mm), Err(Error::State { .. })));
    assert_eq!(q.ioctl(&mm, 1, 41).unwrap(), 42);
    assert!(matches!(q.ioctl(&mm, 9, 0), Err(Error::UnknownIoctl(9))));

    // The source was never touched by the CPU: the device faults it in through PRI.
    let buf = mm
        .mmap(None, 4096, Prot::READ | Prot::WRITE, MapFlags::PRIVATE)
        .unwrap();
    assert_eq!(ring(&mm, &q, doorbell, dus, buf), [0; 8]);
    mm.write(buf, b"SVA-DMA!").unwrap();
    assert_eq!(&ring(&mm, &q, doorbell, dus, buf), b"SVA-DMA!");

    q.put(&mm).unwrap();
    assert_eq!(q.state(), QueueState::Zombie);
    assert_eq!(r.released.load(Ordering::Acquire), 1);
    q.put(&mm).unwrap();
    assert_eq!(r.released.load(Ordering::Acquire), 1, "released once");
    let pasid = q.pasid().unwrap();
    drop(q);
    assert!(
        !r.p.sva.as_ref().unwrap().pasid_allocated(pasid),
        "close unbinds"
    );
    // The mappings died with the handle.
    assert!(mm.write(doorbell, &[0; 8]).is_err());
}

#[test]
fn queues_run_out_and_come_back() {
    let r = rig(1);
    let mm = r.p.system.spawn().unwrap();
    let q = Queue::open(&r.dev, &mm).unwrap();
    let other = r.p.system.spawn().unwrap();
    assert!(matches!(Queue::open(&r.dev, &other), Err(Error::Busy(_))));
    // The failed open left no bond behind.
    assert_eq!(r.p.sva.as_ref().unwrap().pasid_of(other.pid()), None);
    drop(q);
}

#[test]
fn a_forked_child_cannot_use_the_parents_queue() {
    let r = rig(2);
    let parent = r.p.system.spawn().unwrap();
    let q = Queue::open(&r.dev, &parent).unwrap();
    let doorbell = q.mmap(&parent, Region::Mmio).unwrap();
    let dus = q.mmap(&parent, Region::Dus).unwrap();
    q.start(&parent).unwrap();
    let child = r.p.system.fork(parent.pid()).unwrap();
    // The mappings were not inherited.
    assert!(child.write(doorbell, &[0; 8]).is_err());
    assert!(child.read(dus, &mut [0; 8]).is_err());
    // The inherited handle refuses the child.
    for res in [
        q.mmap(&child, Region::Mmio).map(|_| ()),
        q.start(&child),
        q.put(&child),
        q.poll(&child).map(|_| ()),
    ] {
        assert!(matches!(res, Err(Error::NotOwner { .. })), "{res:?}");
    }
    // The child is not bound to anything.
    assert_eq!(r.p.sva.as_ref().unwrap().pasid_of(child.pid()), None);
    // The parent still works.
    let buf = parent
        .mmap(None, 4096, Prot::READ | Prot::WRITE, MapFlags::PRIVATE)
        .unwrap();
    parent.write(buf, b"parent!!").unwrap();
    assert_eq!(&ring(&parent, &q, doorbell, dus, buf), b"parent!!");
}

#[test]
fn process_exit_releases_its_queues_and_the_pasid_waits_for_close() {
    let r = rig(2);
    let mm = r.p.system.spawn().unwrap();
    let q = Queue::open(&r.dev, &mm).unwrap();
    q.start(&mm).unwrap();
    let pasid = q.pasid().unwrap();
    r.p.system.exit(mm.pid()).unwrap();
    assert_eq!(
        q.state(),
        QueueState::Zombie,
        "the exit callback stopped the queue"
    );
    assert_eq!(r.released.load(Ordering::Acquire), 1);
    let sva = r.p.sva.as_ref().unwrap();
    assert!(
        sva.pasid_allocated(pasid),
        "not reused before the handle is closed"
    );
    drop(q);
    assert!(!sva.pasid_allocated(pasid));
}

#[test]
fn device_removal_kills_mappings_and_handles() {
    let r = rig(2);
    let mm = r.p.system.spawn().unwrap();
    let q = Queue::open(&r.dev, &mm).unwrap();
    let doorbell = q.mmap(&mm, Region::Mmio).unwrap();
    let dus = q.mmap(&mm, Region::Dus).unwrap();
    q.start(&mm).unwrap();
    mm.touch(dus, 4096, AccessKind::Write).unwrap();
    let pasid = q.pasid().unwrap();
    r.dev.remove();
    assert!(r.dev.is_removed());
    assert_eq!(r.dev.available_instances(), 0);
    assert_eq!(q.state(), QueueState::Zombie);
    assert!(matches!(
        mm.write(doorbell, &[0; 8]),
        Err(sva_mm::Error::Bus { .. })
    ));
    assert!(matches!(
        mm.read(dus, &mut [0; 8]),
        Err(sva_mm::Error::Bus { .. })
    ));
    assert!(matches!(q.start(&mm), Err(Error::NoDevice)));
    assert!(matches!(q.poll(&mm), Err(Error::NoDevice)));
    assert!(matches!(Queue::open(&r.dev, &mm), Err(Error::NoDevice)));
    assert!(
        !r.p.sva.as_ref().unwrap().pasid_allocated(pasid),
        "removal unbound"
    );
    drop(q); // close after removal is fine
}
