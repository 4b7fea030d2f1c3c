//! PCIe functions on the SMMUv3 model: the DMA engine through ATS and the ATC, I/O page
//! faults through PRI (grouped, within the function's credits) and through stall, ATC
//! invalidation on munmap, partial transfers when the DMA does not block on faults, and
//! the PCIe rules for enabling capabilities.

mod common;

use common::{AT, IOPF, RW, platform_with_smmu};
use std::sync::Arc;
use sva_addr::{Pasid, StreamId, Va};
use sva_iommu::{Bond, DeviceId};
use sva_mm::{AccessKind, MapFlags, Mm};
use sva_pcie::{Capabilities, Dma, DmaConfig, DmaCtx, FaultReason, PciFunction};
use sva_platform::{Platform, PlatformConfig};
use sva_smmuv3::PriResponse;
use sva_smmuv3::{Endpoint, SmmuConfig};

/// A platform, a function with `caps` enabled for SVA, and a process bound to it.
fn setup(caps: Capabilities, smmu: SmmuConfig) -> (Platform, Arc<PciFunction>, Arc<Mm>, Bond) {
    let p = platform_with_smmu(smmu);
    let f = p.sva_function(StreamId(0x10), caps).unwrap();
    let mm = p.system.spawn().unwrap();
    let bond = p.sva.as_ref().unwrap().bind(DeviceId(0x10), &mm).unwrap();
    (p, f, mm, bond)
}

/// One private page at [`AT`] in `mm`, not populated.
fn page_at(mm: &Mm) -> Va {
    mm.mmap(Some(AT), 4096, RW, MapFlags::PRIVATE | MapFlags::FIXED)
        .unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn ats_and_pri_fault_in_untouched_buffers_and_fill_the_atc() {
    let (_p, f, mm, bond) = setup(Capabilities::default(), SmmuConfig::default());
    let va = mm.mmap(None, 64 << 10, RW, MapFlags::PRIVATE).unwrap();
    let data = pattern(40_000, 7);
    let ctx = DmaCtx::pasid(bond.pasid);
    f.write(ctx, va.raw() + 100, &data).unwrap();
    let mut cpu = vec![0u8; data.len()];
    mm.read(va + 100, &mut cpu).unwrap();
    assert_eq!(cpu, data, "the CPU sees what the device wrote");

    let mut back = vec![0u8; data.len()];
    f.read(ctx, va.raw() + 100, &mut back).unwrap();
    assert_eq!(back, data);
    let s = f.stats();
    // 10 pages touched: PRI groups of up to 4 pages bring them in.
    assert!(s.page_requests >= 10, "{s:?}");
    assert!(
        s.page_request_groups < s.page_requests,
        "requests were grouped: {s:?}"
    );
    assert_eq!(s.responses_success, s.page_request_groups);
    assert!(s.max_outstanding <= 32);
    let atc = f.atc().stats();
    assert!(atc.hits > 0 && atc.fills >= 10, "{atc:?}");
    assert_eq!(f.outstanding_page_requests(), 0);
}

#[test]
fn copy_through_the_atc_matches_the_cpu() {
    let (_p, f, mm, bond) = setup(Capabilities::default(), SmmuConfig::default());
    let len = 256 << 10;
    let src = mm.mmap(None, len, RW, MapFlags::PRIVATE).unwrap();
    let dst = mm.mmap(None, len, RW, MapFlags::PRIVATE).unwrap();
    let data = pattern(len as usize, 3);
    mm.write(src, &data).unwrap();
    // Unaligned source and destination, destination untouched.
    let n = len - 5000;
    f.copy(
        DmaCtx::pasid(bond.pasid),
        src.raw() + 1000,
        dst.raw() + 3000,
        n - 3000,
    )
    .unwrap();
    let mut out = vec![0u8; (n - 3000) as usize];
    mm.read(dst + 3000, &mut out).unwrap();
    assert_eq!(out, data[1000..1000 + out.len()]);
}

#[test]
fn without_block_on_fault_a_dma_stops_at_the_first_missing_page() {
    let (_p, f, mm, bond) = setup(Capabilities::default(), SmmuConfig::default());
    let va = mm.mmap(None, 4 * 4096, RW, MapFlags::PRIVATE).unwrap();
    mm.touch(va, 2 * 4096, AccessKind::Write).unwrap();
    let ctx = DmaCtx {
        pasid: Some(bond.pasid),
        block_on_fault: false,
    };
    let err = f.write(ctx, va.raw() + 10, &[0xab; 3 * 4096]).unwrap_err();
    assert_eq!(err.reason, FaultReason::NotPresent);
    assert_eq!(err.addr, va.raw() + 2 * 4096);
    assert_eq!(err.done, 2 * 4096 - 10);
    assert!(err.write);
    assert_eq!(f.stats().page_requests, 0, "nothing was requested");
    // Exactly the bytes reported were written, nothing after them.
    let mut cpu = vec![0u8; 2 * 4096];
    mm.read(va, &mut cpu).unwrap();
    assert!(cpu[10..].iter().all(|&b| b == 0xab) && cpu[..10].iter().all(|&b| b == 0));
    let mut third = [1u8; 16];
    mm.read(va + 2 * 4096, &mut third).unwrap();
    assert_eq!(third, [0; 16]);
}

#[test]
fn munmap_invalidates_the_atc_and_later_dma_is_refused() {
    let (p, f, mm, bond) = setup(Capabilities::default(), SmmuConfig::default());
    let va = mm.mmap(None, 8 * 4096, RW, MapFlags::PRIVATE).unwrap();
    let ctx = DmaCtx::pasid(bond.pasid);
    f.write(ctx, va.raw(), &[5u8; 8 * 4096]).unwrap();
    let frame = mm.translate(va, AccessKind::Read).unwrap().unwrap();
    assert!(f.atc().maps_frame(frame, 4096));
    let used = p.ram.stats().used_frames;
    mm.munmap(va, 8 * 4096).unwrap();
    assert!(
        !f.atc().maps_frame(frame, 4096),
        "no stale ATC entry after munmap"
    );
    assert!(f.stats().atc_invalidations > 0);
    assert!(p.ram.stats().used_frames < used, "the frames were freed");
    let err = f.read(ctx, va.raw(), &mut [0u8; 64]).unwrap_err();
    assert_eq!(err.reason, FaultReason::Invalid, "{err}");
    assert_eq!(err.done, 0);
}

#[test]
fn stall_resolves_faults_for_a_function_without_ats() {
    let caps = Capabilities {
        ats: false,
        pri_capacity: 0,
        ..Capabilities::default()
    };
    let (_p, f, mm, bond) = setup(caps, SmmuConfig::default());
    let va = mm.mmap(None, 3 * 4096, RW, MapFlags::PRIVATE).unwrap();
    let data = pattern(3 * 4096, 9);
    f.write(DmaCtx::pasid(bond.pasid), va.raw(), &data).unwrap();
    let mut cpu = vec![0u8; data.len()];
    mm.read(va, &mut cpu).unwrap();
    assert_eq!(cpu, data);
    assert!(f.stats().stalls >= 3);
    assert_eq!(f.atc().stats().fills, 0, "no ATS without the capability");
    // A stalled access outside any mapping is terminated.
    let err = f
        .read(DmaCtx::pasid(bond.pasid), 0x7000_0000, &mut [0u8; 8])
        .unwrap_err();
    assert_eq!(err.reason, FaultReason::Invalid);
}

#[test]
fn page_requests_never_exceed_the_allocation() {
    let caps = Capabilities {
        pri_capacity: 2,
        ..Capabilities::default()
    };
    let (_p, f, mm, bond) = setup(caps, SmmuConfig::default());
    let len = 64 * 4096;
    let va = mm.mmap(None, len, RW, MapFlags::PRIVATE).unwrap();
    let threads: Vec<_> = (0..4u64)
        .map(|i| {
            let f = f.clone();
            std::thread::spawn(move || {
                let part = len / 4;
                f.write(
                    DmaCtx::pasid(bond.pasid),
                    va.raw() + i * part,
                    &vec![i as u8; part as usize],
                )
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    let s = f.stats();
    assert!(s.page_requests >= 64);
    assert!(s.max_outstanding <= 2, "{s:?}");
    let mut b = [0u8; 1];
    mm.read(va + 3 * (len / 4), &mut b).unwrap();
    assert_eq!(b[0], 3);
}

#[test]
fn response_failure_stops_pri_until_software_resets_it() {
    // The host is slow (interrupts delivered by hand), so the test answers first.
    let p = Platform::new(PlatformConfig::default()).unwrap();
    let f = p.pci_function(
        StreamId(0x10),
        Capabilities::default(),
        DmaConfig::default(),
    );
    p.enable_sva(&f, IOPF).unwrap();
    let mm = p.system.spawn().unwrap();
    let bond = p.sva.as_ref().unwrap().bind(DeviceId(0x10), &mm).unwrap();
    let va = mm.mmap(None, 4096, RW, MapFlags::PRIVATE).unwrap();
    let dma = {
        let f = f.clone();
        std::thread::spawn(move || f.write(DmaCtx::pasid(bond.pasid), va.raw(), &[1; 8]))
    };
    while f.outstanding_page_requests() == 0 {
        std::thread::yield_now();
    }
    // A response to a group nobody asked for is flagged, not taken.
    f.pri_response(Some(bond.pasid), 300, PriResponse::Success);
    assert!(f.cap_state().pri_unexpected_index);
    f.pri_response(Some(bond.pasid), 0, PriResponse::Failure);
    let err = dma.join().unwrap().unwrap_err();
    assert_eq!(err.reason, FaultReason::ResponseFailure);
    assert!(f.cap_state().pri_response_failure);
    let again = f
        .write(DmaCtx::pasid(bond.pasid), va.raw(), &[1; 8])
        .unwrap_err();
    assert_eq!(
        again.reason,
        FaultReason::ResponseFailure,
        "PRI stays stopped"
    );
    // The host's own answer to the first request arrives late: unexpected now.
    p.deliver_irqs();
    f.enable_pri(32).unwrap();
    let pump = {
        let f = f.clone();
        std::thread::spawn(move || f.write(DmaCtx::pasid(bond.pasid), va.raw(), &[2; 8]))
    };
    while !pump.is_finished() {
        p.deliver_irqs();
        std::thread::yield_now();
    }
    pump.join().unwrap().unwrap();
    let mut b = [0u8; 8];
    mm.read(va, &mut b).unwrap();
    assert_eq!(b, [2; 8]);
}

#[test]
fn capabilities_follow_the_pcie_enable_order() {
    let p = platform_with_smmu(SmmuConfig::default());
    let f = p.pci_function(
        StreamId(0x10),
        Capabilities::default(),
        DmaConfig::default(),
    );
    assert!(f.enable_pri(4).is_err(), "PRI needs ATS");
    f.enable_ats(0).unwrap();
    assert!(f.enable_pasid(false, false).is_err(), "PASID before ATS");
    assert!(f.enable_pri(33).is_err(), "allocation above capacity");
    f.enable_pri(4).unwrap();
    assert!(f.disable_ats().is_err(), "PRI off first");
    f.disable_pri();
    f.disable_ats().unwrap();
    f.enable_pasid(false, false).unwrap();
    assert!(
        f.enable_pasid(true, false).is_err(),
        "no execute permission capability"
    );
    // PASID-tagged DMA needs PASID enabled and a PASID within the width.
    let narrow = p.pci_function(
        StreamId(0x20),
        Capabilities {
            pasid_width: 4,
            ..Capabilities::default()
        },
        DmaConfig::default(),
    );
    let err = narrow
        .read(DmaCtx::pasid(Pasid(1)), 0, &mut [0; 4])
        .unwrap_err();
    assert_eq!(err.reason, FaultReason::Disabled);
    narrow.enable_pasid(false, false).unwrap();
    let err = narrow
        .read(DmaCtx::pasid(Pasid(16)), 0, &mut [0; 4])
        .unwrap_err();
    assert_eq!(err.reason, FaultReason::Disabled);
    narrow.set_bus_master(false);
    let err = narrow.read(DmaCtx::iova(), 0, &mut [0; 4]).unwrap_err();
    assert_eq!(err.reason, FaultReason::Disabled);
}

#[test]
fn two_processes_on_one_function_are_isolated_by_pasid() {
    let (p, f, a, bond_a) = setup(Capabilities::default(), SmmuConfig::default());
    let b = p.system.spawn().unwrap();
    let bond_b = p.sva.as_ref().unwrap().bind(DeviceId(0x10), &b).unwrap();
    assert_ne!(bond_a.pasid, bond_b.pasid);
    let va_a = page_at(&a);
    let va_b = page_at(&b);
    assert_eq!(va_a, va_b);
    a.write(va_a, b"process A").unwrap();
    b.write(va_b, b"process B").unwrap();
    let mut buf = [0u8; 9];
    f.read(DmaCtx::pasid(bond_a.pasid), va_a.raw(), &mut buf)
        .unwrap();
    assert_eq!(&buf, b"process A");
    f.read(DmaCtx::pasid(bond_b.pasid), va_b.raw(), &mut buf)
        .unwrap();
    assert_eq!(&buf, b"process B");
    f.write(DmaCtx::pasid(bond_b.pasid), va_b.raw(), b"written B")
        .unwrap();
    a.read(va_a, &mut buf).unwrap();
    assert_eq!(&buf, b"process A", "A's page is untouched");
}

/// Nothing keeps the machine alive once its owners let go: the SMMU links to its
/// functions weakly (a function holds the SMMU, so strong links both ways would leak the
/// SMMU, its RAM and every function of every platform ever built).
#[test]
fn a_dropped_platform_frees_the_smmu_its_ram_and_its_functions() {
    let (p, f, mm, bond) = setup(Capabilities::default(), SmmuConfig::default());
    let va = mm.mmap(None, 4096, RW, MapFlags::PRIVATE).unwrap();
    f.write(DmaCtx::pasid(bond.pasid), va.raw(), &[7; 64])
        .unwrap();
    assert_eq!(p.smmu.stats().page_requests, 1);
    let (smmu, ram, function) = (
        Arc::downgrade(&p.smmu),
        Arc::downgrade(&p.ram),
        Arc::downgrade(&f),
    );
    p.sva.as_ref().unwrap().unbind(bond).unwrap();
    p.system.exit(mm.pid()).unwrap();
    drop((f, mm));
    // The SMMU no longer reaches a function nobody holds.
    assert!(
        function.upgrade().is_none(),
        "the SMMU kept the function alive"
    );
    drop(p);
    assert!(smmu.upgrade().is_none(), "the SMMU outlived its platform");
    assert!(ram.upgrade().is_none(), "the RAM outlived its platform");
}
