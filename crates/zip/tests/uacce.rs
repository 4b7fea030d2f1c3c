//! The driver and the user library together, in a real address space: the DUS and the
//! doorbell page are mapped into a process (`mmap_frames`, `mmap_io`), the user library
//! drives the rings with CPU loads and stores, and the device reaches process buffers
//! through a DMA that walks the process's tables (pages faulted in on demand, as PRI
//! would) and the rings through the driver's IOVA mappings.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sva_addr::{Iova, Pa, Pasid, Va};
use sva_mm::{MapFlags, Mm, MmConfig, Prot, System};
use sva_pcie::{Dma, DmaCtx, DmaFault, FaultReason};
use sva_physmem::{PhysMemory, Ram};
use sva_uacce::{UACCE_DEV_SVA, UacceOps, UacceQueueOps};
use sva_zip::driver::{
    QpInfo, QueueMemoryMapper, UACCE_CMD_QM_SET_QP_CTX, UACCE_CMD_QM_SET_QP_INFO, ZipDriver,
    ZipDriverConfig,
};
use sva_zip::user::{CompSession, CompStatus, Op, QmQueue, QueueMapping};
use sva_zip::{Alg, Error, Qm, QmConfig};

const PAGE: u64 = 4096;
const PASID: u32 = 7;
const TEXT: &str = include_str!("../src/engine.rs");
const RW: Prot = Prot::READ.union(Prot::WRITE);
const UACCE: MapFlags = MapFlags::SHARED
    .union(MapFlags::DONTCOPY)
    .union(MapFlags::WIPEONFORK);

/// IOVA → frame, one page at a time, handed out upwards from 1 MiB.
#[derive(Default)]
struct TableMapper {
    map: Mutex<BTreeMap<u64, Pa>>,
    next: Mutex<u64>,
}

impl QueueMemoryMapper for TableMapper {
    fn map_frames(&self, frames: &[Pa], page_size: u64) -> Result<Iova, sva_iommu::Error> {
        let mut next = self.next.lock().unwrap();
        let base = (*next).max(0x10_0000);
        let mut map = self.map.lock().unwrap();
        for (i, &pa) in frames.iter().enumerate() {
            map.insert(base + i as u64 * page_size, pa);
        }
        *next = base + frames.len() as u64 * page_size + page_size;
        Ok(Iova(base))
    }

    fn unmap_frames(
        &self,
        iova: Iova,
        pages: usize,
        page_size: u64,
    ) -> Result<(), sva_iommu::Error> {
        let mut map = self.map.lock().unwrap();
        for i in 0..pages {
            map.remove(&(iova.raw() + i as u64 * page_size));
        }
        Ok(())
    }
}

/// The device's view: PASID → the bound process's tables; no PASID → the driver's IOVA
/// table.
struct ProcessDma {
    ram: Arc<Ram>,
    iova: Arc<TableMapper>,
    mm: Arc<Mm>,
}

impl ProcessDma {
    fn access(
        &self,
        ctx: DmaCtx,
        addr: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(Result<Pa, Va>, usize, usize) -> Result<(), ()>,
    ) -> Result<(), DmaFault> {
        let mut done = 0;
        while done < len {
            let a = addr + done as u64;
            let n = ((PAGE - a % PAGE) as usize).min(len - done);
            let fault = DmaFault {
                addr: a,
                done: done as u64,
                write,
                reason: FaultReason::Invalid,
            };
            let target = match ctx.pasid {
                None => {
                    let map = self.iova.map.lock().unwrap();
                    let pa = map.get(&(a & !(PAGE - 1))).ok_or(fault)?;
                    Ok(*pa + a % PAGE)
                }
                Some(p) if p == Pasid(PASID) => Err(Va(a)),
                Some(_) => return Err(fault),
            };
            f(target, done, n).map_err(|()| fault)?;
            done += n;
        }
        Ok(())
    }
}

impl Dma for ProcessDma {
    fn read(&self, ctx: DmaCtx, addr: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        let len = buf.len();
        self.access(ctx, addr, len, false, |t, at, n| match t {
            Ok(pa) => self.ram.read(pa, &mut buf[at..at + n]).map_err(|_| ()),
            Err(va) => self.mm.read(va, &mut buf[at..at + n]).map_err(|_| ()),
        })
    }

    fn write(&self, ctx: DmaCtx, addr: u64, data: &[u8]) -> Result<(), DmaFault> {
        self.access(ctx, addr, data.len(), true, |t, at, n| match t {
            Ok(pa) => self.ram.write(pa, &data[at..at + n]).map_err(|_| ()),
            Err(va) => self.mm.write(va, &data[at..at + n]).map_err(|_| ()),
        })
    }
}

struct World {
    mm: Arc<Mm>,
    mapper: Arc<TableMapper>,
    driver: ZipDriver,
    _sys: System,
}

fn world(qps: u16, depth: u16) -> World {
    let ram = Arc::new(Ram::new(256 << 20).unwrap());
    let sys = System::new(ram.clone(), MmConfig::default()).unwrap();
    let mm = sys.spawn().unwrap();
    let mapper = Arc::new(TableMapper::default());
    let dma = Arc::new(ProcessDma {
        ram: ram.clone(),
        iova: mapper.clone(),
        mm: mm.clone(),
    });
    let qm = Arc::new(Qm::new(
        dma,
        QmConfig {
            qp_num: qps,
            engines: 2,
            stop_timeout: Duration::from_secs(10),
        },
    ));
    let driver = ZipDriver::new(
        qm,
        ram,
        mapper.clone(),
        ZipDriverConfig {
            sq_depth: depth,
            cq_depth: depth,
            page_size: PAGE,
        },
    )
    .unwrap();
    World {
        mm,
        mapper,
        driver,
        _sys: sys,
    }
}

/// What uacce's open + mmap + start would do, and the user library on top.
fn open(w: &World, qtype: u64) -> (Arc<dyn UacceQueueOps>, QmQueue) {
    let q = w.driver.get_queue(Some(Pasid(PASID))).unwrap();
    let sqn = q.ioctl(UACCE_CMD_QM_SET_QP_CTX, qtype).unwrap() as u16;
    let info = QpInfo::decode(q.ioctl(UACCE_CMD_QM_SET_QP_INFO, 0).unwrap());
    let dus = w.mm.mmap_frames(q.dus().unwrap(), RW, UACCE).unwrap();
    let doorbell = w.mm.mmap_io(q.mmio(), RW, UACCE).unwrap();
    q.start().unwrap();
    let queue = QmQueue::new(
        &w.mm,
        QueueMapping {
            dus,
            dus_size: w.driver.info().dus_size,
            doorbell,
            sqn,
            info,
        },
    )
    .unwrap();
    (q, queue)
}

fn buffer(mm: &Mm, len: u64) -> Va {
    mm.mmap(None, len.max(1), RW, MapFlags::PRIVATE).unwrap()
}

fn read(mm: &Mm, va: Va, len: u32) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    mm.read(va, &mut v).unwrap();
    v
}

#[test]
fn device_description() {
    let w = world(4, 16);
    let info = w.driver.info();
    assert_eq!(info.name, "hisi_zip");
    assert_eq!(info.api, "hisi_qm_v2");
    assert_eq!(info.flags, UACCE_DEV_SVA);
    assert_eq!(info.algorithms, ["deflate", "zlib", "gzip"]);
    assert_eq!(info.mmio_size, 4096);
    // 16 × 128 + 16 × 16 + one page, rounded up to pages.
    assert_eq!(info.dus_size, 8192);
    assert_eq!(w.driver.available_instances(), 4);
}

#[test]
fn sync_round_trip_through_the_process() {
    let w = world(2, 16);
    let (_q, queue) = open(&w, 0);
    let mut s = CompSession::new(queue, Alg::Gzip);
    let len = TEXT.len() as u32;
    let src = buffer(&w.mm, u64::from(len));
    w.mm.write(src, TEXT.as_bytes()).unwrap();
    let packed = buffer(&w.mm, u64::from(len) + 4096);
    let r = s.compress(src, len, packed, len + 4096).unwrap();
    assert_eq!(r.status, CompStatus::Ok);
    assert_eq!(r.consumed, len);
    let bytes = read(&w.mm, packed, r.produced);
    let mut out = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, TEXT);
    // And back, on the device.
    let back = buffer(&w.mm, u64::from(len));
    let r = s.decompress(packed, r.produced, back, len).unwrap();
    assert_eq!(r.status, CompStatus::StreamEnd);
    assert_eq!(read(&w.mm, back, r.produced), TEXT.as_bytes());
    // Too small, garbage: typed statuses.
    let r = s.compress(src, len, packed, 10).unwrap();
    assert_eq!(r.status, CompStatus::OutputTooSmall);
    let r = s.decompress(src, len, back, len).unwrap();
    assert_eq!(r.status, CompStatus::DataError);
    // An unmapped destination: the fault address comes back.
    let hole = Va(0x7000_0000_0000);
    let r = s.compress(src, len, hole, len + 4096).unwrap();
    assert_eq!(r.status, CompStatus::AddrFault);
    let f = r.fault.unwrap();
    assert_eq!((f.addr, f.write), (hole.raw(), true));
    assert_eq!(w.driver.qm().stats().dma_faults, 1);
}

#[test]
fn async_requests_up_to_the_queue_depth() {
    let w = world(1, 8);
    let (q, queue) = open(&w, 0);
    let mut s = CompSession::new(queue, Alg::Zlib);
    let len = TEXT.len() as u32;
    let src = buffer(&w.mm, u64::from(len));
    w.mm.write(src, TEXT.as_bytes()).unwrap();
    let dst = buffer(&w.mm, 16 * 0x10000);
    for round in 0..5u32 {
        let mut tags = Vec::new();
        for i in 0..7u64 {
            tags.push(
                s.submit(Op::Compress, src, len, dst + i * 0x10000, 0x10000)
                    .unwrap(),
            );
        }
        // Depth 8: seven in flight is the most.
        assert!(matches!(
            s.submit(Op::Compress, src, len, dst, 0x10000),
            Err(Error::QueueFull)
        ));
        let mut got = Vec::new();
        while got.len() < 7 {
            let c = s
                .poll_timeout(Duration::from_secs(10))
                .unwrap()
                .expect("completion");
            assert_eq!(c.op, Op::Compress);
            assert_eq!(c.result.status, CompStatus::Ok, "round {round}");
            let bytes = read(&w.mm, dst + (got.len() as u64) * 0x10000, c.result.produced);
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(&bytes[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, TEXT.as_bytes());
            got.push(c.tag);
        }
        assert_eq!(got, tags);
    }
    assert!(s.poll().unwrap().is_none());
    // A completion the driver's poll() sees before the user takes it.
    s.submit(Op::Compress, src, len, dst, 0x10000).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !q.is_updated() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!q.is_updated(), "reported once");
    assert!(s.poll_timeout(Duration::from_secs(5)).unwrap().is_some());
}

#[test]
fn decompression_queue_type() {
    let w = world(1, 4);
    let (_q, queue) = open(&w, 1);
    let mut s = CompSession::new(queue, Alg::Deflate);
    let packed = sva_zip::codec::compress(Alg::Deflate, TEXT.as_bytes()).data;
    let src = buffer(&w.mm, packed.len() as u64);
    w.mm.write(src, &packed).unwrap();
    let dst = buffer(&w.mm, TEXT.len() as u64);
    // A "compress" request on a decompression queue decompresses.
    let r = s
        .compress(src, packed.len() as u32, dst, TEXT.len() as u32)
        .unwrap();
    assert_eq!(r.status, CompStatus::StreamEnd);
    assert_eq!(read(&w.mm, dst, r.produced), TEXT.as_bytes());
}

#[test]
fn queue_pairs_run_out_and_come_back() {
    let w = world(2, 4);
    let a = w.driver.get_queue(Some(Pasid(PASID))).unwrap();
    let _b = w.driver.get_queue(None).unwrap();
    assert!(matches!(
        w.driver.get_queue(Some(Pasid(PASID))),
        Err(sva_uacce::Error::Busy(_))
    ));
    assert!(matches!(
        w.driver.get_queue(Some(Pasid(0x1_0000))),
        Err(sva_uacce::Error::Invalid(_))
    ));
    assert_eq!(w.driver.available_instances(), 0);
    assert_eq!(w.mapper.map.lock().unwrap().len(), 4);
    a.put();
    assert_eq!(w.driver.available_instances(), 1);
    // The IOVA is gone: a device touching the old ring faults.
    assert_eq!(w.mapper.map.lock().unwrap().len(), 2);
    assert!(matches!(a.start(), Err(sva_uacce::Error::State { .. })));
    assert!(matches!(
        a.ioctl(0x1234, 0),
        Err(sva_uacce::Error::UnknownIoctl(0x1234))
    ));
    drop(a);
    let _c = w.driver.get_queue(Some(Pasid(PASID))).unwrap();
}

#[test]
fn stop_sets_the_status_words_and_restart_works() {
    let w = world(1, 4);
    let (q, queue) = open(&w, 0);
    let mut s = CompSession::new(queue, Alg::Deflate);
    let src = buffer(&w.mm, 4096);
    w.mm.write(src, &[b'x'; 4096]).unwrap();
    let dst = buffer(&w.mm, 8192);
    assert!(s.compress(src, 4096, dst, 8192).unwrap().status.is_ok());
    q.stop();
    assert!(s.queue().disabled(true).unwrap());
    assert!(s.queue().disabled(false).unwrap());
    assert!(matches!(
        s.compress(src, 4096, dst, 8192),
        Err(Error::QueueDisabled)
    ));
    // Restart: fresh rings, a fresh user queue on the same mappings.
    q.start().unwrap();
    let mapping = s.queue().mapping();
    let mut s = CompSession::new(QmQueue::new(&w.mm, mapping).unwrap(), Alg::Deflate);
    for _ in 0..10 {
        let r = s.compress(src, 4096, dst, 8192).unwrap();
        assert_eq!(r.status, CompStatus::Ok);
    }
}

#[test]
fn ring_fault_disables_the_queue_for_the_user() {
    let w = world(1, 4);
    let (q, queue) = open(&w, 0);
    let mut s = CompSession::new(queue, Alg::Zlib);
    s.set_timeout(Duration::from_secs(5));
    let src = buffer(&w.mm, 4096);
    let dst = buffer(&w.mm, 8192);
    // The ring's IOVA vanishes behind the driver's back.
    w.mapper.map.lock().unwrap().clear();
    let r = s.compress(src, 4096, dst, 8192);
    assert!(matches!(r, Err(Error::QueueDisabled)), "{r:?}");
    assert_eq!(w.driver.qm().stats().ring_faults, 1);
    q.put();
}
