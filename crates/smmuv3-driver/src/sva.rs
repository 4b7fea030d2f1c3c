//! The SVA core's view of this driver: [`SmmuSva`] implements [`IommuDriver`] on top of the
//! STE/CD/command API. SubstreamID 0 stays the non-PASID context; PASIDs are SSIDs from 1.

use crate::{CdConfig, CdTableConfig, PriResponse, S1dss, SmmuDriver, StreamConfig};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use sva_addr::{Asid, Pasid, StreamId, Va};
use sva_iommu::{DeviceId, DriverError, IommuDriver, PageResponse, SvaCaps, SvaContext};
use sva_smmuv3_spec::encoding::{AddressSize, Granule};
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

struct SvaDevice {
    desc: DeviceDesc,
    iopf: bool,
}

/// [`IommuDriver`] for the SMMUv3 driver: the DeviceId is the StreamID.
pub struct SmmuSva {
    driver: Arc<SmmuDriver>,
    descs: Mutex<BTreeMap<DeviceId, DeviceDesc>>,
    enabled: Mutex<BTreeMap<DeviceId, SvaDevice>>,
}

impl core::fmt::Debug for SmmuSva {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SmmuSva").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
            enabled: Mutex::new(BTreeMap::new()),
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
        lock(&self.enabled)
            .get(&device)
            .is_some_and(|d| d.desc.ats && self.driver.features().ats)
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

    fn enable_sva(&self, device: DeviceId, iopf: bool) -> Result<(), DriverError> {
        let desc = self.desc(device)?;
        let f = self.driver.features();
        let bits = f.ssid_bits;
        let cd_table = if f.two_level_cd && bits > 10 {
            CdTableConfig {
                max_ssid_bits: bits,
                two_level: true,
            }
        } else {
            CdTableConfig::linear(bits.min(10))
        };
        let stall = iopf && desc.fault_path == FaultPath::Stall;
        self.driver
            .attach(
                sid(device),
                StreamConfig::S1 {
                    cd_table,
                    // DMA without PASID is blocked until domains exist in the core.
                    s1dss: S1dss::Terminate,
                    stall_disable: !stall,
                    ats: desc.ats && f.ats,
                },
            )
            .map_err(DriverError::from)?;
        lock(&self.enabled).insert(device, SvaDevice { desc, iopf });
        Ok(())
    }

    fn disable_sva(&self, device: DeviceId) -> Result<(), DriverError> {
        lock(&self.enabled).remove(&device);
        self.driver.detach(sid(device)).map_err(DriverError::from)
    }

    fn set_pasid(
        &self,
        device: DeviceId,
        pasid: Pasid,
        ctx: &SvaContext,
    ) -> Result<(), DriverError> {
        let (stall, _) = {
            let en = lock(&self.enabled);
            let d = en.get(&device).ok_or(DriverError::UnknownDevice(device))?;
            (d.iopf && d.desc.fault_path == FaultPath::Stall, d.iopf)
        };
        let f = self.driver.features();
        let mut cd = CdConfig::new(ctx.table_root, ctx.asid);
        cd.t0sz = ctx.config.t0sz();
        cd.tg0 = granule(ctx.config.granule());
        cd.ips = AddressSize::from_bit_count(ctx.config.oa_bits())
            .ok_or(DriverError::Unsupported("the address space's output size"))?;
        cd.mair = ctx.mair;
        cd.ha = f.ha;
        cd.hd = f.hd;
        cd.stall = stall;
        self.driver
            .set_cd(sid(device), pasid, &cd)
            .map_err(DriverError::from)
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
    ) -> Result<(), DriverError> {
        let size = end - start;
        let mut batch = self.driver.batch();
        // With BTM the CPU's own broadcast TLBI already reached the IOTLB.
        if !self.driver.features().btm {
            batch.tlbi_va(asid, start, size, false);
        }
        for &(device, pasid) in targets {
            if self.uses_ats(device) {
                batch.atc_inv(sid(device), Some(pasid), start, size);
            }
        }
        if batch.commands().is_empty() {
            return Ok(());
        }
        batch.submit().map_err(DriverError::from)
    }

    fn page_response(
        &self,
        device: DeviceId,
        pasid: Pasid,
        group: u16,
        response: PageResponse,
    ) -> Result<(), DriverError> {
        let path = lock(&self.enabled)
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
