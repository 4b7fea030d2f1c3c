//! Circular queues: base registers, producer/consumer indexes and the [`QueueIndex`]
//! arithmetic (§3.5 Command and Event queues, §6.3.26 to §6.3.29).
//!
//! Each queue is a power-of-two array of entries in memory. Its PROD and CONS registers hold
//! an index of `log2size` bits followed by a wrap bit at bit `log2size`: the queue is empty when
//! both index and wrap are equal, and full when the indexes are equal but the wraps differ.
//! The Command queue is produced by software and consumed by the SMMU; the Event and PRI
//! queues the other way round.

use bitfield_struct::bitfield;
use sva_addr::Pa;

use crate::encoding::{spec_enum, truncate};
use crate::error::QueueError;

/// Size of a Command queue entry in bytes (two 64-bit words).
pub const CMDQ_ENTRY_BYTES: u64 = 16;
/// Size of an Event queue record in bytes (four 64-bit words).
pub const EVENTQ_ENTRY_BYTES: u64 = 32;
/// Size of a PRI queue entry in bytes (two 64-bit words).
pub const PRIQ_ENTRY_BYTES: u64 = 16;
/// Largest queue: 2^19 entries (`SMMU_IDR1.{CMDQS,EVENTQS,PRIQS}` <= 19).
pub const MAX_LOG2SIZE: u8 = 19;

/// SMMU_CMDQ_BASE (§6.3.26), SMMU_EVENTQ_BASE (§6.3.29) and SMMU_PRIQ_BASE (§6.3.33), 64-bit.
///
/// The effective base is aligned to the larger of the queue size in bytes and 32 bytes.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct QueueBase {
    /// [4:0] LOG2SIZE: log2 of the number of entries (capped at SMMU_IDR1.*QS).
    #[bits(5)]
    pub log2size: u8,
    /// [51:5] ADDR: bits `[51:5]` of the queue's physical base address.
    #[bits(47)]
    pub addr: u64,
    /// [61:52] Reserved, RES0 (later revisions extend ADDR to bit 55).
    #[bits(10)]
    __: u16,
    /// [62] RA (Command queue: read-allocate) / WA (Event and PRI queues: write-allocate).
    pub rwa: bool,
    /// [63] Reserved, RES0.
    #[bits(1)]
    __: u8,
}

impl QueueBase {
    /// The base address, bits `[4:0]` zero.
    #[must_use]
    pub const fn addr_pa(self) -> Pa {
        Pa(self.addr() << 5)
    }

    /// Sets the base address; bits `[4:0]` and above bit 51 are dropped.
    #[must_use]
    pub const fn with_addr_pa(self, pa: Pa) -> Self {
        self.with_addr(truncate(pa.0 >> 5, 47))
    }

    /// Number of entries the queue holds.
    #[must_use]
    pub const fn entries(self) -> u32 {
        1 << self.log2size()
    }
}

/// SMMU_CMDQ_PROD (§6.3.27): written by software after adding commands.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct CmdqProd {
    /// [19:0] WR: write index (bits [log2size-1:0]) and wrap flag (bit log2size).
    #[bits(20)]
    pub wr: u32,
    /// [31:20] Reserved, RES0.
    #[bits(12)]
    __: u16,
}

spec_enum! {
    /// SMMU_CMDQ_CONS.ERR: the reason a command stopped the queue (§7.1).
    pub enum Cerror: 7 {
        /// `0x00` CERROR_NONE: no error (also used for an unrecognised IMPDEF error).
        None = 0,
        /// `0x01` CERROR_ILL: reserved opcode, ILLEGAL parameters or a RES0 field set.
        Ill = 1,
        /// `0x02` CERROR_ABT: external abort reading the command.
        Abt = 2,
        /// `0x03` CERROR_ATC_INV_SYNC: a CMD_SYNC found an ATC invalidation that timed out or
        /// failed.
        AtcInvSync = 3,
    }
}

/// SMMU_CMDQ_CONS (§6.3.28): updated by the SMMU as it consumes commands.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct CmdqCons {
    /// [19:0] RD: read index and wrap flag; left on the faulting command on error.
    #[bits(20)]
    pub rd: u32,
    /// [23:20] Reserved, RES0.
    #[bits(4)]
    __: u8,
    /// [30:24] ERR: error reason, valid while SMMU_GERROR.CMDQ_ERR is active.
    #[bits(7)]
    pub err: Cerror,
    /// [31] Reserved, RES0.
    #[bits(1)]
    __: u8,
}

/// SMMU_EVENTQ_PROD (page 1), written by the SMMU; SMMU_PRIQ_PROD has the same layout.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct EventqProd {
    /// [19:0] WR: write index and wrap flag.
    #[bits(20)]
    pub wr: u32,
    /// [30:20] Reserved, RES0.
    #[bits(11)]
    __: u16,
    /// [31] OVFLG: toggled by the SMMU when the queue overflowed (records were lost, or for
    /// the PRI queue, requests were auto-answered).
    pub ovflg: bool,
}

/// SMMU_PRIQ_PROD (page 1).
pub type PriqProd = EventqProd;

/// SMMU_EVENTQ_CONS (page 1), written by software; SMMU_PRIQ_CONS has the same layout.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct EventqCons {
    /// [19:0] RD: read index and wrap flag.
    #[bits(20)]
    pub rd: u32,
    /// [30:20] Reserved, RES0.
    #[bits(11)]
    __: u16,
    /// [31] OVACKFLG: software sets it equal to OVFLG to acknowledge an overflow.
    pub ovackflg: bool,
}

/// SMMU_PRIQ_CONS (page 1).
pub type PriqCons = EventqCons;

/// A queue position: an index of `log2size` bits and the wrap bit above it.
///
/// Arithmetic wraps modulo `2 * entries`, exactly as the PROD/CONS registers do; combining
/// indexes of different sizes uses the size of `self`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueIndex {
    log2size: u8,
    raw: u32,
}

impl QueueIndex {
    /// An index for a queue of `2^log2size` entries, taking the low `log2size + 1` bits of
    /// `raw` (index and wrap; the register fields above are ignored).
    pub const fn new(log2size: u8, raw: u32) -> Result<Self, QueueError> {
        if log2size > MAX_LOG2SIZE {
            return Err(QueueError::Log2SizeTooLarge(log2size));
        }
        Ok(Self {
            log2size,
            raw: raw & Self::mask_for(log2size),
        })
    }

    /// Index 0 with a clear wrap bit.
    pub const fn zero(log2size: u8) -> Result<Self, QueueError> {
        Self::new(log2size, 0)
    }

    const fn mask_for(log2size: u8) -> u32 {
        (2u32 << log2size) - 1
    }

    const fn mask(self) -> u32 {
        Self::mask_for(self.log2size)
    }

    /// log2 of the number of entries.
    #[must_use]
    pub const fn log2size(self) -> u8 {
        self.log2size
    }

    /// Number of entries in the queue.
    #[must_use]
    pub const fn capacity(self) -> u32 {
        1 << self.log2size
    }

    /// Index and wrap bit, as found in the WR/RD register fields.
    #[must_use]
    pub const fn raw(self) -> u32 {
        self.raw
    }

    /// The entry index, `0..capacity`.
    #[must_use]
    pub const fn index(self) -> u32 {
        self.raw & (self.capacity() - 1)
    }

    /// The wrap bit.
    #[must_use]
    pub const fn wrap(self) -> bool {
        self.raw & self.capacity() != 0
    }

    /// Byte offset of the entry from the queue base, for entries of `entry_bytes`.
    #[must_use]
    pub const fn byte_offset(self, entry_bytes: u64) -> u64 {
        self.index() as u64 * entry_bytes
    }

    /// The next position (index + 1, toggling the wrap bit when the index wraps).
    #[must_use]
    pub const fn next(self) -> Self {
        self.advance(1)
    }

    /// The position `n` entries further on.
    #[must_use]
    pub const fn advance(self, n: u32) -> Self {
        Self {
            log2size: self.log2size,
            raw: self.raw.wrapping_add(n) & self.mask(),
        }
    }

    /// Number of entries from `earlier` up to `self` (for PROD and CONS: entries in the queue).
    #[must_use]
    pub const fn distance(self, earlier: Self) -> u32 {
        self.raw.wrapping_sub(earlier.raw) & self.mask()
    }

    /// Whether a queue with producer `prod` and consumer `cons` is empty.
    #[must_use]
    pub const fn is_empty(prod: Self, cons: Self) -> bool {
        (prod.raw ^ cons.raw) & prod.mask() == 0
    }

    /// Whether a queue with producer `prod` and consumer `cons` is full: same index,
    /// different wrap bits.
    #[must_use]
    pub const fn is_full(prod: Self, cons: Self) -> bool {
        (prod.raw ^ cons.raw) & prod.mask() == prod.capacity()
    }

    /// Free entries in a queue with producer `prod` and consumer `cons`.
    #[must_use]
    pub const fn free(prod: Self, cons: Self) -> u32 {
        prod.capacity().saturating_sub(prod.distance(cons))
    }
}

/// Implements `index`/`with_index` of queue PROD and CONS registers, over their WR or RD
/// field (§6.3.26 to §6.3.29).
macro_rules! queue_pointer {
    ($($reg:ident: $get:ident, $set:ident, $what:literal;)+) => {
        $(
            impl $reg {
                #[doc = concat!("The ", $what, " position in a queue of `2^log2size` entries.")]
                pub const fn index(self, log2size: u8) -> Result<QueueIndex, QueueError> {
                    QueueIndex::new(log2size, self.$get())
                }

                #[doc = concat!("Sets the ", $what, " position.")]
                #[must_use]
                pub const fn with_index(self, index: QueueIndex) -> Self {
                    self.$set(index.raw())
                }
            }
        )+
    };
}

queue_pointer! {
    CmdqProd: wr, with_wr, "write";
    CmdqCons: rd, with_rd, "read";
    EventqProd: wr, with_wr, "write";
    EventqCons: rd, with_rd, "read";
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn idx(log2size: u8, raw: u32) -> QueueIndex {
        QueueIndex::new(log2size, raw).expect("valid log2size")
    }

    #[test]
    fn base_register_layout() {
        let base = QueueBase::new()
            .with_addr_pa(Pa(0x8_1234_5000))
            .with_log2size(8)
            .with_rwa(true);
        assert_eq!(base.into_bits(), (1 << 62) | 0x8_1234_5000 | 8);
        assert_eq!(base.addr_pa(), Pa(0x8_1234_5000));
        assert_eq!(base.entries(), 256);
    }

    #[test]
    fn cons_error_and_overflow_flags() {
        let cons = CmdqCons::new().with_rd(0x105).with_err(Cerror::Ill);
        assert_eq!(cons.into_bits(), 0x0100_0105);
        assert_eq!(CmdqCons::from_bits(3 << 24).err(), Cerror::AtcInvSync);
        assert_eq!(
            CmdqCons::from_bits(0x7F << 24).err(),
            Cerror::Reserved(0x7F)
        );
        assert_eq!(
            EventqProd::new().with_ovflg(true).with_wr(3).into_bits(),
            0x8000_0003
        );
        assert_eq!(PriqCons::new().with_ovackflg(true).into_bits(), 0x8000_0000);
    }

    #[test]
    fn wrap_bit_sits_above_the_index() {
        let i = idx(3, 7);
        assert_eq!((i.index(), i.wrap()), (7, false));
        let n = i.next();
        assert_eq!((n.index(), n.wrap(), n.raw()), (0, true, 8));
        assert_eq!(n.advance(8).raw(), 0);
        assert_eq!(
            idx(3, 0x1F).raw(),
            0xF,
            "bits above the wrap bit are dropped"
        );
        assert_eq!(idx(0, 1).index(), 0);
        assert!(idx(0, 1).wrap());
        assert_eq!(
            QueueIndex::new(20, 0),
            Err(QueueError::Log2SizeTooLarge(20))
        );
        assert_eq!(idx(4, 5).byte_offset(CMDQ_ENTRY_BYTES), 80);
    }

    #[test]
    fn full_and_empty() {
        let cons = idx(2, 0b001);
        assert!(QueueIndex::is_empty(cons, cons));
        assert!(QueueIndex::is_full(idx(2, 0b101), cons));
        assert!(!QueueIndex::is_full(idx(2, 0b100), cons));
        assert_eq!(QueueIndex::free(idx(2, 0b011), cons), 2);
        let prod = CmdqProd::new().with_index(idx(2, 0b101));
        assert_eq!(prod.index(2), Ok(idx(2, 0b101)));
    }

    proptest! {
        #[test]
        fn empty_iff_equal(log2size in 0u8..=MAX_LOG2SIZE, a: u32, b: u32) {
            let (p, c) = (idx(log2size, a), idx(log2size, b));
            prop_assert_eq!(QueueIndex::is_empty(p, c), p == c);
        }

        #[test]
        fn full_iff_same_index_other_wrap(log2size in 0u8..=MAX_LOG2SIZE, a: u32, b: u32) {
            let (p, c) = (idx(log2size, a), idx(log2size, b));
            prop_assert_eq!(
                QueueIndex::is_full(p, c),
                p.index() == c.index() && p.wrap() != c.wrap()
            );
        }

        #[test]
        fn advance_then_distance(log2size in 0u8..=MAX_LOG2SIZE, start: u32, n: u32) {
            let c = idx(log2size, start);
            let n = n % (2 * c.capacity());
            let p = c.advance(n);
            prop_assert_eq!(p.distance(c), n);
            if n <= c.capacity() {
                prop_assert_eq!(QueueIndex::free(p, c), c.capacity() - n);
                prop_assert_eq!(QueueIndex::is_full(p, c), n == c.capacity());
                prop_assert_eq!(QueueIndex::is_empty(p, c), n == 0);
            }
        }

        #[test]
        fn next_is_advance_one(log2size in 0u8..=MAX_LOG2SIZE, start: u32) {
            let i = idx(log2size, start);
            prop_assert_eq!(i.next(), i.advance(1));
            prop_assert_eq!(i.advance(2 * i.capacity()), i);
        }
    }
}
