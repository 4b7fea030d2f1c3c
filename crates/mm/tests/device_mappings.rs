//! Device mappings in process address spaces: device registers (`mmap_io`), driver-owned
//! frames (`mmap_frames`), zap, ENQCMD and the process PASID.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use sva_addr::{Pasid, Va};
use sva_mm::{
    AccessKind, Error, FrameRegion, InvalidateReason, IoError, IoMemory, MapFlags, Mm, MmConfig,
    Prot, SegvCode, System,
};
use sva_physmem::{AllocStats, PhysMemory, Ram};

const RW: Prot = Prot::READ.union(Prot::WRITE);
const SHARED: MapFlags = MapFlags::SHARED;
/// What uacce passes for queue mappings.
const UACCE: MapFlags = MapFlags::SHARED
    .union(MapFlags::DONTCOPY)
    .union(MapFlags::WIPEONFORK);

type Enqueued = (u64, [u8; 64], Option<Pasid>);

/// Device registers backed by bytes: records every write and ENQCMD, answers reads from
/// what was written (or preset), answers Bus once `gone`.
struct Regs {
    size: u64,
    bytes: Mutex<Vec<u8>>,
    writes: Mutex<Vec<(u64, Vec<u8>)>>,
    reads: Mutex<Vec<(u64, usize)>>,
    enqueued: Mutex<Vec<Enqueued>>,
    gone: AtomicBool,
    accept: AtomicBool,
    /// Takes ENQCMD at all (otherwise the trait's default answers Unsupported).
    portal: bool,
}

impl Regs {
    fn new(size: u64) -> Arc<Self> {
        Arc::new(Self {
            size,
            bytes: Mutex::new(vec![0; size as usize]),
            writes: Mutex::default(),
            reads: Mutex::default(),
            enqueued: Mutex::default(),
            gone: AtomicBool::new(false),
            accept: AtomicBool::new(true),
            portal: true,
        })
    }

    fn check(&self, offset: u64, len: usize) -> Result<usize, IoError> {
        if self.gone.load(Ordering::SeqCst) || offset + len as u64 > self.size {
            return Err(IoError::Bus(offset));
        }
        Ok(offset as usize)
    }

    fn writes(&self) -> Vec<(u64, Vec<u8>)> {
        self.writes.lock().unwrap().clone()
    }
}

impl IoMemory for Regs {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let at = self.check(offset, buf.len())?;
        buf.copy_from_slice(&self.bytes.lock().unwrap()[at..at + buf.len()]);
        self.reads.lock().unwrap().push((offset, buf.len()));
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        let at = self.check(offset, data.len())?;
        self.bytes.lock().unwrap()[at..at + data.len()].copy_from_slice(data);
        self.writes.lock().unwrap().push((offset, data.to_vec()));
        Ok(())
    }

    fn enqueue(&self, offset: u64, data: &[u8; 64], pasid: Option<Pasid>) -> Result<bool, IoError> {
        if !self.portal {
            return Err(IoError::Unsupported(offset));
        }
        self.check(offset, 64)?;
        self.enqueued.lock().unwrap().push((offset, *data, pasid));
        Ok(self.accept.load(Ordering::SeqCst))
    }
}

fn frames(ram: &Arc<Ram>, pages: usize) -> Arc<FrameRegion> {
    Arc::new(FrameRegion::new(ram.clone(), pages, PAGE).unwrap())
}

/// A system, its RAM, a process and a region of `pages` driver frames.
fn process_and_frames(pages: usize) -> (System, Arc<Ram>, Arc<Mm>, Arc<FrameRegion>) {
    let sys = system();
    let ram = sys.ram().clone();
    let mm = sys.spawn().unwrap();
    let region = frames(&ram, pages);
    (sys, ram, mm, region)
}

/// Every frame and block allocated since `start` is free again.
fn assert_ram_back_to(ram: &Ram, start: AllocStats) {
    assert_eq!(ram.stats().used_frames, start.used_frames);
    assert_eq!(ram.stats().blocks, start.blocks);
}

/// A private anonymous page right below `va` in `mm`, holding `data`.
fn anon_page_below(mm: &Mm, va: Va, data: &[u8]) -> Va {
    let anon = mm
        .mmap(
            Some(va - PAGE),
            PAGE,
            RW,
            MapFlags::PRIVATE | MapFlags::FIXED_NOREPLACE,
        )
        .unwrap();
    mm.write(anon, data).unwrap();
    anon
}

fn refcounts(ram: &Ram, region: &FrameRegion) -> Vec<u32> {
    region
        .frames()
        .iter()
        .map(|&pa| ram.refcount(pa).unwrap())
        .collect()
}

fn is_segv(e: &Error, code: SegvCode, access: AccessKind) -> bool {
    matches!(e, Error::Segv { code: c, access: a, .. } if *c == code && *a == access)
}

// ---- device registers ----

#[test]
fn io_accesses_reach_the_region_at_the_right_offset_and_use_no_frames() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let used = sys.ram().stats().used_frames;
    let regs = Regs::new(2 * PAGE);
    let va = mm.mmap_io(regs.clone(), RW, SHARED).unwrap();
    assert!(va.is_aligned(PAGE));
    let vmas = mm.vmas().unwrap();
    assert_eq!(vmas.len(), 1);
    assert_eq!((vmas[0].start, vmas[0].end), (va, va + 2 * PAGE));
    assert!(vmas[0].flags.contains(MapFlags::SHARED));

    mm.write(va + PAGE + 8, b"doorbell").unwrap();
    assert_eq!(regs.writes(), [(PAGE + 8, b"doorbell".to_vec())]);
    regs.bytes.lock().unwrap()[0x20..0x24].copy_from_slice(&[1, 2, 3, 4]);
    let mut buf = [0u8; 4];
    mm.read(va + 0x20, &mut buf).unwrap();
    assert_eq!(buf, [1, 2, 3, 4]);
    assert_eq!(regs.reads.lock().unwrap().last(), Some(&(0x20, 4)));
    // An access across the page boundary inside the region is one region access.
    mm.write(va + PAGE - 2, &[9, 9, 9, 9]).unwrap();
    assert_eq!(regs.writes().last(), Some(&(PAGE - 2, vec![9, 9, 9, 9])));
    mm.fill(va + 0x100, 0x5a, 3).unwrap();
    assert_eq!(regs.writes().last(), Some(&(0x100, vec![0x5a; 3])));

    // No frames, no page-table entries, no faults counted as mapped pages.
    assert_eq!(mm.translate(va, AccessKind::Read).unwrap(), None);
    assert_eq!(mm.resident_bytes().unwrap(), 0);
    assert_eq!(sys.ram().stats().used_frames, used);
}

#[test]
fn io_permissions_are_checked_and_mprotect_changes_them() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let regs = Regs::new(PAGE);
    let va = mm.mmap_io(regs.clone(), Prot::READ, SHARED).unwrap();
    let e = mm.write(va + 4, b"x").unwrap_err();
    assert!(is_segv(&e, SegvCode::AccErr, AccessKind::Write), "{e}");
    let e = mm.fill(va, 1, 8).unwrap_err();
    assert!(is_segv(&e, SegvCode::AccErr, AccessKind::Write), "{e}");
    let e = mm.enqcmd(va, &[0; 64]).unwrap_err();
    assert!(is_segv(&e, SegvCode::AccErr, AccessKind::Write), "{e}");
    assert!(
        regs.writes().is_empty(),
        "a refused store reached the device"
    );
    assert!(regs.enqueued.lock().unwrap().is_empty());
    let mut b = [0u8; 2];
    mm.read(va, &mut b).unwrap();
    // Device memory is execute-never, whatever the protection says.
    let x = mm
        .mmap_io(Regs::new(PAGE), Prot::READ | Prot::EXEC, SHARED)
        .unwrap();
    let e = mm.fetch(x, &mut b).unwrap_err();
    assert!(is_segv(&e, SegvCode::AccErr, AccessKind::Execute), "{e}");

    mm.mprotect(va, PAGE, RW).unwrap();
    mm.write(va + 4, b"x").unwrap();
    assert_eq!(regs.writes(), [(4, b"x".to_vec())]);
    mm.mprotect(va, PAGE, Prot::NONE).unwrap();
    let e = mm.read(va, &mut b).unwrap_err();
    assert!(is_segv(&e, SegvCode::AccErr, AccessKind::Read), "{e}");
}

#[test]
fn io_bus_errors_name_the_failing_address() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let regs = Regs::new(PAGE);
    let va = mm.mmap_io(regs.clone(), RW, SHARED).unwrap();
    mm.write(va + 0x40, &[1]).unwrap();
    regs.gone.store(true, Ordering::SeqCst);
    let mut b = [0u8; 8];
    assert!(matches!(mm.read(va + 0x48, &mut b), Err(Error::Bus { va: at }) if at == va + 0x48));
    assert!(matches!(mm.write(va + 0x40, &[1]), Err(Error::Bus { va: at }) if at == va + 0x40));
    assert!(matches!(mm.touch(va, PAGE, AccessKind::Read), Err(Error::Bus { va: at }) if at == va));
    assert!(
        matches!(mm.enqcmd(va + 0x80, &[0; 64]), Err(Error::Bus { va: at }) if at == va + 0x80)
    );
    // zap has nothing to remove on device registers and leaves the VMA in place.
    mm.zap(va, PAGE).unwrap();
    assert_eq!(mm.vmas().unwrap().len(), 1);
    assert!(matches!(mm.read(va, &mut b), Err(Error::Bus { .. })));
}

#[test]
fn faults_and_pins_on_device_registers_are_errors() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let va = mm.mmap_io(Regs::new(PAGE), Prot::READ, SHARED).unwrap();
    // What the I/O page fault handler would call for a device access.
    assert!(
        matches!(mm.handle_fault(va + 8, AccessKind::Read), Err(Error::Bus { va: at }) if at == va + 8)
    );
    let e = mm.handle_fault(va, AccessKind::Write).unwrap_err();
    assert!(is_segv(&e, SegvCode::AccErr, AccessKind::Write), "{e}");
    let e = mm.handle_fault(va, AccessKind::Execute).unwrap_err();
    assert!(is_segv(&e, SegvCode::AccErr, AccessKind::Execute), "{e}");
    assert!(matches!(
        mm.pin_pages(va, PAGE, false),
        Err(Error::Bus { .. })
    ));
    assert_eq!(mm.pinned_pages(), 0);
    assert_eq!(mm.translate(va, AccessKind::Read).unwrap(), None);
}

#[test]
fn an_access_spanning_memory_and_registers_is_split_between_them() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let regs = Regs::new(PAGE);
    let io = mm.mmap_io(regs.clone(), RW, SHARED).unwrap();
    let below = io - PAGE;
    let anon = mm
        .mmap(
            Some(below),
            PAGE,
            RW,
            MapFlags::PRIVATE | MapFlags::FIXED_NOREPLACE,
        )
        .unwrap();
    assert_eq!(anon, below);
    let data: Vec<u8> = (1..=16).collect();
    mm.write(io - 8, &data).unwrap();
    assert_eq!(regs.writes(), [(0, data[8..].to_vec())]);
    let mut mem = [0u8; 8];
    mm.read(anon + PAGE - 8, &mut mem).unwrap();
    assert_eq!(mem, data[..8]);
    let mut back = [0u8; 16];
    mm.read(io - 8, &mut back).unwrap();
    assert_eq!(back.to_vec(), data);
    // Running off the end of the registers into nothing is a SEGV at the first unmapped
    // byte, after the mapped part was accessed.
    if mm.vmas().unwrap().iter().all(|v| v.start != io + PAGE) {
        let e = mm.write(io + PAGE - 4, &[7; 8]).unwrap_err();
        assert!(
            matches!(e, Error::Segv { va, code: SegvCode::MapErr, .. } if va == io + PAGE),
            "{e}"
        );
    }
}

/// Registers larger than the address space.
struct Huge;

impl IoMemory for Huge {
    fn size(&self) -> u64 {
        1 << 50
    }
    fn read(&self, offset: u64, _: &mut [u8]) -> Result<(), IoError> {
        Err(IoError::Bus(offset))
    }
    fn write(&self, offset: u64, _: &[u8]) -> Result<(), IoError> {
        Err(IoError::Bus(offset))
    }
}

#[test]
fn mmap_io_rejects_bad_regions_and_flags() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    assert!(matches!(
        mm.mmap_io(Regs::new(0), RW, SHARED),
        Err(Error::ZeroLength)
    ));
    assert!(matches!(
        mm.mmap_io(Regs::new(PAGE + 64), RW, SHARED),
        Err(Error::Unaligned { value, .. }) if value == PAGE + 64
    ));
    assert!(matches!(
        mm.mmap_io(Regs::new(PAGE), RW, MapFlags::PRIVATE),
        Err(Error::InvalidFlags(_))
    ));
    assert!(matches!(
        mm.mmap_io(Regs::new(PAGE), RW, SHARED | MapFlags::FIXED),
        Err(Error::InvalidFlags(_))
    ));
    assert!(matches!(
        mm.mmap_io(Arc::new(Huge), RW, SHARED),
        Err(Error::NoSpace(_))
    ));
    // SHARED is implied.
    let va = mm.mmap_io(Regs::new(PAGE), RW, MapFlags::empty()).unwrap();
    assert!(mm.vmas().unwrap()[0].flags.contains(MapFlags::SHARED));
    assert_eq!(mm.vmas().unwrap()[0].start, va);
}

#[test]
fn partial_munmap_of_registers_keeps_offsets() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let regs = Regs::new(4 * PAGE);
    let va = mm.mmap_io(regs.clone(), RW, SHARED).unwrap();
    mm.munmap(va, PAGE).unwrap();
    mm.munmap(va + 2 * PAGE, PAGE).unwrap();
    mm.write(va + PAGE + 1, b"a").unwrap();
    mm.write(va + 3 * PAGE + 2, b"b").unwrap();
    assert_eq!(
        regs.writes(),
        [(PAGE + 1, b"a".to_vec()), (3 * PAGE + 2, b"b".to_vec())]
    );
    let e = mm.write(va + 2 * PAGE, b"c").unwrap_err();
    assert!(is_segv(&e, SegvCode::MapErr, AccessKind::Write), "{e}");
    // mprotect of the upper piece splits it again, still at the right offset.
    mm.mprotect(va + 3 * PAGE, PAGE, Prot::READ).unwrap();
    let mut b = [0u8; 1];
    mm.read(va + 3 * PAGE + 2, &mut b).unwrap();
    assert_eq!(&b, b"b");
}

#[test]
fn two_regions_side_by_side_stay_two_vmas() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let a = Regs::new(PAGE);
    let b = Regs::new(PAGE);
    let va = mm.mmap_io(a.clone(), RW, SHARED).unwrap();
    let vb = mm.mmap_io(b.clone(), RW, SHARED).unwrap();
    assert_eq!(
        vb + PAGE,
        va,
        "top-down placement puts the second right below"
    );
    assert_eq!(mm.vmas().unwrap().len(), 2);
    mm.write(vb, b"B").unwrap();
    mm.write(va, b"A").unwrap();
    assert_eq!(a.writes(), [(0, b"A".to_vec())]);
    assert_eq!(b.writes(), [(0, b"B".to_vec())]);
    let ra = frames(sys.ram(), 1);
    let rb = frames(sys.ram(), 1);
    let fa = mm.mmap_frames(ra.clone(), RW, SHARED).unwrap();
    let fb = mm.mmap_frames(rb.clone(), RW, SHARED).unwrap();
    assert_eq!(fb + PAGE, fa);
    assert_eq!(mm.vmas().unwrap().len(), 4);
    mm.write(fb + PAGE - 1, &[1, 2]).unwrap();
    let mut x = [0u8; 1];
    sys.ram().read(rb.frames()[0] + (PAGE - 1), &mut x).unwrap();
    assert_eq!(x, [1]);
    sys.ram().read(ra.frames()[0], &mut x).unwrap();
    assert_eq!(x, [2]);
}

/// A device whose doorbell write makes it access the process's memory at once (DMA
/// through the fault handler), as a synchronous device model does.
struct Kicker {
    mm: Mutex<Weak<Mm>>,
    target: Mutex<Option<Va>>,
}

impl IoMemory for Kicker {
    fn size(&self) -> u64 {
        PAGE
    }
    fn read(&self, _: u64, buf: &mut [u8]) -> Result<(), IoError> {
        buf.fill(0);
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        let mm = self
            .mm
            .lock()
            .unwrap()
            .upgrade()
            .ok_or(IoError::Bus(offset))?;
        let target = self.target.lock().unwrap().ok_or(IoError::Bus(offset))?;
        mm.handle_fault(target, AccessKind::Write)
            .map_err(|_| IoError::Bus(offset))?;
        mm.write(target, data).map_err(|_| IoError::Bus(offset))
    }
}

#[test]
fn a_register_access_does_not_hold_the_address_space_locked() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let buf = mm
        .mmap(None, PAGE, RW, MapFlags::PRIVATE | MapFlags::NOHUGEPAGE)
        .unwrap();
    let kicker = Arc::new(Kicker {
        mm: Mutex::new(Arc::downgrade(&mm)),
        target: Mutex::new(Some(buf)),
    });
    let db = mm.mmap_io(kicker, RW, SHARED).unwrap();
    // Would deadlock if the state lock were held across the region call.
    mm.write(db, b"go").unwrap();
    let mut b = [0u8; 2];
    mm.read(buf, &mut b).unwrap();
    assert_eq!(&b, b"go");
}

// ---- driver frames ----

#[test]
fn frames_are_shared_between_process_and_ram() {
    let sys = system();
    let ram = sys.ram().clone();
    let start = ram.stats();
    let mm = sys.spawn().unwrap();
    let region = frames(&ram, 4);
    assert_eq!(refcounts(&ram, &region), [1; 4]);
    let va = mm.mmap_frames(region.clone(), RW, SHARED).unwrap();
    assert_eq!(mm.vmas().unwrap()[0].end, va + 4 * PAGE);
    // Lazy: nothing mapped until touched.
    assert_eq!(refcounts(&ram, &region), [1; 4]);
    assert_eq!(mm.translate(va, AccessKind::Read).unwrap(), None);

    mm.write(va + PAGE + 10, b"from the cpu").unwrap();
    let mut got = [0u8; 12];
    ram.read(region.frames()[1] + 10, &mut got).unwrap();
    assert_eq!(&got, b"from the cpu");
    assert_eq!(
        mm.translate(va + PAGE, AccessKind::Write).unwrap(),
        Some(region.frames()[1])
    );
    ram.write(region.frames()[2] + 100, b"from the device")
        .unwrap();
    let mut seen = [0u8; 15];
    mm.read(va + 2 * PAGE + 100, &mut seen).unwrap();
    assert_eq!(&seen, b"from the device");
    assert_eq!(refcounts(&ram, &region), [1, 2, 2, 1]);
    // A write is never copied away, also after a read-only mapping turns writable.
    let ro = mm.mmap_frames(region.clone(), Prot::READ, SHARED).unwrap();
    let mut b = [0u8; 3];
    mm.read(ro + 3 * PAGE, &mut b).unwrap();
    mm.mprotect(ro, 4 * PAGE, RW).unwrap();
    mm.write(ro + 3 * PAGE, b"abc").unwrap();
    mm.read(va + 3 * PAGE, &mut b).unwrap();
    assert_eq!(&b, b"abc");
    assert_eq!(mm.stats().cow_breaks, 0);
    assert_eq!(refcounts(&ram, &region), [1, 2, 2, 3]);

    mm.munmap(va, 4 * PAGE).unwrap();
    assert_eq!(refcounts(&ram, &region), [1, 1, 1, 2]);
    let pid = mm.pid();
    drop(mm);
    sys.exit(pid).unwrap();
    assert_eq!(refcounts(&ram, &region), [1; 4]);
    drop(region);
    assert_ram_back_to(&ram, start);
}

#[test]
fn populate_maps_every_frame_and_a_revoked_region_is_refused() {
    let (_sys, ram, mm, region) = process_and_frames(3);
    let va = mm
        .mmap_frames(region.clone(), RW, SHARED | MapFlags::POPULATE)
        .unwrap();
    assert_eq!(refcounts(&ram, &region), [2; 3]);
    assert_eq!(mm.resident_bytes().unwrap(), 3 * PAGE);
    for i in 0..3 {
        assert_eq!(
            mm.translate(va + i as u64 * PAGE, AccessKind::Write)
                .unwrap(),
            Some(region.frames()[i])
        );
    }
    region.revoke();
    let e = mm
        .mmap_frames(region.clone(), RW, SHARED | MapFlags::POPULATE)
        .unwrap_err();
    assert!(matches!(e, Error::Bus { .. }), "{e}");
    assert_eq!(
        mm.vmas().unwrap().len(),
        1,
        "the failed mapping was left behind"
    );
    assert_eq!(refcounts(&ram, &region), [2; 3]);
}

#[test]
fn zap_drops_pages_but_keeps_vmas_and_revocation_then_gives_bus() {
    let (_sys, ram, mm, region) = process_and_frames(4);
    let rec = Arc::new(Recorder::with_ram(ram.clone()));
    mm.register_notifier(rec.clone()).unwrap();
    let va = mm.mmap_frames(region.clone(), RW, SHARED).unwrap();
    mm.touch(va, 4 * PAGE, AccessKind::Write).unwrap();
    assert_eq!(refcounts(&ram, &region), [2; 4]);
    // Anonymous memory right below, inside the zapped range: left alone.
    let anon = anon_page_below(&mm, va, b"mine");
    rec.events.lock().unwrap().clear();

    mm.zap(anon, 3 * PAGE).unwrap();
    assert_eq!(refcounts(&ram, &region), [1, 1, 2, 2]);
    assert_eq!(mm.vmas().unwrap().len(), 2);
    assert_eq!(mm.translate(va, AccessKind::Read).unwrap(), None);
    let ev = rec.events.lock().unwrap().clone();
    assert_eq!(ev.len(), 2);
    assert_eq!((ev[0].0, ev[1].0), ("start", "end"));
    assert_eq!((ev[1].1.start, ev[1].1.end), (va, va + 2 * PAGE));
    assert_eq!(ev[1].1.reason, InvalidateReason::Unmap);
    let mut b = [0u8; 4];
    mm.read(anon, &mut b).unwrap();
    assert_eq!(&b, b"mine");

    // Faults in again, same frame.
    mm.read(va, &mut b).unwrap();
    assert_eq!(refcounts(&ram, &region), [2, 1, 2, 2]);

    // The device goes away: the driver revokes and zaps; mapped or not, every access is
    // a bus error now, and no frame reference is left with the process.
    region.revoke();
    mm.zap(va, 4 * PAGE).unwrap();
    assert_eq!(refcounts(&ram, &region), [1; 4]);
    for i in 0..4 {
        let at = va + i * PAGE + 5;
        assert!(matches!(mm.read(at, &mut b), Err(Error::Bus { va: x }) if x == at));
        assert!(matches!(mm.write(at, &b), Err(Error::Bus { va: x }) if x == at));
        assert!(matches!(
            mm.handle_fault(at, AccessKind::Read),
            Err(Error::Bus { .. })
        ));
    }
    assert_eq!(refcounts(&ram, &region), [1; 4]);
    // Zap argument checks are munmap's.
    assert!(matches!(mm.zap(va + 1, PAGE), Err(Error::Unaligned { .. })));
    assert!(matches!(mm.zap(va, 0), Err(Error::ZeroLength)));
    mm.zap(Va(0x7000_0000_0000), PAGE).unwrap();
}

#[test]
fn fork_leaves_dontcopy_and_wipeonfork_device_mappings_out() {
    let sys = system();
    let ram = sys.ram().clone();
    let start = ram.stats();
    let parent = sys.spawn().unwrap();
    let regs = Regs::new(PAGE);
    let region = frames(&ram, 2);
    for flags in [
        UACCE,
        SHARED | MapFlags::DONTCOPY,
        SHARED | MapFlags::WIPEONFORK,
    ] {
        let io = parent.mmap_io(regs.clone(), RW, flags).unwrap();
        let fr = parent.mmap_frames(region.clone(), RW, flags).unwrap();
        parent.write(fr, b"parent").unwrap();
        let child = sys.fork(parent.pid()).unwrap();
        assert!(child.vmas().unwrap().is_empty(), "{flags:?}");
        let mut b = [0u8; 6];
        for at in [io, fr] {
            let e = child.read(at, &mut b).unwrap_err();
            assert!(
                is_segv(&e, SegvCode::MapErr, AccessKind::Read),
                "{flags:?}: {e}"
            );
            let e = child.handle_fault(at, AccessKind::Write).unwrap_err();
            assert!(is_segv(&e, SegvCode::MapErr, AccessKind::Write), "{e}");
        }
        assert_eq!(child.translate(fr, AccessKind::Read).unwrap(), None);
        sys.exit(child.pid()).unwrap();
        parent.read(fr, &mut b).unwrap();
        assert_eq!(&b, b"parent");
        parent.munmap(io, PAGE).unwrap();
        parent.munmap(fr, 2 * PAGE).unwrap();
    }
    assert_eq!(refcounts(&ram, &region), [1; 2]);
    assert!(regs.writes().is_empty());

    // Without those flags the child maps the same registers and frames.
    let io = parent.mmap_io(regs.clone(), RW, SHARED).unwrap();
    let fr = parent.mmap_frames(region.clone(), RW, SHARED).unwrap();
    parent.write(fr, b"before").unwrap();
    let child = sys.fork(parent.pid()).unwrap();
    child.write(fr, b"child!").unwrap();
    child.write(io + 8, b"c").unwrap();
    let mut b = [0u8; 6];
    parent.read(fr, &mut b).unwrap();
    assert_eq!(&b, b"child!", "a device frame was copied on write");
    assert_eq!(regs.writes(), [(8, b"c".to_vec())]);
    assert_eq!(refcounts(&ram, &region), [3, 1]);
    sys.exit(child.pid()).unwrap();
    sys.exit(parent.pid()).unwrap();
    assert_eq!(refcounts(&ram, &region), [1; 2]);
    drop(region);
    assert_ram_back_to(&ram, start);
}

#[test]
fn partial_munmap_of_frames_keeps_offsets() {
    let (_sys, ram, mm, region) = process_and_frames(4);
    for (i, &pa) in region.frames().iter().enumerate() {
        ram.write(pa, &[i as u8 + 1; 8]).unwrap();
    }
    let va = mm.mmap_frames(region.clone(), RW, SHARED).unwrap();
    mm.touch(va, 4 * PAGE, AccessKind::Read).unwrap();
    mm.munmap(va, PAGE).unwrap();
    mm.munmap(va + 2 * PAGE, PAGE).unwrap();
    assert_eq!(refcounts(&ram, &region), [1, 2, 1, 2]);
    // Zapped pages refault at the right frame too.
    mm.zap(va, 4 * PAGE).unwrap();
    assert_eq!(refcounts(&ram, &region), [1; 4]);
    let mut b = [0u8; 1];
    mm.read(va + PAGE, &mut b).unwrap();
    assert_eq!(b, [2]);
    mm.read(va + 3 * PAGE, &mut b).unwrap();
    assert_eq!(b, [4]);
    assert_eq!(
        mm.translate(va + 3 * PAGE, AccessKind::Read).unwrap(),
        Some(region.frames()[3])
    );
    mm.mprotect(va + 3 * PAGE, PAGE, Prot::READ).unwrap();
    let e = mm.write(va + 3 * PAGE, &b).unwrap_err();
    assert!(is_segv(&e, SegvCode::AccErr, AccessKind::Write), "{e}");
    drop(mm);
}

#[test]
fn reclaim_and_migrate_leave_driver_frames_alone() {
    let (_sys, ram, mm, region) = process_and_frames(2);
    let va = mm.mmap_frames(region.clone(), RW, SHARED).unwrap();
    mm.write(va, b"ring").unwrap();
    mm.write(va + PAGE, b"ring").unwrap();
    let anon = anon_page_below(&mm, va, b"anon");
    // The anonymous page goes to swap; the driver's pages stay.
    assert_eq!(mm.reclaim(anon, 3 * PAGE).unwrap(), 1);
    assert_eq!(mm.swapped_pages(), 1);
    assert_eq!(
        mm.translate(va, AccessKind::Read).unwrap(),
        Some(region.frames()[0])
    );
    assert!(matches!(mm.migrate(va + PAGE), Err(Error::PageShared(_))));
    assert_eq!(
        mm.translate(va + PAGE, AccessKind::Read).unwrap(),
        Some(region.frames()[1])
    );
    assert_eq!(mm.stats().migrations, 0);
    assert_eq!(refcounts(&ram, &region), [2, 2]);
    let mut b = [0u8; 4];
    mm.read(va + PAGE, &mut b).unwrap();
    assert_eq!(&b, b"ring");
    // Pinning a frames page works and keeps the driver's frame.
    let pins = mm.pin_pages(va, PAGE, true).unwrap();
    assert_eq!(pins, [(va, region.frames()[0])]);
    mm.unpin_pages(&pins);
    assert_eq!(refcounts(&ram, &region), [2, 2]);
}

#[test]
fn mmap_frames_rejects_foreign_or_mis_sized_frames() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let other = Arc::new(Ram::new(16 << 20).unwrap());
    assert!(matches!(
        mm.mmap_frames(frames(&other, 1), RW, SHARED),
        Err(Error::BadRegion(_))
    ));
    assert!(matches!(
        mm.mmap_frames(frames(sys.ram(), 0), RW, SHARED),
        Err(Error::ZeroLength)
    ));
    assert!(matches!(
        mm.mmap_frames(frames(sys.ram(), 1), RW, MapFlags::PRIVATE),
        Err(Error::InvalidFlags(_))
    ));
    let big = Arc::new(FrameRegion::new(sys.ram().clone(), 1, 4 * PAGE).unwrap());
    assert!(matches!(
        mm.mmap_frames(big, RW, SHARED),
        Err(Error::BadRegion(_))
    ));
    // A 16K-granule address space takes 16K frames.
    let sys16 = system_with(MmConfig {
        granule: sva_vmsa::Granule::Size16K,
        thp: false,
        ..MmConfig::default()
    });
    let mm16 = sys16.spawn().unwrap();
    let page16 = mm16.page_size();
    assert!(matches!(
        mm16.mmap_frames(frames(sys16.ram(), 1), RW, SHARED),
        Err(Error::BadRegion(_))
    ));
    let r16 = Arc::new(FrameRegion::new(sys16.ram().clone(), 2, page16).unwrap());
    let va = mm16.mmap_frames(r16.clone(), RW, SHARED).unwrap();
    mm16.write(va + page16 + 1, b"16k").unwrap();
    let mut b = [0u8; 3];
    sys16.ram().read(r16.frames()[1] + 1, &mut b).unwrap();
    assert_eq!(&b, b"16k");
}

// ---- ENQCMD and the PASID ----

#[test]
fn enqcmd_routes_to_the_portal_with_the_process_pasid() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    assert_eq!(mm.pasid(), None);
    let portal = Regs::new(PAGE);
    let va = mm.mmap_io(portal.clone(), RW, UACCE).unwrap();
    let mut desc = [0u8; 64];
    desc[0] = 0xd5;
    desc[63] = 0x5d;
    assert!(mm.enqcmd(va + 0x40, &desc).unwrap());
    mm.set_pasid(Some(Pasid(0x1234)));
    assert_eq!(mm.pasid(), Some(Pasid(0x1234)));
    portal.accept.store(false, Ordering::SeqCst);
    assert!(!mm.enqcmd(va + 0x80, &desc).unwrap(), "retry not reported");
    {
        let q = portal.enqueued.lock().unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(q[0], (0x40, desc, None));
        assert_eq!(q[1], (0x80, desc, Some(Pasid(0x1234))));
    }
    // A forked child starts without a PASID.
    let anon = mm.mmap(None, PAGE, RW, MapFlags::PRIVATE).unwrap();
    let child = sys.fork(mm.pid()).unwrap();
    assert_eq!(child.pasid(), None);
    assert_eq!(mm.pasid(), Some(Pasid(0x1234)));
    mm.set_pasid(None);
    assert_eq!(mm.pasid(), None);
    mm.set_pasid(Some(Pasid::MAX));
    assert_eq!(mm.pasid(), Some(Pasid::MAX));

    // Bad destinations.
    assert!(matches!(
        mm.enqcmd(va + 0x20, &desc),
        Err(Error::EnqcmdUnaligned(at)) if at == va + 0x20
    ));
    assert!(matches!(
        mm.enqcmd(anon, &desc),
        Err(Error::NotDeviceMemory(at)) if at == anon
    ));
    let e = mm.enqcmd(Va(0x40_0000), &desc).unwrap_err();
    assert!(is_segv(&e, SegvCode::MapErr, AccessKind::Write), "{e}");
    let posted_only = Arc::new(Regs {
        portal: false,
        ..Arc::into_inner(Regs::new(PAGE)).unwrap()
    });
    let p = mm.mmap_io(posted_only.clone(), RW, SHARED).unwrap();
    assert!(matches!(
        mm.enqcmd(p + 0xc0, &desc),
        Err(Error::IoUnsupported { va: at }) if at == p + 0xc0
    ));
    assert_eq!(portal.enqueued.lock().unwrap().len(), 2);
}

#[test]
fn exit_with_device_mappings_returns_everything() {
    let sys = system();
    let ram = sys.ram().clone();
    let start = ram.stats();
    let mm = sys.spawn().unwrap();
    let regs = Regs::new(2 * PAGE);
    let region = frames(&ram, 8);
    mm.mmap_io(regs.clone(), RW, UACCE).unwrap();
    let va = mm
        .mmap_frames(region.clone(), RW, UACCE | MapFlags::POPULATE)
        .unwrap();
    mm.fill(va, 0xee, 8 * PAGE as usize).unwrap();
    let anon = mm.mmap(None, 16 * PAGE, RW, MapFlags::PRIVATE).unwrap();
    mm.fill(anon, 1, 16 * PAGE as usize).unwrap();
    mm.set_pasid(Some(Pasid(5)));
    assert_eq!(refcounts(&ram, &region), [2; 8]);
    let pid = mm.pid();
    drop(mm);
    sys.exit(pid).unwrap();
    assert_eq!(refcounts(&ram, &region), [1; 8]);
    // The driver's memory outlives the process with what the process wrote.
    let mut b = [0u8; 4];
    ram.read(region.frames()[7] + (PAGE - 4), &mut b).unwrap();
    assert_eq!(b, [0xee; 4]);
    assert_eq!(
        Arc::strong_count(&region),
        1,
        "a VMA still holds the region"
    );
    drop(region);
    assert_eq!(Arc::strong_count(&regs), 1);
    let end = ram.stats();
    assert_eq!(end.used_frames, start.used_frames);
    assert_eq!(end.blocks, start.blocks);
    assert_eq!(sys.swap_stats().used, 0);
}
