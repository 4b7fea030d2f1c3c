//! The isolation matrix, part 1: which address space a device reaches with which PASID.
//! A device bound to process A, with A's PASID, never reads or writes B's memory: not with
//! B's PASID on a device bound only to A, not with the PASID of an exited process, not with
//! a PASID above the SMMU's SSIDSIZE or the function's PASID width, not without a PASID
//! when the stream terminates SubstreamID-less traffic. PASIDs are not reused while a device
//! could still use them (exit with bonds, fork/exit interleavings). Privileged, execute and
//! write requests get no more than the user mapping grants, and a device write to a
//! copy-on-write page breaks the sharing instead of writing the shared frame.
//!
//! Every test is listed in `docs/security.md`.

mod common;

use common::{
    AT, PRI, RW, STALL, bind_each, dev, platform_with_irq_thread, platform_with_smmu,
    populated_page, populated_page_with, raw_pasids, sva_device,
};
use sva_addr::{Pa, Pasid, StreamId, Va};
use sva_iommu::Error;
use sva_mm::{AccessKind, MapFlags, Mm, Prot};
use sva_pcie::{Capabilities, Dma, DmaCtx, FaultReason};
use sva_physmem::PhysMemory;
use sva_platform::{DmaError, Message, Platform, TestEndpoint};
use sva_smmuv3::{AccessKind as Bus, AtsCompletion, Denied, EventId, SmmuConfig, Transaction};
use sva_smmuv3_driver::{DeviceDesc, FaultPath};
use sva_smmuv3_spec::pri::{PageRequest, PriResponse};

/// `len` bytes at [`AT`] in `mm`, populated and filled with `byte`.
fn buffer(mm: &Mm, len: u64, byte: u8) {
    mm.mmap(
        Some(AT),
        len,
        RW,
        MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::POPULATE | MapFlags::NOHUGEPAGE,
    )
    .unwrap();
    mm.fill(AT, byte, len as usize).unwrap();
}

fn frame(mm: &Mm, va: Va) -> Pa {
    mm.translate(va, AccessKind::Read).unwrap().unwrap()
}

fn ram_bytes(p: &Platform, pa: Pa, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    p.ram.read(pa, &mut b).unwrap();
    b
}

fn mm_bytes(mm: &Mm, va: Va, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    mm.read(va, &mut b).unwrap();
    b
}

/// Waits for the PRG response to `group`; other messages are dropped.
fn wait_response(ep: &TestEndpoint, group: u16) -> PriResponse {
    for _ in 0..5000 {
        for m in ep.take_messages() {
            if let Message::PriResponse {
                prg_index,
                response,
                ..
            } = m
                && prg_index == group
            {
                return response;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("no response to group {group}");
}

/// A raw page request with every attribute chosen by the caller (a device may lie).
#[expect(clippy::too_many_arguments, reason = "one field per argument")]
fn raw_page_request(
    p: &Platform,
    sid: StreamId,
    pasid: Option<Pasid>,
    addr: Va,
    group: u16,
    write: bool,
    exec: bool,
    privileged: bool,
) {
    p.smmu.page_request(&PageRequest {
        stream_id: sid,
        substream_id: pasid,
        addr: addr.align_down(4096),
        prg_index: group,
        last: true,
        read: true,
        write,
        exec,
        privileged,
    });
}

/// A raw untranslated transaction; returns the output address or why it was denied.
fn raw_txn(
    p: &Platform,
    sid: StreamId,
    pasid: Option<Pasid>,
    addr: u64,
    access: Bus,
    privileged: bool,
) -> Result<Pa, Denied> {
    p.smmu.transact(
        &Transaction {
            sid,
            ssid: pasid,
            addr,
            access,
            privileged,
            translated: false,
        },
        |pa| pa,
    )
}

// ---------------------------------------------------------------------------------------
// Wrong PASID

#[test]
fn the_same_va_through_a_pasid_reaches_only_that_pasids_address_space() {
    let p = platform_with_irq_thread();
    let sva = p.sva.clone().unwrap();
    let only_a = sva_device(&p, StreamId(0x10), STALL);
    let both = sva_device(&p, StreamId(0x11), PRI);
    let a = p.system.spawn().unwrap();
    let b = p.system.spawn().unwrap();
    buffer(&a, 4 * 4096, 0xaa);
    buffer(&b, 4 * 4096, 0xbb);
    a.write(AT, b"A's secret").unwrap();
    b.write(AT, b"B's secret").unwrap();
    let fb: Vec<Pa> = (0..4).map(|i| frame(&b, AT + i * 4096)).collect();
    let b_before: Vec<Vec<u8>> = fb.iter().map(|&f| ram_bytes(&p, f, 4096)).collect();
    let ba = sva.bind(dev(StreamId(0x10)), &a).unwrap();
    let both_a = sva.bind(dev(StreamId(0x11)), &a).unwrap();
    let both_b = sva.bind(dev(StreamId(0x11)), &b).unwrap();
    assert_eq!(ba.pasid, both_a.pasid);
    assert_ne!(both_a.pasid, both_b.pasid);

    // A's PASID at B's VA sees A's memory, and writes go to A.
    assert_eq!(
        both.dma_read(Some(ba.pasid), AT.raw(), 10).unwrap(),
        b"A's secret"
    );
    both.dma_write(Some(ba.pasid), AT.raw(), b"device -> A")
        .unwrap();
    only_a
        .dma_write(Some(ba.pasid), (AT + 4096).raw(), &[0x11; 4096])
        .unwrap();
    assert_eq!(mm_bytes(&a, AT, 11), b"device -> A");

    // B's PASID on a device bound only to A: no context, nothing reached.
    for i in 0..4u64 {
        let at = (AT + i * 4096).raw();
        let r = only_a.dma_read(Some(both_b.pasid), at, 16);
        assert!(
            matches!(
                r,
                Err(DmaError::Aborted {
                    event: Some(EventId::CBadCd),
                    ..
                })
            ),
            "{r:?}"
        );
        assert!(
            only_a
                .dma_write(Some(both_b.pasid), at, &[0x66; 64])
                .is_err()
        );
    }
    assert!(matches!(
        raw_txn(
            &p,
            StreamId(0x10),
            Some(both_b.pasid),
            AT.raw(),
            Bus::Write,
            false
        ),
        Err(Denied::Aborted { .. })
    ));

    // Nothing of B changed: not its frames, not its mappings.
    assert_eq!(mm_bytes(&b, AT, 10), b"B's secret");
    for (i, f) in fb.iter().enumerate() {
        assert_eq!(frame(&b, AT + i as u64 * 4096), *f, "B's page {i} moved");
        assert_eq!(
            ram_bytes(&p, *f, 4096),
            b_before[i],
            "B's frame {i} changed"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Exited process

#[test]
fn the_pasid_of_an_exited_process_reaches_nothing_and_waits_for_every_unbind() {
    let p = platform_with_irq_thread();
    let sva = p.sva.clone().unwrap();
    let stall = sva_device(&p, StreamId(0x20), STALL);
    let pri = sva_device(&p, StreamId(0x21), PRI);
    let a = p.system.spawn().unwrap();
    let len = 16 * 4096;
    buffer(&a, len, 0xa5);
    let b1 = sva.bind(dev(StreamId(0x20)), &a).unwrap();
    let b2 = sva.bind(dev(StreamId(0x21)), &a).unwrap();
    let pasid = b1.pasid;
    let frames: Vec<Pa> = (0..16).map(|i| frame(&a, AT + i * 4096)).collect();
    // The devices use the address space: the IOTLB holds translations.
    assert_eq!(stall.dma_read(Some(pasid), AT.raw(), 4).unwrap(), [0xa5; 4]);
    assert!(matches!(
        pri.ats(Some(pasid), AT.raw(), true),
        AtsCompletion::Success { write: true, .. }
    ));
    let _ = pri.take_messages();

    p.system.exit(a.pid()).unwrap();
    // Every frame of the process is free again.
    for f in &frames {
        assert!(p.ram.refcount(*f).is_err(), "frame {f} still allocated");
    }
    // The frames go to a new owner; nothing the devices do with the dead PASID reaches them.
    let c = p.system.spawn().unwrap();
    let big = 256 * 4096;
    let cva = c
        .mmap(None, big, RW, MapFlags::PRIVATE | MapFlags::NOHUGEPAGE)
        .unwrap();
    c.fill(cva, 0x77, big as usize).unwrap();
    let reused = frames
        .iter()
        .filter(|f| p.ram.refcount(**f).is_ok())
        .count();
    assert!(reused > 0, "no frame of the exited process was reused");
    for i in 0..16u64 {
        let at = (AT + i * 4096).raw();
        assert!(matches!(
            stall.dma_write(Some(pasid), at, &[0xee; 64]),
            Err(DmaError::Aborted { .. })
        ));
        assert!(pri.dma_write(Some(pasid), at, &[0xee; 64]).is_err());
        assert!(stall.dma_read(Some(pasid), at, 64).is_err());
    }
    // No translation for the ATC either, and a page request is refused without mapping.
    assert_eq!(
        pri.ats(Some(pasid), AT.raw(), true),
        AtsCompletion::NoAccess
    );
    pri.page_request(Some(pasid), AT.raw(), 7, true, true);
    assert_eq!(wait_response(&pri, 7), PriResponse::Invalid);
    assert!(
        mm_bytes(&c, cva, big as usize).iter().all(|&x| x == 0x77),
        "a write with the dead PASID reached the new owner"
    );
    // The PASID stays allocated while either device is bound.
    let d = p.system.spawn().unwrap();
    let bd = sva.bind(dev(StreamId(0x20)), &d).unwrap();
    assert_ne!(bd.pasid, pasid);
    sva.unbind(b1).unwrap();
    assert!(sva.pasid_allocated(pasid), "freed with a bond left");
    let e = p.system.spawn().unwrap();
    assert_ne!(sva.bind(dev(StreamId(0x21)), &e).unwrap().pasid, pasid);
    sva.unbind(b2).unwrap();
    assert!(!sva.pasid_allocated(pasid));
    let f = p.system.spawn().unwrap();
    assert_eq!(sva.bind(dev(StreamId(0x20)), &f).unwrap().pasid, pasid);
}

// ---------------------------------------------------------------------------------------
// PASIDs out of range

#[test]
fn pasids_above_ssidsize_are_never_allocated_and_never_translate() {
    let p = platform_with_smmu(SmmuConfig {
        ssidsize: 2,
        ..SmmuConfig::default()
    });
    let sva = p.sva.clone().unwrap();
    let sid = StreamId(0x30);
    let ep = sva_device(&p, sid, PRI);
    assert_eq!(p.driver.features().ssid_bits, 2);
    let mms: Vec<_> = (0..4).map(|_| p.system.spawn().unwrap()).collect();
    for mm in &mms {
        buffer(mm, 4096, 0x5a);
    }
    let bonds = bind_each(&sva, sid, &mms[..3]);
    assert_eq!(raw_pasids(&bonds), [1, 2, 3]);
    assert!(matches!(
        sva.bind(dev(sid), &mms[3]),
        Err(Error::PasidsExhausted { .. })
    ));
    // A device that uses SubstreamIDs beyond SSIDSIZE anyway.
    for pasid in [4, 5, 0x7ff, 0xfffff] {
        let r = raw_txn(&p, sid, Some(Pasid(pasid)), AT.raw(), Bus::Read, false);
        assert_eq!(
            r,
            Err(Denied::Aborted {
                event: Some(EventId::CBadSubstreamid)
            }),
            "PASID {pasid}"
        );
        assert_eq!(
            ep.ats(Some(Pasid(pasid)), AT.raw(), false),
            AtsCompletion::CompleterAbort
        );
        ep.page_request(Some(Pasid(pasid)), AT.raw(), 9, true, true);
        assert_eq!(wait_response(&ep, 9), PriResponse::Invalid);
    }
}

#[test]
fn a_function_never_gets_a_pasid_above_its_pasid_width() {
    let p = platform_with_irq_thread();
    let sva = p.sva.clone().unwrap();
    // Another device takes PASIDs 1..=3 first.
    let other = StreamId(0x41);
    let _ep = sva_device(&p, other, STALL);
    let early: Vec<_> = (0..3).map(|_| p.system.spawn().unwrap()).collect();
    for mm in &early {
        sva.bind(dev(other), mm).unwrap();
    }
    // A function whose PASID capability has 2 bits: PASIDs 1..=3 only.
    let narrow = p
        .sva_function(
            StreamId(0x40),
            Capabilities {
                pasid_width: 2,
                ..Capabilities::default()
            },
        )
        .unwrap();
    let mm = p.system.spawn().unwrap();
    buffer(&mm, 4096, 0x42);
    let r = sva.bind(dev(StreamId(0x40)), &mm);
    assert!(
        matches!(r, Err(Error::PasidsExhausted { .. })),
        "bound with a PASID the function cannot send: {r:?}"
    );
    // An address space whose PASID is above the width is refused (EOVERFLOW).
    assert!(matches!(
        sva.bind(dev(StreamId(0x40)), &early[2]),
        Ok(b) if b.pasid == Pasid(3)
    ));
    let late = p.system.spawn().unwrap();
    let lb = sva.bind(dev(other), &late).unwrap();
    assert!(lb.pasid.raw() >= 4);
    assert!(matches!(
        sva.bind(dev(StreamId(0x40)), &late),
        Err(Error::PasidAboveDeviceMax { .. })
    ));
    // The function itself refuses PASIDs above its width, and a forged one reaches nothing.
    let err = narrow
        .read(DmaCtx::pasid(lb.pasid), AT.raw(), &mut [0u8; 4])
        .unwrap_err();
    assert_eq!(err.reason, FaultReason::Disabled);
    assert!(
        raw_txn(
            &p,
            StreamId(0x40),
            Some(lb.pasid),
            AT.raw(),
            Bus::Read,
            false
        )
        .is_err()
    );
}

// ---------------------------------------------------------------------------------------
// DMA without PASID

#[test]
fn dma_without_pasid_is_terminated_when_the_stream_has_no_domain() {
    let p = platform_with_irq_thread();
    let sva = p.sva.clone().unwrap();
    let frame = p.ram.alloc(4096).unwrap();
    p.ram.write(frame, b"kernel data").unwrap();
    // Never enabled, never attached: no STE (C_BAD_STREAMID, not recorded without
    // CR2.RECINVSID) or an aborting one, everything ends silently.
    let unknown = p.device(StreamId(0x50), STALL);
    for pasid in [None, Some(Pasid(0)), Some(Pasid(1))] {
        let r = unknown.dma_read(pasid, frame.raw(), 8);
        assert!(
            matches!(
                r,
                Err(DmaError::Aborted {
                    event: None | Some(EventId::CBadStreamid),
                    ..
                })
            ),
            "{r:?}"
        );
    }
    assert!(matches!(
        unknown.ats(None, frame.raw(), false),
        AtsCompletion::UnsupportedRequest | AtsCompletion::CompleterAbort
    ));
    // SVA enabled, default domain blocked: S1DSS = terminate.
    let sid = StreamId(0x51);
    let ep = sva_device(&p, sid, PRI);
    let mm = p.system.spawn().unwrap();
    buffer(&mm, 4096, 0x33);
    let bond = sva.bind(dev(sid), &mm).unwrap();
    assert_eq!(
        ep.dma_read(Some(bond.pasid), AT.raw(), 2).unwrap(),
        [0x33; 2]
    );
    for addr in [frame.raw(), AT.raw(), frame.raw() + 0x10_0000] {
        assert!(matches!(
            ep.dma_read(None, addr, 8),
            Err(DmaError::Aborted {
                event: Some(EventId::FStreamDisabled),
                ..
            })
        ));
        assert!(ep.dma_write(None, addr, b"x").is_err());
    }
    // SubstreamID 0 is not a PASID: CD 0 is not valid.
    assert!(matches!(
        ep.dma_read(Some(Pasid(0)), AT.raw(), 8),
        Err(DmaError::Aborted { .. })
    ));
    assert_eq!(
        ep.ats(None, frame.raw(), false),
        AtsCompletion::CompleterAbort
    );
    ep.page_request(None, AT.raw(), 3, true, true);
    assert_eq!(wait_response(&ep, 3), PriResponse::Invalid);
    assert_eq!(ram_bytes(&p, frame, 11), b"kernel data");
}

// ---------------------------------------------------------------------------------------
// Fork and exit interleavings

#[test]
fn a_child_forking_and_exiting_leaves_the_parents_pasid_alone() {
    let p = platform_with_irq_thread();
    let sva = p.sva.clone().unwrap();
    let sid = StreamId(0x60);
    let ep = sva_device(&p, sid, STALL);
    let parent = p.system.spawn().unwrap();
    buffer(&parent, 4 * 4096, 0x01);
    parent.write(AT, b"parent").unwrap();
    let bond = sva.bind(dev(sid), &parent).unwrap();
    for round in 0..4u8 {
        let child = p.system.fork(parent.pid()).unwrap();
        assert_eq!(
            sva.pasid_of(child.pid()),
            None,
            "the child inherited the PASID"
        );
        child.write(AT, &[round; 6]).unwrap();
        // The device still sees the parent, and its writes still go to the parent.
        assert_eq!(
            ep.dma_read(Some(bond.pasid), AT.raw(), 6).unwrap(),
            b"parent"
        );
        ep.dma_write(Some(bond.pasid), (AT + 4096).raw(), &[0x40 + round; 8])
            .unwrap();
        let at_fork = if round == 0 { 0x01 } else { 0x40 + round - 1 };
        assert_eq!(
            mm_bytes(&child, AT + 4096, 8),
            [at_fork; 8],
            "the child saw the write"
        );
        p.system.exit(child.pid()).unwrap();
        assert!(sva.pasid_allocated(bond.pasid));
        assert_eq!(sva.pasid_of(parent.pid()), Some(bond.pasid));
        assert_eq!(mm_bytes(&parent, AT + 4096, 8), [0x40 + round; 8]);
    }
    // Bound children get PASIDs of their own, freed when they exit and unbind.
    let child = p.system.fork(parent.pid()).unwrap();
    let cb = sva.bind(dev(sid), &child).unwrap();
    assert_ne!(cb.pasid, bond.pasid);
    p.system.exit(child.pid()).unwrap();
    assert!(ep.dma_read(Some(cb.pasid), AT.raw(), 6).is_err());
    assert_eq!(
        ep.dma_read(Some(bond.pasid), AT.raw(), 6).unwrap(),
        b"parent"
    );
    sva.unbind(cb).unwrap();
    assert!(!sva.pasid_allocated(cb.pasid));
    assert!(sva.pasid_allocated(bond.pasid));
}

#[test]
fn a_parent_exiting_while_its_child_lives_takes_no_shared_frame_with_it() {
    let p = platform_with_irq_thread();
    let sva = p.sva.clone().unwrap();
    let sid = StreamId(0x61);
    let ep = sva_device(&p, sid, STALL);
    let parent = p.system.spawn().unwrap();
    buffer(&parent, 8 * 4096, 0x0f);
    parent.write(AT, b"shared page").unwrap();
    let bond = sva.bind(dev(sid), &parent).unwrap();
    let child = p.system.fork(parent.pid()).unwrap();
    let shared: Vec<Pa> = (0..8).map(|i| frame(&child, AT + i * 4096)).collect();
    assert_eq!(shared[0], frame(&parent, AT), "fork shares the frames");
    p.system.exit(parent.pid()).unwrap();
    // The child still owns every shared frame; the dead PASID reaches none of them.
    for (i, f) in shared.iter().enumerate() {
        assert!(p.ram.refcount(*f).is_ok(), "shared frame {i} freed");
        assert!(
            ep.dma_write(Some(bond.pasid), (AT + i as u64 * 4096).raw(), &[0xee; 32])
                .is_err()
        );
        assert!(
            ep.dma_read(Some(bond.pasid), (AT + i as u64 * 4096).raw(), 32)
                .is_err()
        );
    }
    assert_eq!(mm_bytes(&child, AT, 11), b"shared page");
    assert!(mm_bytes(&child, AT + 4096, 4096).iter().all(|&x| x == 0x0f));
    // Not reused while bound; the child gets a PASID of its own.
    let cb = sva.bind(dev(sid), &child).unwrap();
    assert_ne!(cb.pasid, bond.pasid);
    assert_eq!(
        ep.dma_read(Some(cb.pasid), AT.raw(), 11).unwrap(),
        b"shared page"
    );
    sva.unbind(bond).unwrap();
    assert!(!sva.pasid_allocated(bond.pasid));
    // The child's writes through its own PASID break COW... nothing else shares the frames
    // now, so they stay in place.
    ep.dma_write(Some(cb.pasid), AT.raw(), b"child wrote")
        .unwrap();
    assert_eq!(mm_bytes(&child, AT, 11), b"child wrote");
}

// ---------------------------------------------------------------------------------------
// Privileged, execute and write requests

#[test]
fn privileged_requests_get_no_more_than_user_access() {
    let p = platform_with_irq_thread();
    let sva = p.sva.clone().unwrap();
    let pri_sid = StreamId(0x70);
    let stall_sid = StreamId(0x71);
    let pri = sva_device(&p, pri_sid, PRI);
    let stall = sva_device(&p, stall_sid, STALL);
    let mm = p.system.spawn().unwrap();
    let untouched = mm
        .mmap(None, 4 * 4096, RW, MapFlags::PRIVATE | MapFlags::NOHUGEPAGE)
        .unwrap();
    // A page that was populated, then made PROT_NONE (a guard page with data in it).
    let guard = populated_page(&mm);
    mm.write(guard, b"behind the guard").unwrap();
    mm.mprotect(guard, 4096, Prot::empty()).unwrap();
    let ro = populated_page_with(&mm, Prot::READ);
    let rw = populated_page(&mm);
    let b1 = sva.bind(dev(pri_sid), &mm).unwrap();
    let b2 = sva.bind(dev(stall_sid), &mm).unwrap();

    // A privileged page request is Invalid and maps nothing.
    raw_page_request(&p, pri_sid, Some(b1.pasid), untouched, 1, true, false, true);
    assert_eq!(wait_response(&pri, 1), PriResponse::Invalid);
    assert_eq!(mm.translate(untouched, AccessKind::Read).unwrap(), None);
    // A privileged transaction is translated as an unprivileged one (STE.PRIVCFG): on a
    // stall stream its fault reaches the core as a user access, which gets exactly what
    // the user mapping grants: the untouched page is faulted in for a user write, the
    // PROT_NONE page is refused and the transaction terminated.
    stall
        .transact(Some(b2.pasid), (untouched + 4096).raw(), Bus::Write, true)
        .unwrap();
    assert!(
        mm.translate(untouched + 4096, AccessKind::Write)
            .unwrap()
            .is_some()
    );
    let r = stall.transact(Some(b2.pasid), guard.raw(), Bus::Read, true);
    assert!(matches!(r, Err(DmaError::Terminated { .. })), "{r:?}");

    // Privileged transactions on present pages: nothing beyond the user's rights.
    for (what, va, access) in [
        ("read of a PROT_NONE page", guard, Bus::Read),
        ("write of a PROT_NONE page", guard, Bus::Write),
        ("write of a read-only page", ro, Bus::Write),
        ("fetch from a data page", rw, Bus::Execute),
    ] {
        let r = raw_txn(&p, pri_sid, Some(b1.pasid), va.raw(), access, true);
        assert!(
            matches!(r, Err(Denied::Aborted { .. })),
            "privileged {what}: {r:?}"
        );
    }
    // ATS with the privileged bit gets nothing more either.
    let req = sva_smmuv3::AtsRequest {
        sid: pri_sid,
        ssid: Some(b1.pasid),
        addr: guard.raw(),
        no_write: false,
        exec: false,
        privileged: true,
    };
    assert_eq!(p.smmu.ats_translate(&req), AtsCompletion::NoAccess);
    mm.mprotect(guard, 4096, Prot::READ).unwrap();
    assert_eq!(mm_bytes(&mm, guard, 16), b"behind the guard");
}

#[test]
fn exec_requests_on_data_pages_and_writes_to_read_only_pages_are_refused() {
    let p = platform_with_irq_thread();
    let sva = p.sva.clone().unwrap();
    let pri_sid = StreamId(0x72);
    let stall_sid = StreamId(0x73);
    let pri = sva_device(&p, pri_sid, PRI);
    let stall = sva_device(&p, stall_sid, STALL);
    let mm = p.system.spawn().unwrap();
    let data = mm
        .mmap(None, 4 * 4096, RW, MapFlags::PRIVATE | MapFlags::NOHUGEPAGE)
        .unwrap();
    let ro = mm
        .mmap(
            None,
            2 * 4096,
            Prot::READ,
            MapFlags::PRIVATE | MapFlags::POPULATE,
        )
        .unwrap();
    let ro_frame = frame(&mm, ro);
    let b1 = sva.bind(dev(pri_sid), &mm).unwrap();
    let b2 = sva.bind(dev(stall_sid), &mm).unwrap();
    // Exec page request on a non-exec VMA: Invalid, nothing mapped.
    raw_page_request(&p, pri_sid, Some(b1.pasid), data, 1, false, true, false);
    assert_eq!(wait_response(&pri, 1), PriResponse::Invalid);
    assert_eq!(mm.translate(data, AccessKind::Read).unwrap(), None);
    // Instruction fetch by transaction from a populated data page: permission fault.
    mm.touch(data + 4096, 4096, AccessKind::Write).unwrap();
    assert!(matches!(
        raw_txn(
            &p,
            pri_sid,
            Some(b1.pasid),
            (data + 4096).raw(),
            Bus::Execute,
            false
        ),
        Err(Denied::Aborted {
            event: Some(EventId::FPermission)
        })
    ));
    // Write page request on a read-only VMA: Invalid; the page stays read-only.
    raw_page_request(&p, pri_sid, Some(b1.pasid), ro, 2, true, false, false);
    assert_eq!(wait_response(&pri, 2), PriResponse::Invalid);
    // Write by transaction: PRI stream aborts, stall stream is terminated.
    assert!(matches!(
        raw_txn(&p, pri_sid, Some(b1.pasid), ro.raw(), Bus::Write, false),
        Err(Denied::Aborted {
            event: Some(EventId::FPermission)
        })
    ));
    assert!(matches!(
        stall.dma_write(Some(b2.pasid), ro.raw(), b"overwrite"),
        Err(DmaError::Terminated { .. })
    ));
    // ATS grants read only.
    assert!(matches!(
        pri.ats(Some(b1.pasid), ro.raw(), true),
        AtsCompletion::Success {
            read: true,
            write: false,
            ..
        }
    ));
    assert_eq!(frame(&mm, ro), ro_frame);
    assert!(ram_bytes(&p, ro_frame, 4096).iter().all(|&x| x == 0));
    assert!(mm_bytes(&mm, ro, 4096).iter().all(|&x| x == 0));
}

// ---------------------------------------------------------------------------------------
// Copy-on-write

/// A device write to a page shared copy-on-write with a forked child: the write goes to a
/// new frame of the writer; the shared frame and the other process keep the old data.
fn device_write_breaks_cow(desc: DeviceDesc, sid: StreamId, write_parent: bool) {
    let p = platform_with_irq_thread();
    let sva = p.sva.clone().unwrap();
    let ep = sva_device(&p, sid, desc);
    let parent = p.system.spawn().unwrap();
    buffer(&parent, 2 * 4096, 0x5c);
    parent.write(AT, b"before fork").unwrap();
    let child = p.system.fork(parent.pid()).unwrap();
    let shared = frame(&parent, AT);
    assert_eq!(frame(&child, AT), shared);
    let (writer, other) = if write_parent {
        (&parent, &child)
    } else {
        (&child, &parent)
    };
    let bond = sva.bind(dev(sid), writer).unwrap();
    // Reading does not break COW.
    assert_eq!(
        ep.dma_read(Some(bond.pasid), AT.raw(), 11).unwrap(),
        b"before fork"
    );
    assert_eq!(frame(writer, AT), shared);
    let written = match desc.fault_path {
        FaultPath::Stall => ep.dma_write(Some(bond.pasid), AT.raw(), b"device wrote"),
        FaultPath::Pri => {
            // ATS grants no write on a COW page: ask with PRI, then write.
            let mut res = Err(DmaError::Memory(Pa(0)));
            for g in 0..4u16 {
                match ep.ats(Some(bond.pasid), AT.raw(), true) {
                    AtsCompletion::Success { write: true, .. } => {
                        res = ep.dma_write(Some(bond.pasid), AT.raw(), b"device wrote");
                        break;
                    }
                    AtsCompletion::Success { .. } | AtsCompletion::NoAccess => {
                        ep.page_request(Some(bond.pasid), AT.raw(), g, true, true);
                        assert_eq!(wait_response(&ep, g), PriResponse::Success);
                    }
                    other => panic!("ATS: {other:?}"),
                }
            }
            res
        }
    };
    written.unwrap();
    let new = frame(writer, AT);
    assert_ne!(new, shared, "the device wrote the shared frame");
    assert_eq!(frame(other, AT), shared);
    assert_eq!(mm_bytes(writer, AT, 12), b"device wrote");
    assert_eq!(mm_bytes(other, AT, 11), b"before fork");
    assert_eq!(ram_bytes(&p, shared, 11), b"before fork");
    // The other page of the buffer is still shared.
    assert_eq!(frame(writer, AT + 4096), frame(other, AT + 4096));
}

#[test]
fn a_device_write_breaks_cow_in_the_parent_through_stall() {
    device_write_breaks_cow(STALL, StreamId(0x80), true);
}

#[test]
fn a_device_write_breaks_cow_in_the_child_through_stall() {
    device_write_breaks_cow(STALL, StreamId(0x81), false);
}

#[test]
fn a_device_write_breaks_cow_in_the_parent_through_pri() {
    device_write_breaks_cow(PRI, StreamId(0x82), true);
}

#[test]
fn a_device_write_breaks_cow_in_the_child_through_pri() {
    device_write_breaks_cow(PRI, StreamId(0x83), false);
}

#[test]
fn a_function_dma_to_a_cow_page_breaks_cow() {
    let p = platform_with_irq_thread();
    let sva = p.sva.clone().unwrap();
    let f = p
        .sva_function(StreamId(0x84), Capabilities::default())
        .unwrap();
    let parent = p.system.spawn().unwrap();
    buffer(&parent, 4 * 4096, 0x21);
    let bond = sva.bind(dev(StreamId(0x84)), &parent).unwrap();
    // The function caches the read-only translation in its ATC first.
    let mut b = [0u8; 8];
    f.read(DmaCtx::pasid(bond.pasid), AT.raw(), &mut b).unwrap();
    let child = p.system.fork(parent.pid()).unwrap();
    let shared: Vec<Pa> = (0..4).map(|i| frame(&child, AT + i * 4096)).collect();
    f.write(DmaCtx::pasid(bond.pasid), AT.raw() + 100, &[0x99; 3 * 4096])
        .unwrap();
    for i in 0..4u64 {
        assert_eq!(frame(&child, AT + i * 4096), shared[i as usize]);
        assert!(
            ram_bytes(&p, shared[i as usize], 4096)
                .iter()
                .all(|&x| x == 0x21)
        );
    }
    assert!(mm_bytes(&child, AT, 4 * 4096).iter().all(|&x| x == 0x21));
    let mine = mm_bytes(&parent, AT, 4 * 4096);
    assert!(mine[100..100 + 3 * 4096].iter().all(|&x| x == 0x99));
    assert_ne!(frame(&parent, AT), shared[0]);
}
