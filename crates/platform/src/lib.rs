//! One simulated machine: RAM, the CPUs' address spaces ([`sva_mm::System`]), an SMMUv3
//! model and the reference driver that programs it, with the wiring a board would provide:
//! interrupt lines from the SMMU to the driver and the CPUs' broadcast TLB maintenance to
//! the SMMU (BTM). [`TestEndpoint`] is a scriptable device for tests.
//!
//! With [`PlatformConfig::sva`] the SVA core ([`sva_iommu::Sva`]) sits on the driver: page
//! requests from the PRI queue and stall events go to its fault queue, and its responses go
//! back as CMD_PRI_RESP / CMD_RESUME.
//!
//! Interrupts never run inside the MMIO write that raised them, as on hardware: the SMMU
//! raising a line marks it pending. By default [`Platform::deliver_irqs`] then runs the
//! driver's handler on the caller's thread, which keeps runs deterministic; with
//! [`PlatformConfig::irq_thread`] a thread delivers them as they come.

mod endpoint;

pub use endpoint::{DmaError, Message, TestEndpoint};

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use sva_iommu::{DeviceId, PageRequest, Sva};
use sva_mm::{MmConfig, System, TlbSnooper, Tlbi};
use sva_pcie::{Capabilities, DmaConfig, PciFunction};
use sva_physmem::Ram;
use sva_smmuv3::{BroadcastTlbi, IrqLine, Smmu, SmmuConfig};
use sva_smmuv3_driver::{DeviceDesc, FaultPath, ProbeOptions, SmmuDriver, SmmuSva};
use sva_smmuv3_spec::event::Event;
use sva_smmuv3_spec::pri::PriResponse;
use sva_sync::thread::{self, JoinHandle};
use sva_sync::{Condvar, Mutex, lock, spin_until, wait};

/// Errors building a platform.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RAM could not be created.
    #[error(transparent)]
    Memory(#[from] sva_physmem::Error),
    /// The CPU side could not be created.
    #[error(transparent)]
    Mm(#[from] sva_mm::Error),
    /// The driver failed to probe the SMMU.
    #[error("SMMU probe failed: {0}")]
    Probe(#[from] sva_smmuv3_driver::Error),
}

/// Errors enabling SVA for a PCIe function.
#[derive(Debug, thiserror::Error)]
pub enum SvaError {
    /// The platform was built without the SVA core.
    #[error("the platform has no SVA core")]
    NoCore,
    /// The core refused.
    #[error(transparent)]
    Core(#[from] sva_iommu::Error),
    /// The function refused a capability setting.
    #[error(transparent)]
    Pci(#[from] sva_pcie::Error),
}

/// What to build.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// RAM size in bytes.
    pub ram_size: u64,
    /// CPU address spaces.
    pub mm: MmConfig,
    /// The SMMU's implemented features.
    pub smmu: SmmuConfig,
    /// What the driver asks for.
    pub probe: ProbeOptions,
    /// Put the SVA core on the driver and route I/O page faults to it.
    pub sva: bool,
    /// Deliver interrupts on a thread of their own instead of [`Platform::deliver_irqs`].
    pub irq_thread: bool,
    /// Fault-handling threads of the SVA core.
    pub iopf_workers: usize,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        Self {
            ram_size: 1 << 30,
            mm: MmConfig::default(),
            smmu: SmmuConfig::default(),
            probe: ProbeOptions::default(),
            sva: true,
            irq_thread: false,
            iopf_workers: 2,
        }
    }
}

/// The CPUs' TLBI broadcast reaching the SMMU (BTM).
struct Btm(Arc<Smmu>);

impl TlbSnooper for Btm {
    fn tlbi(&self, op: &Tlbi) {
        self.0.broadcast_tlbi(match *op {
            Tlbi::Va {
                asid,
                va,
                size,
                leaf_only,
            } => BroadcastTlbi::Va {
                asid,
                va: va.raw(),
                size,
                leaf_only,
            },
            Tlbi::Asid(asid) => BroadcastTlbi::Asid(asid),
            Tlbi::All => BroadcastTlbi::All,
        });
    }
}

/// A machine with one SMMU.
pub struct Platform {
    /// Simulated RAM.
    pub ram: Arc<Ram>,
    /// Processes and their address spaces.
    pub system: System,
    /// The SMMU model (hardware).
    pub smmu: Arc<Smmu>,
    /// The driver, bound to the SMMU through MMIO, memory and interrupts only.
    pub driver: Arc<SmmuDriver>,
    /// The SVA core's view of the driver (device descriptions go here).
    pub iommu: Arc<SmmuSva>,
    /// The SVA core, when configured.
    pub sva: Option<Arc<Sva>>,
    irqs: Arc<Irqs>,
    events: Arc<Mutex<Vec<Event>>>,
    irq_thread: Option<JoinHandle<()>>,
}

/// Pending interrupt lines.
#[derive(Default)]
struct Irqs {
    pending: Mutex<BTreeSet<IrqLine>>,
    raised: Condvar,
    stop: AtomicBool,
}

impl core::fmt::Debug for Platform {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Platform").finish_non_exhaustive()
    }
}

impl Platform {
    /// Builds the machine and probes the SMMU.
    pub fn new(config: PlatformConfig) -> Result<Self, Error> {
        let ram = Arc::new(Ram::new(config.ram_size)?);
        let system = System::new(ram.clone(), config.mm)?;
        let smmu = Smmu::new(ram.clone(), config.smmu);
        let irqs: Arc<Irqs> = Arc::default();
        for line in [
            IrqLine::EventQueue,
            IrqLine::PriQueue,
            IrqLine::GlobalError,
            IrqLine::CmdSync,
        ] {
            let irqs = irqs.clone();
            smmu.set_irq_handler(
                line,
                Arc::new(move |l| {
                    lock(&irqs.pending).insert(l);
                    irqs.raised.notify_all();
                }),
            );
        }
        system.tlb().subscribe(Arc::new(Btm(smmu.clone())));
        let driver = SmmuDriver::probe(smmu.clone(), ram.clone(), config.probe)?;
        let iommu = SmmuSva::new(driver.clone());
        let events: Arc<Mutex<Vec<Event>>> = Arc::default();
        let sva = config.sva.then(|| {
            Arc::new(Sva::new(
                iommu.clone(),
                config.iopf_workers,
                ram.clone(),
                system.asid_allocator(),
            ))
        });
        if let Some(core) = &sva {
            Self::route_faults(&driver, core, &events);
        }
        let irq_thread = config.irq_thread.then(|| {
            let irqs = irqs.clone();
            let driver = Arc::downgrade(&driver);
            thread::Builder::new()
                .name("smmu-irq".into())
                .spawn(move || irq_loop(&irqs, &driver))
                .expect("spawning the interrupt thread")
        });
        Ok(Self {
            ram,
            system,
            smmu,
            driver,
            iommu,
            sva,
            irqs,
            events,
            irq_thread,
        })
    }

    /// Page requests and stall events go to the core; other events are kept for
    /// [`Platform::take_events`].
    fn route_faults(driver: &Arc<SmmuDriver>, core: &Arc<Sva>, events: &Arc<Mutex<Vec<Event>>>) {
        let weak_core: Weak<Sva> = Arc::downgrade(core);
        let weak_drv = Arc::downgrade(driver);
        driver.set_page_request_sink(Arc::new(move |pr: sva_smmuv3_spec::pri::PageRequest| {
            match (pr.substream_id, weak_core.upgrade()) {
                (Some(pasid), Some(core)) => core.report_fault(PageRequest {
                    device: DeviceId(pr.stream_id.raw()),
                    pasid,
                    group: pr.prg_index,
                    last: pr.last,
                    addr: pr.addr,
                    read: pr.read,
                    write: pr.write,
                    exec: pr.exec,
                    privileged: pr.privileged,
                }),
                // Without a PASID there is no address space to fault in.
                _ => {
                    if pr.last
                        && let Some(d) = weak_drv.upgrade()
                    {
                        let _ =
                            d.pri_response(pr.stream_id, None, pr.prg_index, PriResponse::Invalid);
                    }
                }
            }
        }));
        let weak_core: Weak<Sva> = Arc::downgrade(core);
        let weak_drv = Arc::downgrade(driver);
        let events = events.clone();
        driver.set_event_sink(Arc::new(move |ev: Event| {
            lock(&events).push(ev);
            if !ev.stall {
                return;
            }
            match (ev.substream_id, weak_core.upgrade()) {
                (Some(pasid), Some(core)) => core.report_fault(PageRequest {
                    device: DeviceId(ev.stream_id.raw()),
                    pasid,
                    group: ev.stag,
                    last: true,
                    addr: ev.input_addr.align_down(4096),
                    read: ev.rnw,
                    write: !ev.rnw,
                    exec: ev.ind,
                    privileged: ev.pnu,
                }),
                _ => {
                    if let Some(d) = weak_drv.upgrade() {
                        let _ = d.resume(ev.stream_id, ev.stag, false);
                    }
                }
            }
        }));
    }

    /// Events the core did not consume (with the core configured), oldest first.
    pub fn take_events(&self) -> Vec<Event> {
        core::mem::take(&mut *lock(&self.events))
    }

    /// Describes a device to the driver and returns a scriptable endpoint for it.
    pub fn device(&self, sid: sva_addr::StreamId, desc: DeviceDesc) -> Arc<TestEndpoint> {
        self.iommu.describe(DeviceId(sid.raw()), desc);
        self.endpoint(sid)
    }

    /// Runs the driver's handler for every pending interrupt line, until none is pending
    /// (handling one may raise another). Returns how many were delivered.
    pub fn deliver_irqs(&self) -> usize {
        let mut n = 0;
        // Bounded: a handler that keeps re-raising its line cannot hang the caller.
        for _ in 0..64 {
            let lines = core::mem::take(&mut *lock(&self.irqs.pending));
            if lines.is_empty() {
                break;
            }
            for line in lines {
                self.driver.handle_irq(line);
                n += 1;
            }
        }
        n
    }

    /// Lines raised and not yet delivered.
    pub fn pending_irqs(&self) -> Vec<IrqLine> {
        lock(&self.irqs.pending).iter().copied().collect()
    }

    /// Plugs a PCIe function in at `sid` and tells the driver what it is (PRI devices
    /// fault through PRI, others through stall; ATS as the function has it). Its
    /// capabilities start disabled: see [`Platform::enable_sva`].
    pub fn pci_function(
        &self,
        sid: sva_addr::StreamId,
        caps: Capabilities,
        config: DmaConfig,
    ) -> Arc<PciFunction> {
        let fault_path = if caps.pri_capacity > 0 && self.smmu.config().pri {
            FaultPath::Pri
        } else {
            FaultPath::Stall
        };
        self.iommu.describe(
            DeviceId(sid.raw()),
            DeviceDesc {
                fault_path,
                ats: caps.ats && self.smmu.config().ats,
            },
        );
        PciFunction::new(&self.smmu, &self.ram, sid, caps, config)
    }

    /// What a device driver does to use SVA with a function, in the order PCIe requires:
    /// the IOMMU side first ([`Sva::enable_device`], PASIDs capped at the function's Max
    /// PASID Width), then PASID, ATS (STU 4 KiB) and PRI (allocation = the function's
    /// capacity) as far as both the function and the SMMU have them. Enabling may
    /// interrupt the function's DMA in flight.
    pub fn enable_sva(
        &self,
        function: &PciFunction,
        features: sva_iommu::SvaFeatures,
    ) -> Result<(), SvaError> {
        let sva = self.sva.as_ref().ok_or(SvaError::NoCore)?;
        let caps = function.capabilities();
        // The function cannot send a PASID wider than its capability says.
        let width_max = sva_addr::Pasid((1u32 << caps.pasid_width.min(20)) - 1);
        let features = sva_iommu::SvaFeatures {
            max_pasid: Some(features.max_pasid.map_or(width_max, |m| m.min(width_max))),
            ..features
        };
        sva.enable_device(DeviceId(function.sid().raw()), features)?;
        let cfg = self.smmu.config();
        let enable = || -> Result<(), sva_pcie::Error> {
            function.enable_pasid(false, false)?;
            if caps.ats && cfg.ats {
                function.enable_ats(0)?;
                if features.iopf && caps.pri_capacity > 0 && cfg.pri {
                    function.enable_pri(caps.pri_capacity)?;
                }
            }
            Ok(())
        };
        if let Err(e) = enable() {
            let _ = sva.disable_device(DeviceId(function.sid().raw()));
            return Err(e.into());
        }
        Ok(())
    }

    /// A function at `sid` with the default DMA tunables, enabled for SVA with I/O page
    /// faults: what most device drivers set up.
    pub fn sva_function(
        &self,
        sid: sva_addr::StreamId,
        caps: Capabilities,
    ) -> Result<Arc<PciFunction>, SvaError> {
        let f = self.pci_function(sid, caps, DmaConfig::default());
        self.enable_sva(
            &f,
            sva_iommu::SvaFeatures {
                iopf: true,
                max_pasid: None,
            },
        )?;
        Ok(f)
    }

    /// Undoes [`Platform::enable_sva`]: PRI, ATS, PASID off, then the IOMMU side.
    pub fn disable_sva(&self, function: &PciFunction) -> Result<(), SvaError> {
        let sva = self.sva.as_ref().ok_or(SvaError::NoCore)?;
        function.disable_pri();
        function.disable_ats()?;
        function.disable_pasid()?;
        sva.disable_device(DeviceId(function.sid().raw()))?;
        Ok(())
    }

    /// A scriptable endpoint at `sid`.
    pub fn endpoint(&self, sid: sva_addr::StreamId) -> Arc<TestEndpoint> {
        TestEndpoint::attach(&self.smmu, &self.ram, sid)
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        {
            // Under the lock the interrupt thread checks `stop` with: stored outside it, the
            // store and the notification could fall between its check and its wait, and it
            // would sleep forever.
            let _pending = lock(&self.irqs.pending);
            self.irqs.stop.store(true, Ordering::Release);
        }
        self.irqs.raised.notify_all();
        if let Some(t) = self.irq_thread.take() {
            let _ = t.join();
        }
    }
}

/// The interrupt thread: delivers pending lines as they are raised.
fn irq_loop(irqs: &Irqs, driver: &Weak<SmmuDriver>) {
    loop {
        // Poll a little before sleeping: an interrupt that follows soon is taken without
        // a thread wake-up.
        spin_until(|| {
            (!lock(&irqs.pending).is_empty() || irqs.stop.load(Ordering::Acquire)).then_some(())
        });
        let lines = {
            let mut pending = lock(&irqs.pending);
            while pending.is_empty() && !irqs.stop.load(Ordering::Acquire) {
                pending = wait(&irqs.raised, pending);
            }
            if irqs.stop.load(Ordering::Acquire) {
                return;
            }
            core::mem::take(&mut *pending)
        };
        let Some(driver) = driver.upgrade() else {
            return;
        };
        for line in lines {
            driver.handle_irq(line);
        }
    }
}
