use sva_addr::Pa;

/// Errors of the physical memory layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The access `[pa, pa + len)` does not lie inside RAM.
    #[error("physical access {pa}+{len:#x} is outside RAM of {size:#x} bytes")]
    OutOfRange {
        /// First byte of the access.
        pa: Pa,
        /// Length of the access.
        len: u64,
        /// Size of RAM.
        size: u64,
    },
    /// An atomic access at an address that is not naturally aligned.
    #[error("atomic access at {pa} is not {align}-byte aligned")]
    Misaligned {
        /// Address of the access.
        pa: Pa,
        /// Required alignment.
        align: u64,
    },
    /// A RAM size that is zero, not a multiple of 4 KiB or above 2^48.
    #[error("RAM size {0:#x} must be a non-zero multiple of 4 KiB, at most 2^48")]
    BadRamSize(u64),
    /// An allocation size that is not a power of two between 4 KiB and the largest block.
    #[error("allocation size {0:#x} must be a power of two from 4 KiB to 1 GiB")]
    BadAllocSize(u64),
    /// No free block of the requested size is left.
    #[error(
        "physical memory exhausted: no free block of {size:#x} bytes ({free_frames} frames free)"
    )]
    Exhausted {
        /// Requested size.
        size: u64,
        /// Free 4 KiB frames left (possibly fragmented).
        free_frames: u64,
    },
    /// A reference-count operation on an address that is not the start of an allocation.
    #[error("{0} is not the start of an allocated block")]
    NotAllocated(Pa),
    /// A reference count would overflow.
    #[error("reference count of {0} would overflow")]
    RefcountOverflow(Pa),
    /// The vm-memory backend refused an access.
    #[error("guest memory access at {pa} failed: {reason}")]
    Guest {
        /// Address of the access.
        pa: Pa,
        /// What vm-memory said.
        reason: String,
    },
}

/// Result of the physical memory layer.
pub type Result<T> = core::result::Result<T, Error>;
