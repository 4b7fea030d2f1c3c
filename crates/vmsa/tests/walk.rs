//! The hardware walk: every fault kind at the levels it can occur, HTTU, the permission
//! matrix, hierarchical table attributes, and blocks at every level for every granule.

use sva_physmem::{PhysMemory, Ram};
use sva_vmsa::{
    Access, AccessKind, Attributes, Descriptor, Fault, FaultKind, Granule, Httu, NoTlb, Pa,
    PageTable, TableConfig, Va, walk,
};

const RW_NORMAL: Attributes = Attributes::AF.union(Attributes::SH_INNER);
const READ: Access = Access::new(AccessKind::Read, true);
const WRITE: Access = Access::new(AccessKind::Write, true);
const NO_HTTU: Httu = Httu {
    ha: false,
    hd: false,
};
const HA: Httu = Httu {
    ha: true,
    hd: false,
};
const HA_HD: Httu = Httu { ha: true, hd: true };

fn setup(g: Granule, ia: u32, oa: u32) -> (Ram, PageTable) {
    let ram = Ram::new(64 << 20).unwrap();
    let t = PageTable::new(&ram, TableConfig::new(g, ia, oa).unwrap()).unwrap();
    (ram, t)
}

/// Maps `size` bytes at `va` to `pa` in `t` with `attrs`, without touching a TLB.
fn map(ram: &Ram, t: &PageTable, va: u64, pa: u64, size: u64, attrs: Attributes) {
    t.map(ram, Va(va), Pa(pa), size, attrs, false, &NoTlb)
        .unwrap();
}

/// Address of the descriptor for `va` at `level`, following table descriptors from the root.
fn entry_at(ram: &Ram, t: &PageTable, va: u64, level: u8) -> Pa {
    let cfg = t.config();
    let mut table = t.root();
    for l in cfg.start_level()..level {
        let d = Descriptor::from_bits(ram.load_u64(table + cfg.index(l, Va(va)) * 8).unwrap());
        assert!(d.is_table(l), "no table at level {l} for {va:#x}");
        table = d.output_address(cfg, l);
    }
    table + cfg.index(level, Va(va)) * 8
}

fn patch(ram: &Ram, at: Pa, f: impl FnOnce(Descriptor) -> Descriptor) {
    let d = Descriptor::from_bits(ram.load_u64(at).unwrap());
    ram.store_u64(at, f(d).into_bits()).unwrap();
}

fn fault(kind: FaultKind, level: u8, va: u64) -> Result<sva_vmsa::Translation, Fault> {
    Err(Fault {
        kind,
        level,
        va: Va(va),
    })
}

fn walk_kind(
    ram: &Ram,
    t: &PageTable,
    va: u64,
    a: Access,
    h: Httu,
) -> Result<u64, (FaultKind, u8)> {
    t.walk(ram, Va(va), a, h)
        .map(|tr| tr.pa.raw())
        .map_err(|f| (f.kind, f.level))
}

#[test]
fn translation_faults_at_every_level() {
    let (ram, t) = setup(Granule::Size4K, 48, 40);
    // Input beyond 2^ia_bits: at the start level.
    assert_eq!(
        t.walk(&ram, Va(1 << 48), READ, NO_HTTU),
        fault(FaultKind::Translation, 0, 1 << 48)
    );
    // Empty table: level 0.
    assert_eq!(
        t.walk(&ram, Va(0x1000), READ, NO_HTTU),
        fault(FaultKind::Translation, 0, 0x1000)
    );
    map(
        &ram,
        &t,
        0x40_0000_0000 + 0x20_0000,
        0x5000,
        0x1000,
        RW_NORMAL,
    );
    let base = 0x40_0000_0000u64;
    // Same level-0 entry, other 1G: level 1. Same 1G, other 2M: level 2. Same 2M: level 3.
    assert_eq!(
        walk_kind(&ram, &t, base + (1 << 30), READ, NO_HTTU),
        Err((FaultKind::Translation, 1))
    );
    assert_eq!(
        walk_kind(&ram, &t, base, READ, NO_HTTU),
        Err((FaultKind::Translation, 2))
    );
    assert_eq!(
        walk_kind(&ram, &t, base + 0x20_1000, READ, NO_HTTU),
        Err((FaultKind::Translation, 3))
    );
    assert_eq!(
        walk_kind(&ram, &t, base + 0x20_0abc, READ, NO_HTTU),
        Ok(0x5abc)
    );

    // A level-3 descriptor with bit 1 clear is reserved: Translation fault.
    let e3 = entry_at(&ram, &t, base + 0x20_0000, 3);
    patch(&ram, e3, |d| d.with_table_or_page(false));
    assert_eq!(
        walk_kind(&ram, &t, base + 0x20_0000, READ, NO_HTTU),
        Err((FaultKind::Translation, 3))
    );
    // A level-0 block does not exist without 52-bit addresses.
    let e0 = entry_at(&ram, &t, base, 0);
    let l0_before = ram.load_u64(e0).unwrap();
    patch(&ram, e0, |_| Descriptor::new_leaf(Pa(0), RW_NORMAL, 0));
    assert_eq!(
        walk_kind(&ram, &t, base, READ, NO_HTTU),
        Err((FaultKind::Translation, 0))
    );
    ram.store_u64(e0, l0_before).unwrap();

    // 64K granule: no level-1 blocks (they need 52-bit output addresses).
    let (ram, t) = setup(Granule::Size64K, 48, 48);
    map(&ram, &t, 0, 0, 0x10000, RW_NORMAL);
    let e1 = entry_at(&ram, &t, 0, 1);
    assert_eq!(t.config().start_level(), 1);
    patch(&ram, e1, |_| Descriptor::new_leaf(Pa(0), RW_NORMAL, 1));
    assert_eq!(
        walk_kind(&ram, &t, 0, READ, NO_HTTU),
        Err((FaultKind::Translation, 1))
    );
}

#[test]
fn access_flag_faults_and_hardware_af_update() {
    let (ram, t) = setup(Granule::Size4K, 39, 40);
    let no_af = Attributes::SH_INNER | Attributes::AP_EL0;
    map(&ram, &t, 0x1000, 0x9000, 0x1000, no_af);
    map(&ram, &t, 0x20_0000, 0x40_0000, 0x20_0000, no_af);
    assert_eq!(
        walk_kind(&ram, &t, 0x1000, READ, NO_HTTU),
        Err((FaultKind::AccessFlag, 3))
    );
    assert_eq!(
        walk_kind(&ram, &t, 0x20_0000, READ, NO_HTTU),
        Err((FaultKind::AccessFlag, 2))
    );
    // The access flag fault comes before a permission fault.
    t.protect(
        &ram,
        Va(0x1000),
        0x1000,
        Attributes::AP_RO,
        Attributes::empty(),
        &NoTlb,
    )
    .unwrap();
    assert_eq!(
        walk_kind(&ram, &t, 0x1000, WRITE, NO_HTTU),
        Err((FaultKind::AccessFlag, 3))
    );
    // With HA but a permission fault, AF is not set.
    assert_eq!(
        walk_kind(&ram, &t, 0x1000, WRITE, HA),
        Err((FaultKind::Permission, 3))
    );
    assert!(!t.lookup(&ram, Va(0x1000)).unwrap().unwrap().desc.af());
    // With HA a read sets AF, in memory.
    let tr = t.walk(&ram, Va(0x1234), READ, HA).unwrap();
    assert!(tr.desc.af());
    assert_eq!(tr.pa, Pa(0x9234));
    assert!(t.lookup(&ram, Va(0x1000)).unwrap().unwrap().desc.af());
    assert_eq!(walk_kind(&ram, &t, 0x1000, READ, NO_HTTU), Ok(0x9000));
    // Blocks too.
    let tr = t.walk(&ram, Va(0x3f_ffff), READ, HA).unwrap();
    assert_eq!((tr.pa, tr.level, tr.size), (Pa(0x5f_ffff), 2, 2 << 20));
    assert!(t.lookup(&ram, Va(0x20_0000)).unwrap().unwrap().desc.af());
}

#[test]
fn hardware_dirty_state_via_dbm() {
    let (ram, t) = setup(Granule::Size16K, 36, 40);
    let clean = RW_NORMAL | Attributes::AP_EL0 | Attributes::AP_RO | Attributes::DBM;
    map(&ram, &t, 0x4000, 0x8000, 0x4000, clean);
    let user_write = Access::new(AccessKind::Write, false);
    // Without HD (or with HD but not HA) a write to a clean page is a permission fault.
    assert_eq!(
        walk_kind(&ram, &t, 0x4000, user_write, NO_HTTU),
        Err((FaultKind::Permission, 3))
    );
    assert_eq!(
        walk_kind(&ram, &t, 0x4000, user_write, HA),
        Err((FaultKind::Permission, 3))
    );
    let hd_only = Httu {
        ha: false,
        hd: true,
    };
    assert_eq!(
        walk_kind(&ram, &t, 0x4000, user_write, hd_only),
        Err((FaultKind::Permission, 3))
    );
    // Reads leave it clean.
    t.walk(
        &ram,
        Va(0x4000),
        Access::new(AccessKind::Read, false),
        HA_HD,
    )
    .unwrap();
    assert!(
        t.lookup(&ram, Va(0x4000))
            .unwrap()
            .unwrap()
            .desc
            .attributes()
            .contains(Attributes::AP_RO)
    );
    // With HA and HD the write marks it dirty: AP[2] cleared in memory, DBM kept.
    let tr = t.walk(&ram, Va(0x4010), user_write, HA_HD).unwrap();
    assert_eq!(tr.pa, Pa(0x8010));
    assert!(tr.perms.write && tr.perms.user);
    let d = t.lookup(&ram, Va(0x4000)).unwrap().unwrap().desc;
    assert_eq!(d, tr.desc);
    assert_eq!(d.ap(), 0b01);
    assert!(d.dbm());
    // A page without DBM stays read-only.
    let ro = RW_NORMAL | Attributes::AP_EL0 | Attributes::AP_RO;
    map(&ram, &t, 0x8000, 0x8000, 0x4000, ro);
    assert_eq!(
        walk_kind(&ram, &t, 0x8000, user_write, HA_HD),
        Err((FaultKind::Permission, 3))
    );
    // A privileged write to an EL1-only clean page (AP = 0b10) marks it dirty too, and an
    // unprivileged write to it still faults (no EL0 access at all).
    let el1_clean = RW_NORMAL | Attributes::AP_RO | Attributes::DBM;
    map(&ram, &t, 0xc000, 0xc000, 0x4000, el1_clean);
    assert_eq!(
        walk_kind(&ram, &t, 0xc000, user_write, HA_HD),
        Err((FaultKind::Permission, 3))
    );
    assert_eq!(walk_kind(&ram, &t, 0xc000, WRITE, HA_HD), Ok(0xc000));
    assert_eq!(t.lookup(&ram, Va(0xc000)).unwrap().unwrap().desc.ap(), 0b00);
    // APTable[1] (no writes below) is not overridden by DBM.
    map(&ram, &t, 0x40_0000, 0x8000, 0x4000, clean);
    let e2 = entry_at(&ram, &t, 0x40_0000, 2);
    patch(&ram, e2, |d| d.with_ap_table(0b10));
    assert_eq!(
        walk_kind(&ram, &t, 0x40_0000, user_write, HA_HD),
        Err((FaultKind::Permission, 3))
    );
}

/// A memory that makes the first compare-exchange on a chosen word lose a race against a
/// "software" update of that word (setting a software bit).
struct RacyMemory {
    ram: Ram,
    target: Pa,
    raced: std::sync::atomic::AtomicBool,
}

impl PhysMemory for RacyMemory {
    fn size(&self) -> u64 {
        self.ram.size()
    }
    fn read(&self, pa: Pa, buf: &mut [u8]) -> sva_physmem::Result<()> {
        self.ram.read(pa, buf)
    }
    fn write(&self, pa: Pa, buf: &[u8]) -> sva_physmem::Result<()> {
        self.ram.write(pa, buf)
    }
    fn load_u64(&self, pa: Pa) -> sva_physmem::Result<u64> {
        self.ram.load_u64(pa)
    }
    fn store_u64(&self, pa: Pa, val: u64) -> sva_physmem::Result<()> {
        self.ram.store_u64(pa, val)
    }
    fn compare_exchange_u64(
        &self,
        pa: Pa,
        current: u64,
        new: u64,
    ) -> sva_physmem::Result<Result<u64, u64>> {
        if pa == self.target && !self.raced.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let d = Descriptor::from_bits(self.ram.load_u64(pa)?);
            self.ram
                .store_u64(pa, d.with_software(0b1010).into_bits())?;
        }
        self.ram.compare_exchange_u64(pa, current, new)
    }
}

#[test]
fn hardware_updates_retry_when_they_lose_a_race() {
    let ram = Ram::new(16 << 20).unwrap();
    let cfg = TableConfig::new(Granule::Size4K, 39, 40).unwrap();
    let t = PageTable::new(&ram, cfg).unwrap();
    let clean = Attributes::SH_INNER | Attributes::AP_RO | Attributes::DBM;
    map(&ram, &t, 0x1000, 0x2000, 0x1000, clean);
    let target = entry_at(&ram, &t, 0x1000, 3);
    let mem = RacyMemory {
        ram,
        target,
        raced: false.into(),
    };
    let tr = walk(&mem, t.root(), &cfg, Va(0x1000), WRITE, HA_HD).unwrap();
    assert!(mem.raced.load(std::sync::atomic::Ordering::SeqCst));
    // Both the software update and the hardware AF + dirty update are in the descriptor.
    let d = Descriptor::from_bits(mem.ram.load_u64(target).unwrap());
    assert_eq!(d, tr.desc);
    assert_eq!(d.software(), 0b1010);
    assert!(d.af());
    assert_eq!(d.ap(), 0b00);
}

#[test]
fn address_size_faults() {
    let (ram, t) = setup(Granule::Size4K, 39, 32);
    map(&ram, &t, 0x1000, 0x1000, 0x1000, RW_NORMAL);
    map(&ram, &t, 0x4000_0000, 0x4000_0000, 0x20_0000, RW_NORMAL);
    // A leaf output address beyond 2^32.
    let e3 = entry_at(&ram, &t, 0x1000, 3);
    patch(&ram, e3, |d| d.with_output_address(Pa(1 << 32)));
    assert_eq!(
        walk_kind(&ram, &t, 0x1000, READ, NO_HTTU),
        Err((FaultKind::AddressSize, 3))
    );
    // A block output address beyond it.
    let e2 = entry_at(&ram, &t, 0x4000_0000, 2);
    patch(&ram, e2, |d| d.with_output_address(Pa(0x1_0020_0000)));
    assert_eq!(
        walk_kind(&ram, &t, 0x4000_0000, READ, NO_HTTU),
        Err((FaultKind::AddressSize, 2))
    );
    // A table address beyond it: reported at the level of the table descriptor.
    let e1 = entry_at(&ram, &t, 0x1000, 1);
    patch(&ram, e1, |d| d.with_output_address(Pa(0x8_0000_0000)));
    assert_eq!(
        walk_kind(&ram, &t, 0x1000, READ, NO_HTTU),
        Err((FaultKind::AddressSize, 1))
    );
    // A root beyond it: at the start level.
    assert_eq!(
        walk(&ram, Pa(1 << 32), t.config(), Va(0), READ, NO_HTTU),
        fault(FaultKind::AddressSize, 1, 0)
    );
}

#[test]
fn external_aborts_on_tables_outside_ram() {
    let (ram, t) = setup(Granule::Size4K, 48, 40);
    map(&ram, &t, 0x1000, 0x1000, 0x1000, RW_NORMAL);
    // RAM is 64 MiB; a level-2 table at 1 GiB is inside the 40-bit output size but not RAM.
    let e1 = entry_at(&ram, &t, 0x1000, 1);
    patch(&ram, e1, |d| d.with_output_address(Pa(1 << 30)));
    assert_eq!(
        walk_kind(&ram, &t, 0x1000, READ, NO_HTTU),
        Err((FaultKind::ExternalAbort, 2))
    );
    // A root outside RAM: at the start level.
    assert_eq!(
        walk(&ram, Pa(1 << 36), t.config(), Va(0), READ, NO_HTTU),
        fault(FaultKind::ExternalAbort, 0, 0)
    );
    // Software queries report the memory error instead.
    assert!(matches!(
        t.lookup(&ram, Va(0x1000)),
        Err(sva_vmsa::Error::Memory(_))
    ));
}

/// Every AP value x PXN x UXN x privilege x access kind, against the Arm ARM tables:
/// AP[2:1] 00 = EL1 RW / EL0 none, 01 = RW / RW, 10 = EL1 RO / EL0 none, 11 = RO / RO;
/// EL1 execute unless PXN or EL0-writable (AP = 01); EL0 execute unless UXN.
#[test]
fn permission_matrix() {
    let (ram, t) = setup(Granule::Size4K, 39, 40);
    // (EL1 data, EL0 data) per AP value.
    let data = [("rw", "--"), ("rw", "rw"), ("r-", "--"), ("r-", "r-")];
    let mut page = 0u64;
    for ap in 0..4u8 {
        for pxn in [false, true] {
            for uxn in [false, true] {
                page += 1;
                let va = page << 12;
                let mut attrs = RW_NORMAL;
                attrs.set(Attributes::AP_EL0, ap & 1 != 0);
                attrs.set(Attributes::AP_RO, ap & 2 != 0);
                attrs.set(Attributes::PXN, pxn);
                attrs.set(Attributes::UXN, uxn);
                map(&ram, &t, va, va, 0x1000, attrs);
                for privileged in [true, false] {
                    let rights = if privileged {
                        data[ap as usize].0
                    } else {
                        data[ap as usize].1
                    };
                    let exec = if privileged { !pxn && ap != 0b01 } else { !uxn };
                    for (kind, allowed) in [
                        (AccessKind::Read, rights.starts_with('r')),
                        (AccessKind::Write, rights.ends_with('w')),
                        (AccessKind::Execute, exec),
                    ] {
                        let got = t.walk(&ram, Va(va + 8), Access::new(kind, privileged), NO_HTTU);
                        let what = format!(
                            "AP {ap:02b} PXN {pxn} UXN {uxn} EL{} {kind:?}",
                            u8::from(!privileged)
                        );
                        match got {
                            Ok(tr) => {
                                assert!(allowed, "{what}: allowed but expected a fault");
                                assert_eq!(tr.pa, Pa(va + 8));
                                assert!(tr.perms.allows(Access::new(kind, privileged)));
                            }
                            Err(f) => {
                                assert!(!allowed, "{what}: {f}");
                                assert_eq!((f.kind, f.level), (FaultKind::Permission, 3), "{what}");
                            }
                        }
                    }
                }
                // The reported permissions agree with the matrix.
                let p = t.walk(&ram, Va(va), READ, NO_HTTU).unwrap().perms;
                assert_eq!(p.write, ap & 2 == 0);
                assert_eq!(p.user, ap & 1 != 0);
                assert_eq!(p.priv_exec, !pxn && ap != 0b01);
                assert_eq!(p.user_exec, !uxn);
                assert!(p.read);
            }
        }
    }
}

#[test]
fn hierarchical_table_attributes() {
    let (ram, t) = setup(Granule::Size4K, 39, 40);
    // EL0 RW, executable everywhere (implied PXN aside).
    let attrs = RW_NORMAL | Attributes::AP_EL0;
    map(&ram, &t, 0x1000, 0x1000, 0x1000, attrs);
    let e2 = entry_at(&ram, &t, 0x1000, 2);
    let e1 = entry_at(&ram, &t, 0x1000, 1);
    let clean = ram.load_u64(e2).unwrap();
    let check = |a: Access| walk_kind(&ram, &t, 0x1000, a, NO_HTTU).is_ok();
    let user = |k| Access::new(k, false);
    let el1 = |k| Access::new(k, true);
    assert!(check(user(AccessKind::Write)) && check(user(AccessKind::Execute)));
    assert!(
        !check(el1(AccessKind::Execute)),
        "implied PXN: EL0 can write"
    );

    // APTable[0]: no EL0 access below. EL0 can no longer write, so EL1 may execute.
    patch(&ram, e2, |d| d.with_ap_table(0b01));
    assert!(!check(user(AccessKind::Read)) && !check(user(AccessKind::Write)));
    assert!(check(el1(AccessKind::Write)) && check(el1(AccessKind::Execute)));
    // EL0 execution is not a data access: still allowed.
    assert!(check(user(AccessKind::Execute)));
    ram.store_u64(e2, clean).unwrap();

    // APTable[1]: no writes below, at any level.
    patch(&ram, e2, |d| d.with_ap_table(0b10));
    assert!(check(user(AccessKind::Read)) && !check(user(AccessKind::Write)));
    assert!(!check(el1(AccessKind::Write)));
    ram.store_u64(e2, clean).unwrap();

    // UXNTable / PXNTable, set one level further up: still inherited.
    patch(&ram, e1, |d| d.with_uxn_table(true));
    assert!(!check(user(AccessKind::Execute)) && check(user(AccessKind::Read)));
    patch(&ram, e1, |d| d.with_uxn_table(false).with_pxn_table(true));
    patch(&ram, e2, |d| d.with_ap_table(0b01));
    assert!(!check(el1(AccessKind::Execute)));
    let p = t.walk(&ram, Va(0x1000), READ, NO_HTTU).unwrap().perms;
    assert!(!p.priv_exec && !p.user && p.write && p.user_exec);
}

/// Blocks at every level the granule allows and pages, for each granule with a 48-bit input
/// size (16K then starts at level 0 with a 2-entry root, 64K at level 1 with 64 entries).
#[test]
fn blocks_at_every_level_for_every_granule() {
    for g in Granule::ALL {
        let (ram, t) = setup(g, 48, 48);
        let cfg = *t.config();
        let mut va = 1u64 << 46;
        let mut expected = Vec::new();
        for level in (cfg.start_level()..=3).filter(|&l| cfg.block_allowed(l)) {
            let size = cfg.level_size(level);
            va = va.next_multiple_of(size);
            let pa = (3 * size) % (1 << 47);
            map(&ram, &t, va, pa, size, RW_NORMAL);
            expected.push((va, pa, size, level));
            // Leave a hole after each leaf.
            va += 2 * size;
        }
        assert_eq!(
            expected.len(),
            if g == Granule::Size4K { 3 } else { 2 },
            "{g:?}"
        );
        for &(va, pa, size, level) in &expected {
            for off in [0, 8, size / 2 + 0x18, size - 1] {
                let tr = t.walk(&ram, Va(va + off), READ, NO_HTTU).unwrap();
                assert_eq!(
                    (tr.pa, tr.level, tr.size),
                    (Pa(pa + off), level, size),
                    "{g:?}"
                );
                let leaf = t.lookup(&ram, Va(va + off)).unwrap().unwrap();
                assert_eq!((leaf.va, leaf.pa, leaf.level), (Va(va), Pa(pa), level));
            }
            // Just past it: nothing.
            let past = t.walk(&ram, Va(va + size), READ, NO_HTTU).unwrap_err();
            assert_eq!(past.kind, FaultKind::Translation, "{g:?}");
        }
    }
}

/// 16K and 64K tables end to end: every start level their input sizes give, with pages and
/// blocks, walked, then torn down.
#[test]
fn large_granules_end_to_end() {
    for g in [Granule::Size16K, Granule::Size64K] {
        for ia in [25, 30, 36, 42, 47, 48] {
            let (ram, t) = setup(g, ia, 48);
            let cfg = *t.config();
            let page = g.size();
            let block = cfg.level_size(2);
            let top = 1u64 << ia;
            // Pages at the bottom and top of the space, a block if one fits.
            let mut maps = vec![
                (0, 0x10_0000_0000, 3 * page),
                (top - 2 * page, 0x20_0000_0000, 2 * page),
            ];
            if 4 * block <= top && cfg.start_level() <= 2 {
                maps.push((block, 0x30_0000_0000, block));
            }
            for &(va, pa, size) in &maps {
                map(&ram, &t, va, pa, size, RW_NORMAL | Attributes::AP_EL0);
            }
            for &(va, pa, size) in &maps {
                for off in [0, page + 0x10, size - 8] {
                    let a = Access::new(AccessKind::Write, false);
                    let tr = t.walk(&ram, Va(va + off), a, NO_HTTU).unwrap();
                    assert_eq!(tr.pa, Pa(pa + off), "{g:?} ia {ia}");
                }
            }
            assert_eq!(
                walk_kind(&ram, &t, 3 * page, READ, NO_HTTU).unwrap_err().0,
                FaultKind::Translation
            );
            assert_eq!(
                walk_kind(&ram, &t, top, READ, NO_HTTU),
                Err((FaultKind::Translation, cfg.start_level()))
            );
            for &(va, _, size) in &maps {
                t.unmap(&ram, Va(va), size, &NoTlb).unwrap();
            }
            assert_eq!(t.table_count(&ram).unwrap(), 1, "{g:?} ia {ia}");
            t.destroy(&ram).unwrap();
            assert_eq!(ram.stats().used_frames, 0);
        }
    }
}
