//! Simulated physical memory for sva.
//!
//! - [`PhysMemory`]: byte and aligned 64-bit atomic access at physical addresses. Page-table
//!   descriptors are read and updated with the atomics, because hardware access/dirty-flag
//!   updates (an SMMU with HTTU) race with the CPU's own updates.
//! - [`SparseRam`]: the default backing. Frames are materialised on first write, so a 1 TiB
//!   machine costs host memory only for what is touched.
//! - [`GuestRam`]: the same API over a rust-vmm `vm-memory` [`vm_memory::GuestMemory`], so the
//!   models can run on a VMM's guest RAM.
//! - [`FrameAllocator`]: a buddy allocator of 4 KiB frames with per-allocation reference
//!   counts (copy-on-write) and statistics that let tests prove nothing leaks.
//! - [`Ram`]: memory and allocator together, what the layers above use.
//!
//! docs/memory.md explains why the default backing is our own frame store.

mod allocator;
mod error;
mod guest;
mod memory;
mod ram;
mod sparse;

pub use allocator::{AllocStats, FrameAllocator, MAX_ORDER};
pub use error::{Error, Result};
pub use guest::GuestRam;
pub use memory::PhysMemory;
pub use ram::Ram;
pub use sparse::SparseRam;
pub use sva_addr::Pa;

/// Size of the smallest allocatable frame: the 4 KiB translation granule.
pub const FRAME_SIZE: u64 = 4096;
/// log2 of [`FRAME_SIZE`].
pub const FRAME_SHIFT: u32 = 12;
/// Largest simulated RAM: a 48-bit output address space (SMMU_IDR5.OAS = 0b101).
pub const MAX_RAM_SIZE: u64 = 1 << 48;
/// RAM size used when none is configured.
pub const DEFAULT_RAM_SIZE: u64 = 4 << 30;
