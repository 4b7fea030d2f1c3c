//! Data-mover copies through uacce, the PCIe function's ATS/ATC and the SMMU model
//! (docs/devices.md), next to a host memcpy of the same size in the same run. The goal
//! for warm translations, 4 KiB pages and 64 MiB is at least half of memcpy. Also: the
//! same copy into a destination nobody touched (faulted in through PRI by the device, or
//! by the library's recovery from partial completions).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sva_addr::StreamId;
use sva_dsa::{Device, DeviceConfig, DsaDriver, DsaSession, SessionConfig, Status};
use sva_iommu::DeviceId;
use sva_mm::{AccessKind, MapFlags, Prot};
use sva_pcie::Capabilities;
use sva_platform::{Platform, PlatformConfig};
use sva_uacce::Uacce;

const RW: Prot = Prot::READ.union(Prot::WRITE);
/// 4 KiB pages: the case the goal is stated for.
const FLAGS: MapFlags = MapFlags::PRIVATE.union(MapFlags::NOHUGEPAGE);

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("dsa_copy");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let p = Platform::new(PlatformConfig {
        ram_size: 2 << 30,
        irq_thread: true,
        ..PlatformConfig::default()
    })
    .unwrap();
    // An ATC that holds a 64 MiB working set: translations stay warm.
    let caps = Capabilities {
        atc_entries: 1 << 16,
        ..Capabilities::default()
    };
    let f = p.sva_function(StreamId(1), caps).unwrap();
    let device = Device::new(
        f,
        DeviceConfig {
            max_xfer_size: 1 << 30,
            ..DeviceConfig::default()
        },
    )
    .unwrap();
    let dev = Uacce::register(
        Arc::new(DsaDriver::new(Arc::new(device)).unwrap()),
        p.sva.as_ref().unwrap(),
        DeviceId(1),
    );
    let mm = p.system.spawn().unwrap();
    let config = |bof| SessionConfig {
        block_on_fault: bof,
        poll_timeout: Duration::from_secs(60),
        max_resubmits: 1 << 20,
        ..SessionConfig::default()
    };
    let mut s = DsaSession::open(&dev, &mm, config(true)).unwrap();
    let mut nobof = DsaSession::open(&dev, &mm, config(false)).unwrap();
    for size in [64u64 << 10, 1 << 20, 64 << 20] {
        g.throughput(Throughput::Bytes(size));
        let host_src = vec![1u8; size as usize];
        let mut host_dst = vec![0u8; size as usize];
        g.bench_with_input(BenchmarkId::new("host_memcpy", size), &size, |b, _| {
            b.iter(|| host_dst.copy_from_slice(black_box(&host_src)));
        });
        let src = mm.mmap(None, size, RW, FLAGS).unwrap();
        let dst = mm.mmap(None, size, RW, FLAGS).unwrap();
        mm.touch(src, size, AccessKind::Write).unwrap();
        mm.touch(dst, size, AccessKind::Write).unwrap();
        s.copy(dst, src, size as u32).unwrap();
        g.bench_with_input(BenchmarkId::new("dsa_warm", size), &size, |b, &n| {
            b.iter(|| {
                assert_eq!(
                    s.copy(dst, src, n as u32).unwrap().status(),
                    Some(Status::Success)
                );
            });
        });
        if size <= 1 << 20 {
            for (name, ses) in [
                ("dsa_fault_pri", &mut s),
                ("dsa_fault_recovery", &mut nobof),
            ] {
                g.bench_with_input(BenchmarkId::new(name, size), &size, |b, &n| {
                    b.iter_custom(|iters| {
                        let mut t = Duration::ZERO;
                        for _ in 0..iters {
                            let fresh = mm.mmap(None, n, RW, FLAGS).unwrap();
                            let t0 = Instant::now();
                            ses.copy(fresh, src, n as u32).unwrap();
                            t += t0.elapsed();
                            mm.munmap(fresh, n).unwrap();
                        }
                        t
                    });
                });
            }
        }
        mm.munmap(src, size).unwrap();
        mm.munmap(dst, size).unwrap();
    }
    g.finish();
}

criterion_group!(dsa, benches);
criterion_main!(dsa);
