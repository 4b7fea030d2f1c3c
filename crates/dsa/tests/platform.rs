//! End to end on the SMMUv3 platform: the DSA model's DMA goes through a PCIe function
//! with ATS and PRI to the SMMU model, which walks the process's own page tables. A
//! process binds to the function, opens a shared work queue, maps its portal and copies
//! with ENQCMD; without block-on-fault the library recovers from partial completions, with
//! it the function's PRI page requests fault the pages in.

use std::sync::Arc;
use sva_addr::StreamId;
use sva_dsa::{
    Device, DeviceConfig, DsaDriver, DsaSession, SessionConfig, Status, WqConfig, WqMode,
};
use sva_iommu::DeviceId;
use sva_mm::{MapFlags, Prot};
use sva_pcie::Capabilities;
use sva_platform::{Platform, PlatformConfig};
use sva_uacce::UacceQueueOps;

const RW: Prot = Prot::READ.union(Prot::WRITE);
const SID: StreamId = StreamId(0x30);

#[test]
fn a_process_copies_through_a_shared_wq_on_the_smmu() {
    let p = Platform::new(PlatformConfig {
        irq_thread: true,
        ..PlatformConfig::default()
    })
    .unwrap();
    let f = p.sva_function(SID, Capabilities::default()).unwrap();
    let mm = p.system.spawn().unwrap();
    let sva = p.sva.as_ref().unwrap();
    let bond = sva.bind(DeviceId(SID.raw()), &mm).unwrap();
    if mm.pasid().is_none() {
        mm.set_pasid(Some(bond.pasid));
    }
    assert_eq!(mm.pasid(), Some(bond.pasid));

    let dev = Device::new(
        f.clone(),
        DeviceConfig {
            wqs: vec![WqConfig {
                mode: WqMode::Shared,
                size: 16,
            }],
            engines: 2,
            ..DeviceConfig::default()
        },
    )
    .unwrap();
    let drv = DsaDriver::new(Arc::new(dev)).unwrap();
    let q = drv.get_queue_on(0, Some(bond.pasid)).unwrap();
    q.start().unwrap();
    let portal = mm.mmap_io(q.mmio(), RW, MapFlags::SHARED).unwrap();

    let len = 5 * 4096 + 300;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let src = mm.mmap(None, 8 * 4096, RW, MapFlags::PRIVATE).unwrap();
    mm.write(src, &data).unwrap();

    // Partial completions and software recovery: the destination is untouched.
    let dst = mm.mmap(None, 8 * 4096, RW, MapFlags::PRIVATE).unwrap();
    let mut ses = DsaSession::new(&mm, portal, true).unwrap();
    let r = ses.copy(dst + 10, src, len as u32).unwrap();
    assert_eq!(r.status(), Some(Status::Success));
    let mut out = vec![0u8; len];
    mm.read(dst + 10, &mut out).unwrap();
    assert_eq!(out, data);
    assert!(ses.stats().faults_touched >= 6, "{:?}", ses.stats());
    let crc = ses.crc32c(dst + 10, len as u32).unwrap();
    assert_eq!(crc.crc_val(), u64::from(crc32c::crc32c(&data)));

    // Block on fault: PRI brings the pages in, no software recovery.
    let dst2 = mm.mmap(None, 8 * 4096, RW, MapFlags::PRIVATE).unwrap();
    let mut bof = DsaSession::with_config(
        &mm,
        portal,
        true,
        SessionConfig {
            block_on_fault: true,
            ..SessionConfig::default()
        },
    )
    .unwrap();
    let requests = f.stats().page_requests;
    let r = bof.copy(dst2, src, len as u32).unwrap();
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(bof.stats().resubmissions, 0);
    assert!(f.stats().page_requests > requests, "{:?}", f.stats());
    mm.read(dst2, &mut out).unwrap();
    assert_eq!(out, data);

    drop((ses, bof));
    q.stop();
    q.put();
    mm.munmap(portal, 4096).unwrap();
    sva.unbind(bond).unwrap();
}
