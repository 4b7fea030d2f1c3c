use crate::{Bond, DeviceId, DriverError};
use sva_addr::{Iova, Pa, Pasid};
use sva_mm::Pid;

/// Errors of the SVA core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No free PASID in the range the IOMMU and device allow (ENOSPC).
    #[error("PASID space exhausted in [{min}, {max}]")]
    PasidsExhausted {
        /// Lowest PASID allowed.
        min: Pasid,
        /// Highest PASID allowed.
        max: Pasid,
    },
    /// A PASID range that is empty or beyond the 20-bit PASID space.
    #[error("PASID range [{min}, {max}] is empty or beyond 20 bits")]
    BadPasidRange {
        /// Lowest PASID asked for.
        min: Pasid,
        /// Highest PASID asked for.
        max: Pasid,
    },
    /// The IOMMU cannot do SVA for this device (no PASID support).
    #[error("no SVA support for device {0:?}")]
    NoSvaSupport(DeviceId),
    /// A requested feature is missing.
    #[error("device {device:?} lacks {feature}")]
    FeatureMissing {
        /// The device.
        device: DeviceId,
        /// What is missing.
        feature: &'static str,
    },
    /// SVA was already enabled for the device.
    #[error("SVA is already enabled for device {0:?}")]
    AlreadyEnabled(DeviceId),
    /// SVA is not enabled for the device.
    #[error("SVA is not enabled for device {0:?}")]
    NotEnabled(DeviceId),
    /// The device still has bonds.
    #[error("device {0:?} still has bound address spaces")]
    DeviceBusy(DeviceId),
    /// The IOMMU cannot walk this address space's tables.
    #[error(
        "address space incompatible with the IOMMU: {granule}-byte granule, {ia_bits}-bit input"
    )]
    IncompatibleAddressSpace {
        /// Granule size.
        granule: u64,
        /// Input address bits.
        ia_bits: u32,
    },
    /// The address space's PASID is beyond what this device can use (EOVERFLOW).
    #[error("the address space's PASID {pasid} is above the device's maximum {max}")]
    PasidAboveDeviceMax {
        /// The address space's PASID.
        pasid: Pasid,
        /// The device's maximum.
        max: Pasid,
    },
    /// The address space has exited.
    #[error("process {0} has exited")]
    Exited(Pid),
    /// Unbinding something that is not bound.
    #[error("{0:?} is not bound")]
    NotBound(Bond),
    /// The IOMMU driver failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The address space refused (e.g. registering a notifier on an exited process).
    #[error(transparent)]
    Mm(#[from] sva_mm::Error),
    /// A mapping that is empty or not page-aligned.
    #[error("cannot map {size:#x} bytes at {pa}: not page-aligned or empty")]
    BadMapping {
        /// Physical address.
        pa: Pa,
        /// Size.
        size: u64,
    },
    /// No free IOVA range of the size.
    #[error("no free IOVA range of {0:#x} bytes")]
    IovaExhausted(u64),
    /// The IOVA range asked for is taken or outside the domain.
    #[error("IOVA range {iova}+{size:#x} is taken or outside the domain")]
    IovaBusy {
        /// Start.
        iova: Iova,
        /// Size.
        size: u64,
    },
    /// No mapping starts at this IOVA.
    #[error("no mapping starts at {0}")]
    NotMapped(Iova),
    /// The I/O page table refused.
    #[error(transparent)]
    Table(sva_vmsa::Error),
    /// The bond has no private table (it shares the CPU's tables).
    #[error("{0:?} is not a private bond")]
    NotPrivate(Bond),
    /// A page of the range is already mapped for the device.
    #[error("{0} is already mapped for the device")]
    AlreadyMapped(sva_addr::Va),
    /// Freeing a PASID that is not allocated.
    #[error("PASID {0} is not allocated")]
    PasidNotAllocated(Pasid),
}

/// Result of the SVA core.
pub type Result<T> = core::result::Result<T, Error>;
