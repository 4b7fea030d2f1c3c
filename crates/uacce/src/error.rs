use sva_mm::Pid;

/// Errors of the uacce layer; each names the errno Linux's uacce returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device was removed; the queue handle is dead (ENXIO).
    #[error("the device was removed")]
    NoDevice,
    /// No hardware queue is free, or the queue is exclusive and taken (EBUSY).
    #[error("device busy: {0}")]
    Busy(&'static str),
    /// The region is already mapped for this queue (EEXIST).
    #[error("region {0:?} is already mapped")]
    AlreadyMapped(crate::Region),
    /// The queue has no such region (EINVAL).
    #[error("the queue has no {0:?} region")]
    NoRegion(crate::Region),
    /// The queue is not in a state that allows the call (EINVAL).
    #[error("queue is {state}, cannot {op}")]
    State {
        /// The queue's state.
        state: &'static str,
        /// What was asked.
        op: &'static str,
    },
    /// The caller is not the process that opened the queue (EPERM), e.g. a forked child
    /// using an inherited handle.
    #[error("process {caller} does not own the queue (opened by {owner})")]
    NotOwner {
        /// The calling process.
        caller: Pid,
        /// The process that opened the queue.
        owner: Pid,
    },
    /// An ioctl the driver does not know (ENOTTY).
    #[error("unknown ioctl {0:#x}")]
    UnknownIoctl(u32),
    /// The driver refused an argument (EINVAL).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The SVA core refused (bind, domain).
    #[error(transparent)]
    Sva(#[from] sva_iommu::Error),
    /// The address space refused (mmap).
    #[error(transparent)]
    Mm(#[from] sva_mm::Error),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;
