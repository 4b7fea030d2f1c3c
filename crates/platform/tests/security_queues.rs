//! The isolation matrix, part 3: queue and table abuse on the whole platform (model, driver
//! and SVA core together). A flooded Event queue, a Command queue the SMMU stops consuming,
//! garbage commands, live STEs, CDs and page-table descriptors with reserved bits set or
//! pointing back at themselves, output addresses beyond the IPS: each ends as an
//! architectural event or a driver error, never a panic or a hang, and the platform works
//! again once the cause is gone. The model-level cases (every event on a hand-built table,
//! the raw queue overflow mechanics) are in `crates/smmuv3/tests` and
//! `crates/smmuv3-driver/tests`; `docs/security.md` lists both.

mod common;

use common::{AT, RW, STALL, dev, sva_device};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sva_addr::{Pa, Pasid, StreamId, Va};
use sva_iommu::Bond;
use sva_mm::{MapFlags, Mm, MmConfig};
use sva_physmem::PhysMemory;
use sva_platform::{DmaError, Platform, PlatformConfig, TestEndpoint};
use sva_smmuv3::{EventId, Mmio};
use sva_smmuv3_driver::{Command, DeviceDesc, Error as DrvError, FaultPath, ProbeOptions};
use sva_smmuv3_spec::cd::L1Cd;
use sva_smmuv3_spec::control::Cr0;
use sva_smmuv3_spec::event::Event;
use sva_smmuv3_spec::regs;
use sva_smmuv3_spec::ste::{L1Std, StrtabBase, StrtabBaseCfg, StrtabFmt};

const SID: StreamId = StreamId(0x10);
/// Faults end the transaction at once (no stall), so every case reports its event id.
const NO_STALL: DeviceDesc = DeviceDesc {
    fault_path: FaultPath::Pri,
    ats: false,
};

struct Rig {
    p: Platform,
    ep: Arc<TestEndpoint>,
    mm: Arc<Mm>,
    bond: Bond,
}

/// A platform, a device at [`SID`] and a process bound to it with 4 populated pages at
/// [`AT`].
fn rig(config: PlatformConfig) -> Rig {
    let p = Platform::new(config).unwrap();
    let ep = sva_device(&p, SID, NO_STALL);
    let sva = p.sva.clone().unwrap();
    let mm = p.system.spawn().unwrap();
    mm.mmap(
        Some(AT),
        4 * 4096,
        RW,
        MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::POPULATE | MapFlags::NOHUGEPAGE,
    )
    .unwrap();
    mm.write(AT, b"live data").unwrap();
    let bond = sva.bind(dev(SID), &mm).unwrap();
    Rig { p, ep, mm, bond }
}

fn threaded() -> PlatformConfig {
    PlatformConfig {
        irq_thread: true,
        ..PlatformConfig::default()
    }
}

impl Rig {
    fn read(&self, va: Va) -> Result<Vec<u8>, DmaError> {
        self.ep.dma_read(Some(self.bond.pasid), va.raw(), 9)
    }

    fn works(&self) {
        assert_eq!(self.read(AT).unwrap(), b"live data");
    }

    fn aborted_with(&self, va: Va, id: EventId) {
        let r = self.read(va);
        assert!(
            matches!(r, Err(DmaError::Aborted { event: Some(e), .. }) if e == id),
            "expected {id:?}: {r:?}"
        );
    }

    fn load(&self, pa: Pa) -> u64 {
        self.p.ram.load_u64(pa).unwrap()
    }

    fn store(&self, pa: Pa, v: u64) {
        self.p.ram.store_u64(pa, v).unwrap();
    }

    fn submit(&self, cmds: &[Command]) {
        self.p.driver.submit_batch(cmds).unwrap();
    }

    /// Address of the live STE of `sid`, found the way the SMMU finds it.
    fn ste_addr(&self, sid: StreamId) -> Pa {
        let base = StrtabBase::from_bits(self.p.smmu.read64(u64::from(regs::STRTAB_BASE)));
        let cfg = StrtabBaseCfg::from_bits(self.p.smmu.read32(u64::from(regs::STRTAB_BASE_CFG)));
        let base = Pa(base.addr() << 6);
        match cfg.fmt() {
            StrtabFmt::TwoLevel => {
                let l1 = self.l1std_addr(sid);
                let l1 = L1Std::from_bits(self.load(l1));
                let mask = (1u64 << cfg.split()) - 1;
                l1.l2ptr_pa() + (u64::from(sid.raw()) & mask) * 64
            }
            _ => base + u64::from(sid.raw()) * 64,
        }
    }

    fn l1std_addr(&self, sid: StreamId) -> Pa {
        let base = StrtabBase::from_bits(self.p.smmu.read64(u64::from(regs::STRTAB_BASE)));
        let cfg = StrtabBaseCfg::from_bits(self.p.smmu.read32(u64::from(regs::STRTAB_BASE_CFG)));
        Pa(base.addr() << 6) + (u64::from(sid.raw()) >> cfg.split()) * 8
    }

    /// Address of the L1CD covering `pasid` on `sid` (2-level CD table) and of the CD.
    fn cd_addrs(&self, sid: StreamId, pasid: Pasid) -> (Pa, Pa) {
        let ste = self.p.driver.ste(sid).unwrap();
        let w0 = ste.word0();
        let ptr = w0.s1_context_ptr_pa();
        let bits = w0.s1fmt().l2_index_bits().expect("a 2-level CD table");
        let l1 = ptr + (u64::from(pasid.raw()) >> bits) * 8;
        let l2 = L1Cd::from_bits(self.load(l1)).l2ptr_pa();
        (l1, l2 + (u64::from(pasid.raw()) & ((1 << bits) - 1)) * 64)
    }

    /// The descriptor addresses of the walk of `va` in the process's tables (4 KiB
    /// granule, 48-bit VA: levels 0 to 3).
    fn walk(&self, va: Va) -> [Pa; 4] {
        let mut table = self.mm.table_root();
        let mut out = [Pa(0); 4];
        for (level, slot) in out.iter_mut().enumerate() {
            let shift = 39 - 9 * level as u64;
            *slot = table + ((va.raw() >> shift) & 511) * 8;
            if level < 3 {
                table = Pa(self.load(*slot) & 0x0000_ffff_ffff_f000);
            }
        }
        out
    }

    fn flush_iotlb(&self) {
        self.p.driver.tlbi_asid(self.mm.asid()).unwrap();
    }

    fn events(&self) -> Vec<Event> {
        self.p.deliver_irqs();
        let mut ev = Vec::new();
        let t0 = Instant::now();
        loop {
            ev.extend(self.p.take_events());
            if !ev.is_empty() || t0.elapsed() > Duration::from_millis(500) {
                return ev;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Queues

#[test]
fn an_event_queue_flood_overflows_and_stalls_still_complete() {
    // Interrupts by hand and a 4-entry Event queue.
    let r = rig(PlatformConfig {
        probe: ProbeOptions {
            eventq_log2: 2,
            ..ProbeOptions::default()
        },
        ..PlatformConfig::default()
    });
    let sva = r.p.sva.clone().unwrap();
    let stall_sid = StreamId(0x11);
    let stall = sva_device(&r.p, stall_sid, STALL);
    let other = r.p.system.spawn().unwrap();
    let untouched = other.mmap(None, 4096, RW, MapFlags::PRIVATE).unwrap();
    let sb = sva.bind(dev(stall_sid), &other).unwrap();
    // A device hammering an unbound PASID: C_BAD_CD every time, far more than fit.
    for i in 0..100u64 {
        let e = r.ep.dma_read(Some(Pasid(0x100)), i * 4096, 4);
        assert!(matches!(
            e,
            Err(DmaError::Aborted {
                event: Some(EventId::CBadCd),
                ..
            })
        ));
    }
    // Meanwhile a stalled fault: its record waits for room, it is never lost.
    let dma = {
        let stall = stall.clone();
        std::thread::spawn(move || stall.dma_write(Some(sb.pasid), untouched.raw(), b"stalled"))
    };
    let t0 = Instant::now();
    while !dma.is_finished() {
        r.p.deliver_irqs();
        assert!(t0.elapsed() < Duration::from_secs(10), "the stall was lost");
        std::thread::sleep(Duration::from_millis(1));
    }
    dma.join().unwrap().unwrap();
    let mut b = [0u8; 7];
    other.read(untouched, &mut b).unwrap();
    assert_eq!(&b, b"stalled");
    let st = r.p.driver.stats();
    assert!(st.event_overflows >= 1, "{st:?}");
    assert!(r.p.smmu.stats().events_lost >= 90);
    let seen = r.p.take_events();
    assert!(seen.len() < 100, "{} events", seen.len());
    // Recovered: the next error is recorded and delivered.
    r.works();
    let _ = r.ep.dma_read(Some(Pasid(0x101)), 0, 4);
    let ev = r.events();
    assert!(
        ev.iter()
            .any(|e| e.id == EventId::CBadCd && e.substream_id == Some(Pasid(0x101))),
        "{ev:?}"
    );
}

#[test]
fn a_command_queue_the_smmu_stops_consuming_times_out_and_recovers() {
    let r = rig(PlatformConfig {
        probe: ProbeOptions {
            cmdq_log2: 3,
            poll_timeout: Duration::from_millis(50),
            ..ProbeOptions::default()
        },
        irq_thread: true,
        ..PlatformConfig::default()
    });
    let sva = r.p.sva.clone().unwrap();
    r.works();
    // Something stops the SMMU's command processing behind the driver's back.
    let cr0 = Cr0::from_bits(r.p.smmu.read32(u64::from(regs::CR0)));
    r.p.smmu
        .write32(u64::from(regs::CR0), cr0.with_cmdqen(false).into_bits());
    let t0 = Instant::now();
    let first = r.p.driver.tlbi_asid(r.mm.asid()).unwrap_err();
    assert!(matches!(first, DrvError::SyncTimeout { .. }), "{first}");
    // More submissions fill the queue: the driver reports it instead of overwriting.
    let mut full = false;
    for _ in 0..8 {
        match r.p.driver.tlbi_asid(r.mm.asid()) {
            Err(DrvError::Timeout(what)) if what.contains("space") => {
                full = true;
                break;
            }
            Err(DrvError::SyncTimeout { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(full, "the queue never filled");
    // The SVA core gets errors, not a hang.
    let late = r.p.system.spawn().unwrap();
    late.mmap(
        Some(AT),
        4096,
        RW,
        MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::POPULATE,
    )
    .unwrap();
    late.write(AT, b"late data").unwrap();
    let failed = sva.bind(dev(SID), &late);
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(sva.pasid_of(late.pid()), None);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    // The SMMU resumes: what was queued runs, new commands complete.
    r.p.smmu.write32(u64::from(regs::CR0), cr0.into_bits());
    r.p.driver.sync().unwrap();
    r.works();
    // The failed bind left nothing live behind: its PASID reaches nothing.
    let next = Pasid(r.bond.pasid.raw() + 1);
    let leak = r.ep.dma_read(Some(next), AT.raw(), 9);
    assert!(leak.is_err(), "a failed bind left a live context: {leak:?}");
    let b = sva.bind(dev(SID), &late).unwrap();
    assert_eq!(
        r.ep.dma_read(Some(b.pasid), AT.raw(), 9).unwrap(),
        b"late data"
    );
}

#[test]
fn garbage_commands_are_rejected_and_the_queue_keeps_serving_sva() {
    let r = rig(threaded());
    for words in [[0xFF, 0], [0x7F, u64::MAX], [0x11 | (1 << 8), 0], [0, 0]] {
        let e = r.p.driver.submit_raw(words).unwrap_err();
        assert!(matches!(e, DrvError::IllegalCommand { .. }), "{e}");
    }
    assert_eq!(r.p.driver.stats().cmdq_errors, 4);
    // Invalidation still reaches the SMMU: munmap, then the device faults.
    r.works();
    r.mm.munmap(AT + 4096, 4096).unwrap();
    assert!(r.read(AT + 4096).is_err());
    let other = r.p.system.spawn().unwrap();
    let b = r.p.sva.as_ref().unwrap().bind(dev(SID), &other).unwrap();
    r.p.sva.as_ref().unwrap().unbind(b).unwrap();
    r.works();
}

// ---------------------------------------------------------------------------------------
// Tables with reserved bits

#[test]
fn a_live_ste_with_reserved_bits_is_c_bad_ste_until_rewritten() {
    let r = rig(threaded());
    r.works();
    let at = r.ste_addr(SID);
    let w0 = r.load(at);
    assert_eq!(
        w0,
        r.p.driver.ste(SID).unwrap().words()[0],
        "found the live STE"
    );
    r.store(at, w0 | (1 << 55));
    r.submit(&[Command::CfgiSte {
        sid: SID,
        leaf: true,
    }]);
    r.aborted_with(AT, EventId::CBadSte);
    assert!(r.events().iter().any(|e| e.id == EventId::CBadSte));
    r.store(at, w0);
    r.submit(&[Command::CfgiSte {
        sid: SID,
        leaf: true,
    }]);
    r.works();
}

#[test]
fn a_live_cd_with_reserved_bits_is_c_bad_cd_until_rewritten() {
    let r = rig(threaded());
    r.works();
    let (_, at) = r.cd_addrs(SID, r.bond.pasid);
    let w1 = r.load(at + 8);
    r.store(at + 8, w1 | (1 << 52));
    let cfgi = Command::CfgiCd {
        sid: SID,
        ssid: r.bond.pasid,
        leaf: true,
    };
    r.submit(&[cfgi]);
    r.aborted_with(AT, EventId::CBadCd);
    assert!(r.events().iter().any(|e| e.id == EventId::CBadCd));
    r.store(at + 8, w1);
    r.submit(&[cfgi]);
    r.works();
}

#[test]
fn reserved_page_table_descriptors_are_translation_faults() {
    let r = rig(threaded());
    r.works();
    // 0b01 at level 3 is a reserved encoding; at level 0 it would be a block, which
    // 4 KiB granules do not have: both are translation faults.
    let walk = r.walk(AT + 4096);
    let pte = r.load(walk[3]);
    r.store(walk[3], (pte & !0b11) | 0b01);
    r.flush_iotlb();
    r.aborted_with(AT + 4096, EventId::FTranslation);
    r.store(walk[3], pte);
    let l0 = r.load(walk[0]);
    r.store(walk[0], (l0 & !0b11) | 0b01);
    r.flush_iotlb();
    r.aborted_with(AT, EventId::FTranslation);
    r.store(walk[0], l0);
    r.flush_iotlb();
    r.works();
    assert_eq!(r.read(AT + 4096).unwrap(), [0; 9]);
}

#[test]
fn an_output_address_beyond_the_ips_is_an_address_size_fault() {
    // 40-bit physical addresses: the CD's IPS is 40 bits.
    let r = rig(PlatformConfig {
        mm: MmConfig {
            oa_bits: 40,
            ..MmConfig::default()
        },
        irq_thread: true,
        ..PlatformConfig::default()
    });
    r.works();
    let walk = r.walk(AT + 2 * 4096);
    let pte = r.load(walk[3]);
    r.store(walk[3], (pte & !0x0000_ffff_ffff_f000) | (1 << 44));
    r.flush_iotlb();
    r.aborted_with(AT + 2 * 4096, EventId::FAddrSize);
    // In a table descriptor too.
    let l2 = r.load(walk[2]);
    r.store(walk[2], (l2 & !0x0000_ffff_ffff_f000) | (1 << 45));
    r.flush_iotlb();
    r.aborted_with(AT, EventId::FAddrSize);
    r.store(walk[2], l2);
    r.store(walk[3], pte);
    r.flush_iotlb();
    r.works();
}

// ---------------------------------------------------------------------------------------
// Loops

#[test]
fn a_page_table_pointing_at_itself_or_an_ancestor_ends_the_walk_with_a_fault() {
    let r = rig(threaded());
    r.works();
    let walk = r.walk(AT);
    let l1_table = Pa(walk[1].raw() & !0xfff);
    let l2_table = Pa(walk[2].raw() & !0xfff);
    let l1 = r.load(walk[1]);
    let l2 = r.load(walk[2]);
    // The level-2 descriptor of AT points at its own table, then at the level-1 table.
    for target in [l2_table, l1_table] {
        r.store(walk[2], (l2 & !0x0000_ffff_ffff_f000) | target.raw());
        r.flush_iotlb();
        // The walk reads the looped table once more as level 3 and stops there: slot 0 is
        // a table descriptor read as a page (AP = 0b00, no EL0 access), slot 2 is empty.
        let t0 = Instant::now();
        r.aborted_with(AT + 2 * 4096, EventId::FTranslation);
        let at_slot0 = if target == l2_table { AT } else { AT + 4096 };
        r.aborted_with(at_slot0, EventId::FPermission);
        assert!(t0.elapsed() < Duration::from_secs(1));
        // A write (privileged or not) cannot reach the table frame either.
        assert!(
            r.ep.transact(
                Some(r.bond.pasid),
                at_slot0.raw(),
                sva_smmuv3::AccessKind::Write,
                true
            )
            .is_err()
        );
    }
    r.store(walk[2], l2);
    assert_eq!(r.load(walk[1]), l1, "the ancestor was modified");
    r.flush_iotlb();
    r.works();
    // The process still tears down normally.
    r.p.system.exit(r.mm.pid()).unwrap();
}

#[test]
fn a_cd_table_or_stream_table_pointing_at_itself_is_a_configuration_error() {
    let r = rig(threaded());
    r.works();
    // The L1CD of the bond's PASID points at the L1 table itself: the "CD" read there is
    // made of L1 descriptors (AA64 = 0), C_BAD_CD.
    let (l1cd, _) = r.cd_addrs(SID, r.bond.pasid);
    let saved = r.load(l1cd);
    let l1_table = Pa(l1cd.raw() & !0xfff);
    r.store(
        l1cd,
        L1Cd::from_bits(saved).with_l2ptr_pa(l1_table).into_bits(),
    );
    let cfgi_cd = Command::CfgiCd {
        sid: SID,
        ssid: r.bond.pasid,
        leaf: false,
    };
    r.submit(&[cfgi_cd]);
    r.aborted_with(AT, EventId::CBadCd);
    r.store(l1cd, saved);
    r.submit(&[cfgi_cd]);
    r.works();
    // The L1STD of the stream points at the L1 stream table itself: the "STE" is made of
    // L1 descriptors of StreamIDs nobody uses (V = 0), C_BAD_STE.
    let l1std = r.l1std_addr(SID);
    let saved = r.load(l1std);
    let l1_table = Pa(l1std.raw() & !0xfff);
    r.store(
        l1std,
        L1Std::from_bits(saved).with_l2ptr_pa(l1_table).into_bits(),
    );
    let cfgi_ste = Command::CfgiSte {
        sid: SID,
        leaf: false,
    };
    r.submit(&[cfgi_ste]);
    r.aborted_with(AT, EventId::CBadSte);
    r.store(l1std, saved);
    r.submit(&[cfgi_ste]);
    r.works();
}
