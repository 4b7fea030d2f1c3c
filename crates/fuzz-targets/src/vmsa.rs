//! VMSAv8-64 tables over arbitrary memory: [`vmsa_walk`].

use crate::Input;
use sva_physmem::{PhysMemory, Ram};
use sva_vmsa::{
    Access, AccessKind, Attributes, Descriptor, Granule, Httu, NoTlb, Pa, PageTable, TableConfig,
    Va, walk,
};

const RAM_SIZE: u64 = 1 << 20;
/// The memory image the input supplies, at physical address 0.
const IMAGE_SIZE: u64 = 64 << 10;
const MAX_OPS: usize = 32;

/// The table configuration the header asks for: the raw TG0/T0SZ/IPS fields when they are
/// valid, otherwise the nearest valid one (so both the decoder's errors and every shape of
/// table are exercised).
fn table_config(tg0: u8, t0sz: u8, ips: u8) -> TableConfig {
    if let Ok(cfg) = TableConfig::from_fields(tg0, t0sz, ips) {
        return cfg;
    }
    let granule = Granule::ALL[usize::from(tg0) % 3];
    let ia = TableConfig::MIN_IA_BITS
        + u32::from(t0sz) % (TableConfig::MAX_IA_BITS - TableConfig::MIN_IA_BITS + 1);
    let oa = [32, 36, 40, 42, 44, 48][usize::from(ips) % 6];
    TableConfig::new(granule, ia, oa).expect("clamped fields are valid")
}

fn va(input: &mut Input<'_>, cfg: &TableConfig) -> Va {
    let raw = input.u64();
    Va(match input.u8() % 4 {
        0 => raw,
        1 => raw & (cfg.ia_size() - 1),
        2 => (raw & 0xFFFF) << cfg.granule().shift(),
        _ => (raw & 0xFF) << cfg.level_shift(2),
    })
}

/// A page-aligned, non-empty size (or not, one time in eight).
fn size(input: &mut Input<'_>, cfg: &TableConfig) -> (u64, bool) {
    let n = u64::from(input.u8() % 16) + 1;
    match input.u8() % 8 {
        0 => (input.u64(), false),
        1 | 2 => (n * cfg.level_size(2), false),
        _ => (n * cfg.page_size(), true),
    }
}

fn access(input: &mut Input<'_>) -> (Access, Httu) {
    let b = input.u8();
    let kind = [AccessKind::Read, AccessKind::Write, AccessKind::Execute][usize::from(b % 3)];
    (
        Access::new(kind, b & 0x10 != 0),
        Httu {
            ha: b & 0x20 != 0,
            hd: b & 0x40 != 0,
        },
    )
}

/// Target `vmsa_walk`: a header (TG0, T0SZ, IPS, where the root table is) and up to 32
/// operations on the table (walks with and without HTTU, lookups, leaf listings, map,
/// unmap, protect, block splits, leaf updates, table counts, destroy), then a 64 KiB
/// memory image loaded at physical address 0 of a 1 MiB RAM, where the descriptors live.
/// Walks and edits must return faults and errors, never panic or loop. A walk that
/// succeeds must agree with `lookup`, and, with HTTU, succeed again with the same result.
pub fn vmsa_walk(data: &[u8]) {
    let mut input = Input::new(data);
    let cfg = table_config(input.u8(), input.u8(), input.u8());
    let root_sel = input.u16();
    let root = match root_sel >> 14 {
        0 => Pa(u64::from(root_sel & 0xF) << cfg.granule().shift()),
        1 => Pa(u64::from(root_sel & 0x3FFF) << 3),
        2 => Pa(u64::from(root_sel & 0x3FFF) << 12),
        _ => Pa(input.u64()),
    };
    let n_ops = usize::from(input.u8()) % (MAX_OPS + 1);
    let ops: Vec<[u8; 40]> = (0..n_ops).map(|_| input.array()).collect();
    let ram = Ram::new(RAM_SIZE).expect("valid RAM size");
    // The image is allocated first, so tables that map() allocates come after it.
    let image = ram.alloc(IMAGE_SIZE).expect("RAM for the image");
    let bytes = input.bytes(IMAGE_SIZE as usize);
    ram.write(image, bytes).expect("the image fits");
    let pt = PageTable::from_root(root, cfg);
    for op in &ops {
        let mut i = Input::new(op);
        match i.u8() % 11 {
            0..=2 => {
                let va = va(&mut i, &cfg);
                let (acc, httu) = access(&mut i);
                check_walk(&ram, &pt, va, acc, httu);
            }
            3 => {
                let va = va(&mut i, &cfg);
                let _ = pt.lookup(&ram, va);
            }
            4 => {
                let va = va(&mut i, &cfg);
                let (size, _) = size(&mut i, &cfg);
                let _ = pt.leaves(&ram, va, size.min(64 * cfg.level_size(2)));
            }
            5 => {
                let va = va(&mut i, &cfg);
                let pa = Pa(i.u64() & (cfg.oa_size() - 1) & !(cfg.page_size() - 1));
                let (size, pages) = size(&mut i, &cfg);
                let attrs = Attributes::from_bits_truncate(i.u64());
                let _ = pt.map(&ram, va, pa, size, attrs, pages && i.bool(), &NoTlb);
            }
            6 => {
                let va = va(&mut i, &cfg);
                let (size, _) = size(&mut i, &cfg);
                let _ = pt.unmap(&ram, va, size, &NoTlb);
            }
            7 => {
                let va = va(&mut i, &cfg);
                let (size, _) = size(&mut i, &cfg);
                let set = Attributes::from_bits_truncate(i.u64());
                let clear = Attributes::from_bits_truncate(i.u64());
                let _ = pt.protect(&ram, va, size, set, clear, &NoTlb);
            }
            8 => {
                let va = va(&mut i, &cfg);
                let _ = pt.split_block(&ram, va, &NoTlb);
            }
            9 => {
                let va = va(&mut i, &cfg);
                let flip = i.u64();
                let _ = pt.update_leaf(&ram, va, &mut |d: Descriptor| {
                    Descriptor::from_bits(d.into_bits() ^ flip)
                });
                let _ = pt.table_count(&ram);
            }
            _ => {
                let _ = pt.clone().destroy(&ram);
            }
        }
    }
}

/// One walk, checked against `lookup` and, with HTTU, against a second walk.
fn check_walk(ram: &Ram, pt: &PageTable, va: Va, acc: Access, httu: Httu) {
    let Ok(t) = walk(ram, pt.root(), pt.config(), va, acc, httu) else {
        return;
    };
    let leaf = pt
        .lookup(ram, va)
        .expect("lookup reads what the walk read")
        .expect("lookup finds the leaf the walk used");
    assert_eq!(leaf.level, t.level, "walk and lookup disagree on the level");
    assert_eq!(leaf.size, t.size, "walk and lookup disagree on the size");
    assert_eq!(
        leaf.pa.raw() + (va.raw() - leaf.va.raw()),
        t.pa.raw(),
        "walk and lookup disagree on the output address"
    );
    let again = walk(ram, pt.root(), pt.config(), va, acc, httu)
        .expect("a walk that succeeded (and made its hardware update) succeeds again");
    assert_eq!(again.pa, t.pa);
    assert_eq!(again.desc, t.desc, "a second walk changed the descriptor");
}
