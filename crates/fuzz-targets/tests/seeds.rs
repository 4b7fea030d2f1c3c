//! The seed inputs of `fuzz/corpus/<target>/seed-*`, written out by
//! `cargo test -p sva-fuzz-targets --test seeds -- --ignored`. Each seed is a small valid
//! program in its target's input format (see the target's documentation), so fuzzing
//! starts from states where the models do real work. The normal test run only checks that
//! the committed seeds are what this file generates.

use std::path::{Path, PathBuf};
use sva_dsa::{DESCRIPTOR_SIZE, Descriptor};
use sva_smmuv3_spec::command::{Command, ResumeAction, SyncCs, TlbiGranule, TlbiRange};
use sva_smmuv3_spec::encoding::Shareability;
use sva_smmuv3_spec::pri::{PageRequest, PriResponse};
use sva_zip::{Alg, ReqType, Sqe};

/// Bytes of a program.
#[derive(Default)]
struct P(Vec<u8>);

impl P {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend(b);
        self
    }
    fn pad(mut self, len: usize) -> Self {
        self.0.resize(len, 0);
        self
    }
}

// --- smmu_mmio -------------------------------------------------------------------------

/// Op 7: a transaction (sid, SSID, page number, access 0 read / 1 write / 2 exec).
fn txn(p: P, sid: u8, ssid: Option<u8>, page: u16, access: u8) -> P {
    p.u8(7)
        .u8(sid)
        .u8(ssid.map_or(0, |s| 0x80 | s))
        .u8(1)
        .u16(page)
        .u8(access)
        .u8(0)
}

/// Op 2: a 32-bit write at a raw offset.
fn w32(p: P, offset: u32, v: u32) -> P {
    p.u8(2).u32(offset).u32(v)
}

fn smmu_mmio() -> Files {
    // Programmed at start (flags bit 0), careless interrupt handlers.
    let mut p = P::default().u8(0x01).u8(1);
    p = txn(p, 1, None, 1, 0);
    p = txn(p, 1, None, 2, 1);
    p = txn(p, 2, Some(1), 3, 1); // CD 1 of sid 2 stalls; page 3 is mapped
    p = txn(p, 2, Some(1), 0x100, 0); // unmapped: a stall
    p = txn(p, 3, None, 0x42, 0); // bypass
    p = txn(p, 4, Some(3), 1, 2); // 2-level CD table
    p = txn(p, 9, None, 1, 0); // invalid STE
    // ATS on sid 1, then a page request.
    p = p.u8(9).u8(1).u8(0).u8(0).u64(0x1000);
    let pr = PageRequest {
        stream_id: sva_smmuv3::StreamId(1),
        substream_id: Some(sva_smmuv3::Pasid(1)),
        addr: sva_vmsa::Va(0x5000),
        prg_index: 3,
        last: true,
        read: true,
        write: true,
        exec: false,
        privileged: false,
    }
    .encode();
    p = p.u8(10).u8(1).u64(pr[0]).u64(pr[1]);
    // A command entry published, a broadcast TLBI, GERROR ack, queues drained.
    let c = Command::TlbiNsnhAll.encode();
    p = p.u8(11).u64(c[0]).u64(c[1]).u8(1);
    p = p.u8(13).u16(1).u8(2).u64(0x1000).u64(0x2000).u8(0).u8(0);
    p = p.u8(14).u8(15);
    let enabled = p.0;

    // From reset: program the stream table and enable through raw register writes (the
    // structures sit at the start of RAM), then a memory write into an STE.
    let mut p = P::default().u8(0x00).u8(0);
    p = w32(p, 0x80, 0).u8(2).u32(0x88).u32(6);
    p = w32(p, 0x90, 0x4000 | 6);
    p = w32(p, 0x20, 0b1110);
    p = w32(p, 0x98, 0);
    p = w32(p, 0x20, 0b1111);
    p = txn(p, 1, None, 1, 0);
    p = p.u8(4).u8(0).u16(64).u64(0); // clear STE 1 word 0
    p = txn(p, 1, None, 1, 0);
    p = w32(p, 0x44, 0x8000_0000 | 0x100); // GBPA update with ABORT
    p = w32(p, 0x20, 0);
    p = txn(p, 1, None, 1, 0);
    let reset = p.0;
    vec![
        ("seed-reset", vec![0x00]),
        ("seed-enabled-traffic", enabled),
        ("seed-program-by-mmio", reset),
    ]
}

// --- smmu_cmdq -------------------------------------------------------------------------

fn cmd(p: P, ctl: u8, c: &Command) -> P {
    let w = c.encode();
    p.u8(ctl).u64(w[0]).u64(w[1])
}

fn smmu_cmdq() -> Files {
    let sid = sva_smmuv3::StreamId;
    let pasid = sva_smmuv3::Pasid;
    let mut p = P::default().u8(0);
    p = cmd(
        p,
        1,
        &Command::CfgiSte {
            sid: sid(1),
            leaf: true,
        },
    );
    p = cmd(
        p,
        1,
        &Command::TlbiNhVa {
            vmid: sva_addr::Vmid(0),
            asid: sva_addr::Asid(1),
            addr: sva_vmsa::Va(0x1000),
            leaf: true,
            range: TlbiRange {
                tg: TlbiGranule::Size4K,
                ttl: 3,
                num: 3,
                scale: 1,
            },
        },
    );
    p = cmd(
        p,
        1,
        &Command::AtcInv {
            sid: sid(1),
            ssid: Some(pasid(1)),
            global: false,
            addr: sva_vmsa::Va(0x4000),
            size: 2,
        },
    );
    // A stall on sid 2 / SSID 1 (ctl bit 3: a transaction follows the entry), resumed.
    p = cmd(
        p,
        0x09,
        &Command::PrefetchConfig {
            sid: sid(2),
            ssid: Some(pasid(1)),
        },
    )
    .u8(2)
    .u8(0x81)
    .u8(1)
    .u16(0x100)
    .u8(0)
    .u8(0);
    p = cmd(
        p,
        1,
        &Command::Resume {
            sid: sid(2),
            stag: 0,
            action: ResumeAction::Retry,
        },
    );
    p = cmd(
        p,
        1,
        &Command::PriResp {
            sid: sid(1),
            ssid: Some(pasid(1)),
            prg_index: 3,
            resp: PriResponse::Success,
        },
    );
    // CMD_SYNC with an MSI (ctl bit 1, SIG_IRQ, bit 6: address follows).
    p = cmd(p, 0x52, &Command::CfgiAll).u32(0x7_0000);
    p = cmd(
        p,
        0x81,
        &Command::Sync {
            cs: SyncCs::Sev,
            msh: Shareability::InnerShareable,
            msi_attr: 0,
            msi_data: 0,
            msi_addr: sva_vmsa::Pa(0),
        },
    );
    let valid = p.0;
    // Illegal and unreadable-looking entries, recovered from.
    let mut p = P::default().u8(0);
    p = p.u8(1).u64(0xFF).u64(0);
    p = p.u8(5).u64(0x46 | 0xFFFF_0000).u64(u64::MAX);
    p = cmd(p, 3, &Command::TlbiEl2All);
    p = p.u8(4).u64(0x12).u64(0xFFFF_FFFF_FFFF_F000);
    let illegal = p.0;
    vec![
        ("seed-empty", vec![0x00]),
        ("seed-valid-commands", valid),
        ("seed-illegal-commands", illegal),
    ]
}

// --- vmsa_walk -------------------------------------------------------------------------

const OP: usize = 40;

fn op(bytes: P) -> Vec<u8> {
    assert!(bytes.0.len() <= OP);
    bytes.pad(OP).0
}

/// A walk op: VA (raw), access byte (kind | 0x10 privileged | 0x20 HA | 0x40 HD).
fn walk(va: u64, access: u8) -> Vec<u8> {
    op(P::default().u8(0).u64(va).u8(0).u8(access))
}

fn vmsa(tg0: u8, t0sz: u8, ips: u8, ops: &[Vec<u8>], image: &[(u64, u64)]) -> Vec<u8> {
    let mut p = P::default()
        .u8(tg0)
        .u8(t0sz)
        .u8(ips)
        .u16(0)
        .u8(ops.len() as u8);
    for o in ops {
        p = p.bytes(o);
    }
    let mut mem = vec![0u8; 0x6000];
    for &(at, v) in image {
        mem[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
    }
    let last = mem.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    p = p.bytes(&mem[..last]);
    p.0
}

fn vmsa_walk() -> Files {
    const AF: u64 = 1 << 10;
    const SH: u64 = 3 << 8;
    const EL0: u64 = 1 << 6;
    const RO: u64 = 1 << 7;
    const DBM: u64 = 1 << 51;
    // 4K granule, 48-bit VA and PA, root at 0: L0 -> L1 -> L2 -> L3.
    let image4k = [
        (0x0, 0x1000 | 3),
        (0x1000, 0x2000 | 3),
        (0x2000, 0x3000 | 3),
        (0x2008, 0x20_0000 | AF | SH | EL0 | 1), // 2 MiB block at VA 2 MiB
        (0x3008, 0x8000 | SH | EL0 | RO | DBM | 3), // page at VA 4K: clean DBM, AF clear
        (0x3010, 0x9000 | AF | SH | EL0 | 3),
    ];
    let ops = [
        walk(0x1234, 0),    // AF fault
        walk(0x1234, 0x61), // write with HA/HD: marks it
        walk(0x2010, 0x01),
        walk(0x20_0000 + 0x1_2345, 0x12),
        op(P::default().u8(3).u64(0x2000).u8(0)),
        op(P::default()
            .u8(5)
            .u64(0x40_0000)
            .u8(0)
            .u64(0x50_0000)
            .u8(1)
            .u8(3)
            .u64(AF | SH | EL0)
            .u8(1)),
        walk(0x40_0000, 0x01),
        op(P::default().u8(8).u64(0x20_0000).u8(0)),
        walk(0x20_1000, 0x00),
        op(P::default()
            .u8(7)
            .u64(0x1000)
            .u8(0)
            .u8(0)
            .u8(3)
            .u64(RO)
            .u64(0)),
        op(P::default().u8(6).u64(0x0).u8(0).u8(4).u8(3)),
        op(P::default().u8(9).u64(0x40_0000).u8(0).u64(1 << 55)),
        op(P::default().u8(4).u64(0).u8(0).u8(7).u8(1)),
        op(P::default().u8(10)),
    ];
    let four_k = vmsa(0, 16, 5, &ops, &image4k);
    // 64K granule, 42-bit VA (start level 2), 40-bit PA: empty table, map then walk.
    let ops64 = [
        op(P::default()
            .u8(5)
            .u64(0x3_0000)
            .u8(0)
            .u64(0x7_0000)
            .u8(2)
            .u8(3)
            .u64(AF | SH | EL0)
            .u8(0)),
        walk(0x3_0000 + 0x44, 0x00),
        walk(0x2000_0000, 0x00),
        op(P::default()
            .u8(5)
            .u64(0)
            .u8(3)
            .u64(0)
            .u8(0)
            .u8(1)
            .u64(AF)
            .u8(0)),
        walk(0x2000_0000, 0x10),
        op(P::default().u8(6).u64(0x3_0000).u8(0).u8(0).u8(3)),
        walk(0x3_0000, 0x00),
    ];
    let sixty_four_k = vmsa(1, 22, 2, &ops64, &[]);
    // 16K granule, 47-bit VA (start level 1), loops in the tables (a table pointing to
    // itself and to its parent).
    let image16k = [(0x0, 0x4000 | 3), (0x4000, 0x4000 | 3), (0x4008, 3)];
    let ops16 = [
        walk(0, 0x00),
        walk(1 << 25, 0x61),
        op(P::default().u8(9).u64(0).u8(0).u64(1)),
        op(P::default().u8(6).u64(0).u8(0).u8(0).u8(4)),
    ];
    let loops = vmsa(2, 17, 5, &ops16, &image16k);
    vec![
        ("seed-4k-four-levels", four_k),
        ("seed-64k-map-walk", sixty_four_k),
        ("seed-16k-loops", loops),
    ]
}

// --- dsa_descriptor --------------------------------------------------------------------

fn desc(p: P, ctl: u8, d: &Descriptor) -> P {
    let raw: [u8; DESCRIPTOR_SIZE] = d.encode();
    p.u8(ctl).bytes(&raw)
}

fn dsa_descriptor() -> Files {
    let mut p = P::default();
    // Dedicated WQ (ctl 5: aimed at the mapped memory): memmove, fill, compare, CRC.
    p = desc(p, 5, &Descriptor::memmove(0x1000, 0x2000, 0x3000, 256));
    p = desc(
        p,
        5,
        &Descriptor::memfill(0x1020, 0x3000, 0x0123_4567_89AB_CDEF, 100),
    );
    p = desc(p, 5, &Descriptor::compare(0x1040, 0x2000, 0x3000, 256));
    p = desc(p, 5, &Descriptor::compare_pattern(0x1060, 0x3000, 0, 64));
    p = desc(p, 5, &Descriptor::crc32c(0x1080, 0x2000, 4096, 0));
    p = desc(
        p,
        5,
        &Descriptor::dualcast(0x10A0, 0x2000, 0x4000, 0x5000, 512),
    );
    // Shared WQ in A (ctl 6) and B (ctl 0x16).
    p = desc(
        p,
        6,
        &Descriptor::memmove(0x1100, 0x1_F000, 0x1_FF00, 0x1000),
    );
    p = desc(p, 0x16, &Descriptor::noop(0x1120));
    p = desc(p, 0x16, &Descriptor::drain(0x1140));
    let ops = p.0;

    // A batch: two descriptors written into memory at 0x6000 (ctl 7: the first two bytes
    // are the address), then a batch descriptor over them.
    let mut p = P::default();
    let mut m = Descriptor::memmove(0x1200, 0x2000, 0x7000, 128);
    m.pasid = 0x6000;
    p = desc(p, 7, &m);
    let mut f = Descriptor::memfill(0x1220, 0x7100, 7, 64);
    f.pasid = 0x6040;
    p = desc(p, 7, &f);
    p = desc(p, 5, &Descriptor::batch(0x1240, 0x6000, 2));
    p = desc(p, 6, &Descriptor::batch(0x1260, 0x6000, 9)); // too many
    let batch = p.0;

    // Unaimed garbage, faults, the top of the address space, misdirected accesses, a WQ
    // disable and a PASID drain.
    let mut p = P::default();
    p = desc(p, 0, &Descriptor::memmove(0xdead_0000, 0x2000, 0x3000, 64));
    let mut top = Descriptor::memmove(0x1000, u64::MAX - 0xFFF, 0x2000, 0x1000);
    top.flags = sva_dsa::DescFlags::from_bits(top.flags.into_bits() | 2);
    p = desc(p, 0, &top);
    p = desc(
        p,
        0,
        &Descriptor::memmove(0x1000, u64::MAX - 0x7F, 0x2000, 0x100),
    );
    let mut bof = Descriptor::memmove(0x1000, 0x8_0000, 0x2000, 0x2000);
    bof.flags = sva_dsa::DescFlags::from_bits(bof.flags.into_bits() | 2);
    p = desc(p, 1, &bof);
    p = p.u8(2).bytes(&[0xFF; 64]);
    p = p.u8(8).bytes(&[3; 64]);
    p = p.u8(9).bytes(&[0; 64]);
    p = p.u8(0x19).bytes(&[1; 64]);
    p = p.u8(0x29).bytes(&[0; 64]);
    let garbage = p.0;
    vec![
        ("seed-operations", ops),
        ("seed-batch", batch),
        ("seed-faults-and-garbage", garbage),
    ]
}

// --- zip_sqe ---------------------------------------------------------------------------

fn sqe(p: P, ctl: u8, s: &Sqe) -> P {
    p.u8(ctl).bytes(&s.encode())
}

fn zip_sqe() -> Files {
    let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog; "
        .iter()
        .copied()
        .cycle()
        .take(2000)
        .collect();
    let src = 0x4000_0000;
    let dst = 0x5000_0000;
    // Compression queue, depth 4/4: compress in each format (ctl 3: aimed, kind in bits
    // 4-6), and one that does not fit.
    let mut p = P::default()
        .u8(2)
        .u8(2)
        .u8(0)
        .u16(text.len() as u16)
        .bytes(&text);
    for kind in 0..3u8 {
        let s = Sqe::request(
            ReqType::compress(Alg::ALL[usize::from(kind)]),
            src,
            2000,
            dst,
            8192,
            1,
        );
        p = sqe(p, 3 | (kind << 4), &s);
    }
    let s = Sqe::request(ReqType::compress(Alg::Zlib), src, 2000, dst, 10, 2);
    p = sqe(p, 3, &s);
    let compress = p.0;

    // Decompression queue, depth 2/2: a stored DEFLATE block, a corrupt zlib header.
    let mut block = vec![0x01, 100, 0, !100, 0xFF];
    block.extend(&text[..100]);
    let mut p = P::default()
        .u8(0)
        .u8(0)
        .u8(1)
        .u16(block.len() as u16)
        .bytes(&block);
    let s = Sqe::request(
        ReqType::decompress(Alg::Deflate),
        src,
        block.len() as u32,
        dst,
        4096,
        3,
    );
    p = sqe(p, 4 | (6 << 4), &s);
    let s = Sqe::request(
        ReqType::decompress(Alg::Zlib),
        src,
        block.len() as u32,
        dst,
        4096,
        4,
    );
    p = sqe(p, 4 | (5 << 4), &s);
    let decompress = p.0;

    // Raw SQEs: faulting addresses, a bad type, then a doorbell store and a restart.
    let mut p = P::default().u8(3).u8(3).u8(0).u16(0);
    let s = Sqe::request(ReqType::compress(Alg::Gzip), 0xdead_0000, 100, dst, 4096, 5);
    p = sqe(p, 0, &s);
    let s = Sqe::request(ReqType::compress(Alg::Gzip), src, 100, 0xbeef_0000, 4096, 6);
    p = sqe(p, 1, &s);
    p = p.u8(2).bytes(&[0xA5; 128]);
    p = p.u8(7).bytes(&[0; 128]);
    p = p.u8(0x37).bytes(&[9; 128]);
    let raw = p.0;
    vec![
        ("seed-compress", compress),
        ("seed-decompress", decompress),
        ("seed-raw-and-doorbells", raw),
    ]
}

/// Seed files of one target: (file name, bytes).
type Files = Vec<(&'static str, Vec<u8>)>;

fn seeds() -> Vec<(&'static str, Files)> {
    vec![
        ("smmu_mmio", smmu_mmio()),
        ("smmu_cmdq", smmu_cmdq()),
        ("vmsa_walk", vmsa_walk()),
        ("dsa_descriptor", dsa_descriptor()),
        ("zip_sqe", zip_sqe()),
    ]
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

#[test]
#[ignore = "writes fuzz/corpus/*/seed-*"]
fn write_seeds() {
    for (target, files) in seeds() {
        let dir = corpus().join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).expect("write a seed");
        }
    }
}

#[test]
fn committed_seeds_are_current() {
    for (target, files) in seeds() {
        for (name, bytes) in files {
            let path = corpus().join(target).join(name);
            let on_disk =
                std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                on_disk == bytes,
                "{} differs from tests/seeds.rs: run `cargo test -p sva-fuzz-targets --test seeds -- --ignored`",
                path.display()
            );
        }
    }
}
