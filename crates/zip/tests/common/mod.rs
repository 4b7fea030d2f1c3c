//! Test rig: a `Dma` over a map of 4 KiB pages, and a queue pair driven directly through
//! its doorbell page and rings; and the ZIP driver on a PCIe function of the SMMUv3
//! platform.

#![allow(dead_code, reason = "each test binary uses part of the rig")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use sva_addr::{Pasid, StreamId};
use sva_iommu::{DeviceId, DmaDomain, Domain, Sva};
use sva_mm::IoMemory;
use sva_pcie::{Capabilities, Dma, DmaCtx, DmaFault, FaultReason, PciFunction};
use sva_platform::{Platform, PlatformConfig};
use sva_zip::cqe::{CQE_SIZE, Cqe};
use sva_zip::driver::{ZipDriver, ZipDriverConfig};
use sva_zip::qm::{Doorbell, QpSetup, doorbell_cmd};
use sva_zip::sqe::{SQE_SIZE, Sqe};
use sva_zip::{Qm, QmConfig, QueueType};

pub const PAGE: u64 = 4096;

type Key = (Option<u32>, u64);

/// Memory as the device sees it: pages per address space (`None` = the non-PASID
/// context). An absent page faults, or, with `on_demand`, is allocated zeroed when a
/// PASID access that blocks on faults touches it (as PRI would fault it in).
#[derive(Default)]
pub struct PageDma {
    pages: Mutex<HashMap<Key, Box<[u8]>>>,
    pub on_demand: AtomicBool,
    /// Delay added to every access, in microseconds.
    pub delay_us: AtomicU64,
    /// Accesses made.
    pub accesses: AtomicU64,
    /// Faults returned.
    pub faults: AtomicU64,
}

fn space(ctx: DmaCtx) -> Option<u32> {
    ctx.pasid.map(|p| p.0)
}

impl PageDma {
    pub fn new(on_demand: bool) -> Arc<Self> {
        let d = Self::default();
        d.on_demand.store(on_demand, Ordering::Relaxed);
        Arc::new(d)
    }

    /// Makes `[addr, addr + len)` present (zeroed where new).
    pub fn map(&self, ctx: DmaCtx, addr: u64, len: u64) {
        let mut p = self.pages.lock().unwrap();
        let mut a = addr & !(PAGE - 1);
        while a < addr + len {
            p.entry((space(ctx), a))
                .or_insert_with(|| vec![0u8; PAGE as usize].into_boxed_slice());
            a += PAGE;
        }
    }

    /// Removes the pages of `[addr, addr + len)`.
    pub fn unmap(&self, ctx: DmaCtx, addr: u64, len: u64) {
        let mut p = self.pages.lock().unwrap();
        let mut a = addr & !(PAGE - 1);
        while a < addr + len {
            p.remove(&(space(ctx), a));
            a += PAGE;
        }
    }

    /// Writes `data` (mapping pages as needed), as the CPU would.
    pub fn put(&self, ctx: DmaCtx, addr: u64, data: &[u8]) {
        self.map(ctx, addr, data.len() as u64);
        let mut p = self.pages.lock().unwrap();
        for (i, b) in data.iter().enumerate() {
            let a = addr + i as u64;
            p.get_mut(&(space(ctx), a & !(PAGE - 1))).unwrap()[(a % PAGE) as usize] = *b;
        }
    }

    /// Reads `len` bytes; absent pages read as `None`.
    pub fn get(&self, ctx: DmaCtx, addr: u64, len: usize) -> Option<Vec<u8>> {
        let p = self.pages.lock().unwrap();
        (0..len)
            .map(|i| {
                let a = addr + i as u64;
                p.get(&(space(ctx), a & !(PAGE - 1)))
                    .map(|pg| pg[(a % PAGE) as usize])
            })
            .collect()
    }

    pub fn is_mapped(&self, ctx: DmaCtx, addr: u64) -> bool {
        self.pages
            .lock()
            .unwrap()
            .contains_key(&(space(ctx), addr & !(PAGE - 1)))
    }

    fn access(
        &self,
        ctx: DmaCtx,
        addr: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(&mut [u8], usize),
    ) -> Result<(), DmaFault> {
        self.accesses.fetch_add(1, Ordering::Relaxed);
        let us = self.delay_us.load(Ordering::Relaxed);
        if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
        let mut done = 0usize;
        while done < len {
            let a = addr.wrapping_add(done as u64);
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(len - done);
            let mut p = self.pages.lock().unwrap();
            let key = (space(ctx), a & !(PAGE - 1));
            if !p.contains_key(&key)
                && ctx.pasid.is_some()
                && ctx.block_on_fault
                && self.on_demand.load(Ordering::Relaxed)
            {
                p.insert(key, vec![0u8; PAGE as usize].into_boxed_slice());
            }
            let Some(page) = p.get_mut(&key) else {
                self.faults.fetch_add(1, Ordering::Relaxed);
                return Err(DmaFault {
                    addr: a,
                    done: done as u64,
                    write,
                    reason: if ctx.block_on_fault {
                        FaultReason::Invalid
                    } else {
                        FaultReason::NotPresent
                    },
                });
            };
            f(&mut page[off..off + n], done);
            done += n;
        }
        Ok(())
    }
}

impl Dma for PageDma {
    fn read(&self, ctx: DmaCtx, addr: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        let len = buf.len();
        self.access(ctx, addr, len, false, |page, at| {
            buf[at..at + page.len()].copy_from_slice(page);
        })
    }

    fn write(&self, ctx: DmaCtx, addr: u64, data: &[u8]) -> Result<(), DmaFault> {
        self.access(ctx, addr, data.len(), true, |page, at| {
            let n = page.len();
            page.copy_from_slice(&data[at..at + n]);
        })
    }
}

pub const SQ_BASE: u64 = 0x10_0000;
pub const CQ_BASE: u64 = 0x20_0000;
pub const PASID: u32 = 5;

/// One started queue pair, driven the way the user library drives it, but through the
/// device's own view of memory.
pub struct Rig {
    pub dma: Arc<PageDma>,
    pub qm: Qm,
    pub qp: u16,
    pub db: Arc<dyn IoMemory>,
    pub sq_depth: u16,
    pub cq_depth: u16,
    pub tail: u16,
    pub head: u16,
    pub phase: bool,
}

pub fn iova() -> DmaCtx {
    DmaCtx::iova()
}

pub fn user() -> DmaCtx {
    DmaCtx::pasid(Pasid(PASID))
}

impl Rig {
    pub fn new(sq_depth: u16, cq_depth: u16, engines: usize) -> Self {
        Self::with(sq_depth, cq_depth, engines, QueueType::Compress, true)
    }

    pub fn with(
        sq_depth: u16,
        cq_depth: u16,
        engines: usize,
        qtype: QueueType,
        on_demand: bool,
    ) -> Self {
        let dma = PageDma::new(on_demand);
        let qm = Qm::new(
            dma.clone(),
            QmConfig {
                qp_num: 4,
                engines,
                stop_timeout: Duration::from_secs(10),
            },
        );
        let qp = 2;
        dma.map(iova(), SQ_BASE, u64::from(sq_depth) * SQE_SIZE as u64);
        dma.map(iova(), CQ_BASE, u64::from(cq_depth) * CQE_SIZE as u64);
        qm.setup_qp(&QpSetup {
            qp,
            sq_base: SQ_BASE,
            sq_depth,
            cq_base: CQ_BASE,
            cq_depth,
            pasid: Some(PASID as u16),
            qtype,
        })
        .unwrap();
        qm.start_qp(qp).unwrap();
        let db = qm.doorbell(qp).unwrap();
        Self {
            dma,
            qm,
            qp,
            db,
            sq_depth,
            cq_depth,
            tail: 0,
            head: 0,
            phase: true,
        }
    }

    pub fn ring(&self, cmd: u8, index: u16) {
        let v = Doorbell::new()
            .with_sqn(self.qp)
            .with_cmd(cmd)
            .with_index(index);
        self.db.write(0, &v.into_bits().to_le_bytes()).unwrap();
    }

    /// Writes `sqe` at the tail without ringing; returns its slot.
    pub fn queue(&mut self, sqe: &Sqe) -> u16 {
        let slot = self.tail;
        self.dma.put(
            iova(),
            SQ_BASE + u64::from(slot) * SQE_SIZE as u64,
            &sqe.encode(),
        );
        self.tail = (self.tail + 1) % self.sq_depth;
        slot
    }

    /// Rings the SQ doorbell with the current tail.
    pub fn kick(&self) {
        self.ring(doorbell_cmd::SQ, self.tail);
    }

    pub fn submit(&mut self, sqe: &Sqe) -> u16 {
        let slot = self.queue(sqe);
        self.kick();
        slot
    }

    /// The next completion, if one is there: the CQE and the SQE it names.
    pub fn try_poll(&mut self) -> Option<(Cqe, Sqe)> {
        let at = CQ_BASE + u64::from(self.head) * CQE_SIZE as u64;
        let raw = self.dma.get(iova(), at, CQE_SIZE)?;
        let cqe = Cqe::decode(raw.as_slice().try_into().unwrap());
        if cqe.phase() != self.phase {
            return None;
        }
        let slot = SQ_BASE + u64::from(cqe.sq_head) * SQE_SIZE as u64;
        let raw = self.dma.get(iova(), slot, SQE_SIZE).unwrap();
        let sqe = Sqe::decode(raw.as_slice().try_into().unwrap());
        self.head = (self.head + 1) % self.cq_depth;
        if self.head == 0 {
            self.phase = !self.phase;
        }
        self.ring(doorbell_cmd::CQ, self.head);
        Some((cqe, sqe))
    }

    pub fn poll_timeout(&mut self, t: Duration) -> Option<(Cqe, Sqe)> {
        let end = Instant::now() + t;
        loop {
            if let Some(c) = self.try_poll() {
                return Some(c);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    pub fn wait(&mut self) -> (Cqe, Sqe) {
        self.poll_timeout(Duration::from_secs(20))
            .expect("a completion within 20 s")
    }

    /// Submits one request and waits for it.
    pub fn run(&mut self, sqe: &Sqe) -> Sqe {
        let slot = self.submit(sqe);
        let (cqe, done) = self.wait();
        assert_eq!(cqe.sq_head, slot);
        assert_eq!(cqe.sq_num, self.qp);
        done
    }
}

/// A ZIP function on the SMMUv3 platform; the driver maps its rings in the function's
/// DMA domain.
pub struct ZipOnPlatform {
    pub p: Platform,
    pub f: Arc<PciFunction>,
    pub sva: Arc<Sva>,
    pub dom: Arc<DmaDomain>,
    pub driver: ZipDriver,
}

/// A platform (with or without the interrupt thread), a PCIe function at `sid` attached to
/// a new DMA domain, and a ZIP driver on it: `qp_num` queue pairs of `depth` entries each,
/// `engines` engines.
pub fn zip_on_platform(
    sid: StreamId,
    irq_thread: bool,
    qp_num: u16,
    engines: usize,
    depth: u16,
) -> ZipOnPlatform {
    let p = Platform::new(PlatformConfig {
        irq_thread,
        ..PlatformConfig::default()
    })
    .unwrap();
    let f = p.sva_function(sid, Capabilities::default()).unwrap();
    let sva = p.sva.clone().unwrap();
    let dom = sva.dma_domain().unwrap();
    sva.attach_domain(DeviceId(sid.raw()), Domain::Dma(dom.clone()))
        .unwrap();
    let qm = Arc::new(Qm::new(
        f.clone(),
        QmConfig {
            qp_num,
            engines,
            stop_timeout: Duration::from_secs(10),
        },
    ));
    let driver = ZipDriver::new(
        qm,
        p.ram.clone(),
        dom.clone(),
        ZipDriverConfig {
            sq_depth: depth,
            cq_depth: depth,
            page_size: 4096,
        },
    )
    .unwrap();
    ZipOnPlatform {
        p,
        f,
        sva,
        dom,
        driver,
    }
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}
