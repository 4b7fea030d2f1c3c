//! The SVA / IOMMU core: what the seed threads design, generic over IOMMU drivers.
//!
//! Built so far: the driver trait ([`IommuDriver`]), per-device SVA enablement, bind and
//! unbind with one PASID per address space ([`Sva`], [`PasidAllocator`]), the invalidation
//! notifier, the exit rules, the I/O page fault queue ([`IopfQueue`]), and domains for DMA
//! without PASID ([`Domain`]: blocked, identity, [`DmaDomain`] with an IOVA allocator), and
//! private I/O page tables of pinned pages for devices without I/O page faults
//! ([`Sva::bind_private`]).

pub mod domain;
pub mod driver;
mod error;
pub mod iopf;
mod pasid;
mod sva;

pub use domain::{DmaDomain, Domain, IOVA_BASE};
pub use driver::{DomainConfig, DriverError, IommuDriver, SvaCaps, SvaContext};
pub use error::{Error, Result};
pub use iopf::{DeviceId, IopfQueue, IopfStats, PageRequest, PageResponse, ResponseSink};
pub use pasid::PasidAllocator;
pub use sva::{Bond, ExitHandler, Sva, SvaFeatures, SvaStats};
