use crate::{AccessKind, Pid};
use sva_addr::Va;

/// Why a CPU access was refused: the SIGSEGV codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegvCode {
    /// No mapping at the address (SEGV_MAPERR).
    MapErr,
    /// A mapping exists but does not allow the access (SEGV_ACCERR).
    AccErr,
}

/// Errors of the CPU address-space layer. The names follow the errno each maps to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An address or length that must be page-aligned is not (EINVAL).
    #[error("{what} {value:#x} is not aligned to the {granule:#x}-byte page")]
    Unaligned {
        /// Which argument.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The page size.
        granule: u64,
    },
    /// A zero length (EINVAL).
    #[error("length is zero")]
    ZeroLength,
    /// The range does not fit the address space's input size (ENOMEM / EINVAL).
    #[error("range {va}+{len:#x} is outside the {ia_bits}-bit address space")]
    OutOfRange {
        /// Start.
        va: Va,
        /// Length.
        len: u64,
        /// Input-address size of the tables.
        ia_bits: u32,
    },
    /// Conflicting or missing flags, e.g. both SHARED and PRIVATE (EINVAL).
    #[error("invalid flags: {0}")]
    InvalidFlags(&'static str),
    /// No free range of the requested size (ENOMEM).
    #[error("no free virtual range of {0:#x} bytes")]
    NoSpace(u64),
    /// MAP_FIXED_NOREPLACE over an existing mapping (EEXIST).
    #[error("range {va}+{len:#x} overlaps an existing mapping")]
    Exists {
        /// Start.
        va: Va,
        /// Length.
        len: u64,
    },
    /// mprotect or a page operation on a range with holes (ENOMEM).
    #[error("address {0} is not mapped")]
    NotMapped(Va),
    /// A page that other address spaces also map cannot be moved by this operation (EBUSY).
    #[error("page at {0} is shared with another mapping")]
    PageShared(Va),
    /// The access faulted and the fault handler refused it: the process would get SIGSEGV.
    #[error("segmentation fault: {access:?} at {va} ({code:?})")]
    Segv {
        /// Faulting address.
        va: Va,
        /// The access.
        access: AccessKind,
        /// MAPERR or ACCERR.
        code: SegvCode,
    },
    /// A device mapping could not complete the access: nothing answers behind device
    /// registers any more, or a page of revoked driver memory was faulted (SIGBUS). Also
    /// what a fault (CPU or I/O page fault) on device registers gives: they have no pages
    /// to fault in.
    #[error("bus error at {va}")]
    Bus {
        /// The address accessed.
        va: Va,
    },
    /// The device registers do not support this kind of access, e.g. ENQCMD to a register
    /// that only takes posted writes (SIGBUS).
    #[error("device registers at {va} do not support this access")]
    IoUnsupported {
        /// The address accessed.
        va: Va,
    },
    /// An operation that needs device registers (ENQCMD) on an address that is mapped to
    /// something else (#GP on x86).
    #[error("address {0} is not mapped to device registers")]
    NotDeviceMemory(Va),
    /// An ENQCMD destination that is not 64-byte aligned (#GP on x86).
    #[error("ENQCMD destination {0} is not 64-byte aligned")]
    EnqcmdUnaligned(Va),
    /// A device region that cannot be mapped into this address space (EINVAL).
    #[error("device region cannot be mapped: {0}")]
    BadRegion(&'static str),
    /// The address space has exited.
    #[error("process {0} has exited")]
    Exited(Pid),
    /// No such process.
    #[error("no process {0}")]
    NoProcess(Pid),
    /// All ASIDs are in use.
    #[error("ASID space exhausted")]
    AsidsExhausted,
    /// The swap store is full.
    #[error("swap store is full ({0} pages)")]
    SwapFull(u64),
    /// Physical memory failed (exhaustion, out of range).
    #[error(transparent)]
    Memory(#[from] sva_physmem::Error),
    /// Translation-table operation failed.
    #[error(transparent)]
    Table(#[from] sva_vmsa::Error),
}

/// Result of the CPU address-space layer.
pub type Result<T> = core::result::Result<T, Error>;
