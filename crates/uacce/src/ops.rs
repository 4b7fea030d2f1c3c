//! What an accelerator driver provides to uacce (Linux's `struct uacce_ops`).

use crate::Error;
use std::sync::Arc;
use sva_addr::Pasid;
use sva_mm::{FrameRegion, IoMemory};

/// `UACCE_DEV_SVA`: the device shares process address spaces through PASIDs and takes I/O
/// page faults (PRI or stall).
pub const UACCE_DEV_SVA: u32 = 1 << 0;

/// A device's description (its sysfs attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UacceInfo {
    /// Name of the character device, e.g. `hisi_zip`.
    pub name: String,
    /// User-space API identifier (`api`), e.g. `hisi_qm_v2`.
    pub api: String,
    /// `UACCE_DEV_*` flags.
    pub flags: u32,
    /// Algorithms offered (`algorithms`), e.g. `["deflate", "zlib"]`.
    pub algorithms: Vec<String>,
    /// Size of the MMIO region (`region_mmio_size`): the doorbell or portal pages.
    pub mmio_size: u64,
    /// Size of the device-user-share region (`region_dus_size`): queue memory; 0 if none.
    pub dus_size: u64,
}

/// The mmap regions of a queue (`UACCE_QFRT_*`), chosen by the mmap page offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Region {
    /// `UACCE_QFRT_MMIO` (offset 0): device registers, e.g. the doorbell.
    Mmio,
    /// `UACCE_QFRT_DUS` (offset 1): queue memory shared between device and user.
    Dus,
}

/// A device driver registered with uacce.
pub trait UacceOps: Send + Sync {
    /// The device's description.
    fn info(&self) -> UacceInfo;

    /// How many more queues can be allocated (`available_instances`).
    fn available_instances(&self) -> usize;

    /// Allocates a hardware queue for `pasid` (`get_queue`). The queue starts stopped.
    /// [`Error::Busy`] when none is free.
    fn get_queue(&self, pasid: Option<Pasid>) -> Result<Arc<dyn UacceQueueOps>, Error>;
}

/// One hardware queue as the driver manages it.
pub trait UacceQueueOps: Send + Sync {
    /// The registers user space maps (doorbell, portal): [`Region::Mmio`].
    fn mmio(&self) -> Arc<dyn IoMemory>;

    /// The queue memory user space maps ([`Region::Dus`]), if the queue has any.
    fn dus(&self) -> Option<Arc<FrameRegion>>;

    /// Starts the queue (`start_queue`): the device accepts work from now on.
    fn start(&self) -> Result<(), Error>;

    /// Stops the queue (`stop_queue`) and returns once the device no longer touches the
    /// queue's memory or its PASID: in-flight work has finished or was aborted.
    fn stop(&self);

    /// Releases the hardware queue (`put_queue`); called after [`UacceQueueOps::stop`].
    /// The device's access to the queue memory ends here.
    fn put(&self);

    /// Whether completions arrived since the last call (`is_q_updated`, behind poll()).
    fn is_updated(&self) -> bool;

    /// A driver-specific ioctl (`ops->ioctl`): command and argument, returning a value.
    fn ioctl(&self, cmd: u32, arg: u64) -> Result<u64, Error> {
        let _ = arg;
        Err(Error::UnknownIoctl(cmd))
    }
}
