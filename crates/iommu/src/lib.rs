//! The SVA / IOMMU core: what the seed threads design, generic over IOMMU drivers.
//!
//! Built so far: the system-wide PASID allocator ([`PasidAllocator`]) and the I/O page
//! fault queue ([`IopfQueue`]). Devices, domains, bonds and invalidation fan-out are the
//! rest of this crate's issue and are not written yet.

mod error;
pub mod iopf;
mod pasid;

pub use error::{Error, Result};
pub use iopf::{DeviceId, IopfQueue, IopfStats, PageRequest, PageResponse, ResponseSink};
pub use pasid::PasidAllocator;
