//! A data-mover accelerator modelled on Intel DSA (Data Streaming Accelerator), the
//! portal-style SVA device of the project:
//!
//! - [`descriptor`] and [`completion`]: the 64-byte descriptor and the 32-byte completion
//!   record, byte-exact with Linux `include/uapi/linux/idxd.h`;
//! - [`device`]: the hardware model — dedicated (MOVDIR64B) and shared (ENQCMD) work
//!   queues behind 4 KiB portals, engine threads executing memmove, fill, compare, compare
//!   pattern, dualcast, CRC-32C, batch and drain through [`sva_pcie::Dma`] in the
//!   descriptor's PASID, partial completion on page faults without block-on-fault,
//!   completion records written status-byte-last, the software error register, counters;
//! - [`driver`]: the kernel side, implementing [`sva_uacce::UacceOps`];
//! - [`user`]: the user-space library — build descriptors, submit through the mapped
//!   portal, poll the completion record, recover from partial completions.

pub mod completion;
mod counters;
pub mod descriptor;
pub mod device;
pub mod driver;
mod error;
mod exec;
pub mod swerr;
pub mod user;

pub use completion::{
    COMPLETION_RECORD_SIZE, CompletionRecord, FaultInfo, STATUS_CODE_MASK, STATUS_WRITE, Status,
    StatusByte,
};
pub use counters::Counters;
pub use descriptor::{DESCRIPTOR_SIZE, DescFlags, DescWord0, Descriptor, Opcode};
pub use device::{CrFault, Device, DeviceConfig, PORTAL_SIZE, WqConfig, WqMode};
pub use driver::{DsaDriver, DsaQueue};
pub use error::{Error, Result};
pub use swerr::SwErr;
pub use user::{BatchResult, DsaSession, SessionConfig, SessionStats};
