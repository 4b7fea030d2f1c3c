//! The crate's error type. Bad descriptors are not errors: they are answered with a
//! completion status or a software-error record, as the hardware does.

use crate::WqMode;

/// Errors of the device model's configuration interface, the driver and the user library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is not usable (no work queue, no engine, zero sizes).
    #[error("invalid device configuration: {0}")]
    Config(&'static str),
    /// No work queue with this index.
    #[error("no work queue {0}")]
    NoWq(usize),
    /// The work queue must be disabled for this operation.
    #[error("work queue {0} is enabled")]
    WqEnabled(usize),
    /// The operation needs a work queue of the other mode.
    #[error("work queue {wq} is {mode:?}")]
    WrongMode {
        /// The work queue.
        wq: usize,
        /// Its mode.
        mode: WqMode,
    },
    /// A wait ran out of time (drain, completion poll).
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The work queue did not accept the descriptor (ENQCMD retries exhausted).
    #[error("work queue busy: {0}")]
    Busy(&'static str),
    /// A caller's argument is out of range.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A CPU access of the user library failed (including portal stores).
    #[error(transparent)]
    Mm(#[from] sva_mm::Error),
    /// User library: uacce refused (open, mmap, start, ioctl).
    #[error(transparent)]
    Uacce(#[from] sva_uacce::Error),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;
