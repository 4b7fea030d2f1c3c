//! Compression through the ZIP model (docs/devices.md), UADK's comparisons: throughput
//! next to flate2 compressing the same blocks on the host CPU in the same run; 8 KiB
//! blocks with one request in flight vs 64; destinations touched before submission vs
//! demand-faulted through PRI.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sva_addr::{StreamId, Va};
use sva_iommu::{DeviceId, Domain};
use sva_mm::{AccessKind, MapFlags, Mm, Prot};
use sva_pcie::Capabilities;
use sva_platform::{Platform, PlatformConfig};
use sva_uacce::Uacce;
use sva_zip::driver::{ZipDriver, ZipDriverConfig};
use sva_zip::user::{CompSession, Op};
use sva_zip::{Alg, Qm, QmConfig};

const RW: Prot = Prot::READ.union(Prot::WRITE);
const BLOCK: u32 = 8 << 10;
const BLOCKS: u64 = 64;

/// Compressible input: this crate's sources, repeated.
fn input() -> Vec<u8> {
    let text = [
        include_str!("../src/qm.rs"),
        include_str!("../src/engine.rs"),
        include_str!("../src/codec.rs"),
    ]
    .concat();
    text.as_bytes()
        .iter()
        .copied()
        .cycle()
        .take((BLOCK as u64 * BLOCKS) as usize)
        .collect()
}

/// Compresses every block of `src` into `dst` (one block slot each) with `depth` requests
/// in flight.
fn run(s: &mut CompSession, src: Va, dst: Va, depth: usize) {
    let mut next = 0u64;
    let mut done = 0u64;
    while done < BLOCKS {
        while next < BLOCKS && s.in_flight() < depth {
            let at = next * u64::from(BLOCK);
            s.submit(Op::Compress, src + at, BLOCK, dst + 2 * at, 2 * BLOCK)
                .unwrap();
            next += 1;
        }
        if let Some(c) = s.poll_timeout(Duration::from_secs(10)).unwrap() {
            assert!(c.result.status.is_ok(), "{:?}", c.result);
            done += 1;
        }
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("zip");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let p = Platform::new(PlatformConfig {
        irq_thread: true,
        iopf_workers: 2,
        ..PlatformConfig::default()
    })
    .unwrap();
    let f = p
        .sva_function(StreamId(1), Capabilities::default())
        .unwrap();
    let sva = p.sva.clone().unwrap();
    let dom = sva.dma_domain().unwrap();
    sva.attach_domain(DeviceId(1), Domain::Dma(dom.clone()))
        .unwrap();
    let qm = Arc::new(Qm::new(
        f,
        QmConfig {
            qp_num: 4,
            engines: 2,
            stop_timeout: Duration::from_secs(10),
        },
    ));
    let driver = ZipDriver::new(qm, p.ram.clone(), dom, ZipDriverConfig::default()).unwrap();
    let dev = Uacce::register(Arc::new(driver), &sva, DeviceId(1));
    let mm: Arc<Mm> = p.system.spawn().unwrap();
    let mut s = CompSession::open(&dev, &mm, Alg::Deflate).unwrap();
    let data = input();
    let total = data.len() as u64;
    let src = mm.mmap(None, total, RW, MapFlags::PRIVATE).unwrap();
    mm.write(src, &data).unwrap();
    g.throughput(Throughput::Bytes(total));

    g.bench_function("host_flate2", |b| {
        b.iter(|| {
            for block in data.chunks(BLOCK as usize) {
                let mut e = flate2::write::DeflateEncoder::new(
                    Vec::with_capacity(2 * BLOCK as usize),
                    flate2::Compression::default(),
                );
                e.write_all(block).unwrap();
                std::hint::black_box(e.finish().unwrap());
            }
        });
    });
    let dst_len = 2 * total;
    let warm = mm.mmap(None, dst_len, RW, MapFlags::PRIVATE).unwrap();
    mm.touch(warm, dst_len, AccessKind::Write).unwrap();
    for depth in [1usize, 64] {
        g.bench_with_input(BenchmarkId::new("touched", depth), &depth, |b, &d| {
            b.iter(|| run(&mut s, src, warm, d));
        });
        // Fresh destinations each time: every page faults in through PRI.
        g.bench_with_input(
            BenchmarkId::new("demand_faulted", depth),
            &depth,
            |b, &d| {
                b.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        let dst = mm.mmap(None, dst_len, RW, MapFlags::PRIVATE).unwrap();
                        let t0 = Instant::now();
                        run(&mut s, src, dst, d);
                        t += t0.elapsed();
                        mm.munmap(dst, dst_len).unwrap();
                    }
                    t
                });
            },
        );
    }
    g.finish();
}

criterion_group!(zip, benches);
criterion_main!(zip);
