//! MMU notifiers and TLB broadcast: every translation change is bracketed and ordered
//! before frames are freed; reclaim and migration go through them.

mod common;

use common::*;
use std::sync::Arc;
use sva_mm::{InvalidateReason as R, MapFlags, Prot, Tlbi};

const RW: Prot = Prot::READ.union(Prot::WRITE);

#[test]
fn every_change_is_notified_with_its_reason() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let rec = Arc::new(Recorder::with_ram(sys.ram().clone()));
    let id = mm.register_notifier(rec.clone()).unwrap();
    let va = mm
        .mmap(None, 8 * PAGE, RW, MapFlags::PRIVATE | MapFlags::NOHUGEPAGE)
        .unwrap();
    mm.fill(va, 7, (8 * PAGE) as usize).unwrap();
    // Demand faults into empty entries need no invalidation.
    assert!(rec.reasons().is_empty());

    mm.mprotect(va, PAGE, Prot::READ).unwrap();
    mm.reclaim(va + PAGE, PAGE).unwrap();
    let old = mm
        .translate(va + 2 * PAGE, sva_mm::AccessKind::Read)
        .unwrap()
        .unwrap();
    let new = mm.migrate(va + 2 * PAGE).unwrap();
    assert_ne!(old, new);
    mm.clear_young(va + 3 * PAGE, PAGE).unwrap();
    mm.madvise_dontneed(va + 4 * PAGE, PAGE).unwrap();
    mm.munmap(va + 5 * PAGE, PAGE).unwrap();
    let child = sys.fork(mm.pid()).unwrap();
    child.write(va + 6 * PAGE, b"c").unwrap(); // child has no notifier
    mm.write(va + 7 * PAGE, b"p").unwrap(); // parent breaks COW
    assert_eq!(
        rec.reasons(),
        [
            R::ProtectionChange,
            R::Reclaim,
            R::Migration,
            R::AccessFlagClear,
            R::Unmap,
            R::Unmap,
            // fork write-protects the parent's two writable VMAs (split by the munmap)
            R::ProtectionChange,
            R::ProtectionChange,
            R::CowBreak,
        ]
    );
    for (_, r) in rec.events.lock().unwrap().iter() {
        assert_eq!(r.asid, mm.asid());
        assert!(r.start < r.end);
    }
    // Swapped and migrated data is intact.
    let mut b = [0u8; 3];
    mm.read(va + PAGE, &mut b).unwrap();
    assert_eq!(b, [7; 3]);
    mm.read(va + 2 * PAGE, &mut b).unwrap();
    assert_eq!(b, [7; 3]);
    assert_eq!(mm.stats().swap_ins, 1);

    assert!(mm.unregister_notifier(id));
    assert!(!mm.unregister_notifier(id));
    mm.munmap(va, PAGE).unwrap();
    assert_eq!(rec.reasons().len(), 9, "unregistered notifier was called");
}

#[test]
fn release_runs_once_at_exit_before_teardown() {
    struct CheckTables {
        ram: Arc<sva_physmem::Ram>,
        table: sva_vmsa::PageTable,
        va: sva_addr::Va,
        seen: std::sync::Mutex<bool>,
    }
    impl sva_mm::MmuNotifier for CheckTables {
        fn invalidate_range_end(&self, _: &sva_mm::InvalidateRange) {}
        fn release(&self, _: sva_addr::Asid) {
            // Tables are still intact: the page is still mapped.
            let t = self.table.lookup(&*self.ram, self.va).unwrap();
            *self.seen.lock().unwrap() = t.is_some();
        }
    }
    let sys = system();
    let mm = sys.spawn().unwrap();
    let va = mm.mmap(None, PAGE, RW, MapFlags::PRIVATE).unwrap();
    mm.write(va, b"x").unwrap();
    let rec = Arc::new(Recorder::default());
    mm.register_notifier(rec.clone()).unwrap();
    let check = Arc::new(CheckTables {
        ram: sys.ram().clone(),
        table: mm.table().clone(),
        va,
        seen: std::sync::Mutex::new(false),
    });
    mm.register_notifier(check.clone()).unwrap();
    sys.exit(mm.pid()).unwrap();
    assert_eq!(*rec.released.lock().unwrap(), 1);
    assert!(
        *check.seen.lock().unwrap(),
        "release ran after the tables were torn down"
    );
    // No invalidate calls after release.
    assert!(rec.events.lock().unwrap().is_empty());
    assert!(mm.register_notifier(rec).is_err());
}

#[test]
fn tlb_broadcast_carries_asid_and_range() {
    let sys = system();
    let snoop = Arc::new(Snooper::default());
    let sub = sys.tlb().subscribe(snoop.clone());
    let mm = sys.spawn().unwrap();
    let va = mm
        .mmap(None, 4 * PAGE, RW, MapFlags::PRIVATE | MapFlags::NOHUGEPAGE)
        .unwrap();
    mm.fill(va, 1, (4 * PAGE) as usize).unwrap();
    assert!(
        snoop.ops.lock().unwrap().is_empty(),
        "filling empty entries needs no TLBI"
    );
    mm.munmap(va + PAGE, PAGE).unwrap();
    let ops = snoop.ops.lock().unwrap().clone();
    assert!(
        ops.contains(&Tlbi::Va {
            asid: mm.asid(),
            va: va + PAGE,
            size: PAGE,
            leaf_only: true
        }),
        "{ops:?}"
    );
    let asid = mm.asid();
    sys.exit(mm.pid()).unwrap();
    assert_eq!(snoop.ops.lock().unwrap().last(), Some(&Tlbi::Asid(asid)));
    assert!(sys.tlb().unsubscribe(sub));
    assert!(!sys.tlb().unsubscribe(sub));
}

#[test]
fn reclaim_skips_shared_and_cow_pages_and_swaps_back() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let p = mm
        .mmap(None, 4 * PAGE, RW, MapFlags::PRIVATE | MapFlags::NOHUGEPAGE)
        .unwrap();
    let s = mm.mmap(None, PAGE, RW, MapFlags::SHARED).unwrap();
    for i in 0..4 {
        mm.write(p + i * PAGE, &[i as u8 + 1; 16]).unwrap();
    }
    mm.write(s, b"shared").unwrap();
    let child = sys.fork(mm.pid()).unwrap();
    child.write(p, b"own").unwrap(); // page 0 now private to each
    let used = sys.ram().stats().used_frames;
    // Pages 1..3 are COW-shared with the child: not reclaimable; page 0 is.
    assert_eq!(mm.reclaim(p, 4 * PAGE).unwrap(), 1);
    assert_eq!(mm.reclaim(s, PAGE).unwrap(), 0);
    assert_eq!(sys.ram().stats().used_frames, used - 1);
    assert_eq!(mm.swapped_pages(), 1);
    let mut b = [0u8; 16];
    mm.read(p, &mut b).unwrap();
    assert_eq!(b, [1; 16]);
    assert_eq!(mm.swapped_pages(), 0);
    assert!(matches!(mm.migrate(s), Err(sva_mm::Error::PageShared(_))));
    assert!(matches!(
        mm.migrate(p + PAGE),
        Err(sva_mm::Error::PageShared(_))
    ));
    assert!(matches!(
        mm.migrate(sva_addr::Va(0x20000)),
        Err(sva_mm::Error::NotMapped(_))
    ));
}

#[test]
fn access_flag_is_set_again_by_hardware() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let va = mm
        .mmap(
            None,
            4 * PAGE,
            RW,
            MapFlags::PRIVATE | MapFlags::POPULATE | MapFlags::NOHUGEPAGE,
        )
        .unwrap();
    assert_eq!(mm.clear_young(va, 4 * PAGE).unwrap(), 4);
    assert_eq!(mm.clear_young(va, 4 * PAGE).unwrap(), 0);
    let mut b = [0u8; 1];
    mm.read(va + 2 * PAGE, &mut b).unwrap();
    assert_eq!(mm.clear_young(va, 4 * PAGE).unwrap(), 1);
}

#[test]
fn thp_blocks_split_on_partial_unmap_and_keep_data() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let va = mm.mmap(None, 2 * BLOCK, RW, MapFlags::PRIVATE).unwrap();
    mm.fill(va, 0x11, (2 * BLOCK) as usize).unwrap();
    assert_eq!(mm.stats().thp_faults, 2);
    let leaf = mm.table().lookup(&**sys.ram(), va + PAGE).unwrap().unwrap();
    assert_eq!(leaf.size, BLOCK);
    mm.munmap(va + BLOCK - PAGE, 2 * PAGE).unwrap();
    assert_eq!(mm.stats().thp_splits, 2);
    assert_eq!(mm.resident_bytes().unwrap(), 2 * BLOCK - 2 * PAGE);
    let mut b = [0u8; 4];
    mm.read(va + BLOCK - PAGE - 4, &mut b).unwrap();
    assert_eq!(b, [0x11; 4]);
    mm.read(va + BLOCK + PAGE, &mut b).unwrap();
    assert_eq!(b, [0x11; 4]);
    // A region too small or unaligned for a block gets pages.
    let small = mm.mmap(None, BLOCK - PAGE, RW, MapFlags::PRIVATE).unwrap();
    mm.write(small, b"x").unwrap();
    assert_eq!(mm.stats().thp_faults, 2);
    sys.exit(mm.pid()).unwrap();
    assert_eq!(sys.ram().stats().used_frames, 0);
}
