//! What the report tests share: the counters docs/report.md promises under `stats`.

/// The keys of a report's `stats` that are each a u64.
pub const U64_STATS: [&str; 14] = [
    "binds",
    "unbinds",
    "pasids_allocated",
    "page_requests",
    "stall_events",
    "iotlb_hits",
    "iotlb_misses",
    "atc_hits",
    "atc_misses",
    "atc_invalidations",
    "tlbi_commands",
    "sync_commands",
    "dma_bytes",
    "modeled_time_ns",
];
