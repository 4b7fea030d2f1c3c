//! The 64-byte work descriptor (Linux `struct dsa_hw_desc`, DSA architecture
//! specification chapter 8 "Descriptor formats").
//!
//! Byte layout (little endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | [`DescWord0`]: PASID `[19:0]`, reserved `[30:20]`, Priv `[31]`, flags `[55:32]`, opcode `[63:56]` |
//! | 8..16 | completion record address |
//! | 16..24 | source address; the pattern (memory fill); the descriptor-list address (batch) |
//! | 24..32 | destination address; source 2 (compare); the pattern (compare pattern) |
//! | 32..36 | transfer size; the descriptor count (batch) |
//! | 36..38 | interrupt handle |
//! | 38..40 | reserved |
//! | 40..64 | operation-specific: expected result (byte 40, compare / compare pattern), destination 2 (40..48, dualcast), CRC seed (40..44, CRC generation) |

use bitfield_struct::bitfield;

/// Size of a descriptor in bytes.
pub const DESCRIPTOR_SIZE: usize = 64;

/// The operation a descriptor asks for (`enum dsa_opcode`). Only the operations this model
/// executes are listed; any other value is answered with
/// [`Status::BadOpcode`](crate::Status::BadOpcode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// `DSA_OPCODE_NOOP` (0): no operation, only a completion.
    Noop = 0x00,
    /// `DSA_OPCODE_BATCH` (1): execute a list of descriptors.
    Batch = 0x01,
    /// `DSA_OPCODE_DRAIN` (2): complete after every earlier descriptor of the work queue.
    Drain = 0x02,
    /// `DSA_OPCODE_MEMMOVE` (3): copy, overlapping buffers allowed.
    Memmove = 0x03,
    /// `DSA_OPCODE_MEMFILL` (4): fill with an 8-byte pattern.
    Memfill = 0x04,
    /// `DSA_OPCODE_COMPARE` (5): compare two buffers.
    Compare = 0x05,
    /// `DSA_OPCODE_COMPVAL` (6): compare a buffer with an 8-byte pattern.
    CompareValue = 0x06,
    /// `DSA_OPCODE_DUALCAST` (9): copy one source to two destinations.
    Dualcast = 0x09,
    /// `DSA_OPCODE_CRCGEN` (0x10): CRC-32C (Castagnoli) of a buffer.
    CrcGen = 0x10,
}

impl Opcode {
    /// The opcode for a raw value, `None` if the model does not implement it.
    pub fn from_u8(raw: u8) -> Option<Self> {
        Some(match raw {
            0x00 => Self::Noop,
            0x01 => Self::Batch,
            0x02 => Self::Drain,
            0x03 => Self::Memmove,
            0x04 => Self::Memfill,
            0x05 => Self::Compare,
            0x06 => Self::CompareValue,
            0x09 => Self::Dualcast,
            0x10 => Self::CrcGen,
            _ => return None,
        })
    }

    /// The raw value.
    pub fn raw(self) -> u8 {
        self as u8
    }

    /// The name the driver advertises for the operation.
    pub fn name(self) -> &'static str {
        match self {
            Self::Noop => "noop",
            Self::Batch => "batch",
            Self::Drain => "drain",
            Self::Memmove => "memmove",
            Self::Memfill => "fill",
            Self::Compare => "compare",
            Self::CompareValue => "compare_pattern",
            Self::Dualcast => "dualcast",
            Self::CrcGen => "crc32c",
        }
    }
}

/// The descriptor flags (`IDXD_OP_FLAG_*`), bits `[55:32]` of the first descriptor word,
/// i.e. bits `[23:0]` of the little-endian dword at byte 4.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct DescFlags {
    /// Bit 0, `FENCE` (0x1): in a batch, wait for the earlier descriptors of the batch and
    /// skip this one (and the rest) if one of them did not complete with Success.
    pub fence: bool,
    /// Bit 1, `BOF` (0x2): block on fault; wait for an I/O page fault to be resolved instead
    /// of completing partially with [`Status::PageFaultNoBof`](crate::Status::PageFaultNoBof).
    pub bof: bool,
    /// Bit 2, `CRAV` (0x4): the completion record address is valid.
    pub crav: bool,
    /// Bit 3, `RCR` (0x8): request a completion record (else one is written only on error).
    pub rcr: bool,
    /// Bit 4, `RCI` (0x10): request a completion interrupt.
    pub rci: bool,
    /// Bit 5, `CRSTS` (0x20): completion record steering tag selector (accepted, ignored).
    pub crsts: bool,
    /// Bit 6: reserved.
    #[bits(1)]
    pub reserved6: u8,
    /// Bit 7, `CR` (0x80): check result; the status is Success with false predicate when
    /// the result differs from the expected result (compare operations).
    pub cr: bool,
    /// Bit 8, `CC` (0x100): cache control hint for destination writes (accepted, ignored).
    pub cc: bool,
    /// Bit 9, `ADDR1_TCS` (0x200): traffic class of address 1 (accepted, ignored).
    pub addr1_tcs: bool,
    /// Bit 10, `ADDR2_TCS` (0x400): traffic class of address 2 (accepted, ignored).
    pub addr2_tcs: bool,
    /// Bit 11, `ADDR3_TCS` (0x800): traffic class of address 3 (accepted, ignored).
    pub addr3_tcs: bool,
    /// Bit 12, `CR_TCS` (0x1000): traffic class of the completion record (accepted, ignored).
    pub cr_tcs: bool,
    /// Bit 13, `STORD` (0x2000): strict ordering of destination writes (accepted; the model
    /// always writes in order).
    pub stord: bool,
    /// Bit 14, `DRDBK` (0x4000): destination readback (accepted, ignored).
    pub drdbk: bool,
    /// Bit 15, `DSTS` (0x8000): destination steering tag selector (accepted, ignored).
    pub dsts: bool,
    /// Bits `[23:16]`: operation-specific flags (e.g. CRC "read seed"); none is implemented,
    /// so any set bit is reported as invalid.
    #[bits(8)]
    pub op_flags: u8,
    /// Bits `[31:24]`: outside the 24-bit field; always zero after decoding.
    #[bits(8)]
    __: u8,
}

impl DescFlags {
    /// `IDXD_OP_FLAG_FENCE`.
    pub const FENCE: u32 = 0x0001;
    /// `IDXD_OP_FLAG_BOF`.
    pub const BOF: u32 = 0x0002;
    /// `IDXD_OP_FLAG_CRAV`.
    pub const CRAV: u32 = 0x0004;
    /// `IDXD_OP_FLAG_RCR`.
    pub const RCR: u32 = 0x0008;
    /// `IDXD_OP_FLAG_RCI`.
    pub const RCI: u32 = 0x0010;
    /// `IDXD_OP_FLAG_CRSTS`.
    pub const CRSTS: u32 = 0x0020;
    /// `IDXD_OP_FLAG_CR`.
    pub const CR: u32 = 0x0080;
    /// `IDXD_OP_FLAG_CC`.
    pub const CC: u32 = 0x0100;
    /// Every flag this model accepts (bits `[15:0]` except the reserved bit 6).
    pub const SUPPORTED: u32 = 0xffbf;

    /// The flags that are set but not accepted by the model (reported in a completion
    /// record's invalid-flags field).
    pub fn unsupported(self) -> u32 {
        self.into_bits() & 0x00ff_ffff & !Self::SUPPORTED
    }
}

/// The first 8 bytes of a descriptor as a little-endian word.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct DescWord0 {
    /// Bits `[19:0]`: PASID. Ignored on submission: a dedicated WQ uses its own PASID and
    /// ENQCMD supplies the submitter's.
    #[bits(20)]
    pub pasid: u32,
    /// Bits `[30:20]`: reserved, must be zero.
    #[bits(11)]
    pub reserved: u16,
    /// Bit 31: Priv (supervisor request). Ignored on user portals.
    pub privileged: bool,
    /// Bits `[55:32]`: the flags ([`DescFlags`]).
    #[bits(24)]
    pub flags: u32,
    /// Bits `[63:56]`: the opcode ([`Opcode`]).
    #[bits(8)]
    pub opcode: u8,
}

/// A decoded descriptor. Every bit of the 64 bytes has a field, so
/// `Descriptor::decode(b).encode() == b` for any `b`; the raw opcode is kept so that
/// unknown operations can be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Descriptor {
    /// Bits `[19:0]` of bytes 0..4: the PASID field (20 bits; higher bits are dropped on
    /// encoding).
    pub pasid: u32,
    /// Bits `[30:20]` of bytes 0..4: reserved, must be zero (11 bits).
    pub reserved0: u16,
    /// Bit 31 of bytes 0..4: Priv.
    pub privileged: bool,
    /// Bytes 4..7: the flags.
    pub flags: DescFlags,
    /// Byte 7: the raw opcode.
    pub opcode: u8,
    /// Bytes 8..16: completion record address (32-byte aligned).
    pub completion_addr: u64,
    /// Bytes 16..24: source address, or the fill pattern (memory fill), or the
    /// descriptor-list address (batch).
    pub src: u64,
    /// Bytes 24..32: destination address, or source 2 (compare), or the pattern (compare
    /// pattern).
    pub dst: u64,
    /// Bytes 32..36: transfer size in bytes, or the descriptor count (batch).
    pub xfer_size: u32,
    /// Bytes 36..38: interrupt handle (used with RCI).
    pub int_handle: u16,
    /// Bytes 38..40: reserved, must be zero.
    pub reserved1: u16,
    /// Bytes 40..64: operation-specific fields.
    pub op_specific: [u8; 24],
}

impl Default for Descriptor {
    fn default() -> Self {
        Self {
            pasid: 0,
            reserved0: 0,
            privileged: false,
            flags: DescFlags::new(),
            opcode: 0,
            completion_addr: 0,
            src: 0,
            dst: 0,
            xfer_size: 0,
            int_handle: 0,
            reserved1: 0,
            op_specific: [0; 24],
        }
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl Descriptor {
    /// A descriptor for `op` with the completion record at `completion_addr`, flags
    /// CRAV | RCR (a record is always written), everything else zero.
    pub fn new(op: Opcode, completion_addr: u64) -> Self {
        Self {
            opcode: op.raw(),
            completion_addr,
            flags: DescFlags::from_bits(DescFlags::CRAV | DescFlags::RCR),
            ..Self::default()
        }
    }

    /// No operation.
    pub fn noop(completion_addr: u64) -> Self {
        Self::new(Opcode::Noop, completion_addr)
    }

    /// Drain: completes after every earlier descriptor of the work queue.
    pub fn drain(completion_addr: u64) -> Self {
        Self::new(Opcode::Drain, completion_addr)
    }

    /// Copies `len` bytes from `src` to `dst` (memmove: the buffers may overlap).
    pub fn memmove(completion_addr: u64, src: u64, dst: u64, len: u32) -> Self {
        Self {
            src,
            dst,
            xfer_size: len,
            ..Self::new(Opcode::Memmove, completion_addr)
        }
    }

    /// Fills `len` bytes at `dst` with `pattern` repeated (byte `i` is byte `i % 8` of the
    /// little-endian pattern).
    pub fn memfill(completion_addr: u64, dst: u64, pattern: u64, len: u32) -> Self {
        Self {
            src: pattern,
            dst,
            xfer_size: len,
            ..Self::new(Opcode::Memfill, completion_addr)
        }
    }

    /// Compares `len` bytes at `src1` and `src2`. Sets CR with expected result 0, so a
    /// mismatch completes with Success with false predicate.
    pub fn compare(completion_addr: u64, src1: u64, src2: u64, len: u32) -> Self {
        let mut d = Self {
            src: src1,
            dst: src2,
            xfer_size: len,
            ..Self::new(Opcode::Compare, completion_addr)
        };
        d.flags.set_cr(true);
        d
    }

    /// Compares `len` bytes at `src` with `pattern` repeated. Sets CR with expected result
    /// 0, like [`Descriptor::compare`].
    pub fn compare_pattern(completion_addr: u64, src: u64, pattern: u64, len: u32) -> Self {
        let mut d = Self {
            src,
            dst: pattern,
            xfer_size: len,
            ..Self::new(Opcode::CompareValue, completion_addr)
        };
        d.flags.set_cr(true);
        d
    }

    /// Copies `len` bytes from `src` to both `dst1` and `dst2` (whose bits `[11:0]` must be
    /// equal).
    pub fn dualcast(completion_addr: u64, src: u64, dst1: u64, dst2: u64, len: u32) -> Self {
        let mut d = Self {
            src,
            dst: dst1,
            xfer_size: len,
            ..Self::new(Opcode::Dualcast, completion_addr)
        };
        d.set_dst2(dst2);
        d
    }

    /// CRC-32C of `len` bytes at `src`, continuing from `seed` (the CRC of the data before;
    /// 0 for a fresh CRC).
    pub fn crc32c(completion_addr: u64, src: u64, len: u32, seed: u32) -> Self {
        let mut d = Self {
            src,
            xfer_size: len,
            ..Self::new(Opcode::CrcGen, completion_addr)
        };
        d.set_crc_seed(seed);
        d
    }

    /// A batch of `count` descriptors at `list` (64-byte aligned).
    pub fn batch(completion_addr: u64, list: u64, count: u32) -> Self {
        Self {
            src: list,
            xfer_size: count,
            ..Self::new(Opcode::Batch, completion_addr)
        }
    }

    /// The opcode, `None` if the model does not implement it.
    pub fn op(&self) -> Option<Opcode> {
        Opcode::from_u8(self.opcode)
    }

    /// Byte 40: the expected result (compare, compare pattern; checked with CR).
    pub fn expected_res(&self) -> u8 {
        self.op_specific[0]
    }

    /// Sets byte 40, the expected result.
    pub fn set_expected_res(&mut self, v: u8) {
        self.op_specific[0] = v;
    }

    /// Bytes 40..48: destination 2 (dualcast).
    pub fn dst2(&self) -> u64 {
        u64_at(&self.op_specific, 0)
    }

    /// Sets bytes 40..48, destination 2.
    pub fn set_dst2(&mut self, v: u64) {
        self.op_specific[..8].copy_from_slice(&v.to_le_bytes());
    }

    /// Bytes 40..44: the CRC seed (CRC generation).
    pub fn crc_seed(&self) -> u32 {
        u32_at(&self.op_specific, 0)
    }

    /// Sets bytes 40..44, the CRC seed.
    pub fn set_crc_seed(&mut self, v: u32) {
        self.op_specific[..4].copy_from_slice(&v.to_le_bytes());
    }

    /// The descriptor count of a batch (the transfer-size field).
    pub fn desc_count(&self) -> u32 {
        self.xfer_size
    }

    /// The first word ([`DescWord0`]).
    pub fn word0(&self) -> DescWord0 {
        DescWord0::new()
            .with_pasid(self.pasid & 0xf_ffff)
            .with_reserved(self.reserved0 & 0x7ff)
            .with_privileged(self.privileged)
            .with_flags(self.flags.into_bits() & 0xff_ffff)
            .with_opcode(self.opcode)
    }

    /// The 64 bytes the CPU stores to a portal.
    pub fn encode(&self) -> [u8; DESCRIPTOR_SIZE] {
        let mut b = [0u8; DESCRIPTOR_SIZE];
        b[0..8].copy_from_slice(&self.word0().into_bits().to_le_bytes());
        b[8..16].copy_from_slice(&self.completion_addr.to_le_bytes());
        b[16..24].copy_from_slice(&self.src.to_le_bytes());
        b[24..32].copy_from_slice(&self.dst.to_le_bytes());
        b[32..36].copy_from_slice(&self.xfer_size.to_le_bytes());
        b[36..38].copy_from_slice(&self.int_handle.to_le_bytes());
        b[38..40].copy_from_slice(&self.reserved1.to_le_bytes());
        b[40..64].copy_from_slice(&self.op_specific);
        b
    }

    /// Decodes 64 bytes. Never fails: validity is the device's business.
    pub fn decode(b: &[u8; DESCRIPTOR_SIZE]) -> Self {
        let w0 = DescWord0::from_bits(u64_at(b, 0));
        let mut op_specific = [0u8; 24];
        op_specific.copy_from_slice(&b[40..64]);
        Self {
            pasid: w0.pasid(),
            reserved0: w0.reserved(),
            privileged: w0.privileged(),
            flags: DescFlags::from_bits(w0.flags()),
            opcode: w0.opcode(),
            completion_addr: u64_at(b, 8),
            src: u64_at(b, 16),
            dst: u64_at(b, 24),
            xfer_size: u32_at(b, 32),
            int_handle: u16_at(b, 36),
            reserved1: u16_at(b, 38),
            op_specific,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_constants_match_the_bitfield() {
        let f = DescFlags::from_bits(DescFlags::FENCE | DescFlags::BOF | DescFlags::CR);
        assert!(f.fence() && f.bof() && f.cr());
        assert!(!f.crav() && !f.rcr() && !f.rci());
        assert_eq!(DescFlags::new().with_rci(true).into_bits(), DescFlags::RCI);
        assert_eq!(DescFlags::new().with_cc(true).into_bits(), DescFlags::CC);
        assert_eq!(DescFlags::from_bits(0x40).unsupported(), 0x40);
        assert_eq!(DescFlags::from_bits(0x1_0000).unsupported(), 0x1_0000);
        assert_eq!(DescFlags::from_bits(DescFlags::SUPPORTED).unsupported(), 0);
    }

    #[test]
    fn opcodes_round_trip() {
        for raw in 0..=255u8 {
            if let Some(op) = Opcode::from_u8(raw) {
                assert_eq!(op.raw(), raw);
            }
        }
        assert_eq!(Opcode::from_u8(0x07), None);
        assert_eq!(Opcode::from_u8(0x10), Some(Opcode::CrcGen));
    }
}
