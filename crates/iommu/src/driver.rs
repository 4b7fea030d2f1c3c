//! What the core needs from an IOMMU driver. The core knows no SMMU detail: a second IOMMU
//! (VT-d scalable mode, say) is another implementation of [`IommuDriver`].

use crate::{DeviceId, PageResponse};
use sva_addr::{Asid, Pa, Pasid, Va};
use sva_vmsa::TableConfig;

/// Errors a driver reports to the core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The device is not behind this IOMMU, or not attached.
    #[error("device {0:?} is unknown to the IOMMU driver")]
    UnknownDevice(DeviceId),
    /// The IOMMU lacks something the operation needs.
    #[error("the IOMMU does not support {0}")]
    Unsupported(&'static str),
    /// The hardware did not answer or reported an error.
    #[error("IOMMU hardware error: {0}")]
    Hardware(String),
}

/// What the IOMMU offers one device for SVA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvaCaps {
    /// PASID bits usable with this device (IOMMU limit and table format; 0: none).
    pub pasid_bits: u8,
    /// I/O page faults can reach the core for this device (PRI or stall).
    pub iopf: bool,
    /// The IOMMU snoops the CPUs' broadcast TLB invalidations (no IOTLB commands needed
    /// for shared ASIDs; device TLBs still need invalidating).
    pub btm: bool,
}

/// A CPU address space as the IOMMU must see it: the tables the CPU uses, its ASID and
/// memory attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvaContext {
    /// Physical address of the translation table root (TTBR0).
    pub table_root: Pa,
    /// Granule, input and output sizes of the tables.
    pub config: TableConfig,
    /// The CPU's ASID for this address space.
    pub asid: Asid,
    /// MAIR of the address space.
    pub mair: u64,
}

/// What a device's DMA without PASID goes through (its default domain; SMMUv3: SSID 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainConfig {
    /// Every access is terminated.
    Blocked,
    /// Addresses are physical addresses, untranslated.
    Identity,
    /// Addresses are IOVAs in a private I/O page table of the same format as a CPU's,
    /// tagged with an ASID of its own.
    Dma(SvaContext),
}

/// An IOMMU driver as the SVA core uses it.
pub trait IommuDriver: Send + Sync {
    /// The lowest PASID this IOMMU can use for an address space (SMMUv3: 1, since
    /// SubstreamID 0 is DMA without PASID).
    fn min_pasid(&self) -> Pasid;

    /// What the IOMMU can do for `device`.
    fn sva_caps(&self, device: DeviceId) -> Result<SvaCaps, DriverError>;

    /// Whether the IOMMU can walk tables of this format (granule, input and output size).
    fn supports_tables(&self, config: &TableConfig) -> bool;

    /// Puts `device`'s DMA without PASID in `domain`. It applies whether or not SVA is
    /// enabled, and stays when SVA is enabled or disabled.
    fn set_domain(&self, device: DeviceId, domain: &DomainConfig) -> Result<(), DriverError>;

    /// Prepares `device` for PASID-tagged traffic (context table, fault reporting); `iopf`
    /// asks for I/O page faults. DMA without PASID keeps working as before.
    fn enable_sva(&self, device: DeviceId, iopf: bool) -> Result<(), DriverError>;

    /// Undoes [`IommuDriver::enable_sva`]; no PASID is bound any more.
    fn disable_sva(&self, device: DeviceId) -> Result<(), DriverError>;

    /// Points `pasid` of `device` at the address space `ctx` and makes it live.
    fn set_pasid(
        &self,
        device: DeviceId,
        pasid: Pasid,
        ctx: &SvaContext,
    ) -> Result<(), DriverError>;

    /// Keeps `pasid` valid but translating nothing, faults not reported (address space
    /// exit while the device may still issue DMA).
    fn quiet_pasid(&self, device: DeviceId, pasid: Pasid) -> Result<(), DriverError>;

    /// Removes `pasid` from `device`: further DMA with it is terminated.
    fn clear_pasid(&self, device: DeviceId, pasid: Pasid) -> Result<(), DriverError>;

    /// Invalidates cached translations of `[start, end)` for ASID `asid` in the IOTLB and
    /// in the device TLBs of `targets` (PASID 0: the device's DMA without PASID), and waits
    /// for completion. `cpu_shared`: the ASID is a CPU address space's, so an IOMMU that
    /// snoops the CPUs' broadcast invalidations (BTM) may skip the IOTLB part. `end - start`
    /// above the driver's threshold may become a whole-ASID flush.
    fn invalidate(
        &self,
        asid: Asid,
        start: Va,
        end: Va,
        targets: &[(DeviceId, Pasid)],
        cpu_shared: bool,
    ) -> Result<(), DriverError>;

    /// Sends the response to a page request group.
    fn page_response(
        &self,
        device: DeviceId,
        pasid: Pasid,
        group: u16,
        response: PageResponse,
    ) -> Result<(), DriverError>;

    /// Hands every page request the hardware has already queued for `device` (PRI queue,
    /// stall events) to the core before returning, so that unbind can drain them before
    /// the PASID is freed. The default does nothing (requests are reported at once).
    fn flush_page_requests(&self, device: DeviceId) -> Result<(), DriverError> {
        let _ = device;
        Ok(())
    }
}
