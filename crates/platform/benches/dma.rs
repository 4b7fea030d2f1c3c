//! The DMA engine of a PCIe function (docs/devices.md): copies in a process's address
//! space through ATS and the ATC with warm translations, next to a host memcpy of the
//! same size in the same run; with a device TLB large enough for the working set and with
//! the default 512-entry one (a miss costs an ATS round trip that hits the IOTLB).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use sva_addr::StreamId;
use sva_iommu::{DeviceId, SvaFeatures};
use sva_mm::{AccessKind, MapFlags, Prot};
use sva_pcie::{Capabilities, Dma, DmaConfig, DmaCtx};
use sva_platform::{Platform, PlatformConfig};

const RW: Prot = Prot::READ.union(Prot::WRITE);

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("dma_copy");
    g.sample_size(10);
    let p = Platform::new(PlatformConfig {
        ram_size: 1 << 30,
        irq_thread: true,
        ..PlatformConfig::default()
    })
    .unwrap();
    let big = p.pci_function(
        StreamId(1),
        Capabilities {
            atc_entries: 65536,
            ..Capabilities::default()
        },
        DmaConfig::default(),
    );
    let small = p.pci_function(StreamId(2), Capabilities::default(), DmaConfig::default());
    let features = SvaFeatures {
        iopf: true,
        max_pasid: None,
    };
    p.enable_sva(&big, features).unwrap();
    p.enable_sva(&small, features).unwrap();
    let mm = p.system.spawn().unwrap();
    let sva = p.sva.as_ref().unwrap();
    let pasid = sva.bind(DeviceId(1), &mm).unwrap().pasid;
    sva.bind(DeviceId(2), &mm).unwrap();
    let ctx = DmaCtx::pasid(pasid);
    for size in [64u64 << 10, 1 << 20, 64 << 20] {
        // NOHUGEPAGE: 4 KiB pages, the case the goal is stated for.
        let flags = MapFlags::PRIVATE | MapFlags::NOHUGEPAGE;
        let src = mm.mmap(None, size, RW, flags).unwrap();
        let dst = mm.mmap(None, size, RW, flags).unwrap();
        mm.touch(src, size, AccessKind::Write).unwrap();
        mm.touch(dst, size, AccessKind::Write).unwrap();
        g.throughput(Throughput::Bytes(size));
        let host_src = vec![1u8; size as usize];
        let mut host_dst = vec![0u8; size as usize];
        g.bench_with_input(BenchmarkId::new("host_memcpy", size), &size, |b, _| {
            b.iter(|| host_dst.copy_from_slice(black_box(&host_src)));
        });
        for (name, f) in [("ats_atc_64k", &big), ("ats_atc_512", &small)] {
            f.copy(ctx, src.raw(), dst.raw(), size).unwrap();
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, &size| {
                b.iter(|| f.copy(ctx, src.raw(), dst.raw(), size).unwrap());
            });
        }
        mm.munmap(src, size).unwrap();
        mm.munmap(dst, size).unwrap();
    }
    g.finish();
}

criterion_group!(dma, benches);
criterion_main!(dma);
