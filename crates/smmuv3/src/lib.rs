//! A register-accurate Arm SMMUv3 hardware model (IHI 0070), programmed exactly like the real
//! thing: through 32/64-bit MMIO accesses to its two 64 KiB register pages ([`Mmio`]) and
//! through tables and queues in simulated physical memory ([`PhysMemory`]).
//!
//! ```
//! use std::sync::Arc;
//! use sva_physmem::Ram;
//! use sva_smmuv3::{AccessKind, Mmio, Smmu, SmmuConfig, StreamId, Transaction, TranslateOutcome};
//!
//! let ram = Arc::new(Ram::new(16 << 20)?);
//! let smmu = Smmu::new(ram, SmmuConfig::default());
//! assert_eq!(smmu.read32(0x24), 0); // SMMU_CR0ACK: everything disabled at reset
//! // SMMUEN = 0 and GBPA.ABORT = 0: transactions bypass.
//! let txn = Transaction {
//!     sid: StreamId(1),
//!     ssid: None,
//!     addr: 0x1000,
//!     access: AccessKind::Read,
//!     privileged: false,
//!     translated: false,
//! };
//! assert!(matches!(smmu.translate(&txn), TranslateOutcome::Bypassed { .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is modelled
//!
//! - **Register file** (`regs`): IDR0–5, IIDR, AIDR advertising exactly what [`SmmuConfig`]
//!   enables (S1P, AArch64 tables, little-endian walks, COHACC, MSI, SEV, TERM_MODEL = 1,
//!   IDR3.PPS = 1, OAS 48 bits, VAX 48 bits, STALL_MAX 256; IIDR is 0, AIDR says SMMUv3.2);
//!   CR0/CR0ACK, CR1, CR2, GBPA (reset 0x1000: bypass; UPDATE self-clears, a write without
//!   UPDATE is ignored), IRQ_CTRL/IRQ_CTRLACK, GERROR/GERRORN (active = XOR), the IRQ_CFG
//!   registers (MSIs are 32-bit writes of CFG1 to CFG0 when its address is not zero, besides
//!   the wired line), STRTAB_BASE(_CFG), the three queues' BASE/PROD/CONS. Reserved offsets
//!   read as zero and ignore writes; 64-bit registers may be accessed as two 32-bit halves
//!   (a 64-bit access to a pair of 32-bit registers is two 32-bit accesses). Updates complete
//!   at once: CR0ACK and IRQ_CTRLACK follow their registers on the same write, including the
//!   enabling of a queue whose base is unusable (its accesses then abort). Writes are ignored:
//!   STRTAB_BASE(_CFG) and CR2 while SMMUEN is set, CR1 while anything is enabled, a queue's
//!   BASE while that queue is enabled, CMDQ_CONS / EVENTQ_PROD / PRIQ_PROD while their queue
//!   is enabled. PRI registers are RAZ/WI without IDR0.PRI.
//! - **Command queue** (`cmdq`): processed synchronously when CMDQ_PROD is written (or CMDQEN
//!   set, or a CMDQ_ERR acknowledged). An undecodable command stops the queue with CERROR_ILL
//!   (CERROR_ABT if the entry cannot be read), CONS left on it and GERROR.CMDQ_ERR toggled,
//!   until GERRORN acknowledges it; processing then restarts at CONS. CERROR_ILL too for
//!   CMD_TLBI_EL2_* (no IDR0.HYP), CMD_TLBI_EL3_*, CMD_TLBI_S12_VMALL and CMD_TLBI_S2_IPA (no
//!   stage 2), CMD_CFGI_VMS_PIDM (no VMS), and CMD_ATC_INV / CMD_PRI_RESP / CMD_RESUME /
//!   CMD_STALL_TERM when the feature is off. CMD_SYNC: SIG_IRQ writes MSIData to MSIAddress
//!   (if not zero) and raises [`IrqLine::CmdSync`]; SIG_SEV and SIG_NONE signal nothing.
//!   CMD_PREFETCH_CONFIG fills the configuration cache; CMD_PREFETCH_ADDR is a no-op.
//! - **Stage 1 translation with substreams** (`config`, `translate`): linear and 2-level stream
//!   tables, STE (V, Config, S1Fmt, S1ContextPtr, S1CDMax, S1DSS, S1STALLD, EATS, STRW,
//!   PRIVCFG),
//!   linear and 2-level (4K/64K) CD tables, CD (V, T0SZ, TG0, EPD0, ENDI, IPS, TBI0, AFFD,
//!   AA64, HA, HD, S, R, A, ASET, ASID, TTB0, MAIR), walks by [`sva_vmsa::walk`] with HTTU when
//!   IDR0.HTTU and CD.HA/HD allow it. The configuration and translation events are written
//!   to the Event queue (C_BAD_STREAMID only with CR2.RECINVSID; F_* faults only with CD.R or
//!   when stalling); a full queue toggles EVENTQ_PROD.OVFLG and drops the record.
//! - **Caches that really cache**: a bounded configuration cache (STE per StreamID, CD per
//!   StreamID/CD index, FIFO replacement) kept until CMD_CFGI_* (CFGI_STE also drops the CDs
//!   of the stream; invalid structures and failed fetches are not cached), and a bounded IOTLB
//!   (`iotlb`) keyed by (VMID, ASID or global, VA at the leaf size) with CLOCK replacement and
//!   per-ASID ordered indexes, so ASID, VA, VAA and range invalidations touch only the entries
//!   concerned.
//! - **Stall** (`stall`): CD.S = 1 (STE.S1STALLD = 0) makes translation, address size, access
//!   flag and permission faults stall with a STAG until CMD_RESUME or CMD_STALL_TERM, or until
//!   SMMUEN is cleared. Stall records are never discarded for lack of room in the Event queue
//!   and cause no overflow: they wait and are written once the queue has room (§7.4).
//! - **PRI** (`priq`): page requests to the PRI queue; overflow per §8.1 with automatic
//!   Success responses for discarded Last = 1 requests (not for Stop Markers).
//! - **ATS** (`ats`): Translation Requests, Translated traffic checked per CR0.ATSCHK and
//!   STE.EATS, CMD_ATC_INV forwarded to the [`Endpoint`].
//! - **BTM** ([`Smmu::broadcast_tlbi`]): applied unless CR2.PTM = 1 or CD.ASET = 1.
//!
//! # What is not modelled
//!
//! - Stage 2 and nesting: IDR0.S2P is 0, and an STE whose Config enables stage 2 is C_BAD_STE
//!   (as is split-stage ATS). The translation path carries `StreamCfg`/`Ctx` enums so stage 2
//!   can be added as further variants; IOTLB entries already carry a VMID (always 0 now, so
//!   TLBI VMID fields are ignored).
//! - Secure state, Realm, EL2/EL3 stream worlds, VATOS/ATOS, ECMDQ, MPAM, PBHA, VMS, DPT,
//!   AArch32 and big-endian tables, 52-bit addresses, the TTB1 (upper) range of a CD
//!   (addresses above the TTB0 range fault), event merging, E_PAGE_REQUEST, CR2.REC_CFG_ATS
//!   (ATS configuration errors complete with CA and record nothing).
//! - Attribute overrides (except STE.PRIVCFG, which sets the privilege stage 1 checks),
//!   memory types and cache hints: stored but without effect.
//! - TERM_MODEL is 1: terminated transactions always abort (CD.A and CMD_RESUME.Ab ignored).
//! - CD.AFFD is implemented by walking with hardware Access flag management (the flag is set
//!   in memory instead of being ignored).
//! - There is no walk cache: Leaf = 0 and Leaf = 1 invalidations remove the same entries, and
//!   the TTL hint is ignored (the model over-invalidates, which the architecture permits).
//!
//! # Locking and callbacks
//!
//! All state lives behind one mutex. Endpoint messages (ATC invalidation, PRI responses,
//! stall resolutions) and interrupt callbacks are collected while it is held and delivered
//! after it is released, so an interrupt handler may access the registers. Messages produced
//! by a command are delivered before the next command runs, so a later CMD_SYNC completes
//! only after them. Callbacks nested more than four deep on one thread are deferred to the
//! outermost delivery, so a handler that keeps provoking interrupts cannot overflow the
//! stack.

mod ats;
mod cmdq;
mod config;
mod eventq;
mod iotlb;
mod priq;
mod regs;
mod stall;
mod stats;
mod translate;
mod utlb;

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use sva_sync::{Mutex, MutexGuard, RwLock, lock, read, write};

pub use stats::SmmuStats;
pub use sva_addr::{Asid, Pa, Pasid, StreamId, Va};
pub use sva_physmem::PhysMemory;
pub use sva_smmuv3_spec::event::EventId;
pub use sva_smmuv3_spec::mmio::{IrqLine, Mmio};
pub use sva_smmuv3_spec::pri::{PageRequest, PriResponse};
pub use sva_vmsa::{AccessKind, Permissions};
pub use translate::Denied;

/// Translation granules the SMMU supports (SMMU_IDR5.GRAN4K/16K/64K).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granules {
    /// 4 KiB granule.
    pub g4k: bool,
    /// 16 KiB granule.
    pub g16k: bool,
    /// 64 KiB granule.
    pub g64k: bool,
}

impl Default for Granules {
    fn default() -> Self {
        Self {
            g4k: true,
            g16k: true,
            g64k: true,
        }
    }
}

/// Hardware translation table update support (SMMU_IDR0.HTTU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttuLevel {
    /// No hardware updates.
    None,
    /// Access flag updates (CD.HA).
    Access,
    /// Access flag and dirty state updates (CD.HA, CD.HD).
    #[default]
    AccessDirty,
}

/// What the modelled SMMU implements. Out-of-range values are clamped by [`Smmu::new`]
/// (`sidsize` to 16, `ssidsize` to 20, queue sizes to 19, cache sizes to at least 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmmuConfig {
    /// StreamID bits (SMMU_IDR1.SIDSIZE), at most 16.
    pub sidsize: u8,
    /// SubstreamID bits (SMMU_IDR1.SSIDSIZE), at most 20; 0 disables substreams.
    pub ssidsize: u8,
    /// 2-level stream tables (SMMU_IDR0.ST_LEVEL).
    pub st_2level: bool,
    /// 2-level CD tables (SMMU_IDR0.CD2L; only with substreams).
    pub cd_2level: bool,
    /// Supported granules (SMMU_IDR5).
    pub granules: Granules,
    /// PCIe ATS (SMMU_IDR0.ATS).
    pub ats: bool,
    /// PCIe PRI and the PRI queue (SMMU_IDR0.PRI; advertised only together with ATS).
    pub pri: bool,
    /// Stall model (SMMU_IDR0.STALL_MODEL = 0b00, else terminate only).
    pub stall: bool,
    /// HTTU level (SMMU_IDR0.HTTU).
    pub httu: HttuLevel,
    /// Broadcast TLB maintenance (SMMU_IDR0.BTM).
    pub btm: bool,
    /// Range invalidation (SMMU_IDR3.RIL).
    pub range_inv: bool,
    /// 16-bit ASIDs (SMMU_IDR0.ASID16).
    pub asid16: bool,
    /// log2 of the largest Command queue (SMMU_IDR1.CMDQS), at most 19.
    pub cmdq_log2: u8,
    /// log2 of the largest Event queue (SMMU_IDR1.EVENTQS), at most 19.
    pub eventq_log2: u8,
    /// log2 of the largest PRI queue (SMMU_IDR1.PRIQS), at most 19.
    pub priq_log2: u8,
    /// IOTLB capacity in entries.
    pub iotlb_entries: usize,
    /// Configuration cache capacity (STEs plus CDs).
    pub config_cache_entries: usize,
}

impl Default for SmmuConfig {
    fn default() -> Self {
        Self {
            sidsize: 16,
            ssidsize: 20,
            st_2level: true,
            cd_2level: true,
            granules: Granules::default(),
            ats: true,
            pri: true,
            stall: true,
            httu: HttuLevel::AccessDirty,
            btm: true,
            range_inv: true,
            asid16: true,
            cmdq_log2: 12,
            eventq_log2: 12,
            priq_log2: 12,
            iotlb_entries: 4096,
            config_cache_entries: 1024,
        }
    }
}

impl SmmuConfig {
    fn clamped(mut self) -> Self {
        self.sidsize = self.sidsize.min(16);
        self.ssidsize = self.ssidsize.min(20);
        self.cmdq_log2 = self.cmdq_log2.min(19);
        self.eventq_log2 = self.eventq_log2.min(19);
        self.priq_log2 = self.priq_log2.min(19);
        self.iotlb_entries = self.iotlb_entries.max(1);
        self.config_cache_entries = self.config_cache_entries.max(1);
        if self.ssidsize == 0 {
            self.cd_2level = false;
        }
        if !self.ats {
            self.pri = false;
        }
        self
    }
}

/// A transaction a device issues to the SMMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transaction {
    /// StreamID of the device.
    pub sid: StreamId,
    /// SubstreamID (PASID), if the transaction carries one.
    pub ssid: Option<Pasid>,
    /// Input address (a VA under SVA; a PA when `translated`).
    pub addr: u64,
    /// Read, write or instruction fetch.
    pub access: AccessKind,
    /// Privileged (PnU = 1) transaction.
    pub privileged: bool,
    /// An ATS Translated transaction (AT = Translated): `addr` is already a PA.
    pub translated: bool,
}

/// What became of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranslateOutcome {
    /// Translated by stage 1.
    Translated {
        /// Output address.
        pa: Pa,
        /// Size of the leaf (page or block) that translated it.
        size: u64,
        /// Permissions of the leaf.
        perms: Permissions,
    },
    /// Passed through untranslated (GBPA bypass, STE bypass, S1DSS bypass, or an allowed
    /// ATS Translated transaction).
    Bypassed {
        /// Output address (the input address).
        pa: Pa,
    },
    /// Terminated with an abort. `event` is the fault or configuration error that caused it
    /// (whether or not it was recorded), `None` for a silent abort (GBPA.ABORT, STE abort).
    Aborted {
        /// The event number of the cause.
        event: Option<EventId>,
    },
    /// Stalled: the device must wait for [`Endpoint::stall_resolved`] with this tag.
    Stalled {
        /// STAG of the stall event record.
        stag: u16,
    },
}

/// A PCIe ATS Translation Request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtsRequest {
    /// Requester's StreamID.
    pub sid: StreamId,
    /// PASID, if any.
    pub ssid: Option<Pasid>,
    /// Untranslated address.
    pub addr: u64,
    /// No Write (NW): only read permission is requested.
    pub no_write: bool,
    /// Execute permission requested.
    pub exec: bool,
    /// Privileged mode requested.
    pub privileged: bool,
}

/// The ATS Translation Completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtsCompletion {
    /// The translation for the ATC.
    Success {
        /// Translated address of the start of the translated range.
        pa: Pa,
        /// Size of the translated range (the leaf size); the range starts at `addr` aligned
        /// down to it.
        size: u64,
        /// Read permitted.
        read: bool,
        /// Write permitted.
        write: bool,
        /// Execute permitted.
        exec: bool,
        /// Privileged mode translation.
        privileged: bool,
        /// Global mapping (valid for every PASID).
        global: bool,
    },
    /// Success with R = W = 0: no access; the device should use PRI.
    NoAccess,
    /// Unsupported Request: ATS is not allowed for this stream.
    UnsupportedRequest,
    /// Completer Abort: a configuration error.
    CompleterAbort,
}

/// The PCIe function behind a StreamID: messages the SMMU sends downstream.
pub trait Endpoint: Send + Sync {
    /// ATS Invalidation Request for `[addr, addr + size)` (`size == u64::MAX`: everything);
    /// returns when the invalidation completed.
    fn atc_invalidate(&self, ssid: Option<Pasid>, addr: u64, size: u64);
    /// PRG Response message.
    fn pri_response(&self, ssid: Option<Pasid>, prg_index: u16, response: PriResponse);
    /// A stalled transaction was resumed: retry it (`retry`) or it was terminated.
    fn stall_resolved(&self, stag: u16, retry: bool);
}

/// A TLB invalidation broadcast by a PE (TLBI ... IS) and snooped by the SMMU (IDR0.BTM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BroadcastTlbi {
    /// TLBI VAE1IS / VALE1IS (and range forms): the entries of `asid` (and global entries)
    /// covering `[va, va + size)`.
    Va {
        /// ASID.
        asid: Asid,
        /// Start address.
        va: u64,
        /// Size in bytes (at least one page is invalidated).
        size: u64,
        /// Last level only.
        leaf_only: bool,
    },
    /// TLBI ASIDE1IS.
    Asid(Asid),
    /// TLBI VMALLE1IS.
    All,
}

/// A message or interrupt to deliver once the state lock is released.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Notify {
    Irq(IrqLine),
    AtcInv {
        sid: StreamId,
        ssid: Option<Pasid>,
        addr: u64,
        size: u64,
    },
    PriResp {
        sid: StreamId,
        ssid: Option<Pasid>,
        prg_index: u16,
        resp: PriResponse,
    },
    StallResolved {
        sid: StreamId,
        stag: u16,
        retry: bool,
    },
}

/// Everything behind the state lock.
pub(crate) struct State {
    pub(crate) regs: regs::Regs,
    pub(crate) cfg_cache: config::ConfigCache,
    pub(crate) iotlb: iotlb::Iotlb,
    pub(crate) stalls: stall::StallTable,
    /// The counters the state keeps itself (see [`SmmuStats::snapshot`]).
    pub(crate) stats: SmmuStats,
    /// Stall event records waiting for room in the Event queue (§7.4).
    pub(crate) stall_records: std::collections::VecDeque<sva_smmuv3_spec::event::Event>,
    /// A thread is running the command queue.
    pub(crate) cmdq_busy: bool,
    /// Pending notifications, drained after the lock is released.
    pub(crate) pending: Vec<Notify>,
}

type IrqHandler = Arc<dyn Fn(IrqLine) + Send + Sync>;

/// The SMMUv3 model. Shared as `Arc<Smmu>`; all methods take `&self`.
pub struct Smmu {
    mem: Arc<dyn PhysMemory>,
    config: SmmuConfig,
    state: Mutex<State>,
    irq: RwLock<BTreeMap<IrqLine, IrqHandler>>,
    /// Weak links: the SMMU does not own the functions (their owners do, as the bus owns a
    /// PCI device), and a strong link would be a cycle, since a function holds the SMMU it
    /// sends its traffic to. A function whose last owner dropped it is unplugged.
    endpoints: RwLock<BTreeMap<StreamId, Weak<dyn Endpoint>>>,
    /// Notifications raised by callbacks nested too deep, delivered by the outermost
    /// delivery loop (so a handler that keeps provoking interrupts cannot overflow the stack).
    deferred: Mutex<Vec<Notify>>,
    /// The lock-free hit path.
    utlb: utlb::MicroTlb,
    /// Held (shared) by every transaction while it accesses memory; taken exclusively by
    /// CMD_SYNC and broadcast TLB invalidation, so they complete only once no transaction
    /// still uses a translation they removed.
    inflight: RwLock<()>,
}

/// Nesting limit of callback delivery on one thread.
const MAX_DELIVERY_DEPTH: u32 = 4;

sva_sync::thread_local! {
    /// Delivery nesting on this thread, per SMMU (keyed by address), so a callback of one
    /// SMMU that drives another does not count against it.
    static DELIVERY_DEPTH: core::cell::RefCell<BTreeMap<usize, u32>> =
        const { core::cell::RefCell::new(BTreeMap::new()) };
}

/// Adds `delta` to this thread's delivery depth for the SMMU at `key`; returns the new depth.
fn add_depth(key: usize, delta: i32) -> u32 {
    DELIVERY_DEPTH.with(|d| {
        let mut d = d.borrow_mut();
        let v = d.entry(key).or_insert(0);
        *v = v.saturating_add_signed(delta);
        let now = *v;
        if now == 0 {
            d.remove(&key);
        }
        now
    })
}

impl core::fmt::Debug for Smmu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Smmu")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Smmu {
    /// A new SMMU in its reset state, accessing tables and queues in `mem`.
    pub fn new(mem: Arc<dyn PhysMemory>, config: SmmuConfig) -> Arc<Smmu> {
        let config = config.clamped();
        let utlb = utlb::MicroTlb::new();
        let state = State {
            regs: regs::Regs::reset(&config),
            cfg_cache: config::ConfigCache::new(config.config_cache_entries, utlb.generation()),
            iotlb: iotlb::Iotlb::new(config.iotlb_entries, utlb.generation()),
            stalls: stall::StallTable::new(stall::STALL_MAX),
            stats: SmmuStats::default(),
            stall_records: std::collections::VecDeque::new(),
            cmdq_busy: false,
            pending: Vec::new(),
        };
        Arc::new(Smmu {
            utlb,
            inflight: RwLock::new(()),
            mem,
            config,
            state: Mutex::new(state),
            irq: RwLock::new(BTreeMap::new()),
            endpoints: RwLock::new(BTreeMap::new()),
            deferred: Mutex::new(Vec::new()),
        })
    }

    /// The (clamped) configuration.
    pub fn config(&self) -> &SmmuConfig {
        &self.config
    }

    /// Wires interrupt `line` to `handler`. Handlers are called without internal locks held.
    pub fn set_irq_handler(&self, line: IrqLine, handler: Arc<dyn Fn(IrqLine) + Send + Sync>) {
        write(&self.irq).insert(line, handler);
    }

    /// Connects the PCIe function with StreamID `sid`, for as long as its owners keep it.
    pub fn attach_endpoint<E: Endpoint + 'static>(&self, sid: StreamId, ep: &Arc<E>) {
        let weak: Weak<E> = Arc::downgrade(ep);
        write(&self.endpoints).insert(sid, weak as Weak<dyn Endpoint>);
    }

    /// Disconnects the function with StreamID `sid`.
    pub fn detach_endpoint(&self, sid: StreamId) {
        write(&self.endpoints).remove(&sid);
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> SmmuStats {
        let st = self.lock();
        let mut s = st.stats.snapshot(&st.iotlb, &st.cfg_cache);
        // Micro-TLB hits are IOTLB hits as far as anyone can observe.
        s.transactions += self.utlb.hits();
        s.iotlb_hits += self.utlb.hits();
        s.stalled_now = st.stalls.len();
        s
    }

    pub(crate) fn lock(&self) -> StateGuard<'_> {
        StateGuard {
            smmu: self,
            guard: lock(&self.state),
        }
    }

    /// Waits until no transaction is accessing memory with a translation older than now.
    /// Transactions hold the in-flight guard without the state lock, so this may be called
    /// with the state lock held.
    pub(crate) fn quiesce(&self) {
        drop(write(&self.inflight));
    }

    pub(crate) fn mem(&self) -> &dyn PhysMemory {
        &*self.mem
    }

    /// Releases `st` and delivers its pending notifications.
    pub(crate) fn unlock_and_deliver(&self, mut st: StateGuard<'_>) {
        let pending = std::mem::take(&mut st.pending);
        drop(st);
        self.deliver(pending);
    }

    /// Delivers notifications (no internal lock may be held). Nested deliveries beyond
    /// [`MAX_DELIVERY_DEPTH`] are deferred to the outermost one.
    pub(crate) fn deliver(&self, pending: Vec<Notify>) {
        if pending.is_empty() {
            return;
        }
        let key = core::ptr::from_ref(self) as usize;
        let depth = add_depth(key, 1);
        // Restores the depth even if a callback unwinds.
        struct DepthGuard(usize);
        impl Drop for DepthGuard {
            fn drop(&mut self) {
                add_depth(self.0, -1);
            }
        }
        let _depth = DepthGuard(key);
        if depth > MAX_DELIVERY_DEPTH {
            lock(&self.deferred).extend(pending);
        } else {
            self.deliver_now(pending);
            if depth == 1 {
                loop {
                    let more = std::mem::take(&mut *lock(&self.deferred));
                    if more.is_empty() {
                        break;
                    }
                    self.deliver_now(more);
                }
            }
        }
    }

    fn deliver_now(&self, pending: Vec<Notify>) {
        for n in pending {
            match n {
                Notify::Irq(line) => {
                    let handler = read(&self.irq).get(&line).cloned();
                    if let Some(h) = handler {
                        h(line);
                    }
                }
                Notify::AtcInv {
                    sid,
                    ssid,
                    addr,
                    size,
                } => {
                    if let Some(ep) = self.endpoint(sid) {
                        ep.atc_invalidate(ssid, addr, size);
                    }
                }
                Notify::PriResp {
                    sid,
                    ssid,
                    prg_index,
                    resp,
                } => {
                    if let Some(ep) = self.endpoint(sid) {
                        ep.pri_response(ssid, prg_index, resp);
                    }
                }
                Notify::StallResolved { sid, stag, retry } => {
                    if let Some(ep) = self.endpoint(sid) {
                        ep.stall_resolved(stag, retry);
                    }
                }
            }
        }
    }

    fn endpoint(&self, sid: StreamId) -> Option<Arc<dyn Endpoint>> {
        read(&self.endpoints).get(&sid).and_then(Weak::upgrade)
    }
}

impl Mmio for Smmu {
    fn read32(&self, offset: u64) -> u32 {
        let st = self.lock();
        st.regs.read32(offset)
    }

    fn write32(&self, offset: u64, value: u32) {
        let mut st = self.lock();
        let effect = regs::write32(&mut st, offset, value);
        self.after_write(st, effect);
    }

    fn read64(&self, offset: u64) -> u64 {
        let st = self.lock();
        let lo = u64::from(st.regs.read32(offset));
        let hi = u64::from(st.regs.read32(offset.wrapping_add(4)));
        lo | (hi << 32)
    }

    fn write64(&self, offset: u64, value: u64) {
        let mut st = self.lock();
        let effect = regs::write64(&mut st, offset, value);
        self.after_write(st, effect);
    }
}

/// The locked state. Releasing it mirrors SMMUEN into the micro-TLB first, so no register
/// read can observe a change the lock-free hit path has not seen.
pub(crate) struct StateGuard<'a> {
    smmu: &'a Smmu,
    guard: MutexGuard<'a, State>,
}

impl core::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl core::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        self.smmu.utlb.set_enabled(self.guard.regs.cr0().smmuen());
    }
}

impl Smmu {
    fn after_write(&self, mut st: StateGuard<'_>, effect: regs::WriteEffect) {
        if !st.stall_records.is_empty() {
            // Room may have been made (EVENTQ_CONS) or the queue enabled (CR0).
            eventq::flush_stall_records(self, &mut st);
        }
        if effect.kick_cmdq {
            cmdq::run(self, st);
        } else {
            self.unlock_and_deliver(st);
        }
    }
}
