//! Domains for DMA without PASID on the SMMUv3 model: blocked by default, identity, and DMA
//! domains with a private I/O page table; alongside SVA on the same device.

mod common;

use common::{IOPF, PRI, RW, platform_with_irq_thread, populated_page};
use std::sync::Arc;
use sva_addr::{Iova, Pa, StreamId};
use sva_iommu::{DeviceId, DmaDomain, Domain, Error, IOVA_BASE, Sva, SvaFeatures};
use sva_mm::{MapFlags, Prot};
use sva_physmem::PhysMemory;
use sva_platform::{DmaError, Message, Platform, TestEndpoint};
use sva_smmuv3_driver::{DeviceDesc, FaultPath};

const SID: StreamId = StreamId(0x42);
const DEV: DeviceId = DeviceId(0x42);
const DESC: DeviceDesc = DeviceDesc {
    fault_path: FaultPath::Stall,
    ats: true,
};
/// A PRI device without ATS, for the private-table tests.
const PRI_NO_ATS: DeviceDesc = DeviceDesc {
    fault_path: FaultPath::Pri,
    ats: false,
};
/// SVA without I/O page faults: private tables of pinned pages.
const NO_IOPF: SvaFeatures = SvaFeatures {
    iopf: false,
    max_pasid: None,
};

/// The SVA core, the device at [`SID`] and a new DMA domain it is attached to.
fn device_in_dma_domain(p: &Platform) -> (Arc<Sva>, Arc<TestEndpoint>, Arc<DmaDomain>) {
    let sva = p.sva.clone().unwrap();
    let ep = p.device(SID, DESC);
    let dom = sva.dma_domain().unwrap();
    sva.attach_domain(DEV, Domain::Dma(dom.clone())).unwrap();
    (sva, ep, dom)
}

#[test]
fn blocked_by_default_identity_on_request() {
    let p = platform_with_irq_thread();
    let sva = p.sva.clone().unwrap();
    let ep = p.device(SID, DESC);
    let frame = p.ram.alloc(4096).unwrap();
    p.ram.write(frame, b"physical").unwrap();
    // Unknown to the core: blocked.
    assert!(matches!(sva.domain_of(DEV), Domain::Blocked));
    sva.attach_domain(DEV, Domain::Blocked).unwrap();
    assert!(matches!(
        ep.dma_read(None, frame.raw(), 8),
        Err(DmaError::Aborted { .. })
    ));
    sva.attach_domain(DEV, Domain::Identity).unwrap();
    assert_eq!(ep.dma_read(None, frame.raw(), 8).unwrap(), b"physical");
}

#[test]
fn dma_domain_maps_iovas_to_memory_and_unmap_is_immediate() {
    let p = platform_with_irq_thread();
    let (_sva, ep, dom) = device_in_dma_domain(&p);
    let buf = p.ram.alloc(16 << 10).unwrap();
    p.ram.write(buf + 4096, b"through the IOVA").unwrap();
    let iova = dom.map(buf, 16 << 10, RW).unwrap();
    assert!(iova.raw() >= IOVA_BASE);
    assert_eq!(dom.translate(iova + 4096), Some(buf + 4096));
    assert_eq!(
        ep.dma_read(None, (iova + 4096).raw(), 16).unwrap(),
        b"through the IOVA"
    );
    ep.dma_write(None, (iova + 8192).raw(), b"device").unwrap();
    let mut b = [0u8; 6];
    p.ram.read(buf + 8192, &mut b).unwrap();
    assert_eq!(&b, b"device");
    // Read-only mapping: the device may read, not write.
    let ro = p.ram.alloc(4096).unwrap();
    let ro_iova = dom.map(ro, 4096, Prot::READ).unwrap();
    ep.dma_read(None, ro_iova.raw(), 4).unwrap();
    assert!(ep.dma_write(None, ro_iova.raw(), b"no").is_err());
    // Unmap: the device's next access faults (IOTLB and ATC were invalidated first).
    ep.take_messages();
    assert_eq!(dom.unmap(iova).unwrap(), 16 << 10);
    assert!(ep.dma_read(None, (iova + 4096).raw(), 4).is_err());
    assert!(
        ep.take_messages()
            .iter()
            .any(|m| matches!(m, Message::AtcInvalidate { ssid: None, .. }))
    );
    // Bad requests.
    assert!(matches!(
        dom.map(Pa(0x1001), 4096, RW),
        Err(Error::BadMapping { .. })
    ));
    assert!(matches!(dom.map(buf, 0, RW), Err(Error::BadMapping { .. })));
    assert!(matches!(
        dom.map_at(ro_iova, buf, 4096, RW),
        Err(Error::IovaBusy { .. })
    ));
    assert!(matches!(
        dom.map_at(Iova(0), buf, 4096, RW),
        Err(Error::IovaBusy { .. })
    ));
    assert!(matches!(dom.unmap(iova), Err(Error::NotMapped(_))));
    p.ram.write(buf, b"head").unwrap();
    let fixed = dom.map_at(Iova(0x8000_0000), buf, 4096, RW).unwrap();
    assert_eq!(ep.dma_read(None, fixed.raw(), 4).unwrap(), b"head");
}

#[test]
fn sva_and_a_dma_domain_share_a_device() {
    let p = platform_with_irq_thread();
    let (sva, ep, dom) = device_in_dma_domain(&p);
    let buf = p.ram.alloc(4096).unwrap();
    p.ram.write(buf, b"kernel buffer").unwrap();
    let iova = dom.map(buf, 4096, RW).unwrap();
    sva.enable_device(DEV, IOPF).unwrap();
    let mm = p.system.spawn().unwrap();
    let va = populated_page(&mm);
    mm.write(va, b"user buffer").unwrap();
    let bond = sva.bind(DEV, &mm).unwrap();
    assert_ne!(
        dom.asid(),
        mm.asid(),
        "a domain ASID clashes with a process ASID"
    );
    // DMA without PASID goes through the domain, with the PASID through the process.
    assert_eq!(ep.dma_read(None, iova.raw(), 13).unwrap(), b"kernel buffer");
    assert_eq!(
        ep.dma_read(Some(bond.pasid), va.raw(), 11).unwrap(),
        b"user buffer"
    );
    sva.unbind(bond).unwrap();
    sva.disable_device(DEV).unwrap();
    // Disabling SVA kept the domain.
    assert_eq!(ep.dma_read(None, iova.raw(), 13).unwrap(), b"kernel buffer");
    assert!(ep.dma_read(Some(bond.pasid), va.raw(), 1).is_err());
}

#[test]
fn a_dropped_domain_leaves_nothing_for_the_next_owner_of_its_asid() {
    let p = platform_with_irq_thread();
    let (sva, ep, dom) = device_in_dma_domain(&p);
    let asid = dom.asid();
    let secret = p.ram.alloc(4096).unwrap();
    p.ram.write(secret, b"domain data").unwrap();
    let at = Iova(0x40_0000_0000);
    dom.map_at(at, secret, 4096, RW).unwrap();
    ep.dma_read(None, at.raw(), 4).unwrap(); // cached in the IOTLB under the domain's ASID
    sva.attach_domain(DEV, Domain::Blocked).unwrap();
    drop(dom);
    // The next process gets the same ASID; the same address in it is unmapped.
    let mm = p.system.spawn().unwrap();
    assert_eq!(mm.asid(), asid, "the ASID was not recycled");
    mm.mmap(
        Some(sva_addr::Va(at.raw() + 0x10_0000)),
        4096,
        RW,
        MapFlags::PRIVATE | MapFlags::FIXED,
    )
    .unwrap();
    sva.enable_device(DEV, IOPF).unwrap();
    let bond = sva.bind(DEV, &mm).unwrap();
    assert!(
        ep.dma_read(Some(bond.pasid), at.raw(), 11).is_err(),
        "a stale IOTLB entry of the dropped domain translated for the new process"
    );
}

/// Devices without I/O page faults: private tables per (device, address space) at the
/// address space's PASID, explicit map/unmap of pinned pages.
#[test]
fn private_tables_show_each_device_only_what_was_mapped() {
    let p = platform_with_irq_thread();
    let sva = p.sva.clone().unwrap();
    let d1 = p.device(StreamId(0x51), PRI);
    let d2 = p.device(StreamId(0x52), PRI_NO_ATS);
    for d in [0x51, 0x52] {
        sva.enable_device(DeviceId(d), NO_IOPF).unwrap();
    }
    let mm = p.system.spawn().unwrap();
    let va = mm
        .mmap(None, 8 * 4096, RW, MapFlags::PRIVATE | MapFlags::NOHUGEPAGE)
        .unwrap();
    mm.write(va, b"page zero").unwrap();
    let b1 = sva.bind_private(DeviceId(0x51), &mm).unwrap();
    let b2 = sva.bind_private(DeviceId(0x52), &mm).unwrap();
    assert_eq!(
        b1.pasid, b2.pasid,
        "one PASID per address space, private tables or not"
    );
    // Nothing is visible until mapped; then each device sees its own part.
    assert!(d1.dma_read(Some(b1.pasid), va.raw(), 4).is_err());
    sva.map(b1, va, 2 * 4096, RW).unwrap();
    sva.map(b2, va + 4 * 4096, 4096, Prot::READ).unwrap();
    assert_eq!(
        d1.dma_read(Some(b1.pasid), va.raw(), 9).unwrap(),
        b"page zero"
    );
    assert!(
        d2.dma_read(Some(b2.pasid), va.raw(), 4).is_err(),
        "device 2 sees device 1's part"
    );
    d2.dma_read(Some(b2.pasid), (va + 4 * 4096).raw(), 4)
        .unwrap();
    assert!(
        d2.dma_write(Some(b2.pasid), (va + 4 * 4096).raw(), b"x")
            .is_err(),
        "read-only mapping written"
    );
    assert_eq!(mm.pinned_pages(), 3);
    // The device's writes reach the process; the pages stay put while mapped.
    d1.dma_write(Some(b1.pasid), (va + 4096).raw(), b"from device")
        .unwrap();
    let mut b = [0u8; 11];
    mm.read(va + 4096, &mut b).unwrap();
    assert_eq!(&b, b"from device");
    assert!(matches!(
        sva.map(b1, va + 4096, 4096, RW),
        Err(Error::AlreadyMapped(_))
    ));
    assert!(matches!(
        sva.map(b1, va + 100 * 4096, 4096, RW),
        Err(Error::Mm(_))
    ));
    assert_eq!(mm.pinned_pages(), 3, "a failed map left pins behind");
    // A shared-table bond is not private, and the same device cannot be bound both ways.
    let r = sva.bind(DeviceId(0x51), &mm);
    assert!(matches!(r, Err(Error::DeviceBusy(_))), "{r:?}");
    // Unmap: the device loses access, the pages are unpinned.
    sva.unmap(b1, va, 2 * 4096).unwrap();
    assert!(d1.dma_read(Some(b1.pasid), va.raw(), 4).is_err());
    assert_eq!(mm.pinned_pages(), 1);
    // Unbind releases the rest.
    sva.unbind(b2).unwrap();
    assert_eq!(mm.pinned_pages(), 0);
    sva.unbind(b1).unwrap();
    assert!(!sva.pasid_allocated(b1.pasid));
}

#[test]
fn private_mappings_survive_cpu_unmap_until_the_device_lets_go() {
    let p = platform_with_irq_thread();
    let sva = p.sva.clone().unwrap();
    let d = p.device(StreamId(0x61), PRI_NO_ATS);
    sva.enable_device(DeviceId(0x61), NO_IOPF).unwrap();
    let mm = p.system.spawn().unwrap();
    let va = mm.mmap(None, 4096, RW, MapFlags::PRIVATE).unwrap();
    let bond = sva.bind_private(DeviceId(0x61), &mm).unwrap();
    sva.map(bond, va, 4096, RW).unwrap();
    let frame = mm.translate(va, sva_mm::AccessKind::Read).unwrap().unwrap();
    mm.munmap(va, 4096).unwrap();
    // Pinned: the frame is still the device's, not freed.
    assert_eq!(p.ram.refcount(frame).unwrap(), 1);
    d.dma_write(Some(bond.pasid), va.raw(), b"still mine")
        .unwrap();
    sva.unmap(bond, va, 4096).unwrap();
    assert!(
        p.ram.refcount(frame).is_err(),
        "the frame was not released after unmap"
    );
    // Exit with a private bond: the context is quiet, unbind finishes.
    let va2 = mm.mmap(None, 4096, RW, MapFlags::PRIVATE).unwrap();
    sva.map(bond, va2, 4096, RW).unwrap();
    p.system.exit(mm.pid()).unwrap();
    assert!(d.dma_read(Some(bond.pasid), va2.raw(), 1).is_err());
    assert!(matches!(
        sva.map(bond, va2, 4096, RW),
        Err(Error::Exited(_)) | Err(Error::AlreadyMapped(_))
    ));
    let before = p.ram.stats().used_frames;
    sva.unbind(bond).unwrap();
    assert!(
        p.ram.stats().used_frames < before,
        "unbind did not release the pinned page and table"
    );
}
