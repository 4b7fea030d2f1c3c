//! End to end on the SMMUv3 platform: the QM behind a PCIe function with PASID, ATS and
//! PRI; the driver maps the rings in the function's DMA domain; a bound process compresses
//! and decompresses buffers it never touched (PRI faults them in).

mod common;

use common::{ZipOnPlatform, zip_on_platform};
use std::io::Read;
use std::time::Duration;
use sva_addr::{StreamId, Va};
use sva_iommu::DeviceId;
use sva_mm::{MapFlags, Prot};
use sva_uacce::UacceOps;
use sva_zip::Alg;
use sva_zip::driver::{QpInfo, UACCE_CMD_QM_SET_QP_CTX, UACCE_CMD_QM_SET_QP_INFO};
use sva_zip::user::{CompSession, CompStatus, Op, QmQueue, QueueMapping};

const RW: Prot = Prot::READ.union(Prot::WRITE);
const UACCE: MapFlags = MapFlags::SHARED
    .union(MapFlags::DONTCOPY)
    .union(MapFlags::WIPEONFORK);
const TEXT: &str = include_str!("../src/qm.rs");
const SID: StreamId = StreamId(0x20);
const DEV: DeviceId = DeviceId(0x20);

#[test]
fn compress_and_decompress_through_the_smmu() {
    let ZipOnPlatform {
        p,
        f,
        sva,
        dom,
        driver,
    } = zip_on_platform(SID, true, 4, 2, 64);
    let mm = p.system.spawn().unwrap();
    let bond = sva.bind(DEV, &mm).unwrap();

    // open + mmap + start, as uacce does them.
    let q = driver.get_queue(Some(bond.pasid)).unwrap();
    assert_eq!(dom.mapped_bytes(), driver.info().dus_size);
    let sqn = q.ioctl(UACCE_CMD_QM_SET_QP_CTX, 0).unwrap() as u16;
    let info = QpInfo::decode(q.ioctl(UACCE_CMD_QM_SET_QP_INFO, 0).unwrap());
    let dus = mm.mmap_frames(q.dus().unwrap(), RW, UACCE).unwrap();
    let doorbell = mm.mmap_io(q.mmio(), RW, UACCE).unwrap();
    q.start().unwrap();
    let queue = QmQueue::new(
        &mm,
        QueueMapping {
            dus,
            dus_size: driver.info().dus_size,
            doorbell,
            sqn,
            info,
        },
    )
    .unwrap();
    let mut s = CompSession::new(queue, Alg::Zlib);

    let len = TEXT.len() as u32;
    let src = mm
        .mmap(None, u64::from(len), RW, MapFlags::PRIVATE)
        .unwrap();
    mm.write(src, TEXT.as_bytes()).unwrap();
    // Never touched by the CPU: the device faults these in.
    let packed: Va = mm.mmap(None, 1 << 20, RW, MapFlags::PRIVATE).unwrap();
    let back: Va = mm.mmap(None, 1 << 20, RW, MapFlags::PRIVATE).unwrap();
    let r = s.compress(src, len, packed, 1 << 20).unwrap();
    assert_eq!(r.status, CompStatus::Ok);
    let mut bytes = vec![0u8; r.produced as usize];
    mm.read(packed, &mut bytes).unwrap();
    let mut out = String::new();
    flate2::read::ZlibDecoder::new(&bytes[..])
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, TEXT);
    let r = s.decompress(packed, r.produced, back, 1 << 20).unwrap();
    assert_eq!(r.status, CompStatus::StreamEnd);
    let mut round = vec![0u8; r.produced as usize];
    mm.read(back, &mut round).unwrap();
    assert_eq!(round, TEXT.as_bytes());
    assert!(f.stats().page_requests > 0, "PRI brought pages in");

    // Several in flight.
    for i in 0..20u64 {
        s.submit(Op::Compress, src, len, back + i * 0x8000, 0x8000)
            .unwrap();
    }
    for _ in 0..20 {
        let c = s
            .poll_timeout(Duration::from_secs(20))
            .unwrap()
            .expect("completion");
        assert_eq!(c.result.status, CompStatus::Ok);
    }

    // Teardown: stop, put (the ring IOVA goes away), unbind.
    q.stop();
    q.put();
    assert_eq!(dom.mapped_bytes(), 0);
    assert_eq!(driver.qm().stats().dma_faults, 0);
    sva.unbind(bond).unwrap();
}
