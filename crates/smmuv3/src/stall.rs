//! Stalled transactions (§3.12.2 Stall model): each waits under a STAG until CMD_RESUME or
//! CMD_STALL_TERM.

use std::collections::BTreeMap;

use sva_addr::{Pasid, StreamId};

use crate::Notify;

/// SMMU_IDR5.STALL_MAX: stalled transactions the model holds at once.
pub(crate) const STALL_MAX: u16 = 256;

/// A stalled transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stalled {
    pub sid: StreamId,
    #[expect(
        dead_code,
        reason = "kept for diagnostics and a future CMD_RESUME check"
    )]
    pub ssid: Option<Pasid>,
}

/// The stalled transactions by STAG.
#[derive(Debug)]
pub(crate) struct StallTable {
    max: usize,
    next: u16,
    by_stag: BTreeMap<u16, Stalled>,
}

impl StallTable {
    pub fn new(max: u16) -> Self {
        Self {
            max: usize::from(max),
            next: 0,
            by_stag: BTreeMap::new(),
        }
    }

    /// Allocates a STAG for a new stalled transaction, `None` if the table is full.
    pub fn stall(&mut self, sid: StreamId, ssid: Option<Pasid>) -> Option<u16> {
        if self.by_stag.len() >= self.max {
            return None;
        }
        // At most `max + 1` probes: fewer than `max` tags are in use.
        for _ in 0..=self.max {
            let stag = self.next;
            self.next = self.next.wrapping_add(1);
            if let std::collections::btree_map::Entry::Vacant(e) = self.by_stag.entry(stag) {
                e.insert(Stalled { sid, ssid });
                return Some(stag);
            }
        }
        None
    }

    /// CMD_RESUME: resolves the transaction `stag` of `sid`, if there is one.
    pub fn resume(&mut self, sid: StreamId, stag: u16, retry: bool) -> Option<Notify> {
        match self.by_stag.get(&stag) {
            Some(s) if s.sid == sid => {
                self.by_stag.remove(&stag);
                Some(Notify::StallResolved { sid, stag, retry })
            }
            _ => None,
        }
    }

    /// CMD_STALL_TERM: terminates every stalled transaction of `sid`.
    pub fn terminate_sid(&mut self, sid: StreamId) -> Vec<Notify> {
        let stags: Vec<u16> = self
            .by_stag
            .iter()
            .filter(|(_, s)| s.sid == sid)
            .map(|(&t, _)| t)
            .collect();
        stags
            .into_iter()
            .filter_map(|stag| self.resume(sid, stag, false))
            .collect()
    }

    /// Terminates everything (SMMUEN cleared).
    pub fn terminate_all(&mut self) -> Vec<Notify> {
        std::mem::take(&mut self.by_stag)
            .into_iter()
            .map(|(stag, s)| Notify::StallResolved {
                sid: s.sid,
                stag,
                retry: false,
            })
            .collect()
    }

    /// Whether `stag` is a stalled transaction of `sid`.
    pub fn contains(&self, sid: StreamId, stag: u16) -> bool {
        self.by_stag.get(&stag).is_some_and(|s| s.sid == sid)
    }

    /// Stalled transactions outstanding.
    pub fn len(&self) -> usize {
        self.by_stag.len()
    }
}
