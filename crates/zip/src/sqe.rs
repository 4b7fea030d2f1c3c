//! The ZIP submission queue entry (SQE, "BD"): 32 little-endian dwords, 128 bytes, as
//! `struct hisi_zip_sqe` of UADK's `drv/hisi_comp.c`. Software fills the request fields;
//! the engine writes the result fields (consumed, produced, status, isize, checksum) back
//! into the same slot before it posts the completion (CQE).
//!
//! Field positions follow the HiSilicon layout. Where this model defines something the
//! public layout leaves reserved, the doc comment says "model".

use bitfield_struct::bitfield;

/// Bytes in one SQE.
pub const SQE_SIZE: usize = 128;

/// The largest input (and output) one request may have: 8 MiB (UADK's `HZ_MAX_SIZE`).
pub const MAX_REQUEST_SIZE: u32 = 8 * 1024 * 1024;

/// Completion status in [`Dw3::status`] (dw3\[7:0\]).
///
/// 0x00, 0x0d, 0x0e, 0x10 and 0x13 carry their HiSilicon meaning (UADK `hisi_comp.c`);
/// the codes from 0x80 up are this model's own.
pub mod status {
    /// The request completed (compression).
    pub const SUCCESS: u8 = 0x00;
    /// Negative compression: the output is a valid stream but longer than the input
    /// (UADK `HZ_NEGACOMPRESS`; software treats it as success).
    pub const NEGATIVE_COMPRESSION: u8 = 0x0d;
    /// The output does not fit in `dest_avail_out` (UADK `ERR_DSTLEN_OUT`). Nothing was
    /// written to the destination; `produced` is 0.
    pub const OUTPUT_TOO_SMALL: u8 = 0x0e;
    /// Decompression: the zlib Adler-32, or the gzip CRC-32 or ISIZE, does not match the
    /// data (UADK `HZ_CRC_ERR`). Nothing was written to the destination.
    pub const CRC_ERROR: u8 = 0x10;
    /// Decompression reached the end of the stream (UADK `HZ_DECOMP_END`), with
    /// [`super::Dw3::last_block`] set: the request completed.
    pub const DECOMP_END: u8 = 0x13;
    /// Model: a DMA to the source or destination buffer faulted. The faulting address is
    /// in dw5 (low) / dw6 (high) ([`super::Sqe::fault_addr`]), the reason and direction in
    /// [`super::Dw3::fault_reason`] and [`super::Dw3::fault_write`]; `produced` says how
    /// many bytes reached the destination before the fault (all of them inside it).
    pub const ADDR_FAULT: u8 = 0x80;
    /// Model: the request is not one the engine runs: unknown request type (dw9\[7:0\]),
    /// SQE type (dw7\[31:28\]) other than 0 or 3, a scatter-gather buffer type
    /// (dw9\[11:8\] ≠ 0), or stateful stream mode (dw7\[26\]).
    pub const BAD_REQUEST: u8 = 0x81;
    /// Model: `input_data_length` is above [`super::MAX_REQUEST_SIZE`].
    pub const BAD_LENGTH: u8 = 0x82;
    /// Model: the input is not a valid DEFLATE / zlib / gzip stream (bad header, bad
    /// block, or truncated before its end). Nothing was written to the destination.
    pub const DATA_ERROR: u8 = 0x83;
    /// Model: the queue was stopped while the request ran; it was abandoned.
    pub const ABORTED: u8 = 0x84;
}

/// `FaultReason` codes in [`Dw3::fault_reason`] (model): 0 means no fault.
pub mod fault_code {
    use sva_pcie::FaultReason;

    /// The code of `reason` (1..=8).
    pub fn encode(reason: FaultReason) -> u8 {
        match reason {
            FaultReason::NotPresent => 1,
            FaultReason::Invalid => 2,
            FaultReason::ResponseFailure => 3,
            FaultReason::Aborted => 4,
            FaultReason::AtsRejected => 5,
            FaultReason::Timeout => 6,
            FaultReason::Disabled => 7,
            FaultReason::Memory => 8,
        }
    }

    /// The reason a code stands for, if any.
    pub fn decode(code: u8) -> Option<FaultReason> {
        Some(match code {
            1 => FaultReason::NotPresent,
            2 => FaultReason::Invalid,
            3 => FaultReason::ResponseFailure,
            4 => FaultReason::Aborted,
            5 => FaultReason::AtsRejected,
            6 => FaultReason::Timeout,
            7 => FaultReason::Disabled,
            8 => FaultReason::Memory,
            _ => return None,
        })
    }
}

/// dw3: completion status, written by the engine.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct Dw3 {
    /// \[7:0\] status: one of [`status`].
    #[bits(8)]
    pub status: u8,
    /// \[8\] last block: the end of the stream was reached (decompression; UADK
    /// `HZ_LSTBLK_MASK`).
    pub last_block: bool,
    /// \[15:9\] reserved.
    #[bits(7)]
    __: u8,
    /// \[19:16\] model: why the source/destination DMA faulted ([`fault_code`]), 0 if
    /// it did not.
    #[bits(4)]
    pub fault_reason: u8,
    /// \[20\] model: the faulting DMA was a write (to the destination).
    pub fault_write: bool,
    /// \[31:21\] reserved.
    #[bits(11)]
    __: u16,
}

/// dw7: stream control and SQE type.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct Dw7 {
    /// \[23:0\] input scatter-gather data offset (SGL buffers only; unused here).
    #[bits(24)]
    pub in_sge_data_offset: u32,
    /// \[24\] reserved.
    __: bool,
    /// \[25\] flush type: 0 = sync flush, 1 = finish (last request of the stream). A
    /// stateless request is always a whole stream, whatever this says.
    pub flush_type: bool,
    /// \[26\] stream mode: 0 = stateless, 1 = stateful (not modelled: BAD_REQUEST).
    pub stream_mode: bool,
    /// \[27\] new stream: the request starts a stream.
    pub new_stream: bool,
    /// \[31:28\] SQE type: 0 (QM v2: tag in dw13) or 3 (QM v3: tag in dw26).
    #[bits(4)]
    pub sqe_type: u8,
}

/// dw9: request type, buffer type, window size.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct Dw9 {
    /// \[7:0\] request type: see [`ReqType`] (1 deflate, 2 zlib, 3 gzip; model: bit 7
    /// set = decompress).
    #[bits(8)]
    pub req_type: u8,
    /// \[11:8\] buffer type: 0 = flat buffer, 1 = hardware SGL (not modelled).
    #[bits(4)]
    pub buf_type: u8,
    /// \[15:12\] window size code (accepted and ignored: the model always uses the
    /// full 32 KiB DEFLATE window).
    #[bits(4)]
    pub win_size: u8,
    /// \[31:16\] reserved.
    #[bits(16)]
    __: u16,
}

/// Stream formats the engine speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Alg {
    /// Raw DEFLATE (RFC 1951). Request type 0x01 (UADK `HW_DEFLATE`).
    Deflate,
    /// zlib (RFC 1950): 2-byte header, DEFLATE, Adler-32. Request type 0x02 (`HW_ZLIB`).
    Zlib,
    /// gzip (RFC 1952): 10-byte header, DEFLATE, CRC-32 and ISIZE. Request type 0x03
    /// (`HW_GZIP`).
    Gzip,
}

impl Alg {
    /// Every algorithm, in request-type order.
    pub const ALL: [Alg; 3] = [Alg::Deflate, Alg::Zlib, Alg::Gzip];

    /// The uacce algorithm name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Deflate => "deflate",
            Alg::Zlib => "zlib",
            Alg::Gzip => "gzip",
        }
    }
}

/// Bit 7 of the request type (model): decompress. On real hardware the direction comes
/// from the queue type ([`crate::qm::QueueType`]); the model accepts either: a request
/// decompresses when this bit is set or its queue is a decompression queue.
pub const REQ_TYPE_DECOMPRESS: u8 = 0x80;

/// A decoded request type (dw9\[7:0\]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReqType {
    /// The stream format.
    pub alg: Alg,
    /// Decompress (bit 7) rather than compress.
    pub decompress: bool,
}

impl ReqType {
    /// Compression in `alg`.
    pub fn compress(alg: Alg) -> Self {
        Self {
            alg,
            decompress: false,
        }
    }

    /// Decompression of `alg`.
    pub fn decompress(alg: Alg) -> Self {
        Self {
            alg,
            decompress: true,
        }
    }

    /// The dw9\[7:0\] code.
    pub fn encode(self) -> u8 {
        let base = match self.alg {
            Alg::Deflate => 0x01,
            Alg::Zlib => 0x02,
            Alg::Gzip => 0x03,
        };
        if self.decompress {
            base | REQ_TYPE_DECOMPRESS
        } else {
            base
        }
    }

    /// The request type a code names, if any.
    pub fn decode(code: u8) -> Option<Self> {
        let alg = match code & !REQ_TYPE_DECOMPRESS {
            0x01 => Alg::Deflate,
            0x02 => Alg::Zlib,
            0x03 => Alg::Gzip,
            _ => return None,
        };
        Some(Self {
            alg,
            decompress: code & REQ_TYPE_DECOMPRESS != 0,
        })
    }
}

/// SQE type 0 (QM v2 layout: the tag is dw13).
pub const SQE_TYPE_V2: u8 = 0;
/// SQE type 3 (QM v3 layout: the tag is dw26).
pub const SQE_TYPE_V3: u8 = 3;

/// One ZIP SQE, every dword kept (decode then encode gives the same bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Sqe {
    /// dw0: input bytes consumed (written by the engine).
    pub consumed: u32,
    /// dw1: output bytes produced (written by the engine).
    pub produced: u32,
    /// dw2: compressed data length (unused by the model).
    pub comp_data_length: u32,
    /// dw3: status ([`Dw3`]).
    pub dw3: Dw3,
    /// dw4: input length in bytes.
    pub input_data_length: u32,
    /// dw5 (low) and dw6 (high), model: the address of a faulting source or destination
    /// DMA ([`status::ADDR_FAULT`]); 0 otherwise.
    pub fault_addr: u64,
    /// dw7: stream control and SQE type ([`Dw7`]).
    pub dw7: Dw7,
    /// dw8: output SGL data offset \[23:0\] (unused).
    pub dw8: u32,
    /// dw9: request type, buffer type, window size ([`Dw9`]).
    pub dw9: Dw9,
    /// dw10: reserved.
    pub dw10: u32,
    /// dw11: private information (unused).
    pub dw11: u32,
    /// dw12: reserved.
    pub dw12: u32,
    /// dw13: the tag of an SQE of type 0.
    pub tag_v2: u32,
    /// dw14: bytes available at the destination.
    pub dest_avail_out: u32,
    /// dw15: stream context word 0 (stateful mode; unused).
    pub ctx_dw0: u32,
    /// dw16: reserved.
    pub dw16: u32,
    /// dw17: reserved.
    pub dw17: u32,
    /// dw18 (low) / dw19 (high): source address.
    pub source_addr: u64,
    /// dw20 (low) / dw21 (high): destination address.
    pub dest_addr: u64,
    /// dw22 (low) / dw23 (high): stream context address (stateful mode; unused).
    pub stream_ctx_addr: u64,
    /// dw24 (low) / dw25 (high): literals address (LZ77 modes; unused).
    pub literals_addr: u64,
    /// dw26: the tag of an SQE of type 3.
    pub tag_v3: u32,
    /// dw27: reserved.
    pub dw27: u32,
    /// dw28: stream context word 1 (unused).
    pub ctx_dw1: u32,
    /// dw29: stream context word 2 (unused).
    pub ctx_dw2: u32,
    /// dw30: uncompressed size modulo 2^32 (written by the engine).
    pub isize: u32,
    /// dw31: checksum of the uncompressed data: Adler-32 (zlib) or CRC-32 (gzip), 0 for
    /// raw DEFLATE (written by the engine).
    pub checksum: u32,
}

fn dw(bytes: &[u8; SQE_SIZE], i: usize) -> u32 {
    u32::from_le_bytes([
        bytes[4 * i],
        bytes[4 * i + 1],
        bytes[4 * i + 2],
        bytes[4 * i + 3],
    ])
}

fn qw(bytes: &[u8; SQE_SIZE], lo: usize) -> u64 {
    u64::from(dw(bytes, lo)) | (u64::from(dw(bytes, lo + 1)) << 32)
}

impl Sqe {
    /// A request: `req` on `len` bytes at `src` into `cap` bytes at `dst`, stateless,
    /// one whole stream, with `tag` (SQE type 3).
    pub fn request(req: ReqType, src: u64, len: u32, dst: u64, cap: u32, tag: u32) -> Self {
        let mut sqe = Self {
            input_data_length: len,
            dest_avail_out: cap,
            source_addr: src,
            dest_addr: dst,
            dw7: Dw7::new()
                .with_flush_type(true)
                .with_new_stream(true)
                .with_sqe_type(SQE_TYPE_V3),
            dw9: Dw9::new().with_req_type(req.encode()),
            ..Self::default()
        };
        sqe.set_tag(tag);
        sqe
    }

    /// Decodes 128 bytes.
    pub fn decode(bytes: &[u8; SQE_SIZE]) -> Self {
        Self {
            consumed: dw(bytes, 0),
            produced: dw(bytes, 1),
            comp_data_length: dw(bytes, 2),
            dw3: Dw3::from_bits(dw(bytes, 3)),
            input_data_length: dw(bytes, 4),
            fault_addr: qw(bytes, 5),
            dw7: Dw7::from_bits(dw(bytes, 7)),
            dw8: dw(bytes, 8),
            dw9: Dw9::from_bits(dw(bytes, 9)),
            dw10: dw(bytes, 10),
            dw11: dw(bytes, 11),
            dw12: dw(bytes, 12),
            tag_v2: dw(bytes, 13),
            dest_avail_out: dw(bytes, 14),
            ctx_dw0: dw(bytes, 15),
            dw16: dw(bytes, 16),
            dw17: dw(bytes, 17),
            source_addr: qw(bytes, 18),
            dest_addr: qw(bytes, 20),
            stream_ctx_addr: qw(bytes, 22),
            literals_addr: qw(bytes, 24),
            tag_v3: dw(bytes, 26),
            dw27: dw(bytes, 27),
            ctx_dw1: dw(bytes, 28),
            ctx_dw2: dw(bytes, 29),
            isize: dw(bytes, 30),
            checksum: dw(bytes, 31),
        }
    }

    /// The 32 dwords in order.
    pub fn dwords(&self) -> [u32; 32] {
        let lo = |v: u64| v as u32;
        let hi = |v: u64| (v >> 32) as u32;
        [
            self.consumed,
            self.produced,
            self.comp_data_length,
            self.dw3.into_bits(),
            self.input_data_length,
            lo(self.fault_addr),
            hi(self.fault_addr),
            self.dw7.into_bits(),
            self.dw8,
            self.dw9.into_bits(),
            self.dw10,
            self.dw11,
            self.dw12,
            self.tag_v2,
            self.dest_avail_out,
            self.ctx_dw0,
            self.dw16,
            self.dw17,
            lo(self.source_addr),
            hi(self.source_addr),
            lo(self.dest_addr),
            hi(self.dest_addr),
            lo(self.stream_ctx_addr),
            hi(self.stream_ctx_addr),
            lo(self.literals_addr),
            hi(self.literals_addr),
            self.tag_v3,
            self.dw27,
            self.ctx_dw1,
            self.ctx_dw2,
            self.isize,
            self.checksum,
        ]
    }

    /// Encodes into 128 bytes.
    pub fn encode(&self) -> [u8; SQE_SIZE] {
        let mut out = [0u8; SQE_SIZE];
        for (i, d) in self.dwords().iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&d.to_le_bytes());
        }
        out
    }

    /// The tag: dw13 for SQE type 0, dw26 otherwise.
    pub fn tag(&self) -> u32 {
        if self.dw7.sqe_type() == SQE_TYPE_V2 {
            self.tag_v2
        } else {
            self.tag_v3
        }
    }

    /// Sets the tag where the SQE type keeps it.
    pub fn set_tag(&mut self, tag: u32) {
        if self.dw7.sqe_type() == SQE_TYPE_V2 {
            self.tag_v2 = tag;
        } else {
            self.tag_v3 = tag;
        }
    }

    /// The completion status (dw3\[7:0\]).
    pub fn status(&self) -> u8 {
        self.dw3.status()
    }

    /// The request type, if dw9\[7:0\] names one.
    pub fn req_type(&self) -> Option<ReqType> {
        ReqType::decode(self.dw9.req_type())
    }
}

/// Byte ranges of the SQE the engine writes back: dw0–dw6 (consumed, produced,
/// comp_data_length, status, input length, fault address) and dw30–dw31 (isize,
/// checksum).
pub const WRITEBACK_RANGES: [core::ops::Range<usize>; 2] = [0..28, 120..128];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_pinned_to_bytes() {
        let mut sqe = Sqe::request(
            ReqType::compress(Alg::Zlib),
            0x1122_3344_5566_7788,
            0x1000,
            0x0000_7fff_0000_1000,
            0x2000,
            0xdead_beef,
        );
        sqe.dw3 = Dw3::new()
            .with_status(status::DECOMP_END)
            .with_last_block(true);
        sqe.consumed = 1;
        sqe.produced = 2;
        sqe.fault_addr = 0xaaaa_bbbb_cccc_dddd;
        sqe.dw9.set_win_size(4);
        sqe.isize = 0x0102_0304;
        sqe.checksum = 0x0a0b_0c0d;
        let b = sqe.encode();
        let mut want = [0u8; SQE_SIZE];
        let put = |w: &mut [u8; SQE_SIZE], i: usize, v: u32| {
            w[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        };
        put(&mut want, 0, 1);
        put(&mut want, 1, 2);
        put(&mut want, 3, 0x0000_0113);
        put(&mut want, 4, 0x1000);
        put(&mut want, 5, 0xcccc_dddd);
        put(&mut want, 6, 0xaaaa_bbbb);
        // flush (bit 25) | new stream (bit 27) | sqe type 3 (bits 31:28)
        put(&mut want, 7, 0x3a00_0000);
        // req type 2, buf type 0, window 4
        put(&mut want, 9, 0x0000_4002);
        put(&mut want, 14, 0x2000);
        put(&mut want, 18, 0x5566_7788);
        put(&mut want, 19, 0x1122_3344);
        put(&mut want, 20, 0x0000_1000);
        put(&mut want, 21, 0x0000_7fff);
        put(&mut want, 26, 0xdead_beef);
        put(&mut want, 30, 0x0102_0304);
        put(&mut want, 31, 0x0a0b_0c0d);
        assert_eq!(b, want);
        assert_eq!(Sqe::decode(&b), sqe);
        assert_eq!(sqe.tag(), 0xdead_beef);
        assert_eq!(sqe.req_type(), Some(ReqType::compress(Alg::Zlib)));
        assert_eq!(b[12], 0x13, "status in dw3[7:0]");
    }

    #[test]
    fn v2_tag_lives_in_dw13() {
        let mut sqe = Sqe::default();
        sqe.set_tag(7);
        assert_eq!(sqe.tag_v2, 7);
        assert_eq!(&sqe.encode()[52..56], &[7, 0, 0, 0]);
    }

    #[test]
    fn req_types() {
        for alg in Alg::ALL {
            for r in [ReqType::compress(alg), ReqType::decompress(alg)] {
                assert_eq!(ReqType::decode(r.encode()), Some(r));
            }
        }
        assert_eq!(ReqType::compress(Alg::Gzip).encode(), 0x03);
        assert_eq!(ReqType::decompress(Alg::Deflate).encode(), 0x81);
        assert_eq!(ReqType::decode(0), None);
        assert_eq!(ReqType::decode(0x43), None);
    }

    #[test]
    fn fault_codes_round_trip() {
        for c in 1..=8 {
            let r = fault_code::decode(c).expect("defined");
            assert_eq!(fault_code::encode(r), c);
        }
        assert_eq!(fault_code::decode(0), None);
        assert_eq!(fault_code::decode(9), None);
    }
}
