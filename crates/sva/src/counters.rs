//! Every counter of a [`World`] in one snapshot: what reports show and what the modeled
//! clock charges for. A step's activity is the difference of two snapshots.

use crate::world::World;
use serde::Serialize;
use std::collections::BTreeMap;

/// PRI page-request responses (and stall resolutions) of the SVA core, by answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Responses {
    /// Success: the pages are there, retry.
    pub success: u64,
    /// Invalid Request: bad address or access.
    pub invalid: u64,
    /// Response Failure: the handler broke.
    pub failure: u64,
}

/// A snapshot of the counters (monotonic while the world lives, except `cpu_faults`,
/// which counts the faults of live processes only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Successful binds.
    pub binds: u64,
    /// Successful unbinds.
    pub unbinds: u64,
    /// PASIDs handed to address spaces.
    pub pasids_allocated: u64,
    /// Page requests the SMMU received (PRI queue).
    pub page_requests: u64,
    /// Page Request Groups the devices sent.
    pub page_request_groups: u64,
    /// Responses of the core's fault handler.
    pub page_responses: Responses,
    /// Transactions that stalled in the SMMU.
    pub stall_events: u64,
    /// IOTLB (and micro-TLB) hits.
    pub iotlb_hits: u64,
    /// IOTLB misses.
    pub iotlb_misses: u64,
    /// Table walks.
    pub walks: u64,
    /// ATS Translation Requests the SMMU answered.
    pub ats_requests: u64,
    /// ATC lookups that hit, over every device.
    pub atc_hits: u64,
    /// ATC lookups that missed.
    pub atc_misses: u64,
    /// ATS Invalidation Requests the devices received.
    pub atc_invalidations: u64,
    /// CMD_TLBI_* commands executed.
    pub tlbi_commands: u64,
    /// CMD_SYNC commands executed.
    pub sync_commands: u64,
    /// Every command executed, by name.
    pub commands: BTreeMap<String, u64>,
    /// Events recorded in the event queue, by name.
    pub events: BTreeMap<String, u64>,
    /// Bytes the devices read and wrote by DMA.
    pub dma_bytes: u64,
    /// Page faults the CPUs took (live processes; faults served for devices excluded).
    pub cpu_faults: u64,
}

impl Counters {
    /// The counters of `world` now.
    pub fn sample(world: &World) -> Self {
        let smmu = world.p.smmu.stats();
        let mut c = Counters {
            page_requests: smmu.page_requests,
            stall_events: smmu.stalls,
            iotlb_hits: smmu.iotlb_hits,
            iotlb_misses: smmu.iotlb_misses,
            walks: smmu.walks,
            ats_requests: smmu.ats_requests,
            sync_commands: smmu.syncs,
            tlbi_commands: smmu
                .commands
                .iter()
                .filter(|(name, _)| name.starts_with("CMD_TLBI"))
                .map(|(_, n)| n)
                .sum(),
            commands: smmu
                .commands
                .iter()
                .map(|(k, v)| ((*k).to_string(), *v))
                .collect(),
            events: smmu
                .events
                .iter()
                .map(|(k, v)| ((*k).to_string(), *v))
                .collect(),
            ..Counters::default()
        };
        if let Some(sva) = &world.p.sva {
            let s = sva.stats();
            let f = sva.iopf_stats();
            c.binds = s.binds;
            c.unbinds = s.unbinds;
            c.pasids_allocated = s.pasids_allocated;
            c.page_responses = Responses {
                success: f.success,
                invalid: f.invalid,
                failure: f.failure,
            };
        }
        for d in &world.devices {
            let f = d.function.stats();
            let atc = d.function.atc().stats();
            c.page_request_groups += f.page_request_groups;
            c.atc_hits += atc.hits;
            c.atc_misses += atc.misses;
            c.atc_invalidations += f.atc_invalidations;
            c.dma_bytes += f.bytes_read + f.bytes_written;
        }
        let faults: u64 = world
            .p
            .system
            .pids()
            .into_iter()
            .filter_map(|pid| world.p.system.process(pid).ok())
            .map(|mm| mm.stats().faults)
            .sum();
        c.cpu_faults = faults.saturating_sub(c.page_responses.success);
        c
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Counters) -> Counters {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let map = |now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>| {
            now.iter()
                .map(|(k, v)| (k.clone(), d(*v, then.get(k).copied().unwrap_or(0))))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        Counters {
            binds: d(self.binds, before.binds),
            unbinds: d(self.unbinds, before.unbinds),
            pasids_allocated: d(self.pasids_allocated, before.pasids_allocated),
            page_requests: d(self.page_requests, before.page_requests),
            page_request_groups: d(self.page_request_groups, before.page_request_groups),
            page_responses: Responses {
                success: d(self.page_responses.success, before.page_responses.success),
                invalid: d(self.page_responses.invalid, before.page_responses.invalid),
                failure: d(self.page_responses.failure, before.page_responses.failure),
            },
            stall_events: d(self.stall_events, before.stall_events),
            iotlb_hits: d(self.iotlb_hits, before.iotlb_hits),
            iotlb_misses: d(self.iotlb_misses, before.iotlb_misses),
            walks: d(self.walks, before.walks),
            ats_requests: d(self.ats_requests, before.ats_requests),
            atc_hits: d(self.atc_hits, before.atc_hits),
            atc_misses: d(self.atc_misses, before.atc_misses),
            atc_invalidations: d(self.atc_invalidations, before.atc_invalidations),
            tlbi_commands: d(self.tlbi_commands, before.tlbi_commands),
            sync_commands: d(self.sync_commands, before.sync_commands),
            commands: map(&self.commands, &before.commands),
            events: map(&self.events, &before.events),
            dma_bytes: d(self.dma_bytes, before.dma_bytes),
            cpu_faults: d(self.cpu_faults, before.cpu_faults),
        }
    }

    /// Commands of every kind.
    pub fn command_count(&self) -> u64 {
        self.commands.values().sum()
    }
}
