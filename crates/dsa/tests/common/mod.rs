//! Test helpers: a `Dma` over a map of 4 KiB pages per PASID, where absent pages fault.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use sva_addr::Pasid;
use sva_dsa::{
    COMPLETION_RECORD_SIZE, CompletionRecord, Descriptor, Device, DeviceConfig, WqConfig, WqMode,
};
use sva_mm::IoMemory;
use sva_pcie::{Dma, DmaCtx, DmaFault, FaultReason};

pub const PAGE: u64 = 4096;
pub const A: Pasid = Pasid(1);
pub const B: Pasid = Pasid(2);

type Key = (Option<Pasid>, u64);

/// Memory of several address spaces as 4 KiB pages. An absent page faults: with
/// block-on-fault and `fault_in` set it is allocated (zeroed) as a PRI page request would
/// have it mapped; pages marked `bad` answer Invalid Request when blocking.
#[derive(Default)]
pub struct PageDma {
    pages: Mutex<HashMap<Key, Box<[u8]>>>,
    bad: Mutex<HashSet<Key>>,
    pub fault_in: AtomicBool,
    /// While closed, every DMA waits (up to 10 s) for it to open.
    gate_closed: Mutex<bool>,
    gate: Condvar,
    pub calls: AtomicU64,
    pub faults_resolved: AtomicU64,
}

impl PageDma {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Maps zeroed pages covering `[addr, addr + len)`.
    pub fn map(&self, pasid: Pasid, addr: u64, len: u64) {
        let mut pages = self.pages.lock().unwrap();
        let mut p = addr / PAGE;
        while p * PAGE < addr + len {
            pages
                .entry((Some(pasid), p))
                .or_insert_with(|| vec![0u8; PAGE as usize].into_boxed_slice());
            p += 1;
        }
    }

    /// Removes the pages covering `[addr, addr + len)`.
    pub fn unmap(&self, pasid: Pasid, addr: u64, len: u64) {
        let mut pages = self.pages.lock().unwrap();
        let mut p = addr / PAGE;
        while p * PAGE < addr + len {
            pages.remove(&(Some(pasid), p));
            p += 1;
        }
    }

    /// Marks a page so that resolving a fault on it fails (Invalid).
    pub fn mark_bad(&self, pasid: Pasid, addr: u64) {
        self.bad.lock().unwrap().insert((Some(pasid), addr / PAGE));
    }

    pub fn is_mapped(&self, pasid: Pasid, addr: u64) -> bool {
        self.pages
            .lock()
            .unwrap()
            .contains_key(&(Some(pasid), addr / PAGE))
    }

    /// CPU store (maps the pages first).
    pub fn put(&self, pasid: Pasid, addr: u64, data: &[u8]) {
        self.map(pasid, addr, data.len() as u64);
        self.access(
            DmaCtx::pasid(pasid),
            addr,
            data.len(),
            |page, off, pos, n| page[off..off + n].copy_from_slice(&data[pos..pos + n]),
            true,
        )
        .unwrap();
    }

    /// CPU load; absent pages read as `0xEE` (never written by the device).
    pub fn get(&self, pasid: Pasid, addr: u64, len: usize) -> Vec<u8> {
        let pages = self.pages.lock().unwrap();
        (0..len as u64)
            .map(|i| {
                let a = addr + i;
                pages
                    .get(&(Some(pasid), a / PAGE))
                    .map_or(0xee, |p| p[(a % PAGE) as usize])
            })
            .collect()
    }

    pub fn close_gate(&self) {
        *self.gate_closed.lock().unwrap() = true;
    }

    pub fn open_gate(&self) {
        *self.gate_closed.lock().unwrap() = false;
        self.gate.notify_all();
    }

    fn wait_gate(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut closed = self.gate_closed.lock().unwrap();
        while *closed && Instant::now() < deadline {
            closed = self
                .gate
                .wait_timeout(closed, Duration::from_millis(10))
                .unwrap()
                .0;
        }
    }

    /// Walks `[addr, addr + len)` page by page, calling `f(page, offset, pos, n)`; a page
    /// that is absent faults (or is faulted in).
    fn access(
        &self,
        ctx: DmaCtx,
        addr: u64,
        len: usize,
        mut f: impl FnMut(&mut [u8], usize, usize, usize),
        write: bool,
    ) -> Result<(), DmaFault> {
        let mut pos = 0usize;
        while pos < len {
            let a = addr.checked_add(pos as u64).ok_or(DmaFault {
                addr: u64::MAX,
                done: pos as u64,
                write,
                reason: FaultReason::Memory,
            })?;
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(len - pos);
            let key = (ctx.pasid, a / PAGE);
            let mut pages = self.pages.lock().unwrap();
            if let std::collections::hash_map::Entry::Vacant(slot) = pages.entry(key) {
                let fault = |reason| DmaFault {
                    addr: a,
                    done: pos as u64,
                    write,
                    reason,
                };
                if !ctx.block_on_fault {
                    return Err(fault(FaultReason::NotPresent));
                }
                if self.bad.lock().unwrap().contains(&key) {
                    return Err(fault(FaultReason::Invalid));
                }
                if !self.fault_in.load(Ordering::SeqCst) {
                    return Err(fault(FaultReason::Timeout));
                }
                slot.insert(vec![0u8; PAGE as usize].into_boxed_slice());
                self.faults_resolved.fetch_add(1, Ordering::SeqCst);
            }
            let page = pages.get_mut(&key).unwrap();
            f(page, off, pos, n);
            pos += n;
        }
        Ok(())
    }
}

impl Dma for PageDma {
    fn read(&self, ctx: DmaCtx, addr: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.wait_gate();
        let len = buf.len();
        PageDma::access(
            self,
            ctx,
            addr,
            len,
            |page, off, pos, n| buf[pos..pos + n].copy_from_slice(&page[off..off + n]),
            false,
        )
    }

    fn write(&self, ctx: DmaCtx, addr: u64, data: &[u8]) -> Result<(), DmaFault> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.wait_gate();
        PageDma::access(
            self,
            ctx,
            addr,
            data.len(),
            |page, off, pos, n| page[off..off + n].copy_from_slice(&data[pos..pos + n]),
            true,
        )
    }
}

pub fn dedicated(size: usize) -> WqConfig {
    WqConfig {
        mode: WqMode::Dedicated,
        size,
    }
}

pub fn shared(size: usize) -> WqConfig {
    WqConfig {
        mode: WqMode::Shared,
        size,
    }
}

/// A device with one dedicated WQ (PASID `A`, enabled) and one shared WQ (enabled).
pub struct Rig {
    pub dma: Arc<PageDma>,
    pub dev: Device,
    pub dwq: Arc<dyn IoMemory>,
    pub swq: Arc<dyn IoMemory>,
}

pub fn rig() -> Rig {
    rig_with(DeviceConfig {
        wqs: vec![dedicated(8), shared(8)],
        engines: 1,
        max_xfer_size: 1 << 20,
        max_batch_size: 16,
        ..DeviceConfig::default()
    })
}

pub fn rig_with(config: DeviceConfig) -> Rig {
    let dma = PageDma::new();
    let dev = Device::new(dma.clone(), config).unwrap();
    dev.set_wq_pasid(0, Some(A)).unwrap();
    dev.enable_wq(0).unwrap();
    dev.enable_wq(1).unwrap();
    let dwq = dev.portal(0).unwrap();
    let swq = dev.portal(1).unwrap();
    Rig { dma, dev, dwq, swq }
}

/// Where tests put completion records (mapped in `A` and `B`).
pub const CR: u64 = 0x10_0000;

impl Rig {
    /// Maps the completion-record page in both address spaces.
    pub fn map_records(&self) {
        self.dma.map(A, CR, PAGE);
        self.dma.map(B, CR, PAGE);
    }

    /// Clears the record at `cr` in `pasid`.
    pub fn clear(&self, pasid: Pasid, cr: u64) {
        self.dma.put(pasid, cr, &[0u8; COMPLETION_RECORD_SIZE]);
    }

    /// Submits to the dedicated WQ (PASID `A`) with MOVDIR64B.
    pub fn submit_dedicated(&self, d: &Descriptor) {
        self.dwq.write(0, &d.encode()).unwrap();
    }

    /// Submits to the shared WQ with ENQCMD as `pasid`; returns the ENQCMD answer.
    pub fn submit_shared(&self, d: &Descriptor, pasid: Pasid) -> bool {
        self.swq.enqueue(64, &d.encode(), Some(pasid)).unwrap()
    }

    /// Waits for the record at `cr` in `pasid` to be written.
    pub fn wait(&self, pasid: Pasid, cr: u64) -> CompletionRecord {
        wait_record(&self.dma, pasid, cr)
    }

    /// Runs `d` (its completion address set to `CR`) on the dedicated WQ and waits.
    pub fn run(&self, d: &Descriptor) -> CompletionRecord {
        let mut d = *d;
        d.completion_addr = CR;
        self.dma.map(A, CR, PAGE);
        self.clear(A, CR);
        self.submit_dedicated(&d);
        self.wait(A, CR)
    }

    /// Waits until the engines have nothing queued or running (by submitting a drain).
    pub fn settle(&self) {
        let cr = CR + 0x800;
        self.dma.map(A, cr, 64);
        self.clear(A, cr);
        self.submit_dedicated(&Descriptor::drain(cr));
        self.wait(A, cr);
    }
}

pub fn wait_record(dma: &PageDma, pasid: Pasid, cr: u64) -> CompletionRecord {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let b = dma.get(pasid, cr, COMPLETION_RECORD_SIZE);
        if b[0] != 0 && b[0] != 0xee {
            let mut r = [0u8; COMPLETION_RECORD_SIZE];
            r.copy_from_slice(&b);
            return CompletionRecord::decode(&r);
        }
        assert!(Instant::now() < deadline, "no completion record at {cr:#x}");
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Waits for `cond` (up to 5 s).
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Deterministic test data.
pub fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}
