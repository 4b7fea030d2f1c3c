//! The SMMU walks the very tables a CPU address space uses: a context descriptor pointing
//! at a process's table root with its ASID, programmed by the driver through MMIO only.
//! These are the data paths of ARCHITECTURE.md (DMA, invalidation, I/O page faults) below
//! the SVA core, which will automate what the tests do by hand here.

mod common;

use common::{RW, btm_config};
use std::sync::Arc;
use sva_addr::{Pasid, StreamId, Va};
use sva_mm::{AccessKind, MapFlags, Mm, Prot};
use sva_platform::{DmaError, Message, Platform, PlatformConfig, TestEndpoint};
use sva_smmuv3::EventId;
use sva_smmuv3_driver::{CdConfig, CdTableConfig, S1dss, StreamConfig};
use sva_smmuv3_spec::pri::PriResponse;

const SID: StreamId = StreamId(0x10);
const PASID: Pasid = Pasid(1);

fn platform(btm: bool) -> Platform {
    Platform::new(PlatformConfig {
        // Faults are handled by hand here; the SVA core's tests are in sva_core.rs.
        sva: false,
        ..btm_config(btm)
    })
    .unwrap()
}

/// Binds `mm` to the stream at PASID 1 by hand: the CD shares the mm's tables and ASID.
fn bind(p: &Platform, mm: &Mm, stall: bool) {
    p.driver
        .attach(
            SID,
            StreamConfig::S1 {
                cd_table: CdTableConfig::linear(8),
                s1dss: S1dss::Terminate,
                stall_disable: !stall,
                ats: true,
            },
        )
        .unwrap();
    let cfg = mm.table_config();
    let mut cd = CdConfig::new(mm.table_root(), mm.asid());
    cd.t0sz = cfg.t0sz();
    cd.mair = sva_mm::MAIR;
    cd.ha = true;
    cd.hd = true;
    cd.stall = stall;
    p.driver.set_cd(SID, PASID, &cd).unwrap();
}

/// A new process with `len` bytes mapped at `flags` with `prot`, bound to the stream by
/// hand; returns it, the mapping and the stream's endpoint.
fn bound_process(
    p: &Platform,
    len: u64,
    prot: Prot,
    flags: MapFlags,
    stall: bool,
) -> (Arc<Mm>, Va, Arc<TestEndpoint>) {
    let mm = p.system.spawn().unwrap();
    let va = mm.mmap(None, len, prot, flags).unwrap();
    bind(p, &mm, stall);
    (mm, va, p.endpoint(SID))
}

#[test]
fn device_and_cpu_see_the_same_memory() {
    let p = platform(true);
    let (mm, va, ep) = bound_process(
        &p,
        4 * 4096,
        RW,
        MapFlags::PRIVATE | MapFlags::POPULATE,
        false,
    );
    mm.write(va + 4090, b"written by the CPU").unwrap();
    let got = ep.dma_read(Some(PASID), (va + 4090).raw(), 18).unwrap();
    assert_eq!(&got, b"written by the CPU");
    ep.dma_write(Some(PASID), (va + 3 * 4096).raw(), b"by the device")
        .unwrap();
    let mut b = [0u8; 13];
    mm.read(va + 3 * 4096, &mut b).unwrap();
    assert_eq!(&b, b"by the device");
    // No PASID: the STE terminates substream-less traffic (S1DSS = terminate).
    assert!(matches!(
        ep.dma_read(None, va.raw(), 1),
        Err(DmaError::Aborted { .. })
    ));
    // Another process's PASID is not bound.
    assert!(ep.dma_read(Some(Pasid(2)), va.raw(), 1).is_err());
}

#[test]
fn munmap_reaches_the_iotlb_through_btm() {
    let p = platform(true);
    let (mm, va, ep) = bound_process(&p, 4096, RW, MapFlags::PRIVATE | MapFlags::POPULATE, false);
    ep.dma_read(Some(PASID), va.raw(), 8).unwrap(); // fills the IOTLB
    mm.munmap(va, 4096).unwrap();
    // The CPU's broadcast TLBI invalidated the SMMU's entry: no stale access to a freed frame.
    let e = ep.dma_read(Some(PASID), va.raw(), 8).unwrap_err();
    assert!(
        matches!(
            e,
            DmaError::Aborted {
                event: Some(EventId::FTranslation),
                ..
            }
        ),
        "{e}"
    );
    p.deliver_irqs();
    let events = p.driver.drain_events();
    assert!(
        events
            .iter()
            .any(|e| e.id == EventId::FTranslation && e.input_addr == va),
        "{events:?}"
    );
}

#[test]
fn without_btm_the_iotlb_is_stale_until_the_driver_invalidates() {
    let p = platform(false);
    let (mm, va, ep) = bound_process(&p, 4096, RW, MapFlags::PRIVATE | MapFlags::POPULATE, false);
    let before = ep
        .transact(Some(PASID), va.raw(), sva_vmsa::AccessKind::Read, false)
        .unwrap();
    mm.munmap(va, 4096).unwrap();
    // As on hardware: the IOTLB still holds the old translation.
    let stale = ep
        .transact(Some(PASID), va.raw(), sva_vmsa::AccessKind::Read, false)
        .unwrap();
    assert_eq!(stale, before, "the IOTLB did not cache the translation");
    p.driver.tlbi_va(mm.asid(), va, 4096, true).unwrap();
    assert!(
        ep.transact(Some(PASID), va.raw(), sva_vmsa::AccessKind::Read, false)
            .is_err()
    );
}

#[test]
fn device_accesses_set_the_access_flag_in_the_cpu_tables() {
    let p = platform(true);
    let (mm, va, ep) = bound_process(
        &p,
        2 * 4096,
        RW,
        MapFlags::PRIVATE | MapFlags::POPULATE | MapFlags::NOHUGEPAGE,
        false,
    );
    assert_eq!(mm.clear_young(va, 2 * 4096).unwrap(), 2);
    // Only the device touches page 1; the SMMU's HTTU sets AF in the shared descriptor.
    ep.dma_read(Some(PASID), (va + 4096).raw(), 4).unwrap();
    let leaf = mm.table().lookup(&*p.ram, va + 4096).unwrap().unwrap();
    assert!(leaf.desc.af(), "the SMMU did not set the access flag");
    assert_eq!(mm.clear_young(va, 2 * 4096).unwrap(), 1);
}

#[test]
fn page_request_is_served_by_the_cpu_fault_handler() {
    let p = platform(true);
    let (mm, va, ep) = bound_process(&p, 4096, RW, MapFlags::PRIVATE, false);
    // Nothing mapped yet: ATS says "no access", so the device asks with PRI.
    assert!(matches!(
        ep.ats(Some(PASID), va.raw(), true),
        sva_smmuv3::AtsCompletion::NoAccess
    ));
    ep.page_request(Some(PASID), va.raw(), 5, true, true);
    p.deliver_irqs();
    let prs = p.driver.drain_page_requests();
    assert_eq!(prs.len(), 1);
    let pr = prs[0];
    assert_eq!(
        (pr.stream_id, pr.substream_id, pr.prg_index, pr.last),
        (SID, Some(PASID), 5, true)
    );
    mm.handle_fault(pr.addr, AccessKind::Write).unwrap();
    p.driver
        .pri_response(SID, pr.substream_id, pr.prg_index, PriResponse::Success)
        .unwrap();
    assert_eq!(
        ep.take_messages(),
        [Message::PriResponse {
            ssid: Some(PASID),
            prg_index: 5,
            response: PriResponse::Success
        }]
    );
    match ep.ats(Some(PASID), va.raw(), true) {
        sva_smmuv3::AtsCompletion::Success { write, .. } => assert!(write),
        other => panic!("ATS after the fault: {other:?}"),
    }
    ep.dma_write(Some(PASID), va.raw(), b"after PRI").unwrap();
    let mut b = [0u8; 9];
    mm.read(va, &mut b).unwrap();
    assert_eq!(&b, b"after PRI");
}

#[test]
fn stalled_transaction_resumes_after_the_fault_is_fixed() {
    let p = Arc::new(platform(true));
    let (mm, va, ep) = bound_process(&p, 4096, RW, MapFlags::PRIVATE, true);
    let dev = {
        let ep = ep.clone();
        std::thread::spawn(move || ep.dma_write(Some(PASID), va.raw(), b"stalled"))
    };
    // Wait for the stall event, fix the fault, resume.
    let stall = (0..500)
        .find_map(|_| {
            p.deliver_irqs();
            let ev = p.driver.drain_events().into_iter().find(|e| e.stall);
            if ev.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            ev
        })
        .expect("no stall event");
    assert_eq!(stall.input_addr, va);
    mm.handle_fault(stall.input_addr, AccessKind::Write)
        .unwrap();
    p.driver.resume(SID, stall.stag, true).unwrap();
    dev.join().unwrap().unwrap();
    let mut b = [0u8; 7];
    mm.read(va, &mut b).unwrap();
    assert_eq!(&b, b"stalled");
}

#[test]
fn stall_term_aborts_the_stalled_transaction() {
    let p = Arc::new(platform(true));
    let (_mm, va, ep) = bound_process(&p, 4096, Prot::READ, MapFlags::PRIVATE, true);
    let dev = {
        let ep = ep.clone();
        std::thread::spawn(move || ep.dma_read(Some(PASID), va.raw(), 4))
    };
    let mut got = false;
    for _ in 0..500 {
        p.deliver_irqs();
        if p.driver.drain_events().iter().any(|e| e.stall) {
            got = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(got, "no stall event");
    p.driver.stall_term(SID).unwrap();
    assert!(matches!(
        dev.join().unwrap(),
        Err(DmaError::Terminated { .. })
    ));
}
