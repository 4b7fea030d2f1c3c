//! CPU address spaces for sva: the "process" side of Shared Virtual Addressing.
//!
//! A [`System`] owns simulated RAM, an ASID allocator, a swap store and the CPUs' TLB
//! broadcast domain. Each process is an [`Mm`]: VMAs plus a VMSAv8-64 stage-1 translation
//! table in simulated physical memory, tagged with an ASID. CPU loads and stores
//! ([`Mm::read`], [`Mm::write`]) walk those very tables and take page faults through
//! [`Mm::handle_fault`], which also serves I/O page faults: an SMMU sharing the tables
//! (SVA) walks the same descriptors.
//!
//! Every change of a translation is bracketed by [`MmuNotifier`] calls and broadcast TLB
//! invalidations ([`Tlbi`]); frames are freed only after `invalidate_range_end` returned.
//! The locking order is documented in [`notifier`].

mod asid;
mod error;
mod mm;
pub mod notifier;
mod prot;
mod special;
mod swap;
mod system;
mod tlb;
mod vma;

pub use asid::AsidAllocator;
pub use error::{Error, Result, SegvCode};
pub use mm::{Mm, MmStats};
pub use notifier::{InvalidateRange, InvalidateReason, MmuNotifier, NotifierId};
pub use prot::{AccessKind, MapFlags, Prot};
pub use special::{FrameRegion, IoError, IoMemory};
pub use swap::{SwapSlot, SwapStats, SwapStore};
pub use system::{MmConfig, Pid, System};
pub use tlb::{TlbBroadcast, TlbSnooper, Tlbi};
pub use vma::VmaInfo;

/// MAIR_EL1 as programmed for every address space: Attr0 = Normal memory, inner/outer
/// write-back read/write-allocate (0xff); Attr1 = Device-nGnRE (0x04). Page descriptors
/// of ordinary memory use AttrIndx 0. An SMMU context descriptor sharing the tables must
/// carry the same MAIR.
pub const MAIR: u64 = 0xff | (0x04 << 8);
/// AttrIndx of ordinary (normal, cacheable) memory in [`MAIR`].
pub const ATTR_INDEX_NORMAL: u8 = 0;
/// Lowest address mmap places anything at without MAP_FIXED (vm.mmap_min_addr).
pub const MMAP_MIN_ADDR: u64 = 0x10000;
