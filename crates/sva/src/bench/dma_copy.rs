//! `dma_copy_vs_memcpy`, `dma_copy_gib_s`, `memcpy_gib_s`: the data mover's MEMMOVE
//! through uacce (ENQCMD on a shared WQ, the function's ATS/ATC, the SMMU model) with
//! warm translations, next to a host memcpy of the same size. The set-up is the one of
//! `crates/dsa/benches/dsa.rs`: an ATC that holds the whole working set, `max_xfer_size`
//! above the copy, 4 KiB pages, source and destination touched by the CPU first.

use super::harness::{Harness, timed, timed_try};
use super::{Outcome, Progress};
use anyhow::{Context, Result, bail};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use sva_addr::{StreamId, Va};
use sva_dsa::{Device, DeviceConfig, DsaDriver, DsaSession, SessionConfig, Status};
use sva_iommu::DeviceId;
use sva_mm::{AccessKind, MapFlags, Mm, Prot};
use sva_pcie::Capabilities;
use sva_platform::{Platform, PlatformConfig};
use sva_uacce::Uacce;

const SID: StreamId = StreamId(1);
const RW: Prot = Prot::READ.union(Prot::WRITE);
/// 4 KiB pages: the case the goal is stated for.
const FLAGS: MapFlags = MapFlags::PRIVATE.union(MapFlags::NOHUGEPAGE);

/// Runs the host memcpy and the data-mover copy of `size` bytes.
pub(super) fn measure(h: &Harness, progress: &Progress, size: u64) -> Result<Outcome> {
    let mut out = Outcome::default();
    let len = usize::try_from(size).context("copy size")?;
    let gib_s = |ns: f64| size as f64 / (1u64 << 30) as f64 / (ns * 1e-9);

    progress.say(&format!("host memcpy, {} MiB", size >> 20));
    let host = {
        let src = vec![1u8; len];
        let mut dst = vec![2u8; len];
        h.measure(|iters| {
            Ok(timed(iters, || {
                dst.copy_from_slice(black_box(&src));
                black_box(dst.as_ptr())
            }))
        })?
    };
    out.timing("host_memcpy", host);
    out.figure("memcpy_gib_s", gib_s(host.median_ns));

    progress.say(&format!("data-mover copy, {} MiB", size >> 20));
    let mut rig = DsaRig::new(size)?;
    let dsa = h.measure(|iters| timed_try(iters, || rig.copy()))?;
    out.timing("dsa_copy", dsa);
    out.figure("dma_copy_gib_s", gib_s(dsa.median_ns));
    out.figure("dma_copy_vs_memcpy", host.median_ns / dsa.median_ns);
    Ok(out)
}

/// A data mover behind uacce, a process with a session on it, and two touched buffers of
/// the copy's size. Fields drop in order: the session before the platform.
struct DsaRig {
    session: DsaSession,
    src: Va,
    dst: Va,
    len: u32,
    _mm: Arc<Mm>,
    _platform: Platform,
}

impl DsaRig {
    /// Builds the device (ATC for the working set, transfers up to 1 GiB), registers it
    /// with uacce, opens a block-on-fault session and makes the copy once (translations
    /// warm, result checked).
    fn new(size: u64) -> Result<Self> {
        let len = u32::try_from(size).context("the copy must fit a descriptor")?;
        let p = Platform::new(PlatformConfig {
            ram_size: (4 * size).max(2 << 30),
            irq_thread: true,
            ..PlatformConfig::default()
        })
        .context("creating the platform")?;
        let sva = p.sva.clone().context("the platform has no SVA core")?;
        // Source and destination pages, with room to spare.
        let caps = Capabilities {
            atc_entries: (2 * size / 4096 + 1024) as usize,
            ..Capabilities::default()
        };
        let f = p
            .sva_function(SID, caps)
            .context("enabling SVA for the data mover's function")?;
        let device = Device::new(
            f,
            DeviceConfig {
                max_xfer_size: 1 << 30,
                ..DeviceConfig::default()
            },
        )
        .context("creating the data mover")?;
        let driver = DsaDriver::new(Arc::new(device)).context("the data mover's driver")?;
        let dev = Uacce::register(Arc::new(driver), &sva, DeviceId(SID.raw()));
        let mm = p.system.spawn().context("spawning a process")?;
        let session = DsaSession::open(
            &dev,
            &mm,
            SessionConfig {
                block_on_fault: true,
                poll_timeout: Duration::from_secs(60),
                ..SessionConfig::default()
            },
        )
        .context("opening a data-mover session")?;
        let src = mm
            .mmap(None, size, RW, FLAGS)
            .context("mapping the source")?;
        let dst = mm
            .mmap(None, size, RW, FLAGS)
            .context("mapping the destination")?;
        mm.touch(src, size, AccessKind::Write)
            .context("touching the source")?;
        mm.touch(dst, size, AccessKind::Write)
            .context("touching the destination")?;
        mm.write(src, b"sva bench").context("writing the source")?;
        let mut rig = Self {
            session,
            src,
            dst,
            len,
            _mm: mm.clone(),
            _platform: p,
        };
        rig.copy().context("the first copy")?;
        let mut back = [0u8; 9];
        mm.read(dst, &mut back).context("reading the destination")?;
        if &back != b"sva bench" {
            bail!("the data mover's copy did not reach the destination");
        }
        Ok(rig)
    }

    /// One copy of the whole buffer; anything but Success is an error.
    fn copy(&mut self) -> Result<()> {
        let r = self
            .session
            .copy(self.dst, self.src, self.len)
            .context("data-mover copy")?;
        match r.status() {
            Some(Status::Success) => Ok(()),
            s => bail!("data-mover copy completed with {s:?}"),
        }
    }
}
