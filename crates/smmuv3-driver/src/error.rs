//! The driver's error type.
//!
//! Everything the hardware can do wrong (never acknowledging a register write, never
//! consuming commands, reporting a command error, advertising nonsense) ends up here as data:
//! the driver never panics on a value read from the SMMU.

use sva_addr::{Pasid, StreamId};
use thiserror::Error;

/// Errors of the SMMUv3 driver.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// A bounded poll of a register gave up (e.g. `CR0ACK` never matched `CR0`).
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// A CMD_SYNC did not complete within the poll bound.
    #[error("CMD_SYNC did not complete (CMDQ_CONS stuck at {cons:#x}, waiting for {target:#x})")]
    SyncTimeout {
        /// Last CMDQ_CONS.RD read.
        cons: u32,
        /// The position CONS had to reach.
        target: u32,
    },
    /// The SMMU lacks something the driver cannot work without.
    #[error("SMMU does not support {0}")]
    Unsupported(&'static str),
    /// A feature was requested that probe did not enable (hardware or options said no).
    #[error("feature {0} is not enabled on this SMMU")]
    FeatureUnavailable(&'static str),
    /// The StreamID does not fit the Stream table.
    #[error("StreamID {sid} out of range ({bits} StreamID bits)")]
    SidOutOfRange {
        /// The StreamID.
        sid: StreamId,
        /// StreamID bits the table covers.
        bits: u32,
    },
    /// The SubstreamID does not fit the stream's CD table.
    #[error("SubstreamID {ssid} out of range for stream {sid} ({bits} SSID bits)")]
    SsidOutOfRange {
        /// The StreamID.
        sid: StreamId,
        /// The SubstreamID.
        ssid: Pasid,
        /// SubstreamID bits of the CD table.
        bits: u32,
    },
    /// The stream is not attached with a stage 1 CD table.
    #[error("stream {0} has no CD table (not attached with StreamConfig::S1)")]
    NoCdTable(StreamId),
    /// The context descriptor is not valid (e.g. quieting a CD that was never set).
    #[error("no valid CD at stream {sid} SSID {ssid}")]
    NoContext {
        /// The StreamID.
        sid: StreamId,
        /// The SubstreamID.
        ssid: Pasid,
    },
    /// An argument is outside what the architecture allows.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// Simulated memory could not provide a table or queue.
    #[error("memory: {0}")]
    Memory(#[from] sva_physmem::Error),
    /// The SMMU reported CERROR_ILL for a command; the driver replaced it with a CMD_SYNC.
    #[error("SMMU rejected command {words:#x?} as illegal (CERROR_ILL)")]
    IllegalCommand {
        /// The two words of the rejected command.
        words: [u64; 2],
    },
    /// The SMMU reported CERROR_ABT: an external abort while reading a command.
    #[error("external abort reading the command queue (CERROR_ABT)")]
    CommandAbort,
    /// A CMD_SYNC found an ATC invalidation that timed out (CERROR_ATC_INV_SYNC).
    #[error("ATC invalidation timed out (CERROR_ATC_INV_SYNC)")]
    AtcInvTimeout,
    /// The SMMU returned a value that cannot be right (e.g. a queue index beyond PROD).
    #[error("hardware misbehaved: {0}")]
    Hardware(&'static str),
}

/// Result with the driver's [`enum@Error`].
pub type Result<T> = core::result::Result<T, Error>;
