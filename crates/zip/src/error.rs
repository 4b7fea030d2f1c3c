/// Errors of the ZIP device model, its driver and its user library. Request failures are
/// not errors: they are completion statuses ([`crate::sqe::status`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such queue pair.
    #[error("no queue pair {0}")]
    NoQp(u16),
    /// A queue context is refused.
    #[error("queue pair {qp}: bad context: {why}")]
    BadContext {
        /// The queue pair.
        qp: u16,
        /// What is wrong.
        why: &'static str,
    },
    /// The queue pair is running; stop it first.
    #[error("queue pair {0} is running")]
    Running(u16),
    /// Start without both contexts.
    #[error("queue pair {0} has no SQC/CQC")]
    NoContext(u16),
    /// The engine did not let go of the queue in time (a DMA still waits, e.g. on a page
    /// fault nobody answers). The queue stays busy until that DMA ends.
    #[error("queue pair {0} did not stop in time")]
    StopTimeout(u16),
    /// User library: every SQ slot is in flight (at most depth − 1).
    #[error("the queue is full")]
    QueueFull,
    /// User library: the queue's TX/RX status word says it is stopped or in error.
    #[error("the queue is disabled")]
    QueueDisabled,
    /// User library: no completion came in time.
    #[error("no completion within {0:?}")]
    Timeout(std::time::Duration),
    /// User library: the layout does not fit the DUS, or an argument is out of range.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// User library: a completion names an SQ slot with no request in it.
    #[error("completion for SQ slot {0}, which holds no request")]
    StrayCompletion(u16),
    /// User library: uacce refused (open, mmap, start, ioctl).
    #[error(transparent)]
    Uacce(#[from] sva_uacce::Error),
    /// User library: a CPU access to the queue faulted.
    #[error(transparent)]
    Mm(#[from] sva_mm::Error),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;
