//! SMMUv3 model figures (docs/performance.md): translation on an IOTLB hit and on a miss
//! with a full 4-level walk (next to a host hash-map lookup), TLBI by ASID with 100k
//! unrelated IOTLB entries present (next to the same TLBI with none), and commands per SYNC.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use sva_addr::{Asid, Pasid, StreamId, Va};
use sva_platform::{Platform, PlatformConfig};
use sva_smmuv3::{SmmuConfig, Transaction, TranslateOutcome};
use sva_smmuv3_driver::{CdConfig, CdTableConfig, S1dss, StreamConfig};
use sva_smmuv3_spec::command::Command;
use sva_vmsa::{AccessKind, Attributes, Granule, NoTlb, PageTable, TableConfig};

const SID: StreamId = StreamId(1);
const BASE: u64 = 0x10_0000_0000;

/// A platform with one stream and two contexts: PASID 1 (ASID 1) maps `small` pages,
/// PASID 2 (ASID 2) maps `big` pages, all 4 KiB pages under a 48-bit (4-level) table.
fn setup(iotlb_entries: usize, small: u64, big: u64) -> Platform {
    let p = Platform::new(PlatformConfig {
        smmu: SmmuConfig {
            iotlb_entries,
            btm: false,
            ..SmmuConfig::default()
        },
        ..PlatformConfig::default()
    })
    .unwrap();
    let cfg = TableConfig::new(Granule::Size4K, 48, 48).unwrap();
    let frame = p.ram.alloc(4096).unwrap();
    p.driver
        .attach(
            SID,
            StreamConfig::S1 {
                cd_table: CdTableConfig::linear(4),
                s1dss: S1dss::Terminate,
                stall_disable: true,
                ats: false,
            },
        )
        .unwrap();
    for (pasid, pages) in [(1u32, small), (2, big)] {
        let t = PageTable::new(&p.ram, cfg).unwrap();
        let attrs = Attributes::AF | Attributes::AP_EL0 | Attributes::SH_INNER | Attributes::NG;
        for i in 0..pages {
            // Every page aliases one frame: the IOTLB cares about VAs, not about RAM.
            t.map(
                &p.ram,
                Va(BASE + i * 4096),
                frame,
                4096,
                attrs,
                true,
                &NoTlb,
            )
            .unwrap();
        }
        let cd = CdConfig::new(t.root(), Asid(pasid as u16));
        p.driver.set_cd(SID, Pasid(pasid), &cd).unwrap();
    }
    p
}

fn translate(p: &Platform, pasid: u32, page: u64) -> TranslateOutcome {
    p.smmu.translate(&Transaction {
        sid: SID,
        ssid: Some(Pasid(pasid)),
        addr: BASE + page * 4096 + 8,
        access: AccessKind::Read,
        privileged: false,
        translated: false,
    })
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("smmu");
    let map: std::collections::HashMap<u64, u64> = (0..4096u64).map(|i| (i << 12, i)).collect();
    let mut k = 0u64;
    g.bench_function("host-hashmap-lookup", |b| {
        b.iter(|| {
            k = (k + 4096) & 0xff_ffff;
            black_box(map.get(&k))
        });
    });

    let p = setup(4096, 64, 0);
    assert!(matches!(
        translate(&p, 1, 3),
        TranslateOutcome::Translated { .. }
    ));
    g.bench_function("translate-iotlb-hit", |b| {
        b.iter(|| black_box(translate(&p, 1, black_box(3))));
    });
    drop(p);

    // 16 IOTLB entries, 4096 pages visited in turn: every translation misses and walks
    // all four levels (the STE and CD stay in the configuration cache).
    let p = setup(16, 4096, 0);
    let mut page = 0;
    g.bench_function("translate-miss-4-level-walk", |b| {
        b.iter(|| {
            page = (page + 1) % 4096;
            black_box(translate(&p, 1, page))
        });
    });
    drop(p);

    for (name, others) in [
        ("tlbi-asid-no-other-entries", 0u64),
        ("tlbi-asid-100k-other-entries", 100_000),
    ] {
        let p = setup(1 << 17, 16, others);
        for i in 0..others {
            translate(&p, 2, i);
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                for i in 0..16 {
                    translate(&p, 1, i);
                }
                p.driver.tlbi_asid(Asid(1)).unwrap();
            });
        });
        // The unrelated entries were never touched by the invalidations.
        let before = p.smmu.stats();
        for i in (0..others).step_by(997) {
            translate(&p, 2, i);
        }
        let after = p.smmu.stats();
        assert_eq!(
            after.iotlb_misses - before.iotlb_misses,
            0,
            "unrelated IOTLB entries were dropped"
        );
    }

    let p = setup(4096, 64, 0);
    for n in [1u64, 16, 64] {
        g.bench_function(format!("tlbi-va-x{n}-one-sync"), |b| {
            b.iter(|| {
                let cmds: Vec<Command> = (0..n)
                    .map(|i| Command::TlbiNhVa {
                        vmid: sva_addr::Vmid(0),
                        asid: Asid(1),
                        addr: Va(BASE + i * 4096),
                        leaf: true,
                        range: sva_smmuv3_spec::command::TlbiRange::NONE,
                    })
                    .collect();
                p.driver.submit_batch(&cmds).unwrap();
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = smmu;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(2));
    targets = benches
}
criterion_main!(smmu);
