//! Data-mover sessions through uacce on the SMMUv3 platform, as a user writes them
//! (`DsaSession::open`): every operation on buffers nobody touched, checked against the
//! CPU; two processes on one shared work queue kept apart by their ENQCMD PASIDs; a
//! destination unmapped while the device waits for it; a forked child.

use std::sync::Arc;
use std::time::Duration;
use sva_addr::{StreamId, Va};
use sva_dsa::{Device, DeviceConfig, DsaDriver, DsaSession, SessionConfig, Status};
use sva_iommu::DeviceId;
use sva_mm::{MapFlags, Mm, Prot};
use sva_pcie::{Capabilities, PciFunction};
use sva_platform::{Platform, PlatformConfig};
use sva_uacce::Uacce;

const RW: Prot = Prot::READ.union(Prot::WRITE);
const SID: StreamId = StreamId(0x50);

struct Rig {
    p: Platform,
    f: Arc<PciFunction>,
    dev: Arc<Uacce>,
}

fn rig(irq_thread: bool) -> Rig {
    let p = Platform::new(PlatformConfig {
        irq_thread,
        ..PlatformConfig::default()
    })
    .unwrap();
    let f = p.sva_function(SID, Capabilities::default()).unwrap();
    let device = Device::new(f.clone(), DeviceConfig::default()).unwrap();
    let driver = DsaDriver::new(Arc::new(device)).unwrap();
    let dev = Uacce::register(
        Arc::new(driver),
        p.sva.as_ref().unwrap(),
        DeviceId(SID.raw()),
    );
    Rig { p, f, dev }
}

fn bof(on: bool) -> SessionConfig {
    SessionConfig {
        block_on_fault: on,
        ..SessionConfig::default()
    }
}

fn read(mm: &Mm, va: Va, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    mm.read(va, &mut b).unwrap();
    b
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

/// Every operation, with and without block-on-fault, on fresh untouched buffers.
#[test]
fn every_operation_matches_the_cpu_on_demand_faulted_buffers() {
    let r = rig(true);
    for block in [false, true] {
        let mm = r.p.system.spawn().unwrap();
        let mut s = DsaSession::open(&r.dev, &mm, bof(block)).unwrap();
        let len = 3 * 4096 + 123;
        let fresh = || mm.mmap(None, 4 * 4096, RW, MapFlags::PRIVATE).unwrap() + 7;
        let src = fresh();
        let bytes = data(len, 1);
        mm.write(src, &bytes).unwrap();

        let dst = fresh();
        assert_eq!(
            s.copy(dst, src, len as u32).unwrap().status(),
            Some(Status::Success)
        );
        assert_eq!(read(&mm, dst, len), bytes);

        let filled = fresh();
        let pattern = 0x0123_4567_89ab_cdefu64;
        s.fill(filled, pattern, len as u32).unwrap();
        let cpu: Vec<u8> = (0..len).map(|i| pattern.to_le_bytes()[i % 8]).collect();
        assert_eq!(read(&mm, filled, len), cpu);

        assert_eq!(s.compare(src, dst, len as u32).unwrap().result, 0);
        mm.write(dst + 5000, &[!bytes[5000]]).unwrap();
        let diff = s.compare(src, dst, len as u32).unwrap();
        assert_eq!((diff.status(), diff.result), (Some(Status::SuccessPred), 1));
        assert_eq!(diff.bytes_completed, 5000, "the first difference");

        assert_eq!(
            s.compare_pattern(filled, pattern, len as u32)
                .unwrap()
                .result,
            0
        );

        let crc = s.crc32c(src, len as u32).unwrap();
        assert_eq!(crc.crc_val(), u64::from(crc32c::crc32c(&bytes)));

        let (d1, d2) = (fresh() - 7, fresh() - 7);
        // Dualcast destinations must share address bits 11:0.
        let d2 = d2 + (d1.raw() & 0xfff);
        s.dualcast(src, d1, d2, 4096).unwrap();
        assert_eq!(read(&mm, d1, 4096), &bytes[..4096]);
        assert_eq!(read(&mm, d2, 4096), &bytes[..4096]);

        let st = s.stats();
        if block {
            assert_eq!(st.faults_touched, 0, "the device faulted pages in itself");
        } else {
            assert!(st.faults_touched > 0, "software recovered: {st:?}");
        }
    }
    assert!(r.f.stats().page_requests > 0);
}

#[test]
fn two_processes_on_one_shared_queue_are_kept_apart_by_pasid() {
    let r = rig(true);
    let (a, b) = (r.p.system.spawn().unwrap(), r.p.system.spawn().unwrap());
    let mut sa = DsaSession::open(&r.dev, &a, bof(true)).unwrap();
    // The dedicated queue went to the first opener; the second shares.
    let mut sb = DsaSession::open(&r.dev, &b, bof(true)).unwrap();
    let mut sb2 = DsaSession::open(&r.dev, &b, bof(true)).unwrap();
    assert_ne!(sa.handle().unwrap().pasid(), sb.handle().unwrap().pasid());
    assert_eq!(sb.handle().unwrap().pasid(), sb2.handle().unwrap().pasid());
    let at = Va(0x3000_0000);
    for (mm, tag) in [(&a, b"AAAA"), (&b, b"BBBB")] {
        mm.mmap(Some(at), 2 * 4096, RW, MapFlags::PRIVATE | MapFlags::FIXED)
            .unwrap();
        mm.write(at, &tag.repeat(1024)).unwrap();
    }
    sa.copy(at + 4096, at, 4096).unwrap();
    sb.copy(at + 4096, at, 4096).unwrap();
    sb2.fill(at, 0, 8).unwrap();
    assert_eq!(read(&a, at + 4096, 4096), b"AAAA".repeat(1024));
    assert_eq!(read(&b, at + 4096, 4096), b"BBBB".repeat(1024));
    assert_eq!(read(&a, at, 8), b"AAAAAAAA", "B's fill stayed in B");
}

#[test]
fn a_destination_unmapped_while_the_device_waits_ends_the_job_there() {
    let r = rig(false);
    let mm = r.p.system.spawn().unwrap();
    let mut s = DsaSession::open(&r.dev, &mm, bof(true)).unwrap();
    let len = 4 * 4096;
    let src = mm.mmap(None, len, RW, MapFlags::PRIVATE).unwrap();
    mm.write(src, &data(len as usize, 9)).unwrap();
    let neighbour = mm.mmap(None, 4096, RW, MapFlags::PRIVATE).unwrap();
    mm.write(neighbour, b"untouched").unwrap();
    let dst = mm.mmap(None, len, RW, MapFlags::PRIVATE).unwrap();
    // Two destination pages are there already; the device will wait for the third.
    mm.fill(dst, 0xee, 2 * 4096).unwrap();
    let job = {
        let mm = mm.clone();
        std::thread::spawn(move || {
            let rec = s.copy(dst, src, len as u32);
            drop(mm);
            rec
        })
    };
    let t0 = std::time::Instant::now();
    while r.f.outstanding_page_requests() == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "no page request");
        std::thread::yield_now();
    }
    mm.munmap(dst + 2 * 4096, 2 * 4096).unwrap();
    while !job.is_finished() {
        r.p.deliver_irqs();
        std::thread::yield_now();
    }
    let rec = job.join().unwrap().unwrap();
    assert_eq!(rec.status(), Some(Status::PageFaultIr));
    assert_eq!(rec.fault_addr & !0xfff, (dst + 2 * 4096).raw());
    assert_eq!(rec.bytes_completed, 2 * 4096);
    assert_eq!(read(&mm, dst, 2 * 4096), &data(len as usize, 9)[..2 * 4096]);
    assert_eq!(read(&mm, neighbour, 9), b"untouched");
}

#[test]
fn a_forked_child_cannot_use_the_parents_portal_or_queue() {
    let r = rig(true);
    let parent = r.p.system.spawn().unwrap();
    let s = DsaSession::open(&r.dev, &parent, bof(true)).unwrap();
    let child = r.p.system.fork(parent.pid()).unwrap();
    let q = s.handle().unwrap();
    assert!(matches!(
        q.start(&child),
        Err(sva_uacce::Error::NotOwner { .. })
    ));
    assert!(matches!(
        q.mmap(&child, sva_uacce::Region::Mmio),
        Err(sva_uacce::Error::NotOwner { .. })
    ));
    // The child opens its own queue: its own PASID, not the parent's.
    let cs = DsaSession::open(&r.dev, &child, bof(true)).unwrap();
    assert_ne!(cs.handle().unwrap().pasid(), q.pasid());
}
