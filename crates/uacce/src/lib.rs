//! A uacce-style user-space accelerator interface (Linux `drivers/misc/uacce`): opening a
//! device allocates a hardware queue bound to the caller's address space (an SVA bond, its
//! PASID in the queue context); the queue's doorbell and memory are mapped into the
//! process; start, poll and put drive it; close unbinds.

mod error;
mod ops;
mod queue;

pub use error::{Error, Result};
pub use ops::{Region, UACCE_DEV_SVA, UacceInfo, UacceOps, UacceQueueOps};
pub use queue::{Queue, QueueState, Uacce};
