//! CPU loads/stores through the translation tables next to a host memcpy of the same size,
//! and a demand fault next to a host minor fault (touching a fresh anonymous mmap), in the
//! same run: the figures behind docs/performance.md.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sva_mm::{MapFlags, MmConfig, Prot, System};
use sva_physmem::Ram;

const SIZES: [usize; 3] = [4 << 10, 64 << 10, 1 << 20];
const PAGE: usize = 4096;

fn system() -> System {
    System::new(Arc::new(Ram::new(1 << 30).unwrap()), MmConfig::default()).unwrap()
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

fn throughput(c: &mut Criterion) {
    let sys = system();
    let mm = sys.spawn().unwrap();
    let rw = Prot::READ | Prot::WRITE;
    let pages = mm
        .mmap(
            None,
            2 << 20,
            rw,
            MapFlags::PRIVATE | MapFlags::NOHUGEPAGE | MapFlags::POPULATE,
        )
        .unwrap();
    let blocks = mm
        .mmap(None, 2 << 20, rw, MapFlags::PRIVATE | MapFlags::POPULATE)
        .unwrap();
    for &size in &SIZES {
        let mut g = c.benchmark_group(format!("cpu/{}K", size >> 10));
        g.throughput(Throughput::Bytes(size as u64));
        // Offset the buffers so source and destination do not alias in the low 12 address
        // bits (4K aliasing would slow the host memcpy baseline down artificially).
        let src_buf = vec![0x5au8; size + 4096];
        let mut dst_buf = vec![0u8; size + 4096];
        let src = &src_buf[64..64 + size];
        let dst = &mut dst_buf[2112..2112 + size];
        g.bench_function(BenchmarkId::new("host-memcpy", size), |b| {
            b.iter(|| dst.copy_from_slice(black_box(src)));
        });
        for (name, va) in [("4k-pages", pages), ("2m-block", blocks)] {
            g.bench_function(BenchmarkId::new(format!("{name}-write"), size), |b| {
                b.iter(|| mm.write(va, black_box(src)).unwrap());
            });
            g.bench_function(BenchmarkId::new(format!("{name}-read"), size), |b| {
                b.iter(|| mm.read(va, black_box(&mut *dst)).unwrap());
            });
        }
        g.finish();
    }
}

/// One demand fault per iteration: a batch of fresh pages is mapped outside the timing and
/// one is touched inside it.
fn faults(c: &mut Criterion) {
    const BATCH: usize = 256;
    let mut g = c.benchmark_group("fault");
    g.bench_function("host-minor-fault", |b| {
        b.iter_custom(|iters| {
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
    let sys = system();
    let mm = sys.spawn().unwrap();
    let rw = Prot::READ | Prot::WRITE;
    g.bench_function("sva-demand-fault", |b| {
        b.iter_custom(|iters| {
            in_batches(iters, BATCH, |n| {
                let va = mm
                    .mmap(
                        None,
                        (n * PAGE) as u64,
                        rw,
                        MapFlags::PRIVATE | MapFlags::NOHUGEPAGE,
                    )
                    .unwrap();
                let t = Instant::now();
                for i in 0..n {
                    mm.write(va + (i * PAGE) as u64, &[1]).unwrap();
                }
                let took = t.elapsed();
                mm.munmap(va, (n * PAGE) as u64).unwrap();
                took
            })
        });
    });
    g.bench_function("sva-cow-break", |b| {
        b.iter_custom(|iters| {
            in_batches(iters, BATCH, |n| {
                let va = mm
                    .mmap(
                        None,
                        (n * PAGE) as u64,
                        rw,
                        MapFlags::PRIVATE | MapFlags::NOHUGEPAGE | MapFlags::POPULATE,
                    )
                    .unwrap();
                let child = sys.fork(mm.pid()).unwrap();
                let t = Instant::now();
                for i in 0..n {
                    child.write(va + (i * PAGE) as u64, &[1]).unwrap();
                }
                let took = t.elapsed();
                sys.exit(child.pid()).unwrap();
                mm.munmap(va, (n * PAGE) as u64).unwrap();
                took
            })
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = throughput, faults
}
criterion_main!(benches);
