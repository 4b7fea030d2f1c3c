//! Random sequences of address-space operations agree with a shadow model of every page's
//! protection and contents, and exit returns every frame.

mod common;

use common::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use sva_addr::Va;
use sva_mm::{Error, MapFlags, Prot};

/// The arena: two 2 MiB-aligned blocks, so block (THP) mappings appear and get split.
const ARENA: Va = Va(0x40_0000_0000);
const PAGES: u64 = 1024;

#[derive(Debug, Clone)]
enum Op {
    Map {
        start: u64,
        n: u64,
        prot: u8,
    },
    Unmap {
        start: u64,
        n: u64,
    },
    Protect {
        start: u64,
        n: u64,
        prot: u8,
    },
    Write {
        page: u64,
        off: u64,
        len: u64,
        byte: u8,
    },
    Read {
        page: u64,
        off: u64,
        len: u64,
    },
    DontNeed {
        start: u64,
        n: u64,
    },
    Reclaim {
        start: u64,
        n: u64,
    },
    Migrate {
        page: u64,
    },
    ForkAndScribble {
        page: u64,
    },
}

fn prot(bits: u8) -> Prot {
    Prot::from_bits_truncate(u32::from(bits) & 3)
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    (0..PAGES).prop_flat_map(|s| (Just(s), 1..=(PAGES - s).min(600)))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (range(), 0..4u8).prop_map(|((start, n), prot)| Op::Map { start, n, prot }),
        1 => range().prop_map(|(start, n)| Op::Unmap { start, n }),
        1 => (range(), 0..4u8).prop_map(|((start, n), prot)| Op::Protect { start, n, prot }),
        4 => (0..PAGES, 0..PAGE, 1..3 * PAGE, any::<u8>())
            .prop_map(|(page, off, len, byte)| Op::Write { page, off, len, byte }),
        3 => (0..PAGES, 0..PAGE, 1..2 * PAGE).prop_map(|(page, off, len)| Op::Read { page, off, len }),
        1 => range().prop_map(|(start, n)| Op::DontNeed { start, n }),
        1 => range().prop_map(|(start, n)| Op::Reclaim { start, n }),
        1 => (0..PAGES).prop_map(|page| Op::Migrate { page }),
        1 => (0..PAGES).prop_map(|page| Op::ForkAndScribble { page }),
    ]
}

#[derive(Default)]
struct Model {
    prot: BTreeMap<u64, Prot>,
    data: BTreeMap<u64, Vec<u8>>,
}

impl Model {
    fn mapped(&self, start: u64, n: u64) -> bool {
        (start..start + n).all(|p| self.prot.contains_key(&p))
    }
    fn allows(&self, first: u64, last: u64, write: bool) -> bool {
        (first..=last).all(|p| {
            self.prot.get(&p).is_some_and(|pr| {
                if write {
                    pr.contains(Prot::WRITE)
                } else {
                    pr.intersects(Prot::READ | Prot::WRITE)
                }
            })
        })
    }
    fn byte(&self, addr: u64) -> u8 {
        self.data
            .get(&(addr / PAGE))
            .map_or(0, |d| d[(addr % PAGE) as usize])
    }
    fn zero(&mut self, start: u64, n: u64) {
        for p in start..start + n {
            self.data.remove(&p);
        }
    }
}

fn va(page: u64) -> Va {
    ARENA + page * PAGE
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn operations_agree_with_shadow_model(ops in proptest::collection::vec(op(), 1..40)) {
        let sys = system();
        let mm = sys.spawn().unwrap();
        let mut m = Model::default();
        // Start fully mapped so later operations mostly hit mapped ranges.
        let rw = Prot::READ | Prot::WRITE;
        mm.mmap(Some(ARENA), PAGES * PAGE, rw, MapFlags::PRIVATE | MapFlags::FIXED).unwrap();
        m.prot.extend((0..PAGES).map(|p| (p, rw)));
        for op in ops {
            match op {
                Op::Map { start, n, prot: p } => {
                    mm.mmap(Some(va(start)), n * PAGE, prot(p), MapFlags::PRIVATE | MapFlags::FIXED).unwrap();
                    m.zero(start, n);
                    for pg in start..start + n { m.prot.insert(pg, prot(p)); }
                }
                Op::Unmap { start, n } => {
                    mm.munmap(va(start), n * PAGE).unwrap();
                    m.zero(start, n);
                    for pg in start..start + n { m.prot.remove(&pg); }
                }
                Op::Protect { start, n, prot: p } => {
                    let r = mm.mprotect(va(start), n * PAGE, prot(p));
                    if m.mapped(start, n) {
                        r.unwrap();
                        for pg in start..start + n { m.prot.insert(pg, prot(p)); }
                    } else {
                        prop_assert!(matches!(r, Err(Error::NotMapped(_))), "{r:?}");
                    }
                }
                Op::Write { page, off, len, byte } => {
                    let addr = page * PAGE + off;
                    let len = len.min(PAGES * PAGE - addr);
                    let r = mm.write(ARENA + addr, &vec![byte; len as usize]);
                    // Stores happen in address order: the bytes before the first page that
                    // refuses them are written, as a faulting memcpy leaves them.
                    let first_bad = (addr / PAGE..=(addr + len - 1) / PAGE)
                        .find(|&p| !m.allows(p, p, true));
                    let written_end = first_bad.map_or(addr + len, |p| (p * PAGE).max(addr));
                    for a in addr..written_end {
                        m.data.entry(a / PAGE).or_insert_with(|| vec![0; PAGE as usize])[(a % PAGE) as usize] = byte;
                    }
                    if first_bad.is_none() {
                        r.unwrap();
                    } else {
                        prop_assert!(matches!(r, Err(Error::Segv { .. })), "{r:?}");
                    }
                }
                Op::Read { page, off, len } => {
                    let addr = page * PAGE + off;
                    let len = len.min(PAGES * PAGE - addr);
                    let mut buf = vec![0u8; len as usize];
                    let r = mm.read(ARENA + addr, &mut buf);
                    if m.allows(addr / PAGE, (addr + len - 1) / PAGE, false) {
                        r.unwrap();
                        for (i, b) in buf.iter().enumerate() {
                            prop_assert_eq!(*b, m.byte(addr + i as u64), "byte at page offset {:#x}", addr + i as u64);
                        }
                    } else {
                        prop_assert!(matches!(r, Err(Error::Segv { .. })), "{r:?}");
                    }
                }
                Op::DontNeed { start, n } => {
                    let r = mm.madvise_dontneed(va(start), n * PAGE);
                    if m.mapped(start, n) { r.unwrap(); m.zero(start, n); } else { prop_assert!(r.is_err()); }
                }
                Op::Reclaim { start, n } => { mm.reclaim(va(start), n * PAGE).unwrap(); }
                Op::Migrate { page } => {
                    match mm.migrate(va(page)) {
                        Ok(_) | Err(Error::NotMapped(_)) | Err(Error::PageShared(_)) => {}
                        Err(e) => prop_assert!(false, "migrate: {e}"),
                    }
                }
                Op::ForkAndScribble { page } => {
                    let child = sys.fork(mm.pid()).unwrap();
                    // The child may write wherever the model says it can; the parent must not see it.
                    if m.allows(page, page, true) {
                        child.write(va(page), &[0xee; 64]).unwrap();
                    }
                    sys.exit(child.pid()).unwrap();
                }
            }
        }
        // Final sweep: every readable page matches the model.
        for (&pg, pr) in &m.prot {
            if pr.intersects(Prot::READ | Prot::WRITE) {
                let mut buf = vec![0u8; PAGE as usize];
                mm.read(va(pg), &mut buf).unwrap();
                let want = m.data.get(&pg).cloned().unwrap_or_else(|| vec![0; PAGE as usize]);
                prop_assert!(buf == want, "page {pg} differs");
            }
        }
        sys.exit(mm.pid()).unwrap();
        prop_assert_eq!(sys.ram().stats().used_frames, 0);
        prop_assert_eq!(sys.swap_stats().used, 0);
    }
}
