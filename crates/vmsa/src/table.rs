//! [`PageTable`]: a handle on a translation table tree in simulated physical memory, its
//! read-only queries, and the descriptor-level building blocks the editing operations
//! (map.rs, unmap.rs, protect.rs) share: table allocation, break-before-make replacement and
//! block splitting.

use crate::{Attributes, Descriptor, Error, LEAF_LEVEL, Result, TableConfig, TlbInvalidate};
use sva_addr::{Pa, Va};
use sva_physmem::{PhysMemory, Ram};

/// Size of one descriptor in bytes.
const DESC_SIZE: u64 = 8;

/// One leaf (block or page descriptor) of a table: it maps `[va, va + size)` to
/// `[pa, pa + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Leaf {
    /// First input address the leaf maps (aligned to `size`).
    pub va: Va,
    /// Output address of `va`.
    pub pa: Pa,
    /// Bytes mapped: the page size at level 3, the block size above.
    pub size: u64,
    /// Lookup level of the descriptor.
    pub level: u8,
    /// The descriptor as it was read (or written).
    pub desc: Descriptor,
}

impl Leaf {
    /// The first input address after the leaf.
    #[must_use]
    pub fn end(&self) -> Va {
        Va(self.va.raw() + self.size)
    }

    /// Whether the leaf is a block (a leaf above level 3).
    #[must_use]
    pub fn is_block(&self) -> bool {
        self.level < LEAF_LEVEL
    }
}

/// How the table code reads a descriptor at some level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Nothing a walker would use: invalid, or a valid encoding that faults (a level-3
    /// descriptor with bit 1 clear, a block at a level without blocks).
    Invalid,
    /// A table descriptor pointing at the next-level table.
    Table(Pa),
    /// A block or page.
    Leaf,
}

/// The input range `[cur, next)` of one descriptor visit, and the start `base` of the range
/// the whole descriptor covers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chunk {
    pub(crate) base: u64,
    pub(crate) cur: u64,
    pub(crate) next: u64,
}

impl Chunk {
    /// Whether the visit covers the descriptor's whole range of `size` bytes.
    pub(crate) fn is_whole(&self, size: u64) -> bool {
        self.cur == self.base && self.next - self.base == size
    }
}

/// Splits `[va, end)` into the pieces that descriptors of `size` bytes cover.
pub(crate) fn chunks(va: u64, end: u64, size: u64) -> impl Iterator<Item = Chunk> {
    let mut cur = va;
    core::iter::from_fn(move || {
        if cur >= end {
            return None;
        }
        let base = cur & !(size - 1);
        let next = base.saturating_add(size).min(end);
        let c = Chunk { base, cur, next };
        cur = next;
        Some(c)
    })
}

/// Address of descriptor `i` of the table at `table`; the last word of the address space
/// (beyond any RAM, so its access fails) if that overflows.
fn slot(table: Pa, i: u64) -> Pa {
    Pa(table
        .raw()
        .checked_add(i * DESC_SIZE)
        .unwrap_or(!(DESC_SIZE - 1)))
}

/// A VMSAv8-64 stage-1 translation table tree in simulated physical memory: its root
/// address and configuration. It owns nothing in Rust terms: the tables are in RAM, and
/// copies of the handle (a CPU address space, an SMMU context descriptor) see the same tree.
///
/// Software updates (map, unmap, protect, split, update) must be serialised by the caller;
/// they may run concurrently with hardware walks ([`crate::walk`]), including hardware
/// access-flag and dirty-state updates: every descriptor write that could race with one is a
/// compare-exchange, so a hardware update is never lost.
///
/// The handle is `Clone` but deliberately not `Copy`: [`destroy`](Self::destroy) consumes
/// it, and clones are visible where a second holder of the same tree is made.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PageTable {
    root: Pa,
    config: TableConfig,
}

impl PageTable {
    /// Allocates a zeroed root table (a granule-sized block from `ram`).
    pub fn new(ram: &Ram, config: TableConfig) -> Result<Self> {
        let mut table = Self::from_root(Pa(0), config);
        table.root = table.alloc_table(ram)?;
        Ok(table)
    }

    /// A view of an existing table (e.g. built by someone else) without allocating.
    #[must_use]
    pub fn from_root(root: Pa, config: TableConfig) -> Self {
        Self { root, config }
    }

    /// Physical address of the root table (TTBR0_EL1.BADDR, CD.TTB0).
    #[must_use]
    pub fn root(&self) -> Pa {
        self.root
    }

    /// The configuration the table is built for.
    #[must_use]
    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// The leaf mapping `va`, if any (no permission or access-flag checks, no side effects).
    pub fn lookup(&self, mem: &dyn PhysMemory, va: Va) -> Result<Option<Leaf>> {
        self.check_in_ia(va, 1)?;
        Ok(self.find(mem, va)?.map(|(_, leaf)| leaf))
    }

    /// All leaves intersecting `[va, va + size)`, in input-address order, not clipped to the
    /// range. An empty range has no leaves.
    pub fn leaves(&self, mem: &dyn PhysMemory, va: Va, size: u64) -> Result<Vec<Leaf>> {
        let mut out = Vec::new();
        if size == 0 {
            return Ok(out);
        }
        let end = self.check_in_ia(va, size)?;
        self.collect(
            mem,
            self.root,
            self.config.start_level(),
            va.raw(),
            end,
            &mut out,
        )?;
        Ok(out)
    }

    /// Atomically updates the leaf descriptor mapping `va` with a compare-exchange, for the
    /// access flag, DBM/`AP[2]` dirty state or software bits, and returns the updated leaf.
    ///
    /// `f` may be called more than once (again after a concurrent hardware update). It may
    /// not change the valid bit, the descriptor type or the output address (that needs
    /// break-before-make: use [`map`](Self::map)); doing so is [`Error::IllegalUpdate`].
    /// No TLB maintenance is done: the caller invalidates if the change needs it.
    pub fn update_leaf(
        &self,
        mem: &dyn PhysMemory,
        va: Va,
        f: &mut dyn FnMut(Descriptor) -> Descriptor,
    ) -> Result<Leaf> {
        self.check_in_ia(va, 1)?;
        loop {
            let (entry, leaf) = self.find(mem, va)?.ok_or(Error::NotMapped(va))?;
            let old = leaf.desc;
            let new = f(old);
            let same_shape = new.valid() == old.valid()
                && new.table_or_page() == old.table_or_page()
                && new.oa() == old.oa();
            if !same_shape {
                return Err(Error::IllegalUpdate {
                    va,
                    old: old.into_bits(),
                    new: new.into_bits(),
                });
            }
            if new == old
                || mem
                    .compare_exchange_u64(entry, old.into_bits(), new.into_bits())?
                    .is_ok()
            {
                return Ok(Leaf { desc: new, ..leaf });
            }
        }
    }

    /// Frees every table frame of the tree, the root included, back to `ram`. Leaf output
    /// frames are not touched: they are the caller's. For exit, once no walker uses it.
    pub fn destroy(self, ram: &Ram) -> Result<()> {
        self.free_tree(ram, self.root, self.config.start_level())
    }

    /// Number of table frames in the tree (root included).
    pub fn table_count(&self, mem: &dyn PhysMemory) -> Result<usize> {
        self.count(mem, self.root, self.config.start_level())
    }

    // ---- shared internals ----

    /// Checks that `[va, va + size)` lies in the input address space; returns its end.
    pub(crate) fn check_in_ia(&self, va: Va, size: u64) -> Result<u64> {
        match va.raw().checked_add(size) {
            Some(end) if end <= self.config.ia_size() => Ok(end),
            _ => Err(Error::InputOutOfRange {
                va,
                size,
                ia_bits: self.config.ia_bits(),
            }),
        }
    }

    /// Checks a non-empty, page-aligned input range; returns its end.
    pub(crate) fn check_input(&self, va: Va, size: u64) -> Result<u64> {
        let page = self.config.page_size();
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        if !va.is_aligned(page) {
            return Err(Error::Misaligned {
                what: "va",
                value: va.raw(),
                align: page,
            });
        }
        if !size.is_multiple_of(page) {
            return Err(Error::Misaligned {
                what: "size",
                value: size,
                align: page,
            });
        }
        self.check_in_ia(va, size)
    }

    /// Checks a page-aligned output range of `size` bytes.
    pub(crate) fn check_output(&self, pa: Pa, size: u64) -> Result<()> {
        let page = self.config.page_size();
        if !pa.is_aligned(page) {
            return Err(Error::Misaligned {
                what: "pa",
                value: pa.raw(),
                align: page,
            });
        }
        match pa.raw().checked_add(size) {
            Some(end) if end <= self.config.oa_size() => Ok(()),
            _ => Err(Error::OutputOutOfRange {
                pa,
                size,
                oa_bits: self.config.oa_bits(),
            }),
        }
    }

    /// Address of the descriptor for `va` in the table at `table`, a table at `level` (see
    /// [`slot`] for a table at the top of the address space, e.g. a root from
    /// [`Self::from_root`]).
    pub(crate) fn entry_addr(&self, table: Pa, level: u8, va: u64) -> Pa {
        slot(table, self.config.index(level, Va(va)))
    }

    /// Reads the descriptor at `entry`.
    pub(crate) fn load(mem: &dyn PhysMemory, entry: Pa) -> Result<Descriptor> {
        Ok(Descriptor::from_bits(mem.load_u64(entry)?))
    }

    /// How the table code treats descriptor `d` at `level`.
    pub(crate) fn classify(&self, d: Descriptor, level: u8) -> Entry {
        if d.is_table(level) {
            Entry::Table(d.output_address(&self.config, level))
        } else if d.is_leaf(&self.config, level) {
            Entry::Leaf
        } else {
            Entry::Invalid
        }
    }

    /// The leaf that descriptor `d` at `level` is, for an input address in its range.
    pub(crate) fn leaf_of(&self, d: Descriptor, level: u8, va: u64) -> Leaf {
        let size = self.config.level_size(level);
        Leaf {
            va: Va(va & !(size - 1)),
            pa: d.output_address(&self.config, level),
            size,
            level,
            desc: d,
        }
    }

    /// The descriptor address and leaf mapping `va`, if any.
    pub(crate) fn find(&self, mem: &dyn PhysMemory, va: Va) -> Result<Option<(Pa, Leaf)>> {
        let mut table = self.root;
        let mut level = self.config.start_level();
        loop {
            let entry = self.entry_addr(table, level, va.raw());
            let d = Self::load(mem, entry)?;
            match self.classify(d, level) {
                Entry::Invalid => return Ok(None),
                Entry::Leaf => return Ok(Some((entry, self.leaf_of(d, level, va.raw())))),
                Entry::Table(next) => {
                    table = next;
                    level += 1;
                }
            }
        }
    }

    fn collect(
        &self,
        mem: &dyn PhysMemory,
        table: Pa,
        level: u8,
        va: u64,
        end: u64,
        out: &mut Vec<Leaf>,
    ) -> Result<()> {
        for c in chunks(va, end, self.config.level_size(level)) {
            let d = Self::load(mem, self.entry_addr(table, level, c.cur))?;
            match self.classify(d, level) {
                Entry::Invalid => {}
                Entry::Leaf => out.push(self.leaf_of(d, level, c.cur)),
                Entry::Table(next) => self.collect(mem, next, level + 1, c.cur, c.next, out)?,
            }
        }
        Ok(())
    }

    /// Calls `f` on the address of every table descriptor in the table at `table`.
    fn for_each_subtable(
        &self,
        mem: &dyn PhysMemory,
        table: Pa,
        level: u8,
        f: &mut dyn FnMut(Pa) -> Result<()>,
    ) -> Result<()> {
        if level >= LEAF_LEVEL {
            return Ok(());
        }
        for i in 0..self.config.entries(level) {
            let d = Self::load(mem, slot(table, i))?;
            if let Entry::Table(next) = self.classify(d, level) {
                f(next)?;
            }
        }
        Ok(())
    }

    fn count(&self, mem: &dyn PhysMemory, table: Pa, level: u8) -> Result<usize> {
        let mut n = 1;
        self.for_each_subtable(mem, table, level, &mut |next| {
            n += self.count(mem, next, level + 1)?;
            Ok(())
        })?;
        Ok(n)
    }

    /// Frees `table` (at `level`) and every table below it.
    pub(crate) fn free_tree(&self, ram: &Ram, table: Pa, level: u8) -> Result<()> {
        self.for_each_subtable(ram, table, level, &mut |next| {
            self.free_tree(ram, next, level + 1)
        })?;
        ram.put(table)?;
        Ok(())
    }

    /// Whether every descriptor of the table at `table` (at `level`) is zero.
    pub(crate) fn is_empty_table(
        &self,
        mem: &dyn PhysMemory,
        table: Pa,
        level: u8,
    ) -> Result<bool> {
        Ok(mem.is_zero(table, self.config.entries(level) * 8)?)
    }

    /// Allocates a zeroed table frame that the output address size can reach.
    pub(crate) fn alloc_table(&self, ram: &Ram) -> Result<Pa> {
        let size = self.config.granule().size();
        let pa = ram.alloc(size)?;
        if pa.raw() + size > self.config.oa_size() {
            ram.put(pa)?;
            return Err(Error::OutputOutOfRange {
                pa,
                size,
                oa_bits: self.config.oa_bits(),
            });
        }
        Ok(pa)
    }

    /// Atomically replaces the descriptor at `entry` with zero and returns what it held
    /// last (including any hardware update that raced with us).
    pub(crate) fn take(mem: &dyn PhysMemory, entry: Pa) -> Result<Descriptor> {
        let mut cur = mem.load_u64(entry)?;
        loop {
            match mem.compare_exchange_u64(entry, cur, 0)? {
                Ok(_) => return Ok(Descriptor::from_bits(cur)),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Break-before-make: makes the descriptor at `entry` invalid, invalidates `[va, va +
    /// size)`, then stores `make(old)`, `old` being the last value of the descriptor.
    /// Returns `old`.
    pub(crate) fn bbm_replace(
        mem: &dyn PhysMemory,
        tlb: &dyn TlbInvalidate,
        entry: Pa,
        va: u64,
        size: u64,
        leaf_only: bool,
        make: &dyn Fn(Descriptor) -> Descriptor,
    ) -> Result<Descriptor> {
        let old = Self::take(mem, entry)?;
        tlb.invalidate(Va(va), size, leaf_only);
        mem.store_u64(entry, make(old).into_bits())?;
        Ok(old)
    }

    /// Replaces the block `old` at `entry` (at `level`, covering input addresses from `base`)
    /// with a next-level table of equivalent entries: blocks where the next level allows
    /// them, pages otherwise, each with the block's attributes. Break-before-make: the new
    /// table is filled first, the block is made invalid and invalidated, then the table
    /// descriptor is stored. Returns the new table's address.
    pub(crate) fn split_entry(
        &self,
        ram: &Ram,
        tlb: &dyn TlbInvalidate,
        entry: Pa,
        mut old: Descriptor,
        level: u8,
        base: u64,
    ) -> Result<Pa> {
        let table = self.alloc_table(ram)?;
        let child = level + 1;
        let child_size = self.config.level_size(child);
        loop {
            let oa = old.output_address(&self.config, level);
            // The child keeps every bit of the block but the type bit and the address.
            let template =
                Descriptor::from_bits(old.into_bits()).with_table_or_page(child == LEAF_LEVEL);
            for i in 0..self.config.entries(child) {
                let d = template.with_output_address(oa + i * child_size);
                ram.store_u64(table + i * DESC_SIZE, d.into_bits())?;
            }
            // Step 1 of BBM, keeping any access-flag or dirty update hardware made to the
            // block since we read it: then the copies must be made again.
            match ram.compare_exchange_u64(entry, old.into_bits(), 0)? {
                Ok(_) => break,
                Err(actual) => {
                    let actual = Descriptor::from_bits(actual);
                    if self.classify(actual, level) != Entry::Leaf {
                        ram.put(table)?;
                        return Err(Error::NotABlock {
                            va: Va(base),
                            level,
                        });
                    }
                    old = actual;
                }
            }
        }
        tlb.invalidate(Va(base), self.config.level_size(level), true);
        ram.store_u64(entry, Descriptor::new_table(table).into_bits())?;
        Ok(table)
    }

    /// Leaf attribute bits of `attrs` (the flag set cannot carry others, but a raw value
    /// could).
    pub(crate) fn leaf_attrs(attrs: Attributes) -> Attributes {
        attrs.intersection(Attributes::all())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Granule, NoTlb};

    fn setup(g: Granule) -> (Ram, PageTable) {
        let ram = Ram::new(64 << 20).unwrap();
        let t = PageTable::new(&ram, TableConfig::new(g, 39, 40).unwrap()).unwrap();
        (ram, t)
    }

    #[test]
    fn chunks_follow_descriptor_boundaries() {
        let c: Vec<_> = chunks(0x1800, 0x5000, 0x2000)
            .map(|c| (c.base, c.cur, c.next))
            .collect();
        assert_eq!(
            c,
            [
                (0x0, 0x1800, 0x2000),
                (0x2000, 0x2000, 0x4000),
                (0x4000, 0x4000, 0x5000)
            ]
        );
        assert!(chunks(5, 5, 4).next().is_none());
    }

    #[test]
    fn new_table_is_one_zeroed_frame() {
        for g in Granule::ALL {
            let (ram, t) = setup(g);
            assert!(t.root().is_aligned(g.size()));
            assert_eq!(ram.stats().used_frames, g.size() / 4096);
            assert_eq!(t.table_count(&ram).unwrap(), 1);
            assert_eq!(t.lookup(&ram, Va(0x1000_0000)).unwrap(), None);
            t.destroy(&ram).unwrap();
            assert_eq!(ram.stats().used_frames, 0);
        }
    }

    #[test]
    fn lookup_and_leaves_report_blocks_unclipped() {
        let (ram, t) = setup(Granule::Size4K);
        let attrs = Attributes::AF | Attributes::SH_INNER;
        t.map(
            &ram,
            Va(0x4000_0000),
            Pa(0x8000_0000),
            2 << 20,
            attrs,
            false,
            &NoTlb,
        )
        .unwrap();
        t.map(
            &ram,
            Va(0x4020_0000),
            Pa(0x1000),
            0x2000,
            attrs,
            false,
            &NoTlb,
        )
        .unwrap();
        let leaf = t.lookup(&ram, Va(0x4012_3456)).unwrap().unwrap();
        assert_eq!(
            (leaf.va, leaf.pa, leaf.size, leaf.level),
            (Va(0x4000_0000), Pa(0x8000_0000), 2 << 20, 2)
        );
        assert!(leaf.is_block());
        assert_eq!(leaf.end(), Va(0x4020_0000));
        let all = t.leaves(&ram, Va(0x401f_f000), 0x2000).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].va, Va(0x4000_0000));
        assert_eq!(
            (all[1].va, all[1].pa, all[1].level),
            (Va(0x4020_0000), Pa(0x1000), 3)
        );
        assert!(t.leaves(&ram, Va(0), 0).unwrap().is_empty());
        assert_eq!(t.table_count(&ram).unwrap(), 3);
    }

    #[test]
    fn update_leaf_changes_flags_but_not_shape() {
        let (ram, t) = setup(Granule::Size16K);
        t.map(
            &ram,
            Va(0x10_0000),
            Pa(0x20_0000),
            0x4000,
            Attributes::empty(),
            false,
            &NoTlb,
        )
        .unwrap();
        let leaf = t
            .update_leaf(&ram, Va(0x10_0123), &mut |d| {
                d.with_af(true).with_software(5)
            })
            .unwrap();
        assert!(leaf.desc.af());
        assert_eq!(leaf.desc.software(), 5);
        assert_eq!(t.lookup(&ram, Va(0x10_0000)).unwrap().unwrap(), leaf);
        for bad in [
            (|d: Descriptor| d.with_valid(false)) as fn(Descriptor) -> Descriptor,
            |d| d.with_table_or_page(false),
            |d| d.with_oa(d.oa() + 4),
        ] {
            assert!(matches!(
                t.update_leaf(&ram, Va(0x10_0000), &mut |d| bad(d)),
                Err(Error::IllegalUpdate { .. })
            ));
        }
        assert_eq!(
            t.update_leaf(&ram, Va(0x20_0000), &mut |d| d),
            Err(Error::NotMapped(Va(0x20_0000)))
        );
        assert!(matches!(
            t.update_leaf(&ram, Va(1 << 39), &mut |d| d),
            Err(Error::InputOutOfRange { .. })
        ));
    }

    #[test]
    fn queries_beyond_the_input_space_are_errors() {
        let (ram, t) = setup(Granule::Size64K);
        assert!(matches!(
            t.lookup(&ram, Va(1 << 39)),
            Err(Error::InputOutOfRange { ia_bits: 39, .. })
        ));
        assert!(matches!(
            t.leaves(&ram, Va((1 << 39) - 0x1000), 0x2000),
            Err(Error::InputOutOfRange { .. })
        ));
        assert!(matches!(
            t.leaves(&ram, Va(u64::MAX), 2),
            Err(Error::InputOutOfRange { .. })
        ));
    }

    #[test]
    fn tables_beyond_the_output_space_are_refused() {
        // 8 GiB of RAM but a 32-bit output size: a table above 4 GiB could not be walked.
        let ram = Ram::new(8 << 30).unwrap();
        let filler = ram.alloc(1 << 30).unwrap();
        let fillers: Vec<_> = (0..3).map(|_| ram.alloc(1 << 30).unwrap()).collect();
        let cfg = TableConfig::new(Granule::Size4K, 39, 32).unwrap();
        assert!(matches!(
            PageTable::new(&ram, cfg),
            Err(Error::OutputOutOfRange { oa_bits: 32, .. })
        ));
        // The refused frame went back.
        assert_eq!(ram.stats().used_frames, 4 << 18);
        ram.put(filler).unwrap();
        for f in fillers {
            ram.put(f).unwrap();
        }
        assert!(PageTable::new(&ram, cfg).is_ok());
    }

    #[test]
    fn destroy_of_a_foreign_root_is_an_error_not_a_panic() {
        let ram = Ram::new(1 << 20).unwrap();
        let t = PageTable::from_root(
            Pa(0x8000),
            TableConfig::new(Granule::Size4K, 39, 40).unwrap(),
        );
        assert!(matches!(t.destroy(&ram), Err(Error::Memory(_))));
    }
}
