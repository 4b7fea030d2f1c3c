//! A machine with accelerators, as the demo and scenario files use it: the platform
//! (RAM, processes, the SMMUv3 model and driver, the SVA core), PCIe functions carrying
//! the compression engine and the data mover, each registered with uacce, and an
//! interrupt pump that can be held so a run knows when a device waits for a page.

use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use sva_addr::{Pasid, StreamId};
use sva_dsa::{Device, DeviceConfig, DsaDriver};
use sva_iommu::{DeviceId, Domain, SvaFeatures};
use sva_pcie::{Capabilities, DmaConfig, PciFunction};
use sva_platform::{Platform, PlatformConfig};
use sva_uacce::Uacce;
use sva_zip::driver::{ZipDriver, ZipDriverConfig};
use sva_zip::{Qm, QmConfig};

/// The kind of accelerator behind a PCIe function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The compression engine (`sva-zip`).
    Zip,
    /// The data mover (`sva-dsa`).
    Dsa,
}

/// One device to plug in.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Name used in reports.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Its StreamID.
    pub sid: StreamId,
    /// Its PCIe capabilities (PASID width, ATS, PRI credits, ATC size).
    pub caps: Capabilities,
    /// Queue depth of the compression engine's queues (ignored for the data mover).
    pub queue_depth: u16,
}

/// Tunables of a device beyond its [`DeviceSpec`], as scenario files set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceOptions {
    /// Engine threads: requests (descriptors) the device runs at once.
    pub engines: usize,
    /// Pages one Page Request Group asks for (`DmaConfig::pri_group_pages`).
    pub pri_group_pages: u32,
    /// A PASID limit below what the device and the SMMU support (`SvaFeatures::max_pasid`).
    pub max_pasid: Option<u32>,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        Self {
            engines: 2,
            pri_group_pages: DmaConfig::default().pri_group_pages,
            max_pasid: None,
        }
    }
}

impl DeviceSpec {
    /// The pair the demo and the soak run use: the compression engine at StreamID 0x300
    /// with ATS and PRI, and the data mover at 0x400 with neither (its faults stall in the
    /// SMMU).
    pub fn demo_pair() -> [DeviceSpec; 2] {
        [
            DeviceSpec {
                name: "hisi_zip".into(),
                kind: Kind::Zip,
                sid: StreamId(0x300),
                caps: Capabilities::default(),
                queue_depth: 64,
            },
            DeviceSpec {
                name: "dsa".into(),
                kind: Kind::Dsa,
                sid: StreamId(0x400),
                caps: Capabilities {
                    ats: false,
                    pri_capacity: 0,
                    ..Capabilities::default()
                },
                queue_depth: 0,
            },
        ]
    }
}

/// A plugged-in device.
pub struct DeviceHandle {
    /// Its description.
    pub spec: DeviceSpec,
    /// The PCIe function it sits behind.
    pub function: Arc<PciFunction>,
    /// Its uacce registration.
    pub uacce: Arc<Uacce>,
    /// The compression engine's queue manager (`None` for the data mover).
    pub qm: Option<Arc<Qm>>,
}

/// The machine.
pub struct World {
    /// The platform.
    pub p: Arc<Platform>,
    /// The devices, in the order given.
    pub devices: Vec<DeviceHandle>,
    hold: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    pump: Option<std::thread::JoinHandle<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.pump.take() {
            let _ = t.join();
        }
    }
}

impl World {
    /// Builds the platform (interrupts are delivered by the world's pump, whatever
    /// `config.irq_thread` says) and plugs in `devices`.
    pub fn new(config: PlatformConfig, devices: &[DeviceSpec]) -> Result<Self> {
        Self::with_options(config, devices, &[])
    }

    /// [`World::new`] with `options[i]` for `devices[i]` (the defaults where `options` is
    /// shorter).
    pub fn with_options(
        mut config: PlatformConfig,
        devices: &[DeviceSpec],
        options: &[DeviceOptions],
    ) -> Result<Self> {
        config.irq_thread = false;
        config.sva = true;
        let p = Arc::new(Platform::new(config)?);
        let sva = p.sva.clone().context("the platform has the SVA core")?;
        let hold = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let pump = {
            let (p, hold, stop) = (p.clone(), hold.clone(), stop.clone());
            std::thread::Builder::new()
                .name("irq-pump".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        if hold.load(Ordering::Acquire) || p.deliver_irqs() == 0 {
                            std::thread::sleep(Duration::from_micros(20));
                        }
                    }
                })?
        };
        let mut world = Self {
            p,
            devices: Vec::new(),
            hold,
            stop,
            pump: Some(pump),
        };
        for (i, spec) in devices.iter().enumerate() {
            if world.devices.iter().any(|d| d.spec.sid == spec.sid) {
                bail!("device {}: StreamID {} is taken", spec.name, spec.sid);
            }
            let opts = options.get(i).copied().unwrap_or_default();
            let id = DeviceId(spec.sid.raw());
            let function = world.p.pci_function(
                spec.sid,
                spec.caps,
                DmaConfig {
                    pri_group_pages: opts.pri_group_pages,
                    ..DmaConfig::default()
                },
            );
            world
                .p
                .enable_sva(
                    &function,
                    SvaFeatures {
                        iopf: true,
                        max_pasid: opts.max_pasid.map(Pasid),
                    },
                )
                .with_context(|| format!("device {}: enabling SVA", spec.name))?;
            let mut qm_handle = None;
            let uacce = match spec.kind {
                Kind::Zip => {
                    // Ring memory lives in the device's DMA domain, like dma_alloc_coherent.
                    let dom = sva.dma_domain()?;
                    sva.attach_domain(id, Domain::Dma(dom.clone()))?;
                    let qm = Arc::new(Qm::new(
                        function.clone(),
                        QmConfig {
                            qp_num: 16,
                            engines: opts.engines.max(1),
                            stop_timeout: Duration::from_secs(10),
                        },
                    ));
                    qm_handle = Some(qm.clone());
                    let driver = ZipDriver::new(
                        qm,
                        world.p.ram.clone(),
                        dom,
                        ZipDriverConfig {
                            sq_depth: spec.queue_depth,
                            cq_depth: spec.queue_depth,
                            page_size: 4096,
                        },
                    )
                    .with_context(|| format!("device {}", spec.name))?;
                    Uacce::register(Arc::new(driver), &sva, id)
                }
                Kind::Dsa => {
                    let config = DeviceConfig {
                        engines: opts.engines.max(1),
                        ..DeviceConfig::default()
                    };
                    let device = Device::new(function.clone(), config)
                        .with_context(|| format!("device {}", spec.name))?;
                    Uacce::register(Arc::new(DsaDriver::new(Arc::new(device))?), &sva, id)
                }
            };
            world.devices.push(DeviceHandle {
                spec: spec.clone(),
                function,
                uacce,
                qm: qm_handle,
            });
        }
        Ok(world)
    }

    /// Holds interrupt delivery (page requests and stalls wait unanswered) or lets it go.
    pub fn hold_irqs(&self, hold: bool) {
        self.hold.store(hold, Ordering::Release);
    }

    /// The device called `name`.
    pub fn device(&self, name: &str) -> Option<&DeviceHandle> {
        self.devices.iter().find(|d| d.spec.name == name)
    }
}
