//! The software error register (SWERR, Linux `union sw_err_reg`): errors that cannot be
//! reported in a completion record (no completion record address, a misaligned or
//! untranslatable one, a descriptor dropped at submission). The first error is latched;
//! later ones set the overflow bit until software clears the register.

use bitfield_struct::bitfield;
use sva_addr::Pasid;

/// Model-defined SWERR code (outside the completion status space): a descriptor was
/// written with MOVDIR64B to a disabled work queue and dropped.
pub const SWERR_WQ_DISABLED: u8 = 0x40;
/// Model-defined SWERR code: a dedicated work queue was full and a MOVDIR64B descriptor was
/// dropped.
pub const SWERR_WQ_FULL: u8 = 0x41;
/// Model-defined SWERR code: a descriptor was written with MOVDIR64B to a shared work queue
/// (which only accepts ENQCMD) and dropped.
pub const SWERR_POSTED_TO_SHARED_WQ: u8 = 0x42;

/// Word 0 of SWERR (register offset 0x0).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct SwErrWord0 {
    /// Bit 0: an error is recorded.
    pub valid: bool,
    /// Bit 1: further errors happened while one was recorded.
    pub overflow: bool,
    /// Bit 2: the operation, PASID and batch fields are valid (the error concerns a
    /// descriptor).
    pub desc_valid: bool,
    /// Bit 3: the work-queue index is valid.
    pub wq_idx_valid: bool,
    /// Bit 4: the descriptor was a member of a batch (the batch index is valid).
    pub batch: bool,
    /// Bit 5: the faulting access was a write.
    pub fault_rw: bool,
    /// Bit 6: the descriptor was privileged.
    pub privileged: bool,
    /// Bit 7: reserved.
    #[bits(1)]
    __: u8,
    /// Bits `[15:8]`: the error code (a completion status, or `SWERR_*`).
    #[bits(8)]
    pub error: u8,
    /// Bits `[23:16]`: the work queue.
    #[bits(8)]
    pub wq_idx: u8,
    /// Bits `[31:24]`: reserved.
    #[bits(8)]
    __: u8,
    /// Bits `[39:32]`: the descriptor's opcode.
    #[bits(8)]
    pub operation: u8,
    /// Bits `[59:40]`: the PASID the descriptor ran in.
    #[bits(20)]
    pub pasid: u32,
    /// Bits `[63:60]`: reserved.
    #[bits(4)]
    __: u8,
}

/// Word 1 of SWERR (register offset 0x8).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct SwErrWord1 {
    /// Bits `[15:0]`: index of the descriptor in its batch.
    #[bits(16)]
    pub batch_idx: u16,
    /// Bits `[31:16]`: reserved.
    #[bits(16)]
    __: u16,
    /// Bits `[63:32]`: the invalid flags (on an invalid-flags error).
    #[bits(32)]
    pub invalid_flags: u32,
}

/// The SWERR register contents, decoded. Word 2 is the address (the completion record
/// address for CRA errors), word 3 is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SwErr {
    /// Word 0.
    pub word0: SwErrWord0,
    /// Word 1.
    pub word1: SwErrWord1,
    /// Word 2: the address concerned.
    pub address: u64,
}

impl SwErr {
    /// Whether an error is recorded.
    pub fn is_valid(&self) -> bool {
        self.word0.valid()
    }

    /// The error code.
    pub fn error(&self) -> u8 {
        self.word0.error()
    }

    /// The PASID, if the error concerns a descriptor that had one.
    pub fn pasid(&self) -> Option<Pasid> {
        self.word0.desc_valid().then(|| Pasid(self.word0.pasid()))
    }

    /// The work queue, if known.
    pub fn wq(&self) -> Option<usize> {
        self.word0
            .wq_idx_valid()
            .then(|| usize::from(self.word0.wq_idx()))
    }

    /// The four register words.
    pub fn to_regs(&self) -> [u64; 4] {
        [
            self.word0.into_bits(),
            self.word1.into_bits(),
            self.address,
            0,
        ]
    }

    /// Decodes the four register words.
    pub fn from_regs(regs: [u64; 4]) -> Self {
        Self {
            word0: SwErrWord0::from_bits(regs[0]),
            word1: SwErrWord1::from_bits(regs[1]),
            address: regs[2],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_layout() {
        let w0 = SwErrWord0::new()
            .with_valid(true)
            .with_desc_valid(true)
            .with_wq_idx_valid(true)
            .with_error(0x1a)
            .with_wq_idx(3)
            .with_operation(0x03)
            .with_pasid(0x12345);
        assert_eq!(w0.into_bits(), 0x0123_4503_0003_1a0d);
        let e = SwErr::from_regs([w0.into_bits(), 0, 0xdead_0000, 0]);
        assert_eq!(e.pasid(), Some(Pasid(0x12345)));
        assert_eq!(e.wq(), Some(3));
        assert_eq!(e.error(), 0x1a);
        assert_eq!(e.to_regs()[2], 0xdead_0000);
    }
}
