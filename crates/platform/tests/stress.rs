//! Devices writing as fast as they can while the CPU unmaps under them: no write may land in
//! a frame after munmap returned (the frame is free by then, and zeroed).

mod common;

use common::{PRI, RW, dev, munmap_rounds_against_device_writes, platform_with_btm, sva_device};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use sva_addr::{StreamId, Va};
use sva_iommu::DeviceId;
use sva_mm::MapFlags;
use sva_platform::{Platform, PlatformConfig};

fn run(btm: bool) {
    let p = Arc::new(platform_with_btm(btm));
    let sva = p.sva.clone().unwrap();
    let sid = StreamId(3);
    let ep = sva_device(&p, sid, PRI);
    let mm = p.system.spawn().unwrap();
    let bond = sva.bind(dev(sid), &mm).unwrap();
    let at = Va(0x40_0000_0000);
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (ep, stop, writes) = (ep.clone(), stop.clone(), writes.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if ep
                        .dma_write(Some(bond.pasid), at.raw(), &[0xee; 512])
                        .is_ok()
                    {
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let checked = munmap_rounds_against_device_writes(&p, &mm, at, 512, &writes, |_| {});
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert!(checked > 100, "only {checked} freed frames checked");
}

#[test]
fn no_device_write_lands_after_munmap_with_btm() {
    run(true);
}

#[test]
fn no_device_write_lands_after_munmap_without_btm() {
    run(false);
}

/// Bind/unbind, page faults, munmap and exit from several threads at once: every complete
/// page request group gets exactly one response, nothing deadlocks, and afterwards every
/// PASID is free and every frame of the exited processes is back.
#[test]
fn bind_fault_invalidate_exit_race() {
    use sva_platform::Message;
    let p = Arc::new(
        Platform::new(PlatformConfig {
            irq_thread: true,
            iopf_workers: 2,
            ..PlatformConfig::default()
        })
        .unwrap(),
    );
    let sva = p.sva.clone().unwrap();
    let devs: Vec<_> = (0..2u32)
        .map(|i| sva_device(&p, StreamId(0x10 + i), PRI))
        .collect();
    // Stream tables and the first CD leaf table of each device stay with the driver; a
    // first bind allocates the leaves. After that, everything a process adds must go again.
    let warm = p.system.spawn().unwrap();
    for i in 0..2u32 {
        let b = sva.bind(DeviceId(0x10 + i), &warm).unwrap();
        sva.unbind(b).unwrap();
    }
    p.system.exit(warm.pid()).unwrap();
    let frames_before = p.ram.stats().used_frames;
    for round in 0..6u16 {
        let mm = p.system.spawn().unwrap();
        let len = 64 * 4096;
        let va = mm
            .mmap(None, len, RW, MapFlags::PRIVATE | MapFlags::NOHUGEPAGE)
            .unwrap();
        let bonds: Vec<_> = (0..2u32)
            .map(|i| sva.bind(DeviceId(0x10 + i), &mm).unwrap())
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        // Each device sends page requests for random pages and counts the answers.
        let faulters: Vec<_> = devs
            .iter()
            .zip(&bonds)
            .map(|(ep, bond)| {
                let (ep, pasid) = (ep.clone(), bond.pasid);
                std::thread::spawn(move || {
                    let mut sent = 0u16;
                    for g in 0..64u16 {
                        ep.page_request(
                            Some(pasid),
                            va.raw() + u64::from(g) * 4096,
                            g,
                            true,
                            g % 2 == 0,
                        );
                        sent += 1;
                    }
                    let mut answered = std::collections::BTreeMap::new();
                    for _ in 0..5000 {
                        for m in ep.take_messages() {
                            if let Message::PriResponse { prg_index, .. } = m {
                                *answered.entry(prg_index).or_insert(0u32) += 1;
                            }
                        }
                        if answered.len() == usize::from(sent) {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    answered
                })
            })
            .collect();
        // Meanwhile the CPU unmaps and remaps parts, and a third thread binds and unbinds.
        let churn = {
            let (mm, stop) = (mm.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let at = va + (i % 64) * 4096;
                    let _ = mm.munmap(at, 4096);
                    let _ = mm.mmap(Some(at), 4096, RW, MapFlags::PRIVATE | MapFlags::FIXED);
                    i += 1;
                }
            })
        };
        let rebinder = {
            let (sva, mm, stop) = (sva.clone(), mm.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let b = sva.bind(DeviceId(0x10), &mm).unwrap();
                    sva.unbind(b).unwrap();
                }
            })
        };
        for f in faulters {
            let answered = f.join().unwrap();
            assert_eq!(answered.len(), 64, "round {round}: lost responses");
            assert!(
                answered.values().all(|&n| n == 1),
                "round {round}: duplicate responses"
            );
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
        rebinder.join().unwrap();
        // Exit with the bonds still held, then unbind.
        p.system.exit(mm.pid()).unwrap();
        for b in bonds {
            sva.unbind(b).unwrap();
        }
        assert_eq!(sva.pasid_of(mm.pid()), None);
    }
    assert_eq!(p.ram.stats().used_frames, frames_before, "frames leaked");
}
