//! The model driven by hand through MMIO and in-memory tables.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::*;
use sva_physmem::PhysMemory;
use sva_smmuv3::{
    AccessKind, Asid, AtsCompletion, AtsRequest, BroadcastTlbi, EventId, HttuLevel, IrqLine, Mmio,
    Pasid, PriResponse, SmmuConfig, StreamId, TranslateOutcome,
};
use sva_smmuv3_spec::cd::{Cd, CdWord0, L1Cd};
use sva_smmuv3_spec::command::{Command, ResumeAction, SyncCs, TlbiGranule, TlbiRange};
use sva_smmuv3_spec::control::Gerror;
use sva_smmuv3_spec::encoding::AddressSize;
use sva_smmuv3_spec::idr::{Httu, Idr0, Idr1, Idr3, Idr5, StLevel, StallModel};
use sva_smmuv3_spec::pri::PageRequest;
use sva_smmuv3_spec::queue::{Cerror, CmdqCons};
use sva_smmuv3_spec::regs;
use sva_smmuv3_spec::ste::{
    Eats, L1Std, S1Dss, S1Fmt, Ste, SteWord0, SteWord1, StrtabBaseCfg, StrtabFmt,
};
use sva_vmsa::{Attributes, Pa, Va};

fn r32(r: &Rig, off: u32) -> u32 {
    r.smmu.read32(u64::from(off))
}

fn w32(r: &Rig, off: u32, v: u32) {
    r.smmu.write32(u64::from(off), v);
}

fn pa_of(out: TranslateOutcome) -> u64 {
    match out {
        TranslateOutcome::Translated { pa, .. } => pa.raw(),
        other => panic!("not translated: {other:?}"),
    }
}

fn ids(events: &[sva_smmuv3_spec::event::Event]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

// ---------------------------------------------------------------------------------------
// Registers

#[test]
fn reset_values_and_idr_with_everything_on() {
    let r = rig_disabled(SmmuConfig::default());
    let idr0 = Idr0::from_bits(r32(&r, regs::IDR0));
    assert!(idr0.s1p() && !idr0.s2p());
    assert!(idr0.ats() && idr0.pri() && idr0.btm() && idr0.asid16() && idr0.cd2l());
    assert!(!idr0.hyp() && idr0.msi());
    assert_eq!(idr0.httu(), Httu::AccessDirty);
    assert_eq!(idr0.st_level(), StLevel::TwoLevel);
    assert_eq!(idr0.stall_model(), StallModel::StallAndTerminate);
    let idr1 = Idr1::from_bits(r32(&r, regs::IDR1));
    assert_eq!((idr1.sidsize(), idr1.ssidsize()), (16, 20));
    assert_eq!((idr1.cmdqs(), idr1.eventqs(), idr1.priqs()), (12, 12, 12));
    assert!(Idr3::from_bits(r32(&r, regs::IDR3)).ril());
    let idr5 = Idr5::from_bits(r32(&r, regs::IDR5));
    assert!(idr5.gran4k() && idr5.gran16k() && idr5.gran64k());
    assert_eq!(idr5.oas(), AddressSize::Bits48);
    assert!(idr5.stall_max() > 0);

    let fresh = sva_smmuv3::Smmu::new(r.ram.clone(), SmmuConfig::default());
    assert_eq!(fresh.read32(u64::from(regs::CR0)), 0);
    assert_eq!(fresh.read32(u64::from(regs::CR0ACK)), 0);
    assert_eq!(fresh.read32(u64::from(regs::GBPA)), 0x1000);
    assert_eq!(fresh.read32(u64::from(regs::GERROR)), 0);
    assert_eq!(fresh.read64(u64::from(regs::STRTAB_BASE)), 0);
    // Reserved offsets: RAZ/WI.
    for off in [
        0x30u64,
        0x3C,
        0x1000,
        0xA8,
        0x1_0000,
        0x2_0000,
        0xFFFF_FFFF_0000,
        0x21,
    ] {
        fresh.write32(off, 0xFFFF_FFFF);
        assert_eq!(fresh.read32(off), 0, "offset {off:#x}");
    }
}

#[test]
fn idr_with_features_off() {
    let config = SmmuConfig {
        ssidsize: 0,
        st_2level: false,
        granules: sva_smmuv3::Granules {
            g4k: true,
            g16k: false,
            g64k: false,
        },
        ats: false,
        pri: true, // needs ATS: not advertised
        stall: false,
        httu: HttuLevel::None,
        btm: false,
        range_inv: false,
        asid16: false,
        ..SmmuConfig::default()
    };
    let r = rig_disabled(config);
    let idr0 = Idr0::from_bits(r32(&r, regs::IDR0));
    assert!(!idr0.ats() && !idr0.pri() && !idr0.btm() && !idr0.asid16() && !idr0.cd2l());
    assert_eq!(idr0.httu(), Httu::None);
    assert_eq!(idr0.st_level(), StLevel::Linear);
    assert_eq!(idr0.stall_model(), StallModel::TerminateOnly);
    assert_eq!(Idr1::from_bits(r32(&r, regs::IDR1)).ssidsize(), 0);
    assert_eq!(Idr1::from_bits(r32(&r, regs::IDR1)).priqs(), 0);
    assert!(!Idr3::from_bits(r32(&r, regs::IDR3)).ril());
    let idr5 = Idr5::from_bits(r32(&r, regs::IDR5));
    assert!(idr5.gran4k() && !idr5.gran16k() && !idr5.gran64k());
    assert_eq!(idr5.stall_max(), 0);
    // PRI registers are absent: RAZ/WI. PRIQEN and ATSCHK cannot be set.
    assert_eq!(r.smmu.read64(u64::from(regs::PRIQ_BASE)), 0);
    w32(&r, regs::CR0, 0x1F);
    assert_eq!(r32(&r, regs::CR0ACK), 0b1101);
}

#[test]
fn cr0_handshake_and_guards() {
    let r = rig_disabled(SmmuConfig::default());
    assert_eq!(r32(&r, regs::CR0ACK), CR0_QUEUES);
    // Reserved bits are not stored; the ack follows.
    w32(&r, regs::CR0, 0xFFFF_FFE0 | CR0_QUEUES | (1 << 4));
    assert_eq!(r32(&r, regs::CR0), CR0_QUEUES | (1 << 4));
    assert_eq!(r32(&r, regs::CR0ACK), r32(&r, regs::CR0));
    // IRQ_CTRL / IRQ_CTRLACK.
    w32(&r, regs::IRQ_CTRL, 0xFF);
    assert_eq!(r32(&r, regs::IRQ_CTRLACK), 0b111);
    // 64-bit register as two halves.
    w32(&r, regs::STRTAB_BASE, 0x1234_5640);
    w32(&r, regs::STRTAB_BASE + 4, 0x0000_0001);
    assert_eq!(r.smmu.read64(u64::from(regs::STRTAB_BASE)), 0x1_1234_5640);
    assert_eq!(r32(&r, regs::STRTAB_BASE + 4), 1);
    // Queue base ignored while the queue is enabled.
    let before = r.smmu.read64(u64::from(regs::CMDQ_BASE));
    r.smmu.write64(u64::from(regs::CMDQ_BASE), 0x8000);
    assert_eq!(r.smmu.read64(u64::from(regs::CMDQ_BASE)), before);
    // STRTAB_BASE ignored while SMMUEN.
    w32(&r, regs::CR0, CR0_ALL);
    r.smmu.write64(u64::from(regs::STRTAB_BASE), 0x4000);
    assert_eq!(r.smmu.read64(u64::from(regs::STRTAB_BASE)), 0x1_1234_5640);
    // GERROR is read-only.
    w32(&r, regs::GERROR, 0xFFFF);
    assert_eq!(r32(&r, regs::GERROR), 0);
}

#[test]
fn queue_with_bad_base_is_acked_and_aborts() {
    let r = rig_disabled(SmmuConfig::default());
    w32(&r, regs::CR0, 0);
    r.smmu.write64(
        u64::from(regs::CMDQ_BASE),
        (RAM_SIZE * 4) | u64::from(CMDQ_LOG2),
    );
    w32(&r, regs::CR0, CR0_QUEUES);
    assert_eq!(r32(&r, regs::CR0ACK), CR0_QUEUES);
    w32(&r, regs::CMDQ_PROD, 1);
    let cons = CmdqCons::from_bits(r32(&r, regs::CMDQ_CONS));
    assert_eq!(cons.err(), Cerror::Abt);
    assert!(Gerror::from_bits(r32(&r, regs::GERROR)).cmdq_err());
}

#[test]
fn gbpa_bypass_and_abort_when_disabled() {
    let r = rig_disabled(SmmuConfig::default());
    assert_eq!(
        r.smmu.translate(&read(1, 0x1234)),
        TranslateOutcome::Bypassed { pa: Pa(0x1234) }
    );
    // Without UPDATE the write is ignored.
    w32(&r, regs::GBPA, 1 << 20);
    assert_eq!(r32(&r, regs::GBPA), 0x1000);
    w32(&r, regs::GBPA, (1 << 31) | (1 << 20));
    assert_eq!(r32(&r, regs::GBPA), 1 << 20, "UPDATE self-clears");
    assert_eq!(
        r.smmu.translate(&read(1, 0x1234)),
        TranslateOutcome::Aborted { event: None }
    );
}

// ---------------------------------------------------------------------------------------
// Translation

#[test]
fn stage1_translation_and_iotlb_hit() {
    let r = rig();
    let pt = r.simple_stream(3, 7);
    let frame = r.alloc(0x1000);
    r.map(&pt, 0x40_0000, frame, 0x1000, rw());
    let out = r.smmu.translate(&read(3, 0x40_0123));
    assert_eq!(pa_of(out), frame + 0x123);
    let out = r
        .smmu
        .translate(&txn(3, None, 0x40_0456, AccessKind::Write));
    assert_eq!(pa_of(out), frame + 0x456);
    let s = r.smmu.stats();
    assert_eq!(s.walks, 1);
    assert_eq!(s.iotlb_hits, 1);
    assert!(r.events().is_empty());
}

#[test]
fn block_mappings_hit_one_entry() {
    let r = rig();
    let pt = r.simple_stream(3, 7);
    let block = r.alloc(2 << 20);
    r.map(&pt, 0x20_0000, block, 2 << 20, rw());
    for off in [0u64, 0x1000, 0x10_0000, 0x1F_F000] {
        let out = r.smmu.translate(&read(3, 0x20_0000 + off));
        assert!(
            matches!(out, TranslateOutcome::Translated { pa, size: 0x20_0000, .. } if pa.raw() == block + off)
        );
    }
    let s = r.smmu.stats();
    assert_eq!((s.walks, s.iotlb_hits, s.iotlb_entries), (1, 3, 1));
}

#[test]
fn substreams_linear_and_two_level_cd_tables() {
    let r = rig();
    // Linear CD table, S1CDMax = 4.
    let pt = r.table();
    let frame = r.alloc(0x1000);
    r.map(&pt, 0x1000, frame, 0x1000, rw());
    let cds = r.alloc(16 * 64);
    r.write_cd(cds + 3 * 64, &cd(pt.root().raw(), 3));
    r.write_ste(1, &s1_ste(cds, 4, S1Fmt::Linear, S1Dss::Terminate));
    assert_eq!(
        pa_of(r.smmu.translate(&txn(1, Some(3), 0x1010, AccessKind::Read))),
        frame + 0x10
    );

    // 2-level 4K CD table, S1CDMax = 20: SSID 100 is L1 index 1, L2 index 36.
    let l1 = r.alloc(0x1000 * 128);
    let l2 = r.alloc(0x1000);
    write_words(
        r.mem(),
        l1 + 8,
        &[L1Cd::new().with_v(true).with_l2ptr_pa(Pa(l2)).into_bits()],
    );
    r.write_cd(l2 + 36 * 64, &cd(pt.root().raw(), 9));
    r.write_ste(2, &s1_ste(l1, 20, S1Fmt::TwoLevel4K, S1Dss::Bypass));
    assert_eq!(
        pa_of(
            r.smmu
                .translate(&txn(2, Some(100), 0x1020, AccessKind::Read))
        ),
        frame + 0x20
    );
    // No SSID with S1DSS = bypass.
    assert_eq!(
        r.smmu.translate(&read(2, 0x5000)),
        TranslateOutcome::Bypassed { pa: Pa(0x5000) }
    );
    // An invalid L1CD: C_BAD_SUBSTREAMID.
    assert_eq!(
        r.smmu
            .translate(&txn(2, Some(5000), 0x1000, AccessKind::Read)),
        TranslateOutcome::Aborted {
            event: Some(EventId::CBadSubstreamid)
        }
    );
    let ev = r.events();
    assert_eq!(ids(&ev), [EventId::CBadSubstreamid]);
    assert_eq!(ev[0].substream_id, Some(Pasid(5000)));
}

#[test]
fn two_level_stream_table() {
    let r = rig_disabled(SmmuConfig::default());
    // SIDSIZE 16, SPLIT 8: L1 has 256 descriptors.
    let l1 = r.alloc(256 * 8);
    let l2 = r.alloc(256 * 64);
    r.smmu.write64(u64::from(regs::STRTAB_BASE), l1);
    w32(
        &r,
        regs::STRTAB_BASE_CFG,
        StrtabBaseCfg::new()
            .with_log2size(16)
            .with_split(8)
            .with_fmt(StrtabFmt::TwoLevel)
            .into_bits(),
    );
    let r = r.enable();
    // StreamID 0x305: L1 index 3, L2 index 5.
    write_words(
        r.mem(),
        l1 + 3 * 8,
        &[L1Std::new().with_span(9).with_l2ptr_pa(Pa(l2)).into_bits()],
    );
    write_words(r.mem(), l2 + 5 * 64, &bypass_ste().words());
    assert_eq!(
        r.smmu.translate(&read(0x305, 0x9000)),
        TranslateOutcome::Bypassed { pa: Pa(0x9000) }
    );
    // Span 0: C_BAD_STREAMID.
    assert_eq!(
        r.smmu.translate(&read(0x405, 0)),
        TranslateOutcome::Aborted {
            event: Some(EventId::CBadStreamid)
        }
    );
    // L2 table outside RAM: F_STE_FETCH with the address.
    write_words(
        r.mem(),
        l1 + 6 * 8,
        &[L1Std::new()
            .with_span(9)
            .with_l2ptr_pa(Pa(RAM_SIZE * 2))
            .into_bits()],
    );
    assert_eq!(
        r.smmu.translate(&read(0x601, 0)),
        TranslateOutcome::Aborted {
            event: Some(EventId::FSteFetch)
        }
    );
    let ev = r.events();
    assert_eq!(ids(&ev), [EventId::CBadStreamid, EventId::FSteFetch]);
    assert_eq!(ev[1].fetch_addr, Pa(RAM_SIZE * 2 + 64));
}

#[test]
fn every_configuration_and_translation_event() {
    let r = rig();
    let pt = r.table();
    let root = pt.root().raw();
    let frame = r.alloc(0x1000);
    let ro = Attributes::AF | Attributes::AP_EL0 | Attributes::AP_RO | Attributes::NG;
    r.map(&pt, 0x1000, frame, 0x1000, rw());
    r.map(&pt, 0x2000, frame, 0x1000, ro);
    r.map(
        &pt,
        0x3000,
        frame,
        0x1000,
        Attributes::AP_EL0 | Attributes::NG,
    );
    r.map(&pt, 0x4000, 1 << 33, 0x1000, rw());
    let cd_at = r.alloc(0x1000);
    r.write_cd(cd_at, &cd(root, 1));
    let cd32 = r.alloc(0x1000);
    let narrow = cd(root, 2);
    let narrow = narrow.with_word0(narrow.word0().with_ips(AddressSize::Bits32));
    r.write_cd(cd32, &narrow);
    let cd_bad = r.alloc(0x1000);
    r.write_cd(cd_bad, &Cd::new());
    let cd_eabt = r.alloc(0x1000);
    r.write_cd(cd_eabt, &cd(RAM_SIZE * 2, 3));
    let cds = r.alloc(0x1000);
    r.write_cd(cds + 64, &cd(root, 4));

    r.write_ste(1, &s1_ste(cd_at, 0, S1Fmt::Linear, S1Dss::Terminate));
    r.write_ste(2, &Ste::new());
    let reserved = s1_ste(cd_at, 0, S1Fmt::Linear, S1Dss::Terminate);
    r.write_ste(
        3,
        &Ste::from_words({
            let mut w = reserved.words();
            w[0] |= 1 << 55;
            w
        }),
    );
    r.write_ste(4, &s1_ste(cds, 2, S1Fmt::Linear, S1Dss::Terminate));
    r.write_ste(5, &s1_ste(cd_bad, 0, S1Fmt::Linear, S1Dss::Terminate));
    r.write_ste(6, &s1_ste(cd32, 0, S1Fmt::Linear, S1Dss::Terminate));
    r.write_ste(7, &s1_ste(cd_eabt, 0, S1Fmt::Linear, S1Dss::Terminate));
    r.write_ste(8, &s1_ste(RAM_SIZE * 3, 0, S1Fmt::Linear, S1Dss::Terminate));
    // Stage 2 is not modelled: C_BAD_STE.
    let s2 = Ste::new().with_word0(
        SteWord0::new()
            .with_v(true)
            .with_config(sva_smmuv3_spec::ste::StreamConfig::S2Trans),
    );
    r.write_ste(9, &s2);
    let no_ats = s1_ste(cd_at, 0, S1Fmt::Linear, S1Dss::Terminate);
    r.write_ste(
        10,
        &no_ats.with_word1(SteWord1::new().with_eats(Eats::Abort)),
    );

    let cases: Vec<(sva_smmuv3::Transaction, EventId)> = vec![
        (read(1000, 0), EventId::CBadStreamid),
        (read(2, 0), EventId::CBadSte),
        (read(3, 0), EventId::CBadSte),
        (read(9, 0), EventId::CBadSte),
        (read(4, 0), EventId::FStreamDisabled),
        (
            txn(4, Some(4), 0, AccessKind::Read),
            EventId::CBadSubstreamid,
        ),
        (
            txn(1, Some(1), 0, AccessKind::Read),
            EventId::CBadSubstreamid,
        ),
        (read(5, 0), EventId::CBadCd),
        (read(8, 0), EventId::FCdFetch),
        (read(1, 0x9000), EventId::FTranslation),
        (read(6, 0x4000), EventId::FAddrSize),
        (read(1, 0x3000), EventId::FAccess),
        (
            txn(1, None, 0x2000, AccessKind::Write),
            EventId::FPermission,
        ),
        (read(7, 0x1000), EventId::FWalkEabt),
    ];
    for (t, id) in &cases {
        assert_eq!(
            r.smmu.translate(t),
            TranslateOutcome::Aborted { event: Some(*id) },
            "{t:?}"
        );
    }
    // ATS request on a stream without ATS; Translated traffic with ATSCHK.
    let req = ats_req(10, 0x1000);
    assert_eq!(
        r.smmu.ats_translate(&req),
        AtsCompletion::UnsupportedRequest
    );
    w32(&r, regs::CR0, CR0_ALL | (1 << 4));
    let mut t = read(10, 0x1000);
    t.translated = true;
    assert_eq!(
        r.smmu.translate(&t),
        TranslateOutcome::Aborted {
            event: Some(EventId::FTranslForbidden)
        }
    );
    t.sid = StreamId(1);
    assert_eq!(
        r.smmu.translate(&t),
        TranslateOutcome::Bypassed { pa: Pa(0x1000) }
    );

    let ev = r.events();
    let mut expected: Vec<EventId> = cases.iter().map(|c| c.1).collect();
    expected.push(EventId::FBadAtsTreq);
    expected.push(EventId::FTranslForbidden);
    assert_eq!(ids(&ev), expected);
    let fault = &ev[9];
    assert_eq!(fault.input_addr, Va(0x9000));
    assert!(fault.rnw && !fault.stall);
    assert_eq!(ev[12].id, EventId::FPermission);
    assert!(!ev[12].rnw);
    assert_eq!(ev[8].fetch_addr, Pa(RAM_SIZE * 3));
    assert_eq!(ev[13].id, EventId::FWalkEabt);
    assert_eq!(
        ev[13].fetch_addr,
        Pa(RAM_SIZE * 2),
        "level 0 descriptor of VA 0x1000"
    );
    assert_eq!(r.smmu.stats().events.get("F_TRANSLATION"), Some(&1));
}

#[test]
fn faults_are_not_recorded_without_cd_r() {
    let r = rig();
    let pt = r.table();
    let cd_at = r.alloc(0x1000);
    let c = cd(pt.root().raw(), 1);
    r.write_cd(cd_at, &c.with_word0(c.word0().with_r(false)));
    r.write_ste(1, &s1_ste(cd_at, 0, S1Fmt::Linear, S1Dss::Terminate));
    assert_eq!(
        r.smmu.translate(&read(1, 0x1000)),
        TranslateOutcome::Aborted {
            event: Some(EventId::FTranslation)
        }
    );
    assert!(r.events().is_empty());
}

#[test]
fn event_queue_overflow_sets_ovflg() {
    let r = rig();
    let _pt = r.simple_stream(1, 1);
    let irqs = Arc::new(AtomicU32::new(0));
    let i2 = irqs.clone();
    r.smmu.set_irq_handler(
        IrqLine::EventQueue,
        Arc::new(move |_| {
            i2.fetch_add(1, Ordering::Relaxed);
        }),
    );
    let cap = 1u64 << EVTQ_LOG2;
    for i in 0..cap + 5 {
        r.smmu.translate(&read(1, 0x10_0000 + i * 0x1000));
    }
    let prod = r32(&r, regs::EVENTQ_PROD);
    assert_ne!(prod & (1 << 31), 0, "OVFLG toggled");
    assert_eq!(r.smmu.stats().events_lost, 5);
    assert_eq!(irqs.load(Ordering::Relaxed), cap as u32);
    let ev = r.events();
    assert_eq!(ev.len() as u64, cap);
    assert_eq!(ev[0].input_addr, Va(0x10_0000));
    // Acknowledge the overflow; new records are written again.
    let cons = r32(&r, regs::EVENTQ_CONS);
    w32(&r, regs::EVENTQ_CONS, cons | (1 << 31));
    r.smmu.translate(&read(1, 0x5000));
    assert_eq!(r.events().len(), 1);
}

// ---------------------------------------------------------------------------------------
// Command queue

#[test]
fn garbage_command_stops_queue_until_acknowledged() {
    let mut r = rig();
    let bad_index = r.prod;
    r.raw_cmd([0xFF, 0]);
    r.sync();
    let cons = CmdqCons::from_bits(r.cons());
    assert_eq!(cons.err(), Cerror::Ill);
    assert_eq!(cons.rd(), bad_index, "CONS left on the bad command");
    let gerror = r32(&r, regs::GERROR);
    assert!(Gerror::from_bits(gerror).cmdq_err());
    // Nothing more is processed.
    r.sync();
    assert_eq!(CmdqCons::from_bits(r.cons()).rd(), bad_index);
    // Driver replaces the bad command by a CMD_SYNC and acknowledges.
    let at = r.cmdq + u64::from(bad_index) * 16;
    write_words(r.mem(), at, &sync_cmd(SyncCs::None, 0, 0).encode());
    w32(&r, regs::GERRORN, gerror);
    assert_eq!(r.cons() & 0xFFFFF, r.prod);
    assert_eq!(r.smmu.stats().command_errors, 1);
    assert_eq!(r.smmu.stats().commands.get("CMD_SYNC"), Some(&4));
}

#[test]
fn el2_and_stage2_commands_are_illegal() {
    let mut r = rig();
    r.cmd(Command::TlbiEl2All);
    assert_eq!(CmdqCons::from_bits(r.cons()).err(), Cerror::Ill);
}

#[test]
fn sync_with_msi_and_irq() {
    let mut r = rig();
    let msi = r.alloc(0x1000);
    let count = Arc::new(AtomicU32::new(0));
    let c2 = count.clone();
    let smmu = Arc::downgrade(&r.smmu);
    r.smmu.set_irq_handler(
        IrqLine::CmdSync,
        Arc::new(move |line| {
            assert_eq!(line, IrqLine::CmdSync);
            // The handler may access registers.
            let s = smmu.upgrade().unwrap();
            let _ = s.read32(u64::from(regs::CMDQ_CONS));
            c2.fetch_add(1, Ordering::Relaxed);
        }),
    );
    r.cmd(sync_cmd(SyncCs::Irq, 0xC0FF_EE11, msi + 8));
    let mut word = [0u8; 4];
    r.ram.read(Pa(msi + 8), &mut word).unwrap();
    assert_eq!(u32::from_le_bytes(word), 0xC0FF_EE11);
    assert_eq!(count.load(Ordering::Relaxed), 1);
    r.cmd(sync_cmd(SyncCs::Sev, 0, 0));
    assert_eq!(count.load(Ordering::Relaxed), 1);
    assert_eq!(r.cons() & 0xFFFFF, r.prod);
}

#[test]
fn stale_translation_until_tlbi() {
    let mut r = rig();
    let pt = r.simple_stream(1, 5);
    let frame = r.alloc(0x1000);
    r.map(&pt, 0x7000, frame, 0x1000, rw());
    assert_eq!(pa_of(r.smmu.translate(&read(1, 0x7000))), frame);
    pt.unmap(&r.ram, Va(0x7000), 0x1000, &sva_vmsa::NoTlb)
        .unwrap();
    // No invalidation: the IOTLB still has it, as on hardware.
    assert_eq!(pa_of(r.smmu.translate(&read(1, 0x7008))), frame + 8);
    r.cmd(Command::TlbiNhVa {
        vmid: sva_addr::Vmid(0),
        asid: Asid(5),
        addr: Va(0x7000),
        leaf: true,
        range: TlbiRange::NONE,
    });
    r.sync();
    assert_eq!(
        r.smmu.translate(&read(1, 0x7000)),
        TranslateOutcome::Aborted {
            event: Some(EventId::FTranslation)
        }
    );
}

#[test]
fn stale_ste_until_cfgi() {
    let mut r = rig();
    r.write_ste(4, &bypass_ste());
    assert!(matches!(
        r.smmu.translate(&read(4, 0)),
        TranslateOutcome::Bypassed { .. }
    ));
    r.write_ste(4, &Ste::new());
    assert!(matches!(
        r.smmu.translate(&read(4, 0)),
        TranslateOutcome::Bypassed { .. }
    ));
    r.cmd(Command::CfgiSte {
        sid: StreamId(4),
        leaf: true,
    });
    r.sync();
    assert_eq!(
        r.smmu.translate(&read(4, 0)),
        TranslateOutcome::Aborted {
            event: Some(EventId::CBadSte)
        }
    );
    // Stale CD too, until CFGI_CD.
    let pt = r.simple_stream(5, 1);
    let frame = r.alloc(0x1000);
    r.map(&pt, 0x1000, frame, 0x1000, rw());
    assert_eq!(pa_of(r.smmu.translate(&read(5, 0x1000))), frame);
    let ste = {
        let mut w = [0u64; 8];
        for (i, x) in w.iter_mut().enumerate() {
            *x = r
                .ram
                .load_u64(Pa(r.strtab + 5 * 64 + 8 * i as u64))
                .unwrap();
        }
        Ste::from_words(w)
    };
    let cd_at = ste.word0().s1_context_ptr_pa().raw();
    r.write_cd(cd_at, &Cd::new());
    r.cmd(Command::TlbiNsnhAll);
    r.sync();
    assert_eq!(pa_of(r.smmu.translate(&read(5, 0x1000))), frame);
    r.cmd(Command::CfgiCd {
        sid: StreamId(5),
        ssid: Pasid(0),
        leaf: true,
    });
    r.sync();
    assert_eq!(
        r.smmu.translate(&read(5, 0x1000)),
        TranslateOutcome::Aborted {
            event: Some(EventId::CBadCd)
        }
    );
}

#[test]
fn iotlb_is_bounded_and_still_correct() {
    let r = rig_with(SmmuConfig {
        iotlb_entries: 8,
        ..SmmuConfig::default()
    });
    let pt = r.simple_stream(1, 1);
    let frames = r.alloc(32 * 0x1000);
    r.map(&pt, 0x100_0000, frames, 32 * 0x1000, rw());
    for round in 0..3 {
        for i in 0..32u64 {
            let out = r.smmu.translate(&read(1, 0x100_0000 + i * 0x1000 + round));
            assert_eq!(pa_of(out), frames + i * 0x1000 + round);
        }
    }
    let s = r.smmu.stats();
    assert!(s.iotlb_entries <= 8);
    assert!(s.iotlb_evictions >= 96 - 8);
    assert_eq!(s.iotlb_inserts, s.walks);
}

#[test]
fn tlbi_by_asid_keeps_other_asids() {
    let mut r = rig();
    let pt1 = r.simple_stream(1, 1);
    let pt2 = r.simple_stream(2, 2);
    let f = r.alloc(0x4000);
    r.map(&pt1, 0x1000, f, 0x2000, rw());
    r.map(&pt2, 0x1000, f + 0x2000, 0x2000, rw());
    for sid in [1, 2] {
        r.smmu.translate(&read(sid, 0x1000));
        r.smmu.translate(&read(sid, 0x2000));
    }
    r.cmd(Command::TlbiNhAsid {
        vmid: sva_addr::Vmid(0),
        asid: Asid(1),
    });
    r.sync();
    let s = r.smmu.stats();
    assert_eq!(s.iotlb_invalidations, 2);
    assert_eq!(s.iotlb_entries, 2);
    r.smmu.translate(&read(2, 0x1000));
    r.smmu.translate(&read(2, 0x2000));
    assert_eq!(r.smmu.stats().walks, s.walks, "ASID 2 still cached");
    r.smmu.translate(&read(1, 0x1000));
    assert_eq!(r.smmu.stats().walks, s.walks + 1);
}

#[test]
fn range_invalidation() {
    let mut r = rig();
    let pt = r.simple_stream(1, 3);
    let f = r.alloc(16 * 0x1000);
    r.map(&pt, 0x10_0000, f, 16 * 0x1000, rw());
    for i in 0..16 {
        r.smmu.translate(&read(1, 0x10_0000 + i * 0x1000));
    }
    // 8 pages from page 4: NUM = 7, SCALE = 0.
    r.cmd(Command::TlbiNhVa {
        vmid: sva_addr::Vmid(0),
        asid: Asid(3),
        addr: Va(0x10_4000),
        leaf: true,
        range: TlbiRange {
            tg: TlbiGranule::Size4K,
            ttl: 3,
            num: 7,
            scale: 0,
        },
    });
    // VAA of one page in every ASID.
    r.cmd(Command::TlbiNhVaa {
        vmid: sva_addr::Vmid(0),
        addr: Va(0x10_0000),
        leaf: false,
        range: TlbiRange::NONE,
    });
    r.sync();
    let s = r.smmu.stats();
    assert_eq!(s.iotlb_invalidations, 9);
    assert_eq!(s.iotlb_entries, 7);
}

#[test]
fn broadcast_tlbi_with_and_without_btm() {
    for btm in [true, false] {
        let r = rig_with(SmmuConfig {
            btm,
            ..SmmuConfig::default()
        });
        let pt = r.simple_stream(1, 9);
        let f = r.alloc(0x4000);
        r.map(&pt, 0x1000, f, 0x4000, rw());
        for i in 0..4 {
            r.smmu.translate(&read(1, 0x1000 + i * 0x1000));
        }
        r.smmu.broadcast_tlbi(BroadcastTlbi::Va {
            asid: Asid(9),
            va: 0x1000,
            size: 0x1000,
            leaf_only: true,
        });
        r.smmu.broadcast_tlbi(BroadcastTlbi::Asid(Asid(8)));
        let expect = if btm { 3 } else { 4 };
        assert_eq!(r.smmu.stats().iotlb_entries, expect, "btm {btm}");
        r.smmu.broadcast_tlbi(BroadcastTlbi::All);
        let expect = if btm { 0 } else { 4 };
        assert_eq!(r.smmu.stats().iotlb_entries, expect, "btm {btm}");
    }
}

#[test]
fn httu_sets_access_flag_and_dirty_state() {
    let r = rig();
    let pt = r.table();
    let f = r.alloc(0x1000);
    // AF clear, writable-clean (DBM with AP[2] = 1).
    let attrs = Attributes::AP_EL0 | Attributes::AP_RO | Attributes::DBM | Attributes::NG;
    r.map(&pt, 0x1000, f, 0x1000, attrs);
    let cd_at = r.alloc(0x1000);
    let c = cd(pt.root().raw(), 1);
    r.write_cd(cd_at, &c.with_word0(c.word0().with_ha(true).with_hd(true)));
    r.write_ste(1, &s1_ste(cd_at, 0, S1Fmt::Linear, S1Dss::Terminate));
    assert_eq!(pa_of(r.smmu.translate(&read(1, 0x1000))), f);
    let leaf = pt.lookup(&*r.ram, Va(0x1000)).unwrap().unwrap();
    assert!(leaf.desc.attributes().contains(Attributes::AF));
    assert!(
        leaf.desc.attributes().contains(Attributes::AP_RO),
        "still clean"
    );
    assert_eq!(
        pa_of(r.smmu.translate(&txn(1, None, 0x1000, AccessKind::Write))),
        f
    );
    let leaf = pt.lookup(&*r.ram, Va(0x1000)).unwrap().unwrap();
    assert!(!leaf.desc.attributes().contains(Attributes::AP_RO), "dirty");
    // Without HA the same mapping faults with F_ACCESS.
    let pt2 = r.table();
    r.map(&pt2, 0x1000, f, 0x1000, attrs);
    let cd2 = r.alloc(0x1000);
    r.write_cd(cd2, &cd(pt2.root().raw(), 2));
    r.write_ste(2, &s1_ste(cd2, 0, S1Fmt::Linear, S1Dss::Terminate));
    assert_eq!(
        r.smmu.translate(&read(2, 0x1000)),
        TranslateOutcome::Aborted {
            event: Some(EventId::FAccess)
        }
    );
}

// ---------------------------------------------------------------------------------------
// Stall, PRI, ATS

#[test]
fn stall_then_resume_retry() {
    let mut r = rig();
    let ep = r.mock_endpoint(1);
    let pt = r.stalling_stream(1);
    let TranslateOutcome::Stalled { stag } =
        r.smmu.translate(&txn(1, None, 0x5000, AccessKind::Write))
    else {
        panic!("expected a stall");
    };
    let ev = r.events();
    assert_eq!(ids(&ev), [EventId::FTranslation]);
    assert!(ev[0].stall);
    assert_eq!(ev[0].stag, stag);
    assert_eq!(r.smmu.stats().stalled_now, 1);
    let f = r.alloc(0x1000);
    r.map(&pt, 0x5000, f, 0x1000, rw());
    r.cmd(Command::Resume {
        sid: StreamId(1),
        stag,
        action: ResumeAction::Retry,
    });
    r.sync();
    assert_eq!(ep.take(), [EpMsg::Stall(stag, true)]);
    assert_eq!(
        pa_of(r.smmu.translate(&txn(1, None, 0x5000, AccessKind::Write))),
        f
    );
    // A RESUME for an unknown STAG is ignored.
    r.cmd(Command::Resume {
        sid: StreamId(1),
        stag: 999,
        action: ResumeAction::Terminate { abort: true },
    });
    r.sync();
    assert!(ep.take().is_empty());
}

#[test]
fn stall_then_stall_term() {
    let mut r = rig();
    let ep = r.mock_endpoint(2);
    let _pt = r.stalling_stream(2);
    let a = r.smmu.translate(&read(2, 0x1000));
    let b = r.smmu.translate(&read(2, 0x2000));
    let (TranslateOutcome::Stalled { stag: sa }, TranslateOutcome::Stalled { stag: sb }) = (a, b)
    else {
        panic!("expected stalls");
    };
    r.cmd(Command::StallTerm { sid: StreamId(2) });
    r.sync();
    assert_eq!(
        ep.take(),
        [EpMsg::Stall(sa, false), EpMsg::Stall(sb, false)]
    );
    assert_eq!(r.smmu.stats().stalled_now, 0);
}

#[test]
fn s1stalld_makes_stalling_cd_illegal() {
    let r = rig();
    let pt = r.table();
    let cd_at = r.alloc(0x1000);
    let c = cd(pt.root().raw(), 4);
    r.write_cd(cd_at, &c.with_word0(c.word0().with_s(true)));
    let ste = s1_ste(cd_at, 0, S1Fmt::Linear, S1Dss::Terminate);
    r.write_ste(1, &ste.with_word1(ste.word1().with_s1stalld(true)));
    assert_eq!(
        r.smmu.translate(&read(1, 0x1000)),
        TranslateOutcome::Aborted {
            event: Some(EventId::CBadCd)
        }
    );
}

fn page_req(sid: u32, prg: u16, last: bool, addr: u64) -> PageRequest {
    PageRequest {
        stream_id: StreamId(sid),
        substream_id: Some(Pasid(7)),
        addr: Va(addr),
        prg_index: prg,
        last,
        read: true,
        write: true,
        exec: false,
        privileged: false,
    }
}

#[test]
fn pri_queue_entries_and_overflow() {
    let mut r = rig();
    let ep = r.mock_endpoint(3);
    let irqs = Arc::new(AtomicU32::new(0));
    let i2 = irqs.clone();
    r.smmu.set_irq_handler(
        IrqLine::PriQueue,
        Arc::new(move |_| {
            i2.fetch_add(1, Ordering::Relaxed);
        }),
    );
    let cap = 1u32 << PRIQ_LOG2;
    for i in 0..cap {
        r.smmu
            .page_request(&page_req(3, 1, i == cap - 1, 0x1000 * u64::from(i)));
    }
    assert_eq!(irqs.load(Ordering::Relaxed), cap);
    assert_eq!(r32(&r, regs::PRIQ_PROD), cap, "full, wrap bit set");
    let words = [0, 1].map(|i| r.ram.load_u64(Pa(r.priq + 16 + 8 * i)).unwrap());
    assert_eq!(
        PageRequest::decode(words).unwrap(),
        page_req(3, 1, false, 0x1000)
    );
    // Full: the next request overflows; its Last = 1 gets an automatic Success.
    r.smmu.page_request(&page_req(3, 2, true, 0x9000));
    assert_ne!(r32(&r, regs::PRIQ_PROD) & (1 << 31), 0);
    assert_eq!(
        ep.take(),
        [EpMsg::Pri(Some(Pasid(7)), 2, PriResponse::Success)]
    );
    // While the overflow is active, everything is discarded; Last = 0 silently.
    w32(&r, regs::PRIQ_CONS, cap); // consumed all, not yet acknowledged
    r.smmu.page_request(&page_req(3, 3, false, 0xA000));
    r.smmu.page_request(&page_req(3, 3, true, 0xB000));
    assert_eq!(
        ep.take(),
        [EpMsg::Pri(Some(Pasid(7)), 3, PriResponse::Success)]
    );
    // A Stop Marker gets no response.
    let mut stop = page_req(3, 0, true, 0);
    stop.read = false;
    stop.write = false;
    r.smmu.page_request(&stop);
    assert!(ep.take().is_empty());
    // Acknowledge: writes resume.
    w32(&r, regs::PRIQ_CONS, cap | (1 << 31));
    r.smmu.page_request(&page_req(3, 4, true, 0xC000));
    assert_eq!(r32(&r, regs::PRIQ_PROD) & 0xFFFFF, cap + 1);
    assert!(ep.take().is_empty());
    // PRI_RESP reaches the endpoint.
    r.cmd(Command::PriResp {
        sid: StreamId(3),
        ssid: Some(Pasid(7)),
        prg_index: 4,
        resp: PriResponse::Invalid,
    });
    r.sync();
    assert_eq!(
        ep.take(),
        [EpMsg::Pri(Some(Pasid(7)), 4, PriResponse::Invalid)]
    );
    let s = r.smmu.stats();
    assert_eq!(s.pri_auto_responses, 2);
    assert_eq!(s.page_requests, u64::from(cap) + 5);
}

#[test]
fn ats_translation_and_atc_invalidation() {
    let mut r = rig();
    let ep = r.mock_endpoint(1);
    let pt = r.simple_stream(1, 1);
    let block = r.alloc(2 << 20);
    r.map(&pt, 0x20_0000, block, 2 << 20, rw());
    let ro = Attributes::AF | Attributes::AP_EL0 | Attributes::AP_RO | Attributes::UXN;
    let f = r.alloc(0x1000);
    r.map(&pt, 0x1000, f, 0x1000, ro);
    let req = |addr, no_write| AtsRequest {
        sid: StreamId(1),
        ssid: None,
        addr,
        no_write,
        exec: true,
        privileged: false,
    };
    assert_eq!(
        r.smmu.ats_translate(&req(0x23_4567, false)),
        AtsCompletion::Success {
            pa: Pa(block),
            size: 2 << 20,
            read: true,
            write: true,
            exec: true, // UXN clear: unprivileged execute allowed
            privileged: false,
            global: false,
        }
    );
    assert_eq!(
        r.smmu.ats_translate(&req(0x1000, false)),
        AtsCompletion::Success {
            pa: Pa(f),
            size: 0x1000,
            read: true,
            write: false,
            exec: false,
            privileged: false,
            global: true,
        }
    );
    assert_eq!(
        r.smmu.ats_translate(&req(0x90_0000, true)),
        AtsCompletion::NoAccess
    );
    assert!(r.events().is_empty(), "ATS faults are not recorded");
    r.cmd(Command::AtcInv {
        sid: StreamId(1),
        ssid: Some(Pasid(3)),
        global: false,
        addr: Va(0x23_4000),
        size: 9,
    });
    r.sync();
    assert_eq!(
        ep.take(),
        [EpMsg::Atc(Some(Pasid(3)), 0x20_0000, 0x1000 << 9)]
    );
    assert_eq!(r.smmu.stats().ats_requests, 3);
}

#[test]
fn cd_word0_helpers_compile() {
    // Guard against the CD helper drifting from the layout crate.
    let w = CdWord0::new().with_v(true);
    assert!(Cd::new().with_word0(w).is_valid());
}
