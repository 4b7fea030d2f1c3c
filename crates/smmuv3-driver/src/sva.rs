//! The SVA core's view of this driver: [`SmmuSva`] implements [`IommuDriver`] on top of the
//! STE/CD/command API. SubstreamID 0 stays the non-PASID context; PASIDs are SSIDs from 1.

use crate::{CdConfig, CdTableConfig, PriResponse, S1dss, SmmuDriver, StreamConfig};
use std::collections::BTreeMap;
use std::sync::Arc;
use sva_addr::{Asid, Pasid, StreamId, Va};
use sva_iommu::{
    DeviceId, DomainConfig, DriverError, IommuDriver, PageResponse, SvaCaps, SvaContext,
};
use sva_smmuv3_spec::encoding::{AddressSize, Granule};
use sva_sync::{Mutex, lock};
use sva_vmsa::TableConfig;

/// How a device's I/O page faults reach the SMMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPath {
    /// PCIe Page Request Interface: requests in the PRI queue, answered by CMD_PRI_RESP.
    Pri,
    /// SMMU stall: faulting transactions wait, answered by CMD_RESUME.
    Stall,
}

/// Per-device facts the platform (firmware) tells the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceDesc {
    /// How faults are reported.
    pub fault_path: FaultPath,
    /// The device has an ATC (PCIe ATS).
    pub ats: bool,
}

/// What the adapter has made of one device.
struct DeviceState {
    desc: DeviceDesc,
    /// SVA enabled, with I/O page faults or not.
    sva: Option<bool>,
    domain: DomainConfig,
}

/// [`IommuDriver`] for the SMMUv3 driver: the DeviceId is the StreamID.
pub struct SmmuSva {
    driver: Arc<SmmuDriver>,
    descs: Mutex<BTreeMap<DeviceId, DeviceDesc>>,
    devices: Mutex<BTreeMap<DeviceId, DeviceState>>,
}

impl core::fmt::Debug for SmmuSva {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SmmuSva").finish_non_exhaustive()
    }
}

impl From<crate::Error> for DriverError {
    fn from(e: crate::Error) -> Self {
        DriverError::Hardware(e.to_string())
    }
}

fn sid(device: DeviceId) -> StreamId {
    StreamId(device.0)
}

/// The granule of the SMMU's CD.TG0 for a table granule.
fn granule(g: sva_vmsa::Granule) -> Granule {
    match g {
        sva_vmsa::Granule::Size4K => Granule::Size4K,
        sva_vmsa::Granule::Size16K => Granule::Size16K,
        sva_vmsa::Granule::Size64K => Granule::Size64K,
    }
}

impl SmmuSva {
    /// SVA on top of a probed driver.
    pub fn new(driver: Arc<SmmuDriver>) -> Arc<Self> {
        Arc::new(Self {
            driver,
            descs: Mutex::new(BTreeMap::new()),
            devices: Mutex::new(BTreeMap::new()),
        })
    }

    /// Describes a device behind the SMMU (what firmware or the PCIe capabilities say).
    pub fn describe(&self, device: DeviceId, desc: DeviceDesc) {
        lock(&self.descs).insert(device, desc);
    }

    /// The driver underneath.
    pub fn driver(&self) -> &Arc<SmmuDriver> {
        &self.driver
    }

    fn desc(&self, device: DeviceId) -> Result<DeviceDesc, DriverError> {
        lock(&self.descs)
            .get(&device)
            .copied()
            .ok_or(DriverError::UnknownDevice(device))
    }

    fn uses_ats(&self, device: DeviceId) -> bool {
        lock(&self.devices)
            .get(&device)
            .is_some_and(|d| d.desc.ats && self.driver.features().ats)
    }

    /// The stream configuration for a device's state: SSID 0 follows the domain, PASIDs
    /// (SSID 1 and up) exist only with SVA.
    fn stream_config(&self, st: &DeviceState) -> StreamConfig {
        let f = self.driver.features();
        let ats = st.desc.ats && f.ats;
        let Some(iopf) = st.sva else {
            return match st.domain {
                DomainConfig::Blocked => StreamConfig::Abort,
                DomainConfig::Identity => StreamConfig::Bypass,
                DomainConfig::Dma(_) => StreamConfig::S1 {
                    cd_table: CdTableConfig::linear(0),
                    s1dss: S1dss::Terminate,
                    stall_disable: true,
                    ats,
                },
            };
        };
        let bits = f.ssid_bits;
        let cd_table = if f.two_level_cd && bits > 10 {
            CdTableConfig {
                max_ssid_bits: bits,
                two_level: true,
            }
        } else {
            CdTableConfig::linear(bits.min(10))
        };
        StreamConfig::S1 {
            cd_table,
            s1dss: match st.domain {
                DomainConfig::Blocked => S1dss::Terminate,
                DomainConfig::Identity => S1dss::Bypass,
                DomainConfig::Dma(_) => S1dss::Ssid0,
            },
            stall_disable: !(iopf && st.desc.fault_path == FaultPath::Stall),
            ats,
        }
    }

    /// Programs the stream (and CD 0 for a DMA domain) from the device's state.
    fn apply(&self, device: DeviceId, st: &DeviceState) -> Result<(), DriverError> {
        self.driver.attach(sid(device), self.stream_config(st))?;
        if let DomainConfig::Dma(ctx) = st.domain {
            self.driver
                .set_cd(sid(device), Pasid(0), &self.cd(ctx, false))?;
        }
        Ok(())
    }

    /// The CD of a context.
    fn cd(&self, ctx: SvaContext, stall: bool) -> CdConfig {
        let f = self.driver.features();
        let mut cd = CdConfig::new(ctx.table_root, ctx.asid);
        cd.t0sz = ctx.config.t0sz();
        cd.tg0 = granule(ctx.config.granule());
        cd.ips = AddressSize::from_bit_count(ctx.config.oa_bits()).unwrap_or(f.oas);
        cd.mair = ctx.mair;
        cd.ha = f.ha;
        cd.hd = f.hd;
        cd.stall = stall;
        cd
    }

    /// The device's state, created from its description on first use.
    fn with_state<T>(
        &self,
        device: DeviceId,
        f: impl FnOnce(&mut DeviceState) -> Result<T, DriverError>,
    ) -> Result<T, DriverError> {
        let desc = self.desc(device)?;
        let mut devices = lock(&self.devices);
        let st = devices.entry(device).or_insert(DeviceState {
            desc,
            sva: None,
            domain: DomainConfig::Blocked,
        });
        f(st)
    }
}

impl IommuDriver for SmmuSva {
    fn min_pasid(&self) -> Pasid {
        Pasid(1)
    }

    fn sva_caps(&self, device: DeviceId) -> Result<SvaCaps, DriverError> {
        let desc = self.desc(device)?;
        let f = self.driver.features();
        let iopf = match desc.fault_path {
            FaultPath::Pri => f.pri,
            FaultPath::Stall => f.stall,
        };
        Ok(SvaCaps {
            pasid_bits: f.ssid_bits,
            iopf,
            btm: f.btm,
        })
    }

    fn supports_tables(&self, config: &TableConfig) -> bool {
        let f = self.driver.features();
        f.granules.contains(&granule(config.granule()))
            && config.ia_bits() <= 48
            && config.oa_bits() <= f.oas.bits()
    }

    fn set_domain(&self, device: DeviceId, domain: &DomainConfig) -> Result<(), DriverError> {
        if let DomainConfig::Dma(ctx) = domain
            && !self.supports_tables(&ctx.config)
        {
            return Err(DriverError::Unsupported("the domain's table format"));
        }
        self.with_state(device, |st| {
            let previous = st.domain;
            st.domain = *domain;
            self.apply(device, st).inspect_err(|_| st.domain = previous)
        })
    }

    fn enable_sva(&self, device: DeviceId, iopf: bool) -> Result<(), DriverError> {
        self.with_state(device, |st| {
            st.sva = Some(iopf);
            self.apply(device, st).inspect_err(|_| st.sva = None)
        })
    }

    fn disable_sva(&self, device: DeviceId) -> Result<(), DriverError> {
        self.with_state(device, |st| {
            st.sva = None;
            self.apply(device, st)
        })
    }

    fn set_pasid(
        &self,
        device: DeviceId,
        pasid: Pasid,
        ctx: &SvaContext,
    ) -> Result<(), DriverError> {
        let stall = {
            let devices = lock(&self.devices);
            let d = devices
                .get(&device)
                .ok_or(DriverError::UnknownDevice(device))?;
            d.sva == Some(true) && d.desc.fault_path == FaultPath::Stall
        };
        if AddressSize::from_bit_count(ctx.config.oa_bits()).is_none() {
            return Err(DriverError::Unsupported("the address space's output size"));
        }
        Ok(self
            .driver
            .set_cd(sid(device), pasid, &self.cd(*ctx, stall))?)
    }

    fn quiet_pasid(&self, device: DeviceId, pasid: Pasid) -> Result<(), DriverError> {
        self.driver
            .quiet_cd(sid(device), pasid)
            .map_err(DriverError::from)
    }

    fn clear_pasid(&self, device: DeviceId, pasid: Pasid) -> Result<(), DriverError> {
        self.driver
            .clear_cd(sid(device), pasid)
            .map_err(DriverError::from)
    }

    fn invalidate(
        &self,
        asid: Asid,
        start: Va,
        end: Va,
        targets: &[(DeviceId, Pasid)],
        cpu_shared: bool,
    ) -> Result<(), DriverError> {
        let size = end - start;
        let mut batch = self.driver.batch();
        // With BTM the CPU's own broadcast TLBI already reached the IOTLB.
        if !(cpu_shared && self.driver.features().btm) {
            batch.tlbi_va(asid, start, size, false);
        }
        for &(device, pasid) in targets {
            if self.uses_ats(device) {
                // PASID 0 is the device's DMA without PASID.
                let ssid = Some(pasid).filter(|p| p.0 != 0);
                batch.atc_inv(sid(device), ssid, start, size);
            }
        }
        if batch.commands().is_empty() {
            return Ok(());
        }
        batch.submit().map_err(DriverError::from)
    }

    fn flush_page_requests(&self, _device: DeviceId) -> Result<(), DriverError> {
        self.driver.flush_queues().map_err(DriverError::from)
    }

    fn page_response(
        &self,
        device: DeviceId,
        pasid: Pasid,
        group: u16,
        response: PageResponse,
    ) -> Result<(), DriverError> {
        let path = lock(&self.devices)
            .get(&device)
            .map(|d| d.desc.fault_path)
            .ok_or(DriverError::UnknownDevice(device))?;
        match path {
            FaultPath::Pri => {
                let resp = match response {
                    PageResponse::Success => PriResponse::Success,
                    PageResponse::Invalid => PriResponse::Invalid,
                    PageResponse::Failure => PriResponse::Failure,
                };
                self.driver
                    .pri_response(sid(device), Some(pasid), group, resp)
                    .map_err(DriverError::from)
            }
            // For a stall the group is the STAG; only Success retries.
            FaultPath::Stall => self
                .driver
                .resume(sid(device), group, response == PageResponse::Success)
                .map_err(DriverError::from),
        }
    }
}
