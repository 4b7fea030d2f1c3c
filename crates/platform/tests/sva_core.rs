//! The SVA core on the SMMUv3 driver and model: bind/unbind and PASIDs, DMA on process
//! addresses, I/O page faults through PRI and stall served by the process's fault handler,
//! invalidation through the notifier (with and without BTM, with ATC), and exit.

mod common;

use common::{
    IOPF, PRI, RW, STALL, bind_each, dev, platform_with_btm, populated_page, populated_page_with,
    raw_pasids, sva_device,
};
use std::sync::{Arc, Mutex};
use sva_addr::{Pasid, StreamId, Va};
use sva_iommu::{Bond, DeviceId, Error, SvaFeatures};
use sva_mm::{MapFlags, MmConfig, Prot};
use sva_platform::{DmaError, Message, Platform, PlatformConfig};
use sva_smmuv3::SmmuConfig;

const PRI_DEV: StreamId = StreamId(0x100);
const STALL_DEV: StreamId = StreamId(0x200);

/// Retries a PRI device's DMA the way a PCIe function does: ATS first; on "no access" a
/// page request, wait for the response, then retry.
fn pri_dma_write(
    ep: &sva_platform::TestEndpoint,
    pasid: Pasid,
    va: Va,
    data: &[u8],
) -> Result<(), String> {
    for group in 0..4u16 {
        match ep.ats(Some(pasid), va.raw(), true) {
            sva_smmuv3::AtsCompletion::Success { write: true, .. } => {
                return ep
                    .dma_write(Some(pasid), va.raw(), data)
                    .map_err(|e| e.to_string());
            }
            sva_smmuv3::AtsCompletion::Success { .. } | sva_smmuv3::AtsCompletion::NoAccess => {
                ep.page_request(Some(pasid), va.raw(), group, true, true);
                let resp = wait_response(ep, group);
                if resp != sva_smmuv3::PriResponse::Success {
                    return Err(format!("page request answered {resp:?}"));
                }
            }
            other => return Err(format!("ATS: {other:?}")),
        }
    }
    Err("no progress".into())
}

fn wait_response(ep: &sva_platform::TestEndpoint, group: u16) -> sva_smmuv3::PriResponse {
    let mut seen = Vec::new();
    for _ in 0..2000 {
        for m in ep.take_messages() {
            match m {
                Message::PriResponse {
                    prg_index,
                    response,
                    ..
                } if prg_index == group => return response,
                other => seen.push(other),
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("no response to group {group}; saw {seen:?}");
}

#[test]
fn one_pasid_per_address_space_and_refcounted_bonds() {
    let p = platform_with_btm(true);
    let sva = p.sva.clone().unwrap();
    let _a = sva_device(&p, PRI_DEV, PRI);
    let _b = sva_device(&p, STALL_DEV, STALL);
    let mm = p.system.spawn().unwrap();
    let other = p.system.spawn().unwrap();
    let b1 = sva.bind(dev(PRI_DEV), &mm).unwrap();
    let b2 = sva.bind(dev(STALL_DEV), &mm).unwrap();
    assert_eq!(b1.pasid, b2.pasid, "one mm, one PASID on every device");
    assert_eq!(b1.pasid, Pasid(1), "SSID 0 is not a PASID on SMMUv3");
    let again = sva.bind(dev(PRI_DEV), &mm).unwrap();
    assert_eq!(again, b1);
    let o = sva.bind(dev(PRI_DEV), &other).unwrap();
    assert_ne!(o.pasid, b1.pasid);
    // Two references on (PRI_DEV, mm): the first unbind keeps the context.
    sva.unbind(again).unwrap();
    assert!(sva.pasid_allocated(b1.pasid));
    sva.unbind(b1).unwrap();
    assert!(
        sva.pasid_allocated(b1.pasid),
        "still bound to the stall device"
    );
    assert!(matches!(
        sva.disable_device(dev(STALL_DEV)),
        Err(Error::DeviceBusy(_))
    ));
    sva.unbind(b2).unwrap();
    assert!(!sva.pasid_allocated(b1.pasid));
    assert!(matches!(sva.unbind(b2), Err(Error::NotBound(_))));
    sva.disable_device(dev(STALL_DEV)).unwrap();
    sva.unbind(o).unwrap();
}

#[test]
fn enablement_and_bind_errors_are_specific() {
    let p = Platform::new(PlatformConfig {
        smmu: SmmuConfig {
            pri: false,
            ..SmmuConfig::default()
        },
        ..PlatformConfig::default()
    })
    .unwrap();
    let sva = p.sva.clone().unwrap();
    let mm = p.system.spawn().unwrap();
    let _d = p.device(PRI_DEV, PRI);
    assert!(matches!(
        sva.bind(dev(PRI_DEV), &mm),
        Err(Error::NotEnabled(_))
    ));
    assert!(matches!(
        sva.enable_device(dev(PRI_DEV), IOPF),
        Err(Error::FeatureMissing { .. })
    ));
    assert!(matches!(
        sva.enable_device(DeviceId(0x999), SvaFeatures::default()),
        Err(Error::Driver(_))
    ));
    // Without I/O page faults the device may still bind (pinned or pre-faulted memory).
    sva.enable_device(
        dev(PRI_DEV),
        SvaFeatures {
            iopf: false,
            max_pasid: Some(Pasid(3)),
        },
    )
    .unwrap();
    assert!(matches!(
        sva.enable_device(dev(PRI_DEV), SvaFeatures::default()),
        Err(Error::AlreadyEnabled(_))
    ));
    // Three address spaces take PASIDs 1..3; a fourth is above this device's maximum.
    let mms: Vec<_> = (0..3).map(|_| p.system.spawn().unwrap()).collect();
    let bonds = bind_each(&sva, PRI_DEV, &mms);
    assert_eq!(raw_pasids(&bonds), [1, 2, 3]);
    assert!(matches!(
        sva.bind(dev(PRI_DEV), &mm),
        Err(Error::PasidsExhausted { .. })
    ));
    // An mm already holding a PASID above a narrow device's max is refused (EOVERFLOW).
    let _s = p.device(STALL_DEV, STALL);
    sva.enable_device(
        dev(STALL_DEV),
        SvaFeatures {
            iopf: true,
            max_pasid: Some(Pasid(2)),
        },
    )
    .unwrap();
    assert!(matches!(
        sva.bind(dev(STALL_DEV), &mms[2]),
        Err(Error::PasidAboveDeviceMax {
            pasid: Pasid(3),
            max: Pasid(2)
        })
    ));
    // Exited processes cannot be bound.
    let gone = p.system.spawn().unwrap();
    p.system.exit(gone.pid()).unwrap();
    assert!(matches!(
        sva.bind(dev(STALL_DEV), &gone),
        Err(Error::Exited(_))
    ));
}

#[test]
fn incompatible_address_space_is_refused() {
    let p = Platform::new(PlatformConfig {
        mm: MmConfig {
            granule: sva_vmsa::Granule::Size16K,
            ia_bits: 47,
            ..MmConfig::default()
        },
        smmu: SmmuConfig {
            granules: sva_smmuv3::Granules {
                g4k: true,
                g16k: false,
                g64k: true,
            },
            ..SmmuConfig::default()
        },
        ..PlatformConfig::default()
    })
    .unwrap();
    let sva = p.sva.clone().unwrap();
    let _d = sva_device(&p, STALL_DEV, STALL);
    let mm = p.system.spawn().unwrap();
    assert!(matches!(
        sva.bind(dev(STALL_DEV), &mm),
        Err(Error::IncompatibleAddressSpace {
            granule: 16384,
            ia_bits: 47
        })
    ));
}

#[test]
fn untouched_buffers_fault_in_through_pri_and_stall() {
    let p = platform_with_btm(true);
    let sva = p.sva.clone().unwrap();
    let pri = sva_device(&p, PRI_DEV, PRI);
    let stall = sva_device(&p, STALL_DEV, STALL);
    let mm = p.system.spawn().unwrap();
    let buf = mm
        .mmap(None, 64 << 10, RW, MapFlags::PRIVATE | MapFlags::NOHUGEPAGE)
        .unwrap();
    let b1 = sva.bind(dev(PRI_DEV), &mm).unwrap();
    let b2 = sva.bind(dev(STALL_DEV), &mm).unwrap();
    pri_dma_write(&pri, b1.pasid, buf, b"via PRI").unwrap();
    stall
        .dma_write(Some(b2.pasid), (buf + 0x8000).raw(), b"via stall")
        .unwrap();
    let mut b = [0u8; 9];
    mm.read(buf, &mut b[..7]).unwrap();
    assert_eq!(&b[..7], b"via PRI");
    mm.read(buf + 0x8000, &mut b).unwrap();
    assert_eq!(&b, b"via stall");
    let s = sva.iopf_stats();
    assert!(s.success >= 2 && s.invalid == 0, "{s:?}");
    // A write to a read-only mapping is refused: Invalid for PRI, abort for the stall.
    let ro = populated_page_with(&mm, Prot::READ);
    assert!(
        pri_dma_write(&pri, b1.pasid, ro, b"x")
            .unwrap_err()
            .contains("Invalid")
    );
    assert!(matches!(
        stall.dma_write(Some(b2.pasid), ro.raw(), b"x"),
        Err(DmaError::Terminated { .. })
    ));
    let mut r = [1u8];
    mm.read(ro, &mut r).unwrap();
    assert_eq!(r, [0], "a refused write reached memory");
}

#[test]
fn cpu_unmap_invalidates_iotlb_and_atc_without_btm() {
    let p = platform_with_btm(false);
    let sva = p.sva.clone().unwrap();
    let ep = sva_device(&p, PRI_DEV, PRI);
    let mm = p.system.spawn().unwrap();
    let va = populated_page(&mm);
    let bond = sva.bind(dev(PRI_DEV), &mm).unwrap();
    ep.dma_read(Some(bond.pasid), va.raw(), 4).unwrap(); // IOTLB filled
    let _ = ep.take_messages();
    mm.munmap(va, 4096).unwrap();
    // The notifier made the driver invalidate the IOTLB (no BTM) and the device's ATC.
    assert!(matches!(
        ep.dma_read(Some(bond.pasid), va.raw(), 4),
        Err(DmaError::Aborted { .. })
    ));
    let msgs = ep.take_messages();
    assert!(
        msgs.iter().any(
            |m| matches!(m, Message::AtcInvalidate { ssid: Some(s), addr, size }
            if *s == bond.pasid && *addr <= va.raw() && addr + size >= va.raw() + 4096)
        ),
        "{msgs:?}"
    );
    assert!(p.driver.stats().commands.keys().any(
        |op| format!("{op:?}").contains("TlbiNhVa") || format!("{op:?}").contains("TlbiNhAsid")
    ));
}

#[test]
fn exit_quiets_the_context_and_the_pasid_waits_for_unbind() {
    let p = platform_with_btm(true);
    let sva = p.sva.clone().unwrap();
    let ep = sva_device(&p, STALL_DEV, STALL);
    let exited: Arc<Mutex<Vec<(DeviceId, Pasid)>>> = Arc::default();
    let log = exited.clone();
    sva.set_exit_handler(
        dev(STALL_DEV),
        Arc::new(move |d, pasid| log.lock().unwrap().push((d, pasid))),
    );
    let mm = p.system.spawn().unwrap();
    let va = populated_page(&mm);
    let bond = sva.bind(dev(STALL_DEV), &mm).unwrap();
    ep.dma_read(Some(bond.pasid), va.raw(), 4).unwrap();
    p.system.exit(mm.pid()).unwrap();
    assert_eq!(*exited.lock().unwrap(), [(dev(STALL_DEV), bond.pasid)]);
    // The context is quiet: DMA is aborted, nothing stalls, memory is not reachable.
    assert!(matches!(
        ep.dma_read(Some(bond.pasid), va.raw(), 4),
        Err(DmaError::Aborted { .. })
    ));
    // The PASID is not reused while the bond exists.
    let next = p.system.spawn().unwrap();
    let b2 = sva.bind(dev(STALL_DEV), &next).unwrap();
    assert_ne!(b2.pasid, bond.pasid);
    sva.unbind(bond).unwrap();
    assert!(!sva.pasid_allocated(bond.pasid));
    let third = p.system.spawn().unwrap();
    assert_eq!(
        sva.bind(dev(STALL_DEV), &third).unwrap().pasid,
        bond.pasid,
        "freed PASID is reused"
    );
}

#[test]
fn munmap_while_bound_leaves_nothing_stale_and_the_frame_is_reused() {
    let p = platform_with_btm(true);
    let sva = p.sva.clone().unwrap();
    let ep = sva_device(&p, PRI_DEV, PRI);
    let mm = p.system.spawn().unwrap();
    let va = populated_page(&mm);
    mm.write(va, b"old data").unwrap();
    let bond = sva.bind(dev(PRI_DEV), &mm).unwrap();
    let old = ep
        .transact(
            Some(bond.pasid),
            va.raw(),
            sva_vmsa::AccessKind::Read,
            false,
        )
        .unwrap();
    assert!(matches!(
        ep.ats(Some(bond.pasid), va.raw(), false),
        sva_smmuv3::AtsCompletion::Success { .. }
    ));
    let _ = ep.take_messages();
    mm.munmap(va, 4096).unwrap();
    // The device was told to drop its ATC entry, and the SMMU no longer translates.
    assert!(
        ep.take_messages()
            .iter()
            .any(|m| matches!(m, Message::AtcInvalidate { .. }))
    );
    assert!(matches!(
        ep.ats(Some(bond.pasid), va.raw(), false),
        sva_smmuv3::AtsCompletion::NoAccess
    ));
    assert!(ep.dma_read(Some(bond.pasid), va.raw(), 8).is_err());
    // The frame is free for the next owner, and the device cannot reach it once reused.
    let frame = old.align_down(4096);
    assert!(
        p.ram.refcount(frame).is_err(),
        "the unmapped frame was not freed"
    );
    let other = p.system.spawn().unwrap();
    let o = other
        .mmap(
            None,
            64 * 4096,
            RW,
            MapFlags::PRIVATE | MapFlags::NOHUGEPAGE,
        )
        .unwrap();
    other.fill(o, 0x77, 64 * 4096).unwrap();
    assert!(p.ram.refcount(frame).is_ok(), "the frame was not reused");
    assert!(ep.dma_read(Some(bond.pasid), va.raw(), 9).is_err());
}

#[test]
fn exit_with_dma_in_flight_neither_hangs_nor_touches_freed_frames() {
    let p = Arc::new(platform_with_btm(true));
    let sva = p.sva.clone().unwrap();
    let ep = sva_device(&p, STALL_DEV, STALL);
    let mm = p.system.spawn().unwrap();
    let len = 256 * 4096;
    let va = mm
        .mmap(None, len, RW, MapFlags::PRIVATE | MapFlags::NOHUGEPAGE)
        .unwrap();
    let bond = sva.bind(dev(STALL_DEV), &mm).unwrap();
    let before = p.ram.stats().used_frames;
    let dma = {
        let ep = ep.clone();
        std::thread::spawn(move || {
            // Every page faults (stall) until the process is gone.
            (0..256u64)
                .map(|i| ep.dma_write(Some(bond.pasid), va.raw() + i * 4096, &[0xee; 64]))
                .collect::<Vec<_>>()
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(5));
    p.system.exit(mm.pid()).unwrap();
    let results = dma.join().unwrap();
    let done = results.iter().take_while(|r| r.is_ok()).count();
    assert!(
        results[done..].iter().all(Result::is_err),
        "DMA succeeded after exit"
    );
    assert!(done < 256, "the exit did not stop the device");
    // Everything the process had is free again (its tables and every faulted page).
    assert!(p.ram.stats().used_frames < before, "frames leaked");
    sva.unbind(bond).unwrap();
    assert!(!sva.pasid_allocated(bond.pasid));
}

#[test]
fn unbind_answers_complete_groups_and_drops_partial_ones() {
    let p = platform_with_btm(true);
    let sva = p.sva.clone().unwrap();
    let ep = sva_device(&p, PRI_DEV, PRI);
    let mm = p.system.spawn().unwrap();
    let va = mm
        .mmap(
            None,
            16 * 4096,
            RW,
            MapFlags::PRIVATE | MapFlags::NOHUGEPAGE,
        )
        .unwrap();
    let bond = sva.bind(dev(PRI_DEV), &mm).unwrap();
    // A group whose LAST never comes (the device stopped), then complete groups.
    ep.page_request(Some(bond.pasid), va.raw(), 100, false, true);
    for g in 0..8u16 {
        ep.page_request(
            Some(bond.pasid),
            va.raw() + u64::from(g + 1) * 4096,
            g,
            true,
            true,
        );
    }
    // Give the interrupt thread the PRI queue, then unbind: it drains first.
    let mut seen = Vec::new();
    for _ in 0..1000 {
        seen.extend(ep.take_messages());
        if seen.len() >= 8 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    sva.unbind(bond).unwrap();
    seen.extend(ep.take_messages());
    let answered: Vec<u16> = seen
        .iter()
        .filter_map(|m| match m {
            Message::PriResponse { prg_index, .. } => Some(*prg_index),
            _ => None,
        })
        .collect();
    assert_eq!(answered, (0..8).collect::<Vec<_>>(), "{seen:?}");
    assert!(!sva.pasid_allocated(bond.pasid));
}

#[test]
fn a_forked_child_is_not_bound() {
    let p = platform_with_btm(true);
    let sva = p.sva.clone().unwrap();
    let ep = sva_device(&p, STALL_DEV, STALL);
    let parent = p.system.spawn().unwrap();
    let va = populated_page(&parent);
    parent.write(va, b"parent").unwrap();
    let bond = sva.bind(dev(STALL_DEV), &parent).unwrap();
    let child = p.system.fork(parent.pid()).unwrap();
    assert_eq!(
        sva.pasid_of(child.pid()),
        None,
        "the child inherited a PASID"
    );
    // A handle forged for the child is not a bond.
    let forged = Bond {
        pid: child.pid(),
        ..bond
    };
    assert!(matches!(sva.unbind(forged), Err(Error::NotBound(_))));
    assert!(
        sva.pasid_allocated(bond.pasid),
        "a forged bond unbound the parent"
    );
    // The child's writes break COW and never reach what the device sees under the PASID.
    child.write(va, b"child!").unwrap();
    assert_eq!(
        ep.dma_read(Some(bond.pasid), va.raw(), 6).unwrap(),
        b"parent"
    );
    let child_bond = sva.bind(dev(STALL_DEV), &child).unwrap();
    assert_ne!(child_bond.pasid, bond.pasid);
    assert_eq!(
        ep.dma_read(Some(child_bond.pasid), va.raw(), 6).unwrap(),
        b"child!"
    );
}

#[test]
fn the_core_counts_binds_unbinds_and_pasids() {
    let p = platform_with_btm(false);
    let sva = p.sva.clone().unwrap();
    sva_device(&p, PRI_DEV, PRI);
    let a = p.system.spawn().unwrap();
    let b = p.system.spawn().unwrap();
    let ba = sva.bind(dev(PRI_DEV), &a).unwrap();
    let again = sva.bind(dev(PRI_DEV), &a).unwrap();
    let bb = sva.bind(dev(PRI_DEV), &b).unwrap();
    let s = sva.stats();
    assert_eq!(
        (s.binds, s.unbinds, s.pasids_allocated, s.pasids_in_use),
        (3, 0, 2, 2)
    );
    for bond in [ba, again, bb] {
        sva.unbind(bond).unwrap();
    }
    assert!(sva.unbind(bb).is_err(), "a failed unbind is not counted");
    let s = sva.stats();
    assert_eq!(
        (s.binds, s.unbinds, s.pasids_allocated, s.pasids_in_use),
        (3, 3, 2, 0)
    );
}
