//! MMU notifiers: how agents that cache translations of an address space (an IOMMU, a
//! device TLB) learn that those translations change.
//!
//! # Locking order
//! `Mm` state lock → notifier list lock (read) → the notifier's own locks → TLB broadcast
//! subscribers' locks. A notifier is called with the address space locked, so it must not
//! call back into the same [`crate::Mm`] (no faults, no mmap) and must not register or
//! unregister notifiers on it. It may take its own locks and issue device commands.
//! [`crate::Mm::unregister_notifier`] waits for callbacks in flight: after it returns the
//! notifier is never called again.

use sva_addr::{Asid, Va};

/// Why a range of translations is being invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvalidateReason {
    /// munmap, madvise(DONTNEED), MAP_FIXED replacement: the pages go away.
    Unmap,
    /// mprotect, or fork write-protecting private pages for copy-on-write.
    ProtectionChange,
    /// A write fault replaced a shared copy-on-write page with a private copy.
    CowBreak,
    /// The page was swapped out.
    Reclaim,
    /// The page was moved to another frame.
    Migration,
    /// The access flag was cleared (page aging).
    AccessFlagClear,
    /// A block (huge) mapping was split into pages; same frames, same permissions.
    Split,
}

/// A range whose translations change: `[start, end)` in the address space tagged `asid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidateRange {
    /// The address space's ASID (what broadcast TLB maintenance uses).
    pub asid: Asid,
    /// First byte.
    pub start: Va,
    /// One past the last byte.
    pub end: Va,
    /// Why.
    pub reason: InvalidateReason,
}

/// A secondary MMU's view of an address space.
///
/// For every change the address space calls `invalidate_range_start`, updates its tables
/// (with CPU TLB maintenance broadcast), then calls `invalidate_range_end`. When
/// `invalidate_range_end` returns, the secondary MMU must hold no stale translation of the
/// range: only then are the old frames freed or reused.
pub trait MmuNotifier: Send + Sync {
    /// Translations of `range` are about to change.
    fn invalidate_range_start(&self, range: &InvalidateRange) {
        let _ = range;
    }

    /// Translations of `range` have changed; flush them before returning.
    fn invalidate_range_end(&self, range: &InvalidateRange);

    /// The address space is exiting: called once, before any page is torn down, with the
    /// tables still intact. After this the notifier is dropped from the list.
    fn release(&self, asid: Asid) {
        let _ = asid;
    }
}

/// Handle returned by [`crate::Mm::register_notifier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NotifierId(pub(crate) u64);
