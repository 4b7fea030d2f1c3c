//! Mapping ranges and splitting blocks.

use crate::table::{Entry, chunks};
use crate::{Attributes, Descriptor, Error, LEAF_LEVEL, PageTable, Result, TlbInvalidate};
use sva_addr::{Pa, Va};
use sva_physmem::{PhysMemory, Ram};

/// What one `map` call writes.
struct MapRequest<'a> {
    ram: &'a Ram,
    tlb: &'a dyn TlbInvalidate,
    /// Input address mapped to `pa`.
    va: u64,
    pa: u64,
    attrs: Attributes,
    pages_only: bool,
}

impl MapRequest<'_> {
    /// The output address of input address `at`.
    fn pa_of(&self, at: u64) -> u64 {
        self.pa + (at - self.va)
    }
}

impl PageTable {
    /// Maps `[va, va + size)` to `[pa, pa + size)` with leaf attributes `attrs` (the valid
    /// and descriptor-type bits are added here).
    ///
    /// `va`, `pa` and `size` must be page-aligned, `size > 0`, `va + size <= 2^ia_bits` and
    /// `pa + size <= 2^oa_bits`. Each piece is mapped with the largest block the
    /// configuration allows where the input address, output address and remaining length
    /// are aligned to it, unless `pages_only`. Next-level tables are allocated from `ram`.
    ///
    /// Existing mappings in the range are replaced:
    /// - an identical leaf is left alone;
    /// - a different valid leaf is replaced by break-before-make: the descriptor is made
    ///   invalid, `tlb` invalidates its range, then the new descriptor is stored;
    /// - a block of which only part is mapped anew is first split into a next-level table of
    ///   equivalent entries (see [`split_block`](Self::split_block));
    /// - a table where a block now goes is removed (break-before-make with a walk-cache
    ///   invalidation) and freed with everything below it. Leaf frames are never freed.
    ///
    /// On error (e.g. RAM exhausted) the part of the range mapped so far stays mapped.
    #[expect(
        clippy::too_many_arguments,
        reason = "the signature is the layer's contract with its callers"
    )]
    pub fn map(
        &self,
        ram: &Ram,
        va: Va,
        pa: Pa,
        size: u64,
        attrs: Attributes,
        pages_only: bool,
        tlb: &dyn TlbInvalidate,
    ) -> Result<()> {
        let end = self.check_input(va, size)?;
        self.check_output(pa, size)?;
        let req = MapRequest {
            ram,
            tlb,
            va: va.raw(),
            pa: pa.raw(),
            attrs: Self::leaf_attrs(attrs),
            pages_only,
        };
        self.map_in(
            &req,
            self.root(),
            self.config().start_level(),
            va.raw(),
            end,
        )
    }

    /// Replaces the block leaf containing `va` with a next-level table of equivalent entries
    /// (blocks where the next level has them, pages otherwise), by break-before-make.
    ///
    /// [`Error::NotMapped`] if nothing maps `va`, [`Error::NotABlock`] if a page does.
    pub fn split_block(&self, ram: &Ram, va: Va, tlb: &dyn TlbInvalidate) -> Result<()> {
        self.check_in_ia(va, 1)?;
        let (entry, leaf) = self.find(ram, va)?.ok_or(Error::NotMapped(va))?;
        if leaf.level == LEAF_LEVEL {
            return Err(Error::NotABlock {
                va,
                level: leaf.level,
            });
        }
        self.split_entry(ram, tlb, entry, leaf.desc, leaf.level, leaf.va.raw())?;
        Ok(())
    }

    /// Maps `[va, end)` through the table at `table` (at `level`).
    fn map_in(&self, req: &MapRequest<'_>, table: Pa, level: u8, va: u64, end: u64) -> Result<()> {
        let cfg = *self.config();
        let size = cfg.level_size(level);
        for c in chunks(va, end, size) {
            let entry = self.entry_addr(table, level, c.cur);
            let old = Self::load(req.ram, entry)?;
            let pa = req.pa_of(c.cur);
            let leaf_here = level == LEAF_LEVEL
                || (!req.pages_only
                    && cfg.block_allowed(level)
                    && c.is_whole(size)
                    && pa.is_multiple_of(size));
            if leaf_here {
                let new = Descriptor::new_leaf(Pa(pa), req.attrs, level);
                self.put_leaf(req, entry, old, new, level, c.base)?;
                continue;
            }
            let next = match self.classify(old, level) {
                Entry::Table(next) => next,
                Entry::Leaf => {
                    // A block already mapping this piece the same way needs no change.
                    let same = old.output_address(&cfg, level).raw() + (c.cur - c.base) == pa
                        && old.attributes() == req.attrs;
                    if same && !req.pages_only {
                        continue;
                    }
                    self.split_entry(req.ram, req.tlb, entry, old, level, c.base)?
                }
                Entry::Invalid => {
                    let next = self.alloc_table(req.ram)?;
                    // Nothing valid was here, so nothing to break first. The table is zeroed
                    // before the (Release) store publishes it.
                    req.ram
                        .store_u64(entry, Descriptor::new_table(next).into_bits())?;
                    next
                }
            };
            self.map_in(req, next, level + 1, c.cur, c.next)?;
        }
        Ok(())
    }

    /// Writes leaf `new` into `entry` (at `level`, covering input addresses from `base`),
    /// which holds `old`.
    fn put_leaf(
        &self,
        req: &MapRequest<'_>,
        entry: Pa,
        old: Descriptor,
        new: Descriptor,
        level: u8,
        base: u64,
    ) -> Result<()> {
        let mem: &dyn PhysMemory = req.ram;
        let size = self.config().level_size(level);
        match self.classify(old, level) {
            _ if old == new => {}
            Entry::Invalid => mem.store_u64(entry, new.into_bits())?,
            Entry::Leaf => {
                Self::bbm_replace(mem, req.tlb, entry, base, size, true, &|_| new)?;
            }
            Entry::Table(sub) => {
                Self::bbm_replace(mem, req.tlb, entry, base, size, false, &|_| new)?;
                self.free_tree(req.ram, sub, level + 1)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Granule, NoTlb, TableConfig};

    const A: Attributes = Attributes::AF.union(Attributes::SH_INNER);

    fn setup(g: Granule, ia: u32) -> (Ram, PageTable) {
        let ram = Ram::new(256 << 20).unwrap();
        let t = PageTable::new(&ram, TableConfig::new(g, ia, 40).unwrap()).unwrap();
        (ram, t)
    }

    fn levels(ram: &Ram, t: &PageTable, va: u64, size: u64) -> Vec<(u64, u8)> {
        t.leaves(ram, Va(va), size)
            .unwrap()
            .iter()
            .map(|l| (l.va.raw(), l.level))
            .collect()
    }

    #[test]
    fn largest_blocks_are_used_where_aligned() {
        let (ram, t) = setup(Granule::Size4K, 39);
        // 4K + 2M + 1G + 2M + 4K, with va and pa equally aligned.
        let va = (1 << 30) - (2 << 20) - 0x1000;
        let size = 0x1000 + (2 << 20) + (1 << 30) + (2 << 20) + 0x1000;
        t.map(&ram, Va(va), Pa(va + (4 << 30)), size, A, false, &NoTlb)
            .unwrap();
        assert_eq!(
            levels(&ram, &t, va, size),
            [
                (va, 3),
                (va + 0x1000, 2),
                (1 << 30, 1),
                (2 << 30, 2),
                ((2 << 30) + (2 << 20), 3)
            ]
        );
        // pages_only: every leaf is a page.
        let (ram, t) = setup(Granule::Size4K, 39);
        t.map(&ram, Va(0), Pa(0), 4 << 20, A, true, &NoTlb).unwrap();
        let l = t.leaves(&ram, Va(0), 4 << 20).unwrap();
        assert_eq!(l.len(), 1024);
        assert!(l.iter().all(|l| l.level == 3));
        // A misaligned output address forces pages as well.
        let (ram, t) = setup(Granule::Size4K, 39);
        t.map(&ram, Va(0), Pa(0x1000), 2 << 20, A, false, &NoTlb)
            .unwrap();
        assert_eq!(t.leaves(&ram, Va(0), 2 << 20).unwrap().len(), 512);
    }

    #[test]
    fn blocks_for_16k_and_64k_are_level_2() {
        for (g, block) in [
            (Granule::Size16K, 32u64 << 20),
            (Granule::Size64K, 512 << 20),
        ] {
            let (ram, t) = setup(g, 36);
            let page = g.size();
            t.map(
                &ram,
                Va(block - page),
                Pa(block - page),
                block + 2 * page,
                A,
                false,
                &NoTlb,
            )
            .unwrap();
            assert_eq!(
                levels(&ram, &t, 0, 1 << 36),
                [(block - page, 3), (block, 2), (2 * block, 3)]
            );
        }
    }

    #[test]
    fn remapping_in_the_middle_of_a_block_splits_it() {
        let (ram, t) = setup(Granule::Size4K, 39);
        t.map(&ram, Va(1 << 30), Pa(1 << 30), 1 << 30, A, false, &NoTlb)
            .unwrap();
        let ro = A | Attributes::AP_RO;
        t.map(
            &ram,
            Va((1 << 30) + 0x5000),
            Pa(0x7000),
            0x1000,
            ro,
            false,
            &NoTlb,
        )
        .unwrap();
        let l = t.leaves(&ram, Va(1 << 30), 1 << 30).unwrap();
        // 511 2M blocks + 512 pages.
        assert_eq!(l.len(), 511 + 512);
        for leaf in &l {
            let expect_pa = if leaf.va.raw() == (1 << 30) + 0x5000 {
                0x7000
            } else {
                leaf.va.raw()
            };
            assert_eq!(leaf.pa.raw(), expect_pa, "{leaf:?}");
            let expect_attrs = if expect_pa == 0x7000 { ro } else { A };
            assert_eq!(leaf.desc.attributes(), expect_attrs);
        }
        // Mapping the same thing again changes nothing and allocates nothing.
        let used = ram.stats().used_frames;
        t.map(&ram, Va(1 << 30), Pa(1 << 30), 0x5000, A, false, &NoTlb)
            .unwrap();
        assert_eq!(ram.stats().used_frames, used);
        assert_eq!(t.leaves(&ram, Va(1 << 30), 1 << 30).unwrap(), l);
    }

    #[test]
    fn a_block_over_a_table_frees_the_table() {
        let (ram, t) = setup(Granule::Size4K, 39);
        t.map(&ram, Va(2 << 20), Pa(0), 0x3000, A, false, &NoTlb)
            .unwrap();
        assert_eq!(t.table_count(&ram).unwrap(), 3);
        t.map(&ram, Va(2 << 20), Pa(4 << 20), 2 << 20, A, false, &NoTlb)
            .unwrap();
        assert_eq!(t.table_count(&ram).unwrap(), 2);
        assert_eq!(ram.stats().used_frames, 2);
        assert_eq!(levels(&ram, &t, 0, 1 << 30), [(2 << 20, 2)]);
    }

    #[test]
    fn split_block_keeps_the_translation() {
        let (ram, t) = setup(Granule::Size4K, 39);
        let attrs = A | Attributes::NG | Attributes::SW1;
        t.map(
            &ram,
            Va(1 << 30),
            Pa(3 << 30),
            1 << 30,
            attrs,
            false,
            &NoTlb,
        )
        .unwrap();
        t.split_block(&ram, Va((1 << 30) + 0x1234), &NoTlb).unwrap();
        let l = t.leaves(&ram, Va(1 << 30), 1 << 30).unwrap();
        assert_eq!(l.len(), 512);
        assert!(
            l.iter()
                .all(|l| l.level == 2 && l.desc.attributes() == attrs)
        );
        t.split_block(&ram, Va((1 << 30) + (4 << 20)), &NoTlb)
            .unwrap();
        let leaf = t
            .lookup(&ram, Va((1 << 30) + (4 << 20) + 0x3000))
            .unwrap()
            .unwrap();
        assert_eq!(
            (leaf.level, leaf.pa),
            (3, Pa((3 << 30) + (4 << 20) + 0x3000))
        );
        assert_eq!(leaf.desc.attributes(), attrs);
        assert_eq!(
            t.leaves(&ram, Va(1 << 30), 1 << 30).unwrap().len(),
            511 + 512
        );
    }

    #[test]
    fn split_block_errors() {
        let (ram, t) = setup(Granule::Size4K, 39);
        t.map(&ram, Va(0), Pa(0), 0x1000, A, false, &NoTlb).unwrap();
        assert_eq!(
            t.split_block(&ram, Va(0x10), &NoTlb),
            Err(Error::NotABlock {
                va: Va(0x10),
                level: 3
            })
        );
        assert_eq!(
            t.split_block(&ram, Va(0x5000), &NoTlb),
            Err(Error::NotMapped(Va(0x5000)))
        );
        assert!(matches!(
            t.split_block(&ram, Va(1 << 39), &NoTlb),
            Err(Error::InputOutOfRange { .. })
        ));
    }

    #[test]
    fn bad_map_arguments_are_typed_errors() {
        let (ram, t) = setup(Granule::Size16K, 36);
        let map = |va: u64, pa: u64, size: u64| t.map(&ram, Va(va), Pa(pa), size, A, false, &NoTlb);
        assert_eq!(map(0, 0, 0), Err(Error::ZeroSize));
        assert_eq!(
            map(0x1000, 0, 0x4000),
            Err(Error::Misaligned {
                what: "va",
                value: 0x1000,
                align: 0x4000
            })
        );
        assert_eq!(
            map(0, 0x2000, 0x4000),
            Err(Error::Misaligned {
                what: "pa",
                value: 0x2000,
                align: 0x4000
            })
        );
        assert_eq!(
            map(0, 0, 0x5000),
            Err(Error::Misaligned {
                what: "size",
                value: 0x5000,
                align: 0x4000
            })
        );
        assert_eq!(
            map((1 << 36) - 0x4000, 0, 0x8000),
            Err(Error::InputOutOfRange {
                va: Va((1 << 36) - 0x4000),
                size: 0x8000,
                ia_bits: 36
            })
        );
        assert_eq!(
            map(1 << 36, 0, 0x4000),
            Err(Error::InputOutOfRange {
                va: Va(1 << 36),
                size: 0x4000,
                ia_bits: 36
            })
        );
        // The end would overflow 64 bits.
        assert!(matches!(
            map(u64::MAX - 0x3fff, 0, 0x4000),
            Err(Error::InputOutOfRange { .. })
        ));
        assert!(matches!(
            map(0xffff_ffff_ffff_c000, 0, 0x8000),
            Err(Error::InputOutOfRange { .. })
        ));
        assert_eq!(
            map(0, (1 << 40) - 0x4000, 0x8000),
            Err(Error::OutputOutOfRange {
                pa: Pa((1 << 40) - 0x4000),
                size: 0x8000,
                oa_bits: 40
            })
        );
        assert!(matches!(
            map(0, 0xffff_ffff_ffff_c000, 0x8000),
            Err(Error::OutputOutOfRange { .. })
        ));
        // Nothing was allocated by the failed calls.
        assert_eq!(t.table_count(&ram).unwrap(), 1);
    }

    #[test]
    fn exhausted_ram_is_an_error() {
        let ram = Ram::new(3 * 4096).unwrap();
        let t = PageTable::new(&ram, TableConfig::new(Granule::Size4K, 48, 40).unwrap()).unwrap();
        let r = t.map(&ram, Va(0), Pa(0), 0x1000, A, false, &NoTlb);
        assert!(matches!(
            r,
            Err(Error::Memory(sva_physmem::Error::Exhausted { .. }))
        ));
    }
}
