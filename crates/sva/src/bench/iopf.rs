//! `iopf_us`, `iopf_vs_host_fault`, `host_minor_fault_us`: an I/O page fault end to end
//! next to a host minor fault.
//!
//! The device side is a PCIe function (ATS + PRI, enabled for SVA) writing 8 bytes by DMA
//! to a page of its bound process that nobody touched: ATC miss → ATS Translation Request
//! (not present) → PRI Page Request → PRI queue → interrupt thread → driver → the core's
//! fault worker → the process's fault handler → CMD_PRI_RESP → the function retries the
//! translation and writes. One page per iteration; the mappings are made and removed
//! outside the timed part, in batches.
//!
//! The host side is the first store to each 4 KiB page of a fresh anonymous mapping
//! (`memmap2`, at most 512 KiB per mapping so that transparent huge pages cannot serve
//! several pages with one fault).

use super::harness::Harness;
use super::{Outcome, Progress};
use anyhow::{Context, Result, ensure};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sva_addr::StreamId;
use sva_iommu::{Bond, DeviceId};
use sva_mm::{MapFlags, Mm, Prot};
use sva_pcie::{Capabilities, Dma, DmaCtx, PciFunction};
use sva_platform::{Platform, PlatformConfig};

const PAGE: u64 = 4096;
/// Pages per mapping, host and device.
const BATCH_PAGES: u64 = 128;
const SID: StreamId = StreamId(1);
const RW: Prot = Prot::READ.union(Prot::WRITE);
/// 4 KiB pages: one fault per page.
const FLAGS: MapFlags = MapFlags::PRIVATE.union(MapFlags::NOHUGEPAGE);

/// Runs the host minor fault and the I/O page fault.
pub(super) fn measure(h: &Harness, progress: &Progress) -> Result<Outcome> {
    let mut out = Outcome::default();

    progress.say("host minor fault");
    let host = h.measure(host_minor_faults)?;
    out.timing("host_minor_fault", host);
    out.figure("host_minor_fault_us", host.median_ns / 1e3);

    progress.say("I/O page fault through PRI");
    let rig = IopfRig::new()?;
    let iopf = h.measure(|iters| rig.faults(iters))?;
    out.timing("iopf", iopf);
    out.figure("iopf_us", iopf.median_ns / 1e3);
    out.figure("iopf_vs_host_fault", iopf.median_ns / host.median_ns);
    Ok(out)
}

/// First stores to `iters` pages of fresh anonymous host mappings; only the stores are
/// timed.
fn host_minor_faults(iters: u64) -> Result<Duration> {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH_PAGES);
        let mut map = memmap2::MmapOptions::new()
            .len((n * PAGE) as usize)
            .map_anon()
            .context("mapping anonymous host memory")?;
        let t = Instant::now();
        for page in map.chunks_mut(PAGE as usize) {
            page[0] = 1;
        }
        total += t.elapsed();
        black_box(&map);
        left -= n;
    }
    Ok(total)
}

/// A function enabled for SVA (ATS, PRI) and a process bound to it.
struct IopfRig {
    function: Arc<PciFunction>,
    mm: Arc<Mm>,
    bond: Bond,
    _platform: Platform,
}

impl IopfRig {
    /// The platform with its interrupt thread, the function at `SID` with the default
    /// capabilities, and a fresh process bound to it.
    fn new() -> Result<Self> {
        let p = Platform::new(PlatformConfig {
            irq_thread: true,
            ..PlatformConfig::default()
        })
        .context("creating the platform")?;
        let function = p
            .sva_function(SID, Capabilities::default())
            .context("enabling SVA for the function")?;
        let mm = p.system.spawn().context("spawning a process")?;
        let bond = p
            .sva
            .as_ref()
            .context("the platform has no SVA core")?
            .bind(DeviceId(SID.raw()), &mm)
            .context("binding the process to the function")?;
        Ok(Self {
            function,
            mm,
            bond,
            _platform: p,
        })
    }

    /// `iters` DMA writes, each to a page nobody touched; only the writes are timed.
    /// Checks that every write went through a page request.
    fn faults(&self, iters: u64) -> Result<Duration> {
        let ctx = DmaCtx::pasid(self.bond.pasid);
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(BATCH_PAGES);
            let va = self
                .mm
                .mmap(None, n * PAGE, RW, FLAGS)
                .context("mapping fresh pages")?;
            let before = self.function.stats().page_requests;
            let t = Instant::now();
            for i in 0..n {
                self.function
                    .write(ctx, va.raw() + i * PAGE, &[0xa5; 8])
                    .context("DMA write to a fresh page")?;
            }
            total += t.elapsed();
            let requests = self.function.stats().page_requests - before;
            ensure!(
                requests == n,
                "{n} DMA writes to fresh pages made {requests} page requests"
            );
            self.mm
                .munmap(va, n * PAGE)
                .context("unmapping the faulted pages")?;
            left -= n;
        }
        Ok(total)
    }
}
