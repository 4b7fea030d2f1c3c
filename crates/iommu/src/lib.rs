//! The SVA / IOMMU core: what the seed threads design, generic over IOMMU drivers.
//!
//! Built so far: the system-wide PASID allocator ([`PasidAllocator`]). Devices, domains,
//! bonds, I/O page faults and invalidation fan-out are the rest of this crate's issue and
//! are not written yet.

mod error;
mod pasid;

pub use error::{Error, Result};
pub use pasid::PasidAllocator;
