//! The isolation matrix, part 2: a device that lies. Raw messages from [`TestEndpoint`] and
//! raw transactions on the SMMU model: page requests beyond any credit (flooding the PRI
//! queue), page requests with a PASID the device is not bound to, page requests still
//! queued when the PASID is unbound and reused, and ATS Translated transactions for
//! physical addresses the device was never given.
//!
//! Every test is listed in `docs/security.md`.

mod common;

use common::{
    AT, PRI, RW, STALL, dev, platform_with_irq_thread, platform_with_smmu, populated_page,
    sva_device,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sva_addr::{Pa, Pasid, StreamId, Va};
use sva_mm::{AccessKind, MapFlags, Mm};
use sva_physmem::PhysMemory;
use sva_platform::{Message, Platform, PlatformConfig, TestEndpoint};
use sva_smmuv3::{AccessKind as Bus, Denied, EventId, SmmuConfig, Transaction};
use sva_smmuv3_driver::ProbeOptions;
use sva_smmuv3_spec::pri::PriResponse;

/// `pages` untouched pages at [`AT`].
fn untouched(mm: &Mm, pages: u64) {
    mm.mmap(
        Some(AT),
        pages * 4096,
        RW,
        MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::NOHUGEPAGE,
    )
    .unwrap();
}

fn mapped(mm: &Mm, va: Va) -> bool {
    mm.translate(va, AccessKind::Read).unwrap().is_some()
}

/// PRG responses received so far, by group.
fn responses(ep: &TestEndpoint, into: &mut Vec<(u16, PriResponse)>) {
    for m in ep.take_messages() {
        if let Message::PriResponse {
            prg_index,
            response,
            ..
        } = m
        {
            into.push((prg_index, response));
        }
    }
}

/// Waits until `n` responses arrived (delivering interrupts by hand when `pump`).
fn wait_responses(
    p: &Platform,
    ep: &TestEndpoint,
    n: usize,
    pump: bool,
) -> Vec<(u16, PriResponse)> {
    let mut got = Vec::new();
    let t0 = Instant::now();
    while got.len() < n {
        if pump {
            p.deliver_irqs();
        }
        responses(ep, &mut got);
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{} of {n} responses: {got:?}",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Nothing more comes.
    std::thread::sleep(Duration::from_millis(20));
    if pump {
        p.deliver_irqs();
    }
    responses(ep, &mut got);
    got
}

// ---------------------------------------------------------------------------------------
// PRI flooding

#[test]
fn a_page_request_flood_overflows_the_pri_queue_and_the_host_recovers() {
    // Interrupts by hand: the flood lands while nobody drains the PRI queue (8 entries).
    let p = Platform::new(PlatformConfig {
        probe: ProbeOptions {
            priq_log2: 3,
            ..ProbeOptions::default()
        },
        ..PlatformConfig::default()
    })
    .unwrap();
    let sva = p.sva.clone().unwrap();
    let sid = StreamId(0x10);
    let ep = sva_device(&p, sid, PRI);
    let mm = p.system.spawn().unwrap();
    let pages = 64u64;
    untouched(&mm, pages);
    let bond = sva.bind(dev(sid), &mm).unwrap();
    // Far beyond any PRI allocation: one single-page group per page, and groups of several
    // requests whose LAST is dropped with the overflow.
    for g in 0..pages as u16 {
        ep.page_request(
            Some(bond.pasid),
            (AT + u64::from(g) * 4096).raw(),
            g,
            true,
            true,
        );
    }
    for g in 100..110u16 {
        ep.page_request(Some(bond.pasid), AT.raw(), g, false, false);
    }
    // The SMMU answered the LAST requests it could not queue itself (Success, §8.1): the
    // device will ask again. Nothing was mapped for them.
    let auto: Vec<(u16, PriResponse)> = {
        let mut v = Vec::new();
        responses(&ep, &mut v);
        v
    };
    assert_eq!(auto.len(), pages as usize - 8, "{auto:?}");
    assert!(
        auto.iter()
            .all(|&(g, r)| g >= 8 && r == PriResponse::Success)
    );
    assert!(p.smmu.stats().pri_auto_responses >= pages - 8);
    // The host drains the queue, sees the overflow, answers what was queued.
    let host = wait_responses(&p, &ep, 8, true);
    assert_eq!(
        host.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    assert!(host.iter().all(|&(_, r)| r == PriResponse::Success));
    assert_eq!(p.driver.stats().priq_overflows, 1);
    for i in 0..pages {
        assert_eq!(mapped(&mm, AT + i * 4096), i < 8, "page {i}");
    }
    // Later requests work again, and every discarded page can be asked for anew.
    for g in 8..pages as u16 {
        ep.page_request(
            Some(bond.pasid),
            (AT + u64::from(g) * 4096).raw(),
            g,
            true,
            true,
        );
        if g % 4 == 3 {
            p.deliver_irqs();
        }
    }
    let again = wait_responses(&p, &ep, pages as usize - 8, true);
    assert!(
        again.iter().all(|&(_, r)| r == PriResponse::Success),
        "{again:?}"
    );
    for i in 0..pages {
        assert!(mapped(&mm, AT + i * 4096), "page {i}");
    }
    assert_eq!(p.driver.stats().priq_overflows, 1);
    sva.unbind(bond).unwrap();
    assert!(!sva.pasid_allocated(bond.pasid));
}

// ---------------------------------------------------------------------------------------
// Forged page requests

#[test]
fn a_page_request_with_a_pasid_the_device_is_not_bound_to_is_invalid_and_maps_nothing() {
    let p = platform_with_irq_thread();
    let sva = p.sva.clone().unwrap();
    let honest = StreamId(0x20);
    let liar = StreamId(0x21);
    let _h = sva_device(&p, honest, PRI);
    let l = sva_device(&p, liar, PRI);
    let victim = p.system.spawn().unwrap();
    let own = p.system.spawn().unwrap();
    untouched(&victim, 8);
    untouched(&own, 8);
    let vb = sva.bind(dev(honest), &victim).unwrap();
    let ob = sva.bind(dev(liar), &own).unwrap();
    // The liar asks for pages of the victim's address space, with the victim's PASID.
    for g in 0..4u16 {
        l.page_request(
            Some(vb.pasid),
            (AT + u64::from(g) * 4096).raw(),
            g,
            true,
            g % 2 == 0,
        );
    }
    // ... with a PASID nobody has, and without a PASID.
    l.page_request(Some(Pasid(0x777)), AT.raw(), 4, true, true);
    l.page_request(None, AT.raw(), 5, true, true);
    let got = wait_responses(&p, &l, 6, false);
    assert!(
        got.iter().all(|&(_, r)| r == PriResponse::Invalid),
        "{got:?}"
    );
    for i in 0..8 {
        assert!(
            !mapped(&victim, AT + i * 4096),
            "victim page {i} faulted in"
        );
    }
    // Its own PASID works.
    l.page_request(Some(ob.pasid), AT.raw(), 6, true, true);
    assert_eq!(
        wait_responses(&p, &l, 1, false),
        [(6, PriResponse::Success)]
    );
    assert!(mapped(&own, AT));
}

#[test]
fn page_requests_still_queued_at_unbind_never_reach_the_next_owner_of_the_pasid() {
    // Interrupts by hand: the requests wait in the PRI queue while the PASID changes hands.
    let p = Platform::new(PlatformConfig::default()).unwrap();
    let sva = p.sva.clone().unwrap();
    let sid = StreamId(0x30);
    let other = StreamId(0x31);
    let ep = sva_device(&p, sid, PRI);
    let ep2 = sva_device(&p, other, PRI);
    let first = p.system.spawn().unwrap();
    untouched(&first, 8);
    let bond = sva.bind(dev(sid), &first).unwrap();
    for g in 0..4u16 {
        ep.page_request(
            Some(bond.pasid),
            (AT + u64::from(g) * 4096).raw(),
            g,
            true,
            true,
        );
    }
    // The device was stopped; the driver unbinds. The requests are still in the queue.
    sva.unbind(bond).unwrap();
    assert!(!sva.pasid_allocated(bond.pasid));
    // The next process gets the same PASID, on the same device and on another one.
    let next = p.system.spawn().unwrap();
    untouched(&next, 8);
    let nb = sva.bind(dev(sid), &next).unwrap();
    let nb2 = sva.bind(dev(other), &next).unwrap();
    assert_eq!(nb.pasid, bond.pasid, "the PASID was reused");
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(100) {
        p.deliver_irqs();
        std::thread::sleep(Duration::from_millis(1));
    }
    for i in 0..8 {
        assert!(
            !mapped(&next, AT + i * 4096),
            "a request of the old owner faulted in page {i} of the new one"
        );
    }
    // The new owner's own requests are served.
    ep.take_messages();
    ep.page_request(Some(nb.pasid), (AT + 5 * 4096).raw(), 9, true, true);
    assert_eq!(
        wait_responses(&p, &ep, 1, true),
        [(9, PriResponse::Success)]
    );
    ep2.page_request(Some(nb2.pasid), (AT + 6 * 4096).raw(), 9, true, true);
    assert_eq!(
        wait_responses(&p, &ep2, 1, true),
        [(9, PriResponse::Success)]
    );
    assert!(mapped(&next, AT + 5 * 4096) && mapped(&next, AT + 6 * 4096));
}

// ---------------------------------------------------------------------------------------
// ATS Translated transactions

/// Writes `data` at physical address `pa` with an ATS Translated transaction.
fn translated_write(p: &Platform, sid: StreamId, pa: Pa, data: &[u8]) -> Result<(), Denied> {
    let txn = Transaction {
        sid,
        ssid: None,
        addr: pa.raw(),
        access: Bus::Write,
        privileged: false,
        translated: true,
    };
    p.smmu.transact(&txn, |out| p.ram.write(out, data).unwrap())
}

/// A platform, a victim with a secret page (its frame returned), and devices: `ats_sid`
/// with ATS (STE.EATS = 1), `plain_sid` without (EATS = 0), `blocked_sid` never enabled.
fn ats_rig(probe: ProbeOptions) -> (Platform, Arc<Mm>, Pa) {
    let p = Platform::new(PlatformConfig {
        probe,
        irq_thread: true,
        ..PlatformConfig::default()
    })
    .unwrap();
    let victim = p.system.spawn().unwrap();
    let va = populated_page(&victim);
    victim.write(va, b"victim's secret").unwrap();
    let frame = victim.translate(va, AccessKind::Read).unwrap().unwrap();
    let _ = sva_device(&p, StreamId(0x40), PRI);
    let _ = sva_device(&p, StreamId(0x41), STALL);
    let _ = p.device(StreamId(0x42), STALL);
    (p, victim, frame)
}

fn secret(p: &Platform, frame: Pa) -> Vec<u8> {
    let mut b = vec![0u8; 15];
    p.ram.read(frame, &mut b).unwrap();
    b
}

#[test]
fn with_atschk_translated_transactions_pass_only_on_ats_streams() {
    let (p, _victim, frame) = ats_rig(ProbeOptions::default());
    assert!(p.driver.features().atschk);
    // A stream without ATS (EATS = 0): F_TRANSL_FORBIDDEN, nothing written.
    assert_eq!(
        translated_write(&p, StreamId(0x41), frame, b"forged by 0x41!"),
        Err(Denied::Aborted {
            event: Some(EventId::FTranslForbidden)
        })
    );
    // A stream nobody enabled: aborted.
    assert!(translated_write(&p, StreamId(0x42), frame, b"forged by 0x42!").is_err());
    // A stream that does not exist at all.
    assert!(translated_write(&p, StreamId(0x4ff), frame, b"forged by 0x4ff").is_err());
    assert_eq!(secret(&p, frame), b"victim's secret");
    // A stream with ATS enabled is trusted with physical addresses, as on hardware: the
    // SMMU does not know which translations the device was given.
    translated_write(&p, StreamId(0x40), frame, b"ATS is trusted!").unwrap();
    assert_eq!(secret(&p, frame), b"ATS is trusted!");
    let mut ev = Vec::new();
    let t0 = Instant::now();
    while !ev
        .iter()
        .any(|e: &sva_smmuv3_spec::event::Event| e.id == EventId::FTranslForbidden)
        && t0.elapsed() < Duration::from_secs(5)
    {
        ev.extend(p.take_events());
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        ev.iter()
            .any(|e| e.id == EventId::FTranslForbidden && e.stream_id == StreamId(0x41)),
        "{ev:?}"
    );
}

#[test]
fn without_atschk_translated_transactions_bypass_the_smmu_on_every_stream() {
    let (p, _victim, frame) = ats_rig(ProbeOptions {
        atschk: false,
        ..ProbeOptions::default()
    });
    assert!(!p.driver.features().atschk);
    // Fast mode (CR0.ATSCHK = 0): the SMMU does not look at the STE for Translated traffic.
    translated_write(&p, StreamId(0x41), frame, b"fast mode: 0x41").unwrap();
    assert_eq!(secret(&p, frame), b"fast mode: 0x41");
    translated_write(&p, StreamId(0x42), frame, b"fast mode: 0x42").unwrap();
    assert_eq!(secret(&p, frame), b"fast mode: 0x42");
}

#[test]
fn without_ats_in_the_smmu_translated_transactions_are_forbidden() {
    let p = platform_with_smmu(SmmuConfig {
        ats: false,
        ..SmmuConfig::default()
    });
    let frame = p.ram.alloc(4096).unwrap();
    p.ram.write(frame, b"nobody may ever").unwrap();
    let _ = sva_device(&p, StreamId(0x43), STALL);
    assert_eq!(
        translated_write(&p, StreamId(0x43), frame, b"forged, no ATS!"),
        Err(Denied::Aborted {
            event: Some(EventId::FTranslForbidden)
        })
    );
    assert_eq!(secret(&p, frame), b"nobody may ever");
}
