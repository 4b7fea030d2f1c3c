//! Unmapping ranges and freeing the tables that become empty.

use crate::table::{Entry, chunks};
use crate::tlb::PendingInvalidation;
use crate::{Leaf, PageTable, Result, TlbInvalidate};
use sva_addr::{Pa, Va};
use sva_physmem::{PhysMemory, Ram};

/// State of one `unmap` call.
struct Unmap<'a> {
    ram: &'a Ram,
    tlb: &'a dyn TlbInvalidate,
    removed: Vec<Leaf>,
    pending: PendingInvalidation,
}

impl PageTable {
    /// Removes every leaf in `[va, va + size)` (page-aligned, non-empty, inside the input
    /// address space). Blocks straddling an edge of the range are split first, so only the
    /// part inside the range goes. Holes are skipped.
    ///
    /// Returns the removed leaves in input-address order, each as it was last (with any
    /// access-flag or dirty update hardware made before removal) and inside the range.
    ///
    /// TLB maintenance: removed leaves are invalidated after their descriptors are cleared,
    /// adjacent ones in one call, before this returns; a table that becomes empty is
    /// unlinked, invalidated with `leaf_only = false`, and only then freed to `ram`. The
    /// root table is never freed. Leaf output frames are never freed: that is the caller's
    /// business, once this has returned.
    pub fn unmap(
        &self,
        ram: &Ram,
        va: Va,
        size: u64,
        tlb: &dyn TlbInvalidate,
    ) -> Result<Vec<Leaf>> {
        let end = self.check_input(va, size)?;
        let mut st = Unmap {
            ram,
            tlb,
            removed: Vec::new(),
            pending: PendingInvalidation::default(),
        };
        let result = self.unmap_in(
            &mut st,
            self.root(),
            self.config().start_level(),
            va.raw(),
            end,
        );
        // Whatever happened, what was cleared gets invalidated.
        st.pending.flush(tlb);
        result.map(|()| st.removed)
    }

    fn unmap_in(&self, st: &mut Unmap<'_>, table: Pa, level: u8, va: u64, end: u64) -> Result<()> {
        let mem: &dyn PhysMemory = st.ram;
        let size = self.config().level_size(level);
        for c in chunks(va, end, size) {
            let entry = self.entry_addr(table, level, c.cur);
            let old = Self::load(mem, entry)?;
            let sub = match self.classify(old, level) {
                Entry::Invalid => {
                    // Clear invalid but non-zero encodings too, so that emptiness is "all
                    // zero" and nothing stale survives in the range.
                    if old.into_bits() != 0 {
                        mem.compare_exchange_u64(entry, old.into_bits(), 0)?.ok();
                    }
                    continue;
                }
                Entry::Leaf if c.is_whole(size) => {
                    let last = Self::take(mem, entry)?;
                    // `take` returns the final value, which hardware can only have changed
                    // in its access flag or dirty state.
                    st.removed.push(self.leaf_of(last, level, c.base));
                    st.pending.add(st.tlb, c.base, size);
                    continue;
                }
                Entry::Leaf => self.split_entry(st.ram, st.tlb, entry, old, level, c.base)?,
                Entry::Table(sub) => sub,
            };
            self.unmap_in(st, sub, level + 1, c.cur, c.next)?;
            if self.is_empty_table(mem, sub, level + 1)? {
                Self::take(mem, entry)?;
                // The table's range may still sit in walk caches: invalidate before freeing.
                st.tlb.invalidate(Va(c.base), size, false);
                st.ram.put_zeroed(sub)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attributes, Error, Granule, NoTlb, TableConfig};
    use std::cell::RefCell;

    const A: Attributes = Attributes::AF.union(Attributes::SH_INNER);

    #[derive(Default)]
    struct Log(RefCell<Vec<(u64, u64, bool)>>);
    impl TlbInvalidate for Log {
        fn invalidate(&self, va: Va, size: u64, leaf_only: bool) {
            self.0.borrow_mut().push((va.raw(), size, leaf_only));
        }
    }

    fn setup(g: Granule) -> (Ram, PageTable) {
        let ram = Ram::new(64 << 20).unwrap();
        let t = PageTable::new(&ram, TableConfig::new(g, 39, 40).unwrap()).unwrap();
        (ram, t)
    }

    #[test]
    fn unmap_everything_frees_all_tables_but_the_root() {
        for g in Granule::ALL {
            let (ram, t) = setup(g);
            let root_frames = g.size() / 4096;
            let page = g.size();
            t.map(&ram, Va(0x4000_0000), Pa(0), 100 * page, A, false, &NoTlb)
                .unwrap();
            t.map(&ram, Va(0x70_0000_0000), Pa(0), 3 * page, A, true, &NoTlb)
                .unwrap();
            assert!(ram.stats().used_frames > root_frames);
            let removed = t.unmap(&ram, Va(0), 1 << 39, &NoTlb).unwrap();
            assert_eq!(removed.len(), 103);
            assert!(removed.windows(2).all(|w| w[0].va < w[1].va));
            assert_eq!(ram.stats().used_frames, root_frames);
            assert_eq!(t.table_count(&ram).unwrap(), 1);
            t.destroy(&ram).unwrap();
            assert_eq!(ram.stats().used_frames, 0);
        }
    }

    #[test]
    fn straddling_blocks_are_split_and_pieces_clipped() {
        let (ram, t) = setup(Granule::Size4K);
        t.map(&ram, Va(1 << 30), Pa(5 << 30), 1 << 30, A, false, &NoTlb)
            .unwrap();
        let start = (1 << 30) + (2 << 20) - 0x1000;
        let size = 0x1000 + (2 << 20) + 0x2000;
        let log = Log::default();
        let removed = t.unmap(&ram, Va(start), size, &log).unwrap();
        let got: Vec<_> = removed
            .iter()
            .map(|l| (l.va.raw(), l.size, l.level))
            .collect();
        assert_eq!(
            got,
            [
                (start, 0x1000, 3),
                (start + 0x1000, 2 << 20, 2),
                (start + 0x1000 + (2 << 20), 0x1000, 3),
                (start + 0x2000 + (2 << 20), 0x1000, 3),
            ]
        );
        for l in &removed {
            assert_eq!(l.pa.raw(), l.va.raw() + (4 << 30));
            assert!(l.va.raw() >= start && l.end().raw() <= start + size);
        }
        assert!(t.lookup(&ram, Va(start - 0x1000)).unwrap().is_some());
        assert!(t.lookup(&ram, Va(start + size)).unwrap().is_some());
        assert!(t.lookup(&ram, Va(start + 0x5000)).unwrap().is_none());
        // One block split (level 1), two page splits (level 2), then the removals as one
        // coalesced range.
        let calls = log.0.borrow().clone();
        assert_eq!(calls.last(), Some(&(start, size, true)));
        assert!(calls.contains(&(1 << 30, 1 << 30, true)));
    }

    #[test]
    fn holes_are_skipped_and_invalid_junk_cleared() {
        let (ram, t) = setup(Granule::Size4K);
        t.map(&ram, Va(0x3000), Pa(0x3000), 0x1000, A, false, &NoTlb)
            .unwrap();
        // A non-zero invalid descriptor (software-encoded, say) next to it.
        let leaf = t.lookup(&ram, Va(0x3000)).unwrap().unwrap();
        let tables = t.table_count(&ram).unwrap();
        assert_eq!(tables, 3);
        let l3 = {
            let l2 = Pa(ram.load_u64(t.root()).unwrap() & 0xffff_ffff_f000);
            Pa(ram.load_u64(l2).unwrap() & 0xffff_ffff_f000)
        };
        ram.store_u64(l3 + 8 * 5, 0xdead_0000).unwrap();
        let removed = t.unmap(&ram, Va(0), 0x10_0000, &NoTlb).unwrap();
        assert_eq!(removed, [leaf]);
        assert_eq!(t.table_count(&ram).unwrap(), 1);
        // Unmapping a hole is fine and returns nothing.
        assert!(t.unmap(&ram, Va(0), 0x10_0000, &NoTlb).unwrap().is_empty());
    }

    #[test]
    fn empty_tables_are_invalidated_before_being_freed() {
        let (ram, t) = setup(Granule::Size4K);
        t.map(&ram, Va(0x20_0000), Pa(0), 0x1000, A, false, &NoTlb)
            .unwrap();
        let log = Log::default();
        t.unmap(&ram, Va(0x20_0000), 0x1000, &log).unwrap();
        assert_eq!(
            *log.0.borrow(),
            [
                (0x20_0000, 2 << 20, false),
                (0, 1 << 30, false),
                (0x20_0000, 0x1000, true)
            ]
        );
    }

    #[test]
    fn bad_unmap_arguments() {
        let (ram, t) = setup(Granule::Size64K);
        assert_eq!(t.unmap(&ram, Va(0), 0, &NoTlb), Err(Error::ZeroSize));
        assert!(matches!(
            t.unmap(&ram, Va(0x1000), 0x10000, &NoTlb),
            Err(Error::Misaligned { what: "va", .. })
        ));
        assert!(matches!(
            t.unmap(&ram, Va(0), 0x1000, &NoTlb),
            Err(Error::Misaligned { what: "size", .. })
        ));
        assert!(matches!(
            t.unmap(&ram, Va(0), (1 << 39) + 0x10000, &NoTlb),
            Err(Error::InputOutOfRange { .. })
        ));
    }
}
