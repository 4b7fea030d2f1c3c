//! Copy throughput of the two RAM backings next to a host memcpy of the same size, in the
//! same run: the figures behind docs/memory.md.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use sva_physmem::{GuestRam, Pa, PhysMemory, SparseRam};
use vm_memory::{GuestAddress, GuestMemoryMmap};

const SIZES: [usize; 3] = [4 << 10, 64 << 10, 1 << 20];
const RAM: u64 = 64 << 20;

fn backings() -> Vec<(&'static str, Box<dyn PhysMemory>)> {
    let guest = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    vec![
        ("sparse", Box::new(SparseRam::new(RAM).unwrap())),
        ("vm-memory", Box::new(GuestRam::new(guest, RAM))),
    ]
}

fn copy(c: &mut Criterion) {
    let mems = backings();
    for &size in &SIZES {
        let mut g = c.benchmark_group(format!("copy/{}K", size >> 10));
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
        for (name, mem) in &mems {
            mem.write(Pa(0x10_0000), src).unwrap();
            g.bench_function(BenchmarkId::new(format!("{name}-write"), size), |b| {
                b.iter(|| mem.write(Pa(0x10_0000), black_box(src)).unwrap());
            });
            g.bench_function(BenchmarkId::new(format!("{name}-read"), size), |b| {
                b.iter(|| mem.read(Pa(0x10_0000), black_box(&mut *dst)).unwrap());
            });
        }
        g.finish();
    }
    let mut g = c.benchmark_group("word");
    for (name, mem) in &mems {
        g.bench_function(format!("{name}-cas"), |b| {
            let mut v = 0u64;
            b.iter(|| {
                let _ = mem.compare_exchange_u64(Pa(0x2000), v, v + 1).unwrap();
                v += 1;
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = copy
}
criterion_main!(benches);
