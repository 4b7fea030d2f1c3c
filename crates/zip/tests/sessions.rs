//! Compression sessions through uacce on the SMMUv3 platform, as a user writes them
//! (`CompSession::open`): two processes isolated by PASID, fork, exit with requests in
//! flight, a destination unmapped while the device waits for it, and device removal.

mod common;

use common::{ZipOnPlatform, zip_on_platform};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;
use sva_addr::{StreamId, Va};
use sva_iommu::DeviceId;
use sva_mm::{AccessKind, MapFlags, Mm, Prot};
use sva_pcie::PciFunction;
use sva_platform::Platform;
use sva_uacce::Uacce;
use sva_zip::Alg;
use sva_zip::user::{CompSession, CompStatus, Op};

const RW: Prot = Prot::READ.union(Prot::WRITE);
const SID: StreamId = StreamId(0x40);
const TEXT: &str = include_str!("../src/engine.rs");

struct Rig {
    p: Platform,
    f: Arc<PciFunction>,
    dev: Arc<Uacce>,
}

/// The ZIP driver on the platform (8 queue pairs of 128 entries, two engines), behind
/// uacce.
fn rig(irq_thread: bool) -> Rig {
    let ZipOnPlatform {
        p, f, sva, driver, ..
    } = zip_on_platform(SID, irq_thread, 8, 2, 128);
    let dev = Uacce::register(Arc::new(driver), &sva, DeviceId(SID.raw()));
    Rig { p, f, dev }
}

fn inflate(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn read(mm: &Mm, va: Va, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    mm.read(va, &mut b).unwrap();
    b
}

#[test]
fn two_processes_share_the_device_isolated_by_pasid() {
    let r = rig(true);
    let a = r.p.system.spawn().unwrap();
    let b = r.p.system.spawn().unwrap();
    let mut sa = CompSession::open(&r.dev, &a, Alg::Zlib).unwrap();
    let mut sb = CompSession::open(&r.dev, &b, Alg::Zlib).unwrap();
    assert_ne!(sa.handle().unwrap().pasid(), sb.handle().unwrap().pasid());
    // The same virtual addresses in both processes, different contents.
    let fixed = MapFlags::PRIVATE | MapFlags::FIXED;
    for (mm, text) in [
        (&a, TEXT.as_bytes()),
        (&b, b"process b ".repeat(500).as_slice()),
    ] {
        mm.mmap(Some(Va(0x1000_0000)), 1 << 20, RW, fixed).unwrap();
        mm.mmap(Some(Va(0x2000_0000)), 1 << 20, RW, fixed).unwrap();
        mm.write(Va(0x1000_0000), text).unwrap();
    }
    let ra = sa
        .compress(Va(0x1000_0000), TEXT.len() as u32, Va(0x2000_0000), 1 << 20)
        .unwrap();
    let rb = sb
        .compress(Va(0x1000_0000), 5000, Va(0x2000_0000), 1 << 20)
        .unwrap();
    assert_eq!((ra.status, rb.status), (CompStatus::Ok, CompStatus::Ok));
    assert_eq!(
        inflate(&read(&a, Va(0x2000_0000), ra.produced as usize)),
        TEXT.as_bytes()
    );
    assert_eq!(
        inflate(&read(&b, Va(0x2000_0000), rb.produced as usize)),
        b"process b ".repeat(500)
    );
}

#[test]
fn a_forked_child_cannot_drive_the_parents_queue() {
    let r = rig(true);
    let parent = r.p.system.spawn().unwrap();
    let mut s = CompSession::open(&r.dev, &parent, Alg::Deflate).unwrap();
    let child = r.p.system.fork(parent.pid()).unwrap();
    let q = s.handle().unwrap();
    assert!(matches!(
        q.start(&child),
        Err(sva_uacce::Error::NotOwner { .. })
    ));
    // The ring memory and doorbell are not in the child.
    let doorbell = s.queue().mapping().doorbell;
    assert!(child.write(doorbell, &[0u8; 8]).is_err());
    assert!(child.read(s.queue().mapping().dus, &mut [0u8; 8]).is_err());
    // The parent's session still works.
    let src = parent.mmap(None, 1 << 16, RW, MapFlags::PRIVATE).unwrap();
    let dst = parent.mmap(None, 1 << 16, RW, MapFlags::PRIVATE).unwrap();
    parent.write(src, &[7u8; 1 << 16]).unwrap();
    assert_eq!(
        s.compress(src, 1 << 16, dst, 1 << 16).unwrap().status,
        CompStatus::Ok
    );
}

#[test]
fn exit_with_requests_in_flight_stops_the_queue_and_keeps_the_pasid_until_close() {
    let r = rig(true);
    let mm = r.p.system.spawn().unwrap();
    let mut s = CompSession::open(&r.dev, &mm, Alg::Gzip).unwrap();
    let pasid = s.handle().unwrap().pasid().unwrap();
    let src = mm.mmap(None, 4 << 20, RW, MapFlags::PRIVATE).unwrap();
    mm.fill(src, 0x5a, 4 << 20).unwrap();
    let dst = mm.mmap(None, 64 << 20, RW, MapFlags::PRIVATE).unwrap();
    for i in 0..32u64 {
        s.submit(Op::Compress, src, 4 << 20, dst + i * (2 << 20), 2 << 20)
            .unwrap();
    }
    r.p.system.exit(mm.pid()).unwrap();
    let sva = r.p.sva.as_ref().unwrap();
    assert_eq!(
        s.handle().unwrap().state(),
        sva_uacce::QueueState::Zombie,
        "the exit callback stopped the queue"
    );
    assert!(sva.pasid_allocated(pasid), "the PASID waits for close");
    assert_eq!(r.f.outstanding_page_requests(), 0);
    drop(s);
    assert!(!sva.pasid_allocated(pasid));
    // A new process may get the PASID now, and its session works.
    let next = r.p.system.spawn().unwrap();
    let mut s2 = CompSession::open(&r.dev, &next, Alg::Zlib).unwrap();
    let src = next.mmap(None, 4096, RW, MapFlags::PRIVATE).unwrap();
    let dst = next.mmap(None, 8192, RW, MapFlags::PRIVATE).unwrap();
    next.write(src, b"after exit").unwrap();
    let res = s2.compress(src, 10, dst, 8192).unwrap();
    assert_eq!(
        inflate(&read(&next, dst, res.produced as usize)),
        b"after exit"
    );
}

#[test]
fn a_destination_unmapped_while_the_device_waits_for_it_ends_the_request() {
    // Interrupts are delivered by hand, so the test knows the device is waiting.
    let r = rig(false);
    let mm = r.p.system.spawn().unwrap();
    let src = mm.mmap(None, 1 << 16, RW, MapFlags::PRIVATE).unwrap();
    mm.write(src, &TEXT.as_bytes()[..TEXT.len().min(1 << 16)])
        .unwrap();
    let len = TEXT.len().min(1 << 16) as u32;
    // Open in a thread that pumps interrupts: binding needs none, faults do.
    let mut s = CompSession::open(&r.dev, &mm, Alg::Zlib).unwrap();
    let guard = mm.mmap(None, 4096, RW, MapFlags::PRIVATE).unwrap();
    mm.write(guard, b"neighbour").unwrap();
    let dst = mm.mmap(None, 1 << 16, RW, MapFlags::PRIVATE).unwrap();
    s.submit(Op::Compress, src, len, dst, 1 << 16).unwrap();
    // The device asks for the untouched destination and waits.
    let t0 = std::time::Instant::now();
    while r.f.outstanding_page_requests() == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "no page request");
        std::thread::yield_now();
    }
    mm.munmap(dst, 1 << 16).unwrap();
    let done = loop {
        r.p.deliver_irqs();
        if let Some(c) = s.poll().unwrap() {
            break c;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no completion");
        std::thread::yield_now();
    };
    assert_eq!(done.result.status, CompStatus::AddrFault);
    let fault = done.result.fault.expect("fault info");
    assert_eq!(fault.addr & !0xfff, dst.raw());
    assert!(fault.write);
    assert_eq!(
        read(&mm, guard, 9),
        b"neighbour",
        "nothing else was touched"
    );
    assert_eq!(
        read(&mm, src, len as usize),
        &TEXT.as_bytes()[..len as usize]
    );
    assert!(mm.read(dst, &mut [0u8; 1]).is_err());
}

#[test]
fn device_removal_ends_sessions_with_clear_errors() {
    let r = rig(true);
    let mm = r.p.system.spawn().unwrap();
    let mut s = CompSession::open(&r.dev, &mm, Alg::Zlib).unwrap();
    let src = mm.mmap(None, 4096, RW, MapFlags::PRIVATE).unwrap();
    let dst = mm.mmap(None, 8192, RW, MapFlags::PRIVATE).unwrap();
    mm.touch(src, 4096, AccessKind::Write).unwrap();
    assert!(s.compress(src, 4096, dst, 8192).unwrap().status.is_ok());
    r.dev.remove();
    let err = s.compress(src, 4096, dst, 8192).unwrap_err();
    assert!(
        matches!(err, sva_zip::Error::Mm(sva_mm::Error::Bus { .. })),
        "{err}"
    );
    assert!(matches!(
        CompSession::open(&r.dev, &mm, Alg::Zlib),
        Err(sva_zip::Error::Uacce(sva_uacce::Error::NoDevice))
    ));
}
