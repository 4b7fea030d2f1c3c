//! One PCIe function: its capability state, its ATC, and its DMA engine.
//!
//! A DMA runs page by page. With ATS enabled each page is looked up in the ATC, fetched
//! with a Translation Request on a miss, and accessed with a Translated transaction; a
//! page that does not translate is requested with PRI (one Page Request Group for the
//! faulting page and the pages after it in the same transfer, LAST on the final one) when
//! the DMA blocks on faults. Without ATS the transaction is Untranslated and the SMMU
//! translates it, stalling it when the stream is configured to stall.

use crate::atc::{Atc, AtcAccess, AtcEntry};
use crate::caps::{CapState, Capabilities, Stu};
use crate::dma::bounce_copy;
use crate::{Dma, DmaCtx, DmaFault, Error, FaultReason};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use sva_addr::{Pa, Pasid, StreamId, Va};
use sva_physmem::{PhysMemory, Ram};
use sva_smmuv3::{
    AtsCompletion, AtsRequest, Denied, Endpoint, Smmu, Transaction, TranslateOutcome,
};
use sva_smmuv3_spec::pri::{PageRequest, PriResponse};
use sva_sync::{Condvar, Deadline, Mutex, MutexGuard, lock, spin_until};
use sva_vmsa::AccessKind;

const PAGE: u64 = 4096;
/// PRG indexes are 9 bits (PCIe §10.4.1).
const PRG_INDEXES: u16 = 512;
/// Translation attempts for one page before the DMA gives up: a page that is faulted in
/// and unmapped again over and over must not livelock the engine.
const MAX_ATTEMPTS: u32 = 16;

/// Tunables of the function's DMA engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaConfig {
    /// Pages one Page Request Group asks for: the faulting page and the next ones of the
    /// same transfer (1 = the faulting page only).
    pub pri_group_pages: u32,
    /// How long a DMA waits for a PRG Response or a stall resolution.
    pub fault_timeout: Duration,
}

impl Default for DmaConfig {
    fn default() -> Self {
        Self {
            pri_group_pages: 4,
            fault_timeout: Duration::from_secs(10),
        }
    }
}

/// DMA engine counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FunctionStats {
    /// Bytes read by DMA.
    pub bytes_read: u64,
    /// Bytes written by DMA.
    pub bytes_written: u64,
    /// ATS Translation Requests sent.
    pub ats_requests: u64,
    /// Page Request Groups sent.
    pub page_request_groups: u64,
    /// Page requests sent (one per page).
    pub page_requests: u64,
    /// PRG Responses: Success.
    pub responses_success: u64,
    /// PRG Responses: Invalid Request.
    pub responses_invalid: u64,
    /// PRG Responses: Response Failure.
    pub responses_failure: u64,
    /// Transactions that stalled in the SMMU.
    pub stalls: u64,
    /// ATS Invalidation Requests received.
    pub atc_invalidations: u64,
    /// DMAs that ended with a fault.
    pub faults: u64,
    /// Most page requests ever outstanding at once (never above the PRI allocation).
    pub max_outstanding: u64,
}

#[derive(Default)]
struct Counters {
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    ats_requests: AtomicU64,
    page_request_groups: AtomicU64,
    page_requests: AtomicU64,
    responses_success: AtomicU64,
    responses_invalid: AtomicU64,
    responses_failure: AtomicU64,
    stalls: AtomicU64,
    atc_invalidations: AtomicU64,
    faults: AtomicU64,
    max_outstanding: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Page Request Groups in flight: (PASID slot, PRG index) → response once it came.
#[derive(Default)]
struct PriState {
    /// Page requests sent and not answered (counted against the allocation).
    outstanding: u32,
    next_index: u16,
    groups: BTreeMap<(u32, u16), Option<PriResponse>>,
}

/// The function's registers, as software sees them.
#[derive(Default)]
struct Regs {
    caps: CapState,
    bus_master: bool,
}

/// A PCIe function behind one StreamID (its Requester ID).
pub struct PciFunction {
    sid: StreamId,
    caps: Capabilities,
    config: DmaConfig,
    smmu: Arc<Smmu>,
    ram: Arc<Ram>,
    regs: Mutex<Regs>,
    atc: Atc,
    pri: Mutex<PriState>,
    pri_changed: Condvar,
    /// Stall tags resolved by the SMMU: retry or not.
    stalls: Mutex<BTreeMap<u16, bool>>,
    stall_changed: Condvar,
    counters: Counters,
}

impl core::fmt::Debug for PciFunction {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PciFunction")
            .field("sid", &self.sid)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

fn slot(pasid: Option<Pasid>) -> u32 {
    pasid.map_or(u32::MAX, |p| p.raw())
}

/// How one page of a transfer is reached.
enum Route {
    /// The page translated; the access may proceed.
    Go,
    /// Fault it in and try again.
    Fault,
}

impl PciFunction {
    /// A function at `sid` on `smmu`'s bus, receiving the SMMU's downstream messages.
    /// Bus mastering is on; every capability starts disabled.
    pub fn new(
        smmu: &Arc<Smmu>,
        ram: &Arc<Ram>,
        sid: StreamId,
        caps: Capabilities,
        config: DmaConfig,
    ) -> Arc<Self> {
        let f = Arc::new(Self {
            sid,
            caps,
            config,
            smmu: smmu.clone(),
            ram: ram.clone(),
            regs: Mutex::new(Regs {
                caps: CapState::default(),
                bus_master: true,
            }),
            atc: Atc::new(caps.atc_entries),
            pri: Mutex::new(PriState::default()),
            pri_changed: Condvar::new(),
            stalls: Mutex::new(BTreeMap::new()),
            stall_changed: Condvar::new(),
            counters: Counters::default(),
        });
        smmu.attach_endpoint(sid, &f);
        f
    }

    /// The StreamID (Requester ID).
    pub fn sid(&self) -> StreamId {
        self.sid
    }

    /// The implemented capabilities.
    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }

    /// The capability registers now.
    pub fn cap_state(&self) -> CapState {
        lock(&self.regs).caps
    }

    /// The ATC.
    pub fn atc(&self) -> &Atc {
        &self.atc
    }

    /// Command register: Bus Master Enable. With it clear every DMA fails with
    /// [`FaultReason::Disabled`].
    pub fn set_bus_master(&self, on: bool) {
        lock(&self.regs).bus_master = on;
    }

    /// PASID Control: enables PASID-tagged requests. PCIe forbids changing it while ATS
    /// is enabled, so PASID comes first.
    pub fn enable_pasid(&self, exec: bool, privileged: bool) -> Result<(), Error> {
        let mut r = lock(&self.regs);
        if self.caps.pasid_width == 0 {
            return Err(Error::NoCapability("PASID"));
        }
        if r.caps.ats_enabled {
            return Err(Error::Order("PASID must be enabled before ATS"));
        }
        if (exec && !self.caps.pasid_exec) || (privileged && !self.caps.pasid_privileged) {
            return Err(Error::NoCapability("PASID execute/privileged mode"));
        }
        r.caps.pasid_enabled = true;
        r.caps.pasid_exec = exec;
        r.caps.pasid_privileged = privileged;
        Ok(())
    }

    /// Clears PASID Enable (ATS must be disabled first).
    pub fn disable_pasid(&self) -> Result<(), Error> {
        let mut r = lock(&self.regs);
        if r.caps.ats_enabled {
            return Err(Error::Order("ATS must be disabled before PASID"));
        }
        r.caps.pasid_enabled = false;
        Ok(())
    }

    /// ATS Control: Enable with a Smallest Translation Unit. Empties the ATC.
    pub fn enable_ats(&self, stu: Stu) -> Result<(), Error> {
        if !self.caps.ats {
            return Err(Error::NoCapability("ATS"));
        }
        let mut r = lock(&self.regs);
        r.caps.ats_enabled = true;
        r.caps.ats_stu = stu;
        drop(r);
        self.atc.invalidate(None, 0, u64::MAX);
        Ok(())
    }

    /// Clears ATS Enable (PRI must be disabled first) and empties the ATC.
    pub fn disable_ats(&self) -> Result<(), Error> {
        let mut r = lock(&self.regs);
        if r.caps.pri_enabled {
            return Err(Error::Order("PRI must be disabled before ATS"));
        }
        r.caps.ats_enabled = false;
        drop(r);
        self.atc.invalidate(None, 0, u64::MAX);
        Ok(())
    }

    /// PRI Control: sets the Outstanding Page Request Allocation and Enable; clears the
    /// Response Failure and Unexpected PRG Index status (PRI Reset). Needs ATS enabled.
    pub fn enable_pri(&self, allocation: u32) -> Result<(), Error> {
        if self.caps.pri_capacity == 0 {
            return Err(Error::NoCapability("PRI"));
        }
        if allocation == 0 || allocation > self.caps.pri_capacity {
            return Err(Error::Allocation {
                asked: allocation,
                capacity: self.caps.pri_capacity,
            });
        }
        let mut r = lock(&self.regs);
        if !r.caps.ats_enabled {
            return Err(Error::Order("ATS must be enabled before PRI"));
        }
        r.caps.pri_enabled = true;
        r.caps.pri_allocation = allocation;
        r.caps.pri_response_failure = false;
        r.caps.pri_unexpected_index = false;
        drop(r);
        self.pri_changed.notify_all();
        Ok(())
    }

    /// Clears PRI Enable. Requests already sent may still be answered.
    pub fn disable_pri(&self) {
        lock(&self.regs).caps.pri_enabled = false;
        self.pri_changed.notify_all();
    }

    /// Page requests sent and not yet answered.
    pub fn outstanding_page_requests(&self) -> u32 {
        lock(&self.pri).outstanding
    }

    /// The counters.
    pub fn stats(&self) -> FunctionStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FunctionStats {
            bytes_read: l(&c.bytes_read),
            bytes_written: l(&c.bytes_written),
            ats_requests: l(&c.ats_requests),
            page_request_groups: l(&c.page_request_groups),
            page_requests: l(&c.page_requests),
            responses_success: l(&c.responses_success),
            responses_invalid: l(&c.responses_invalid),
            responses_failure: l(&c.responses_failure),
            stalls: l(&c.stalls),
            atc_invalidations: l(&c.atc_invalidations),
            faults: l(&c.faults),
            max_outstanding: l(&c.max_outstanding),
        }
    }

    /// Checks that the function may issue a DMA in `ctx`; returns whether ATS is used.
    fn check(&self, ctx: DmaCtx) -> Result<bool, FaultReason> {
        let r = lock(&self.regs);
        if !r.bus_master || (ctx.pasid.is_some() && !r.caps.pasid_enabled) {
            return Err(FaultReason::Disabled);
        }
        if let Some(p) = ctx.pasid
            && u64::from(p.raw()) >> self.caps.pasid_width != 0
        {
            return Err(FaultReason::Disabled);
        }
        Ok(r.caps.ats_enabled)
    }

    /// Runs `access` on the physical address of `addr` (within one page), translating
    /// and faulting in as the function is configured. `fault_span` is how many bytes of
    /// the same transfer follow `addr` (for grouping page requests).
    fn with_page<R>(
        &self,
        ctx: DmaCtx,
        ats: bool,
        addr: u64,
        write: bool,
        fault_span: u64,
        mut access: impl FnMut(Pa) -> R,
    ) -> Result<R, FaultReason> {
        let kind = if write {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        for _ in 0..MAX_ATTEMPTS {
            let route = if ats {
                let guard = self.atc.access();
                if let Some(e) = self.atc_lookup(&guard, ctx, addr, write) {
                    let txn = Transaction {
                        sid: self.sid,
                        ssid: ctx.pasid,
                        addr: e.translate(addr).raw(),
                        access: kind,
                        privileged: false,
                        translated: true,
                    };
                    // The ATC guard keeps the translation alive; the SMMU only checks
                    // that Translated transactions are allowed for the stream.
                    return match self.smmu.translate(&txn) {
                        TranslateOutcome::Bypassed { pa }
                        | TranslateOutcome::Translated { pa, .. } => Ok(access(pa)),
                        TranslateOutcome::Aborted { .. } | TranslateOutcome::Stalled { .. } => {
                            Err(FaultReason::Aborted)
                        }
                    };
                }
                drop(guard);
                self.ats_fill(ctx, addr, write)?
            } else {
                let txn = Transaction {
                    sid: self.sid,
                    ssid: ctx.pasid,
                    addr,
                    access: kind,
                    privileged: false,
                    translated: false,
                };
                match self.smmu.transact(&txn, &mut access) {
                    Ok(r) => return Ok(r),
                    Err(Denied::Aborted { .. }) => return Err(FaultReason::Aborted),
                    Err(Denied::Stalled { stag }) => {
                        bump(&self.counters.stalls, 1);
                        if !self.wait_stall(stag)? {
                            return Err(FaultReason::Invalid);
                        }
                        continue;
                    }
                }
            };
            if let Route::Fault = route {
                if !ctx.block_on_fault {
                    return Err(FaultReason::NotPresent);
                }
                self.fault_in(ctx.pasid, addr, write, fault_span)?;
            }
        }
        Err(FaultReason::Timeout)
    }

    fn atc_lookup(
        &self,
        guard: &AtcAccess<'_>,
        ctx: DmaCtx,
        addr: u64,
        write: bool,
    ) -> Option<AtcEntry> {
        self.atc
            .lookup(guard, ctx.pasid, addr)
            .filter(|e| if write { e.write } else { e.read })
    }

    /// A Translation Request for the page at `addr`: caches the answer, or says the page
    /// must be faulted in.
    fn ats_fill(&self, ctx: DmaCtx, addr: u64, write: bool) -> Result<Route, FaultReason> {
        bump(&self.counters.ats_requests, 1);
        let generation = self.atc.generation();
        match self.smmu.ats_translate(&AtsRequest {
            sid: self.sid,
            ssid: ctx.pasid,
            addr,
            no_write: !write,
            exec: false,
            privileged: false,
        }) {
            AtsCompletion::Success {
                pa,
                size,
                read,
                write: w,
                global,
                ..
            } => {
                if (write && !w) || (!write && !read) {
                    return Ok(Route::Fault);
                }
                let base = addr & !(size - 1);
                // A translation the ATC is too small for is still used, once.
                self.atc.insert(
                    generation,
                    ctx.pasid,
                    global,
                    AtcEntry {
                        base,
                        pa,
                        size,
                        read,
                        write: w,
                    },
                );
                Ok(Route::Go)
            }
            AtsCompletion::NoAccess => Ok(Route::Fault),
            AtsCompletion::UnsupportedRequest | AtsCompletion::CompleterAbort => {
                Err(FaultReason::AtsRejected)
            }
        }
    }

    /// Sends one Page Request Group for `addr` and the pages after it within `span`
    /// bytes, waits for the response, and says whether the page may now translate. An
    /// Invalid answer to a group of several pages is retried for the faulting page alone:
    /// a later page of the group may be what the host refused.
    fn fault_in(
        &self,
        pasid: Option<Pasid>,
        addr: u64,
        write: bool,
        span: u64,
    ) -> Result<(), FaultReason> {
        let first = addr & !(PAGE - 1);
        let last = (addr + span.max(1) - 1) & !(PAGE - 1);
        let want = ((last - first) / PAGE + 1).min(u64::from(self.config.pri_group_pages.max(1)));
        let mut pages = want;
        loop {
            match self.page_request_group(pasid, first, pages as u32, write)? {
                PriResponse::Success => return Ok(()),
                PriResponse::Invalid if pages > 1 => pages = 1,
                PriResponse::Invalid => return Err(FaultReason::Invalid),
                PriResponse::Failure | PriResponse::Reserved(_) => {
                    return Err(FaultReason::ResponseFailure);
                }
            }
        }
    }

    /// Sends `pages` page requests from `first` as one group and waits for its response.
    fn page_request_group(
        &self,
        pasid: Option<Pasid>,
        first: u64,
        pages: u32,
        write: bool,
    ) -> Result<PriResponse, FaultReason> {
        let deadline = Deadline::after(self.config.fault_timeout);
        let mut pri = lock(&self.pri);
        let index = loop {
            let caps = lock(&self.regs).caps;
            if caps.pri_response_failure {
                return Err(FaultReason::ResponseFailure);
            }
            if !caps.pri_enabled {
                return Err(FaultReason::NotPresent);
            }
            // Never more requests outstanding than the allocation (PCIe §10.4.1), and a
            // group larger than the whole allocation shrinks to fit.
            let pages = pages.min(caps.pri_allocation);
            if pri.outstanding + pages <= caps.pri_allocation
                && let Some(i) = self.free_index(&pri, pasid)
            {
                pri.outstanding += pages;
                self.counters
                    .max_outstanding
                    .fetch_max(u64::from(pri.outstanding), Ordering::Relaxed);
                pri.groups.insert((slot(pasid), i), None);
                break (i, pages);
            }
            pri = self.wait_pri(pri, deadline)?;
        };
        let (index, pages) = index;
        drop(pri);
        bump(&self.counters.page_request_groups, 1);
        bump(&self.counters.page_requests, u64::from(pages));
        for i in 0..pages {
            self.smmu.page_request(&PageRequest {
                stream_id: self.sid,
                substream_id: pasid,
                addr: Va(first + u64::from(i) * PAGE),
                prg_index: index,
                last: i + 1 == pages,
                read: true,
                write,
                exec: false,
                privileged: false,
            });
        }
        let key = (slot(pasid), index);
        // Poll a little before sleeping: the host often answers within microseconds.
        spin_until(|| matches!(lock(&self.pri).groups.get(&key), Some(Some(_))).then_some(()));
        let mut pri = lock(&self.pri);
        let response = loop {
            if let Some(Some(r)) = pri.groups.get(&key) {
                break Ok(*r);
            }
            match self.wait_pri(pri, deadline) {
                Ok(g) => pri = g,
                Err(e) => {
                    // Give the credits back: the function stops waiting (a response that
                    // still comes is then unexpected, as on hardware after a timeout).
                    pri = lock(&self.pri);
                    break Err(e);
                }
            }
        };
        pri.groups.remove(&key);
        pri.outstanding -= pages;
        drop(pri);
        self.pri_changed.notify_all();
        let response = response?;
        let counter = match response {
            PriResponse::Success => &self.counters.responses_success,
            PriResponse::Invalid => &self.counters.responses_invalid,
            PriResponse::Failure | PriResponse::Reserved(_) => &self.counters.responses_failure,
        };
        bump(counter, 1);
        Ok(response)
    }

    fn free_index(&self, pri: &PriState, pasid: Option<Pasid>) -> Option<u16> {
        (0..PRG_INDEXES)
            .map(|k| (pri.next_index + k) % PRG_INDEXES)
            .find(|&i| !pri.groups.contains_key(&(slot(pasid), i)))
    }

    fn wait_pri<'a>(
        &'a self,
        guard: MutexGuard<'a, PriState>,
        deadline: Deadline,
    ) -> Result<MutexGuard<'a, PriState>, FaultReason> {
        deadline
            .wait(&self.pri_changed, guard)
            .ok_or(FaultReason::Timeout)
    }

    /// Waits until the SMMU resolves the stall `stag`; returns whether to retry.
    fn wait_stall(&self, stag: u16) -> Result<bool, FaultReason> {
        let deadline = Deadline::after(self.config.fault_timeout);
        let mut stalls = lock(&self.stalls);
        loop {
            if let Some(retry) = stalls.remove(&stag) {
                return Ok(retry);
            }
            stalls = deadline
                .wait(&self.stall_changed, stalls)
                .ok_or(FaultReason::Timeout)?;
        }
    }

    /// Runs `f(addr, pos, n)` over the pages of `[addr, addr + len)`, turning a page's
    /// failure into a [`DmaFault`] that reports the bytes done before it.
    fn per_page(
        &self,
        ctx: DmaCtx,
        addr: u64,
        len: u64,
        write: bool,
        mut f: impl FnMut(bool, u64, u64, u64) -> Result<(), FaultReason>,
    ) -> Result<(), DmaFault> {
        let fault = |at: u64, done: u64, reason| {
            bump(&self.counters.faults, 1);
            DmaFault {
                addr: at,
                done,
                write,
                reason,
            }
        };
        let ats = self.check(ctx).map_err(|r| fault(addr, 0, r))?;
        let mut pos = 0;
        while pos < len {
            let at = addr + pos;
            let n = (PAGE - at % PAGE).min(len - pos);
            f(ats, at, pos, n).map_err(|r| fault(at, pos, r))?;
            pos += n;
        }
        Ok(())
    }
}

impl Dma for PciFunction {
    fn read(&self, ctx: DmaCtx, addr: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        let len = buf.len() as u64;
        self.per_page(ctx, addr, len, false, |ats, at, pos, n| {
            let chunk = &mut buf[pos as usize..(pos + n) as usize];
            self.with_page(ctx, ats, at, false, len - pos, |pa| {
                self.ram.read(pa, chunk)
            })?
            .map_err(|_| FaultReason::Memory)?;
            bump(&self.counters.bytes_read, n);
            Ok(())
        })
    }

    fn write(&self, ctx: DmaCtx, addr: u64, data: &[u8]) -> Result<(), DmaFault> {
        let len = data.len() as u64;
        self.per_page(ctx, addr, len, true, |ats, at, pos, n| {
            let chunk = &data[pos as usize..(pos + n) as usize];
            self.with_page(ctx, ats, at, true, len - pos, |pa| {
                self.ram.write(pa, chunk)
            })?
            .map_err(|_| FaultReason::Memory)?;
            bump(&self.counters.bytes_written, n);
            Ok(())
        })
    }

    fn copy(&self, ctx: DmaCtx, src: u64, dst: u64, len: u64) -> Result<(), DmaFault> {
        let ats = self.check(ctx).map_err(|reason| DmaFault {
            addr: src,
            done: 0,
            write: false,
            reason,
        })?;
        if !ats {
            // Untranslated: one transaction at a time, through a bounce buffer.
            return bounce_copy(self, ctx, src, dst, len);
        }
        // Translated: both pages from the ATC, copied under one ATC guard.
        let mut done = 0;
        let mut stuck = 0;
        while done < len {
            let (s, d) = (src + done, dst + done);
            let n = (PAGE - s % PAGE).min(PAGE - d % PAGE).min(len - done);
            let fail = |addr, write, reason| {
                bump(&self.counters.faults, 1);
                DmaFault {
                    addr,
                    done,
                    write,
                    reason,
                }
            };
            let guard = self.atc.access();
            let hit = (
                self.atc_lookup(&guard, ctx, s, false),
                self.atc_lookup(&guard, ctx, d, true),
            );
            if let (Some(se), Some(de)) = hit
                && self.translated_ok(ctx, se.translate(s), false)
                && self.translated_ok(ctx, de.translate(d), true)
            {
                self.ram
                    .copy(se.translate(s), de.translate(d), n)
                    .map_err(|_| fail(s, false, FaultReason::Memory))?;
                drop(guard);
                bump(&self.counters.bytes_read, n);
                bump(&self.counters.bytes_written, n);
                done += n;
                stuck = 0;
                continue;
            }
            drop(guard);
            stuck += 1;
            if stuck > MAX_ATTEMPTS {
                return Err(fail(s, false, FaultReason::Timeout));
            }
            // Bring both translations in (faulting them in as needed), then look again.
            if hit.0.is_none() {
                self.with_page(ctx, true, s, false, len - done, |_| ())
                    .map_err(|r| fail(s, false, r))?;
            }
            if hit.1.is_none() {
                self.with_page(ctx, true, d, true, len - done, |_| ())
                    .map_err(|r| fail(d, true, r))?;
            }
            if hit.0.is_some() && hit.1.is_some() {
                return Err(fail(s, false, FaultReason::Aborted));
            }
            // An ATC too small to hold both pages would loop forever; copy this chunk
            // through a bounce buffer instead.
            if self.caps.atc_entries < 2 {
                let mut buf = vec![0u8; n as usize];
                self.read(ctx, s, &mut buf)
                    .map_err(|f| DmaFault { done, ..f })?;
                self.write(ctx, d, &buf)
                    .map_err(|f| DmaFault { done, ..f })?;
                done += n;
            }
        }
        Ok(())
    }
}

impl PciFunction {
    /// Whether the SMMU lets a Translated transaction to `pa` through.
    fn translated_ok(&self, ctx: DmaCtx, pa: Pa, write: bool) -> bool {
        let txn = Transaction {
            sid: self.sid,
            ssid: ctx.pasid,
            addr: pa.raw(),
            access: if write {
                AccessKind::Write
            } else {
                AccessKind::Read
            },
            privileged: false,
            translated: true,
        };
        matches!(
            self.smmu.translate(&txn),
            TranslateOutcome::Bypassed { .. } | TranslateOutcome::Translated { .. }
        )
    }
}

impl Endpoint for PciFunction {
    fn atc_invalidate(&self, ssid: Option<Pasid>, addr: u64, size: u64) {
        bump(&self.counters.atc_invalidations, 1);
        self.atc.invalidate(ssid, addr, size);
    }

    fn pri_response(&self, ssid: Option<Pasid>, prg_index: u16, response: PriResponse) {
        // Reserved response codes are treated as Response Failure (PCIe §10.4.2.1).
        let response = match response {
            PriResponse::Reserved(_) => PriResponse::Failure,
            r => r,
        };
        let mut pri = lock(&self.pri);
        match pri.groups.get_mut(&(slot(ssid), prg_index)) {
            Some(r @ None) => *r = Some(response),
            // A response for a group that is not outstanding (PCIe §10.4.2.1).
            _ => {
                drop(pri);
                lock(&self.regs).caps.pri_unexpected_index = true;
                return;
            }
        }
        drop(pri);
        if response == PriResponse::Failure {
            // Response Failure stops PRI until software resets it.
            lock(&self.regs).caps.pri_response_failure = true;
        }
        self.pri_changed.notify_all();
    }

    fn stall_resolved(&self, stag: u16, retry: bool) {
        lock(&self.stalls).insert(stag, retry);
        self.stall_changed.notify_all();
    }
}
