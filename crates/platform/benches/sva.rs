//! SVA core figures (docs/performance.md): bind+unbind, an I/O page fault end to end
//! (page request → fault handler → response → retried translation) next to a host minor
//! fault in the same run, and munmap of one page of an address space bound to two ATS
//! devices next to a host munmap.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use sva_addr::StreamId;
use sva_iommu::{DeviceId, SvaFeatures};
use sva_mm::{MapFlags, Prot};
use sva_platform::{Message, Platform, PlatformConfig, TestEndpoint};
use sva_smmuv3::AtsCompletion;
use sva_smmuv3_driver::{DeviceDesc, FaultPath};

const PAGE: usize = 4096;
const BATCH: usize = 128;
const RW: Prot = Prot::READ.union(Prot::WRITE);
const PRI: DeviceDesc = DeviceDesc {
    fault_path: FaultPath::Pri,
    ats: true,
};

fn platform() -> Platform {
    Platform::new(PlatformConfig {
        irq_thread: true,
        ..PlatformConfig::default()
    })
    .unwrap()
}

fn wait_response(ep: &TestEndpoint, group: u16) {
    loop {
        if ep
            .take_messages()
            .iter()
            .any(|m| matches!(m, Message::PriResponse { prg_index, .. } if *prg_index == group))
        {
            return;
        }
        std::thread::yield_now();
    }
}

/// Runs `iters` iterations in batches of at most `batch`: `run(n)` does `n` of them and
/// returns the time it measured; the sum is returned.
fn in_batches(iters: u64, batch: usize, mut run: impl FnMut(usize) -> Duration) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let n = left.min(batch);
        total += run(n);
        left -= n;
    }
    total
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("sva");
    let p = platform();
    let sva = p.sva.clone().unwrap();
    let a = p.device(StreamId(1), PRI);
    let b = p.device(StreamId(2), PRI);
    for d in [1, 2] {
        sva.enable_device(
            DeviceId(d),
            SvaFeatures {
                iopf: true,
                max_pasid: None,
            },
        )
        .unwrap();
    }
    let mm = p.system.spawn().unwrap();

    g.bench_function("bind+unbind", |bn| {
        bn.iter(|| {
            let bond = sva.bind(DeviceId(1), &mm).unwrap();
            sva.unbind(black_box(bond)).unwrap();
        });
    });

    g.bench_function("host-minor-fault", |bn| {
        bn.iter_custom(|iters| {
            in_batches(iters, BATCH, |n| {
                let mut map = memmap2::MmapOptions::new()
                    .len(n * PAGE)
                    .map_anon()
                    .unwrap();
                let t = Instant::now();
                for i in 0..n {
                    map[i * PAGE] = 1;
                }
                let took = t.elapsed();
                black_box(&map);
                took
            })
        });
    });

    let bond_a = sva.bind(DeviceId(1), &mm).unwrap();
    let bond_b = sva.bind(DeviceId(2), &mm).unwrap();
    let pasid = Some(bond_a.pasid);
    let mut group = 0u16;
    g.bench_function("iopf-pri-end-to-end", |bn| {
        bn.iter_custom(|iters| {
            in_batches(iters, BATCH, |n| {
                let va = mm
                    .mmap(
                        None,
                        (n * PAGE) as u64,
                        RW,
                        MapFlags::PRIVATE | MapFlags::NOHUGEPAGE,
                    )
                    .unwrap();
                let t = Instant::now();
                for i in 0..n {
                    let addr = va.raw() + (i * PAGE) as u64;
                    group = (group + 1) & 0x1ff;
                    a.page_request(pasid, addr, group, true, true);
                    wait_response(&a, group);
                    assert!(matches!(
                        a.ats(pasid, addr, true),
                        AtsCompletion::Success { .. }
                    ));
                }
                let took = t.elapsed();
                mm.munmap(va, (n * PAGE) as u64).unwrap();
                took
            })
        });
    });

    g.bench_function("host-munmap-one-page", |bn| {
        bn.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut map = memmap2::MmapOptions::new().len(PAGE).map_anon().unwrap();
                map[0] = 1;
                let t = Instant::now();
                drop(map);
                total += t.elapsed();
            }
            total
        });
    });

    g.bench_function("munmap-one-page-two-ats-devices", |bn| {
        bn.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let va = mm
                    .mmap(
                        None,
                        PAGE as u64,
                        RW,
                        MapFlags::PRIVATE | MapFlags::POPULATE,
                    )
                    .unwrap();
                // Both devices cache the translation in their ATCs (ATS).
                a.ats(pasid, va.raw(), true);
                b.ats(Some(bond_b.pasid), va.raw(), true);
                let t = Instant::now();
                mm.munmap(va, PAGE as u64).unwrap();
                total += t.elapsed();
            }
            total
        });
    });
    let invalidations = a
        .take_messages()
        .iter()
        .filter(|m| matches!(m, Message::AtcInvalidate { .. }))
        .count();
    assert!(invalidations > 0, "munmap sent no ATC invalidation");
    g.finish();
}

criterion_group! {
    name = sva;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(sva);
