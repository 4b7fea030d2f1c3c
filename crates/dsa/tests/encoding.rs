//! Descriptor and completion-record encodings pinned against hand-written bytes (the
//! layout of Linux `struct dsa_hw_desc` / `struct dsa_completion_record`), round trips,
//! and random descriptors thrown at the device.

mod common;

use common::*;
use proptest::prelude::*;
use sva_dsa::{
    CompletionRecord, DescFlags, Descriptor, DeviceConfig, FaultInfo, Opcode, Status, StatusByte,
};

#[test]
fn memmove_descriptor_bytes() {
    let mut d = Descriptor::memmove(0x1122_3344_5566_7780, 0x1000, 0x2000, 0x100);
    d.pasid = 0x12345;
    d.privileged = true;
    d.flags.set_bof(true);
    d.int_handle = 0xabcd;
    #[rustfmt::skip]
    let want: [u8; 64] = [
        0x45, 0x23, 0x01, 0x80, // pasid 0x12345, priv (bit 31)
        0x0e, 0x00, 0x00, 0x03, // flags BOF | CRAV | RCR, opcode MEMMOVE
        0x80, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // completion_addr
        0x00, 0x10, 0, 0, 0, 0, 0, 0, // src_addr
        0x00, 0x20, 0, 0, 0, 0, 0, 0, // dst_addr
        0x00, 0x01, 0x00, 0x00, // xfer_size
        0xcd, 0xab, // int_handle
        0x00, 0x00, // rsvd
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(d.encode(), want);
    assert_eq!(Descriptor::decode(&want), d);
    assert_eq!(d.word0().into_bits(), 0x0300_000e_8001_2345);
}

#[test]
fn op_specific_fields_sit_at_byte_40() {
    let d = Descriptor::dualcast(0x40, 0x1000, 0x2000, 0x3000, 64);
    let b = d.encode();
    assert_eq!(b[7], 0x09);
    assert_eq!(&b[40..48], &0x3000u64.to_le_bytes(), "dest2");
    let d = Descriptor::crc32c(0x40, 0x1000, 64, 0xdead_beef);
    let b = d.encode();
    assert_eq!((b[7], &b[24..32]), (0x10, &[0u8; 8][..]));
    assert_eq!(&b[40..44], &[0xef, 0xbe, 0xad, 0xde], "crc_seed");
    let mut d = Descriptor::compare(0x40, 0x1000, 0x2000, 64);
    d.set_expected_res(1);
    let b = d.encode();
    assert_eq!(
        (b[4], b[5], b[7], b[40]),
        (0x8c, 0x00, 0x05, 1),
        "CR|RCR|CRAV, compare"
    );
    assert_eq!(&b[24..32], &0x2000u64.to_le_bytes(), "src2 in the dst slot");
    let b = Descriptor::compare_pattern(0x40, 0x1000, 0x0102_0304_0506_0708, 64).encode();
    assert_eq!(
        (b[7], &b[24..32]),
        (0x06, &[8u8, 7, 6, 5, 4, 3, 2, 1][..]),
        "pattern"
    );
    let b = Descriptor::memfill(0x40, 0x2000, 0xaa, 64).encode();
    assert_eq!(
        (b[7], b[16], &b[24..26]),
        (0x04, 0xaa, &[0x00u8, 0x20][..]),
        "pattern in src"
    );
    let b = Descriptor::batch(0x40, 0x8000, 5).encode();
    assert_eq!((b[7], &b[16..18], b[32]), (0x01, &[0x00u8, 0x80][..], 5));
}

#[test]
fn completion_record_bytes() {
    let mut r = CompletionRecord {
        status: StatusByte::new()
            .with_code(Status::PageFaultNoBof.code())
            .with_write(true),
        result: 1,
        fault_info: FaultInfo::new().with_write(true),
        reserved: 0,
        bytes_completed: 0x1234,
        fault_addr: 0x0dea_dbee_f000,
        op_specific: [0; 16],
    };
    r.set_crc_val(0x8765_4321);
    #[rustfmt::skip]
    let want: [u8; 32] = [
        0x83, 0x01, 0x01, 0x00, // status | DSA_COMP_STATUS_WRITE, result, fault_info, rsvd
        0x34, 0x12, 0x00, 0x00, // bytes_completed
        0x00, 0xf0, 0xee, 0xdb, 0xea, 0x0d, 0x00, 0x00, // fault_addr
        0x21, 0x43, 0x65, 0x87, 0, 0, 0, 0, // crc_val
        0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(r.encode(), want);
    assert_eq!(CompletionRecord::decode(&want), r);
    assert_eq!(r.status(), Some(Status::PageFaultNoBof));
    assert!(r.fault_on_write() && r.is_complete() && !r.is_success());
}

#[test]
fn status_codes_are_the_idxd_values() {
    for (s, v) in [
        (Status::Success, 0x01),
        (Status::SuccessPred, 0x02),
        (Status::PageFaultNoBof, 0x03),
        (Status::PageFaultIr, 0x04),
        (Status::BatchFail, 0x05),
        (Status::BatchPageFault, 0x06),
        (Status::BadOpcode, 0x10),
        (Status::InvalidFlags, 0x11),
        (Status::NonZeroReserved, 0x12),
        (Status::XferErange, 0x13),
        (Status::DescCountErange, 0x14),
        (Status::OverlapBuffers, 0x16),
        (Status::DcastErr, 0x17),
        (Status::DescListAlign, 0x18),
        (Status::CraXlat, 0x1a),
        (Status::CraAlign, 0x1b),
        (Status::TranslationFail, 0x22),
    ] {
        assert_eq!(s.code(), v, "{s:?}");
    }
    assert_eq!(
        (
            DescFlags::FENCE,
            DescFlags::BOF,
            DescFlags::CRAV,
            DescFlags::RCR,
            DescFlags::RCI
        ),
        (0x1, 0x2, 0x4, 0x8, 0x10)
    );
    assert_eq!(Opcode::CrcGen.raw(), 0x10);
    assert_eq!(Opcode::Dualcast.raw(), 0x09);
}

proptest! {
    #[test]
    fn descriptors_round_trip_every_bit(bytes in proptest::collection::vec(any::<u8>(), 64)) {
        let mut b = [0u8; 64];
        b.copy_from_slice(&bytes);
        prop_assert_eq!(Descriptor::decode(&b).encode(), b);
    }

    #[test]
    fn records_round_trip_every_bit(bytes in proptest::collection::vec(any::<u8>(), 32)) {
        let mut b = [0u8; 32];
        b.copy_from_slice(&bytes);
        prop_assert_eq!(CompletionRecord::decode(&b).encode(), b);
    }
}

/// Random descriptor bytes, biased towards the implemented opcodes and small sizes so
/// that many of them get past validation.
fn random_descriptor() -> impl Strategy<Value = [u8; 64]> {
    (
        proptest::collection::vec(any::<u8>(), 64),
        prop_oneof![
            1 => Just(None),
            4 => proptest::sample::select(vec![0u8, 1, 2, 3, 4, 5, 6, 9, 0x10]).prop_map(Some),
        ],
        prop_oneof![Just(None), (0u32..0x3000).prop_map(Some)],
        prop_oneof![
            1 => Just(None),
            3 => (0u64..0x40).prop_map(|a| Some(0x40_0000 + a * 64)),
        ],
        proptest::bool::weighted(0.8),
    )
        .prop_map(|(bytes, opcode, size, addr, clean)| {
            let mut b = [0u8; 64];
            b.copy_from_slice(&bytes);
            if let Some(op) = opcode {
                b[7] = op;
            }
            if let Some(size) = size {
                b[32..36].copy_from_slice(&size.to_le_bytes());
            }
            if let Some(a) = addr {
                b[16..24].copy_from_slice(&a.to_le_bytes());
                b[24..32].copy_from_slice(&(a + 0x2000).to_le_bytes());
                b[8..16].copy_from_slice(&(0x40_8000 + (a & 0xfc0)).to_le_bytes());
            }
            if clean {
                // Zero the reserved fields and the op-specific bytes.
                b[2] &= 0x0f;
                b[3] &= 0x80;
                b[38] = 0;
                b[39] = 0;
                b[40..64].fill(0);
                b[4] &= !0x40;
                b[6] = 0;
            }
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// No descriptor makes the device panic or hang: after any mix, a drain on each work
    /// queue completes and the device still copies correctly.
    #[test]
    fn random_descriptors_never_break_the_device(
        descs in proptest::collection::vec(random_descriptor(), 1..24),
        to_shared in proptest::collection::vec(any::<bool>(), 24),
    ) {
        let rig = rig_with(DeviceConfig {
            wqs: vec![dedicated(64), shared(64)],
            engines: 2,
            max_xfer_size: 0x4000,
            max_batch_size: 8,
            ..DeviceConfig::default()
        });
        rig.map_records();
        rig.dma.map(A, 0x40_0000, 0x8000);
        rig.dma.map(B, 0x40_0000, 0x8000);
        for (d, shared) in descs.iter().zip(&to_shared) {
            if *shared {
                rig.swq.enqueue(0, d, Some(B)).unwrap();
            } else {
                rig.dwq.write(0, d).unwrap();
            }
        }
        rig.settle();
        rig.clear(B, CR + 0x400);
        prop_assert!(rig.submit_shared(&Descriptor::drain(CR + 0x400), B));
        prop_assert_eq!(rig.wait(B, CR + 0x400).status(), Some(Status::Success));

        let src = data(300, 1);
        rig.dma.put(A, 0x90_0000, &src);
        rig.dma.map(A, 0x91_0000, 300);
        let r = rig.run(&Descriptor::memmove(0, 0x90_0000, 0x91_0000, 300));
        prop_assert_eq!(r.status(), Some(Status::Success));
        prop_assert_eq!(rig.dma.get(A, 0x91_0000, 300), src);
    }
}
