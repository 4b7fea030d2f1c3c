//! Differential tests against Google's `aarch64-paging` (4K granule, EL1&0 regime, TTBR0
//! range), an independent implementation of the same descriptor format:
//!
//! (a) for the same mappings our builder emits the same descriptor words, and in fact the
//!     same table image byte for byte (both allocate tables depth-first, in mapping order,
//!     from consecutive frames);
//! (b) our hardware walk over *their* image, loaded into simulated RAM, translates every
//!     sampled address the way their `walk_range` says it is mapped.
//!
//! Conventions that differ and how the comparison is kept exact:
//! - `aarch64-paging` takes the valid bit in the flags (`El1Attributes::VALID`) and adds the
//!   page bit (`TABLE_OR_PAGE`) itself at level 3; our `map` adds both. So their flags are
//!   ours plus `VALID`.
//! - Neither sets the access flag on its own: mappings that should be accessible say
//!   `ACCESSED` / `AF` explicitly (one set leaves it out to check Access flag faults).
//! - Their table descriptors are `address | 0b11` with no hierarchical attributes, like ours.
//! - Attribute bit names: `ATTRIBUTE_INDEX_n` is a whole AttrIndx value (ours are bits),
//!   `USER` = AP[1] = our `AP_EL0`, `READ_ONLY` = AP[2] = `AP_RO`, `NON_GLOBAL` = `NG`,
//!   `ACCESSED` = `AF`. The bit positions are identical, so we convert by bits.

use aarch64_paging::descriptor::{El1Attributes, PhysicalAddress};
use aarch64_paging::paging::{Constraints, El1And0, MemoryRegion, RootTable, VaRange};
use aarch64_paging::target::TargetAllocator;
use sva_physmem::{PhysMemory, Ram};
use sva_vmsa::{
    Access, AccessKind, Attributes, FaultKind, Granule, Httu, NoTlb, Pa, PageTable, TableConfig,
    Va, walk,
};

type Theirs = RootTable<El1And0, TargetAllocator<El1Attributes>>;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// MAIR index 0 = Device-nGnRE, index 1 = Normal write-back (a typical MAIR layout).
const DEVICE: El1Attributes = El1Attributes::ATTRIBUTE_INDEX_0;
const NORMAL: El1Attributes =
    El1Attributes::ATTRIBUTE_INDEX_1.union(El1Attributes::INNER_SHAREABLE);
const BASE: El1Attributes = El1Attributes::VALID.union(El1Attributes::ACCESSED);

/// Kernel RW data, kernel code, user RW data, user RO, user code, device registers.
fn kernel_rw() -> El1Attributes {
    BASE | NORMAL | El1Attributes::UXN | El1Attributes::PXN
}
fn kernel_text() -> El1Attributes {
    BASE | NORMAL | El1Attributes::READ_ONLY | El1Attributes::UXN
}
fn user_rw() -> El1Attributes {
    BASE | NORMAL
        | El1Attributes::USER
        | El1Attributes::NON_GLOBAL
        | El1Attributes::UXN
        | El1Attributes::PXN
}
fn user_ro() -> El1Attributes {
    BASE | NORMAL
        | El1Attributes::USER
        | El1Attributes::READ_ONLY
        | El1Attributes::NON_GLOBAL
        | El1Attributes::PXN
        | El1Attributes::UXN
}
fn user_text() -> El1Attributes {
    BASE | NORMAL
        | El1Attributes::USER
        | El1Attributes::READ_ONLY
        | El1Attributes::NON_GLOBAL
        | El1Attributes::PXN
}
fn device() -> El1Attributes {
    BASE | DEVICE | El1Attributes::OUTER_SHAREABLE | El1Attributes::UXN | El1Attributes::PXN
}

#[derive(Clone, Copy, Debug)]
struct Mapping {
    va: u64,
    pa: u64,
    size: u64,
    flags: El1Attributes,
}

fn m(va: u64, pa: u64, size: u64, flags: El1Attributes) -> Mapping {
    Mapping {
        va,
        pa,
        size,
        flags,
    }
}

/// Our attributes for their flags: the same bits, without VALID.
fn ours(flags: El1Attributes) -> Attributes {
    let bits = (flags - El1Attributes::VALID).bits() as u64;
    let a = Attributes::from_bits_truncate(bits);
    assert_eq!(
        a.bits(),
        bits,
        "flags outside the leaf attributes: {flags:?}"
    );
    a
}

/// The mapping sets: (name, input address bits (39: root level 1, 48: root level 0), maps).
fn sets() -> Vec<(&'static str, u32, Vec<Mapping>)> {
    vec![
        (
            "pages",
            39,
            vec![
                m(0x40_0000, 0x8000_0000, 16 * KIB, kernel_text()),
                m(0x40_4000, 0x8010_0000, 12 * KIB, kernel_rw()),
                m(0x7f_f000_0000, 0x1_2345_6000, 40 * KIB, user_rw()),
                m(0x7f_f001_0000, 0x1_0000_0000, 8 * KIB, user_ro()),
                m(0x1000, 0x900_0000, 4 * KIB, device()),
            ],
        ),
        (
            "2M blocks",
            39,
            vec![
                m(0x20_0000, 0x4000_0000, 6 * MIB, kernel_rw()),
                m(0x1000_0000, 0x6000_0000, 4 * MIB, user_text()),
                m(0x4000_0000, 0x0800_0000, 2 * MIB, device()),
            ],
        ),
        (
            "1G blocks",
            39,
            vec![
                m(GIB, 0x40_0000_0000, 2 * GIB, kernel_rw()),
                m(0x10_0000_0000, GIB, GIB, user_ro()),
                m(0x20_0000_0000, 0, GIB, device()),
            ],
        ),
        (
            "mixed",
            39,
            vec![
                // 4K + 2M + 1G + 2M + 4K, with va and pa equally aligned.
                m(
                    GIB - 2 * MIB - 4 * KIB,
                    5 * GIB - 2 * MIB - 4 * KIB,
                    4 * KIB + 2 * MIB + GIB + 2 * MIB + 4 * KIB,
                    user_rw(),
                ),
                // Misaligned output address: pages only.
                m(0x40_0000_0000 - 4 * MIB, 0x1000, 2 * MIB, kernel_text()),
                m(
                    0x30_0000_0000,
                    0x30_0000_0000,
                    2 * MIB + 8 * KIB,
                    user_text(),
                ),
            ],
        ),
        (
            "split by overlap",
            39,
            vec![
                m(GIB, 2 * GIB, GIB, kernel_rw()),
                // A page and a 2M block inside the 1G block, with other attributes and
                // output addresses: both implementations split the block.
                m(GIB + 0x12_3000, 0x7000, 4 * KIB, user_rw()),
                m(GIB + 0x80_0000, 0x6000_0000, 2 * MIB, device()),
                // Identical to what the block already maps: no change, no split.
                m(GIB + 0x40_0000, 2 * GIB + 0x40_0000, 2 * MIB, kernel_rw()),
            ],
        ),
        (
            "48-bit, root level 0",
            48,
            vec![
                m(0x7fff_ffe0_0000, 0x3000_0000, 2 * MIB, user_rw()),
                m(0x1234_0000_0000, 0x4000_0000, GIB, kernel_rw()),
                m(0x8000_0000_0000 - 16 * KIB, 0xa000, 16 * KIB, user_text()),
            ],
        ),
    ]
}

fn build_theirs(base: u64, ia_bits: u32, maps: &[Mapping]) -> Theirs {
    let root_level = if ia_bits > 39 { 0 } else { 1 };
    let mut t = RootTable::with_va_range(
        TargetAllocator::new(base),
        root_level,
        El1And0,
        VaRange::Lower,
    );
    for mp in maps {
        t.map_range(
            &MemoryRegion::new(mp.va as usize, (mp.va + mp.size) as usize),
            PhysicalAddress(mp.pa as usize),
            mp.flags,
            Constraints::empty(),
        )
        .unwrap();
    }
    t
}

/// Their view of `va`: the descriptor word reached and its level.
fn their_descriptor(t: &Theirs, va: u64) -> (u64, u8) {
    let mut found = None;
    t.walk_range(
        &MemoryRegion::new(va as usize, va as usize + 1),
        &mut |_, d, level| {
            let bits = d.output_address().0 as u64 | d.flags().bits() as u64;
            found = Some((bits, level as u8));
            Ok(())
        },
    )
    .unwrap();
    found.expect("walk_range visits one descriptor")
}

/// Input addresses to compare: around the edges and middle of every mapping, and holes.
fn samples(maps: &[Mapping], ia_bits: u32) -> Vec<u64> {
    let mut v = Vec::new();
    for mp in maps {
        let end = mp.va + mp.size;
        for a in [
            mp.va,
            mp.va + 0x18,
            mp.va + 4 * KIB + 0x123,
            mp.va + mp.size / 2,
            mp.va + mp.size / 3,
            end - 8,
            end - 4 * KIB,
        ] {
            if a < end {
                v.push(a);
            }
        }
        // Every 2M step of the mapping, and the holes just outside it.
        v.extend((mp.va..end).step_by((2 * MIB) as usize).map(|a| a + 0x777));
        v.push(end + 0x10);
        if mp.va >= 8 {
            v.push(mp.va - 8);
        }
    }
    v.extend([0, (1 << ia_bits) - 8, 0x55_5555_5000 % (1 << ia_bits)]);
    v.retain(|&a| a < (1 << ia_bits));
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn our_builder_emits_their_descriptor_words_and_image() {
    let mut leaf_levels = std::collections::BTreeSet::new();
    for (name, ia_bits, maps) in sets() {
        // Fresh RAM: our allocator hands out frames 0, 1, 2, ... like their target
        // allocator at base 0.
        let ram = Ram::new(64 * MIB).unwrap();
        let cfg = TableConfig::new(Granule::Size4K, ia_bits, 48).unwrap();
        let table = PageTable::new(&ram, cfg).unwrap();
        assert_eq!(table.root(), Pa(0));
        for mp in &maps {
            table
                .map(
                    &ram,
                    Va(mp.va),
                    Pa(mp.pa),
                    mp.size,
                    ours(mp.flags),
                    false,
                    &NoTlb,
                )
                .unwrap();
        }
        let theirs = build_theirs(0, ia_bits, &maps);

        // Leaf by leaf, through our lookup and their walk.
        for va in samples(&maps, ia_bits) {
            let (bits, level) = their_descriptor(&theirs, va);
            match table.lookup(&ram, Va(va)).unwrap() {
                Some(leaf) => {
                    leaf_levels.insert(leaf.level);
                    assert_eq!(
                        (leaf.desc.into_bits(), leaf.level),
                        (bits, level),
                        "{name}: {va:#x}: ours {:#018x}, theirs {bits:#018x}",
                        leaf.desc.into_bits()
                    );
                }
                None => assert_eq!(bits & 1, 0, "{name}: {va:#x} mapped only by them"),
            }
        }

        // The whole image.
        let image = theirs.translation().as_bytes();
        let tables = image.len() as u64 / 4096;
        assert_eq!(table.table_count(&ram).unwrap() as u64, tables, "{name}");
        let mut mine = vec![0u8; image.len()];
        ram.read(Pa(0), &mut mine).unwrap();
        for (i, (a, b)) in mine.chunks(8).zip(image.chunks(8)).enumerate() {
            assert_eq!(
                a,
                b,
                "{name}: table {} entry {}: ours {:#018x} theirs {:#018x}",
                i / 512,
                i % 512,
                u64::from_le_bytes(a.try_into().unwrap()),
                u64::from_le_bytes(b.try_into().unwrap())
            );
        }
    }
    // 1G blocks, 2M blocks and pages were all compared.
    assert_eq!(leaf_levels.into_iter().collect::<Vec<_>>(), [1, 2, 3]);
}

/// The permissions the Arm ARM gives their flags (written out independently of our walk).
fn expected_perms(f: El1Attributes) -> (bool, bool, bool, bool) {
    let user = f.contains(El1Attributes::USER);
    let write = !f.contains(El1Attributes::READ_ONLY);
    let user_exec = !f.contains(El1Attributes::UXN);
    // EL0-writable memory is never executable at EL1.
    let el0_writable = user && write;
    let priv_exec = !(f.contains(El1Attributes::PXN) || el0_writable);
    (write, user, user_exec, priv_exec)
}

#[test]
fn our_walker_translates_their_tables() {
    let mut all = sets();
    // One set without the access flag: those pages must be Access flag faults.
    all.push((
        "no access flag",
        39,
        vec![
            m(
                0x10_0000,
                0x20_0000,
                8 * KIB,
                kernel_rw() - El1Attributes::ACCESSED,
            ),
            m(
                0x40_0000,
                0x60_0000,
                2 * MIB,
                user_rw() - El1Attributes::ACCESSED,
            ),
        ],
    ));
    for (name, ia_bits, maps) in all {
        let ram = Ram::new(64 * MIB).unwrap();
        // Their image goes at a non-zero physical base inside our RAM.
        let _below = ram.alloc(4 * MIB).unwrap();
        let base = ram.alloc(MIB).unwrap();
        assert_ne!(base, Pa(0));
        let theirs = build_theirs(base.raw(), ia_bits, &maps);
        let image = theirs.translation().as_bytes();
        assert!(image.len() as u64 <= MIB);
        ram.write(base, &image).unwrap();
        let root = theirs.to_physical().0 as u64;
        assert_eq!(root, base.raw());
        let cfg = TableConfig::new(Granule::Size4K, ia_bits, 48).unwrap();

        let read = Access::new(AccessKind::Read, true);
        let mut mapped = 0;
        for va in samples(&maps, ia_bits) {
            let (bits, level) = their_descriptor(&theirs, va);
            let got = walk(&ram, Pa(root), &cfg, Va(va), read, Httu::default());
            if bits & 1 == 0 {
                let f = got.expect_err("unmapped for them");
                assert_eq!(
                    (f.kind, f.level),
                    (FaultKind::Translation, level),
                    "{name}: {va:#x}"
                );
                continue;
            }
            let flags = El1Attributes::from_bits_retain(bits as usize & 0xfff0_0000_0000_0fff);
            if !flags.contains(El1Attributes::ACCESSED) {
                let f = got.expect_err("no access flag");
                assert_eq!(
                    (f.kind, f.level),
                    (FaultKind::AccessFlag, level),
                    "{name}: {va:#x}"
                );
                continue;
            }
            mapped += 1;
            let t = got.unwrap_or_else(|f| panic!("{name}: {va:#x}: {f}"));
            let granularity = (4 * KIB) << (9 * (3 - u64::from(level)));
            let their_oa = bits & 0x0000_ffff_ffff_f000;
            assert_eq!(t.pa, Pa(their_oa + va % granularity), "{name}: {va:#x}");
            assert_eq!((t.level, t.size), (level, granularity), "{name}: {va:#x}");
            assert_eq!(t.desc.into_bits(), bits, "{name}: {va:#x}");
            let p = t.perms;
            assert_eq!(
                (p.write, p.user, p.user_exec, p.priv_exec),
                expected_perms(flags),
                "{name}: {va:#x} {flags:?}"
            );
        }
        if name != "no access flag" {
            assert!(mapped > 10, "{name}: only {mapped} mapped samples");
        }
    }
}
