//! The device model against a page-map `Dma`: every operation's data checked against the
//! CPU doing the same work, partial completion, block-on-fault, batches, bad descriptors,
//! work-queue submission rules, drains and aborts.

mod common;

use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use sva_addr::Pasid;
use sva_dsa::swerr::{SWERR_POSTED_TO_SHARED_WQ, SWERR_WQ_DISABLED, SWERR_WQ_FULL};
use sva_dsa::{DescFlags, Descriptor, DeviceConfig, Opcode, STATUS_WRITE, Status};
use sva_mm::IoError;

const SRC: u64 = 0x40_0000;
const DST: u64 = 0x80_0000;
const DST2: u64 = 0xc0_0000;

fn status(r: &sva_dsa::CompletionRecord) -> Status {
    r.status().expect("defined status")
}

// ---- operations, compared with the CPU ----

#[test]
fn memmove_copies_across_pages_like_the_cpu() {
    let rig = rig();
    let src = data(3 * PAGE as usize + 123, 7);
    rig.dma.put(A, SRC + 0x321, &src);
    rig.dma.map(A, DST, 5 * PAGE);
    let len = src.len() as u32;
    let r = rig.run(&Descriptor::memmove(0, SRC + 0x321, DST + 0x10, len));
    assert_eq!(status(&r), Status::Success);
    assert_eq!(r.result, 0, "ascending copy");
    assert_eq!(rig.dma.get(A, DST + 0x10, src.len()), src);
    assert_eq!(
        rig.dma.get(A, DST, 0x10),
        vec![0; 0x10],
        "nothing before dst"
    );
    let c = rig.dev.counters();
    assert_eq!(c.opcode(Opcode::Memmove.raw()), 1);
    assert_eq!(c.bytes_read, u64::from(len));
    assert_eq!(c.bytes_written, u64::from(len));
}

#[test]
fn overlapping_memmove_matches_copy_within_in_both_directions() {
    for (from, to) in [(0x100u64, 0x1900u64), (0x1900, 0x100), (0x100, 0x101)] {
        let rig = rig();
        let len = 3 * PAGE as usize;
        let mut cpu = data(len + 0x2000, 3);
        rig.dma.put(A, SRC, &cpu);
        let r = rig.run(&Descriptor::memmove(0, SRC + from, SRC + to, len as u32));
        assert_eq!(status(&r), Status::Success);
        assert_eq!(
            r.result,
            u8::from(to > from),
            "direction for {from:#x}->{to:#x}"
        );
        cpu.copy_within(from as usize..from as usize + len, to as usize);
        assert_eq!(rig.dma.get(A, SRC, cpu.len()), cpu, "{from:#x}->{to:#x}");
    }
}

#[test]
fn memfill_repeats_the_pattern_from_the_start() {
    let rig = rig();
    rig.dma.map(A, DST, 3 * PAGE);
    let pattern = 0x0807_0605_0403_0201u64;
    let len = 2 * PAGE as usize + 13;
    let r = rig.run(&Descriptor::memfill(0, DST + 5, pattern, len as u32));
    assert_eq!(status(&r), Status::Success);
    let want: Vec<u8> = (0..len).map(|i| (i % 8) as u8 + 1).collect();
    assert_eq!(rig.dma.get(A, DST + 5, len), want);
    assert_eq!(rig.dma.get(A, DST + 5 + len as u64, 3), vec![0; 3]);
}

#[test]
fn compare_reports_equality_and_the_first_difference() {
    let rig = rig();
    let a = data(2 * PAGE as usize + 77, 1);
    rig.dma.put(A, SRC + 9, &a);
    rig.dma.put(A, DST + 100, &a);
    let len = a.len() as u32;
    let r = rig.run(&Descriptor::compare(0, SRC + 9, DST + 100, len));
    assert_eq!((status(&r), r.result), (Status::Success, 0));

    // A difference on the second page.
    let at = PAGE as usize + 17;
    rig.dma.put(A, DST + 100 + at as u64, &[a[at] ^ 0x55]);
    let r = rig.run(&Descriptor::compare(0, SRC + 9, DST + 100, len));
    assert_eq!(status(&r), Status::SuccessPred, "CR with expected result 0");
    assert_eq!(r.result, 1);
    assert_eq!(
        r.bytes_completed, at as u32,
        "offset of the first difference"
    );

    // Without CR the status stays Success; with expected result 1 a mismatch is "true".
    let mut d = Descriptor::compare(0, SRC + 9, DST + 100, len);
    d.flags.set_cr(false);
    let r = rig.run(&d);
    assert_eq!((status(&r), r.result), (Status::Success, 1));
    d.flags.set_cr(true);
    d.set_expected_res(1);
    let r = rig.run(&d);
    assert_eq!((status(&r), r.result), (Status::Success, 1));
}

#[test]
fn compare_pattern_checks_every_byte() {
    let rig = rig();
    let pattern = 0xdead_beef_0bad_f00du64;
    let len = PAGE as usize + 300;
    let buf: Vec<u8> = (0..len).map(|i| pattern.to_le_bytes()[i % 8]).collect();
    rig.dma.put(A, SRC + 3, &buf);
    let r = rig.run(&Descriptor::compare_pattern(
        0,
        SRC + 3,
        pattern,
        len as u32,
    ));
    assert_eq!((status(&r), r.result), (Status::Success, 0));
    rig.dma.put(A, SRC + 3 + 4000, &[!buf[4000]]);
    let r = rig.run(&Descriptor::compare_pattern(
        0,
        SRC + 3,
        pattern,
        len as u32,
    ));
    assert_eq!(
        (status(&r), r.result, r.bytes_completed),
        (Status::SuccessPred, 1, 4000)
    );
}

#[test]
fn dualcast_writes_both_destinations() {
    let rig = rig();
    let src = data(2 * PAGE as usize + 1, 9);
    rig.dma.put(A, SRC + 0x80, &src);
    rig.dma.map(A, DST, 4 * PAGE);
    rig.dma.map(A, DST2, 4 * PAGE);
    let r = rig.run(&Descriptor::dualcast(
        0,
        SRC + 0x80,
        DST + 0x7f0,
        DST2 + 0x7f0,
        src.len() as u32,
    ));
    assert_eq!(status(&r), Status::Success);
    assert_eq!(rig.dma.get(A, DST + 0x7f0, src.len()), src);
    assert_eq!(rig.dma.get(A, DST2 + 0x7f0, src.len()), src);
}

#[test]
fn crc32c_matches_the_reference_and_chains_through_the_seed() {
    let rig = rig();
    rig.dma.put(A, SRC, b"123456789");
    let r = rig.run(&Descriptor::crc32c(0, SRC, 9, 0));
    assert_eq!(status(&r), Status::Success);
    assert_eq!(r.crc_val(), 0xe306_9283, "CRC-32C check value");

    let buf = data(3 * PAGE as usize + 5, 4);
    rig.dma.put(A, DST + 1, &buf);
    let r = rig.run(&Descriptor::crc32c(0, DST + 1, buf.len() as u32, 0));
    assert_eq!(r.crc_val(), u64::from(crc32c::crc32c(&buf)));
    let first = rig.run(&Descriptor::crc32c(0, DST + 1, 1000, 0));
    let rest = rig.run(&Descriptor::crc32c(
        0,
        DST + 1001,
        buf.len() as u32 - 1000,
        first.crc_val() as u32,
    ));
    assert_eq!(rest.crc_val(), r.crc_val(), "seeded continuation");
}

#[test]
fn noop_and_drain_complete() {
    let rig = rig();
    let r = rig.run(&Descriptor::noop(0));
    assert_eq!(status(&r), Status::Success);
    let r = rig.run(&Descriptor::drain(0));
    assert_eq!(status(&r), Status::Success);
}

#[test]
fn drain_completes_after_the_earlier_descriptors_of_its_queue() {
    let rig = rig_with(DeviceConfig {
        wqs: vec![dedicated(8), shared(8)],
        engines: 4,
        ..DeviceConfig::default()
    });
    rig.map_records();
    let len = 4 * PAGE as usize;
    rig.dma.put(A, SRC, &data(len, 5));
    rig.dma.map(A, DST, 8 * PAGE);
    rig.dma.close_gate();
    for i in 0..3u64 {
        rig.clear(A, CR + 32 * i);
        rig.submit_dedicated(&Descriptor::memmove(
            CR + 32 * i,
            SRC,
            DST + i * PAGE,
            PAGE as u32,
        ));
    }
    rig.clear(A, CR + 0x200);
    rig.submit_dedicated(&Descriptor::drain(CR + 0x200));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        rig.dma.get(A, CR + 0x200, 1),
        vec![0],
        "drain waits for the gated copies"
    );
    rig.dma.open_gate();
    let drain = rig.wait(A, CR + 0x200);
    assert_eq!(status(&drain), Status::Success);
    for i in 0..3u64 {
        // Already written when the drain's record appeared.
        assert_eq!(rig.dma.get(A, CR + 32 * i, 1), vec![1], "copy {i}");
    }
}

// ---- partial completion and block-on-fault ----

#[test]
fn a_write_fault_without_bof_completes_partially() {
    let rig = rig();
    let src = data(4 * PAGE as usize, 2);
    rig.dma.put(A, SRC, &src);
    rig.dma.map(A, DST, 4 * PAGE);
    rig.dma.unmap(A, DST + 2 * PAGE, PAGE);
    let r = rig.run(&Descriptor::memmove(0, SRC + 8, DST + 8, 3 * PAGE as u32));
    assert_eq!(
        r.status.into_bits(),
        Status::PageFaultNoBof.code() | STATUS_WRITE
    );
    assert!(r.fault_on_write() && r.fault_info.write());
    assert_eq!(r.fault_addr, DST + 2 * PAGE);
    assert_eq!(r.bytes_completed, 2 * PAGE as u32 - 8);
    assert_eq!(r.result, 0);
    assert_eq!(
        rig.dma.get(A, DST + 8, 2 * PAGE as usize - 8),
        src[8..2 * PAGE as usize]
    );
    assert_eq!(
        rig.dma.get(A, DST + 3 * PAGE, 8),
        vec![0; 8],
        "nothing after the fault"
    );
    assert_eq!(rig.dev.counters().page_faults, 1);
    assert_eq!(rig.dev.counters().status(Status::PageFaultNoBof.code()), 1);

    // Software recovery: touch, shrink, advance, resubmit.
    rig.dma.map(A, r.fault_addr, 1);
    let done = u64::from(r.bytes_completed);
    let r2 = rig.run(&Descriptor::memmove(
        0,
        SRC + 8 + done,
        DST + 8 + done,
        3 * PAGE as u32 - r.bytes_completed,
    ));
    assert_eq!(status(&r2), Status::Success);
    assert_eq!(
        rig.dma.get(A, DST + 8, 3 * PAGE as usize),
        src[8..3 * PAGE as usize + 8]
    );
}

#[test]
fn a_read_fault_reports_a_read() {
    let rig = rig();
    rig.dma.put(A, SRC, &data(PAGE as usize, 1));
    rig.dma.map(A, DST, 2 * PAGE);
    let r = rig.run(&Descriptor::crc32c(0, SRC + 100, PAGE as u32, 0));
    assert_eq!(r.status.into_bits(), Status::PageFaultNoBof.code());
    assert!(!r.fault_on_write());
    assert_eq!(
        (r.fault_addr, r.bytes_completed),
        (SRC + PAGE, PAGE as u32 - 100)
    );
    assert_eq!(
        r.crc_val(),
        u64::from(crc32c::crc32c(&data(PAGE as usize, 1)[100..])),
        "the partial CRC covers the bytes completed"
    );
}

#[test]
fn descending_memmove_fault_reports_the_top_part_done() {
    let rig = rig();
    let len = 3 * PAGE as usize;
    let mut cpu = data(len + PAGE as usize, 6);
    rig.dma.put(A, SRC, &cpu);
    // dst = src + 0x800 overlaps: the copy runs from the end, page piece by page piece,
    // and faults on the way down where the first page is missing.
    let (from, to) = (SRC, SRC + 0x800);
    rig.dma.unmap(A, SRC, PAGE);
    let r = rig.run(&Descriptor::memmove(0, from, to, len as u32));
    assert_eq!(status(&r), Status::PageFaultNoBof);
    assert!(!r.fault_on_write());
    assert_eq!(r.result, 1, "descending");
    assert_eq!(
        r.fault_addr,
        SRC + 0x800,
        "the piece [0x800, 0x1000) of the source"
    );
    let done = r.bytes_completed as usize;
    assert_eq!(done, 0x2000);
    // The top `done` bytes are in place.
    assert_eq!(
        rig.dma.get(A, to + (len - done) as u64, done),
        cpu[len - done..len],
        "top part copied"
    );

    // Recovery without advancing (result 1): map the page back, shrink, resubmit.
    rig.dma.put(A, SRC, &cpu[..PAGE as usize]);
    let r2 = rig.run(&Descriptor::memmove(0, from, to, (len - done) as u32));
    assert_eq!(status(&r2), Status::Success);
    cpu.copy_within(0..len, 0x800);
    assert_eq!(rig.dma.get(A, SRC, cpu.len()), cpu);
}

#[test]
fn block_on_fault_waits_for_the_fault_to_be_resolved() {
    let rig = rig();
    rig.dma.fault_in.store(true, Ordering::SeqCst);
    let src = data(2 * PAGE as usize, 8);
    rig.dma.put(A, SRC, &src);
    let mut d = Descriptor::memmove(0, SRC, DST, src.len() as u32);
    d.flags.set_bof(true);
    let r = rig.run(&d);
    assert_eq!(status(&r), Status::Success);
    assert_eq!(rig.dma.get(A, DST, src.len()), src);
    assert_eq!(rig.dma.faults_resolved.load(Ordering::SeqCst), 2);
}

#[test]
fn an_unresolvable_fault_with_bof_is_page_fault_ir() {
    let rig = rig();
    rig.dma.fault_in.store(true, Ordering::SeqCst);
    rig.dma.mark_bad(A, DST + PAGE);
    rig.dma.put(A, SRC, &data(2 * PAGE as usize, 8));
    let mut d = Descriptor::memfill(0, DST, 0x11, 2 * PAGE as u32);
    d.flags.set_bof(true);
    let r = rig.run(&d);
    assert_eq!(status(&r), Status::PageFaultIr);
    assert!(r.fault_on_write());
    assert_eq!((r.fault_addr, r.bytes_completed), (DST + PAGE, PAGE as u32));
}

// ---- batches ----

#[test]
fn a_batch_runs_its_members_and_reports_a_faulting_one() {
    let rig = rig();
    rig.map_records();
    let src = data(PAGE as usize, 3);
    rig.dma.put(A, SRC, &src);
    rig.dma.map(A, DST, PAGE);
    let list = 0x20_0000;
    let members = [
        Descriptor::memmove(CR + 0x40, SRC, DST, PAGE as u32),
        Descriptor::memfill(CR + 0x60, DST2, 7, 64), // DST2 is not mapped
        Descriptor::crc32c(CR + 0x80, SRC, PAGE as u32, 0),
    ];
    let bytes: Vec<u8> = members.iter().flat_map(|m| m.encode()).collect();
    rig.dma.put(A, list, &bytes);
    let r = rig.run(&Descriptor::batch(0, list, 3));
    assert_eq!(status(&r), Status::BatchFail);
    assert_eq!(r.result, 1);
    assert_eq!(r.descs_completed(), 3);
    assert_eq!(status(&rig.wait(A, CR + 0x40)), Status::Success);
    let m1 = rig.wait(A, CR + 0x60);
    assert_eq!(status(&m1), Status::PageFaultNoBof);
    assert_eq!(m1.fault_addr, DST2);
    let m2 = rig.wait(A, CR + 0x80);
    assert_eq!(m2.crc_val(), u64::from(crc32c::crc32c(&src)));
    assert_eq!(rig.dma.get(A, DST, src.len()), src);
    assert_eq!(rig.dev.counters().opcode(Opcode::Batch.raw()), 1);
    assert_eq!(rig.dev.counters().opcode(Opcode::Memmove.raw()), 1);
}

#[test]
fn a_fence_after_a_failure_abandons_the_rest_of_the_batch() {
    let rig = rig();
    rig.map_records();
    rig.dma.map(A, DST, PAGE);
    let list = 0x20_0000;
    let mut fenced = Descriptor::memfill(CR + 0x60, DST, 0x2222_2222_2222_2222, 64);
    fenced.flags.set_fence(true);
    let members = [
        Descriptor::memfill(CR + 0x40, DST2, 0x11, 64), // faults
        fenced,
        Descriptor::noop(CR + 0x80),
    ];
    rig.dma.put(
        A,
        list,
        &members.iter().flat_map(|m| m.encode()).collect::<Vec<_>>(),
    );
    let r = rig.run(&Descriptor::batch(0, list, 3));
    assert_eq!(status(&r), Status::BatchFail);
    assert_eq!(
        r.descs_completed(),
        1,
        "only the first member was processed"
    );
    assert_eq!(status(&rig.wait(A, CR + 0x40)), Status::PageFaultNoBof);
    assert_eq!(
        rig.dma.get(A, CR + 0x60, 1),
        vec![0],
        "abandoned: no record"
    );
    assert_eq!(rig.dma.get(A, CR + 0x80, 1), vec![0]);
    assert_eq!(
        rig.dma.get(A, DST, 64),
        vec![0; 64],
        "the fenced fill did not run"
    );

    // Without the failure, the same fence passes.
    rig.dma.map(A, DST2, PAGE);
    rig.dma.put(A, CR + 0x40, &[0; 96]);
    let r = rig.run(&Descriptor::batch(0, list, 3));
    assert_eq!((status(&r), r.descs_completed()), (Status::Success, 3));
    assert_eq!(rig.dma.get(A, DST, 64), vec![0x22; 64]);
}

#[test]
fn batch_and_drain_inside_a_batch_are_bad_opcodes() {
    let rig = rig();
    rig.map_records();
    let list = 0x20_0000;
    let members = [
        Descriptor::batch(CR + 0x40, list, 2),
        Descriptor::drain(CR + 0x60),
        Descriptor::noop(CR + 0x80),
    ];
    rig.dma.put(
        A,
        list,
        &members.iter().flat_map(|m| m.encode()).collect::<Vec<_>>(),
    );
    let r = rig.run(&Descriptor::batch(0, list, 3));
    assert_eq!((status(&r), r.descs_completed()), (Status::BatchFail, 3));
    assert_eq!(status(&rig.wait(A, CR + 0x40)), Status::BadOpcode);
    assert_eq!(status(&rig.wait(A, CR + 0x60)), Status::BadOpcode);
    assert_eq!(status(&rig.wait(A, CR + 0x80)), Status::Success);
}

#[test]
fn a_fault_on_the_descriptor_list_is_a_batch_page_fault() {
    let rig = rig();
    rig.map_records();
    let list = 0x20_0000 + PAGE - 128; // two members on this page, the third on the next
    let members = [
        Descriptor::noop(CR + 0x40),
        Descriptor::noop(CR + 0x60),
        Descriptor::noop(CR + 0x80),
    ];
    rig.dma.put(
        A,
        list,
        &members[..2]
            .iter()
            .flat_map(|m| m.encode())
            .collect::<Vec<_>>(),
    );
    let r = rig.run(&Descriptor::batch(0, list, 3));
    assert_eq!(status(&r), Status::BatchPageFault);
    assert_eq!(r.descs_completed(), 2);
    assert_eq!(r.fault_addr, list + 128);
    assert!(r.fault_info.desc_list() && !r.fault_on_write());
}

#[test]
fn batch_count_and_list_alignment_are_checked() {
    let rig = rig();
    let list = 0x20_0000;
    rig.dma.map(A, list, PAGE);
    for (d, want) in [
        (Descriptor::batch(0, list, 1), Status::DescCountErange),
        (Descriptor::batch(0, list, 0), Status::DescCountErange),
        (Descriptor::batch(0, list, 17), Status::DescCountErange), // max 16
        (Descriptor::batch(0, list + 32, 2), Status::DescListAlign),
    ] {
        assert_eq!(status(&rig.run(&d)), want, "{d:?}");
    }
}

// ---- validation ----

#[test]
fn bad_descriptors_get_the_right_status() {
    let rig = rig();
    rig.dma.put(A, SRC, &data(2 * PAGE as usize, 1));
    rig.dma.map(A, DST, 2 * PAGE);
    fn with(f: impl Fn(&mut Descriptor)) -> Descriptor {
        let mut d = Descriptor::memmove(0, SRC, DST, 64);
        f(&mut d);
        d
    }
    let cases: Vec<(Descriptor, Status)> = vec![
        (with(|d| d.opcode = 0x07), Status::BadOpcode),
        (with(|d| d.opcode = 0x20), Status::BadOpcode),
        (with(|d| d.opcode = 0xff), Status::BadOpcode),
        (
            with(|d| d.flags = DescFlags::from_bits(d.flags.into_bits() | 0x40)),
            Status::InvalidFlags,
        ),
        (with(|d| d.reserved0 = 1), Status::NonZeroReserved),
        (with(|d| d.reserved1 = 0x8000), Status::NonZeroReserved),
        (with(|d| d.op_specific[23] = 1), Status::NonZeroReserved),
        (with(|d| d.xfer_size = 0), Status::XferErange),
        (with(|d| d.xfer_size = (1 << 20) + 1), Status::XferErange),
        (with(|d| d.src = u64::MAX - 10), Status::XferErange),
        (
            Descriptor {
                src: 1,
                ..Descriptor::noop(0)
            },
            Status::NonZeroReserved,
        ),
        (
            Descriptor {
                dst: 4,
                ..Descriptor::crc32c(0, SRC, 8, 0)
            },
            Status::NonZeroReserved,
        ),
        (
            Descriptor::dualcast(0, SRC, DST, DST2 + 8, 64),
            Status::DcastErr,
        ),
        (
            Descriptor::dualcast(0, SRC, DST, DST + PAGE, 2 * PAGE as u32),
            Status::OverlapBuffers,
        ),
        (
            Descriptor::dualcast(0, SRC, SRC + 32, DST + 32, 64),
            Status::OverlapBuffers,
        ),
    ];
    for (d, want) in cases {
        let r = rig.run(&d);
        assert_eq!(status(&r), want, "{d:?}");
    }
    let r = rig.run(&with(|d| {
        d.flags = DescFlags::from_bits(d.flags.into_bits() | 0x4_0040);
    }));
    assert_eq!(
        r.invalid_flags(),
        0x4_0040,
        "the invalid flags are reported"
    );
    assert_eq!(
        rig.dma.get(A, DST, 64),
        vec![0; 64],
        "no bad descriptor moved data"
    );
    assert!(
        !rig.dev.swerr().is_valid(),
        "all reported in completion records"
    );
}

#[test]
fn errors_without_a_usable_record_go_to_swerr() {
    let rig = rig();
    rig.dma.map(A, SRC, PAGE);
    // Misaligned completion record address.
    let d = Descriptor::noop(CR + 8);
    rig.submit_dedicated(&d);
    rig.settle();
    let e = rig.dev.swerr();
    assert!(e.is_valid());
    assert_eq!(e.error(), Status::CraAlign.code());
    assert_eq!((e.pasid(), e.wq(), e.address), (Some(A), Some(0), CR + 8));
    rig.dev.clear_swerr();

    // RCR without CRAV: invalid flags, nowhere to write.
    let mut d = Descriptor::noop(0);
    d.flags.set_crav(false);
    rig.submit_dedicated(&d);
    rig.settle();
    let e = rig.dev.swerr();
    assert_eq!(e.error(), Status::InvalidFlags.code());
    assert_eq!(e.word1.invalid_flags(), DescFlags::RCR);
    rig.dev.clear_swerr();

    // A page fault with no completion record at all.
    let mut d = Descriptor::memfill(0, DST, 1, 8);
    d.flags = DescFlags::new();
    rig.submit_dedicated(&d);
    rig.settle();
    let e = rig.dev.swerr();
    assert_eq!(e.error(), Status::PageFaultNoBof.code());
    assert!(e.word0.fault_rw());
    assert_eq!(e.address, DST);
    assert_eq!(e.word0.operation(), Opcode::Memfill.raw());
    rig.dev.clear_swerr();

    // Success without CRAV is silent.
    let mut d = Descriptor::noop(0);
    d.flags = DescFlags::new();
    rig.submit_dedicated(&d);
    rig.settle();
    assert!(!rig.dev.swerr().is_valid());
}

#[test]
fn an_untranslatable_completion_record_is_kept_and_reported() {
    let rig = rig();
    let src = data(256, 5);
    rig.dma.put(A, SRC, &src);
    rig.dma.map(A, DST, PAGE);
    let cr = 0x77_0000; // not mapped
    rig.submit_dedicated(&Descriptor::memmove(cr, SRC, DST, 256));
    rig.settle();
    assert_eq!(rig.dma.get(A, DST, 256), src, "the operation itself ran");
    let e = rig.dev.swerr();
    assert_eq!(e.error(), Status::CraXlat.code());
    assert_eq!((e.pasid(), e.address), (Some(A), cr));
    let faults = rig.dev.take_cr_faults();
    assert_eq!(faults.len(), 1);
    assert_eq!(
        (faults[0].address, faults[0].pasid, faults[0].wq),
        (cr, Some(A), 0)
    );
    assert_eq!(faults[0].record.status(), Some(Status::Success));
    assert_eq!(rig.dev.counters().cr_faults, 1);

    // A second error sets the overflow bit and keeps the first.
    rig.submit_dedicated(&Descriptor::noop(cr));
    rig.settle();
    let e2 = rig.dev.swerr();
    assert!(e2.word0.overflow());
    assert_eq!(e2.address, cr);
}

#[test]
fn the_status_byte_is_written_last() {
    // A `Dma` that records the order of writes to the record.
    use std::sync::{Arc, Mutex};
    use sva_pcie::{Dma, DmaCtx, DmaFault};
    struct Recording {
        inner: Arc<PageDma>,
        writes: Mutex<Vec<(u64, usize)>>,
    }
    impl Dma for Recording {
        fn read(&self, ctx: DmaCtx, addr: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
            self.inner.read(ctx, addr, buf)
        }
        fn write(&self, ctx: DmaCtx, addr: u64, data: &[u8]) -> Result<(), DmaFault> {
            self.writes.lock().unwrap().push((addr, data.len()));
            self.inner.write(ctx, addr, data)
        }
    }
    let rec = Arc::new(Recording {
        inner: PageDma::new(),
        writes: Mutex::new(Vec::new()),
    });
    rec.inner.map(A, CR, PAGE);
    let dev = sva_dsa::Device::new(rec.clone(), DeviceConfig::default()).unwrap();
    dev.set_wq_pasid(0, Some(A)).unwrap();
    dev.enable_wq(0).unwrap();
    dev.portal(0)
        .unwrap()
        .write(0, &Descriptor::noop(CR).encode())
        .unwrap();
    let r = wait_record(&rec.inner, A, CR);
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(*rec.writes.lock().unwrap(), vec![(CR + 1, 31), (CR, 1)]);
}

// ---- work queues ----

#[test]
fn a_dedicated_wq_uses_its_own_pasid_and_ignores_the_descriptors() {
    let rig = rig();
    let src = data(100, 1);
    rig.dma.put(A, SRC, &src);
    rig.dma.map(A, DST, PAGE);
    let mut d = Descriptor::memmove(0, SRC, DST, 100);
    d.pasid = B.raw(); // ignored
    let r = rig.run(&d);
    assert_eq!(status(&r), Status::Success);
    assert_eq!(rig.dma.get(A, DST, 100), src);
    assert!(!rig.dma.is_mapped(B, DST));
    assert_eq!(
        rig.dwq.enqueue(0, &d.encode(), Some(A)),
        Err(IoError::Unsupported(0)),
        "a dedicated WQ takes no ENQCMD"
    );
}

#[test]
fn a_shared_wq_runs_each_descriptor_in_the_submitters_pasid() {
    let rig = rig();
    rig.map_records();
    rig.dma.put(A, SRC, &[0xaa; 64]);
    rig.dma.put(B, SRC, &[0xbb; 64]);
    rig.dma.map(A, DST, PAGE);
    rig.dma.map(B, DST, PAGE);
    let mut d = Descriptor::memmove(CR, SRC, DST, 64);
    d.pasid = 0x777; // overridden by ENQCMD
    for p in [A, B] {
        rig.clear(p, CR);
        assert!(rig.submit_shared(&d, p));
        assert_eq!(status(&rig.wait(p, CR)), Status::Success);
    }
    assert_eq!(rig.dma.get(A, DST, 64), vec![0xaa; 64]);
    assert_eq!(rig.dma.get(B, DST, 64), vec![0xbb; 64]);
    assert_eq!(
        rig.swq.enqueue(0, &d.encode(), None),
        Err(IoError::Unsupported(0)),
        "ENQCMD without a PASID is refused"
    );
}

#[test]
fn a_full_shared_wq_answers_retry() {
    let rig = rig_with(DeviceConfig {
        wqs: vec![dedicated(2), shared(2)],
        engines: 1,
        ..DeviceConfig::default()
    });
    rig.map_records();
    rig.dma.close_gate();
    // The engine takes the first and blocks in its DMA; two more fill the WQ.
    assert!(rig.submit_shared(&Descriptor::noop(CR), A));
    eventually("the engine to take the first descriptor", || {
        rig.dev.wq_occupancy(1).unwrap() == 0
    });
    assert!(rig.submit_shared(&Descriptor::noop(CR + 32), A));
    assert!(rig.submit_shared(&Descriptor::noop(CR + 64), B));
    assert_eq!(rig.dev.wq_occupancy(1).unwrap(), 2);
    assert!(
        !rig.submit_shared(&Descriptor::noop(CR + 96), A),
        "full: retry"
    );
    assert_eq!(rig.dev.counters().retries, 1);
    rig.dma.open_gate();
    rig.wait(B, CR + 64);
    assert!(
        rig.submit_shared(&Descriptor::noop(CR + 96), A),
        "room again"
    );
    assert_eq!(status(&rig.wait(A, CR + 96)), Status::Success);
}

#[test]
fn posted_writes_that_cannot_be_queued_are_dropped_with_a_software_error() {
    let rig = rig_with(DeviceConfig {
        wqs: vec![dedicated(1), shared(4)],
        engines: 1,
        ..DeviceConfig::default()
    });
    rig.map_records();
    // MOVDIR64B to a shared WQ.
    rig.swq.write(0, &Descriptor::noop(CR).encode()).unwrap();
    assert_eq!(rig.dev.swerr().error(), SWERR_POSTED_TO_SHARED_WQ);
    assert_eq!(rig.dev.swerr().wq(), Some(1));
    rig.dev.clear_swerr();

    // A full dedicated WQ.
    rig.dma.close_gate();
    rig.submit_dedicated(&Descriptor::noop(CR));
    eventually("the engine to take it", || {
        rig.dev.wq_occupancy(0).unwrap() == 0
    });
    rig.submit_dedicated(&Descriptor::noop(CR + 32));
    rig.submit_dedicated(&Descriptor::noop(CR + 64)); // dropped
    assert_eq!(rig.dev.swerr().error(), SWERR_WQ_FULL);
    rig.dev.clear_swerr();
    rig.dma.open_gate();
    rig.wait(A, CR + 32);

    // A disabled dedicated WQ.
    rig.dev.disable_wq(0).unwrap();
    rig.submit_dedicated(&Descriptor::noop(CR + 96));
    assert_eq!(rig.dev.swerr().error(), SWERR_WQ_DISABLED);
    assert_eq!(rig.dev.counters().dropped, 3);
    assert_eq!(rig.dma.get(A, CR + 64, 1), vec![0]);
    assert_eq!(rig.dma.get(A, CR + 96, 1), vec![0]);
    // Bad portal accesses.
    assert_eq!(rig.dwq.write(32, &[0; 64]), Err(IoError::Unsupported(32)));
    assert_eq!(rig.dwq.write(0, &[0; 8]), Err(IoError::Unsupported(0)));
    assert_eq!(rig.dwq.write(4096, &[0; 64]), Err(IoError::Bus(4096)));
}

#[test]
fn draining_a_pasid_waits_for_its_work_and_blocks_new_work() {
    let rig = rig();
    rig.map_records();
    rig.dma.put(A, SRC, &data(2 * PAGE as usize, 1));
    rig.dma.map(A, DST, 2 * PAGE);
    rig.dma.close_gate();
    assert!(rig.submit_shared(&Descriptor::memmove(CR, SRC, DST, 2 * PAGE as u32), A));
    assert!(rig.submit_shared(&Descriptor::noop(CR + 32), A));
    let opener = {
        let dma = rig.dma.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            dma.open_gate();
        })
    };
    rig.dev.drain_pasid(1, A).unwrap();
    // Both finished before the drain returned.
    assert_eq!(status(&wait_record(&rig.dma, A, CR)), Status::Success);
    assert_eq!(rig.dma.get(A, CR + 32, 1), vec![1]);
    opener.join().unwrap();
    assert!(
        !rig.submit_shared(&Descriptor::noop(CR + 64), A),
        "A is blocked"
    );
    assert!(rig.submit_shared(&Descriptor::noop(CR), B), "B is not");
    rig.dev.unblock_pasid(1, A).unwrap();
    assert!(rig.submit_shared(&Descriptor::noop(CR + 64), A));
    rig.wait(A, CR + 64);
}

#[test]
fn a_drain_that_times_out_aborts_and_the_engine_leaves_the_pasid() {
    let rig = rig_with(DeviceConfig {
        wqs: vec![dedicated(8), shared(8)],
        engines: 1,
        drain_timeout: Duration::from_millis(20),
        ..DeviceConfig::default()
    });
    rig.map_records();
    rig.dma.put(A, SRC, &data(8 * PAGE as usize, 1));
    rig.dma.map(A, DST, 8 * PAGE);
    rig.dma.close_gate();
    assert!(rig.submit_shared(&Descriptor::memmove(CR, SRC, DST, 8 * PAGE as u32), A));
    eventually("the copy to start", || {
        rig.dev.wq_occupancy(1).unwrap() == 0
    });
    assert!(rig.submit_shared(&Descriptor::memfill(CR + 32, DST, 0x55, 64), A));
    assert!(rig.submit_shared(&Descriptor::noop(CR + 64), A));
    std::thread::scope(|s| {
        // Opens the gate once the drain has given up waiting and removed the queued two.
        s.spawn(|| {
            eventually("the abort", || rig.dev.counters().aborted == 2);
            rig.dma.open_gate();
        });
        rig.dev.drain_pasid(1, A).unwrap();
    });
    let calls = rig.dma.calls.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        rig.dma.calls.load(Ordering::SeqCst),
        calls,
        "no DMA after the drain"
    );
    for cr in [CR, CR + 32, CR + 64] {
        assert_eq!(
            rig.dma.get(A, cr, 1),
            vec![0],
            "aborted: no record at {cr:#x}"
        );
    }
    assert_ne!(
        rig.dma.get(A, DST, 64),
        vec![0x55; 64],
        "the fill never ran"
    );
    assert_eq!(rig.dev.counters().aborted, 3);
    // The device still works for others.
    assert!(rig.submit_shared(&Descriptor::noop(CR), B));
    assert_eq!(status(&rig.wait(B, CR)), Status::Success);
}

#[test]
fn dropping_the_device_stops_the_engines() {
    let rig = rig();
    let portal = rig.dwq.clone();
    let dma = rig.dma.clone();
    drop(rig);
    assert_eq!(portal.write(0, &[0; 64]), Err(IoError::Bus(0)));
    drop(portal);
    assert_eq!(
        std::sync::Arc::strong_count(&dma),
        1,
        "engines released the Dma"
    );
}

#[test]
fn configuration_is_checked() {
    let dma = PageDma::new();
    for cfg in [
        DeviceConfig {
            wqs: vec![],
            ..DeviceConfig::default()
        },
        DeviceConfig {
            engines: 0,
            ..DeviceConfig::default()
        },
        DeviceConfig {
            wqs: vec![shared(0)],
            ..DeviceConfig::default()
        },
        DeviceConfig {
            max_batch_size: 1,
            ..DeviceConfig::default()
        },
    ] {
        assert!(sva_dsa::Device::new(dma.clone(), cfg).is_err());
    }
    let dev = sva_dsa::Device::new(dma, DeviceConfig::default()).unwrap();
    assert!(
        dev.set_wq_pasid(1, Some(Pasid(3))).is_err(),
        "shared WQs have no PASID"
    );
    dev.set_wq_pasid(0, Some(Pasid(3))).unwrap();
    dev.enable_wq(0).unwrap();
    assert!(
        dev.set_wq_pasid(0, Some(Pasid(4))).is_err(),
        "only while disabled"
    );
    assert!(dev.portal(9).is_err());
}
