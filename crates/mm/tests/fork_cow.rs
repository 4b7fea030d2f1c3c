//! fork with copy-on-write, shared mappings across fork, DONTCOPY and WIPEONFORK.

mod common;

use common::*;
use sva_mm::{MapFlags, Prot};
use sva_physmem::PhysMemory;

const RW: Prot = Prot::READ.union(Prot::WRITE);

#[test]
fn child_writes_break_cow_and_parent_keeps_its_data() {
    let sys = system();
    let parent = sys.spawn().unwrap();
    let va = parent
        .mmap(None, 4 * PAGE, RW, MapFlags::PRIVATE | MapFlags::NOHUGEPAGE)
        .unwrap();
    parent.write(va, b"parent data").unwrap();
    parent.write(va + PAGE, b"second").unwrap();
    let used = sys.ram().stats().used_frames;
    let child = sys.fork(parent.pid()).unwrap();
    // Only the child's table root was added: the data frames are shared.
    let after_fork = sys.ram().stats().used_frames;
    assert!(
        after_fork - used <= 4,
        "fork copied pages instead of sharing"
    );
    let pa_parent = parent
        .translate(va, sva_mm::AccessKind::Read)
        .unwrap()
        .unwrap();
    let pa_child = child
        .translate(va, sva_mm::AccessKind::Read)
        .unwrap()
        .unwrap();
    assert_eq!(pa_parent, pa_child);
    assert_eq!(sys.ram().refcount(pa_parent).unwrap(), 2);
    // Both are write-protected now.
    assert!(
        parent
            .translate(va, sva_mm::AccessKind::Write)
            .unwrap()
            .is_none()
    );

    child.write(va, b"CHILD").unwrap();
    let mut b = [0u8; 11];
    parent.read(va, &mut b).unwrap();
    assert_eq!(&b, b"parent data", "child's write reached the shared frame");
    child.read(va, &mut b).unwrap();
    assert_eq!(&b, b"CHILDt data");
    assert_eq!(child.stats().cow_breaks, 1);
    assert_ne!(
        child
            .translate(va, sva_mm::AccessKind::Read)
            .unwrap()
            .unwrap(),
        pa_parent
    );
    assert_eq!(sys.ram().refcount(pa_parent).unwrap(), 1);

    // The parent is now the sole owner: its write reuses the frame, no copy.
    parent.write(va, b"P").unwrap();
    assert_eq!(parent.stats().cow_breaks, 0);
    assert_eq!(parent.stats().cow_reuses, 1);
    assert_eq!(
        parent
            .translate(va, sva_mm::AccessKind::Write)
            .unwrap()
            .unwrap(),
        pa_parent
    );

    // The page neither wrote stays shared.
    let mut s = [0u8; 6];
    child.read(va + PAGE, &mut s).unwrap();
    assert_eq!(&s, b"second");
    sys.exit(child.pid()).unwrap();
    sys.exit(parent.pid()).unwrap();
    assert_eq!(sys.ram().stats().used_frames, 0);
}

#[test]
fn shared_mappings_stay_shared_across_fork() {
    let sys = system();
    let parent = sys.spawn().unwrap();
    let s = parent.mmap(None, 2 * PAGE, RW, MapFlags::SHARED).unwrap();
    parent.write(s, b"before").unwrap();
    let child = sys.fork(parent.pid()).unwrap();
    child.write(s, b"child!").unwrap();
    // A page first touched after the fork is shared too.
    parent.write(s + PAGE, b"late").unwrap();
    let mut b = [0u8; 6];
    parent.read(s, &mut b).unwrap();
    assert_eq!(&b, b"child!");
    let mut l = [0u8; 4];
    child.read(s + PAGE, &mut l).unwrap();
    assert_eq!(&l, b"late");
    sys.exit(parent.pid()).unwrap();
    child.read(s, &mut b).unwrap();
    assert_eq!(&b, b"child!");
    sys.exit(child.pid()).unwrap();
    assert_eq!(sys.ram().stats().used_frames, 0);
}

#[test]
fn dontcopy_and_wipeonfork_ranges() {
    let sys = system();
    let parent = sys.spawn().unwrap();
    let nocopy = parent
        .mmap(None, PAGE, RW, MapFlags::SHARED | MapFlags::DONTCOPY)
        .unwrap();
    let wipe = parent
        .mmap(None, PAGE, RW, MapFlags::PRIVATE | MapFlags::WIPEONFORK)
        .unwrap();
    parent.write(nocopy, b"doorbell").unwrap();
    parent.write(wipe, b"secret").unwrap();
    let child = sys.fork(parent.pid()).unwrap();
    let mut b = [0u8; 6];
    assert!(matches!(
        child.read(nocopy, &mut b),
        Err(sva_mm::Error::Segv {
            code: sva_mm::SegvCode::MapErr,
            ..
        })
    ));
    child.read(wipe, &mut b).unwrap();
    assert_eq!(b, [0; 6], "WIPEONFORK range must read as zero in the child");
    parent.read(wipe, &mut b).unwrap();
    assert_eq!(&b, b"secret");
    assert!(matches!(
        parent.mmap(None, PAGE, RW, MapFlags::SHARED | MapFlags::WIPEONFORK),
        Err(sva_mm::Error::InvalidFlags(_))
    ));
}

#[test]
fn fork_of_block_mapping_then_split_by_either_side() {
    let sys = system();
    let parent = sys.spawn().unwrap();
    let va = parent.mmap(None, 2 * BLOCK, RW, MapFlags::PRIVATE).unwrap();
    assert!(va.is_aligned(BLOCK));
    parent.fill(va, 0x5a, BLOCK as usize).unwrap();
    assert_eq!(parent.stats().thp_faults, 1);
    let child = sys.fork(parent.pid()).unwrap();
    // Child writes one byte in the middle: the block splits, one page is copied.
    child.write(va + 5 * PAGE + 1, b"c").unwrap();
    let mut b = [0u8; 2];
    parent.read(va + 5 * PAGE, &mut b).unwrap();
    assert_eq!(b, [0x5a, 0x5a]);
    child.read(va + 5 * PAGE, &mut b).unwrap();
    assert_eq!(b, [0x5a, b'c']);
    // The parent still maps a block over frames that were split: writes still COW.
    parent.write(va + 6 * PAGE, b"p").unwrap();
    child.read(va + 6 * PAGE, &mut b[..1]).unwrap();
    assert_eq!(b[0], 0x5a);
    // Unmapping half of the parent's block splits its mapping.
    parent.munmap(va, BLOCK / 2).unwrap();
    sys.exit(parent.pid()).unwrap();
    child.read(va + 100 * PAGE, &mut b[..1]).unwrap();
    assert_eq!(b[0], 0x5a);
    sys.exit(child.pid()).unwrap();
    assert_eq!(sys.ram().stats().used_frames, 0);
}

#[test]
fn swapped_pages_are_copied_by_fork() {
    let sys = system();
    let parent = sys.spawn().unwrap();
    let va = parent.mmap(None, 2 * PAGE, RW, MapFlags::PRIVATE).unwrap();
    parent.write(va, b"swapme").unwrap();
    assert_eq!(parent.reclaim(va, 2 * PAGE).unwrap(), 1);
    let child = sys.fork(parent.pid()).unwrap();
    child.write(va, b"CHILD!").unwrap();
    let mut b = [0u8; 6];
    parent.read(va, &mut b).unwrap();
    assert_eq!(&b, b"swapme");
    sys.exit(parent.pid()).unwrap();
    sys.exit(child.pid()).unwrap();
    assert_eq!(sys.swap_stats().used, 0);
    assert_eq!(sys.ram().stats().used_frames, 0);
}

#[test]
fn pinned_pages_stay_with_the_device_through_fork_and_writes() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let va = mm.mmap(None, BLOCK, RW, MapFlags::PRIVATE).unwrap();
    mm.fill(va, 1, BLOCK as usize).unwrap();
    // Pinning splits the block so each pinned page is a frame of its own.
    let pins = mm.pin_pages(va + 3 * PAGE, 2 * PAGE, true).unwrap();
    assert_eq!(pins.len(), 2);
    assert_eq!(mm.pinned_pages(), 2);
    assert_eq!(sys.ram().refcount(pins[0].1).unwrap(), 2);
    let frame = pins[0].1;
    // fork: the parent keeps the pinned frame writable, the child gets a copy.
    let child = sys.fork(mm.pid()).unwrap();
    assert_eq!(
        mm.translate(va + 3 * PAGE, sva_mm::AccessKind::Write)
            .unwrap(),
        Some(frame)
    );
    let child_pa = child
        .translate(va + 3 * PAGE, sva_mm::AccessKind::Read)
        .unwrap()
        .unwrap();
    assert_ne!(child_pa, frame);
    // A write by the parent lands in the pinned frame (what the device sees).
    mm.write(va + 3 * PAGE, b"parent").unwrap();
    let mut b = [0u8; 6];
    sys.ram().read(frame, &mut b).unwrap();
    assert_eq!(&b, b"parent");
    child.read(va + 3 * PAGE, &mut b).unwrap();
    assert_eq!(b, [1; 6]);
    // mprotect read-only then writable again: still no copy of a pinned page.
    mm.mprotect(va, BLOCK, Prot::READ).unwrap();
    mm.mprotect(va, BLOCK, RW).unwrap();
    mm.write(va + 4 * PAGE, b"again").unwrap();
    assert_eq!(
        mm.translate(va + 4 * PAGE, sva_mm::AccessKind::Write)
            .unwrap(),
        Some(pins[1].1)
    );
    // Pinned pages are neither reclaimed nor migrated.
    mm.reclaim(va + 3 * PAGE, 2 * PAGE).unwrap();
    assert_eq!(
        mm.translate(va + 3 * PAGE, sva_mm::AccessKind::Read)
            .unwrap(),
        Some(frame)
    );
    assert!(matches!(
        mm.migrate(va + 3 * PAGE),
        Err(sva_mm::Error::PageShared(_))
    ));
    // munmap: the frame stays with the pinner until unpinned.
    mm.munmap(va, BLOCK).unwrap();
    assert_eq!(sys.ram().refcount(frame).unwrap(), 1);
    mm.unpin_pages(&pins);
    assert!(sys.ram().refcount(frame).is_err());
    sys.exit(child.pid()).unwrap();
    sys.exit(mm.pid()).unwrap();
    assert_eq!(sys.ram().stats().used_frames, 0);
}

#[test]
fn pinning_needs_the_access_and_a_mapping() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let ro = mm.mmap(None, PAGE, Prot::READ, MapFlags::PRIVATE).unwrap();
    assert!(matches!(
        mm.pin_pages(ro, PAGE, true),
        Err(sva_mm::Error::Segv { .. })
    ));
    assert_eq!(mm.pin_pages(ro, PAGE, false).unwrap().len(), 1);
    assert!(matches!(
        mm.pin_pages(sva_addr::Va(0x20000), PAGE, false),
        Err(sva_mm::Error::Segv { .. })
    ));
    // A failure half-way releases what was pinned.
    let rw = mm.mmap(
        Some(ro + PAGE),
        PAGE,
        RW,
        MapFlags::PRIVATE | MapFlags::FIXED_NOREPLACE,
    );
    let _ = rw;
    assert_eq!(mm.pinned_pages(), 1);
    assert!(mm.pin_pages(ro + PAGE, 3 * PAGE, false).is_err());
    assert_eq!(mm.pinned_pages(), 1);
}
