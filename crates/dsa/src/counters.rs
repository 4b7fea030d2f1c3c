//! Device counters (the perfmon-like statistics of the model).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the device counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Descriptors executed (batch members included), by raw opcode.
    pub by_opcode: BTreeMap<u8, u64>,
    /// Descriptors completed, by status code (bit 7 cleared); aborted ones are not counted.
    pub by_status: BTreeMap<u8, u64>,
    /// Descriptors accepted by a work queue.
    pub submitted: u64,
    /// ENQCMDs answered with retry (work queue full, disabled, or the PASID being drained).
    pub retries: u64,
    /// Descriptors dropped at submission (see the SWERR codes).
    pub dropped: u64,
    /// Descriptors aborted by a drain that timed out (queued ones removed, running ones
    /// stopped); no completion record is written for them.
    pub aborted: u64,
    /// Bytes read by operations (descriptor lists and completion records excluded).
    pub bytes_read: u64,
    /// Bytes written by operations (completion records excluded).
    pub bytes_written: u64,
    /// DMA faults seen by operations (with or without block-on-fault).
    pub page_faults: u64,
    /// Completion records that could not be written (CRA_XLAT).
    pub cr_faults: u64,
    /// Completion interrupts requested (RCI).
    pub interrupts: u64,
}

impl Counters {
    /// Descriptors executed with `opcode`.
    pub fn opcode(&self, opcode: u8) -> u64 {
        self.by_opcode.get(&opcode).copied().unwrap_or(0)
    }

    /// Descriptors completed with status `code`.
    pub fn status(&self, code: u8) -> u64 {
        self.by_status.get(&code).copied().unwrap_or(0)
    }
}

/// The live counters.
pub(crate) struct CounterSet {
    by_opcode: Vec<AtomicU64>,
    by_status: Vec<AtomicU64>,
    pub(crate) submitted: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) aborted: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) page_faults: AtomicU64,
    pub(crate) cr_faults: AtomicU64,
    pub(crate) interrupts: AtomicU64,
}

fn zeros(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl CounterSet {
    pub(crate) fn new() -> Self {
        Self {
            by_opcode: zeros(256),
            by_status: zeros(128),
            submitted: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            page_faults: AtomicU64::new(0),
            cr_faults: AtomicU64::new(0),
            interrupts: AtomicU64::new(0),
        }
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn opcode(&self, op: u8) {
        Self::add(&self.by_opcode[usize::from(op)], 1);
    }

    pub(crate) fn status(&self, code: u8) {
        Self::add(&self.by_status[usize::from(code & 0x7f)], 1);
    }

    pub(crate) fn snapshot(&self) -> Counters {
        let map = |v: &[AtomicU64]| {
            v.iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let n = c.load(Ordering::Relaxed);
                    (n != 0).then_some((i as u8, n))
                })
                .collect()
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            by_opcode: map(&self.by_opcode),
            by_status: map(&self.by_status),
            submitted: get(&self.submitted),
            retries: get(&self.retries),
            dropped: get(&self.dropped),
            aborted: get(&self.aborted),
            bytes_read: get(&self.bytes_read),
            bytes_written: get(&self.bytes_written),
            page_faults: get(&self.page_faults),
            cr_faults: get(&self.cr_faults),
            interrupts: get(&self.interrupts),
        }
    }
}
