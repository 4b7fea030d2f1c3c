//! The TLB maintenance hook that table updates call.

use sva_addr::Va;

/// What a table update calls to have cached translations dropped: a CPU's TLBI, an SMMU's
/// CMD_TLBI_NH_VA, an ATS invalidation, or all of them.
///
/// The table code calls it after an entry that was valid has been made invalid (step 2 of
/// break-before-make, unmap, the removal of an empty table) and after a permission change
/// written in place, for the input range the entry covered. When it returns, nobody may
/// still use the old entry: the table code only then writes the replacement (BBM) or frees
/// a removed table.
pub trait TlbInvalidate {
    /// Invalidate cached translations of `[va, va + size)`. `leaf_only` is `false` when a
    /// table descriptor was removed, so walk-cache (intermediate) entries must go too.
    fn invalidate(&self, va: Va, size: u64, leaf_only: bool);
}

/// A [`TlbInvalidate`] that does nothing: for tables no walker uses yet (or any more).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoTlb;

impl TlbInvalidate for NoTlb {
    fn invalidate(&self, _va: Va, _size: u64, _leaf_only: bool) {}
}

/// Coalesces leaf invalidations of adjacent ranges into one call. Used where the
/// architecture allows invalidating after a batch of writes (unmap, in-place permission
/// changes): the caller flushes before returning.
#[derive(Debug, Default)]
pub(crate) struct PendingInvalidation {
    run: Option<(u64, u64)>,
}

impl PendingInvalidation {
    /// Records that `[va, va + size)` needs a leaf invalidation.
    pub(crate) fn add(&mut self, tlb: &dyn TlbInvalidate, va: u64, size: u64) {
        match self.run {
            Some((start, end)) if end == va => self.run = Some((start, va + size)),
            _ => {
                self.flush(tlb);
                self.run = Some((va, va + size));
            }
        }
    }

    /// Issues the pending invalidation, if any.
    pub(crate) fn flush(&mut self, tlb: &dyn TlbInvalidate) {
        if let Some((start, end)) = self.run.take() {
            tlb.invalidate(Va(start), end - start, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Log(RefCell<Vec<(u64, u64, bool)>>);
    impl TlbInvalidate for Log {
        fn invalidate(&self, va: Va, size: u64, leaf_only: bool) {
            self.0.borrow_mut().push((va.raw(), size, leaf_only));
        }
    }

    #[test]
    fn adjacent_ranges_coalesce() {
        let log = Log::default();
        let mut p = PendingInvalidation::default();
        p.add(&log, 0x1000, 0x1000);
        p.add(&log, 0x2000, 0x20_0000);
        p.add(&log, 0x40_0000, 0x1000);
        p.flush(&log);
        p.flush(&log);
        assert_eq!(
            *log.0.borrow(),
            [(0x1000, 0x20_1000, true), (0x40_0000, 0x1000, true)]
        );
        NoTlb.invalidate(Va(0), 1, false);
    }
}
