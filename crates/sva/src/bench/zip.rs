//! `zip_vs_cpu`, `zip_mib_s`, `host_flate2_mib_s`: compression through the ZIP model
//! behind uacce (`CompSession`, raw DEFLATE at zlib's default level 6), 64 blocks of
//! 8 KiB with 64 requests in flight and destinations touched before submission, next to
//! flate2 (the same miniz_oxide compressor, same level) compressing the same blocks on one
//! host core. The set-up is the one of `crates/zip/benches/zip.rs`.

use super::harness::{Harness, timed_try};
use super::{Outcome, Progress};
use anyhow::{Context, Result, bail, ensure};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;
use sva_addr::{StreamId, Va};
use sva_iommu::{DeviceId, Domain};
use sva_mm::{AccessKind, MapFlags, Mm, Prot};
use sva_pcie::Capabilities;
use sva_platform::{Platform, PlatformConfig};
use sva_uacce::Uacce;
use sva_zip::driver::{ZipDriver, ZipDriverConfig};
use sva_zip::user::{CompSession, Op};
use sva_zip::{Alg, Qm, QmConfig};

const SID: StreamId = StreamId(1);
const RW: Prot = Prot::READ.union(Prot::WRITE);
const BLOCK: u32 = 8 << 10;
const BLOCKS: u64 = 64;
const DEPTH: usize = 64;
/// Each block's output slot (twice the block: room for incompressible data).
const SLOT: u64 = 2 * BLOCK as u64;
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs flate2 and the ZIP model on the same blocks.
pub(super) fn measure(h: &Harness, progress: &Progress) -> Result<Outcome> {
    let mut out = Outcome::default();
    let data = input();
    let mib_s = |ns: f64| data.len() as f64 / f64::from(1u32 << 20) / (ns * 1e-9);

    progress.say("host flate2 compression");
    let host = h.measure(|iters| timed_try(iters, || host_compress(&data)))?;
    out.timing("host_flate2", host);
    out.figure("host_flate2_mib_s", mib_s(host.median_ns));

    progress.say("ZIP compression, 64 in flight");
    let mut rig = ZipRig::new(&data)?;
    let zip = h.measure(|iters| timed_try(iters, || rig.compress_all()))?;
    out.timing("zip_compress", zip);
    out.figure("zip_mib_s", mib_s(zip.median_ns));
    out.figure("zip_vs_cpu", host.median_ns / zip.median_ns);
    Ok(out)
}

/// Compressible input: this command's sources, repeated to 64 blocks.
fn input() -> Vec<u8> {
    let text = [
        include_str!("../main.rs"),
        include_str!("../demo.rs"),
        include_str!("../sva_demo.rs"),
        include_str!("mod.rs"),
    ]
    .concat();
    text.bytes()
        .cycle()
        .take((u64::from(BLOCK) * BLOCKS) as usize)
        .collect()
}

/// Compresses every block of `data` on its own with flate2 (raw DEFLATE, level 6).
fn host_compress(data: &[u8]) -> Result<usize> {
    let mut produced = 0;
    for block in data.chunks(BLOCK as usize) {
        let mut e = flate2::write::DeflateEncoder::new(
            Vec::with_capacity(SLOT as usize),
            flate2::Compression::new(u32::from(sva_zip::codec::LEVEL)),
        );
        e.write_all(block).context("flate2 compression")?;
        produced += e.finish().context("flate2 compression")?.len();
    }
    Ok(produced)
}

/// A ZIP device behind uacce, a process with a DEFLATE session, the input in its memory
/// and touched destination slots. Fields drop in order: the session before the platform.
struct ZipRig {
    session: CompSession,
    src: Va,
    dst: Va,
    _mm: Arc<Mm>,
    _platform: Platform,
}

impl ZipRig {
    /// Builds the device (QM with 4 queue pairs and 2 engines, rings in its DMA domain),
    /// registers it with uacce, opens a session, copies `data` in, touches the
    /// destinations, and checks one block's output against flate2's decompressor.
    fn new(data: &[u8]) -> Result<Self> {
        let p = Platform::new(PlatformConfig {
            irq_thread: true,
            iopf_workers: 2,
            ..PlatformConfig::default()
        })
        .context("creating the platform")?;
        let sva = p.sva.clone().context("the platform has no SVA core")?;
        let f = p
            .sva_function(SID, Capabilities::default())
            .context("enabling SVA for the ZIP function")?;
        let device = DeviceId(SID.raw());
        let dom = sva.dma_domain().context("creating a DMA domain")?;
        sva.attach_domain(device, Domain::Dma(dom.clone()))
            .context("attaching the DMA domain")?;
        let qm = Arc::new(Qm::new(
            f,
            QmConfig {
                qp_num: 4,
                engines: 2,
                stop_timeout: Duration::from_secs(10),
            },
        ));
        let driver = ZipDriver::new(qm, p.ram.clone(), dom, ZipDriverConfig::default())
            .context("the ZIP driver")?;
        let dev = Uacce::register(Arc::new(driver), &sva, device);
        let mm = p.system.spawn().context("spawning a process")?;
        let mut session =
            CompSession::open(&dev, &mm, Alg::Deflate).context("opening a ZIP session")?;
        let total = data.len() as u64;
        let src = mm
            .mmap(None, total, RW, MapFlags::PRIVATE)
            .context("mapping the input")?;
        mm.write(src, data).context("writing the input")?;
        let dst_len = BLOCKS * SLOT;
        let dst = mm
            .mmap(None, dst_len, RW, MapFlags::PRIVATE)
            .context("mapping the output")?;
        mm.touch(dst, dst_len, AccessKind::Write)
            .context("touching the output")?;

        // One block, checked: the device's DEFLATE inflates to the input.
        let r = session
            .compress(src, BLOCK, dst, SLOT as u32)
            .context("compressing one block")?;
        ensure!(r.status.is_ok(), "compressing one block: {r:?}");
        let mut compressed = vec![0u8; r.produced as usize];
        mm.read(dst, &mut compressed)
            .context("reading the output")?;
        let mut inflated = Vec::new();
        flate2::read::DeflateDecoder::new(&compressed[..])
            .read_to_end(&mut inflated)
            .context("inflating the device's output")?;
        ensure!(
            inflated == data[..BLOCK as usize],
            "the device's output does not inflate to its input"
        );
        Ok(Self {
            session,
            src,
            dst,
            _mm: mm,
            _platform: p,
        })
    }

    /// Compresses every block into its slot with up to `DEPTH` requests in flight (the
    /// ring allows depth − 1), checking every completion.
    fn compress_all(&mut self) -> Result<()> {
        let s = &mut self.session;
        let mut next = 0u64;
        let mut done = 0u64;
        while done < BLOCKS {
            while next < BLOCKS && s.in_flight() < DEPTH {
                let at = next * u64::from(BLOCK);
                match s.submit(
                    Op::Compress,
                    self.src + at,
                    BLOCK,
                    self.dst + next * SLOT,
                    SLOT as u32,
                ) {
                    Ok(_) => next += 1,
                    // The ring is full: collect completions first.
                    Err(sva_zip::Error::QueueFull) if s.in_flight() > 0 => break,
                    Err(e) => return Err(e).context("submitting a compression"),
                }
            }
            match s
                .poll_timeout(POLL_TIMEOUT)
                .context("polling for a completion")?
            {
                Some(c) if c.result.status.is_ok() => done += 1,
                Some(c) => bail!("compression failed: {:?}", c.result),
                None => bail!("no completion within {POLL_TIMEOUT:?}"),
            }
        }
        Ok(())
    }
}
