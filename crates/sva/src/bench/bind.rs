//! `bind_unbind_per_s`: `Sva::bind` + `Sva::unbind` of one process to one PCIe function
//! (ATS + PRI, enabled for SVA): PASID allocation, notifier registration, CD write +
//! CFGI_CD + SYNC; then the drain of its page requests, CD clear, TLBI + ATC_INV + SYNC.

use super::harness::{Harness, timed_try};
use super::{Outcome, Progress};
use anyhow::{Context, Result};
use sva_addr::StreamId;
use sva_iommu::DeviceId;
use sva_pcie::Capabilities;
use sva_platform::{Platform, PlatformConfig};

const SID: StreamId = StreamId(1);

/// Measures bind + unbind pairs.
pub(super) fn measure(h: &Harness, progress: &Progress) -> Result<Outcome> {
    let mut out = Outcome::default();
    progress.say("bind + unbind");
    let p = Platform::new(PlatformConfig {
        irq_thread: true,
        ..PlatformConfig::default()
    })
    .context("creating the platform")?;
    let sva = p.sva.clone().context("the platform has no SVA core")?;
    let _function = p
        .sva_function(SID, Capabilities::default())
        .context("enabling SVA for the function")?;
    let mm = p.system.spawn().context("spawning a process")?;
    let device = DeviceId(SID.raw());
    let pair = h.measure(|iters| {
        timed_try(iters, || {
            let bond = sva.bind(device, &mm).context("bind")?;
            sva.unbind(bond).context("unbind")
        })
    })?;
    out.timing("bind_unbind", pair);
    out.figure("bind_unbind_per_s", 1e9 / pair.median_ns);
    Ok(out)
}
