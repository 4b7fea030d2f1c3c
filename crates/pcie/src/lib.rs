//! PCIe functions as the SMMU sees them: a Requester ID (StreamID), the PASID, ATS and PRI
//! capabilities, a device TLB (ATC) filled by ATS, and a DMA engine that reaches memory
//! through the SMMU (untranslated, or translated from the ATC), resolving I/O page faults
//! through PRI page requests or SMMU stalls.
//!
//! Accelerators use memory only through the [`Dma`] trait, which [`PciFunction`]
//! implements.

pub mod atc;
mod caps;
mod dma;
mod error;
mod function;

pub use atc::{Atc, AtcStats};
pub use caps::{CapState, Capabilities, Stu};
pub use dma::{Dma, DmaCtx, DmaFault, FaultReason};
pub use error::Error;
pub use function::{DmaConfig, FunctionStats, PciFunction};
