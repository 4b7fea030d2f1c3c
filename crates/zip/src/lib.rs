//! A compression accelerator modelled on HiSilicon ZIP behind a QM (queue manager), the
//! uacce device of Linux's `hisi_zip` and UADK's `hisi_comp` user driver:
//!
//! - [`sqe`] / [`cqe`]: the 128-byte ZIP SQE and the 16-byte QM CQE, encoded as on the
//!   hardware;
//! - [`qm`]: the hardware: queue pairs with SQ/CQ contexts, per-queue doorbell pages,
//!   engine threads that fetch SQEs by DMA and run them ([`engine`], [`codec`]: real
//!   DEFLATE, zlib and gzip) in the queue's PASID, completions by phase bit;
//! - [`layout`]: where the SQ, the CQ and the TX/RX status words sit in a queue's DUS;
//! - [`driver`]: the kernel side, a uacce driver ([`sva_uacce::UacceOps`]) that hands out
//!   queue pairs with their ring memory (DUS) mapped for the device at an IOVA;
//! - [`user`]: the user-space library (UADK's `hisi_qm_udrv` + `wd_comp`): rings in the
//!   mapped DUS, doorbell stores, completion polling, and a compression session API.
//!
//! The device reaches memory only through [`sva_pcie::Dma`]: rings on the non-PASID
//! context at their IOVA, buffers in the queue's PASID with block-on-fault.

pub mod codec;
pub mod cqe;
pub mod driver;
pub mod engine;
mod error;
pub mod layout;
pub mod qm;
pub mod sqe;
pub mod user;

pub use error::{Error, Result};
pub use qm::{Qm, QmConfig, QueueType, ZipStats};
pub use sqe::{Alg, ReqType, Sqe};
