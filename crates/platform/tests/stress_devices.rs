//! PCIe functions with ATS and PRI doing DMA on real threads while the CPU changes the
//! address space under them: munmap against in-flight DMA and ATC fills, fork against DMA
//! into a page that becomes copy-on-write, and reclaim and migration against device
//! access. Each checks an invariant that a missing invalidation would break.

mod common;

use common::{munmap_rounds_against_device_writes, platform_with_irq_thread, populated_page};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use sva_addr::{StreamId, Va};
use sva_iommu::DeviceId;
use sva_mm::Mm;
use sva_pcie::{Capabilities, Dma, DmaCtx, PciFunction};
use sva_platform::Platform;

/// A platform with the interrupt thread, shared with the device threads.
fn platform() -> Arc<Platform> {
    Arc::new(platform_with_irq_thread())
}

/// Two functions bound to one process; returns them with the PASID.
fn bound(p: &Platform, mm: &Arc<Mm>) -> (Vec<Arc<PciFunction>>, DmaCtx) {
    let sva = p.sva.as_ref().unwrap();
    let fs: Vec<_> = (0..2u32)
        .map(|i| {
            let f = p
                .sva_function(StreamId(0x60 + i), Capabilities::default())
                .unwrap();
            sva.bind(DeviceId(0x60 + i), mm).unwrap();
            f
        })
        .collect();
    let pasid = sva.pasid_of(mm.pid()).unwrap();
    (fs, DmaCtx::pasid(pasid))
}

/// munmap while two functions write through their ATCs (refilled by ATS and PRI as fast
/// as the page comes back): once munmap returned, the freed frame never changes.
#[test]
fn munmap_against_in_flight_dma_and_atc_fills() {
    let p = platform();
    let mm = p.system.spawn().unwrap();
    let (fs, ctx) = bound(&p, &mm);
    let at = Va(0x40_0000_0000);
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = fs
        .iter()
        .map(|f| {
            let (f, stop, writes) = (f.clone(), stop.clone(), writes.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if f.write(ctx, at.raw(), &[0xee; 256]).is_ok() {
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let checked = munmap_rounds_against_device_writes(&p, &mm, at, 256, &writes, |frame| {
        assert!(
            fs.iter().all(|f| !f.atc().maps_frame(frame, 4096)),
            "stale ATC entry"
        );
    });
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert!(checked > 100, "only {checked} freed frames checked");
}

/// fork while a function keeps writing a rising counter into the parent's page: the
/// child's copy is frozen at fork (the write-protect invalidated the ATC, the device's
/// next write broke COW in the parent), and the parent sees the device's latest value.
#[test]
fn fork_against_dma_into_a_page_that_becomes_copy_on_write() {
    let p = platform();
    let parent = p.system.spawn().unwrap();
    let (fs, ctx) = bound(&p, &parent);
    let at = populated_page(&parent);
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(AtomicU64::new(0));
    let writer = {
        let (f, stop, last) = (fs[0].clone(), stop.clone(), last.clone());
        std::thread::spawn(move || {
            let mut v = 0u64;
            while !stop.load(Ordering::Relaxed) {
                v += 1;
                if f.write(ctx, at.raw(), &v.to_le_bytes()).is_ok() {
                    last.store(v, Ordering::Release);
                }
            }
        })
    };
    let read = |mm: &Mm| {
        let mut b = [0u8; 8];
        mm.read(at, &mut b).unwrap();
        u64::from_le_bytes(b)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for _ in 0..40 {
        let child = p.system.fork(parent.pid()).unwrap();
        let frozen = read(&child);
        // Let the device complete a few more writes after the fork before looking.
        let seen = last.load(Ordering::Acquire);
        while last.load(Ordering::Acquire) < seen + 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "the device stopped writing"
            );
            std::thread::yield_now();
        }
        assert_eq!(
            read(&child),
            frozen,
            "a device write reached the child's copy"
        );
        p.system.exit(child.pid()).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(
        read(&parent),
        last.load(Ordering::Acquire),
        "the parent has the last write"
    );
}

/// Reclaim and migration of a page a function keeps writing and reading back: no write
/// is lost in an old frame, every read sees the value written last.
#[test]
fn reclaim_and_migration_against_device_access() {
    let p = platform();
    let mm = p.system.spawn().unwrap();
    let (fs, ctx) = bound(&p, &mm);
    let at = populated_page(&mm);
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(AtomicU64::new(0));
    let trips = Arc::new(AtomicU64::new(0));
    let device = {
        let (f, stop, last, trips) = (fs[1].clone(), stop.clone(), last.clone(), trips.clone());
        std::thread::spawn(move || {
            let mut v = 0u64;
            let mut roundtrips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                v += 1;
                if f.write(ctx, at.raw(), &v.to_le_bytes()).is_err() {
                    continue;
                }
                last.store(v, Ordering::Release);
                let mut b = [0u8; 8];
                if f.read(ctx, at.raw(), &mut b).is_ok() {
                    assert_eq!(u64::from_le_bytes(b), v, "the device read a stale frame");
                    roundtrips += 1;
                    trips.store(roundtrips, Ordering::Release);
                }
            }
            roundtrips
        })
    };
    // At least 200 moves, and on until the device made 100 round trips among them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut i = 0u64;
    while i < 200 || trips.load(Ordering::Acquire) < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "the device made no progress"
        );
        if i.is_multiple_of(2) {
            let _ = mm.migrate(at);
        } else {
            let _ = mm.reclaim(at, 4096);
        }
        i += 1;
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let roundtrips = device.join().unwrap();
    let mut b = [0u8; 8];
    mm.read(at, &mut b).unwrap();
    assert_eq!(
        u64::from_le_bytes(b),
        last.load(Ordering::Acquire),
        "a write was lost"
    );
    assert!(roundtrips > 0);
    assert!(
        mm.stats().migrations > 0 && mm.stats().swap_outs > 0,
        "{:?}",
        mm.stats()
    );
}
