//! Devices writing as fast as they can while the CPU unmaps under them: no write may land in
//! a frame after munmap returned (the frame is free by then, and zeroed).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use sva_addr::{StreamId, Va};
use sva_iommu::{DeviceId, SvaFeatures};
use sva_mm::{MapFlags, Prot};
use sva_physmem::PhysMemory;
use sva_platform::{Platform, PlatformConfig};
use sva_smmuv3::SmmuConfig;
use sva_smmuv3_driver::{DeviceDesc, FaultPath, ProbeOptions};

fn run(btm: bool) {
    let p = Arc::new(
        Platform::new(PlatformConfig {
            smmu: SmmuConfig {
                btm,
                ..SmmuConfig::default()
            },
            probe: ProbeOptions {
                btm,
                ..ProbeOptions::default()
            },
            irq_thread: true,
            ..PlatformConfig::default()
        })
        .unwrap(),
    );
    let sva = p.sva.clone().unwrap();
    let sid = StreamId(3);
    let ep = p.device(
        sid,
        DeviceDesc {
            fault_path: FaultPath::Pri,
            ats: true,
        },
    );
    sva.enable_device(
        DeviceId(3),
        SvaFeatures {
            iopf: true,
            max_pasid: None,
        },
    )
    .unwrap();
    let mm = p.system.spawn().unwrap();
    let bond = sva.bind(DeviceId(3), &mm).unwrap();
    let at = Va(0x40_0000_0000);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (ep, stop) = (ep.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut ok = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if ep
                        .dma_write(Some(bond.pasid), at.raw(), &[0xee; 512])
                        .is_ok()
                    {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let mut checked = 0;
    for _ in 0..300 {
        mm.mmap(
            Some(at),
            4096,
            Prot::READ | Prot::WRITE,
            MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::POPULATE,
        )
        .unwrap();
        let frame = mm.translate(at, sva_mm::AccessKind::Read).unwrap().unwrap();
        std::thread::yield_now();
        mm.munmap(at, 4096).unwrap();
        // The frame is free and was zeroed; nothing the devices do may show up in it.
        std::thread::yield_now();
        let mut b = [0u8; 512];
        p.ram.read(frame, &mut b).unwrap();
        if p.ram.refcount(frame).is_err() {
            assert!(
                b.iter().all(|&x| x == 0),
                "a device wrote into a freed frame"
            );
            checked += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let writes: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(checked > 100, "only {checked} freed frames checked");
    assert!(writes > 0, "the devices never got through");
}

#[test]
fn no_device_write_lands_after_munmap_with_btm() {
    run(true);
}

#[test]
fn no_device_write_lands_after_munmap_without_btm() {
    run(false);
}
