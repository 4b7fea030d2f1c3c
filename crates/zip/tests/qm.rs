//! The QM and ZIP engine driven directly through a queue's doorbell page and rings, over
//! an in-test DMA of 4 KiB pages.

mod common;

use common::{PAGE, Rig, iova, random_bytes, user};
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sva_mm::IoError;
use sva_pcie::FaultReason;
use sva_zip::qm::{QpError, doorbell_cmd};
use sva_zip::sqe::{Dw9, MAX_REQUEST_SIZE, ReqType, fault_code, status};
use sva_zip::{Alg, QueueType, Sqe};

const TEXT: &str = include_str!("../../../README.md");
const SRC: u64 = 0x4000_0000;
const DST: u64 = 0x5000_0000;

fn cpu_inflate(alg: Alg, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match alg {
        Alg::Deflate => flate2::read::DeflateDecoder::new(data).read_to_end(&mut out),
        Alg::Zlib => flate2::read::ZlibDecoder::new(data).read_to_end(&mut out),
        Alg::Gzip => flate2::read::GzDecoder::new(data).read_to_end(&mut out),
    }
    .expect("a standard inflater reads the engine's output");
    out
}

fn cpu_deflate(alg: Alg, data: &[u8]) -> Vec<u8> {
    let level = flate2::Compression::new(9);
    match alg {
        Alg::Deflate => {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), level);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Alg::Zlib => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Alg::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
    }
}

fn request(req: ReqType, len: usize, cap: usize, tag: u32) -> Sqe {
    Sqe::request(req, SRC, len as u32, DST, cap as u32, tag)
}

/// Compresses `data` on the engine and checks a CPU inflater gets it back.
fn round_trip(rig: &mut Rig, alg: Alg, data: &[u8]) -> Sqe {
    rig.dma.put(user(), SRC, data);
    let done = rig.run(&request(
        ReqType::compress(alg),
        data.len(),
        data.len() + 1024,
        7,
    ));
    assert!(
        matches!(
            done.status(),
            status::SUCCESS | status::NEGATIVE_COMPRESSION
        ),
        "status {:#x}",
        done.status()
    );
    assert_eq!(done.consumed as usize, data.len());
    assert_eq!(done.tag(), 7);
    let out = rig
        .dma
        .get(user(), DST, done.produced as usize)
        .expect("written");
    assert_eq!(cpu_inflate(alg, &out), data);
    done
}

#[test]
fn compresses_text_in_every_format() {
    let mut rig = Rig::new(8, 8, 1);
    for alg in Alg::ALL {
        let done = round_trip(&mut rig, alg, TEXT.as_bytes());
        assert_eq!(done.status(), status::SUCCESS);
        assert!(done.produced < done.consumed, "text compresses");
        assert_eq!(done.isize as usize, TEXT.len());
        let want = match alg {
            Alg::Deflate => 0,
            Alg::Zlib => sva_zip::codec::adler32(TEXT.as_bytes()),
            Alg::Gzip => sva_zip::codec::crc32(TEXT.as_bytes()),
        };
        assert_eq!(done.checksum, want);
    }
    // zlib and gzip framing as the RFCs have it.
    rig.run(&request(ReqType::compress(Alg::Gzip), 100, 4096, 1));
    let head = rig.dma.get(user(), DST, 3).unwrap();
    assert_eq!(head, [0x1f, 0x8b, 8]);
    rig.run(&request(ReqType::compress(Alg::Zlib), 100, 4096, 1));
    let head = rig.dma.get(user(), DST, 2).unwrap();
    assert_eq!((u16::from(head[0]) << 8 | u16::from(head[1])) % 31, 0);
    assert_eq!(head[0] & 0x0f, 8);
    let s = rig.qm.stats();
    assert_eq!(s.by_type[&ReqType::compress(Alg::Zlib)], 2);
    assert!(s.bytes_in >= 3 * TEXT.len() as u64);
}

#[test]
fn compresses_random_data_with_negative_compression() {
    let mut rig = Rig::new(8, 8, 2);
    for (i, alg) in Alg::ALL.into_iter().enumerate() {
        let data = random_bytes(i as u64, 200_000 + i * 4093);
        let done = round_trip(&mut rig, alg, &data);
        assert_eq!(done.status(), status::NEGATIVE_COMPRESSION);
    }
    // Mixed data: compressible runs among random bytes, crossing many pages.
    let mut data = random_bytes(99, 70_000);
    data.extend(std::iter::repeat_n(b'z', 50_000));
    data.extend(random_bytes(100, 10_001));
    round_trip(&mut rig, Alg::Zlib, &data);
}

#[test]
fn decompresses_what_flate2_compressed() {
    let mut rig = Rig::new(8, 8, 1);
    let mut data = TEXT.as_bytes().repeat(3);
    data.extend(random_bytes(3, 5000));
    for alg in Alg::ALL {
        let packed = cpu_deflate(alg, &data);
        rig.dma.put(user(), SRC, &packed);
        let done = rig.run(&request(
            ReqType::decompress(alg),
            packed.len(),
            data.len(),
            9,
        ));
        assert_eq!(done.status(), status::DECOMP_END);
        assert!(done.dw3.last_block());
        assert_eq!(done.consumed as usize, packed.len());
        assert_eq!(done.produced as usize, data.len());
        assert_eq!(rig.dma.get(user(), DST, data.len()).unwrap(), data);
    }
}

#[test]
fn decompression_queue_decompresses_plain_request_types() {
    let mut rig = Rig::with(4, 4, 1, QueueType::Decompress, true);
    let packed = cpu_deflate(Alg::Gzip, TEXT.as_bytes());
    rig.dma.put(user(), SRC, &packed);
    let done = rig.run(&request(
        ReqType::compress(Alg::Gzip),
        packed.len(),
        TEXT.len(),
        1,
    ));
    assert_eq!(done.status(), status::DECOMP_END);
    assert_eq!(
        rig.dma.get(user(), DST, TEXT.len()).unwrap(),
        TEXT.as_bytes()
    );
}

#[test]
fn garbage_and_corruption_give_error_statuses() {
    let mut rig = Rig::new(8, 8, 1);
    let junk = random_bytes(7, 3000);
    for alg in Alg::ALL {
        rig.dma.put(user(), SRC, &junk);
        let done = rig.run(&request(ReqType::decompress(alg), junk.len(), 1 << 20, 1));
        assert_eq!(done.status(), status::DATA_ERROR, "{alg:?}");
        assert_eq!(done.produced, 0);
        // Empty input.
        let done = rig.run(&request(ReqType::decompress(alg), 0, 100, 1));
        assert_eq!(done.status(), status::DATA_ERROR);
    }
    // A flipped checksum byte: CRC error; a cut stream: data error.
    for alg in [Alg::Zlib, Alg::Gzip] {
        let mut packed = cpu_deflate(alg, TEXT.as_bytes());
        let n = packed.len();
        // A byte of the Adler-32 (zlib), of the CRC-32 (gzip).
        let at = if alg == Alg::Zlib { n - 2 } else { n - 6 };
        packed[at] ^= 0x40;
        rig.dma.put(user(), SRC, &packed);
        let done = rig.run(&request(ReqType::decompress(alg), n, TEXT.len(), 1));
        assert_eq!(done.status(), status::CRC_ERROR, "{alg:?}");
        let done = rig.run(&request(ReqType::decompress(alg), n / 2, TEXT.len(), 1));
        assert_eq!(done.status(), status::DATA_ERROR, "{alg:?}");
    }
    let s = rig.qm.stats();
    assert_eq!(s.by_status[&status::CRC_ERROR], 2);
}

#[test]
fn output_too_small_writes_nothing() {
    let mut rig = Rig::new(4, 4, 1);
    rig.dma.put(user(), SRC, TEXT.as_bytes());
    rig.dma.put(user(), DST, &[0xa5; 8192]);
    let done = rig.run(&request(ReqType::compress(Alg::Zlib), TEXT.len(), 64, 1));
    assert_eq!(done.status(), status::OUTPUT_TOO_SMALL);
    assert_eq!((done.produced, done.consumed), (0, 0));
    assert_eq!(rig.dma.get(user(), DST, 8192).unwrap(), vec![0xa5; 8192]);
    let packed = cpu_deflate(Alg::Deflate, TEXT.as_bytes());
    rig.dma.put(user(), SRC, &packed);
    let done = rig.run(&request(
        ReqType::decompress(Alg::Deflate),
        packed.len(),
        TEXT.len() - 1,
        1,
    ));
    assert_eq!(done.status(), status::OUTPUT_TOO_SMALL);
    assert_eq!(rig.dma.get(user(), DST, 8192).unwrap(), vec![0xa5; 8192]);
}

#[test]
fn malformed_requests_are_refused() {
    let mut rig = Rig::new(4, 4, 1);
    let mut bad_type = request(ReqType::compress(Alg::Zlib), 10, 100, 1);
    bad_type.dw9 = Dw9::new().with_req_type(0x42);
    assert_eq!(rig.run(&bad_type).status(), status::BAD_REQUEST);
    let mut sgl = request(ReqType::compress(Alg::Zlib), 10, 100, 1);
    sgl.dw9.set_buf_type(1);
    assert_eq!(rig.run(&sgl).status(), status::BAD_REQUEST);
    let mut stateful = request(ReqType::compress(Alg::Zlib), 10, 100, 1);
    stateful.dw7.set_stream_mode(true);
    assert_eq!(rig.run(&stateful).status(), status::BAD_REQUEST);
    let mut odd = request(ReqType::compress(Alg::Zlib), 10, 100, 1);
    odd.dw7.set_sqe_type(5);
    assert_eq!(rig.run(&odd).status(), status::BAD_REQUEST);
    let big = request(
        ReqType::compress(Alg::Zlib),
        MAX_REQUEST_SIZE as usize + 1,
        100,
        1,
    );
    assert_eq!(rig.run(&big).status(), status::BAD_LENGTH);
    let mut wrap = request(ReqType::compress(Alg::Zlib), 10, 100, 1);
    wrap.source_addr = u64::MAX - 4;
    assert_eq!(rig.run(&wrap).status(), status::BAD_LENGTH);
    let mut wrap_out = request(ReqType::compress(Alg::Zlib), 10, 100, 1);
    wrap_out.dest_addr = u64::MAX - 4;
    assert_eq!(rig.run(&wrap_out).status(), status::BAD_LENGTH);
    assert_eq!(rig.qm.stats().bad_type, 1);
}

#[test]
fn largest_request_is_8_mib() {
    let mut rig = Rig::new(4, 4, 1);
    let data: Vec<u8> = TEXT
        .bytes()
        .cycle()
        .take(MAX_REQUEST_SIZE as usize)
        .collect();
    rig.dma.put(user(), SRC, &data);
    let done = rig.run(&request(
        ReqType::compress(Alg::Deflate),
        data.len(),
        MAX_REQUEST_SIZE as usize,
        1,
    ));
    assert_eq!(done.status(), status::SUCCESS);
    let out = rig.dma.get(user(), DST, done.produced as usize).unwrap();
    assert!(cpu_inflate(Alg::Deflate, &out) == data);
}

#[test]
fn ring_wraps_with_phase_flips() {
    for depth in [2u16, 4, 5] {
        let mut rig = Rig::new(depth, depth, 1);
        rig.dma.put(user(), SRC, TEXT.as_bytes());
        let rounds = u32::from(depth) * 3 + 1;
        for i in 0..rounds {
            let slot = rig.submit(&request(
                ReqType::compress(Alg::Gzip),
                1000 + i as usize,
                4096,
                i,
            ));
            let expected_phase = rig.phase;
            let (cqe, sqe) = rig.wait();
            assert_eq!(cqe.phase(), expected_phase);
            assert_eq!(cqe.sq_head, slot);
            assert_eq!(cqe.cmd_id, i as u16);
            assert_eq!(sqe.tag(), i);
            assert_eq!(sqe.consumed, 1000 + i);
        }
        let st = rig.qm.qp_status(rig.qp).unwrap();
        assert_eq!(st.cq_tail, (rounds % u32::from(depth)) as u16);
        assert_eq!(st.phase, (rounds / u32::from(depth)) % 2 == 0);
        assert!(st.running);
    }
}

#[test]
fn many_requests_in_flight_complete_in_order() {
    let mut rig = Rig::new(16, 16, 3);
    let packed = cpu_deflate(Alg::Zlib, TEXT.as_bytes());
    rig.dma.put(user(), SRC, &packed);
    for round in 0..4u32 {
        let mut slots = Vec::new();
        for i in 0..15u32 {
            let tag = round * 100 + i;
            let mut sqe = request(
                ReqType::decompress(Alg::Zlib),
                packed.len(),
                TEXT.len(),
                tag,
            );
            sqe.dest_addr = DST + u64::from(i) * 0x10_0000;
            slots.push(rig.queue(&sqe));
        }
        // One doorbell for all fifteen.
        rig.kick();
        for (i, slot) in slots.into_iter().enumerate() {
            let (cqe, sqe) = rig.wait();
            assert_eq!(cqe.sq_head, slot);
            assert_eq!(sqe.tag(), round * 100 + i as u32);
            assert_eq!(sqe.status(), status::DECOMP_END);
            let at = DST + i as u64 * 0x10_0000;
            assert_eq!(
                rig.dma.get(user(), at, TEXT.len()).unwrap(),
                TEXT.as_bytes()
            );
        }
    }
    assert!(rig.try_poll().is_none());
}

#[test]
fn full_cq_holds_the_engine_back() {
    let mut rig = Rig::new(8, 4, 2);
    rig.dma.put(user(), SRC, b"hello hello hello");
    for i in 0..7 {
        rig.queue(&request(ReqType::compress(Alg::Deflate), 17, 100, i));
    }
    rig.kick();
    // Three completions fill the CQ (one slot stays free); the engine then waits.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rig.qm.qp_status(rig.qp).unwrap().cq_tail != 3 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    let st = rig.qm.qp_status(rig.qp).unwrap();
    assert_eq!((st.sq_head, st.cq_tail), (3, 3));
    // Returning CQ slots lets the rest through.
    for i in 0..7 {
        let (_, sqe) = rig.wait();
        assert_eq!(sqe.tag(), i);
    }
}

#[test]
fn dma_faults_end_the_request_with_the_address() {
    let mut rig = Rig::with(4, 4, 1, QueueType::Compress, false);
    // Source: first page present, second absent.
    rig.dma.put(user(), SRC, &vec![1u8; PAGE as usize]);
    rig.dma.map(user(), DST, 0x10000);
    let done = rig.run(&request(ReqType::compress(Alg::Zlib), 6000, 0x10000, 1));
    assert_eq!(done.status(), status::ADDR_FAULT);
    assert_eq!(done.fault_addr, SRC + PAGE);
    assert!(!done.dw3.fault_write());
    assert_eq!(
        fault_code::decode(done.dw3.fault_reason()),
        Some(FaultReason::Invalid)
    );
    assert_eq!(done.produced, 0);
    // Destination: one page present, the output needs more.
    let data = random_bytes(1, 20_000);
    rig.dma.put(user(), SRC, &data);
    rig.dma.unmap(user(), DST, 0x10000);
    rig.dma.put(user(), DST - PAGE, &[0xee; PAGE as usize]);
    rig.dma.map(user(), DST, PAGE);
    let done = rig.run(&request(
        ReqType::compress(Alg::Deflate),
        data.len(),
        40_000,
        2,
    ));
    assert_eq!(done.status(), status::ADDR_FAULT);
    assert_eq!(done.fault_addr, DST + PAGE);
    assert!(done.dw3.fault_write());
    assert_eq!(done.produced as u64, PAGE);
    // Nothing before the destination, nothing after the fault.
    assert_eq!(
        rig.dma.get(user(), DST - PAGE, PAGE as usize).unwrap(),
        vec![0xee; PAGE as usize]
    );
    assert!(!rig.dma.is_mapped(user(), DST + PAGE));
    let s = rig.qm.stats();
    assert_eq!(s.dma_faults, 2);
    assert_eq!(s.by_status[&status::ADDR_FAULT], 2);
    // The queue goes on.
    rig.dma.map(user(), DST, 0x10000);
    let done = rig.run(&request(
        ReqType::compress(Alg::Deflate),
        data.len(),
        40_000,
        3,
    ));
    assert_eq!(done.status(), status::NEGATIVE_COMPRESSION);
}

#[test]
fn stop_with_requests_queued_returns_when_quiet() {
    let mut rig = Rig::new(32, 32, 2);
    let data = random_bytes(5, 256 * 1024);
    rig.dma.put(user(), SRC, &data);
    // Slow memory: each access takes a while.
    rig.dma.delay_us.store(300, Ordering::Relaxed);
    for i in 0..31 {
        rig.queue(&request(
            ReqType::compress(Alg::Zlib),
            data.len(),
            data.len() + 1024,
            i,
        ));
    }
    rig.kick();
    std::thread::sleep(Duration::from_millis(20));
    rig.qm.stop_qp(rig.qp).unwrap();
    let st = rig.qm.qp_status(rig.qp).unwrap();
    assert!(!st.busy && !st.running);
    assert!(st.sq_head != st.sq_tail, "not everything was fetched");
    // Quiet: no access after stop returned.
    let before = rig.dma.accesses.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(rig.dma.accesses.load(Ordering::Relaxed), before);
    // Doorbells on a stopped queue are ignored.
    let ignored = rig.qm.stats().ignored_doorbells;
    rig.kick();
    assert_eq!(rig.qm.stats().ignored_doorbells, ignored + 1);
    // What completed did so in order; at most the one in flight was aborted.
    let mut aborted = 0;
    let mut n = 0;
    while let Some((_, sqe)) = rig.try_poll() {
        assert_eq!(sqe.tag(), n);
        n += 1;
        match sqe.status() {
            status::ABORTED => aborted += 1,
            s => assert_eq!(s, status::NEGATIVE_COMPRESSION),
        }
    }
    assert!(aborted <= 1);
    assert_eq!(u32::from(st.sq_head), n);
}

#[test]
fn doorbells_are_isolated_per_queue() {
    let mut rig = Rig::new(4, 4, 1);
    rig.dma.put(user(), SRC, &[b'a'; 300]);
    rig.queue(&request(ReqType::compress(Alg::Zlib), 300, 1000, 1));
    // Queue 2's page, queue 1's number: ignored.
    let v = sva_zip::qm::Doorbell::new()
        .with_sqn(1)
        .with_cmd(doorbell_cmd::SQ)
        .with_index(1);
    rig.db.write(0, &v.into_bits().to_le_bytes()).unwrap();
    // Half a doorbell, or at another offset: ignored.
    rig.db.write(0, &[1, 0, 0, 0]).unwrap();
    rig.db.write(8, &v.into_bits().to_le_bytes()).unwrap();
    // An index beyond the depth: ignored.
    rig.ring(doorbell_cmd::SQ, 9);
    std::thread::sleep(Duration::from_millis(20));
    assert!(rig.try_poll().is_none());
    assert_eq!(rig.qm.stats().ignored_doorbells, 4);
    rig.kick();
    assert_eq!(rig.wait().1.status(), status::SUCCESS);
    let mut buf = [0xffu8; 8];
    rig.db.read(0, &mut buf).unwrap();
    assert_eq!(buf, [0; 8]);
    // Once the device is gone the page is a bus error.
    let db = rig.db.clone();
    drop(rig);
    assert_eq!(db.write(0, &[0; 8]), Err(IoError::Bus(0)));
}

#[test]
fn ring_fault_puts_the_queue_in_error() {
    let mut rig = Rig::new(4, 4, 1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    rig.qm
        .set_error_handler(Arc::new(move |qp, e| s2.lock().unwrap().push((qp, e))));
    rig.dma.put(user(), SRC, &[b'a'; 300]);
    rig.dma.unmap(iova(), common::CQ_BASE, PAGE);
    rig.submit(&request(ReqType::compress(Alg::Zlib), 300, 1000, 1));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    let (qp, QpError::RingFault(f)) = seen.lock().unwrap()[0];
    assert_eq!(qp, rig.qp);
    assert_eq!(f.addr, common::CQ_BASE);
    assert!(f.write);
    let st = rig.qm.qp_status(rig.qp).unwrap();
    assert!(!st.running);
    assert_eq!(rig.qm.stats().ring_faults, 1);
    // The results did reach the SQE slot before the CQE write faulted.
    let raw = rig.dma.get(iova(), common::SQ_BASE, 128).unwrap();
    assert_eq!(
        Sqe::decode(raw.as_slice().try_into().unwrap()).consumed,
        300
    );
    // Restarting after the driver fixed things up works.
    rig.dma.map(iova(), common::CQ_BASE, PAGE);
    rig.qm.stop_qp(rig.qp).unwrap();
    rig.qm.start_qp(rig.qp).unwrap();
    rig.tail = 0;
    rig.head = 0;
    rig.phase = true;
    assert_eq!(
        rig.run(&request(ReqType::compress(Alg::Zlib), 300, 1000, 2))
            .status(),
        status::SUCCESS
    );
}

#[test]
fn dropping_the_device_stops_its_engines() {
    let rig = Rig::new(4, 4, 4);
    let dma = rig.dma.clone();
    drop(rig);
    // The engines hold the DMA while they run; all of them are gone.
    assert_eq!(Arc::strong_count(&dma), 1);
}

#[test]
fn v2_sqe_type_keeps_its_tag_in_dw13() {
    let mut rig = Rig::new(4, 4, 1);
    rig.dma.put(user(), SRC, &[b'a'; 300]);
    let mut sqe = request(ReqType::compress(Alg::Zlib), 300, 1000, 0);
    sqe.dw7.set_sqe_type(0);
    sqe.set_tag(0xabcd_1234);
    let slot = rig.submit(&sqe);
    let (cqe, done) = rig.wait();
    assert_eq!((cqe.sq_head, cqe.cmd_id), (slot, 0x1234));
    assert_eq!(done.tag_v2, 0xabcd_1234);
    assert_eq!(done.status(), status::SUCCESS);
}
