//! Granules, substream corner cases, global errors, PTM and concurrency.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::*;
use sva_smmuv3::{
    AccessKind, Asid, AtsCompletion, BroadcastTlbi, EventId, IrqLine, Mmio, Pasid, SmmuConfig,
    StreamId, TranslateOutcome,
};
use sva_smmuv3_spec::cd::L1Cd;
use sva_smmuv3_spec::command::Command;
use sva_smmuv3_spec::control::{Gerror, IrqCfg0};
use sva_smmuv3_spec::encoding::Tg0;
use sva_smmuv3_spec::regs;
use sva_smmuv3_spec::ste::{S1Dss, S1Fmt};
use sva_vmsa::{Granule, Pa, PageTable, TableConfig};

fn pa_of(out: TranslateOutcome) -> u64 {
    match out {
        TranslateOutcome::Translated { pa, .. } => pa.raw(),
        other => panic!("not translated: {other:?}"),
    }
}

fn aborted(id: EventId) -> TranslateOutcome {
    TranslateOutcome::Aborted { event: Some(id) }
}

#[test]
fn granules_16k_and_64k_with_two_level_64k_cd_table() {
    let r = rig();
    for (granule, tg0, page) in [
        (Granule::Size16K, Tg0::Size16K, 0x4000u64),
        (Granule::Size64K, Tg0::Size64K, 0x1_0000),
    ] {
        let pt = PageTable::new(&r.ram, TableConfig::new(granule, 48, 48).unwrap()).unwrap();
        let f = r.alloc(page);
        r.map(&pt, 0x100_0000, f, page, rw());
        // 2-level CD table with 64K leaves: SSID 2000 is L1 index 1, L2 index 976.
        let l1 = r.alloc(0x1000);
        let l2 = r.alloc(0x1_0000);
        write_words(
            r.mem(),
            l1 + 8,
            &[L1Cd::new().with_v(true).with_l2ptr_pa(Pa(l2)).into_bits()],
        );
        let c = cd(pt.root().raw(), 5);
        r.write_cd(l2 + 976 * 64, &c.with_word0(c.word0().with_tg0(tg0)));
        let sid = if granule == Granule::Size16K { 1 } else { 2 };
        r.write_ste(sid, &s1_ste(l1, 12, S1Fmt::TwoLevel64K, S1Dss::Terminate));
        let out = r.smmu.translate(&txn(
            sid,
            Some(2000),
            0x100_0000 + page - 8,
            AccessKind::Read,
        ));
        assert_eq!(pa_of(out), f + page - 8);
    }
    // 16K granule not advertised: the CD is ILLEGAL.
    let r = rig_with(SmmuConfig {
        granules: sva_smmuv3::Granules {
            g4k: true,
            g16k: false,
            g64k: true,
        },
        ..SmmuConfig::default()
    });
    let pt = r.table();
    let cd_at = r.alloc(0x1000);
    let c = cd(pt.root().raw(), 1);
    r.write_cd(cd_at, &c.with_word0(c.word0().with_tg0(Tg0::Size16K)));
    r.write_ste(1, &s1_ste(cd_at, 0, S1Fmt::Linear, S1Dss::Terminate));
    assert_eq!(r.smmu.translate(&read(1, 0)), aborted(EventId::CBadCd));
}

#[test]
fn substream_corner_cases() {
    let r = rig();
    let pt = r.table();
    let f = r.alloc(0x1000);
    r.map(&pt, 0x1000, f, 0x1000, rw());
    let cds = r.alloc(0x1000);
    r.write_cd(cds, &cd(pt.root().raw(), 1));
    r.write_cd(cds + 64, &cd(pt.root().raw(), 2));
    r.write_ste(1, &s1_ste(cds, 2, S1Fmt::Linear, S1Dss::Ssid0));
    // No SSID: CD 0. SSID 0: F_STREAM_DISABLED. SSID 1: CD 1.
    assert_eq!(pa_of(r.smmu.translate(&read(1, 0x1000))), f);
    assert_eq!(
        r.smmu.translate(&txn(1, Some(0), 0x1000, AccessKind::Read)),
        aborted(EventId::FStreamDisabled)
    );
    assert_eq!(
        pa_of(r.smmu.translate(&txn(1, Some(1), 0x1000, AccessKind::Read))),
        f
    );
    // A SubstreamID on a bypass stream.
    r.write_ste(2, &bypass_ste());
    assert_eq!(
        r.smmu.translate(&txn(2, Some(1), 0x1000, AccessKind::Read)),
        aborted(EventId::CBadSubstreamid)
    );
    // ATS on a bypass stream behaves as EATS = 0.
    let req = ats_req(2, 0x1000);
    assert_eq!(
        r.smmu.ats_translate(&req),
        AtsCompletion::UnsupportedRequest
    );
    // TTB0 outside the IPS range: C_BAD_CD.
    let cd_at = r.alloc(0x1000);
    let c = cd(1 << 40, 3);
    r.write_cd(
        cd_at,
        &c.with_word0(
            c.word0()
                .with_ips(sva_smmuv3_spec::encoding::AddressSize::Bits36),
        ),
    );
    r.write_ste(3, &s1_ste(cd_at, 0, S1Fmt::Linear, S1Dss::Terminate));
    assert_eq!(r.smmu.translate(&read(3, 0)), aborted(EventId::CBadCd));
    let ids: Vec<EventId> = r.events().iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        [
            EventId::FStreamDisabled,
            EventId::CBadSubstreamid,
            EventId::FBadAtsTreq,
            EventId::CBadCd
        ]
    );
}

#[test]
fn cfgi_ste_range_and_all() {
    let mut r = rig();
    for sid in 0..8 {
        r.write_ste(sid, &bypass_ste());
        r.smmu.translate(&read(sid, 0));
    }
    for sid in 0..8 {
        r.write_ste(sid, &sva_smmuv3_spec::ste::Ste::new());
    }
    // Range 1: StreamIDs 4..=7.
    r.cmd(Command::CfgiSteRange {
        sid: StreamId(5),
        range: 1,
    });
    r.sync();
    assert!(matches!(
        r.smmu.translate(&read(3, 0)),
        TranslateOutcome::Bypassed { .. }
    ));
    assert_eq!(r.smmu.translate(&read(4, 0)), aborted(EventId::CBadSte));
    assert_eq!(r.smmu.translate(&read(7, 0)), aborted(EventId::CBadSte));
    r.cmd(Command::CfgiAll);
    r.sync();
    assert_eq!(r.smmu.translate(&read(0, 0)), aborted(EventId::CBadSte));
}

#[test]
fn gerror_interrupt_and_msi() {
    let mut r = rig();
    let msi = r.alloc(0x1000);
    r.smmu.write64(
        u64::from(regs::GERROR_IRQ_CFG0),
        IrqCfg0::new().with_addr_pa(Pa(msi)).into_bits(),
    );
    r.smmu.write32(u64::from(regs::GERROR_IRQ_CFG1), 0xABCD);
    let n = Arc::new(AtomicU32::new(0));
    let n2 = n.clone();
    r.smmu.set_irq_handler(
        IrqLine::GlobalError,
        Arc::new(move |_| {
            n2.fetch_add(1, Ordering::Relaxed);
        }),
    );
    r.cmd(Command::TlbiS12Vmall {
        vmid: sva_addr::Vmid(1),
    });
    assert_eq!(n.load(Ordering::Relaxed), 1);
    let mut w = [0u8; 4];
    sva_physmem::PhysMemory::read(&*r.ram, Pa(msi), &mut w).unwrap();
    assert_eq!(u32::from_le_bytes(w), 0xABCD);
    let g = Gerror::from_bits(r.smmu.read32(u64::from(regs::GERROR)));
    assert!(g.cmdq_err());
}

#[test]
fn ptm_opts_out_of_broadcast_invalidation() {
    let r = rig_disabled(SmmuConfig::default());
    r.smmu.write64(u64::from(regs::STRTAB_BASE), r.strtab);
    r.smmu
        .write32(u64::from(regs::STRTAB_BASE_CFG), u32::from(STE_LOG2));
    r.smmu.write32(u64::from(regs::CR2), (1 << 1) | (1 << 2));
    let r = r.enable();
    let pt = r.simple_stream(1, 4);
    let f = r.alloc(0x1000);
    r.map(&pt, 0x1000, f, 0x1000, rw());
    r.smmu.translate(&read(1, 0x1000));
    r.smmu.broadcast_tlbi(BroadcastTlbi::Asid(Asid(4)));
    assert_eq!(r.smmu.stats().iotlb_entries, 1);
}

#[test]
fn atc_inv_without_ats_is_illegal() {
    let mut r = rig_with(SmmuConfig {
        ats: false,
        ..SmmuConfig::default()
    });
    r.cmd(Command::AtcInv {
        sid: StreamId(1),
        ssid: Some(Pasid(1)),
        global: false,
        addr: sva_vmsa::Va(0),
        size: 0,
    });
    let cons = sva_smmuv3_spec::queue::CmdqCons::from_bits(r.cons());
    assert_eq!(cons.err(), sva_smmuv3_spec::queue::Cerror::Ill);
}

#[test]
fn concurrent_translations_and_invalidations() {
    let r = rig();
    let pt = r.simple_stream(1, 1);
    let f = r.alloc(64 * 0x1000);
    r.map(&pt, 0x10_0000, f, 64 * 0x1000, rw());
    let smmu = r.smmu.clone();
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let smmu = smmu.clone();
            std::thread::spawn(move || {
                for i in 0..2000u64 {
                    let page = (i * 7 + t) % 64;
                    let out = smmu.translate(&read(1, 0x10_0000 + page * 0x1000 + 4));
                    assert_eq!(pa_of(out), f + page * 0x1000 + 4);
                }
            })
        })
        .collect();
    let mut r = r;
    for i in 0..300u64 {
        r.cmd(Command::TlbiNhAsid {
            vmid: sva_addr::Vmid(0),
            asid: Asid(1),
        });
        if i % 10 == 0 {
            r.cmd(Command::CfgiAll);
        }
        r.sync();
    }
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(r.cons() & 0xFFFFF, r.prod);
}

struct PanickyEp;

impl sva_smmuv3::Endpoint for PanickyEp {
    fn atc_invalidate(&self, _: Option<Pasid>, _: u64, _: u64) {
        panic!("endpoint bug");
    }
    fn pri_response(&self, _: Option<Pasid>, _: u16, _: sva_smmuv3::PriResponse) {}
    fn stall_resolved(&self, _: u16, _: bool) {}
}

#[test]
fn a_panicking_endpoint_does_not_wedge_the_queue() {
    let mut r = rig();
    let ep = Arc::new(PanickyEp);
    r.smmu.attach_endpoint(StreamId(1), &ep);
    let inv = Command::AtcInv {
        sid: StreamId(1),
        ssid: None,
        global: false,
        addr: sva_vmsa::Va(0),
        size: 0,
    };
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.cmd(inv)));
    assert!(res.is_err());
    r.smmu.detach_endpoint(StreamId(1));
    r.sync();
    assert_eq!(r.cons() & 0xFFFFF, r.prod);
}

#[test]
fn clearing_smmuen_terminates_stalls() {
    let r = rig();
    let ep = r.mock_endpoint(1);
    let _pt = r.stalling_stream(1);
    let TranslateOutcome::Stalled { stag } = r.smmu.translate(&read(1, 0x1000)) else {
        panic!("expected a stall");
    };
    r.smmu.write32(u64::from(regs::CR0), CR0_QUEUES);
    assert_eq!(ep.take(), [EpMsg::Stall(stag, false)]);
    assert_eq!(r.smmu.stats().stalled_now, 0);
}

#[test]
fn stall_records_wait_for_room_and_never_overflow() {
    let r = rig();
    let _pt = r.stalling_stream(1);
    // Fill the Event queue without consuming it.
    let cap = 1u64 << EVTQ_LOG2;
    for i in 0..cap {
        assert!(matches!(
            r.smmu.translate(&read(1, 0x10_0000 + i * 0x1000)),
            TranslateOutcome::Stalled { .. }
        ));
    }
    let TranslateOutcome::Stalled { stag } = r.smmu.translate(&read(1, 0x1000)) else {
        panic!("a stall is not discarded for lack of room");
    };
    let s = r.smmu.stats();
    assert_eq!(s.stalled_now as u64, cap + 1);
    assert_eq!(s.events_lost, 0);
    let prod = r.smmu.read32(u64::from(regs::EVENTQ_PROD));
    assert_eq!(prod & (1 << 31), 0, "no overflow");
    // A terminated transaction's record is discarded meanwhile (and overflows).
    let _pt2 = r.simple_stream(2, 9);
    r.smmu.translate(&read(2, 0x1000));
    assert_eq!(r.smmu.stats().events_lost, 1);
    // Consuming makes room: the waiting stall record is written.
    assert_eq!(r.events().len() as u64, cap);
    let ev = r.events();
    assert_eq!(ev.len(), 1);
    assert!(ev[0].stall);
    assert_eq!(ev[0].stag, stag);
    assert_eq!(ev[0].input_addr, sva_vmsa::Va(0x1000));
}

#[test]
fn smmu_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<sva_smmuv3::Smmu>();
    check::<Arc<sva_smmuv3::Smmu>>();
}

#[test]
fn a_handler_that_keeps_acknowledging_does_not_overflow_the_stack() {
    let mut r = rig();
    let n = Arc::new(AtomicU32::new(0));
    let n2 = n.clone();
    let weak = Arc::downgrade(&r.smmu);
    r.smmu.set_irq_handler(
        IrqLine::GlobalError,
        Arc::new(move |_| {
            // Acknowledges without fixing the command: the SMMU stops on it again.
            if n2.fetch_add(1, Ordering::Relaxed) < 1000 {
                let s = weak.upgrade().unwrap();
                let g = s.read32(u64::from(regs::GERROR));
                s.write32(u64::from(regs::GERRORN), g);
            }
        }),
    );
    r.raw_cmd([0xEE, 0]);
    assert_eq!(n.load(Ordering::Relaxed), 1001);
}

#[test]
fn event_queue_msi() {
    let r = rig();
    let msi = r.alloc(0x1000);
    r.smmu.write64(
        u64::from(regs::EVENTQ_IRQ_CFG0),
        IrqCfg0::new().with_addr_pa(Pa(msi + 4)).into_bits(),
    );
    r.smmu.write32(u64::from(regs::EVENTQ_IRQ_CFG1), 0x5151);
    r.write_ste(1, &sva_smmuv3_spec::ste::Ste::new());
    r.smmu.translate(&read(1, 0));
    let mut w = [0u8; 4];
    sva_physmem::PhysMemory::read(&*r.ram, Pa(msi + 4), &mut w).unwrap();
    assert_eq!(u32::from_le_bytes(w), 0x5151);
    assert_eq!(r.smmu.stats().msi_writes, 1);
}
