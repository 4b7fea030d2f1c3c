//! The CPU's broadcast TLB maintenance: what Arm TLBI ... IS instructions do. Every agent
//! that subscribes sees every invalidation; an SMMU with BTM (broadcast TLB maintenance)
//! snoops these to invalidate its own TLB entries tagged with the same ASID.

use std::sync::atomic::{AtomicU64, Ordering};
use sva_addr::{Asid, Va};
use sva_sync::{RwLock, read, write};

/// One broadcast TLB invalidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tlbi {
    /// TLBI VAE1IS / RVAE1IS (or VALE1IS when `leaf_only`): entries of `asid` for
    /// `[va, va + size)`.
    Va {
        /// Address space.
        asid: Asid,
        /// First byte.
        va: Va,
        /// Length of the range.
        size: u64,
        /// Only leaf entries changed; walk caches may be kept.
        leaf_only: bool,
    },
    /// TLBI ASIDE1IS: every entry of `asid`.
    Asid(Asid),
    /// TLBI VMALLE1IS: everything.
    All,
}

/// A subscriber to broadcast TLB maintenance.
pub trait TlbSnooper: Send + Sync {
    /// Called for every broadcast invalidation, in issue order per issuing thread.
    fn tlbi(&self, op: &Tlbi);
}

/// The broadcast domain (the inner-shareable domain of the CPUs).
#[derive(Default)]
pub struct TlbBroadcast {
    subscribers: RwLock<Vec<(u64, std::sync::Arc<dyn TlbSnooper>)>>,
    next_id: AtomicU64,
    issued: AtomicU64,
}

impl core::fmt::Debug for TlbBroadcast {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TlbBroadcast")
            .field("issued", &self.issued())
            .finish_non_exhaustive()
    }
}

impl TlbBroadcast {
    /// Adds a snooper; returns its id for [`TlbBroadcast::unsubscribe`].
    pub fn subscribe(&self, snooper: std::sync::Arc<dyn TlbSnooper>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        write(&self.subscribers).push((id, snooper));
        id
    }

    /// Removes a snooper. Returns whether it was subscribed.
    pub fn unsubscribe(&self, id: u64) -> bool {
        let mut subs = write(&self.subscribers);
        let before = subs.len();
        subs.retain(|(i, _)| *i != id);
        subs.len() != before
    }

    /// Broadcasts one invalidation to every subscriber.
    pub fn send(&self, op: Tlbi) {
        self.issued.fetch_add(1, Ordering::Relaxed);
        for (_, s) in read(&self.subscribers).iter() {
            s.tlbi(&op);
        }
    }

    /// Invalidations broadcast so far.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }
}

/// The table layer's invalidation hook for one address space: every entry the tables
/// make invalid becomes a broadcast TLBI by ASID and VA.
pub(crate) struct AsidTlb<'a> {
    pub(crate) bcast: &'a TlbBroadcast,
    pub(crate) asid: Asid,
}

impl sva_vmsa::TlbInvalidate for AsidTlb<'_> {
    fn invalidate(&self, va: Va, size: u64, leaf_only: bool) {
        self.bcast.send(Tlbi::Va {
            asid: self.asid,
            va,
            size,
            leaf_only,
        });
    }
}
