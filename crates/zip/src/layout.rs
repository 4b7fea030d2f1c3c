//! The layout of a queue's DUS (device user share) region, as Linux's `hisi_qm` and
//! UADK's `hisi_qm_udrv` agree on it: the SQ at offset 0, the CQ right after it, then at
//! least one page whose last two 32-bit words are the RX and TX status.

use crate::cqe::CQE_SIZE;
use crate::sqe::SQE_SIZE;

/// Status word value: the queue is usable.
pub const QUEUE_OK: u32 = 0;
/// Status word value: the queue is stopped or in error (UADK checks for 1).
pub const QUEUE_DISABLED: u32 = 1;

/// Where things are in a DUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DusLayout {
    /// SQ entries.
    pub sq_depth: u16,
    /// CQ entries.
    pub cq_depth: u16,
    /// Page size the region is made of.
    pub page_size: u64,
}

impl DusLayout {
    /// Bytes of one SQE.
    pub const SQE_SIZE: u64 = SQE_SIZE as u64;

    /// Offset of the SQ (0).
    pub fn sq_offset(&self) -> u64 {
        0
    }

    /// Offset of the CQ: `sqe_size × sq_depth`.
    pub fn cq_offset(&self) -> u64 {
        Self::SQE_SIZE * u64::from(self.sq_depth)
    }

    /// Size of the region: SQ + CQ + one page, rounded up to pages (Linux
    /// `qm_alloc_uacce`).
    pub fn size(&self) -> u64 {
        let raw = self.cq_offset() + CQE_SIZE as u64 * u64::from(self.cq_depth) + self.page_size;
        raw.div_ceil(self.page_size) * self.page_size
    }

    /// Pages in the region.
    pub fn pages(&self) -> usize {
        (self.size() / self.page_size) as usize
    }

    /// Offset of the TX (send-side) status word: the last 32-bit word.
    pub fn tx_status_offset(&self) -> u64 {
        self.size() - 4
    }

    /// Offset of the RX (receive-side) status word: the word before the TX one.
    pub fn rx_status_offset(&self) -> u64 {
        self.size() - 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let l = DusLayout {
            sq_depth: 1024,
            cq_depth: 1024,
            page_size: 4096,
        };
        // 128 KiB of SQ, 16 KiB of CQ, one page.
        assert_eq!(l.cq_offset(), 128 * 1024);
        assert_eq!(l.size(), 148 * 1024);
        assert_eq!(l.tx_status_offset(), 148 * 1024 - 4);
        let small = DusLayout {
            sq_depth: 4,
            cq_depth: 4,
            page_size: 4096,
        };
        assert_eq!(small.size(), 8192);
        assert_eq!(small.pages(), 2);
    }
}
