//! `unmap_invalidate_us` and `host_munmap_us`: munmap of one page that two ATS devices
//! hold in their ATCs, next to a host munmap of one page.
//!
//! Device side: a process bound to two PCIe functions (ATS + PRI, one PASID); each
//! iteration maps one populated page, lets both functions read it by DMA (so both ATCs
//! hold its translation, checked), and times `Mm::munmap` of it: the MMU notifier → the
//! driver sends ATC_INV to both functions under one CMD_SYNC and waits for both
//! completions; the IOTLB is invalidated by the CPU's broadcast TLBI (BTM); then the
//! frame is freed.
//!
//! Host side, the same shape: a one-page anonymous mapping (`memmap2`), touched, then
//! unmapped; the timed part is the `munmap` (dropping the mapping): the VMA removed, the
//! page-table entry cleared, the TLB flushed (with an IPI when another of this
//! multi-threaded process's CPUs may cache it) and the page freed.

use super::harness::Harness;
use super::{Outcome, Progress};
use anyhow::{Context, Result, ensure};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sva_addr::{Pasid, StreamId};
use sva_iommu::DeviceId;
use sva_mm::{AccessKind, MapFlags, Mm, Prot};
use sva_pcie::{Capabilities, Dma, DmaCtx, PciFunction};
use sva_platform::{Platform, PlatformConfig};

const PAGE: u64 = 4096;
const RW: Prot = Prot::READ.union(Prot::WRITE);
const SIDS: [StreamId; 2] = [StreamId(1), StreamId(2)];

/// Runs the host munmap and the munmap with two ATS devices.
pub(super) fn measure(h: &Harness, progress: &Progress) -> Result<Outcome> {
    let mut out = Outcome::default();

    progress.say("host munmap of one page");
    let host = h.measure(host_munmaps)?;
    out.timing("host_munmap", host);
    out.figure("host_munmap_us", host.median_ns / 1e3);

    progress.say("munmap of one page cached in two ATCs");
    let rig = UnmapRig::new()?;
    let sva = h.measure(|iters| rig.unmaps(iters))?;
    out.timing("unmap_invalidate", sva);
    out.figure("unmap_invalidate_us", sva.median_ns / 1e3);
    Ok(out)
}

/// `iters` host munmaps of a touched one-page anonymous mapping; only the munmap is
/// timed.
fn host_munmaps(iters: u64) -> Result<Duration> {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut map = memmap2::MmapOptions::new()
            .len(PAGE as usize)
            .map_anon()
            .context("mapping anonymous host memory")?;
        map[0] = 1;
        let t = Instant::now();
        drop(map);
        total += t.elapsed();
    }
    Ok(total)
}

/// A process bound to two ATS functions.
struct UnmapRig {
    functions: [Arc<PciFunction>; 2],
    pasid: Pasid,
    mm: Arc<Mm>,
    _platform: Platform,
}

impl UnmapRig {
    /// The platform with its interrupt thread, two functions with the default
    /// capabilities (ATS, PRI), a process bound to both.
    fn new() -> Result<Self> {
        let p = Platform::new(PlatformConfig {
            irq_thread: true,
            ..PlatformConfig::default()
        })
        .context("creating the platform")?;
        let sva = p.sva.clone().context("the platform has no SVA core")?;
        let mm = p.system.spawn().context("spawning a process")?;
        let enable = |sid: StreamId| -> Result<(Arc<PciFunction>, Pasid)> {
            let f = p
                .sva_function(sid, Capabilities::default())
                .with_context(|| format!("enabling SVA for function {:#x}", sid.raw()))?;
            let bond = sva
                .bind(DeviceId(sid.raw()), &mm)
                .with_context(|| format!("binding the process to function {:#x}", sid.raw()))?;
            Ok((f, bond.pasid))
        };
        let (a, pasid_a) = enable(SIDS[0])?;
        let (b, pasid_b) = enable(SIDS[1])?;
        ensure!(
            pasid_a == pasid_b,
            "one address space got two PASIDs: {pasid_a:?}, {pasid_b:?}"
        );
        Ok(Self {
            functions: [a, b],
            pasid: pasid_a,
            mm,
            _platform: p,
        })
    }

    /// `iters` times: map a populated page, read it by DMA from both functions (their
    /// ATCs then hold it), time its munmap, check both ATCs dropped it.
    fn unmaps(&self, iters: u64) -> Result<Duration> {
        let ctx = DmaCtx::pasid(self.pasid);
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let va = self
                .mm
                .mmap(None, PAGE, RW, MapFlags::PRIVATE | MapFlags::POPULATE)
                .context("mapping a page")?;
            let frame = self
                .mm
                .translate(va, AccessKind::Read)
                .context("translating the page")?
                .context("the populated page has no frame")?;
            for f in &self.functions {
                let mut buf = [0u8; 8];
                f.read(ctx, va.raw(), &mut buf)
                    .context("DMA read of the page")?;
                ensure!(
                    f.atc().maps_frame(frame, PAGE),
                    "the ATC of function {:#x} does not hold the page",
                    f.sid().raw()
                );
            }
            let t = Instant::now();
            self.mm.munmap(va, PAGE).context("munmap")?;
            total += t.elapsed();
            for f in &self.functions {
                ensure!(
                    !f.atc().maps_frame(frame, PAGE),
                    "the ATC of function {:#x} still holds the page after munmap",
                    f.sid().raw()
                );
            }
        }
        Ok(total)
    }
}
