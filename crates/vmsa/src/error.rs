//! The crate's error type.
//!
//! These are errors of the *software* interface (bad arguments, memory the tables cannot
//! reach). What a hardware walker finds wrong with a table is a [`crate::Fault`], which is
//! data, not an error of this kind.

use sva_addr::{Pa, Va};

/// Errors of the translation-table layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An address or size that must be a multiple of the page size (or another unit) is not.
    #[error("{what} {value:#x} is not aligned to {align:#x}")]
    Misaligned {
        /// Which argument: "va", "pa" or "size".
        what: &'static str,
        /// Its value.
        value: u64,
        /// The alignment it needs.
        align: u64,
    },
    /// A range of zero bytes where at least one page is needed.
    #[error("the range is empty")]
    ZeroSize,
    /// A [`crate::TableConfig`] the architecture (or this model) does not support.
    #[error("unsupported table configuration: {reason}")]
    BadConfig {
        /// What is wrong with it.
        reason: String,
    },
    /// `[va, va + size)` does not fit in the input address space of `2^ia_bits` bytes.
    #[error("input range {va}+{size:#x} is beyond the {ia_bits}-bit input address space")]
    InputOutOfRange {
        /// Start of the range.
        va: Va,
        /// Length of the range.
        size: u64,
        /// Input address size of the table.
        ia_bits: u32,
    },
    /// `[pa, pa + size)` does not fit in the output address space of `2^oa_bits` bytes.
    #[error("output range {pa}+{size:#x} is beyond the {oa_bits}-bit output address space")]
    OutputOutOfRange {
        /// Start of the range.
        pa: Pa,
        /// Length of the range.
        size: u64,
        /// Output address size of the table.
        oa_bits: u32,
    },
    /// No leaf (block or page) maps the address.
    #[error("{0} is not mapped")]
    NotMapped(Va),
    /// The address is mapped by a page, where a block was required.
    #[error("{va} is mapped by a level {level} page, not by a block")]
    NotABlock {
        /// The address.
        va: Va,
        /// Level of the leaf that maps it.
        level: u8,
    },
    /// An in-place descriptor update tried to change what only a break-before-make sequence
    /// may change (validity, descriptor type or output address).
    #[error(
        "in-place update of the descriptor for {va} from {old:#018x} to {new:#018x} is not allowed"
    )]
    IllegalUpdate {
        /// The address whose leaf was being updated.
        va: Va,
        /// Descriptor before the update.
        old: u64,
        /// Descriptor the update produced.
        new: u64,
    },
    /// Physical memory refused an access or an allocation.
    #[error(transparent)]
    Memory(#[from] sva_physmem::Error),
}

/// Result of the translation-table layer.
pub type Result<T> = core::result::Result<T, Error>;
