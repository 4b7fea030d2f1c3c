//! Break-before-make is observable through the TLB hook, empty tables are freed, and
//! software updates do not lose concurrent hardware updates.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use sva_physmem::Ram;
use sva_vmsa::{
    Access, AccessKind, Attributes, Granule, Httu, NoTlb, Pa, PageTable, TableConfig,
    TlbInvalidate, Va,
};

const A: Attributes = Attributes::AF
    .union(Attributes::SH_INNER)
    .union(Attributes::AP_EL0);

/// One invalidation: its range, `leaf_only`, and what `lookup` saw at that moment for the
/// first address of the range (`None`: no valid translation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    va: u64,
    size: u64,
    leaf_only: bool,
    mapped_to: Option<u64>,
}

/// A TLB that, when told to invalidate, looks at the table in memory the way a walker
/// would at that instant.
struct Observer<'a> {
    ram: &'a Ram,
    table: PageTable,
    seen: RefCell<Vec<Seen>>,
}

impl<'a> Observer<'a> {
    fn new(ram: &'a Ram, table: PageTable) -> Self {
        Self {
            ram,
            table,
            seen: RefCell::default(),
        }
    }

    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.borrow_mut())
    }
}

impl TlbInvalidate for Observer<'_> {
    fn invalidate(&self, va: Va, size: u64, leaf_only: bool) {
        let mapped_to = self
            .table
            .lookup(self.ram, va)
            .unwrap()
            .map(|l| l.pa.raw() + (va.raw() - l.va.raw()));
        self.seen.borrow_mut().push(Seen {
            va: va.raw(),
            size,
            leaf_only,
            mapped_to,
        });
    }
}

fn setup(g: Granule) -> (Ram, PageTable) {
    let ram = Ram::new(64 << 20).unwrap();
    let t = PageTable::new(&ram, TableConfig::new(g, 39, 40).unwrap()).unwrap();
    (ram, t)
}

#[test]
fn replacing_a_page_invalidates_between_break_and_make() {
    let (ram, t) = setup(Granule::Size4K);
    let obs = Observer::new(&ram, t.clone());
    // Mapping into an empty slot needs no invalidation.
    t.map(&ram, Va(0x5000), Pa(0x10_0000), 0x1000, A, false, &obs)
        .unwrap();
    assert!(obs.take().is_empty());
    // Same mapping again: nothing to do.
    t.map(&ram, Va(0x5000), Pa(0x10_0000), 0x1000, A, false, &obs)
        .unwrap();
    assert!(obs.take().is_empty());
    // New output address: the entry is invalid while the TLB is told.
    t.map(&ram, Va(0x5000), Pa(0x20_0000), 0x1000, A, false, &obs)
        .unwrap();
    assert_eq!(
        obs.take(),
        [Seen {
            va: 0x5000,
            size: 0x1000,
            leaf_only: true,
            mapped_to: None
        }]
    );
    assert_eq!(
        t.lookup(&ram, Va(0x5000)).unwrap().unwrap().pa,
        Pa(0x20_0000)
    );
    // New attributes only: the same.
    t.map(
        &ram,
        Va(0x5000),
        Pa(0x20_0000),
        0x1000,
        A.with_attr_indx(2),
        false,
        &obs,
    )
    .unwrap();
    assert_eq!(obs.take()[0].mapped_to, None);
    let leaf = t.lookup(&ram, Va(0x5000)).unwrap().unwrap();
    assert_eq!(leaf.desc.attr_indx(), 2);
}

#[test]
fn splitting_a_block_invalidates_it_while_invalid() {
    for g in Granule::ALL {
        let (ram, t) = setup(g);
        let block = t.config().level_size(2);
        let page = g.size();
        t.map(&ram, Va(block), Pa(4 * block), block, A, false, &NoTlb)
            .unwrap();
        assert!(t.lookup(&ram, Va(block)).unwrap().unwrap().is_block());
        let obs = Observer::new(&ram, t.clone());
        // Remap one page inside: split (BBM on the block), then replace the page (BBM).
        t.map(
            &ram,
            Va(block + page),
            Pa(0x1_0000_0000),
            page,
            A,
            false,
            &obs,
        )
        .unwrap();
        assert_eq!(
            obs.take(),
            [
                Seen {
                    va: block,
                    size: block,
                    leaf_only: true,
                    mapped_to: None
                },
                Seen {
                    va: block + page,
                    size: page,
                    leaf_only: true,
                    mapped_to: None
                }
            ],
            "{g:?}"
        );
        // The rest of the block still maps where it did.
        let tr = t
            .walk(
                &ram,
                Va(block + 2 * page + 4),
                Access::new(AccessKind::Read, true),
                Httu::default(),
            )
            .unwrap();
        assert_eq!((tr.pa, tr.level), (Pa(4 * block + 2 * page + 4), 3));
        // split_block on a block: the same protocol.
        t.map(&ram, Va(4 * block), Pa(0), block, A, false, &NoTlb)
            .unwrap();
        t.split_block(&ram, Va(4 * block + 5 * page), &obs).unwrap();
        assert_eq!(
            obs.take(),
            [Seen {
                va: 4 * block,
                size: block,
                leaf_only: true,
                mapped_to: None
            }]
        );
    }
}

#[test]
fn a_block_replacing_a_table_invalidates_the_walk_cache_first() {
    let (ram, t) = setup(Granule::Size4K);
    t.map(&ram, Va(0x20_0000), Pa(0x1000), 0x3000, A, false, &NoTlb)
        .unwrap();
    let obs = Observer::new(&ram, t.clone());
    t.map(
        &ram,
        Va(0x20_0000),
        Pa(0x40_0000),
        0x20_0000,
        A,
        false,
        &obs,
    )
    .unwrap();
    assert_eq!(
        obs.take(),
        [Seen {
            va: 0x20_0000,
            size: 0x20_0000,
            leaf_only: false,
            mapped_to: None
        }]
    );
    assert_eq!(t.table_count(&ram).unwrap(), 2);
}

#[test]
fn unmap_invalidates_after_clearing() {
    let (ram, t) = setup(Granule::Size4K);
    t.map(&ram, Va(0x1000), Pa(0x1000), 0x3000, A, false, &NoTlb)
        .unwrap();
    t.map(&ram, Va(0x8000), Pa(0x1000), 0x1000, A, false, &NoTlb)
        .unwrap();
    let obs = Observer::new(&ram, t.clone());
    let removed = t.unmap(&ram, Va(0x2000), 0x7000, &obs).unwrap();
    assert_eq!(removed.len(), 3);
    let seen = obs.take();
    // Adjacent pages coalesce; every range is unmapped when the TLB hears of it.
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.leaf_only && s.mapped_to.is_none()));
    assert_eq!((seen[0].va, seen[0].size), (0x2000, 0x2000));
    assert_eq!((seen[1].va, seen[1].size), (0x8000, 0x1000));
}

#[test]
fn unmapping_everything_leaves_only_the_root_then_destroy_frees_it() {
    let (ram, t) = setup(Granule::Size4K);
    assert_eq!(ram.stats().used_frames, 1);
    // Pages, 2M blocks and a 1G block, in several level-1 slots, with holes.
    t.map(&ram, Va(0x1000), Pa(0x1000), 0x5000, A, false, &NoTlb)
        .unwrap();
    t.map(
        &ram,
        Va(0x20_0000),
        Pa(0x20_0000),
        6 << 20,
        A,
        false,
        &NoTlb,
    )
    .unwrap();
    t.map(&ram, Va(1 << 30), Pa(1 << 30), 1 << 30, A, false, &NoTlb)
        .unwrap();
    t.map(
        &ram,
        Va((3 << 30) - 0x3000),
        Pa(0x3000),
        0x6000,
        A,
        true,
        &NoTlb,
    )
    .unwrap();
    t.map(&ram, Va(0x7f_ffff_f000), Pa(0), 0x1000, A, false, &NoTlb)
        .unwrap();
    assert!(ram.stats().used_frames > 5);
    // Unmap in pieces that cut blocks, then the rest.
    t.unmap(&ram, Va(0x30_0000), 0x1000, &NoTlb).unwrap();
    t.unmap(&ram, Va((1 << 30) + 0x1234_5000), 0x2000, &NoTlb)
        .unwrap();
    assert!(t.table_count(&ram).unwrap() > 4);
    t.unmap(&ram, Va(0), 1 << 39, &NoTlb).unwrap();
    assert_eq!(ram.stats().used_frames, 1);
    assert_eq!(t.table_count(&ram).unwrap(), 1);
    t.destroy(&ram).unwrap();
    assert_eq!(ram.stats().used_frames, 0);
}

#[test]
fn destroy_frees_every_table_of_a_populated_tree() {
    for g in Granule::ALL {
        let (ram, t) = setup(g);
        let page = g.size();
        for i in 0..8u64 {
            t.map(&ram, Va(i << 33), Pa(0), page, A, false, &NoTlb)
                .unwrap();
        }
        let tables = t.table_count(&ram).unwrap() as u64;
        assert_eq!(ram.stats().used_frames, tables * page / 4096);
        t.destroy(&ram).unwrap();
        assert_eq!(ram.stats().used_frames, 0, "{g:?}");
    }
}

/// Hardware AF updates from walker threads race with software permission changes made in
/// place (`protect`); none may be lost. Each page is walked exactly once, while `protect`
/// keeps rewriting every descriptor: a non-atomic read-modify-write there would put back
/// AF = 0 and the page would stay unaccessed.
#[test]
fn hardware_af_updates_survive_concurrent_software_updates() {
    const PAGES: u64 = 1024;
    let ram = Arc::new(Ram::new(16 << 20).unwrap());
    let t = PageTable::new(&ram, TableConfig::new(Granule::Size4K, 39, 40).unwrap()).unwrap();
    let no_af = Attributes::SH_INNER | Attributes::AP_EL0;
    t.map(
        &ram,
        Va(0),
        Pa(0x100_0000),
        PAGES * 0x1000,
        no_af,
        true,
        &NoTlb,
    )
    .unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let walkers: Vec<_> = (0..2u64)
        .map(|w| {
            let (ram, done, t) = (ram.clone(), done.clone(), t.clone());
            std::thread::spawn(move || {
                let read = Access::new(AccessKind::Read, false);
                let ha = Httu {
                    ha: true,
                    hd: false,
                };
                for p in (w..PAGES).step_by(2) {
                    t.walk(ram.as_ref(), Va(p << 12), read, ha)
                        .expect("readable at EL0");
                    std::thread::yield_now();
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let mut round = 0;
    while done.load(Ordering::SeqCst) < 2 || round % 2 == 1 {
        let (set, clear) = if round % 2 == 0 {
            (Attributes::UXN, Attributes::empty())
        } else {
            (Attributes::empty(), Attributes::UXN)
        };
        t.protect(&ram, Va(0), PAGES * 0x1000, set, clear, &NoTlb)
            .unwrap();
        round += 1;
    }
    for w in walkers {
        w.join().unwrap();
    }
    let leaves = t.leaves(ram.as_ref(), Va(0), PAGES * 0x1000).unwrap();
    assert_eq!(leaves.len() as u64, PAGES);
    let lost = leaves.iter().filter(|l| !l.desc.af()).count();
    assert_eq!(
        lost, 0,
        "{lost} hardware AF updates lost over {round} protect rounds"
    );
    // An even number of UXN toggles.
    assert!(leaves.iter().all(|l| !l.desc.uxn()));
}
