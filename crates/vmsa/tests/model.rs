//! Property test: random sequences of map / unmap / protect on all three granules agree
//! with a page-by-page reference model, through `lookup`, `leaves`, `walk` and what `unmap`
//! returns; and unmapping everything gives every table but the root back to the allocator.

use proptest::prelude::*;
use std::collections::BTreeMap;
use sva_physmem::Ram;
use sva_vmsa::{
    Access, AccessKind, Attributes, FaultKind, Granule, Httu, NoTlb, Pa, PageTable, TableConfig, Va,
};

/// Leaf attribute sets the operations pick from.
fn attr_choices() -> [Attributes; 5] {
    let a = Attributes::AF | Attributes::SH_INNER;
    [
        a | Attributes::AP_EL0,
        a | Attributes::AP_RO | Attributes::UXN,
        // No access flag: walks fault until someone sets it.
        Attributes::SH_INNER | Attributes::AP_EL0,
        (a | Attributes::NG | Attributes::PXN | Attributes::UXN).with_attr_indx(1),
        a | Attributes::AP_EL0 | Attributes::AP_RO | Attributes::DBM,
    ]
}

/// (set, clear) pairs for protect: in-place permission changes and BBM attribute changes.
fn protect_choices() -> [(Attributes, Attributes); 6] {
    let none = Attributes::empty();
    [
        (Attributes::AP_RO, none),
        (none, Attributes::AP_RO),
        (Attributes::UXN | Attributes::PXN, none),
        (Attributes::AF, none),
        (Attributes::SW0 | Attributes::NG, Attributes::AF),
        (Attributes::ATTR_INDX_1, Attributes::SH_INNER),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    /// Map `pages` pages from page `start` of the window to output page `pa_page`.
    Map {
        start: u64,
        pages: u64,
        pa_page: u64,
        attrs: usize,
        pages_only: bool,
    },
    /// Map whole blocks: `blocks` level-2 blocks from block `start` of the window.
    MapBlocks {
        start: u64,
        blocks: u64,
        pa_block: u64,
        attrs: usize,
    },
    Unmap {
        start: u64,
        pages: u64,
    },
    Protect {
        start: u64,
        pages: u64,
        change: usize,
    },
}

/// Blocks of the window (the window is this many level-2 blocks).
const WINDOW_BLOCKS: u64 = 3;

fn op() -> impl Strategy<Value = Op> {
    // Positions are fractions of the window, scaled once the granule is known.
    let pos = 0..10_000u64;
    prop_oneof![
        4 => (pos.clone(), 1..=600u64, 0..4096u64, 0..5usize, any::<bool>()).prop_map(
            |(start, pages, pa_page, attrs, pages_only)| Op::Map {
                start,
                pages,
                pa_page,
                attrs,
                pages_only
            }
        ),
        2 => (0..WINDOW_BLOCKS, 1..=2u64, 0..64u64, 0..5usize).prop_map(
            |(start, blocks, pa_block, attrs)| Op::MapBlocks {
                start,
                blocks,
                pa_block,
                attrs
            }
        ),
        3 => (pos.clone(), 1..=600u64).prop_map(|(start, pages)| Op::Unmap { start, pages }),
        3 => (pos, 1..=600u64, 0..6usize).prop_map(|(start, pages, change)| Op::Protect {
            start,
            pages,
            change
        }),
    ]
}

type Model = BTreeMap<u64, (u64, Attributes)>;

struct World {
    ram: Ram,
    table: PageTable,
    page: u64,
    block_pages: u64,
    /// First page of the window.
    base: u64,
    window: u64,
    model: Model,
}

impl World {
    fn new(g: Granule, ia_bits: u32) -> Self {
        let ram = Ram::new(256 << 20).unwrap();
        let cfg = TableConfig::new(g, ia_bits, 40).unwrap();
        let table = PageTable::new(&ram, cfg).unwrap();
        let page = g.size();
        let block_pages = cfg.level_size(2) / page;
        let space = 1u64 << (ia_bits - g.shift());
        let window = (WINDOW_BLOCKS * block_pages).min(space);
        // The window sits in the upper half, where the root index is not 0.
        let base = (space - window) / 2 / block_pages * block_pages;
        World {
            ram,
            table,
            page,
            block_pages,
            base,
            window,
            model: Model::new(),
        }
    }

    /// Clamps a (position, length) pair to a page range inside the window.
    fn range(&self, pos: u64, pages: u64) -> (u64, u64) {
        let start = pos * self.window / 10_000;
        let pages = pages.min(self.window - start).max(1);
        (self.base + start, pages)
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let page = self.page;
        match *op {
            Op::Map {
                start,
                pages,
                pa_page,
                attrs,
                pages_only,
            } => {
                let (first, n) = self.range(start, pages);
                let a = attr_choices()[attrs];
                self.table
                    .map(
                        &self.ram,
                        Va(first * page),
                        Pa(pa_page * page),
                        n * page,
                        a,
                        pages_only,
                        &NoTlb,
                    )
                    .unwrap();
                for i in 0..n {
                    self.model.insert(first + i, (pa_page + i, a));
                }
            }
            Op::MapBlocks {
                start,
                blocks,
                pa_block,
                attrs,
            } => {
                let blocks = blocks.min(WINDOW_BLOCKS - start);
                let first = self.base + start * self.block_pages;
                let n = blocks * self.block_pages;
                let pa_page = pa_block * self.block_pages;
                let a = attr_choices()[attrs];
                self.table
                    .map(
                        &self.ram,
                        Va(first * page),
                        Pa(pa_page * page),
                        n * page,
                        a,
                        false,
                        &NoTlb,
                    )
                    .unwrap();
                for i in 0..n {
                    self.model.insert(first + i, (pa_page + i, a));
                }
                // A whole aligned block range is mapped with blocks.
                let leaf = self
                    .table
                    .lookup(&self.ram, Va(first * page))
                    .unwrap()
                    .unwrap();
                prop_assert_eq!(leaf.level, 2);
            }
            Op::Unmap { start, pages } => {
                let (first, n) = self.range(start, pages);
                let removed = self
                    .table
                    .unmap(&self.ram, Va(first * page), n * page, &NoTlb)
                    .unwrap();
                let mut got = Model::new();
                for leaf in removed {
                    prop_assert!(leaf.va.raw() >= first * page);
                    prop_assert!(leaf.end().raw() <= (first + n) * page);
                    expand(&leaf, page, &mut got);
                }
                let want: Model = self
                    .model
                    .range(first..first + n)
                    .map(|(k, v)| (*k, *v))
                    .collect();
                prop_assert_eq!(got, want);
                for i in first..first + n {
                    self.model.remove(&i);
                }
            }
            Op::Protect {
                start,
                pages,
                change,
            } => {
                let (first, n) = self.range(start, pages);
                let (set, clear) = protect_choices()[change];
                self.table
                    .protect(&self.ram, Va(first * page), n * page, set, clear, &NoTlb)
                    .unwrap();
                for i in first..first + n {
                    if let Some((_, a)) = self.model.get_mut(&i) {
                        *a = (*a - clear) | set;
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks one page against the model through `lookup` and `walk`.
    fn check_page(&self, p: u64) -> Result<(), TestCaseError> {
        let page = self.page;
        let va = Va(p * page + 0x18);
        let leaf = self.table.lookup(&self.ram, va).unwrap();
        let walked = self.table.walk(
            &self.ram,
            va,
            Access::new(AccessKind::Read, true),
            Httu::default(),
        );
        match self.model.get(&p) {
            None => {
                prop_assert!(leaf.is_none(), "page {:#x} mapped, model says no", p);
                prop_assert_eq!(walked.unwrap_err().kind, FaultKind::Translation);
            }
            Some(&(pa_page, attrs)) => {
                let leaf = leaf.expect("mapped in the model");
                prop_assert_eq!(
                    leaf.pa.raw() + (va.raw() - leaf.va.raw()),
                    pa_page * page + 0x18
                );
                prop_assert_eq!(leaf.desc.attributes(), attrs);
                if attrs.contains(Attributes::AF) {
                    prop_assert_eq!(walked.unwrap().pa, Pa(pa_page * page + 0x18));
                } else {
                    prop_assert_eq!(walked.unwrap_err().kind, FaultKind::AccessFlag);
                }
            }
        }
        Ok(())
    }

    /// Every page of the window, through `leaves`, `lookup` and `walk`.
    fn check_all(&self) -> Result<(), TestCaseError> {
        let page = self.page;
        let leaves = self
            .table
            .leaves(&self.ram, Va(self.base * page), self.window * page)
            .unwrap();
        let mut got = Model::new();
        for leaf in &leaves {
            expand(leaf, page, &mut got);
        }
        prop_assert_eq!(&got, &self.model);
        for p in self.base..self.base + self.window {
            self.check_page(p)?;
        }
        Ok(())
    }
}

/// Adds the pages of `leaf` to `m`.
fn expand(leaf: &sva_vmsa::Leaf, page: u64, m: &mut Model) {
    let attrs = leaf.desc.attributes();
    for i in 0..leaf.size / page {
        m.insert(leaf.va.raw() / page + i, (leaf.pa.raw() / page + i, attrs));
    }
}

fn granule() -> impl Strategy<Value = Granule> {
    prop_oneof![
        Just(Granule::Size4K),
        Just(Granule::Size16K),
        Just(Granule::Size64K)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn tables_agree_with_a_page_model(
        g in granule(),
        ia_bits in 32..=39u32,
        ops in prop::collection::vec(op(), 1..12),
    ) {
        let mut w = World::new(g, ia_bits);
        let root_frames = w.ram.stats().used_frames;
        for op in &ops {
            w.apply(op)?;
            // Spot checks at the edges of what the operation touched.
            let (first, n) = match *op {
                Op::Map { start, pages, .. }
                | Op::Unmap { start, pages }
                | Op::Protect { start, pages, .. } => w.range(start, pages),
                Op::MapBlocks { start, blocks, .. } => (
                    w.base + start * w.block_pages,
                    blocks.min(WINDOW_BLOCKS - start) * w.block_pages,
                ),
            };
            for p in [first.saturating_sub(1), first, first + n / 2, first + n - 1, first + n] {
                if p >= w.base && p < w.base + w.window {
                    w.check_page(p)?;
                }
            }
        }
        w.check_all()?;
        // Everything goes; only the root table stays allocated.
        let space = 1u64 << ia_bits;
        w.table.unmap(&w.ram, Va(0), space, &NoTlb).unwrap();
        prop_assert_eq!(w.table.table_count(&w.ram).unwrap(), 1);
        prop_assert_eq!(w.ram.stats().used_frames, root_frames);
        prop_assert!(w.table.leaves(&w.ram, Va(0), space).unwrap().is_empty());
        w.table.destroy(&w.ram).unwrap();
        prop_assert_eq!(w.ram.stats().used_frames, 0);
    }
}
