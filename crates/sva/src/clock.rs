//! The modeled clock: hardware actions cost modeled time from a cost table, so runs report
//! how long the work would take on a machine like the one the table describes, whatever
//! the host's speed. Sources of the defaults are in docs/modeled-time.md.
//!
//! The model is serial: a step's modeled time is the sum of the costs of everything it
//! caused (no overlap between devices, walks or DMA). It is deterministic: the same
//! counters give the same time.

use crate::counters::Counters;
use serde::{Deserialize, Serialize};

/// Cost of each hardware action, in nanoseconds (bandwidth in bytes per nanosecond).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostTable {
    /// One SMMU translation that hits the IOTLB.
    pub iotlb_hit_ns: u64,
    /// One level of a table walk (a descriptor read from memory).
    pub walk_level_ns: u64,
    /// Levels a walk reads (4 for a 48-bit space with 4 KiB pages).
    pub walk_levels: u64,
    /// One ATC lookup in the device.
    pub atc_hit_ns: u64,
    /// One ATS Translation Request and its Completion over PCIe.
    pub ats_round_trip_ns: u64,
    /// One Page Request Group until its PRG Response: PRI queue, interrupt, the fault
    /// handler, CMD_PRI_RESP (also charged per stalled transaction until CMD_RESUME).
    pub page_request_round_trip_ns: u64,
    /// One SMMU command executed (CMD_SYNC included).
    pub command_ns: u64,
    /// One CPU page fault.
    pub cpu_fault_ns: u64,
    /// DMA bandwidth in bytes per nanosecond (GB/s).
    pub dma_bytes_per_ns: f64,
}

impl Default for CostTable {
    fn default() -> Self {
        Self {
            iotlb_hit_ns: 19,
            walk_level_ns: 100,
            walk_levels: 4,
            atc_hit_ns: 1,
            ats_round_trip_ns: 1_000,
            page_request_round_trip_ns: 4_600,
            command_ns: 150,
            cpu_fault_ns: 1_900,
            dma_bytes_per_ns: 32.0,
        }
    }
}

impl CostTable {
    /// The modeled time of the activity in `c` (a difference of two snapshots).
    pub fn cost_ns(&self, c: &Counters) -> u64 {
        let dma = if self.dma_bytes_per_ns > 0.0 {
            (c.dma_bytes as f64 / self.dma_bytes_per_ns).round() as u64
        } else {
            0
        };
        self.parts(c)
            .iter()
            .fold(dma, |sum, (_, ns)| sum.saturating_add(*ns))
    }

    /// The cost of `c` by action (DMA transfer excluded), for traces and reports.
    pub fn parts(&self, c: &Counters) -> [(&'static str, u64); 7] {
        // Saturating: a cost table from a scenario file may hold anything.
        let times = |n: u64, ns: u64| n.saturating_mul(ns);
        [
            ("iotlb_hits", times(c.iotlb_hits, self.iotlb_hit_ns)),
            (
                "walks",
                times(c.walks, self.walk_levels.saturating_mul(self.walk_level_ns)),
            ),
            ("atc_hits", times(c.atc_hits, self.atc_hit_ns)),
            (
                "ats_requests",
                times(c.ats_requests, self.ats_round_trip_ns),
            ),
            (
                "page_requests",
                times(
                    c.page_request_groups.saturating_add(c.stall_events),
                    self.page_request_round_trip_ns,
                ),
            ),
            ("commands", times(c.command_count(), self.command_ns)),
            ("cpu_faults", times(c.cpu_faults, self.cpu_fault_ns)),
        ]
    }
}

/// A modeled clock that steps forward by costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModeledClock {
    now_ns: u64,
}

impl ModeledClock {
    /// Modeled nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Moves the clock forward by `ns`; returns the time before.
    pub fn advance(&mut self, ns: u64) -> u64 {
        let then = self.now_ns;
        self.now_ns = self.now_ns.saturating_add(ns);
        then
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_add_up_per_action() {
        let t = CostTable::default();
        let mut c = Counters {
            iotlb_hits: 10,
            walks: 2,
            page_request_groups: 1,
            dma_bytes: 3200,
            ..Counters::default()
        };
        c.commands.insert("CMD_SYNC".into(), 3);
        assert_eq!(t.cost_ns(&c), 10 * 19 + 2 * 4 * 100 + 4_600 + 3 * 150 + 100);
        assert_eq!(t.cost_ns(&Counters::default()), 0);
        let huge = CostTable {
            iotlb_hit_ns: u64::MAX,
            ..t
        };
        assert_eq!(
            huge.cost_ns(&c),
            u64::MAX,
            "saturates instead of overflowing"
        );
        let mut clock = ModeledClock::default();
        assert_eq!(clock.advance(5), 0);
        assert_eq!(clock.now_ns(), 5);
    }
}
