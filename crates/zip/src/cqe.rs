//! The QM completion queue entry (CQE): 16 bytes, `struct qm_cqe` of Linux
//! `drivers/crypto/hisilicon/qm.c`. The engine writes one per finished SQE; software
//! knows a slot holds a new completion when its phase bit equals the phase it expects,
//! which flips each time the ring wraps.

use bitfield_struct::bitfield;

/// Bytes in one CQE.
pub const CQE_SIZE: usize = 16;

/// Halfword 7 of the CQE (bytes 14–15).
#[bitfield(u16)]
#[derive(PartialEq, Eq, Hash)]
pub struct CqeW7 {
    /// \[0\] phase: the value the ring's current pass writes (starts at 1, flips on wrap).
    pub phase: bool,
    /// \[15:1\] reserved.
    #[bits(15)]
    __: u16,
}

/// One CQE.
///
/// | bytes | field |
/// |---|---|
/// | 0–3 | reserved |
/// | 4–5 | `cmd_id`: model: the low 16 bits of the SQE's tag |
/// | 6–7 | reserved |
/// | 8–9 | `sq_head`: the SQ index of the SQE that completed |
/// | 10–11 | `sq_num`: the queue pair |
/// | 12–13 | reserved |
/// | 14–15 | `w7` ([`CqeW7`]): phase in bit 0 |
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Cqe {
    /// Bytes 0–3, reserved.
    pub rsvd0: u32,
    /// Bytes 4–5: the low 16 bits of the completed SQE's tag (model).
    pub cmd_id: u16,
    /// Bytes 6–7, reserved.
    pub rsvd1: u16,
    /// Bytes 8–9: SQ index of the completed SQE; software copies that slot out.
    pub sq_head: u16,
    /// Bytes 10–11: queue pair number.
    pub sq_num: u16,
    /// Bytes 12–13, reserved.
    pub rsvd2: u16,
    /// Bytes 14–15: phase.
    pub w7: CqeW7,
}

impl Cqe {
    /// A completion of SQ slot `sq_head` on queue `sq_num` with `phase`.
    pub fn new(cmd_id: u16, sq_head: u16, sq_num: u16, phase: bool) -> Self {
        Self {
            cmd_id,
            sq_head,
            sq_num,
            w7: CqeW7::new().with_phase(phase),
            ..Self::default()
        }
    }

    /// The phase bit.
    pub fn phase(&self) -> bool {
        self.w7.phase()
    }

    /// Encodes into 16 bytes.
    pub fn encode(&self) -> [u8; CQE_SIZE] {
        let mut b = [0u8; CQE_SIZE];
        b[0..4].copy_from_slice(&self.rsvd0.to_le_bytes());
        b[4..6].copy_from_slice(&self.cmd_id.to_le_bytes());
        b[6..8].copy_from_slice(&self.rsvd1.to_le_bytes());
        b[8..10].copy_from_slice(&self.sq_head.to_le_bytes());
        b[10..12].copy_from_slice(&self.sq_num.to_le_bytes());
        b[12..14].copy_from_slice(&self.rsvd2.to_le_bytes());
        b[14..16].copy_from_slice(&self.w7.into_bits().to_le_bytes());
        b
    }

    /// Decodes 16 bytes.
    pub fn decode(b: &[u8; CQE_SIZE]) -> Self {
        let h = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            rsvd0: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            cmd_id: h(4),
            rsvd1: h(6),
            sq_head: h(8),
            sq_num: h(10),
            rsvd2: h(12),
            w7: CqeW7::from_bits(h(14)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_pinned_to_bytes() {
        let c = Cqe::new(0xbeef, 0x0102, 0x0304, true);
        assert_eq!(
            c.encode(),
            [
                0, 0, 0, 0, 0xef, 0xbe, 0, 0, 0x02, 0x01, 0x04, 0x03, 0, 0, 0x01, 0x00
            ]
        );
        assert_eq!(Cqe::decode(&c.encode()), c);
        // UADK's CQE_PHASE: bit 16 of the fourth dword.
        let b = c.encode();
        let dw3 = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        assert_eq!((dw3 >> 16) & 1, 1);
        assert!(!Cqe::new(0, 0, 0, false).phase());
    }
}
