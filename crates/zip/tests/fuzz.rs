//! Random bytes where the device expects SQEs: a completion (or a queue error), never a
//! panic, and the queue keeps working.

mod common;

use common::{Rig, iova, user};
use proptest::prelude::*;
use std::time::Duration;
use sva_zip::cqe::{CQE_SIZE, Cqe};
use sva_zip::sqe::{SQE_SIZE, status};
use sva_zip::{Alg, ReqType, Sqe};

const SRC: u64 = 0x4000_0000;
const DST: u64 = 0x5000_0000;

/// Random SQEs, half of them pointed at mapped memory with a valid request type so the
/// codec sees random input too.
fn sqe_bytes() -> impl Strategy<Value = [u8; SQE_SIZE]> {
    (
        prop::array::uniform32(any::<u32>()),
        any::<bool>(),
        0u32..70_000,
        0u32..200_000,
        0u8..6,
    )
        .prop_map(|(dws, aim, len, cap, kind)| {
            let mut b = [0u8; SQE_SIZE];
            for (i, d) in dws.iter().enumerate() {
                b[4 * i..4 * i + 4].copy_from_slice(&d.to_le_bytes());
            }
            if aim {
                let mut s = Sqe::decode(&b);
                s.source_addr = SRC + u64::from(len % 4096);
                s.input_data_length = len;
                s.dest_addr = DST;
                s.dest_avail_out = cap;
                let alg = Alg::ALL[usize::from(kind % 3)];
                let req = if kind >= 3 {
                    ReqType::decompress(alg)
                } else {
                    ReqType::compress(alg)
                };
                s.dw9.set_req_type(req.encode());
                s.dw9.set_buf_type(0);
                s.dw7.set_stream_mode(false);
                s.dw7.set_sqe_type(3);
                b = s.encode();
            }
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sqe_encoding_is_lossless(b in prop::array::uniform32(any::<u32>())) {
        let mut raw = [0u8; SQE_SIZE];
        for (i, d) in b.iter().enumerate() {
            raw[4 * i..4 * i + 4].copy_from_slice(&d.to_le_bytes());
        }
        prop_assert_eq!(Sqe::decode(&raw).encode(), raw);
        let c: [u8; CQE_SIZE] = raw[..CQE_SIZE].try_into().unwrap();
        prop_assert_eq!(Cqe::decode(&c).encode(), c);
    }

    #[test]
    fn random_sqes_complete_without_panics(raw in sqe_bytes(), data in prop::collection::vec(any::<u8>(), 0..80_000)) {
        let mut rig = Rig::with(4, 4, 1, sva_zip::QueueType::Compress, false);
        rig.dma.put(user(), SRC, &data);
        rig.dma.map(user(), SRC, 80_000);
        rig.dma.map(user(), DST, 200_000);
        rig.dma.put(iova(), common::SQ_BASE, &raw);
        rig.tail = 1;
        rig.kick();
        let (cqe, done) = rig.poll_timeout(Duration::from_secs(20)).expect("a completion");
        prop_assert_eq!(cqe.sq_head, 0);
        // Results were written back; nothing outside dw0-6 and dw30-31 changed.
        let before = Sqe::decode(&raw).dwords();
        let after = done.dwords();
        for i in 7..30 {
            prop_assert_eq!(before[i], after[i]);
        }
        if done.status() == status::ADDR_FAULT {
            prop_assert!(done.dw3.fault_reason() != 0);
        }
        // The queue still works.
        rig.dma.put(user(), SRC, &[b'q'; 1000]);
        let ok = rig.run(&Sqe::request(ReqType::compress(Alg::Zlib), SRC, 1000, DST, 4096, 1));
        prop_assert_eq!(ok.status(), status::SUCCESS);
    }
}
