//! Reference Arm SMMUv3 driver.
//!
//! The driver talks to an SMMU exactly as software does on a real machine: 32/64-bit register
//! accesses through a [`Mmio`] handle, tables and queues in simulated physical memory
//! ([`Ram`]), and interrupts that the platform forwards to [`SmmuDriver::handle_irq`]. It
//! never touches the state of an SMMU model, so it works unchanged on any correct SMMUv3.
//!
//! | module | concern |
//! |---|---|
//! | `probe` | ID register decoding, feature negotiation with [`ProbeOptions`], reset sequence |
//! | `cmdq` | Command queue writer, CMD_SYNC completion (CONS polling or MSI), CMDQ_ERR recovery |
//! | `strtab` | Stream table (linear or 2-level), STE construction, attach/detach |
//! | `entry` | hitless-when-possible ordering of STE and CD updates (used-bits method) |
//! | `cdtab` | CD tables (single, linear or 2-level with lazily allocated leaves), CD updates |
//! | `invalidate` | TLBI by ASID / VA (range or per page), ATC_INV, [`Batch`] |
//! | `eventq`, `priq` | Event and PRI queue consumers with overflow handling |
//!
//! Every poll of the hardware is bounded by [`ProbeOptions::poll_timeout`]; a broken or
//! hostile SMMU produces [`Error`]s, never panics.
//!
//! ```
//! use std::sync::Arc;
//! use sva_physmem::{PhysMemory, Ram};
//! use sva_smmuv3::{AccessKind, Smmu, SmmuConfig, Transaction, TranslateOutcome};
//! use sva_smmuv3_driver::{
//!     Asid, CdConfig, CdTableConfig, Pa, Pasid, ProbeOptions, SmmuDriver, StreamConfig,
//!     StreamId, Va,
//! };
//! use sva_smmuv3_spec::mmio::{IrqLine, Mmio};
//! use sva_vmsa::{Attributes, Granule, NoTlb, PageTable, TableConfig};
//!
//! let ram = Arc::new(Ram::new(64 << 20)?);
//! let smmu = Smmu::new(ram.clone() as Arc<dyn PhysMemory>, SmmuConfig::default());
//! let drv = SmmuDriver::probe(smmu.clone() as Arc<dyn Mmio>, ram.clone(), ProbeOptions::default())?;
//! // The platform wires the interrupt lines to the driver.
//! let weak = Arc::downgrade(&drv);
//! smmu.set_irq_handler(IrqLine::EventQueue, Arc::new(move |l| {
//!     if let Some(d) = weak.upgrade() {
//!         d.handle_irq(l);
//!     }
//! }));
//!
//! // A process page table, shared with the SMMU through PASID 3 of stream 1.
//! let pt = PageTable::new(&ram, TableConfig::new(Granule::Size4K, 48, 48)?)?;
//! let attrs = Attributes::AF | Attributes::SH_INNER | Attributes::AP_EL0 | Attributes::NG;
//! pt.map(&ram, Va(0x4000), Pa(0x80_0000), 0x1000, attrs, true, &NoTlb)?;
//! drv.attach(StreamId(1), StreamConfig::s1(CdTableConfig::linear(8)))?;
//! drv.set_cd(StreamId(1), Pasid(3), &CdConfig::new(pt.root(), Asid(7)))?;
//!
//! let dma = Transaction {
//!     sid: StreamId(1),
//!     ssid: Some(Pasid(3)),
//!     addr: 0x4010,
//!     access: AccessKind::Read,
//!     privileged: false,
//!     translated: false,
//! };
//! assert!(matches!(smmu.translate(&dma), TranslateOutcome::Translated { pa: Pa(0x80_0010), .. }));
//!
//! // munmap: clear the PTE, invalidate the IOTLB, and the device faults.
//! pt.unmap(&ram, Va(0x4000), 0x1000, &NoTlb)?;
//! drv.tlbi_va(Asid(7), Va(0x4000), 0x1000, true)?;
//! assert!(matches!(smmu.translate(&dma), TranslateOutcome::Aborted { .. }));
//! assert_eq!(drv.drain_events().len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cdtab;
mod cmdq;
mod entry;
mod error;
mod eventq;
mod invalidate;
mod priq;
mod probe;
mod strtab;
mod sva;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use sva_sync::Mutex;

use sva_physmem::{PhysMemory, Ram};
use sva_smmuv3_spec::command::Opcode;
use sva_smmuv3_spec::event::EventId;

pub use sva_smmuv3_spec::command::Command;
pub use sva_smmuv3_spec::encoding::{AddressSize, Granule};
pub use sva_smmuv3_spec::mmio::{IrqLine, Mmio};
pub use sva_smmuv3_spec::{Cd, Event, PageRequest, Ste};

pub use cdtab::CdConfig;
pub use error::{Error, Result};
pub use invalidate::{
    ATC_INV_SIZE_ALL, Batch, MAX_TLBI_OPS_DIVISOR, atc_inv_command, max_tlbi_ops, tlbi_va_commands,
};
pub use strtab::{CdTableConfig, S1dss, StreamConfig};
pub use sva::{DeviceDesc, FaultPath, SmmuSva};

pub use sva_addr::{Asid, Pa, Pasid, StreamId, Va};
pub use sva_smmuv3_spec::pri::PriResponse;

use cmdq::Cmdq;
use eventq::InQueue;
use strtab::StreamTable;

/// How the driver learns that a CMD_SYNC completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Poll SMMU_CMDQ_CONS until it has moved past the CMD_SYNC.
    #[default]
    PollCons,
    /// CMD_SYNC with CS = SIG_IRQ and an MSI to a driver-owned memory word, polled for the
    /// sync's sequence number (falls back to [`SyncMode::PollCons`] without SMMU_IDR0.MSI).
    Msi,
}

/// What the driver may use; probe enables a feature only when the hardware has it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOptions {
    /// PCIe ATS (STE.EATS, CMD_ATC_INV).
    pub ats: bool,
    /// Set SMMU_CR0.ATSCHK when ATS is enabled.
    pub atschk: bool,
    /// PCIe PRI (PRI queue).
    pub pri: bool,
    /// Stall fault model (CD.S, CMD_RESUME).
    pub stall: bool,
    /// Hardware Access flag / dirty state updates (CD.HA/HD).
    pub httu: bool,
    /// Broadcast TLB maintenance (SMMU_CR2.PTM cleared).
    pub btm: bool,
    /// 2-level Stream table when StreamIDs are many.
    pub two_level_strtab: bool,
    /// 2-level CD tables.
    pub two_level_cd: bool,
    /// Range TLB invalidation (SMMU_IDR3.RIL).
    pub range_inv: bool,
    /// Upper bound on SubstreamID bits.
    pub max_ssid_bits: u8,
    /// Upper bound on StreamID bits.
    pub max_sid_bits: u8,
    /// Upper bound on log2 of Command queue entries.
    pub cmdq_log2: u8,
    /// Upper bound on log2 of Event queue entries.
    pub eventq_log2: u8,
    /// Upper bound on log2 of PRI queue entries.
    pub priq_log2: u8,
    /// CMD_SYNC completion detection.
    pub sync: SyncMode,
    /// Bound of every register poll (acknowledgements, queue space, CMD_SYNC).
    pub poll_timeout: Duration,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            ats: true,
            atschk: true,
            pri: true,
            stall: true,
            httu: true,
            btm: true,
            two_level_strtab: true,
            two_level_cd: true,
            range_inv: true,
            max_ssid_bits: 20,
            max_sid_bits: 32,
            cmdq_log2: 8,
            eventq_log2: 7,
            priq_log2: 7,
            sync: SyncMode::PollCons,
            poll_timeout: Duration::from_secs(1),
        }
    }
}

/// The features probe enabled: what both the hardware and [`ProbeOptions`] allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// ATS enabled.
    pub ats: bool,
    /// SMMU_CR0.ATSCHK set.
    pub atschk: bool,
    /// PRI queue enabled.
    pub pri: bool,
    /// Stalls may be used (STALL_MODEL is not terminate-only and the options allow it).
    pub stall: bool,
    /// The hardware supports stalls at all (STALL_MODEL != terminate-only).
    pub hw_stall: bool,
    /// STALL_MODEL == forced: every CD must have S set.
    pub stall_forced: bool,
    /// Hardware Access flag updates.
    pub ha: bool,
    /// Hardware dirty state updates.
    pub hd: bool,
    /// Broadcast TLB maintenance.
    pub btm: bool,
    /// SMMU_IDR0.HYP: EL2 contexts (TLBI_EL2_ALL at reset).
    pub hyp: bool,
    /// SMMU_IDR0.COHACC.
    pub coherent: bool,
    /// The Stream table is 2-level.
    pub two_level_strtab: bool,
    /// StreamID bits of the level-2 tables (SPLIT), when 2-level.
    pub strtab_split: u8,
    /// 2-level CD tables may be used.
    pub two_level_cd: bool,
    /// Range invalidation is used.
    pub range_inv: bool,
    /// StreamID bits the Stream table covers.
    pub sid_bits: u8,
    /// SubstreamID bits usable (0: no substreams).
    pub ssid_bits: u8,
    /// ASID bits (8 or 16).
    pub asid_bits: u8,
    /// Output address size.
    pub oas: AddressSize,
    /// Supported granules.
    pub granules: Vec<Granule>,
    /// log2 of Command queue entries.
    pub cmdq_log2: u8,
    /// log2 of Event queue entries.
    pub eventq_log2: u8,
    /// log2 of PRI queue entries (when PRI is enabled).
    pub priq_log2: u8,
    /// CMD_SYNC completion by MSI write.
    pub msi_sync: bool,
}

/// Counters of what the driver did and saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Commands submitted, by opcode (CMD_SYNCs included).
    pub commands: BTreeMap<Opcode, u64>,
    /// CMD_SYNCs that completed.
    pub syncs: u64,
    /// Event records read, by event number.
    pub events: BTreeMap<EventId, u64>,
    /// Event records that did not decode.
    pub bad_events: u64,
    /// Event queue overflows seen (EVENTQ_PROD.OVFLG toggled).
    pub event_overflows: u64,
    /// PRI queue entries read.
    pub page_requests: u64,
    /// PRI queue entries that did not decode.
    pub bad_page_requests: u64,
    /// PRI queue overflows seen.
    pub priq_overflows: u64,
    /// Global errors acknowledged, by GERROR field name.
    pub gerrors: BTreeMap<&'static str, u64>,
    /// Command queue errors recovered (CERROR_ILL, CERROR_ABT, CERROR_ATC_INV_SYNC).
    pub cmdq_errors: u64,
    /// Interrupts handled, by line.
    pub irqs: BTreeMap<IrqLine, u64>,
}

/// Receives event records.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;
/// Receives PRI queue entries.
pub type PageRequestSink = Arc<dyn Fn(PageRequest) + Send + Sync>;

/// Where records read from an output queue go.
pub(crate) struct Delivery<T> {
    sink: Option<Arc<dyn Fn(T) + Send + Sync>>,
    collected: Vec<T>,
    deferred: Vec<T>,
}

impl<T> Default for Delivery<T> {
    fn default() -> Self {
        Self {
            sink: None,
            collected: Vec::new(),
            deferred: Vec::new(),
        }
    }
}

impl<T> Delivery<T> {
    /// Registers `sink` (replacing any previous one) and hands it, outside the lock, the
    /// records collected or deferred before.
    fn set_sink(delivery: &Mutex<Self>, sink: Arc<dyn Fn(T) + Send + Sync>) {
        let pending = {
            let mut d = lock(delivery);
            d.sink = Some(Arc::clone(&sink));
            let mut v = core::mem::take(&mut d.collected);
            v.append(&mut d.deferred);
            v
        };
        pending.into_iter().for_each(|r| sink(r));
        drop(sink);
    }

    /// Hands the deferred records to the sink, outside the lock (a sink may re-enter the
    /// driver).
    fn flush_deferred(delivery: &Mutex<Self>) {
        let (sink, records) = {
            let mut d = lock(delivery);
            (d.sink.clone(), core::mem::take(&mut d.deferred))
        };
        if let Some(s) = sink {
            for r in records {
                s(r);
            }
        }
    }
}

/// The SMMUv3 driver of one SMMU instance.
pub struct SmmuDriver {
    mmio: Arc<dyn Mmio>,
    ram: Arc<Ram>,
    features: Features,
    poll_timeout: Duration,
    cmdq: Mutex<Cmdq>,
    eventq: Mutex<InQueue>,
    priq: Mutex<Option<InQueue>>,
    streams: Mutex<StreamTable>,
    asid_granules: Mutex<BTreeMap<u16, Granule>>,
    stats: Mutex<Stats>,
    events: Mutex<Delivery<Event>>,
    page_requests: Mutex<Delivery<PageRequest>>,
    /// Event or PRI queue drains whose records are not yet delivered (see
    /// [`SmmuDriver::flush_queues`]).
    deliveries: std::sync::atomic::AtomicU32,
}

impl core::fmt::Debug for SmmuDriver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SmmuDriver")
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

pub(crate) use sva_sync::{Poll, lock};

sva_sync::thread_local! {
    /// Depth of Command queue critical sections on this thread: interrupts that arrive
    /// synchronously while the driver holds the Command queue defer their sink calls.
    static IN_CMDQ: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

pub(crate) fn in_cmdq() -> bool {
    IN_CMDQ.with(|c| c.get() > 0)
}

pub(crate) struct CmdqSection;

impl CmdqSection {
    pub(crate) fn enter() -> Self {
        IN_CMDQ.with(|c| c.set(c.get() + 1));
        Self
    }
}

impl Drop for CmdqSection {
    fn drop(&mut self) {
        IN_CMDQ.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

impl SmmuDriver {
    /// The features probe enabled.
    #[must_use]
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// The RAM holding the driver's tables and queues.
    #[must_use]
    pub fn ram(&self) -> &Arc<Ram> {
        &self.ram
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }

    /// Registers the receiver of event records (replacing any previous one). Records
    /// collected before are delivered to it at once.
    pub fn set_event_sink(&self, sink: EventSink) {
        Delivery::set_sink(&self.events, sink);
    }

    /// Registers the receiver of PRI queue entries (replacing any previous one).
    pub fn set_page_request_sink(&self, sink: PageRequestSink) {
        Delivery::set_sink(&self.page_requests, sink);
    }

    /// Takes the event records collected while no sink was registered.
    pub fn drain_events(&self) -> Vec<Event> {
        core::mem::take(&mut lock(&self.events).collected)
    }

    /// Takes the PRI queue entries collected while no sink was registered.
    pub fn drain_page_requests(&self) -> Vec<PageRequest> {
        core::mem::take(&mut lock(&self.page_requests).collected)
    }

    /// Interrupt entry point: the platform calls it for each SMMU interrupt line.
    ///
    /// Event and PRI queue interrupts drain their queue; the global error interrupt
    /// acknowledges GERROR conditions (recovering Command queue errors when no command
    /// submission is in progress, otherwise the submitter does it).
    pub fn handle_irq(&self, line: IrqLine) {
        *lock(&self.stats).irqs.entry(line).or_default() += 1;
        match line {
            IrqLine::EventQueue => self.process_eventq(),
            IrqLine::PriQueue => self.process_priq(),
            IrqLine::GlobalError => self.process_gerror(),
            IrqLine::CmdSync => {}
        }
    }

    /// Reads the Event and PRI queues now and waits until records other threads have read
    /// from them are delivered too: when this returns, every record the SMMU had written
    /// before the call has reached its sink (or the collected records). Bounded by
    /// [`ProbeOptions::poll_timeout`].
    pub fn flush_queues(&self) -> Result<()> {
        self.process_eventq();
        self.process_priq();
        let mut poll = Poll::new(self.poll_timeout);
        while self.deliveries.load(std::sync::atomic::Ordering::Acquire) > 0 {
            if !poll.wait() {
                return Err(Error::Timeout(
                    "Event and PRI queue records to be delivered",
                ));
            }
        }
        Ok(())
    }

    /// Delivers records whose sink call was deferred because they arrived inside a Command
    /// queue critical section of this thread.
    pub(crate) fn flush_deferred(&self) {
        if in_cmdq() {
            return;
        }
        Delivery::flush_deferred(&self.events);
        Delivery::flush_deferred(&self.page_requests);
    }

    fn mem(&self) -> &dyn PhysMemory {
        &*self.ram
    }

    pub(crate) fn r32(&self, off: u32) -> u32 {
        self.mmio.read32(u64::from(off))
    }

    pub(crate) fn w32(&self, off: u32, v: u32) {
        self.mmio.write32(u64::from(off), v);
    }

    pub(crate) fn w64(&self, off: u32, v: u64) {
        self.mmio.write64(u64::from(off), v);
    }

    /// Allocates a zeroed, naturally aligned block of at least `bytes` (4 KiB minimum).
    pub(crate) fn alloc(&self, bytes: u64) -> Result<Pa> {
        let size = bytes
            .max(4096)
            .checked_next_power_of_two()
            .ok_or(Error::InvalidArgument("allocation size overflows"))?;
        Ok(self.ram.alloc(size)?)
    }

    pub(crate) fn write_words(&self, pa: Pa, words: &[u64]) -> Result<()> {
        for (i, w) in words.iter().enumerate() {
            self.mem().store_u64(pa + 8 * i as u64, *w)?;
        }
        Ok(())
    }

    /// Writes an entry update plan (see `entry`): for each step, the words that change
    /// (words 1..7 before word 0), then `cfgi` and a CMD_SYNC; `last` is added to the final
    /// step's batch (or submitted alone when nothing changed).
    pub(crate) fn write_entry_plan(
        &self,
        addr: Pa,
        current: &entry::Words,
        plan: &[entry::Words],
        cfgi: Command,
        last: &[Command],
    ) -> Result<()> {
        let mut state = *current;
        for (n, step) in plan.iter().enumerate() {
            for i in (1..8).chain(core::iter::once(0)) {
                if step[i] != state[i] {
                    self.write_words(addr + 8 * i as u64, &[step[i]])?;
                }
            }
            state = *step;
            if n + 1 == plan.len() {
                let mut cmds = Vec::with_capacity(1 + last.len());
                cmds.push(cfgi);
                cmds.extend_from_slice(last);
                self.submit_batch(&cmds)?;
            } else {
                self.submit_batch(&[cfgi])?;
            }
        }
        if plan.is_empty() && !last.is_empty() {
            self.submit_batch(last)?;
        }
        Ok(())
    }

    pub(crate) fn read_words<const N: usize>(&self, pa: Pa) -> Result<[u64; N]> {
        let mut out = [0u64; N];
        for (i, w) in out.iter_mut().enumerate() {
            *w = self.mem().load_u64(pa + 8 * i as u64)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SmmuDriver>();
        check::<Error>();
        check::<Stats>();
        check::<Features>();
    }
}
