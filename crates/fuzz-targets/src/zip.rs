//! The ZIP queue manager fed arbitrary SQEs: [`zip_sqe`].

use crate::dma::PageDma;
use crate::{Input, watch};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sva_mm::IoMemory;
use sva_zip::cqe::{CQE_SIZE, Cqe};
use sva_zip::qm::{Doorbell, QpSetup, doorbell_cmd};
use sva_zip::sqe::{SQE_SIZE, status};
use sva_zip::{Alg, Qm, QmConfig, QueueType, ReqType, Sqe};

const PASID: u16 = 5;
const SQ_BASE: u64 = 0x10_0000;
const CQ_BASE: u64 = 0x20_0000;
/// Source buffer (mapped, holds bytes from the input) and destination (mapped).
const SRC: u64 = 0x4000_0000;
const SRC_SIZE: u64 = 0x1_0000;
const DST: u64 = 0x5000_0000;
const DST_SIZE: u64 = 0x4_0000;
const QP: u16 = 1;
const MAX_OPS: usize = 32;
/// How long one request may take before it counts as a hang.
const DEADLINE: Duration = Duration::from_secs(20);

fn user() -> Option<u32> {
    Some(u32::from(PASID))
}

struct Rig {
    dma: Arc<PageDma>,
    qm: Qm,
    db: Arc<dyn IoMemory>,
    setup: QpSetup,
    tail: u16,
    head: u16,
    phase: bool,
}

impl Rig {
    fn new(sq_depth: u16, cq_depth: u16, qtype: QueueType) -> Self {
        let dma = Arc::new(PageDma::new(0, 0));
        let qm = Qm::new(
            dma.clone(),
            QmConfig {
                qp_num: 2,
                engines: 1,
                stop_timeout: DEADLINE,
            },
        );
        let setup = QpSetup {
            qp: QP,
            sq_base: SQ_BASE,
            sq_depth,
            cq_base: CQ_BASE,
            cq_depth,
            pasid: Some(PASID),
            qtype,
        };
        dma.map(None, SQ_BASE, u64::from(sq_depth) * SQE_SIZE as u64);
        dma.map(None, CQ_BASE, u64::from(cq_depth) * CQE_SIZE as u64);
        dma.map(user(), SRC, SRC_SIZE);
        dma.map(user(), DST, DST_SIZE);
        qm.setup_qp(&setup).expect("valid queue pair set-up");
        qm.start_qp(QP).expect("start");
        let db = qm.doorbell(QP).expect("doorbell page");
        Self {
            dma,
            qm,
            db,
            setup,
            tail: 0,
            head: 0,
            phase: true,
        }
    }

    fn ring(&self, cmd: u8, index: u16) {
        let v = Doorbell::new().with_sqn(QP).with_cmd(cmd).with_index(index);
        self.db
            .write(0, &v.into_bits().to_le_bytes())
            .expect("doorbell store");
    }

    /// Stops and restarts the queue with clean rings (what a driver does to recover).
    fn restart(&mut self) {
        self.qm.stop_qp(QP).expect("the engine lets go in time");
        self.dma.put(
            None,
            CQ_BASE,
            &vec![0u8; usize::from(self.setup.cq_depth) * CQE_SIZE],
        );
        self.qm.start_qp(QP).expect("restart");
        self.tail = 0;
        self.head = 0;
        self.phase = true;
    }

    /// Submits one SQE and waits for its completion; returns the SQE as written back.
    fn run(&mut self, raw: &[u8; SQE_SIZE]) -> Sqe {
        let slot = self.tail;
        self.dma.put(
            None,
            SQ_BASE + u64::from(slot) * SQE_SIZE as u64,
            raw.as_slice(),
        );
        self.tail = (self.tail + 1) % self.setup.sq_depth;
        self.ring(doorbell_cmd::SQ, self.tail);
        let deadline = Instant::now() + DEADLINE;
        let cqe = loop {
            let at = CQ_BASE + u64::from(self.head) * CQE_SIZE as u64;
            let raw = self.dma.get(None, at, CQE_SIZE).expect("CQ mapped");
            let cqe = Cqe::decode(raw.as_slice().try_into().expect("16 bytes"));
            if cqe.phase() == self.phase {
                break cqe;
            }
            let st = self.qm.qp_status(QP).expect("queue pair");
            assert!(st.error.is_none(), "the queue went into error: {st:?}");
            assert!(
                Instant::now() < deadline,
                "no completion for slot {slot}: {st:?}"
            );
            std::thread::sleep(Duration::from_micros(50));
        };
        assert_eq!(cqe.sq_head, slot, "completion for the wrong slot");
        assert_eq!(cqe.sq_num, QP);
        self.head = (self.head + 1) % self.setup.cq_depth;
        if self.head == 0 {
            self.phase = !self.phase;
        }
        self.ring(doorbell_cmd::CQ, self.head);
        let at = SQ_BASE + u64::from(slot) * SQE_SIZE as u64;
        let back = self.dma.get(None, at, SQE_SIZE).expect("SQ mapped");
        let done = Sqe::decode(back.as_slice().try_into().expect("128 bytes"));
        // Only the result dwords (0-6, 30-31) change.
        let before = Sqe::decode(raw).dwords();
        let after = done.dwords();
        assert_eq!(before[7..30], after[7..30], "request fields were changed");
        if done.status() == status::ADDR_FAULT {
            assert_ne!(done.dw3.fault_reason(), 0, "a fault without a reason");
        }
        done
    }
}

/// Points the SQE at the mapped buffers with a valid request type, so the codec runs on
/// fuzzed data and fuzzed lengths.
fn aim(raw: &mut [u8; SQE_SIZE], kind: u8) {
    let mut s = Sqe::decode(raw);
    s.source_addr = SRC + u64::from(s.source_addr as u16 % 0x1000);
    s.input_data_length %= (SRC_SIZE - 0x1000) as u32 + 1;
    s.dest_addr = DST + u64::from(s.dest_addr as u16 % 0x100);
    s.dest_avail_out %= (DST_SIZE - 0x100) as u32 + 1;
    let alg = Alg::ALL[usize::from(kind % 3)];
    let req = if kind & 4 != 0 {
        ReqType::decompress(alg)
    } else {
        ReqType::compress(alg)
    };
    s.dw9.set_req_type(req.encode());
    s.dw9.set_buf_type(0);
    s.dw7.set_stream_mode(false);
    s.dw7.set_sqe_type(3);
    *raw = s.encode();
}

/// Target `zip_sqe`: a QM with one queue pair (depths and type from the first bytes) over
/// mapped rings, a 64 KiB source buffer filled from the input and a 256 KiB destination.
/// Then a sequence of a control byte and 128 bytes: an SQE submitted as is or aimed at the
/// buffers (each must complete, in order, with only its result dwords changed), 64 bytes
/// written into the source buffer, or an arbitrary doorbell store followed by a queue
/// restart. Afterwards a valid compression must still succeed; no engine thread may panic.
pub fn zip_sqe(data: &[u8]) {
    watch::no_thread_panics("zip_sqe", || run(data));
}

fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let sq_depth = u16::from(input.u8() % 7) + 2;
    let cq_depth = u16::from(input.u8() % 7) + 2;
    let qtype = if input.bool() {
        QueueType::Decompress
    } else {
        QueueType::Compress
    };
    let mut r = Rig::new(sq_depth, cq_depth, qtype);
    let src_len = usize::from(input.u16()) % 0x1000;
    r.dma.put(user(), SRC, input.bytes(src_len));
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let ctl = input.u8();
        let mut raw: [u8; SQE_SIZE] = input.array();
        match ctl % 8 {
            0..=2 => {
                r.run(&raw);
            }
            3..=5 => {
                aim(&mut raw, ctl >> 4);
                r.run(&raw);
            }
            6 => {
                let at = SRC + u64::from(u16::from_le_bytes([raw[0], raw[1]])) % SRC_SIZE;
                r.dma.put(user(), at, &raw[2..66]);
            }
            _ => {
                let offset = if ctl & 0x10 != 0 {
                    u64::from(raw[8]) * 8
                } else {
                    0
                };
                let len = if ctl & 0x20 != 0 {
                    usize::from(raw[9] % 16)
                } else {
                    8
                };
                let _ = r.db.write(offset, &raw[..len]);
                let mut buf = [0u8; 8];
                let _ = r.db.read(offset, &mut buf);
                r.restart();
            }
        }
    }
    let _ = r.qm.stats();
    check(&mut r, qtype);
}

/// A valid request still works: a zlib compression on a compression queue, the
/// decompression of a stored DEFLATE block on a decompression queue.
fn check(r: &mut Rig, qtype: QueueType) {
    let text: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 23) as u8).collect();
    let len = text.len() as u16;
    let (req, input) = match qtype {
        QueueType::Compress => (ReqType::compress(Alg::Zlib), text.clone()),
        QueueType::Decompress => {
            // BFINAL = 1, BTYPE = 00 (stored), LEN, NLEN, the bytes.
            let mut block = vec![0x01];
            block.extend(len.to_le_bytes());
            block.extend((!len).to_le_bytes());
            block.extend(&text);
            (ReqType::decompress(Alg::Deflate), block)
        }
    };
    r.dma.put(user(), SRC, &input);
    let sqe = Sqe::request(req, SRC, input.len() as u32, DST, 4096, 1);
    let done = r.run(&sqe.encode());
    match qtype {
        QueueType::Compress => {
            assert_eq!(done.status(), status::SUCCESS, "a valid request failed");
        }
        QueueType::Decompress => {
            assert!(
                matches!(done.status(), status::SUCCESS | status::DECOMP_END),
                "a valid request failed: status {:#x}",
                done.status()
            );
            assert_eq!(done.produced, u32::from(len));
            assert_eq!(r.dma.get(user(), DST, text.len()), Some(text));
        }
    }
}
