//! Statistics.

use std::collections::BTreeMap;

use crate::config::ConfigCache;
use crate::iotlb::Iotlb;

/// A snapshot of the model's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmmuStats {
    /// Transactions presented to [`crate::Smmu::translate`].
    pub transactions: u64,
    /// IOTLB hits.
    pub iotlb_hits: u64,
    /// IOTLB misses.
    pub iotlb_misses: u64,
    /// IOTLB entries inserted.
    pub iotlb_inserts: u64,
    /// IOTLB entries evicted to make room.
    pub iotlb_evictions: u64,
    /// IOTLB entries removed by invalidation (commands and broadcasts).
    pub iotlb_invalidations: u64,
    /// IOTLB entries currently held.
    pub iotlb_entries: usize,
    /// Translation table walks.
    pub walks: u64,
    /// Configuration cache hits (STE and CD lookups).
    pub config_hits: u64,
    /// Configuration cache misses (structures fetched from memory).
    pub config_misses: u64,
    /// Configuration cache entries currently held.
    pub config_entries: usize,
    /// Commands consumed, by architectural name.
    pub commands: BTreeMap<&'static str, u64>,
    /// Commands that stopped the queue (CERROR_*).
    pub command_errors: u64,
    /// CMD_SYNCs completed.
    pub syncs: u64,
    /// Events recorded in the Event queue, by architectural name.
    pub events: BTreeMap<&'static str, u64>,
    /// Events lost because the Event queue was full or disabled.
    pub events_lost: u64,
    /// Page requests received.
    pub page_requests: u64,
    /// Page requests discarded (queue disabled, full or overflowed).
    pub page_requests_lost: u64,
    /// Automatic PRG responses sent by the SMMU.
    pub pri_auto_responses: u64,
    /// Transactions stalled.
    pub stalls: u64,
    /// Stalled transactions outstanding.
    pub stalled_now: usize,
    /// ATS Translation Requests.
    pub ats_requests: u64,
    /// MSI writes.
    pub msi_writes: u64,
}

impl SmmuStats {
    /// The snapshot of the live counters `self` (the ones kept behind the state lock, where
    /// the IOTLB, configuration cache and stall fields stay zero), with the IOTLB's and the
    /// configuration cache's own counts filled in.
    pub(crate) fn snapshot(&self, iotlb: &Iotlb, cfg: &ConfigCache) -> Self {
        Self {
            iotlb_hits: iotlb.hits,
            iotlb_misses: iotlb.misses,
            iotlb_inserts: iotlb.inserts,
            iotlb_evictions: iotlb.evictions,
            iotlb_invalidations: iotlb.invalidations,
            iotlb_entries: iotlb.len(),
            config_hits: cfg.hits,
            config_misses: cfg.misses,
            config_entries: cfg.len(),
            ..self.clone()
        }
    }
}
