//! Changing the attributes of mapped ranges.

use crate::table::{Entry, chunks};
use crate::tlb::PendingInvalidation;
use crate::{Attributes, Descriptor, PageTable, Result, TlbInvalidate};
use sva_addr::{Pa, Va};
use sva_physmem::{PhysMemory, Ram};

/// State of one `protect` call.
struct Protect<'a> {
    ram: &'a Ram,
    tlb: &'a dyn TlbInvalidate,
    set: Attributes,
    clear: Attributes,
    changed: usize,
    pending: PendingInvalidation,
}

impl Protect<'_> {
    /// The descriptor `d` with the requested change applied.
    fn apply(&self, d: Descriptor) -> Descriptor {
        d.with_attributes((d.attributes() - self.clear) | self.set)
    }
}

impl PageTable {
    /// For every leaf in `[va, va + size)` (page-aligned, non-empty): new attributes =
    /// `(old - clear) | set`. Blocks straddling an edge of the range are split first (only
    /// if they change). Holes are skipped. Returns the number of leaves changed.
    ///
    /// Changes to permission bits, AF, DBM and the software bits ([`Attributes::BBM_SAFE`])
    /// are written in place with a compare-exchange (keeping concurrent hardware A/D
    /// updates) and invalidated afterwards, adjacent leaves in one call, before this
    /// returns: a permission downgrade is thus always followed by an invalidation (upgrades
    /// are invalidated too, so no walker keeps faulting on a stale entry). Any other change
    /// (memory attributes, shareability, nG, ...) is made by break-before-make.
    pub fn protect(
        &self,
        ram: &Ram,
        va: Va,
        size: u64,
        set: Attributes,
        clear: Attributes,
        tlb: &dyn TlbInvalidate,
    ) -> Result<usize> {
        let end = self.check_input(va, size)?;
        let mut st = Protect {
            ram,
            tlb,
            set: Self::leaf_attrs(set),
            clear: Self::leaf_attrs(clear),
            changed: 0,
            pending: PendingInvalidation::default(),
        };
        let result = self.protect_in(
            &mut st,
            self.root(),
            self.config().start_level(),
            va.raw(),
            end,
        );
        st.pending.flush(tlb);
        result.map(|()| st.changed)
    }

    fn protect_in(
        &self,
        st: &mut Protect<'_>,
        table: Pa,
        level: u8,
        va: u64,
        end: u64,
    ) -> Result<()> {
        let mem: &dyn PhysMemory = st.ram;
        let size = self.config().level_size(level);
        for c in chunks(va, end, size) {
            let entry = self.entry_addr(table, level, c.cur);
            let old = Self::load(mem, entry)?;
            let sub = match self.classify(old, level) {
                Entry::Invalid => continue,
                Entry::Leaf if st.apply(old) == old => continue,
                Entry::Leaf if c.is_whole(size) => {
                    self.protect_leaf(st, entry, old, c.base, size)?;
                    continue;
                }
                Entry::Leaf => self.split_entry(st.ram, st.tlb, entry, old, level, c.base)?,
                Entry::Table(sub) => sub,
            };
            self.protect_in(st, sub, level + 1, c.cur, c.next)?;
        }
        Ok(())
    }

    /// Applies the change to the leaf at `entry` (covering `[base, base + size)`), which
    /// was read as `old`.
    fn protect_leaf(
        &self,
        st: &mut Protect<'_>,
        entry: Pa,
        mut old: Descriptor,
        base: u64,
        size: u64,
    ) -> Result<()> {
        let mem: &dyn PhysMemory = st.ram;
        if Attributes::needs_bbm(old.attributes(), st.apply(old).attributes()) {
            let (set, clear) = (st.set, st.clear);
            Self::bbm_replace(mem, st.tlb, entry, base, size, true, &|last| {
                last.with_attributes((last.attributes() - clear) | set)
            })?;
            st.changed += 1;
            return Ok(());
        }
        loop {
            let new = st.apply(old);
            if new == old {
                return Ok(());
            }
            match mem.compare_exchange_u64(entry, old.into_bits(), new.into_bits())? {
                Ok(_) => break,
                // Hardware set AF or marked the page dirty meanwhile: apply to that.
                Err(actual) => old = Descriptor::from_bits(actual),
            }
        }
        st.changed += 1;
        st.pending.add(st.tlb, base, size);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Granule, NoTlb, TableConfig};
    use std::cell::RefCell;

    const A: Attributes = Attributes::AF
        .union(Attributes::SH_INNER)
        .union(Attributes::AP_EL0);

    /// One invalidation: va, size, leaf_only, and the descriptor of `va` at that moment.
    type Seen = (u64, u64, bool, Option<u64>);

    /// Records each invalidation with the descriptor word of `va` at that moment.
    struct Probe<'a> {
        ram: &'a Ram,
        table: PageTable,
        log: RefCell<Vec<Seen>>,
    }
    impl TlbInvalidate for Probe<'_> {
        fn invalidate(&self, va: Va, size: u64, leaf_only: bool) {
            let d = self
                .table
                .lookup(self.ram, va)
                .unwrap()
                .map(|l| l.desc.into_bits());
            self.log.borrow_mut().push((va.raw(), size, leaf_only, d));
        }
    }

    fn setup() -> (Ram, PageTable) {
        let ram = Ram::new(64 << 20).unwrap();
        let t = PageTable::new(&ram, TableConfig::new(Granule::Size4K, 39, 40).unwrap()).unwrap();
        (ram, t)
    }

    #[test]
    fn permission_changes_are_in_place_then_invalidated() {
        let (ram, t) = setup();
        t.map(&ram, Va(0x1000), Pa(0x10_0000), 0x4000, A, false, &NoTlb)
            .unwrap();
        let probe = Probe {
            ram: &ram,
            table: t.clone(),
            log: RefCell::default(),
        };
        let n = t
            .protect(
                &ram,
                Va(0),
                0x10000,
                Attributes::AP_RO,
                Attributes::empty(),
                &probe,
            )
            .unwrap();
        assert_eq!(n, 4);
        let log = probe.log.borrow().clone();
        // One coalesced call, made after the writes: the walker-visible descriptor is
        // already read-only when the invalidation runs.
        assert_eq!(log.len(), 1);
        let (va, size, leaf_only, d) = log[0];
        assert_eq!((va, size, leaf_only), (0x1000, 0x4000, true));
        assert_ne!(d.unwrap() & Attributes::AP_RO.bits(), 0);
        for l in t.leaves(&ram, Va(0), 0x10000).unwrap() {
            assert_eq!(l.desc.attributes(), A | Attributes::AP_RO);
        }
        // Applying it again changes nothing and invalidates nothing.
        probe.log.borrow_mut().clear();
        let n = t
            .protect(
                &ram,
                Va(0),
                0x10000,
                Attributes::AP_RO,
                Attributes::empty(),
                &probe,
            )
            .unwrap();
        assert_eq!(n, 0);
        assert!(probe.log.borrow().is_empty());
    }

    #[test]
    fn memory_attribute_changes_use_break_before_make() {
        let (ram, t) = setup();
        t.map(&ram, Va(0x1000), Pa(0x10_0000), 0x1000, A, false, &NoTlb)
            .unwrap();
        let probe = Probe {
            ram: &ram,
            table: t.clone(),
            log: RefCell::default(),
        };
        let n = t
            .protect(
                &ram,
                Va(0x1000),
                0x1000,
                Attributes::ATTR_INDX_0,
                Attributes::SH_INNER,
                &probe,
            )
            .unwrap();
        assert_eq!(n, 1);
        // At the invalidation the descriptor was invalid.
        assert_eq!(*probe.log.borrow(), [(0x1000, 0x1000, true, None)]);
        let l = t.lookup(&ram, Va(0x1000)).unwrap().unwrap();
        assert_eq!(
            l.desc.attributes(),
            (A - Attributes::SH_INNER).with_attr_indx(1)
        );
    }

    #[test]
    fn straddling_blocks_split_only_when_changed() {
        let (ram, t) = setup();
        t.map(&ram, Va(0), Pa(0), 4 << 20, A, false, &NoTlb)
            .unwrap();
        // No change: the block stays whole.
        let n = t
            .protect(
                &ram,
                Va(0x1000),
                0x1000,
                Attributes::AF,
                Attributes::empty(),
                &NoTlb,
            )
            .unwrap();
        assert_eq!(n, 0);
        assert_eq!(t.leaves(&ram, Va(0), 4 << 20).unwrap().len(), 2);
        // A change over [2M - 8K, 2M + 2M): the first block splits, the second is whole.
        let n = t
            .protect(
                &ram,
                Va((2 << 20) - 0x2000),
                (2 << 20) + 0x2000,
                Attributes::UXN,
                Attributes::empty(),
                &NoTlb,
            )
            .unwrap();
        assert_eq!(n, 3);
        let l = t.leaves(&ram, Va(0), 4 << 20).unwrap();
        assert_eq!(l.len(), 513);
        let ux = |i: usize| l[i].desc.uxn();
        assert!(!ux(0) && !ux(509) && ux(510) && ux(511) && ux(512));
        assert_eq!(l[512].level, 2);
    }

    #[test]
    fn holes_are_skipped_and_bad_arguments_rejected() {
        let (ram, t) = setup();
        assert_eq!(
            t.protect(
                &ram,
                Va(0),
                1 << 30,
                Attributes::AP_RO,
                Attributes::empty(),
                &NoTlb
            ),
            Ok(0)
        );
        assert_eq!(
            t.protect(
                &ram,
                Va(0),
                0,
                Attributes::AP_RO,
                Attributes::empty(),
                &NoTlb
            ),
            Err(Error::ZeroSize)
        );
        assert!(matches!(
            t.protect(
                &ram,
                Va(0x800),
                0x1000,
                Attributes::AP_RO,
                Attributes::empty(),
                &NoTlb
            ),
            Err(Error::Misaligned { what: "va", .. })
        ));
        assert!(matches!(
            t.protect(
                &ram,
                Va(1 << 39),
                0x1000,
                Attributes::AP_RO,
                Attributes::empty(),
                &NoTlb
            ),
            Err(Error::InputOutOfRange { .. })
        ));
    }
}
