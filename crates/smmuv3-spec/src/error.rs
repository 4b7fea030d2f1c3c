//! Errors of the decoders.
//!
//! Each decoder has its own enum, so a caller matches only what can happen to it; [`enum@Error`]
//! gathers them for code that handles several kinds of structure. A decode error is *data*
//! from the point of view of the model: it turns a malformed command into `CERROR_ILL`, it
//! never panics.

use thiserror::Error;

use crate::command::Opcode;

/// Why a Command queue entry could not be decoded (§4.1.3: the model reports these as
/// `CERROR_ILL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum CommandError {
    /// The opcode is reserved, IMPLEMENTATION DEFINED, or belongs to a programming interface
    /// this crate does not model (Secure-only TLBI, DPT maintenance).
    #[error("unknown command opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// A RES0 bit is set (§4.1.5: an implementation may treat the command as malformed).
    #[error("{opcode:?}: reserved bits {bits:#018x} set in word {word}")]
    ReservedBits {
        /// The command's opcode.
        opcode: Opcode,
        /// Index of the 64-bit word (0 or 1).
        word: usize,
        /// The offending bits.
        bits: u64,
    },
    /// A field holds a value the command defines as ILLEGAL.
    #[error("{opcode:?}: illegal {field} value {value:#x}")]
    IllegalField {
        /// The command's opcode.
        opcode: Opcode,
        /// Spec name of the field (`SSec`, `CS`, `Resp`).
        field: &'static str,
        /// The raw value found.
        value: u64,
    },
}

/// Why an Event queue record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum EventError {
    /// The event number is reserved (§7.3.21: all numbers not listed are reserved).
    #[error("unknown event number {0:#04x}")]
    UnknownId(u8),
}

/// Why a PRI queue entry could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum PageRequestError {
    /// A RES0 bit of the entry is set.
    #[error("reserved bits {bits:#018x} set in PRI queue entry word {word}")]
    ReservedBits {
        /// Index of the 64-bit word (0 or 1).
        word: usize,
        /// The offending bits.
        bits: u64,
    },
}

/// Why a queue index could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum QueueError {
    /// A queue holds at most 2^19 entries (`SMMU_IDR1.CMDQS/EVENTQS/PRIQS` <= 19).
    #[error("queue log2size {0} exceeds the architectural maximum of 19")]
    Log2SizeTooLarge(u8),
}

/// Any error of this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum Error {
    /// See [`CommandError`].
    #[error(transparent)]
    Command(#[from] CommandError),
    /// See [`EventError`].
    #[error(transparent)]
    Event(#[from] EventError),
    /// See [`PageRequestError`].
    #[error(transparent)]
    PageRequest(#[from] PageRequestError),
    /// See [`QueueError`].
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Result with this crate's [`enum@Error`].
pub type Result<T> = core::result::Result<T, Error>;
