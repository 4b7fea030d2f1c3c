//! The 32-byte completion record (Linux `struct dsa_completion_record`) and the status
//! codes (`enum dsa_completion_status`).
//!
//! Byte layout (little endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0 | [`StatusByte`]: status code `[6:0]`, fault-on-write `[7]` (`DSA_COMP_STATUS_WRITE`) |
//! | 1 | result (compare: 0 equal / 1 different; memmove: 0 ascending / 1 descending copy; batch: 1 if a descriptor failed) |
//! | 2 | [`FaultInfo`] |
//! | 3 | reserved |
//! | 4..8 | bytes completed before a fault; the offset of the first difference (compare); descriptors completed (batch); the model writes the transfer size on success |
//! | 8..16 | fault address |
//! | 16..32 | operation-specific: invalid flags (16..19, on [`Status::InvalidFlags`]), CRC value (16..24, CRC generation) |

use bitfield_struct::bitfield;

/// Size of a DSA completion record in bytes (and its required alignment).
pub const COMPLETION_RECORD_SIZE: usize = 32;

/// A completion status code (the low 7 bits of the status byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Status {
    /// `DSA_COMP_NONE` (0): not written yet.
    None = 0x00,
    /// `DSA_COMP_SUCCESS` (1).
    Success = 0x01,
    /// `DSA_COMP_SUCCESS_PRED` (2): success with false predicate (CR set and the result is
    /// not the expected one).
    SuccessPred = 0x02,
    /// `DSA_COMP_PAGE_FAULT_NOBOF` (3): partial completion on a page fault with BOF clear.
    PageFaultNoBof = 0x03,
    /// `DSA_COMP_PAGE_FAULT_IR` (4): a page fault that could not be resolved.
    PageFaultIr = 0x04,
    /// `DSA_COMP_BATCH_FAIL` (5): a descriptor of the batch did not succeed.
    BatchFail = 0x05,
    /// `DSA_COMP_BATCH_PAGE_FAULT` (6): page fault reading the descriptor list.
    BatchPageFault = 0x06,
    /// `DSA_COMP_DR_OFFSET_NOINC` (7).
    DrOffsetNoInc = 0x07,
    /// `DSA_COMP_DR_OFFSET_ERANGE` (8).
    DrOffsetErange = 0x08,
    /// `DSA_COMP_DIF_ERR` (9).
    DifErr = 0x09,
    /// `DSA_COMP_BAD_OPCODE` (0x10): unknown or unsupported opcode (or batch/drain in a batch).
    BadOpcode = 0x10,
    /// `DSA_COMP_INVALID_FLAGS` (0x11): the invalid flags are in the record's op-specific
    /// bytes.
    InvalidFlags = 0x11,
    /// `DSA_COMP_NOZERO_RESERVE` (0x12): a reserved field is not zero.
    NonZeroReserved = 0x12,
    /// `DSA_COMP_XFER_ERANGE` (0x13): transfer size 0 or above the maximum.
    XferErange = 0x13,
    /// `DSA_COMP_DESC_CNT_ERANGE` (0x14): batch descriptor count below 2 or above the maximum.
    DescCountErange = 0x14,
    /// `DSA_COMP_DR_ERANGE` (0x15).
    DrErange = 0x15,
    /// `DSA_COMP_OVERLAP_BUFFERS` (0x16).
    OverlapBuffers = 0x16,
    /// `DSA_COMP_DCAST_ERR` (0x17): dualcast destinations differ in bits `[11:0]`.
    DcastErr = 0x17,
    /// `DSA_COMP_DESCLIST_ALIGN` (0x18): batch descriptor list not 64-byte aligned.
    DescListAlign = 0x18,
    /// `DSA_COMP_INT_HANDLE_INVAL` (0x19).
    IntHandleInval = 0x19,
    /// `DSA_COMP_CRA_XLAT` (0x1a): the completion record address did not translate.
    CraXlat = 0x1a,
    /// `DSA_COMP_CRA_ALIGN` (0x1b): the completion record address is not 32-byte aligned.
    CraAlign = 0x1b,
    /// `DSA_COMP_ADDR_ALIGN` (0x1c).
    AddrAlign = 0x1c,
    /// `DSA_COMP_PRIV_BAD` (0x1d).
    PrivBad = 0x1d,
    /// `DSA_COMP_TRAFFIC_CLASS_CONF` (0x1e).
    TrafficClassConf = 0x1e,
    /// `DSA_COMP_PFAULT_RDBA` (0x1f).
    PfaultRdba = 0x1f,
    /// `DSA_COMP_HW_ERR1` (0x20): the model reports DMA outside memory with it.
    HwErr1 = 0x20,
    /// `DSA_COMP_HW_ERR_DRB` (0x21).
    HwErrDrb = 0x21,
    /// `DSA_COMP_TRANSLATION_FAIL` (0x22): the IOMMU aborted the access (configuration
    /// error, function disabled, ATS rejected).
    TranslationFail = 0x22,
    /// `DSA_COMP_DRAIN_EVL` (0x26).
    DrainEvl = 0x26,
    /// `DSA_COMP_BATCH_EVL_ERR` (0x27).
    BatchEvlErr = 0x27,
}

impl Status {
    /// The status for a code (bit 7 ignored), `None` for an undefined code.
    pub fn from_code(code: u8) -> Option<Self> {
        use Status::*;
        Some(match code & STATUS_CODE_MASK {
            0x00 => None,
            0x01 => Success,
            0x02 => SuccessPred,
            0x03 => PageFaultNoBof,
            0x04 => PageFaultIr,
            0x05 => BatchFail,
            0x06 => BatchPageFault,
            0x07 => DrOffsetNoInc,
            0x08 => DrOffsetErange,
            0x09 => DifErr,
            0x10 => BadOpcode,
            0x11 => InvalidFlags,
            0x12 => NonZeroReserved,
            0x13 => XferErange,
            0x14 => DescCountErange,
            0x15 => DrErange,
            0x16 => OverlapBuffers,
            0x17 => DcastErr,
            0x18 => DescListAlign,
            0x19 => IntHandleInval,
            0x1a => CraXlat,
            0x1b => CraAlign,
            0x1c => AddrAlign,
            0x1d => PrivBad,
            0x1e => TrafficClassConf,
            0x1f => PfaultRdba,
            0x20 => HwErr1,
            0x21 => HwErrDrb,
            0x22 => TranslationFail,
            0x26 => DrainEvl,
            0x27 => BatchEvlErr,
            _ => return Option::None,
        })
    }

    /// The 7-bit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Whether the operation completed (Success, or Success with false predicate).
    pub fn is_success(self) -> bool {
        matches!(self, Status::Success | Status::SuccessPred)
    }
}

/// `DSA_COMP_STATUS_MASK`: the code bits of the status byte.
pub const STATUS_CODE_MASK: u8 = 0x7f;
/// `DSA_COMP_STATUS_WRITE`: the fault was on a write.
pub const STATUS_WRITE: u8 = 0x80;

/// Byte 0 of a completion record.
#[bitfield(u8)]
#[derive(PartialEq, Eq, Hash)]
pub struct StatusByte {
    /// Bits `[6:0]`: the status code ([`Status`]); 0 until the record is written.
    #[bits(7)]
    pub code: u8,
    /// Bit 7 (`DSA_COMP_STATUS_WRITE`): the page fault was on a write.
    pub write: bool,
}

/// Byte 2 of a completion record: details of a fault.
#[bitfield(u8)]
#[derive(PartialEq, Eq, Hash)]
pub struct FaultInfo {
    /// Bit 0: R/W, the faulting access was a write (the same as the status byte's bit 7).
    pub write: bool,
    /// Bit 1: the fault was on the batch's descriptor list (model-defined position).
    pub desc_list: bool,
    /// Bits `[7:2]`: reserved.
    #[bits(6)]
    __: u8,
}

/// A decoded completion record. Every bit of the 32 bytes has a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CompletionRecord {
    /// Byte 0: status code and write bit.
    pub status: StatusByte,
    /// Byte 1: result.
    pub result: u8,
    /// Byte 2: fault information.
    pub fault_info: FaultInfo,
    /// Byte 3: reserved.
    pub reserved: u8,
    /// Bytes 4..8: bytes completed, or descriptors completed (batch).
    pub bytes_completed: u32,
    /// Bytes 8..16: the address that faulted.
    pub fault_addr: u64,
    /// Bytes 16..32: operation-specific.
    pub op_specific: [u8; 16],
}

impl CompletionRecord {
    /// A record with `status` and everything else zero.
    pub fn with_status(status: Status) -> Self {
        Self {
            status: StatusByte::new().with_code(status.code()),
            ..Self::default()
        }
    }

    /// The raw 7-bit status code.
    pub fn code(&self) -> u8 {
        self.status.code()
    }

    /// The status, `None` for an undefined code.
    pub fn status(&self) -> Option<Status> {
        Status::from_code(self.status.code())
    }

    /// Whether the device has written the record (status not zero).
    pub fn is_complete(&self) -> bool {
        self.status.code() != 0
    }

    /// Whether the operation completed (Success, or Success with false predicate).
    pub fn is_success(&self) -> bool {
        self.status().is_some_and(Status::is_success)
    }

    /// Whether a page fault was on a write (status bit 7).
    pub fn fault_on_write(&self) -> bool {
        self.status.write()
    }

    /// Descriptors completed (batch): the bytes-completed field.
    pub fn descs_completed(&self) -> u32 {
        self.bytes_completed
    }

    /// Bytes 16..24: the CRC value (CRC generation; the CRC-32C in the low 32 bits).
    pub fn crc_val(&self) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.op_specific[..8]);
        u64::from_le_bytes(w)
    }

    /// Sets bytes 16..24, the CRC value.
    pub fn set_crc_val(&mut self, v: u64) {
        self.op_specific[..8].copy_from_slice(&v.to_le_bytes());
    }

    /// Bytes 16..19: the flags found invalid (on [`Status::InvalidFlags`]), 24 bits.
    pub fn invalid_flags(&self) -> u32 {
        u32::from_le_bytes([
            self.op_specific[0],
            self.op_specific[1],
            self.op_specific[2],
            0,
        ])
    }

    /// Sets bytes 16..19, the invalid flags.
    pub fn set_invalid_flags(&mut self, v: u32) {
        self.op_specific[..3].copy_from_slice(&v.to_le_bytes()[..3]);
    }

    /// The 32 bytes the device writes.
    pub fn encode(&self) -> [u8; COMPLETION_RECORD_SIZE] {
        let mut b = [0u8; COMPLETION_RECORD_SIZE];
        b[0] = self.status.into_bits();
        b[1] = self.result;
        b[2] = self.fault_info.into_bits();
        b[3] = self.reserved;
        b[4..8].copy_from_slice(&self.bytes_completed.to_le_bytes());
        b[8..16].copy_from_slice(&self.fault_addr.to_le_bytes());
        b[16..32].copy_from_slice(&self.op_specific);
        b
    }

    /// Decodes 32 bytes.
    pub fn decode(b: &[u8; COMPLETION_RECORD_SIZE]) -> Self {
        let mut fault_addr = [0u8; 8];
        fault_addr.copy_from_slice(&b[8..16]);
        let mut op_specific = [0u8; 16];
        op_specific.copy_from_slice(&b[16..32]);
        Self {
            status: StatusByte::from_bits(b[0]),
            result: b[1],
            fault_info: FaultInfo::from_bits(b[2]),
            reserved: b[3],
            bytes_completed: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            fault_addr: u64::from_le_bytes(fault_addr),
            op_specific,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_defined_code_round_trips() {
        let mut defined = 0;
        for code in 0..=0x7fu8 {
            if let Some(s) = Status::from_code(code) {
                assert_eq!(s.code(), code);
                defined += 1;
            }
        }
        assert_eq!(defined, 31);
        assert_eq!(
            Status::from_code(0x83),
            Some(Status::PageFaultNoBof),
            "bit 7 is not part of the code"
        );
    }

    #[test]
    fn invalid_flags_are_24_bits() {
        let mut r = CompletionRecord::default();
        r.set_invalid_flags(0xff12_3456);
        assert_eq!(r.invalid_flags(), 0x12_3456);
        assert_eq!(r.op_specific[3], 0);
    }
}
