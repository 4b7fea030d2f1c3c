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

/// The live counters (behind the state lock).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub transactions: u64,
    pub walks: u64,
    pub commands: BTreeMap<&'static str, u64>,
    pub command_errors: u64,
    pub syncs: u64,
    pub events: BTreeMap<&'static str, u64>,
    pub events_lost: u64,
    pub page_requests: u64,
    pub page_requests_lost: u64,
    pub pri_auto_responses: u64,
    pub stalls: u64,
    pub ats_requests: u64,
    pub msi_writes: u64,
}

impl Counters {
    pub fn snapshot(&self, iotlb: &Iotlb, cfg: &ConfigCache) -> SmmuStats {
        SmmuStats {
            transactions: self.transactions,
            iotlb_hits: iotlb.hits,
            iotlb_misses: iotlb.misses,
            iotlb_inserts: iotlb.inserts,
            iotlb_evictions: iotlb.evictions,
            iotlb_invalidations: iotlb.invalidations,
            iotlb_entries: iotlb.len(),
            walks: self.walks,
            config_hits: cfg.hits,
            config_misses: cfg.misses,
            config_entries: cfg.len(),
            commands: self.commands.clone(),
            command_errors: self.command_errors,
            syncs: self.syncs,
            events: self.events.clone(),
            events_lost: self.events_lost,
            page_requests: self.page_requests,
            page_requests_lost: self.page_requests_lost,
            pri_auto_responses: self.pri_auto_responses,
            stalls: self.stalls,
            stalled_now: 0,
            ats_requests: self.ats_requests,
            msi_writes: self.msi_writes,
        }
    }
}
