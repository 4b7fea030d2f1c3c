//! The isolation matrix on the compression engine (see `docs/security.md`): once a queue is
//! put, its ring memory is no longer reachable by the device at the IOVA the driver gave
//! it: a DMA there faults (IOTLB and ATC were invalidated before `put` returned) and
//! nothing is written, while the frames are still mapped in the process.

mod common;

use common::{ZipOnPlatform, zip_on_platform};
use std::sync::Arc;
use sva_addr::{Iova, Pa, StreamId};
use sva_iommu::{DeviceId, DmaDomain, IOVA_BASE};
use sva_mm::{AccessKind, MapFlags, Prot};
use sva_pcie::{Dma, DmaCtx, PciFunction};
use sva_physmem::PhysMemory;
use sva_platform::Platform;
use sva_uacce::{QueueState, Uacce};
use sva_zip::Alg;
use sva_zip::user::{CompSession, CompStatus};

const RW: Prot = Prot::READ.union(Prot::WRITE);
const SID: StreamId = StreamId(0x40);

struct Rig {
    p: Platform,
    f: Arc<PciFunction>,
    dom: Arc<DmaDomain>,
    dev: Arc<Uacce>,
}

/// The ZIP driver on the platform (4 queue pairs of 64 entries, one engine), behind uacce.
fn rig() -> Rig {
    let ZipOnPlatform {
        p,
        f,
        sva,
        dom,
        driver,
    } = zip_on_platform(SID, true, 4, 1, 64);
    let dev = Uacce::register(Arc::new(driver), &sva, DeviceId(SID.raw()));
    Rig { p, f, dom, dev }
}

/// The IOVA at which the domain maps `frame` (the DMA domain allocates first-fit from
/// [`IOVA_BASE`]).
fn iova_of(dom: &DmaDomain, frame: Pa) -> Iova {
    (0..4096u64)
        .map(|i| Iova(IOVA_BASE + i * 4096))
        .find(|&iova| dom.translate(iova) == Some(frame))
        .expect("the DUS is mapped in the domain")
}

fn ram(p: &Platform, pa: Pa, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    p.ram.read(pa, &mut b).unwrap();
    b
}

#[test]
fn after_put_the_rings_are_unreachable_at_their_iova_and_nothing_is_written() {
    let r = rig();
    let mm = r.p.system.spawn().unwrap();
    let mut s = CompSession::open(&r.dev, &mm, Alg::Zlib).unwrap();
    // Use the queue: the engine fetches SQEs from the rings through the IOVA (and its ATC).
    let src = mm.mmap(None, 8192, RW, MapFlags::PRIVATE).unwrap();
    let dst = mm.mmap(None, 8192, RW, MapFlags::PRIVATE).unwrap();
    mm.write(src, &[b'z'; 8192]).unwrap();
    assert_eq!(
        s.compress(src, 8192, dst, 8192).unwrap().status,
        CompStatus::Ok
    );
    let map = s.queue().mapping();
    let pages = map.dus_size / 4096;
    mm.touch(map.dus, map.dus_size, AccessKind::Read).unwrap();
    let frames: Vec<Pa> = (0..pages)
        .map(|i| {
            mm.translate(map.dus + i * 4096, AccessKind::Read)
                .unwrap()
                .unwrap()
        })
        .collect();
    let iova = iova_of(&r.dom, frames[0]);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(r.dom.translate(iova + i as u64 * 4096), Some(*f));
    }
    // Before put the device reaches the rings at the IOVA.
    let mut probe = [0u8; 16];
    r.f.read(DmaCtx::iova(), iova.raw(), &mut probe).unwrap();
    assert_eq!(probe.as_slice(), &ram(&r.p, frames[0], 16)[..]);

    let q = s.handle().unwrap();
    q.put(&mm).unwrap();
    assert_eq!(q.state(), QueueState::Zombie);
    let before: Vec<Vec<u8>> = frames.iter().map(|&f| ram(&r.p, f, 4096)).collect();
    for i in 0..pages {
        let at = iova.raw() + i * 4096;
        assert_eq!(r.dom.translate(Iova(at)), None, "page {i} still mapped");
        for block_on_fault in [false, true] {
            let ctx = DmaCtx {
                pasid: None,
                block_on_fault,
            };
            let err = r.f.write(ctx, at, &[0xee; 256]).unwrap_err();
            assert_eq!(err.done, 0, "{err}");
            assert!(r.f.read(ctx, at, &mut [0u8; 64]).is_err());
        }
    }
    assert!(
        !r.f.atc().maps_frame(frames[0], 4096),
        "the ATC kept the ring"
    );
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(ram(&r.p, *f, 4096), before[i], "ring page {i} was written");
    }
    // The process still has its mapping of the queue memory until close.
    let mut b = [0u8; 16];
    mm.read(map.dus, &mut b).unwrap();
    assert_eq!(b.as_slice(), &before[0][..16]);
}
