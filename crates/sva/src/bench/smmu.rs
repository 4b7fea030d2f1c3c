//! `iotlb_hit_ns` and `walk_ns`: `Smmu::translate` for one stream, on an IOTLB hit and on
//! a miss that walks all four levels, next to one host `HashMap` lookup
//! (`host_hashmap_lookup_ns`). The set-up is the one of `crates/platform/benches/smmu.rs`.

use super::harness::{Harness, timed};
use super::{Outcome, Progress};
use anyhow::{Context, Result, ensure};
use std::collections::HashMap;
use std::hint::black_box;
use sva_addr::{Asid, Pasid, StreamId, Va};
use sva_platform::{Platform, PlatformConfig};
use sva_smmuv3::{SmmuConfig, Transaction, TranslateOutcome};
use sva_smmuv3_driver::{CdConfig, CdTableConfig, S1dss, StreamConfig};
use sva_vmsa::{AccessKind, Attributes, Granule, NoTlb, PageTable, TableConfig};

const SID: StreamId = StreamId(1);
const PASID: Pasid = Pasid(1);
const BASE: u64 = 0x10_0000_0000;
/// Pages mapped for the walk: many more than the IOTLB holds.
const WALK_PAGES: u64 = 4096;
/// IOTLB entries for the walk: every translation of the page sequence misses.
const WALK_IOTLB: usize = 16;

/// Runs the three measurements.
pub(super) fn measure(h: &Harness, progress: &Progress) -> Result<Outcome> {
    let mut out = Outcome::default();

    progress.say("host HashMap lookup");
    let map: HashMap<u64, u64> = (0..4096u64).map(|i| (i << 12, i)).collect();
    let mut k = 0u64;
    let host = h.measure(|iters| {
        Ok(timed(iters, || {
            k = (k + 4096) & 0xff_ffff;
            map.get(&k).copied()
        }))
    })?;
    out.timing("host_hashmap_lookup", host);
    out.figure("host_hashmap_lookup_ns", host.median_ns);

    progress.say("SMMU translation, IOTLB hit");
    let p = platform(4096, 64).context("setting up the SMMU for IOTLB hits")?;
    ensure!(
        matches!(translate(&p, 3), TranslateOutcome::Translated { .. }),
        "the set-up translation did not translate: {:?}",
        translate(&p, 3)
    );
    let misses = p.smmu.stats().iotlb_misses;
    let hit = h.measure(|iters| Ok(timed(iters, || translate(&p, black_box(3)))))?;
    ensure!(
        p.smmu.stats().iotlb_misses == misses,
        "the IOTLB-hit measurement missed the IOTLB"
    );
    out.timing("iotlb_hit", hit);
    out.figure("iotlb_hit_ns", hit.median_ns);
    drop(p);

    progress.say("SMMU translation, IOTLB miss with a 4-level walk");
    let p = platform(WALK_IOTLB, WALK_PAGES).context("setting up the SMMU for walks")?;
    // Every page translates, and visiting them in turn misses the IOTLB every time.
    let before = p.smmu.stats();
    for page in 0..WALK_PAGES {
        let r = translate(&p, page);
        ensure!(
            matches!(r, TranslateOutcome::Translated { .. }),
            "page {page} did not translate: {r:?}"
        );
    }
    let after = p.smmu.stats();
    ensure!(
        after.iotlb_misses - before.iotlb_misses == WALK_PAGES
            && after.walks - before.walks >= WALK_PAGES,
        "the walk set-up hit the IOTLB ({} misses, {} walks for {WALK_PAGES} pages)",
        after.iotlb_misses - before.iotlb_misses,
        after.walks - before.walks
    );
    let mut page = 0;
    let walk = h.measure(|iters| {
        Ok(timed(iters, || {
            page = (page + 1) % WALK_PAGES;
            translate(&p, page)
        }))
    })?;
    out.timing("iotlb_miss_walk", walk);
    out.figure("walk_ns", walk.median_ns);
    Ok(out)
}

/// A platform with one stream (`SID`, stage 1, linear CD table) and one context (PASID 1,
/// ASID 1) mapping `pages` 4 KiB pages at `BASE` under a 48-bit (4-level) table, with an
/// IOTLB of `iotlb_entries` and without BTM.
fn platform(iotlb_entries: usize, pages: u64) -> Result<Platform> {
    let p = Platform::new(PlatformConfig {
        smmu: SmmuConfig {
            iotlb_entries,
            btm: false,
            ..SmmuConfig::default()
        },
        ..PlatformConfig::default()
    })
    .context("creating the platform")?;
    let cfg = TableConfig::new(Granule::Size4K, 48, 48).context("table configuration")?;
    let frame = p.ram.alloc(4096).context("allocating a frame")?;
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
        .context("attaching the stream")?;
    let table = PageTable::new(&p.ram, cfg).context("creating the page table")?;
    let attrs = Attributes::AF | Attributes::AP_EL0 | Attributes::SH_INNER | Attributes::NG;
    for i in 0..pages {
        // Every page aliases one frame: the IOTLB cares about VAs, not about RAM.
        table
            .map(
                &p.ram,
                Va(BASE + i * 4096),
                frame,
                4096,
                attrs,
                true,
                &NoTlb,
            )
            .with_context(|| format!("mapping page {i}"))?;
    }
    let cd = CdConfig::new(table.root(), Asid(1));
    p.driver
        .set_cd(SID, PASID, &cd)
        .context("writing the context descriptor")?;
    Ok(p)
}

/// A read of page `page` (offset 8) by the stream, with PASID 1.
fn translate(p: &Platform, page: u64) -> TranslateOutcome {
    p.smmu.translate(&Transaction {
        sid: SID,
        ssid: Some(PASID),
        addr: BASE + page * 4096 + 8,
        access: AccessKind::Read,
        privileged: false,
        translated: false,
    })
}
