use sva_addr::Pasid;

/// Errors of the SVA core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// Freeing a PASID that is not allocated.
    #[error("PASID {0} is not allocated")]
    PasidNotAllocated(Pasid),
}

/// Result of the SVA core.
pub type Result<T> = core::result::Result<T, Error>;
