//! mmap / munmap / mprotect / madvise, demand paging and the fault handler.

mod common;

use common::*;
use sva_addr::Va;
use sva_mm::{AccessKind, Error, MapFlags, MmConfig, Prot, SegvCode};

const RW: Prot = Prot::READ.union(Prot::WRITE);
const PRIV: MapFlags = MapFlags::PRIVATE;

#[test]
fn demand_zero_fill_then_data_round_trips() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let before = sys.ram().stats().used_frames;
    let va = mm
        .mmap(None, 16 * PAGE, RW, PRIV | MapFlags::NOHUGEPAGE)
        .unwrap();
    assert!(va.is_aligned(PAGE));
    // Nothing is allocated until touched.
    assert_eq!(sys.ram().stats().used_frames, before);
    let mut buf = vec![0xaau8; 100];
    mm.read(va + 5 * PAGE, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "demand-zero page is not zero");
    let data: Vec<u8> = (0..3 * PAGE as usize).map(|i| (i % 251) as u8).collect();
    mm.write(va + PAGE - 7, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    mm.read(va + PAGE - 7, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(mm.resident_bytes().unwrap(), 5 * PAGE);
    assert!(mm.stats().faults >= 5);
}

#[test]
fn accesses_outside_vmas_or_permissions_are_segv() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let ro = mm.mmap(None, PAGE, Prot::READ, PRIV).unwrap();
    let mut b = [0u8; 4];
    mm.read(ro, &mut b).unwrap();
    let e = mm.write(ro, b"x").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Segv {
                code: SegvCode::AccErr,
                access: AccessKind::Write,
                ..
            }
        ),
        "{e}"
    );
    let e = mm.fetch(ro, &mut b).unwrap_err();
    assert!(matches!(
        e,
        Error::Segv {
            code: SegvCode::AccErr,
            access: AccessKind::Execute,
            ..
        }
    ));
    let e = mm.read(Va(0x1000), &mut b).unwrap_err();
    assert!(matches!(
        e,
        Error::Segv {
            code: SegvCode::MapErr,
            ..
        }
    ));
    let none = mm.mmap(None, PAGE, Prot::NONE, PRIV).unwrap();
    assert!(matches!(
        mm.read(none, &mut b),
        Err(Error::Segv {
            code: SegvCode::AccErr,
            ..
        })
    ));
    // Beyond the 48-bit input range.
    assert!(matches!(
        mm.read(Va(1 << 48), &mut b),
        Err(Error::Segv {
            code: SegvCode::MapErr,
            ..
        })
    ));
    // Exec mapping can be fetched.
    let x = mm.mmap(None, PAGE, Prot::READ | Prot::EXEC, PRIV).unwrap();
    mm.fetch(x, &mut b).unwrap();
    // Write-only implies read (no write-only AP encoding).
    let wo = mm.mmap(None, PAGE, Prot::WRITE, PRIV).unwrap();
    mm.write(wo, b"w").unwrap();
    mm.read(wo, &mut b[..1]).unwrap();
    assert_eq!(&b[..1], b"w");
}

#[test]
fn bad_arguments_are_typed_errors() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    assert!(matches!(mm.mmap(None, 0, RW, PRIV), Err(Error::ZeroLength)));
    assert!(matches!(
        mm.mmap(None, PAGE, RW, MapFlags::empty()),
        Err(Error::InvalidFlags(_))
    ));
    assert!(matches!(
        mm.mmap(None, PAGE, RW, MapFlags::PRIVATE | MapFlags::SHARED),
        Err(Error::InvalidFlags(_))
    ));
    assert!(matches!(
        mm.mmap(Some(Va(0x10_0123)), PAGE, RW, PRIV | MapFlags::FIXED),
        Err(Error::Unaligned { .. })
    ));
    assert!(matches!(
        mm.mmap(None, PAGE, RW, PRIV | MapFlags::FIXED),
        Err(Error::InvalidFlags(_))
    ));
    assert!(matches!(
        mm.mmap(
            Some(Va((1 << 48) - PAGE)),
            2 * PAGE,
            RW,
            PRIV | MapFlags::FIXED
        ),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        mm.mmap(Some(Va(0)), PAGE, RW, PRIV | MapFlags::FIXED),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        mm.mmap(None, u64::MAX - 10, RW, PRIV),
        Err(Error::NoSpace(_))
    ));
    assert!(matches!(
        mm.munmap(Va(0x1001), PAGE),
        Err(Error::Unaligned { .. })
    ));
    assert!(matches!(mm.munmap(Va(0x1000), 0), Err(Error::ZeroLength)));
    assert!(matches!(
        mm.munmap(Va(!0xfff), PAGE),
        Err(Error::OutOfRange { .. })
    ));
    // mprotect / madvise on a range with a hole: ENOMEM-like NotMapped.
    let va = mm
        .mmap(Some(Va(0x1000_0000)), 2 * PAGE, RW, PRIV | MapFlags::FIXED)
        .unwrap();
    assert!(matches!(
        mm.mprotect(va, 3 * PAGE, Prot::READ),
        Err(Error::NotMapped(_))
    ));
    assert!(matches!(
        mm.mprotect(Va(0x20000), PAGE, Prot::READ),
        Err(Error::NotMapped(_))
    ));
    assert!(matches!(
        mm.madvise_dontneed(va, 4 * PAGE),
        Err(Error::NotMapped(_))
    ));
    // munmap of nothing is fine.
    mm.munmap(Va(0x40000), 8 * PAGE).unwrap();
}

#[test]
fn fixed_placement_replaces_and_noreplace_refuses() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let at = Va(0x4000_0000);
    // MAP_FIXED over nothing is allowed.
    assert_eq!(
        mm.mmap(Some(at), 4 * PAGE, RW, PRIV | MapFlags::FIXED)
            .unwrap(),
        at
    );
    mm.write(at + PAGE, b"old").unwrap();
    assert!(matches!(
        mm.mmap(Some(at + PAGE), PAGE, RW, PRIV | MapFlags::FIXED_NOREPLACE),
        Err(Error::Exists { .. })
    ));
    // MAP_FIXED over data replaces it with fresh zero pages.
    mm.mmap(Some(at + PAGE), PAGE, Prot::READ, PRIV | MapFlags::FIXED)
        .unwrap();
    let mut b = [1u8; 3];
    mm.read(at + PAGE, &mut b).unwrap();
    assert_eq!(b, [0; 3]);
    assert_eq!(mm.vmas().unwrap().len(), 3);
    // A free hint is honoured; a taken one is not.
    let hint = Va(0x5000_0000);
    assert_eq!(mm.mmap(Some(hint), PAGE, RW, PRIV).unwrap(), hint);
    assert_ne!(mm.mmap(Some(hint), PAGE, RW, PRIV).unwrap(), hint);
}

#[test]
fn mprotect_splits_and_merges_vmas_and_updates_pages() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let va = mm
        .mmap(
            None,
            8 * PAGE,
            RW,
            PRIV | MapFlags::POPULATE | MapFlags::NOHUGEPAGE,
        )
        .unwrap();
    assert_eq!(mm.vmas().unwrap().len(), 1);
    mm.mprotect(va + 2 * PAGE, 2 * PAGE, Prot::READ).unwrap();
    let vmas = mm.vmas().unwrap();
    assert_eq!(vmas.len(), 3);
    assert_eq!(
        (vmas[1].start, vmas[1].end, vmas[1].prot),
        (va + 2 * PAGE, va + 4 * PAGE, Prot::READ)
    );
    assert!(matches!(
        mm.write(va + 3 * PAGE, b"x"),
        Err(Error::Segv { .. })
    ));
    mm.write(va + 4 * PAGE, b"x").unwrap();
    mm.mprotect(va + 2 * PAGE, 2 * PAGE, RW).unwrap();
    assert_eq!(
        mm.vmas().unwrap().len(),
        1,
        "neighbours with equal protection merge again"
    );
    mm.write(va + 3 * PAGE, b"y").unwrap();
    // munmap in the middle splits.
    mm.munmap(va + 5 * PAGE, PAGE).unwrap();
    assert_eq!(mm.vmas().unwrap().len(), 2);
}

#[test]
fn madvise_dontneed_zeroes_private_and_keeps_shared() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let p = mm.mmap(None, 2 * PAGE, RW, PRIV).unwrap();
    let s = mm.mmap(None, 2 * PAGE, RW, MapFlags::SHARED).unwrap();
    mm.write(p, b"private").unwrap();
    mm.write(s, b"shared").unwrap();
    let used = sys.ram().stats().used_frames;
    mm.madvise_dontneed(p, 2 * PAGE).unwrap();
    mm.madvise_dontneed(s, 2 * PAGE).unwrap();
    assert!(sys.ram().stats().used_frames < used);
    let mut b = [0u8; 7];
    mm.read(p, &mut b).unwrap();
    assert_eq!(b, [0; 7]);
    let mut b = [0u8; 6];
    mm.read(s, &mut b).unwrap();
    assert_eq!(&b, b"shared");
}

#[test]
fn populate_maps_everything_up_front() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let va = mm
        .mmap(
            None,
            5 * PAGE,
            RW,
            PRIV | MapFlags::POPULATE | MapFlags::NOHUGEPAGE,
        )
        .unwrap();
    assert_eq!(mm.resident_bytes().unwrap(), 5 * PAGE);
    for i in 0..5 {
        assert!(
            mm.translate(va + i * PAGE, AccessKind::Write)
                .unwrap()
                .is_some()
        );
    }
}

#[test]
fn exit_returns_every_frame() {
    let sys = system();
    let start = sys.ram().stats();
    let mm = sys.spawn().unwrap();
    let a = mm.mmap(None, 64 * PAGE, RW, PRIV).unwrap();
    let b = mm.mmap(None, 4 * BLOCK, RW, PRIV).unwrap();
    let s = mm.mmap(None, 8 * PAGE, RW, MapFlags::SHARED).unwrap();
    mm.fill(a, 1, 64 * PAGE as usize).unwrap();
    mm.fill(b + 100, 2, (3 * BLOCK) as usize).unwrap();
    mm.fill(s, 3, PAGE as usize).unwrap();
    mm.reclaim(a, 8 * PAGE).unwrap();
    assert!(sys.ram().stats().used_frames > start.used_frames + 64);
    let pid = mm.pid();
    drop(mm);
    sys.exit(pid).unwrap();
    assert_eq!(sys.ram().stats().used_frames, start.used_frames);
    assert_eq!(sys.ram().stats().blocks, 0);
    assert_eq!(sys.swap_stats().used, 0);
    assert!(matches!(sys.exit(pid), Err(Error::NoProcess(_))));
}

#[test]
fn exited_address_space_refuses_everything() {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let va = mm.mmap(None, PAGE, RW, PRIV).unwrap();
    sys.exit(mm.pid()).unwrap();
    assert!(!mm.is_alive());
    assert!(matches!(mm.write(va, b"x"), Err(Error::Exited(_))));
    assert!(matches!(
        mm.mmap(None, PAGE, RW, PRIV),
        Err(Error::Exited(_))
    ));
    assert!(matches!(
        mm.handle_fault(va, AccessKind::Read),
        Err(Error::Exited(_))
    ));
}

#[test]
fn other_granules_work_end_to_end() {
    for granule in [sva_vmsa::Granule::Size16K, sva_vmsa::Granule::Size64K] {
        let sys = system_with(MmConfig {
            granule,
            ia_bits: 39,
            ..MmConfig::default()
        });
        let mm = sys.spawn().unwrap();
        let page = granule.size();
        assert_eq!(mm.page_size(), page);
        let va = mm.mmap(None, 3 * page, RW, PRIV).unwrap();
        assert!(va.raw() < 1 << 39);
        mm.write(va + page - 3, b"granule").unwrap();
        let mut b = [0u8; 7];
        mm.read(va + page - 3, &mut b).unwrap();
        assert_eq!(&b, b"granule");
        assert!(matches!(
            mm.munmap(va + 4096, page),
            Err(Error::Unaligned { .. })
        ));
        let pid = mm.pid();
        sys.exit(pid).unwrap();
        assert_eq!(sys.ram().stats().used_frames, 0);
    }
}

#[test]
fn asids_are_distinct_and_recycled() {
    let sys = system();
    let a = sys.spawn().unwrap();
    let b = sys.spawn().unwrap();
    assert_ne!(a.asid(), b.asid());
    assert_ne!(a.table_root(), b.table_root());
    let asid = a.asid();
    sys.exit(a.pid()).unwrap();
    let c = sys.spawn().unwrap();
    assert_eq!(c.asid(), asid);
}
