//! The driver against the SMMUv3 hardware model: probe, streams, CDs, invalidation, events,
//! PRI, stall and command error recovery, through MMIO, memory and interrupts only.

use std::sync::{Arc, Mutex};

use sva_physmem::{PhysMemory, Ram};
use sva_smmuv3::{
    AccessKind, Endpoint, HttuLevel, Smmu, SmmuConfig, Transaction, TranslateOutcome,
};
use sva_smmuv3_driver::{
    Asid, CdConfig, CdTableConfig, Error, Pa, Pasid, PriResponse, ProbeOptions, S1dss, SmmuDriver,
    StreamConfig, StreamId, SyncMode, Va,
};
use sva_smmuv3_spec::event::EventId;
use sva_smmuv3_spec::mmio::{IrqLine, Mmio};
use sva_smmuv3_spec::pri::PageRequest;
use sva_vmsa::{Attributes, Granule, NoTlb, PageTable, TableConfig};

struct Rig {
    ram: Arc<Ram>,
    smmu: Arc<Smmu>,
    drv: Arc<SmmuDriver>,
}

fn rig(cfg: SmmuConfig, opts: ProbeOptions) -> Rig {
    let ram = Arc::new(Ram::new(512 << 20).unwrap());
    let smmu = Smmu::new(ram.clone() as Arc<dyn PhysMemory>, cfg);
    let drv = SmmuDriver::probe(smmu.clone() as Arc<dyn Mmio>, ram.clone(), opts).unwrap();
    for line in [
        IrqLine::EventQueue,
        IrqLine::PriQueue,
        IrqLine::GlobalError,
        IrqLine::CmdSync,
    ] {
        let weak = Arc::downgrade(&drv);
        smmu.set_irq_handler(
            line,
            Arc::new(move |l| {
                if let Some(d) = weak.upgrade() {
                    d.handle_irq(l);
                }
            }),
        );
    }
    Rig { ram, smmu, drv }
}

/// A rig on the default SMMU, probed with the default options.
fn default_rig() -> Rig {
    rig(SmmuConfig::default(), ProbeOptions::default())
}

fn page_table(ram: &Ram) -> PageTable {
    PageTable::new(ram, TableConfig::new(Granule::Size4K, 48, 48).unwrap()).unwrap()
}

fn user_attrs() -> Attributes {
    Attributes::AF | Attributes::SH_INNER | Attributes::AP_EL0 | Attributes::NG
}

/// Maps `len` bytes at `va` to `pa` in `pt` for user access.
fn map_user(ram: &Ram, pt: &PageTable, va: Va, pa: Pa, len: u64) {
    pt.map(ram, va, pa, len, user_attrs(), true, &NoTlb)
        .unwrap();
}

/// A 4 KiB-granule page table with `len` bytes at `va` mapped to `pa` for user access.
fn page_table_mapping(ram: &Ram, va: Va, pa: Pa, len: u64) -> PageTable {
    let pt = page_table(ram);
    map_user(ram, &pt, va, pa, len);
    pt
}

/// Attaches `sid` for stage 1 through `cd_table` and sets the CD at `pasid`: `pt` with
/// `asid`.
fn attach_s1_cd(
    r: &Rig,
    sid: StreamId,
    cd_table: CdTableConfig,
    pasid: u32,
    pt: &PageTable,
    asid: u16,
) {
    r.drv.attach(sid, StreamConfig::s1(cd_table)).unwrap();
    r.drv
        .set_cd(sid, Pasid(pasid), &CdConfig::new(pt.root(), Asid(asid)))
        .unwrap();
}

/// A recording endpoint attached to the SMMU at `sid`.
fn endpoint(r: &Rig, sid: StreamId) -> Arc<Ep> {
    let ep = Arc::new(Ep::default());
    r.smmu.attach_endpoint(sid, &ep);
    ep
}

/// Attaches `sid` for stage 1 with stalls allowed (linear CD table of 16, no ATS) and sets
/// a stalling CD at `pasid` with `asid` over an empty page table.
fn attach_stalling_cd(r: &Rig, sid: StreamId, pasid: u32, asid: u16) {
    let pt = page_table(&r.ram);
    r.drv
        .attach(
            sid,
            StreamConfig::S1 {
                cd_table: CdTableConfig::linear(4),
                s1dss: S1dss::Terminate,
                stall_disable: false,
                ats: false,
            },
        )
        .unwrap();
    let mut cfg = CdConfig::new(pt.root(), Asid(asid));
    cfg.stall = true;
    r.drv.set_cd(sid, Pasid(pasid), &cfg).unwrap();
}

/// A read-only page request that is the last of its group.
fn last_read_request(sid: StreamId, ssid: Option<Pasid>, addr: Va, prg_index: u16) -> PageRequest {
    PageRequest {
        stream_id: sid,
        substream_id: ssid,
        addr,
        prg_index,
        last: true,
        read: true,
        write: false,
        exec: false,
        privileged: false,
    }
}

fn read(sid: u32, ssid: Option<u32>, addr: u64) -> Transaction {
    Transaction {
        sid: StreamId(sid),
        ssid: ssid.map(Pasid),
        addr,
        access: AccessKind::Read,
        privileged: false,
        translated: false,
    }
}

fn translated_pa(out: TranslateOutcome) -> Option<Pa> {
    match out {
        TranslateOutcome::Translated { pa, .. } => Some(pa),
        _ => None,
    }
}

#[derive(Default)]
struct Ep {
    pri: Mutex<Vec<(Option<Pasid>, u16, PriResponse)>>,
    atc: Mutex<Vec<(Option<Pasid>, u64, u64)>>,
    stalls: Mutex<Vec<(u16, bool)>>,
}

impl Endpoint for Ep {
    fn atc_invalidate(&self, ssid: Option<Pasid>, addr: u64, size: u64) {
        self.atc.lock().unwrap().push((ssid, addr, size));
    }
    fn pri_response(&self, ssid: Option<Pasid>, prg_index: u16, response: PriResponse) {
        self.pri.lock().unwrap().push((ssid, prg_index, response));
    }
    fn stall_resolved(&self, stag: u16, retry: bool) {
        self.stalls.lock().unwrap().push((stag, retry));
    }
}

#[test]
fn probe_with_all_features() {
    let r = default_rig();
    let f = r.drv.features();
    assert!(f.ats && f.pri && f.stall && f.ha && f.hd && f.range_inv && f.btm);
    assert!(f.two_level_strtab && f.two_level_cd);
    assert_eq!(f.ssid_bits, 20);
    assert_eq!(f.sid_bits, 16);
    // StreamIDs of a level-2 table never allocated: invalid L1STD, C_BAD_STREAMID.
    let out = r.smmu.translate(&read(5, None, 0x1000));
    assert_eq!(
        out,
        TranslateOutcome::Aborted {
            event: Some(EventId::CBadStreamid)
        }
    );
    // Once a StreamID of its group is attached, the others abort silently.
    r.drv.attach(StreamId(6), StreamConfig::Bypass).unwrap();
    let out = r.smmu.translate(&read(5, None, 0x1000));
    assert_eq!(out, TranslateOutcome::Aborted { event: None });
    assert_eq!(
        r.smmu.translate(&read(6, None, 0x1000)),
        TranslateOutcome::Bypassed { pa: Pa(0x1000) }
    );
    let st = r.drv.stats();
    assert!(st.syncs >= 1);
}

#[test]
fn probe_with_features_off_and_translate() {
    let cfg = SmmuConfig {
        sidsize: 6,
        ssidsize: 8,
        st_2level: false,
        cd_2level: false,
        ats: false,
        pri: false,
        stall: false,
        httu: HttuLevel::None,
        btm: false,
        range_inv: false,
        asid16: false,
        cmdq_log2: 3,
        ..SmmuConfig::default()
    };
    let opts = ProbeOptions {
        sync: SyncMode::Msi,
        ..ProbeOptions::default()
    };
    let r = rig(cfg, opts);
    let f = r.drv.features().clone();
    assert!(!f.ats && !f.pri && !f.stall && !f.ha && !f.range_inv && !f.two_level_strtab);
    assert!(!f.two_level_cd);
    assert_eq!(
        (f.sid_bits, f.ssid_bits, f.asid_bits, f.cmdq_log2),
        (6, 8, 8, 3)
    );
    assert!(f.msi_sync);
    // Out of range StreamID and unavailable features are errors.
    assert!(matches!(
        r.drv.attach(StreamId(64), StreamConfig::Bypass),
        Err(Error::SidOutOfRange { .. })
    ));
    let ats = StreamConfig::S1 {
        cd_table: CdTableConfig::linear(8),
        s1dss: S1dss::Terminate,
        stall_disable: true,
        ats: true,
    };
    assert_eq!(
        r.drv.attach(StreamId(3), ats),
        Err(Error::FeatureUnavailable("ATS"))
    );

    // Bypass, then stage 1 through a linear CD table of 256 entries.
    r.drv.attach(StreamId(3), StreamConfig::Bypass).unwrap();
    assert_eq!(
        r.smmu.translate(&read(3, None, 0x1234)),
        TranslateOutcome::Bypassed { pa: Pa(0x1234) }
    );
    let pt = page_table_mapping(&r.ram, Va(0x40_0000), Pa(0x900_0000), 0x4000);
    r.drv
        .attach(StreamId(3), StreamConfig::s1(CdTableConfig::linear(8)))
        .unwrap();
    r.drv
        .set_cd(StreamId(3), Pasid(200), &CdConfig::new(pt.root(), Asid(9)))
        .unwrap();
    let out = r.smmu.translate(&read(3, Some(200), 0x40_1234));
    assert_eq!(translated_pa(out), Some(Pa(0x900_1234)));

    // Many per-page TLBIs through an 8-entry Command queue (wraps many times).
    r.drv
        .tlbi_va(Asid(9), Va(0x40_0000), 0x1000 * 100, true)
        .unwrap();
    let st = r.drv.stats();
    assert!(st.commands[&sva_smmuv3_spec::Opcode::TlbiNhVa] >= 100);
    // Above the threshold: by ASID.
    r.drv.tlbi_va(Asid(9), Va(0), 1 << 30, true).unwrap();
    assert!(r.drv.stats().commands[&sva_smmuv3_spec::Opcode::TlbiNhAsid] >= 1);
}

#[test]
fn unmap_then_tlbi_va_faults_and_event_is_delivered() {
    let r = default_rig();
    let pt = page_table_mapping(&r.ram, Va(0x7000_0000), Pa(0x1234_5000), 0x2000);
    let sid = StreamId(0x1234);
    attach_s1_cd(&r, sid, CdTableConfig::two_level(16), 42, &pt, 77);
    let t = read(sid.0, Some(42), 0x7000_0abc);
    assert_eq!(translated_pa(r.smmu.translate(&t)), Some(Pa(0x1234_5abc)));

    // Unmap behind the SMMU's back: the IOTLB still has the entry.
    pt.unmap(&r.ram, Va(0x7000_0000), 0x1000, &NoTlb).unwrap();
    assert_eq!(translated_pa(r.smmu.translate(&t)), Some(Pa(0x1234_5abc)));
    // The second page is untouched.
    let t2 = read(sid.0, Some(42), 0x7000_1000);
    assert_eq!(translated_pa(r.smmu.translate(&t2)), Some(Pa(0x1234_6000)));

    r.drv
        .tlbi_va(Asid(77), Va(0x7000_0000), 0x1000, true)
        .unwrap();
    assert_eq!(
        r.smmu.translate(&t),
        TranslateOutcome::Aborted {
            event: Some(EventId::FTranslation)
        }
    );
    assert_eq!(translated_pa(r.smmu.translate(&t2)), Some(Pa(0x1234_6000)));

    // The fault was recorded and delivered through the Event queue interrupt.
    let events = r.drv.drain_events();
    let ev = events
        .iter()
        .find(|e| e.id == EventId::FTranslation)
        .expect("F_TRANSLATION event");
    assert_eq!(ev.stream_id, sid);
    assert_eq!(ev.substream_id, Some(Pasid(42)));
    assert_eq!(ev.input_addr, Va(0x7000_0abc));
    assert!(r.drv.stats().events[&EventId::FTranslation] >= 1);

    // A sink receives later events.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    r.drv
        .set_event_sink(Arc::new(move |e| s2.lock().unwrap().push(e)));
    let _ = r.smmu.translate(&read(sid.0, Some(43), 0x1000)); // CD 43 not valid
    assert!(seen.lock().unwrap().iter().any(|e| e.id == EventId::CBadCd));
}

#[test]
fn illegal_command_is_recovered() {
    let r = default_rig();
    // Opcode 0xFF is not a command.
    let err = r.drv.submit_raw([0xFF, 0]).unwrap_err();
    assert_eq!(err, Error::IllegalCommand { words: [0xFF, 0] });
    // The queue keeps working.
    r.drv.tlbi_asid(Asid(3)).unwrap();
    r.drv.attach(StreamId(1), StreamConfig::Bypass).unwrap();
    assert_eq!(
        r.smmu.translate(&read(1, None, 0x5000)),
        TranslateOutcome::Bypassed { pa: Pa(0x5000) }
    );
    // A reserved bit set in an otherwise valid command.
    let err = r.drv.submit_raw([0x11 | (1 << 8), 0]).unwrap_err();
    assert!(matches!(err, Error::IllegalCommand { .. }));
    r.drv.sync().unwrap();
    let st = r.drv.stats();
    assert_eq!(st.cmdq_errors, 2);
}

#[test]
fn two_level_cd_table_with_2_20_ssids() {
    let r = default_rig();
    let pt = page_table_mapping(&r.ram, Va(0x1000_0000), Pa(0x2000_0000), 0x1000);
    let sid = StreamId(0xBEEF);
    r.drv
        .attach(
            sid,
            StreamConfig::S1 {
                cd_table: CdTableConfig::two_level(20),
                s1dss: S1dss::Ssid0,
                stall_disable: true,
                ats: true,
            },
        )
        .unwrap();
    for (ssid, asid) in [(1u32, 10u16), (0xF_FFFF, 11)] {
        r.drv
            .set_cd(sid, Pasid(ssid), &CdConfig::new(pt.root(), Asid(asid)))
            .unwrap();
    }
    for ssid in [1u32, 0xF_FFFF] {
        let out = r.smmu.translate(&read(sid.0, Some(ssid), 0x1000_0010));
        assert_eq!(translated_pa(out), Some(Pa(0x2000_0010)), "ssid {ssid:#x}");
    }
    // An SSID in a leaf never allocated: C_BAD_SUBSTREAMID (invalid L1CD).
    let out = r.smmu.translate(&read(sid.0, Some(0x8_0000), 0x1000_0010));
    assert!(matches!(out, TranslateOutcome::Aborted { event: Some(_) }));
    // Beyond the table: an error from the driver.
    assert!(matches!(
        r.drv
            .set_cd(sid, Pasid(1 << 20), &CdConfig::new(pt.root(), Asid(1))),
        Err(Error::SsidOutOfRange { .. })
    ));

    // Quieting a context never set is an error, and leaves the (unallocated) leaf usable.
    assert_eq!(
        r.drv.quiet_cd(sid, Pasid(0x4_0001)),
        Err(Error::NoContext {
            sid,
            ssid: Pasid(0x4_0001)
        })
    );
    r.drv
        .set_cd(sid, Pasid(0x4_0002), &CdConfig::new(pt.root(), Asid(12)))
        .unwrap();
    let out = r.smmu.translate(&read(sid.0, Some(0x4_0002), 0x1000_0010));
    assert_eq!(translated_pa(out), Some(Pa(0x2000_0010)));

    // Quiet CD: still valid, nothing translates.
    r.drv.quiet_cd(sid, Pasid(1)).unwrap();
    let cd = r.drv.cd(sid, Pasid(1)).unwrap().unwrap();
    assert!(cd.is_valid() && cd.word0().epd0() && !cd.word0().r());
    let out = r.smmu.translate(&read(sid.0, Some(1), 0x1000_0010));
    assert!(matches!(out, TranslateOutcome::Aborted { .. }), "{out:?}");
    // The other PASID still works; clearing it stops it.
    let t = read(sid.0, Some(0xF_FFFF), 0x1000_0010);
    assert!(translated_pa(r.smmu.translate(&t)).is_some());
    r.drv.clear_cd(sid, Pasid(0xF_FFFF)).unwrap();
    assert!(matches!(
        r.smmu.translate(&t),
        TranslateOutcome::Aborted { .. }
    ));
    // Detach: silent abort.
    r.drv.detach(sid).unwrap();
    assert_eq!(
        r.smmu.translate(&read(sid.0, Some(1), 0x1000_0010)),
        TranslateOutcome::Aborted { event: None }
    );
}

#[test]
fn pri_request_to_response() {
    let r = default_rig();
    let sid = StreamId(0x20);
    let ep = endpoint(&r, sid);
    let pt = page_table(&r.ram);
    r.drv
        .attach(
            sid,
            StreamConfig::S1 {
                cd_table: CdTableConfig::linear(8),
                s1dss: S1dss::Terminate,
                stall_disable: true,
                ats: true,
            },
        )
        .unwrap();
    r.drv
        .set_cd(sid, Pasid(5), &CdConfig::new(pt.root(), Asid(5)))
        .unwrap();
    let req = PageRequest {
        stream_id: sid,
        substream_id: Some(Pasid(5)),
        addr: Va(0x5000_0000),
        prg_index: 0x1AB,
        last: true,
        read: true,
        write: true,
        exec: false,
        privileged: false,
    };
    r.smmu.page_request(&req);
    let prs = r.drv.drain_page_requests();
    assert_eq!(prs, vec![req]);
    assert_eq!(r.drv.stats().page_requests, 1);
    r.drv
        .pri_response(sid, Some(Pasid(5)), 0x1AB, PriResponse::Success)
        .unwrap();
    assert_eq!(
        *ep.pri.lock().unwrap(),
        vec![(Some(Pasid(5)), 0x1AB, PriResponse::Success)]
    );

    // ATC invalidation reaches the endpoint too.
    ep.atc.lock().unwrap().clear();
    r.drv
        .atc_inv(sid, Some(Pasid(5)), Va(0x7000), 0x4000)
        .unwrap();
    let atc = ep.atc.lock().unwrap().clone();
    assert_eq!(atc, vec![(Some(Pasid(5)), 0, 0x10000)]);
}

#[test]
fn stall_and_resume() {
    let r = default_rig();
    let sid = StreamId(0x30);
    let ep = endpoint(&r, sid);
    attach_stalling_cd(&r, sid, 1, 30);
    let out = r.smmu.translate(&read(sid.0, Some(1), 0x6000_0000));
    let TranslateOutcome::Stalled { stag } = out else {
        panic!("expected a stall, got {out:?}");
    };
    let ev = r
        .drv
        .drain_events()
        .into_iter()
        .find(|e| e.stall)
        .expect("stall event");
    assert_eq!(ev.stag, stag);
    r.drv.resume(sid, stag, false).unwrap();
    assert_eq!(*ep.stalls.lock().unwrap(), vec![(stag, false)]);
}

#[test]
fn ste_transitions_keep_working() {
    let r = default_rig();
    let pt = page_table_mapping(&r.ram, Va(0x1000), Pa(0x3000_0000), 0x1000);
    let sid = StreamId(7);
    let t0 = read(7, None, 0x1000);
    for _ in 0..3 {
        r.drv.attach(sid, StreamConfig::Bypass).unwrap();
        assert_eq!(
            r.smmu.translate(&t0),
            TranslateOutcome::Bypassed { pa: Pa(0x1000) }
        );
        r.drv
            .attach(
                sid,
                StreamConfig::S1 {
                    cd_table: CdTableConfig::linear(2),
                    s1dss: S1dss::Ssid0,
                    stall_disable: true,
                    ats: false,
                },
            )
            .unwrap();
        r.drv
            .set_cd(sid, Pasid(0), &CdConfig::new(pt.root(), Asid(1)))
            .unwrap();
        assert_eq!(translated_pa(r.smmu.translate(&t0)), Some(Pa(0x3000_0000)));
        // S1DSS flip to bypass: a single-word change.
        r.drv
            .attach(
                sid,
                StreamConfig::S1 {
                    cd_table: CdTableConfig::linear(2),
                    s1dss: S1dss::Bypass,
                    stall_disable: true,
                    ats: false,
                },
            )
            .unwrap();
        assert_eq!(
            r.smmu.translate(&t0),
            TranslateOutcome::Bypassed { pa: Pa(0x1000) }
        );
        r.drv.detach(sid).unwrap();
        assert_eq!(
            r.smmu.translate(&t0),
            TranslateOutcome::Aborted { event: None }
        );
    }
    // No configuration errors were raised along the way.
    let st = r.drv.stats();
    assert!(!st.events.contains_key(&EventId::CBadSte), "{st:?}");
}

/// A rig whose Event and PRI queue interrupts are not wired (the test calls `handle_irq`).
fn rig_unwired(cfg: SmmuConfig, opts: ProbeOptions) -> Rig {
    let ram = Arc::new(Ram::new(256 << 20).unwrap());
    let smmu = Smmu::new(ram.clone() as Arc<dyn PhysMemory>, cfg);
    let drv = SmmuDriver::probe(smmu.clone() as Arc<dyn Mmio>, ram.clone(), opts).unwrap();
    Rig { ram, smmu, drv }
}

#[test]
fn event_queue_overflow_is_acknowledged() {
    let opts = ProbeOptions {
        eventq_log2: 2,
        ..ProbeOptions::default()
    };
    let r = rig_unwired(SmmuConfig::default(), opts);
    let pt = page_table(&r.ram);
    let sid = StreamId(2);
    attach_s1_cd(&r, sid, CdTableConfig::linear(4), 1, &pt, 2);
    // Ten faults into a 4-entry queue nobody drains.
    for i in 0..10u64 {
        let _ = r.smmu.translate(&read(2, Some(1), 0x10_0000 + (i << 12)));
    }
    r.drv.handle_irq(IrqLine::EventQueue);
    let events = r.drv.drain_events();
    assert_eq!(events.len(), 4);
    assert_eq!(r.drv.stats().event_overflows, 1);
    // After the acknowledgement, new faults are recorded again and no new overflow is seen.
    let _ = r.smmu.translate(&read(2, Some(1), 0x90_0000));
    r.drv.handle_irq(IrqLine::EventQueue);
    let events = r.drv.drain_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].input_addr, Va(0x90_0000));
    assert_eq!(r.drv.stats().event_overflows, 1);
    // Wrapping around the small queue many times.
    for round in 0..5u64 {
        for i in 0..3u64 {
            let _ = r
                .smmu
                .translate(&read(2, Some(1), 0x100_0000 + ((round * 3 + i) << 12)));
        }
        r.drv.handle_irq(IrqLine::EventQueue);
        assert_eq!(r.drv.drain_events().len(), 3, "round {round}");
    }
    assert_eq!(r.drv.stats().event_overflows, 1);
}

#[test]
fn range_and_per_page_invalidation_hit_the_iotlb() {
    for range_inv in [true, false] {
        let opts = ProbeOptions {
            range_inv,
            ..ProbeOptions::default()
        };
        let r = rig(SmmuConfig::default(), opts);
        assert_eq!(r.drv.features().range_inv, range_inv);
        let pt = page_table(&r.ram);
        let base = 0x4000_0000u64;
        let pages = 37u64;
        map_user(&r.ram, &pt, Va(base), Pa(0x800_0000), pages << 12);
        let sid = StreamId(0x99);
        attach_s1_cd(&r, sid, CdTableConfig::linear(1), 1, &pt, 0x99);
        // One page beyond the range stays mapped.
        map_user(
            &r.ram,
            &pt,
            Va(base + (pages << 12)),
            Pa(0x900_0000),
            0x1000,
        );
        for i in 0..=pages {
            assert!(
                translated_pa(r.smmu.translate(&read(0x99, Some(1), base + (i << 12)))).is_some()
            );
        }
        pt.unmap(&r.ram, Va(base), pages << 12, &NoTlb).unwrap();
        r.drv
            .tlbi_va(Asid(0x99), Va(base), pages << 12, true)
            .unwrap();
        for i in 0..pages {
            let out = r.smmu.translate(&read(0x99, Some(1), base + (i << 12)));
            assert!(
                matches!(out, TranslateOutcome::Aborted { .. }),
                "page {i} range {range_inv}"
            );
        }
        let last = r.smmu.translate(&read(0x99, Some(1), base + (pages << 12)));
        assert_eq!(translated_pa(last), Some(Pa(0x900_0000)));
        let st = r.drv.stats();
        let n = st.commands[&sva_smmuv3_spec::Opcode::TlbiNhVa];
        if range_inv {
            // 37 = 0b10_0101: 5 pages (SCALE 0, NUM 4), then 32 pages (SCALE 5, NUM 0).
            assert_eq!(n, 2);
        } else {
            assert_eq!(n, 37);
        }
    }
}

#[test]
fn batch_shares_one_sync() {
    let r = default_rig();
    let before = r.drv.stats().syncs;
    let mut b = r.drv.batch();
    b.tlbi_asid(Asid(1))
        .tlbi_va(Asid(2), Va(0x1000), 0x3000, true)
        .atc_inv(StreamId(4), None, Va(0), 0);
    assert_eq!(b.commands().len(), 3);
    b.submit().unwrap();
    assert_eq!(r.drv.stats().syncs, before + 1);
}

#[test]
fn hitless_updates_use_fewer_syncs() {
    let r = default_rig();
    let pt = page_table(&r.ram);
    let sid = StreamId(0x40);
    let s1 = |s1dss| StreamConfig::S1 {
        cd_table: CdTableConfig::linear(3),
        s1dss,
        stall_disable: true,
        ats: false,
    };
    r.drv.attach(sid, s1(S1dss::Terminate)).unwrap();
    let syncs = |f: &dyn Fn()| {
        let before = r.drv.stats().syncs;
        f();
        r.drv.stats().syncs - before
    };
    // S1DSS flip on the same CD table (hitless): terminate -> bypass sets SHCFG first (an
    // unused field), then S1DSS; bypass -> terminate is one word.
    assert_eq!(syncs(&|| r.drv.attach(sid, s1(S1dss::Bypass)).unwrap()), 2);
    assert_eq!(
        syncs(&|| r.drv.attach(sid, s1(S1dss::Terminate)).unwrap()),
        1
    );
    // S1 -> abort: word 0 first (hitless), then the now unused word 1 is cleared.
    assert_eq!(
        syncs(&|| r.drv.attach(sid, StreamConfig::Abort).unwrap()),
        2
    );
    // CD: a new CD takes two syncs (words 1..7, then word 0 with V); an ASID change one
    // (word 0 only); a new table root and ASID at once three (V = 0, words 1..7, word 0).
    r.drv.attach(sid, s1(S1dss::Terminate)).unwrap();
    let cd = |root, asid| CdConfig::new(root, Asid(asid));
    assert_eq!(
        syncs(&|| r.drv.set_cd(sid, Pasid(3), &cd(pt.root(), 5)).unwrap()),
        2
    );
    assert_eq!(
        syncs(&|| r.drv.set_cd(sid, Pasid(3), &cd(pt.root(), 6)).unwrap()),
        1
    );
    let pt2 = page_table(&r.ram);
    assert_eq!(
        syncs(&|| r.drv.set_cd(sid, Pasid(3), &cd(pt2.root(), 7)).unwrap()),
        3
    );
    // Quiet: one word (then one TLBI_NH_ASID + sync).
    assert_eq!(syncs(&|| r.drv.quiet_cd(sid, Pasid(3)).unwrap()), 2);
}

#[test]
fn single_cd_stream_without_substreams() {
    let r = default_rig();
    let pt = page_table_mapping(&r.ram, Va(0x2000), Pa(0x5000_0000), 0x1000);
    let sid = StreamId(0x41);
    attach_s1_cd(&r, sid, CdTableConfig::linear(0), 0, &pt, 3);
    assert_eq!(
        translated_pa(r.smmu.translate(&read(0x41, None, 0x2008))),
        Some(Pa(0x5000_0008))
    );
    assert!(matches!(
        r.drv
            .set_cd(sid, Pasid(1), &CdConfig::new(pt.root(), Asid(3))),
        Err(Error::SsidOutOfRange { .. })
    ));
}

#[test]
fn httu_sets_access_flag() {
    let r = default_rig();
    let pt = page_table(&r.ram);
    // No AF in the leaf: without HA this is an Access flag fault.
    let attrs = Attributes::SH_INNER | Attributes::AP_EL0 | Attributes::NG;
    pt.map(
        &r.ram,
        Va(0x3000),
        Pa(0x6000_0000),
        0x1000,
        attrs,
        true,
        &NoTlb,
    )
    .unwrap();
    let sid = StreamId(0x42);
    attach_s1_cd(&r, sid, CdTableConfig::linear(2), 1, &pt, 4);
    let out = r.smmu.translate(&read(0x42, Some(1), 0x3000));
    assert_eq!(
        out,
        TranslateOutcome::Aborted {
            event: Some(EventId::FAccess)
        }
    );
    let mut cfg = CdConfig::new(pt.root(), Asid(4));
    cfg.ha = true;
    cfg.hd = true;
    r.drv.set_cd(sid, Pasid(1), &cfg).unwrap();
    let out = r.smmu.translate(&read(0x42, Some(1), 0x3000));
    assert_eq!(translated_pa(out), Some(Pa(0x6000_0000)));
    let leaf = pt.lookup(&*r.ram, Va(0x3000)).unwrap().unwrap();
    assert!(format!("{leaf:?}").contains("af: true"), "{leaf:?}");
}

#[test]
fn illegal_command_recovered_in_msi_mode_with_tiny_queue() {
    let cfg = SmmuConfig {
        cmdq_log2: 1,
        ..SmmuConfig::default()
    };
    let opts = ProbeOptions {
        sync: SyncMode::Msi,
        ..ProbeOptions::default()
    };
    let r = rig(cfg, opts);
    assert!(r.drv.features().msi_sync);
    assert_eq!(r.drv.features().cmdq_log2, 1);
    for _ in 0..5 {
        assert!(matches!(
            r.drv.submit_raw([0x7F, 0]),
            Err(Error::IllegalCommand { .. })
        ));
        r.drv.tlbi_va(Asid(1), Va(0), 0x5000, true).unwrap();
    }
    assert_eq!(r.drv.stats().cmdq_errors, 5);
}

#[test]
fn concurrent_submitters() {
    let r = default_rig();
    let pt = page_table_mapping(&r.ram, Va(0x1000), Pa(0x7000_0000), 0x1000);
    r.drv
        .attach(StreamId(9), StreamConfig::s1(CdTableConfig::linear(4)))
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..2u32 {
            let drv = r.drv.clone();
            let root = pt.root();
            s.spawn(move || {
                for i in 0..100u32 {
                    let ssid = Pasid(1 + t * 7 + (i % 7));
                    drv.set_cd(StreamId(9), ssid, &CdConfig::new(root, Asid(ssid.0 as u16)))
                        .unwrap();
                    drv.tlbi_va(Asid(ssid.0 as u16), Va(0x1000), 0x1000, true)
                        .unwrap();
                }
            });
        }
        let smmu = r.smmu.clone();
        s.spawn(move || {
            for _ in 0..200 {
                let _ = smmu.translate(&read(9, Some(1), 0x1000));
            }
        });
    });
    for ssid in 1..15u32 {
        let out = r.smmu.translate(&read(9, Some(ssid), 0x1000));
        assert_eq!(translated_pa(out), Some(Pa(0x7000_0000)), "ssid {ssid}");
    }
}

#[test]
fn priq_overflow_is_counted() {
    let opts = ProbeOptions {
        priq_log2: 1,
        ..ProbeOptions::default()
    };
    let r = rig_unwired(SmmuConfig::default(), opts);
    assert_eq!(r.drv.features().priq_log2, 1);
    let sid = StreamId(0x21);
    let _ep = endpoint(&r, sid);
    for prg in 0..4u16 {
        r.smmu.page_request(&last_read_request(
            sid,
            Some(Pasid(1)),
            Va(0x1000 * u64::from(prg)),
            prg,
        ));
    }
    r.drv.handle_irq(IrqLine::PriQueue);
    let prs = r.drv.drain_page_requests();
    assert_eq!(prs.len(), 2);
    let st = r.drv.stats();
    assert_eq!(st.priq_overflows, 1);
    assert_eq!(st.page_requests, 2);
    for p in prs {
        r.drv
            .pri_response(sid, p.substream_id, p.prg_index, PriResponse::Invalid)
            .unwrap();
    }
    // After the acknowledgement new requests are queued again.
    r.smmu
        .page_request(&last_read_request(sid, None, Va(0x9000), 9));
    r.drv.handle_irq(IrqLine::PriQueue);
    assert_eq!(r.drv.drain_page_requests().len(), 1);
    assert_eq!(r.drv.stats().priq_overflows, 1);
}

#[test]
fn stall_term_and_disable() {
    let r = default_rig();
    let sid = StreamId(0x31);
    let ep = endpoint(&r, sid);
    attach_stalling_cd(&r, sid, 2, 31);
    let mut stags = Vec::new();
    for i in 0..2u64 {
        match r
            .smmu
            .translate(&read(sid.0, Some(2), 0x6000_0000 + (i << 12)))
        {
            TranslateOutcome::Stalled { stag } => stags.push(stag),
            other => panic!("expected a stall, got {other:?}"),
        }
    }
    r.drv.stall_term(sid).unwrap();
    let mut got: Vec<u16> = ep.stalls.lock().unwrap().iter().map(|s| s.0).collect();
    got.sort_unstable();
    stags.sort_unstable();
    assert_eq!(got, stags);
    assert!(ep.stalls.lock().unwrap().iter().all(|s| !s.1));

    // Disabling: GBPA aborts everything.
    r.drv.disable().unwrap();
    assert_eq!(
        r.smmu.translate(&read(sid.0, Some(2), 0x6000_0000)),
        TranslateOutcome::Aborted { event: None }
    );
}

#[test]
fn ats_follows_ste_eats() {
    use sva_smmuv3::{AtsCompletion, AtsRequest};
    let r = default_rig();
    let pt = page_table_mapping(&r.ram, Va(0x8000), Pa(0x4400_0000), 0x1000);
    let req = |sid: u32| AtsRequest {
        sid: StreamId(sid),
        ssid: Some(Pasid(1)),
        addr: 0x8000,
        no_write: false,
        exec: false,
        privileged: false,
    };
    for (sid, ats) in [(0x50u32, true), (0x51, false)] {
        r.drv
            .attach(
                StreamId(sid),
                StreamConfig::S1 {
                    cd_table: CdTableConfig::linear(2),
                    s1dss: S1dss::Terminate,
                    stall_disable: true,
                    ats,
                },
            )
            .unwrap();
        r.drv
            .set_cd(
                StreamId(sid),
                Pasid(1),
                &CdConfig::new(pt.root(), Asid(0x50)),
            )
            .unwrap();
    }
    match r.smmu.ats_translate(&req(0x50)) {
        AtsCompletion::Success { pa, .. } => assert_eq!(pa, Pa(0x4400_0000)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.smmu.ats_translate(&req(0x51)),
        AtsCompletion::UnsupportedRequest
    );
}

#[test]
fn granule_64k_context_and_range_invalidation() {
    let r = default_rig();
    let pt = PageTable::new(&r.ram, TableConfig::new(Granule::Size64K, 48, 48).unwrap()).unwrap();
    map_user(&r.ram, &pt, Va(0x100_0000), Pa(0x5000_0000), 0x3_0000);
    let sid = StreamId(0x60);
    r.drv
        .attach(sid, StreamConfig::s1(CdTableConfig::linear(2)))
        .unwrap();
    let mut cfg = CdConfig::new(pt.root(), Asid(0x60));
    cfg.tg0 = sva_smmuv3_driver::Granule::Size64K;
    r.drv.set_cd(sid, Pasid(1), &cfg).unwrap();
    for i in 0..3u64 {
        let out = r
            .smmu
            .translate(&read(0x60, Some(1), 0x100_0000 + i * 0x1_0000 + 0x44));
        assert_eq!(translated_pa(out), Some(Pa(0x5000_0044 + i * 0x1_0000)));
    }
    pt.unmap(&r.ram, Va(0x100_0000), 0x2_0000, &NoTlb).unwrap();
    // The driver remembers the ASID's granule: one range command of two 64K pages.
    let count = || {
        r.drv
            .stats()
            .commands
            .get(&sva_smmuv3_spec::Opcode::TlbiNhVa)
            .copied()
            .unwrap_or(0)
    };
    let before = count();
    r.drv
        .tlbi_va(Asid(0x60), Va(0x100_0000), 0x2_0000, true)
        .unwrap();
    assert_eq!(count(), before + 1);
    for i in 0..2u64 {
        let out = r
            .smmu
            .translate(&read(0x60, Some(1), 0x100_0000 + i * 0x1_0000));
        assert!(matches!(out, TranslateOutcome::Aborted { .. }), "{out:?}");
    }
    let out = r.smmu.translate(&read(0x60, Some(1), 0x102_0000));
    assert_eq!(translated_pa(out), Some(Pa(0x5002_0000)));
}

#[test]
fn gerror_interrupts_racing_submitters() {
    let r = default_rig();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|s| {
        let drv = r.drv.clone();
        let stop2 = stop.clone();
        s.spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                drv.handle_irq(IrqLine::GlobalError);
                std::thread::yield_now();
            }
        });
        for i in 0..50u64 {
            let err = r.drv.submit_raw([0xFF, i]).unwrap_err();
            assert_eq!(err, Error::IllegalCommand { words: [0xFF, i] });
            r.drv.tlbi_asid(Asid(1)).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(r.drv.stats().cmdq_errors, 50);
}

#[test]
fn stalling_cd_needs_a_stalling_stream() {
    let r = default_rig();
    let pt = page_table(&r.ram);
    let sid = StreamId(0x70);
    r.drv
        .attach(sid, StreamConfig::s1(CdTableConfig::linear(2)))
        .unwrap();
    let mut cfg = CdConfig::new(pt.root(), Asid(1));
    cfg.stall = true;
    assert!(matches!(
        r.drv.set_cd(sid, Pasid(1), &cfg),
        Err(Error::InvalidArgument(_))
    ));
    // Without stalls enabled at probe, a stalling CD is refused outright.
    let no_stall = ProbeOptions {
        stall: false,
        ..ProbeOptions::default()
    };
    let r = rig(SmmuConfig::default(), no_stall);
    assert!(!r.drv.features().stall && r.drv.features().hw_stall);
    r.drv
        .attach(
            sid,
            StreamConfig::S1 {
                cd_table: CdTableConfig::linear(2),
                s1dss: S1dss::Terminate,
                stall_disable: false,
                ats: false,
            },
        )
        .unwrap();
    // The STE still disables stalls, since the options forbid them.
    assert!(r.drv.ste(sid).unwrap().word1().s1stalld());
    assert_eq!(
        r.drv.set_cd(sid, Pasid(1), &cfg),
        Err(Error::FeatureUnavailable("stall"))
    );
}
