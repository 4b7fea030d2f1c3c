//! Set-up shared by the platform tests: the usual device descriptions, platforms with the
//! interrupt thread, devices enabled for SVA and the munmap-against-DMA check.

#![allow(dead_code, reason = "each test binary uses part of the set-up")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use sva_addr::{Pa, StreamId, Va};
use sva_iommu::{Bond, DeviceId, Sva, SvaFeatures};
use sva_mm::{AccessKind, MapFlags, Mm, Prot};
use sva_physmem::PhysMemory;
use sva_platform::{Platform, PlatformConfig, TestEndpoint};
use sva_smmuv3::SmmuConfig;
use sva_smmuv3_driver::{DeviceDesc, FaultPath, ProbeOptions};

pub const RW: Prot = Prot::READ.union(Prot::WRITE);
/// Where the isolation tests put their buffers.
pub const AT: Va = Va(0x4000_0000);
pub const IOPF: SvaFeatures = SvaFeatures {
    iopf: true,
    max_pasid: None,
};
pub const STALL: DeviceDesc = DeviceDesc {
    fault_path: FaultPath::Stall,
    ats: false,
};
pub const PRI: DeviceDesc = DeviceDesc {
    fault_path: FaultPath::Pri,
    ats: true,
};

/// The SVA core's name for the device at `sid`.
pub fn dev(sid: StreamId) -> DeviceId {
    DeviceId(sid.raw())
}

/// A platform config whose SMMU has broadcast TLB maintenance and whose driver uses it, or
/// neither.
pub fn btm_config(btm: bool) -> PlatformConfig {
    PlatformConfig {
        smmu: SmmuConfig {
            btm,
            ..SmmuConfig::default()
        },
        probe: ProbeOptions {
            btm,
            ..ProbeOptions::default()
        },
        ..PlatformConfig::default()
    }
}

/// A platform with the interrupt thread, with or without BTM (see [`btm_config`]).
pub fn platform_with_btm(btm: bool) -> Platform {
    Platform::new(PlatformConfig {
        irq_thread: true,
        ..btm_config(btm)
    })
    .unwrap()
}

/// A platform with the interrupt thread and the SMMU `smmu`.
pub fn platform_with_smmu(smmu: SmmuConfig) -> Platform {
    Platform::new(PlatformConfig {
        smmu,
        irq_thread: true,
        ..PlatformConfig::default()
    })
    .unwrap()
}

/// A platform with the interrupt thread and the default SMMU.
pub fn platform_with_irq_thread() -> Platform {
    platform_with_smmu(SmmuConfig::default())
}

/// A scriptable device at `sid`, described to the driver and enabled for SVA with I/O page
/// faults.
pub fn sva_device(p: &Platform, sid: StreamId, desc: DeviceDesc) -> Arc<TestEndpoint> {
    let ep = p.device(sid, desc);
    p.sva
        .as_ref()
        .unwrap()
        .enable_device(dev(sid), IOPF)
        .unwrap();
    ep
}

/// Binds each address space of `mms` to the device at `sid`, in order.
pub fn bind_each(sva: &Sva, sid: StreamId, mms: &[Arc<Mm>]) -> Vec<Bond> {
    mms.iter()
        .map(|mm| sva.bind(dev(sid), mm).unwrap())
        .collect()
}

/// The PASIDs of `bonds` as numbers, in order.
pub fn raw_pasids(bonds: &[Bond]) -> Vec<u32> {
    bonds.iter().map(|b| b.pasid.raw()).collect()
}

/// One private, populated read-write page in `mm`, wherever it fits.
pub fn populated_page(mm: &Mm) -> Va {
    populated_page_with(mm, RW)
}

/// One private, populated page with `prot` in `mm`, wherever it fits.
pub fn populated_page_with(mm: &Mm, prot: Prot) -> Va {
    mm.mmap(None, 4096, prot, MapFlags::PRIVATE | MapFlags::POPULATE)
        .unwrap()
}

/// Maps a populated page at `at` and unmaps it again while devices write there, 300 rounds
/// at least and on until `writes` shows a device got through (30 s at most). After each
/// munmap `after_munmap` gets the old frame; the first `len` bytes of a frame that is free
/// then must be zero. Returns how many freed frames were checked.
pub fn munmap_rounds_against_device_writes(
    p: &Platform,
    mm: &Mm,
    at: Va,
    len: usize,
    writes: &AtomicU64,
    after_munmap: impl Fn(Pa),
) -> usize {
    let mut checked = 0;
    // On a busy machine the devices may need longer than 300 rounds to get through.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 0;
    while round < 300 || writes.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the devices never got through");
        round += 1;
        mm.mmap(
            Some(at),
            4096,
            RW,
            MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::POPULATE,
        )
        .unwrap();
        let frame = mm.translate(at, AccessKind::Read).unwrap().unwrap();
        std::thread::yield_now();
        mm.munmap(at, 4096).unwrap();
        after_munmap(frame);
        // The frame is free and was zeroed; nothing the devices do may show up in it.
        std::thread::yield_now();
        let mut b = vec![0u8; len];
        p.ram.read(frame, &mut b).unwrap();
        if p.ram.refcount(frame).is_err() {
            assert!(
                b.iter().all(|&x| x == 0),
                "a device wrote into a freed frame"
            );
            checked += 1;
        }
    }
    checked
}
