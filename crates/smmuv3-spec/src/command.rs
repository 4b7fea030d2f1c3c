//! Command queue entries (§4 Commands).
//!
//! Every command is 16 bytes: two little-endian 64-bit words, opcode in bits `[7:0]` of word 0.
//! [`Command`] is the typed form; [`Command::encode`] produces the two words the driver writes
//! into the queue and [`Command::decode`] is what the model runs on each entry it consumes.
//! Decoding is strict: unknown opcodes, set RES0 bits (§4.1.5) and ILLEGAL field values are
//! errors, which the model reports as `CERROR_ILL`.
//!
//! The word layouts differ by command family, hence one bitfield type per family and word
//! ([`CmdStreamWord0`], [`CmdTlbiWord0`], [`CmdTlbiWord1`], ...). This crate models the
//! Non-secure Command queue: SSec must be 0, and the Secure-only and DPT opcodes are unknown.

use bitfield_struct::bitfield;
use sva_addr::{Asid, Pa, Pasid, StreamId, Va, Vmid};

use crate::encoding::{Shareability, bits, spec_enum, truncate};
use crate::error::CommandError;
use crate::pri::PriResponse;

/// A command opcode (§4.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Opcode {
    /// `0x01` CMD_PREFETCH_CONFIG.
    PrefetchConfig = 0x01,
    /// `0x02` CMD_PREFETCH_ADDR.
    PrefetchAddr = 0x02,
    /// `0x03` CMD_CFGI_STE.
    CfgiSte = 0x03,
    /// `0x04` CMD_CFGI_STE_RANGE; CMD_CFGI_ALL is this opcode with Range == 31.
    CfgiSteRange = 0x04,
    /// `0x05` CMD_CFGI_CD.
    CfgiCd = 0x05,
    /// `0x06` CMD_CFGI_CD_ALL.
    CfgiCdAll = 0x06,
    /// `0x07` CMD_CFGI_VMS_PIDM.
    CfgiVmsPidm = 0x07,
    /// `0x10` CMD_TLBI_NH_ALL.
    TlbiNhAll = 0x10,
    /// `0x11` CMD_TLBI_NH_ASID.
    TlbiNhAsid = 0x11,
    /// `0x12` CMD_TLBI_NH_VA.
    TlbiNhVa = 0x12,
    /// `0x13` CMD_TLBI_NH_VAA.
    TlbiNhVaa = 0x13,
    /// `0x18` CMD_TLBI_EL3_ALL.
    TlbiEl3All = 0x18,
    /// `0x1A` CMD_TLBI_EL3_VA.
    TlbiEl3Va = 0x1A,
    /// `0x20` CMD_TLBI_EL2_ALL.
    TlbiEl2All = 0x20,
    /// `0x21` CMD_TLBI_EL2_ASID.
    TlbiEl2Asid = 0x21,
    /// `0x22` CMD_TLBI_EL2_VA.
    TlbiEl2Va = 0x22,
    /// `0x23` CMD_TLBI_EL2_VAA.
    TlbiEl2Vaa = 0x23,
    /// `0x28` CMD_TLBI_S12_VMALL.
    TlbiS12Vmall = 0x28,
    /// `0x2A` CMD_TLBI_S2_IPA.
    TlbiS2Ipa = 0x2A,
    /// `0x30` CMD_TLBI_NSNH_ALL.
    TlbiNsnhAll = 0x30,
    /// `0x40` CMD_ATC_INV.
    AtcInv = 0x40,
    /// `0x41` CMD_PRI_RESP.
    PriResp = 0x41,
    /// `0x44` CMD_RESUME.
    Resume = 0x44,
    /// `0x45` CMD_STALL_TERM.
    StallTerm = 0x45,
    /// `0x46` CMD_SYNC.
    Sync = 0x46,
}

impl Opcode {
    /// Every opcode this crate decodes, in numeric order.
    pub const ALL: [Opcode; 25] = [
        Self::PrefetchConfig,
        Self::PrefetchAddr,
        Self::CfgiSte,
        Self::CfgiSteRange,
        Self::CfgiCd,
        Self::CfgiCdAll,
        Self::CfgiVmsPidm,
        Self::TlbiNhAll,
        Self::TlbiNhAsid,
        Self::TlbiNhVa,
        Self::TlbiNhVaa,
        Self::TlbiEl3All,
        Self::TlbiEl3Va,
        Self::TlbiEl2All,
        Self::TlbiEl2Asid,
        Self::TlbiEl2Va,
        Self::TlbiEl2Vaa,
        Self::TlbiS12Vmall,
        Self::TlbiS2Ipa,
        Self::TlbiNsnhAll,
        Self::AtcInv,
        Self::PriResp,
        Self::Resume,
        Self::StallTerm,
        Self::Sync,
    ];

    /// The opcode with this number, if this crate knows it.
    #[must_use]
    pub const fn from_u8(raw: u8) -> Option<Self> {
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i] as u8 == raw {
                return Some(Self::ALL[i]);
            }
            i += 1;
        }
        None
    }

    /// The architectural name, e.g. `CMD_TLBI_NH_VA`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::PrefetchConfig => "CMD_PREFETCH_CONFIG",
            Self::PrefetchAddr => "CMD_PREFETCH_ADDR",
            Self::CfgiSte => "CMD_CFGI_STE",
            Self::CfgiSteRange => "CMD_CFGI_STE_RANGE",
            Self::CfgiCd => "CMD_CFGI_CD",
            Self::CfgiCdAll => "CMD_CFGI_CD_ALL",
            Self::CfgiVmsPidm => "CMD_CFGI_VMS_PIDM",
            Self::TlbiNhAll => "CMD_TLBI_NH_ALL",
            Self::TlbiNhAsid => "CMD_TLBI_NH_ASID",
            Self::TlbiNhVa => "CMD_TLBI_NH_VA",
            Self::TlbiNhVaa => "CMD_TLBI_NH_VAA",
            Self::TlbiEl3All => "CMD_TLBI_EL3_ALL",
            Self::TlbiEl3Va => "CMD_TLBI_EL3_VA",
            Self::TlbiEl2All => "CMD_TLBI_EL2_ALL",
            Self::TlbiEl2Asid => "CMD_TLBI_EL2_ASID",
            Self::TlbiEl2Va => "CMD_TLBI_EL2_VA",
            Self::TlbiEl2Vaa => "CMD_TLBI_EL2_VAA",
            Self::TlbiS12Vmall => "CMD_TLBI_S12_VMALL",
            Self::TlbiS2Ipa => "CMD_TLBI_S2_IPA",
            Self::TlbiNsnhAll => "CMD_TLBI_NSNH_ALL",
            Self::AtcInv => "CMD_ATC_INV",
            Self::PriResp => "CMD_PRI_RESP",
            Self::Resume => "CMD_RESUME",
            Self::StallTerm => "CMD_STALL_TERM",
            Self::Sync => "CMD_SYNC",
        }
    }

    /// Whether the command has the SSec field (bit 10), which must be 0 on the Non-secure
    /// Command queue.
    #[must_use]
    pub const fn has_ssec(self) -> bool {
        matches!(
            self,
            Self::PrefetchConfig
                | Self::PrefetchAddr
                | Self::CfgiSte
                | Self::CfgiSteRange
                | Self::CfgiCd
                | Self::CfgiCdAll
                | Self::CfgiVmsPidm
                | Self::Resume
                | Self::StallTerm
        )
    }

    /// Bits each word may have set; everything else is RES0. SSec is excluded.
    const fn defined_bits(self) -> [u64; 2] {
        const OP: u64 = bits(7, 0);
        const SSV: u64 = 1 << 11;
        const SSID: u64 = bits(31, 12);
        const SID: u64 = bits(63, 32);
        const NUM_SCALE: u64 = bits(16, 12) | bits(25, 20);
        const VMID: u64 = bits(47, 32);
        const ASID: u64 = bits(63, 48);
        const TLBI_W1: u64 = 1 | bits(11, 8) | bits(63, 12);
        match self {
            Self::PrefetchConfig => [OP | SSV | SSID | SID, 0],
            Self::PrefetchAddr => [OP | SSV | SSID | SID, bits(9, 0) | bits(63, 12)],
            Self::CfgiSte => [OP | SID, 1],
            Self::CfgiSteRange => [OP | SID, bits(4, 0)],
            Self::CfgiCd => [OP | SSID | SID, 1],
            Self::CfgiCdAll | Self::StallTerm => [OP | SID, 0],
            Self::CfgiVmsPidm | Self::TlbiNhAll | Self::TlbiS12Vmall => [OP | VMID, 0],
            Self::TlbiNhAsid => [OP | VMID | ASID, 0],
            Self::TlbiNhVa => [OP | NUM_SCALE | VMID | ASID, TLBI_W1],
            Self::TlbiNhVaa => [OP | NUM_SCALE | VMID, TLBI_W1],
            Self::TlbiEl3All | Self::TlbiEl2All | Self::TlbiNsnhAll => [OP, 0],
            Self::TlbiEl3Va | Self::TlbiEl2Vaa => [OP | NUM_SCALE, TLBI_W1],
            Self::TlbiEl2Asid => [OP | ASID, 0],
            Self::TlbiEl2Va => [OP | NUM_SCALE | ASID, TLBI_W1],
            Self::TlbiS2Ipa => [OP | NUM_SCALE | VMID, 1 | bits(11, 8) | bits(51, 12)],
            Self::AtcInv => [OP | (1 << 9) | SSV | SSID | SID, bits(5, 0) | bits(63, 12)],
            Self::PriResp => [OP | SSV | SSID | SID, bits(8, 0) | bits(13, 12)],
            Self::Resume => [OP | bits(13, 12) | SID, bits(15, 0)],
            Self::Sync => [OP | bits(13, 12) | bits(27, 22) | bits(63, 32), bits(51, 2)],
        }
    }
}

/// §4.2, §4.3, §4.5, §4.7 word 0 of commands that name a stream: CMD_PREFETCH_*, CMD_CFGI_STE*,
/// CMD_CFGI_CD*, CMD_ATC_INV, CMD_PRI_RESP and CMD_STALL_TERM.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CmdStreamWord0 {
    /// [7:0] Opcode.
    #[bits(8)]
    pub opcode: u8,
    /// [8] Reserved, RES0.
    #[bits(1)]
    __: u8,
    /// [9] G (CMD_ATC_INV only): Global Invalidate flag of the ATS Invalidation Request,
    /// IGNORED when SSV == 0.
    pub global: bool,
    /// [10] SSec: the StreamID is Secure (must be 0 on the Non-secure queue).
    pub ssec: bool,
    /// [11] SSV: a SubstreamID is supplied.
    pub ssv: bool,
    /// [31:12] SubstreamID.
    #[bits(20)]
    pub substream_id: u32,
    /// [63:32] StreamID.
    #[bits(32, from = StreamId, into = StreamId::raw)]
    pub stream_id: StreamId,
}

/// Word 1 of CMD_CFGI_STE and CMD_CFGI_CD (§4.3.1, §4.3.3).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CmdLeafWord1 {
    /// [0] Leaf: only the STE or CD itself, not intermediate L1 descriptors, needs invalidating.
    pub leaf: bool,
    /// [63:1] Reserved, RES0.
    #[bits(63)]
    __: u64,
}

/// Word 1 of CMD_CFGI_STE_RANGE (§4.3.2).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CmdRangeWord1 {
    /// [4:0] Range: invalidate the aligned block of `2^(Range+1)` StreamIDs (31: all).
    #[bits(5)]
    pub range: u8,
    /// [63:5] Reserved, RES0.
    #[bits(59)]
    __: u64,
}

/// Word 1 of CMD_PREFETCH_ADDR (§4.2.2).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CmdPrefetchWord1 {
    /// [4:0] Size: prefetch `2^Size` translations.
    #[bits(5)]
    pub size: u8,
    /// [9:5] Stride: translations are `2^(12 + Stride)` bytes apart (RES0 in SMMUv3.0).
    #[bits(5)]
    pub stride: u8,
    /// [11:10] Reserved, RES0 (NS on the Secure queue).
    #[bits(2)]
    __: u8,
    /// [63:12] Address[63:12].
    #[bits(52)]
    pub address: u64,
}

spec_enum! {
    /// TG of address-based TLB invalidations (§4.4.1.1): the granule of the entries targeted.
    /// Not the TG0 encoding.
    pub exhaustive enum TlbiGranule: 2 {
        /// `0b00` Any granule: no range invalidation, no TTL hint.
        Any = 0,
        /// `0b01` 4 KiB.
        Size4K = 1,
        /// `0b10` 16 KiB.
        Size16K = 2,
        /// `0b11` 64 KiB.
        Size64K = 3,
    }
}

/// §4.4 word 0 of TLB invalidation commands.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CmdTlbiWord0 {
    /// [7:0] Opcode.
    #[bits(8)]
    pub opcode: u8,
    /// [11:8] Reserved, RES0.
    #[bits(4)]
    __: u8,
    /// [16:12] NUM: range is `(NUM + 1) * 2^SCALE` granules (RES0 when TG == 0).
    #[bits(5)]
    pub num: u8,
    /// [19:17] Reserved, RES0.
    #[bits(3)]
    __: u8,
    /// [25:20] SCALE: range scale (bit 25 only with SMMU_IDR5.DS; RES0 when TG == 0).
    #[bits(6)]
    pub scale: u8,
    /// [31:26] Reserved, RES0.
    #[bits(6)]
    __: u8,
    /// [47:32] VMID.
    #[bits(16, from = Vmid, into = Vmid::raw)]
    pub vmid: Vmid,
    /// [63:48] ASID.
    #[bits(16, from = Asid, into = Asid::raw)]
    pub asid: Asid,
}

/// §4.4 word 1 of address-based TLB invalidation commands.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CmdTlbiWord1 {
    /// [0] Leaf: only last-level (leaf) entries need invalidating.
    pub leaf: bool,
    /// [7:1] Reserved, RES0 (TTL128 at bit 7 in later revisions).
    #[bits(7)]
    __: u8,
    /// [9:8] TTL: level of the leaf entries (hint, RES0 when TG == 0).
    #[bits(2)]
    pub ttl: u8,
    /// [11:10] TG: granule of the targeted entries.
    #[bits(2)]
    pub tg: TlbiGranule,
    /// [63:12] Address[63:12] (VA; for CMD_TLBI_S2_IPA the IPA, bits `[63:52]` RES0).
    #[bits(52)]
    pub address: u64,
}

/// Word 1 of CMD_ATC_INV (§4.5.1).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CmdAtcInvWord1 {
    /// [5:0] Size: invalidate `4096 * 2^Size` bytes around Address (52: everything).
    #[bits(6)]
    pub size: u8,
    /// [11:6] Reserved, RES0.
    #[bits(6)]
    __: u8,
    /// [63:12] Address[63:12] (untranslated address).
    #[bits(52)]
    pub address: u64,
}

/// Word 1 of CMD_PRI_RESP (§4.5.2).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CmdPriRespWord1 {
    /// [8:0] PRGIndex: the page request group answered.
    #[bits(9)]
    pub prg_index: u16,
    /// [11:9] Reserved, RES0.
    #[bits(3)]
    __: u8,
    /// [13:12] Resp: the response (`0b11` ILLEGAL).
    #[bits(2)]
    pub resp: PriResponse,
    /// [63:14] Reserved, RES0.
    #[bits(50)]
    __: u64,
}

/// Word 0 of CMD_RESUME (§4.7.1).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CmdResumeWord0 {
    /// [7:0] Opcode.
    #[bits(8)]
    pub opcode: u8,
    /// [9:8] Reserved, RES0.
    #[bits(2)]
    __: u8,
    /// [10] SSec: the StreamID is Secure (must be 0 on the Non-secure queue).
    pub ssec: bool,
    /// [11] Reserved, RES0.
    #[bits(1)]
    __: u8,
    /// [12] Ac: 1 retries the stalled transaction, 0 terminates it.
    pub ac: bool,
    /// [13] Ab: when terminating, 1 aborts and 0 completes with RAZ/WI (IGNORED on retry).
    pub ab: bool,
    /// [31:14] Reserved, RES0.
    #[bits(18)]
    __: u32,
    /// [63:32] StreamID.
    #[bits(32, from = StreamId, into = StreamId::raw)]
    pub stream_id: StreamId,
}

/// Word 1 of CMD_RESUME (§4.7.1).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CmdResumeWord1 {
    /// [15:0] STAG: the token of the stall event record.
    pub stag: u16,
    /// [63:16] Reserved, RES0.
    #[bits(48)]
    __: u64,
}

spec_enum! {
    /// CMD_SYNC.CS, ComplSignal (§4.7.3). `0b11` is reserved and raises CERROR_ILL.
    pub enum SyncCs: 2 {
        /// `0b00` SIG_NONE: no completion signal.
        None = 0,
        /// `0b01` SIG_IRQ: interrupt (an MSI if MSIAddress != 0, and the wired output).
        Irq = 1,
        /// `0b10` SIG_SEV: WFE wake-up event (when SMMU_IDR0.SEV == 1).
        Sev = 2,
    }
}

/// Word 0 of CMD_SYNC (§4.7.3).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CmdSyncWord0 {
    /// [7:0] Opcode.
    #[bits(8)]
    pub opcode: u8,
    /// [11:8] Reserved, RES0.
    #[bits(4)]
    __: u8,
    /// [13:12] CS: completion signal.
    #[bits(2)]
    pub cs: SyncCs,
    /// [21:14] Reserved, RES0.
    #[bits(8)]
    __: u8,
    /// [23:22] MSH: shareability of the MSI write.
    #[bits(2)]
    pub msh: Shareability,
    /// [27:24] MSIAttr: memory type of the MSI write (STE.MemAttr encoding).
    #[bits(4)]
    pub msi_attr: u8,
    /// [31:28] Reserved, RES0.
    #[bits(4)]
    __: u8,
    /// [63:32] MSIData: payload of the MSI write.
    pub msi_data: u32,
}

/// Word 1 of CMD_SYNC (§4.7.3).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CmdSyncWord1 {
    /// [1:0] Reserved, RES0.
    #[bits(2)]
    __: u8,
    /// [51:2] MSIAddress[51:2]: MSI target (0: no MSI, wired interrupt only).
    #[bits(50)]
    pub msi_addr: u64,
    /// [63:52] Reserved, RES0.
    #[bits(12)]
    __: u16,
}

/// Range and level hint of an address-based TLB invalidation (§4.4.1.1). With
/// `tg == TlbiGranule::Any` one address is invalidated and the other fields must be 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TlbiRange {
    /// TG: granule of the targeted entries.
    pub tg: TlbiGranule,
    /// TTL: level of the leaf entries (0: any level).
    pub ttl: u8,
    /// NUM: range multiplier (5 bits).
    pub num: u8,
    /// SCALE: range exponent (6 bits).
    pub scale: u8,
}

impl Default for TlbiRange {
    fn default() -> Self {
        Self::NONE
    }
}

impl TlbiRange {
    /// No range: invalidate the entries covering one address.
    pub const NONE: Self = Self {
        tg: TlbiGranule::Any,
        ttl: 0,
        num: 0,
        scale: 0,
    };

    /// Bytes covered by the range, `(NUM + 1) * 2^SCALE` granules, or `None` without a range.
    #[must_use]
    pub const fn bytes(self) -> Option<u128> {
        let shift = match self.tg {
            TlbiGranule::Any => return None,
            TlbiGranule::Size4K => 12,
            TlbiGranule::Size16K => 14,
            TlbiGranule::Size64K => 16,
        };
        Some(((self.num as u128 & 0x1F) + 1) << ((self.scale as u32 & 0x3F) + shift))
    }
}

/// Action of CMD_RESUME on a stalled transaction (§4.7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResumeAction {
    /// Ac == 1: retry the transaction as if it had just arrived.
    Retry,
    /// Ac == 0: terminate it; `abort` reports an abort to the device (Ab == 1), otherwise it
    /// completes with RAZ/WI.
    Terminate {
        /// Ab: abort rather than complete with RAZ/WI.
        abort: bool,
    },
}

/// A command, decoded (§4).
///
/// Addresses are page granular: bits `[11:0]` of `addr`/`ipa` are not encoded. Values wider than
/// their field are truncated by [`Command::encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// §4.2.1 CMD_PREFETCH_CONFIG: prefetch the STE and CD of a stream.
    PrefetchConfig {
        /// StreamID.
        sid: StreamId,
        /// SubstreamID (SSV).
        ssid: Option<Pasid>,
    },
    /// §4.2.2 CMD_PREFETCH_ADDR: prefetch translations for an address span.
    PrefetchAddr {
        /// StreamID.
        sid: StreamId,
        /// SubstreamID (SSV).
        ssid: Option<Pasid>,
        /// Address.
        addr: Va,
        /// Size: `2^size` translations.
        size: u8,
        /// Stride: `2^(12 + stride)` bytes apart.
        stride: u8,
    },
    /// §4.3.1 CMD_CFGI_STE: invalidate one STE (and the CDs cached through it).
    CfgiSte {
        /// StreamID.
        sid: StreamId,
        /// Leaf: do not require invalidation of L1STDs.
        leaf: bool,
    },
    /// §4.3.2 CMD_CFGI_STE_RANGE: invalidate `2^(range+1)` STEs (`range` 0..=30; 31 is
    /// [`Command::CfgiAll`]).
    CfgiSteRange {
        /// StreamID (the low `range + 1` bits are ignored).
        sid: StreamId,
        /// Range.
        range: u8,
    },
    /// §4.3.6 CMD_CFGI_ALL: CMD_CFGI_STE_RANGE with Range == 31; invalidates all
    /// configuration.
    CfgiAll,
    /// §4.3.3 CMD_CFGI_CD: invalidate the CD at index `ssid` of a stream.
    CfgiCd {
        /// StreamID.
        sid: StreamId,
        /// SubstreamID (CD table index; 0 for a single CD).
        ssid: Pasid,
        /// Leaf: do not require invalidation of L1CDs.
        leaf: bool,
    },
    /// §4.3.4 CMD_CFGI_CD_ALL: invalidate all CDs of a stream.
    CfgiCdAll {
        /// StreamID.
        sid: StreamId,
    },
    /// §4.3.5 CMD_CFGI_VMS_PIDM: invalidate cached VMS PARTID maps of a VMID.
    CfgiVmsPidm {
        /// VMID.
        vmid: Vmid,
    },
    /// §4.4.2 CMD_TLBI_NH_ALL: all stage 1 entries of a VMID.
    TlbiNhAll {
        /// VMID.
        vmid: Vmid,
    },
    /// §4.4.2 CMD_TLBI_NH_ASID: stage 1 entries of an ASID in a VMID.
    TlbiNhAsid {
        /// VMID.
        vmid: Vmid,
        /// ASID.
        asid: Asid,
    },
    /// §4.4.2 CMD_TLBI_NH_VA: stage 1 entries of an address (range) in an ASID.
    TlbiNhVa {
        /// VMID.
        vmid: Vmid,
        /// ASID.
        asid: Asid,
        /// Address.
        addr: Va,
        /// Leaf only.
        leaf: bool,
        /// Range and level hint.
        range: TlbiRange,
    },
    /// §4.4.2 CMD_TLBI_NH_VAA: stage 1 entries of an address (range) in all ASIDs.
    TlbiNhVaa {
        /// VMID.
        vmid: Vmid,
        /// Address.
        addr: Va,
        /// Leaf only.
        leaf: bool,
        /// Range and level hint.
        range: TlbiRange,
    },
    /// §4.4.2 CMD_TLBI_EL3_ALL: all EL3 entries.
    TlbiEl3All,
    /// §4.4.2 CMD_TLBI_EL3_VA: EL3 entries of an address (range).
    TlbiEl3Va {
        /// Address.
        addr: Va,
        /// Leaf only.
        leaf: bool,
        /// Range and level hint.
        range: TlbiRange,
    },
    /// §4.4.2 CMD_TLBI_EL2_ALL: all EL2 entries.
    TlbiEl2All,
    /// §4.4.2 CMD_TLBI_EL2_ASID: EL2-E2H entries of an ASID.
    TlbiEl2Asid {
        /// ASID.
        asid: Asid,
    },
    /// §4.4.2 CMD_TLBI_EL2_VA: EL2 entries of an address (range) in an ASID.
    TlbiEl2Va {
        /// ASID.
        asid: Asid,
        /// Address.
        addr: Va,
        /// Leaf only.
        leaf: bool,
        /// Range and level hint.
        range: TlbiRange,
    },
    /// §4.4.2 CMD_TLBI_EL2_VAA: EL2 entries of an address (range) in all ASIDs.
    TlbiEl2Vaa {
        /// Address.
        addr: Va,
        /// Leaf only.
        leaf: bool,
        /// Range and level hint.
        range: TlbiRange,
    },
    /// §4.4.3 CMD_TLBI_S12_VMALL: all stage 1 and stage 2 entries of a VMID.
    TlbiS12Vmall {
        /// VMID.
        vmid: Vmid,
    },
    /// §4.4.3 CMD_TLBI_S2_IPA: stage 2 entries of an IPA (range) in a VMID.
    TlbiS2Ipa {
        /// VMID.
        vmid: Vmid,
        /// IPA (bits `[51:12]` encoded).
        ipa: u64,
        /// Leaf only.
        leaf: bool,
        /// Range and level hint.
        range: TlbiRange,
    },
    /// §4.4.4 CMD_TLBI_NSNH_ALL: all Non-secure non-hypervisor entries.
    TlbiNsnhAll,
    /// §4.5.1 CMD_ATC_INV: send an ATS Invalidation Request to an endpoint.
    AtcInv {
        /// StreamID.
        sid: StreamId,
        /// SubstreamID (SSV): sent as the PASID prefix.
        ssid: Option<Pasid>,
        /// G: Global Invalidate (IGNORED without SSV).
        global: bool,
        /// Address.
        addr: Va,
        /// Size: span is `4096 * 2^size` bytes (52: all).
        size: u8,
    },
    /// §4.5.2 CMD_PRI_RESP: answer a page request group.
    PriResp {
        /// StreamID.
        sid: StreamId,
        /// SubstreamID (SSV): sent as the PASID prefix.
        ssid: Option<Pasid>,
        /// PRGIndex (9 bits).
        prg_index: u16,
        /// Resp.
        resp: PriResponse,
    },
    /// §4.7.1 CMD_RESUME: retry or terminate a stalled transaction.
    Resume {
        /// StreamID.
        sid: StreamId,
        /// STAG from the stall event record.
        stag: u16,
        /// Ac/Ab.
        action: ResumeAction,
    },
    /// §4.7.2 CMD_STALL_TERM: terminate all stalled transactions of a stream.
    StallTerm {
        /// StreamID.
        sid: StreamId,
    },
    /// §4.7.3 CMD_SYNC: complete all prior commands, then signal.
    Sync {
        /// CS: completion signal.
        cs: SyncCs,
        /// MSH: MSI shareability.
        msh: Shareability,
        /// MSIAttr: MSI memory type (4 bits).
        msi_attr: u8,
        /// MSIData.
        msi_data: u32,
        /// MSIAddress (bits `[51:2]` encoded; 0: no MSI).
        msi_addr: Pa,
    },
}

/// SubstreamID field value and SSV flag.
fn ssid_field(ssid: Option<Pasid>) -> (u32, bool) {
    match ssid {
        Some(p) => ((p.0 & 0xF_FFFF), true),
        None => (0, false),
    }
}

fn stream_word0(op: Opcode, sid: StreamId, ssid: Option<Pasid>) -> CmdStreamWord0 {
    let (ssid, ssv) = ssid_field(ssid);
    CmdStreamWord0::new()
        .with_opcode(op as u8)
        .with_stream_id(sid)
        .with_ssv(ssv)
        .with_substream_id(ssid)
}

fn tlbi_words(
    op: Opcode,
    vmid: Vmid,
    asid: Asid,
    address: u64,
    leaf: bool,
    range: TlbiRange,
) -> [u64; 2] {
    // Without a granule, NUM, SCALE and TTL are RES0: encode the canonical form.
    let range = if matches!(range.tg, TlbiGranule::Any) {
        TlbiRange::NONE
    } else {
        range
    };
    let w0 = CmdTlbiWord0::new()
        .with_opcode(op as u8)
        .with_num(range.num & 0x1F)
        .with_scale(range.scale & 0x3F)
        .with_vmid(vmid)
        .with_asid(asid);
    let w1 = CmdTlbiWord1::new()
        .with_leaf(leaf)
        .with_ttl(range.ttl & 0b11)
        .with_tg(range.tg)
        .with_address(address);
    [w0.into_bits(), w1.into_bits()]
}

impl Command {
    /// The command's opcode (CMD_CFGI_ALL reports CMD_CFGI_STE_RANGE).
    #[must_use]
    pub const fn opcode(&self) -> Opcode {
        match self {
            Self::PrefetchConfig { .. } => Opcode::PrefetchConfig,
            Self::PrefetchAddr { .. } => Opcode::PrefetchAddr,
            Self::CfgiSte { .. } => Opcode::CfgiSte,
            Self::CfgiSteRange { .. } | Self::CfgiAll => Opcode::CfgiSteRange,
            Self::CfgiCd { .. } => Opcode::CfgiCd,
            Self::CfgiCdAll { .. } => Opcode::CfgiCdAll,
            Self::CfgiVmsPidm { .. } => Opcode::CfgiVmsPidm,
            Self::TlbiNhAll { .. } => Opcode::TlbiNhAll,
            Self::TlbiNhAsid { .. } => Opcode::TlbiNhAsid,
            Self::TlbiNhVa { .. } => Opcode::TlbiNhVa,
            Self::TlbiNhVaa { .. } => Opcode::TlbiNhVaa,
            Self::TlbiEl3All => Opcode::TlbiEl3All,
            Self::TlbiEl3Va { .. } => Opcode::TlbiEl3Va,
            Self::TlbiEl2All => Opcode::TlbiEl2All,
            Self::TlbiEl2Asid { .. } => Opcode::TlbiEl2Asid,
            Self::TlbiEl2Va { .. } => Opcode::TlbiEl2Va,
            Self::TlbiEl2Vaa { .. } => Opcode::TlbiEl2Vaa,
            Self::TlbiS12Vmall { .. } => Opcode::TlbiS12Vmall,
            Self::TlbiS2Ipa { .. } => Opcode::TlbiS2Ipa,
            Self::TlbiNsnhAll => Opcode::TlbiNsnhAll,
            Self::AtcInv { .. } => Opcode::AtcInv,
            Self::PriResp { .. } => Opcode::PriResp,
            Self::Resume { .. } => Opcode::Resume,
            Self::StallTerm { .. } => Opcode::StallTerm,
            Self::Sync { .. } => Opcode::Sync,
        }
    }

    /// The architectural name (`CMD_CFGI_ALL` for [`Command::CfgiAll`]).
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::CfgiAll => "CMD_CFGI_ALL",
            other => other.opcode().name(),
        }
    }

    /// The two words of the queue entry, word 0 first.
    #[must_use]
    pub fn encode(&self) -> [u64; 2] {
        let op = self.opcode();
        let no_vmid = Vmid(0);
        let no_asid = Asid(0);
        match *self {
            Self::PrefetchConfig { sid, ssid } => [stream_word0(op, sid, ssid).into_bits(), 0],
            Self::PrefetchAddr {
                sid,
                ssid,
                addr,
                size,
                stride,
            } => [
                stream_word0(op, sid, ssid).into_bits(),
                CmdPrefetchWord1::new()
                    .with_size(size & 0x1F)
                    .with_stride(stride & 0x1F)
                    .with_address(addr.0 >> 12)
                    .into_bits(),
            ],
            Self::CfgiSte { sid, leaf } => [
                stream_word0(op, sid, None).into_bits(),
                CmdLeafWord1::new().with_leaf(leaf).into_bits(),
            ],
            Self::CfgiSteRange { sid, range } => [
                stream_word0(op, sid, None).into_bits(),
                CmdRangeWord1::new().with_range(range & 0x1F).into_bits(),
            ],
            Self::CfgiAll => [
                stream_word0(op, StreamId(0), None).into_bits(),
                CmdRangeWord1::new().with_range(31).into_bits(),
            ],
            Self::CfgiCd { sid, ssid, leaf } => [
                stream_word0(op, sid, None)
                    .with_substream_id(ssid.0 & 0xF_FFFF)
                    .into_bits(),
                CmdLeafWord1::new().with_leaf(leaf).into_bits(),
            ],
            Self::CfgiCdAll { sid } | Self::StallTerm { sid } => {
                [stream_word0(op, sid, None).into_bits(), 0]
            }
            Self::CfgiVmsPidm { vmid } | Self::TlbiNhAll { vmid } | Self::TlbiS12Vmall { vmid } => {
                [
                    CmdTlbiWord0::new()
                        .with_opcode(op as u8)
                        .with_vmid(vmid)
                        .into_bits(),
                    0,
                ]
            }
            Self::TlbiNhAsid { vmid, asid } => [
                CmdTlbiWord0::new()
                    .with_opcode(op as u8)
                    .with_vmid(vmid)
                    .with_asid(asid)
                    .into_bits(),
                0,
            ],
            Self::TlbiEl2Asid { asid } => [
                CmdTlbiWord0::new()
                    .with_opcode(op as u8)
                    .with_asid(asid)
                    .into_bits(),
                0,
            ],
            Self::TlbiEl3All | Self::TlbiEl2All | Self::TlbiNsnhAll => [u64::from(op as u8), 0],
            Self::TlbiNhVa {
                vmid,
                asid,
                addr,
                leaf,
                range,
            } => tlbi_words(op, vmid, asid, addr.0 >> 12, leaf, range),
            Self::TlbiNhVaa {
                vmid,
                addr,
                leaf,
                range,
            } => tlbi_words(op, vmid, no_asid, addr.0 >> 12, leaf, range),
            Self::TlbiEl3Va { addr, leaf, range } | Self::TlbiEl2Vaa { addr, leaf, range } => {
                tlbi_words(op, no_vmid, no_asid, addr.0 >> 12, leaf, range)
            }
            Self::TlbiEl2Va {
                asid,
                addr,
                leaf,
                range,
            } => tlbi_words(op, no_vmid, asid, addr.0 >> 12, leaf, range),
            Self::TlbiS2Ipa {
                vmid,
                ipa,
                leaf,
                range,
            } => tlbi_words(op, vmid, no_asid, truncate(ipa >> 12, 40), leaf, range),
            Self::AtcInv {
                sid,
                ssid,
                global,
                addr,
                size,
            } => [
                stream_word0(op, sid, ssid).with_global(global).into_bits(),
                CmdAtcInvWord1::new()
                    .with_size(size & 0x3F)
                    .with_address(addr.0 >> 12)
                    .into_bits(),
            ],
            Self::PriResp {
                sid,
                ssid,
                prg_index,
                resp,
            } => [
                stream_word0(op, sid, ssid).into_bits(),
                CmdPriRespWord1::new()
                    .with_prg_index(prg_index & 0x1FF)
                    .with_resp(resp)
                    .into_bits(),
            ],
            Self::Resume { sid, stag, action } => {
                let (ac, ab) = match action {
                    ResumeAction::Retry => (true, false),
                    ResumeAction::Terminate { abort } => (false, abort),
                };
                let w0 = CmdResumeWord0::new()
                    .with_opcode(op as u8)
                    .with_ac(ac)
                    .with_ab(ab)
                    .with_stream_id(sid);
                [
                    w0.into_bits(),
                    CmdResumeWord1::new().with_stag(stag).into_bits(),
                ]
            }
            Self::Sync {
                cs,
                msh,
                msi_attr,
                msi_data,
                msi_addr,
            } => [
                CmdSyncWord0::new()
                    .with_opcode(op as u8)
                    .with_cs(cs)
                    .with_msh(msh)
                    .with_msi_attr(msi_attr & 0xF)
                    .with_msi_data(msi_data)
                    .into_bits(),
                CmdSyncWord1::new()
                    .with_msi_addr(truncate(msi_addr.0 >> 2, 50))
                    .into_bits(),
            ],
        }
    }

    /// Decodes a queue entry. Rejects unknown opcodes, set RES0 bits (including NUM, SCALE
    /// and TTL of a TLBI without TG), SSec == 1, and the ILLEGAL `CS` and `Resp` encodings.
    pub fn decode(words: [u64; 2]) -> Result<Self, CommandError> {
        let [w0, w1] = words;
        let raw_op = (w0 & 0xFF) as u8;
        let op = Opcode::from_u8(raw_op).ok_or(CommandError::UnknownOpcode(raw_op))?;
        if op.has_ssec() && w0 & (1 << 10) != 0 {
            return Err(CommandError::IllegalField {
                opcode: op,
                field: "SSec",
                value: 1,
            });
        }
        let defined = op.defined_bits();
        for (word, (&w, &d)) in words.iter().zip(&defined).enumerate() {
            if w & !d != 0 {
                return Err(CommandError::ReservedBits {
                    opcode: op,
                    word,
                    bits: w & !d,
                });
            }
        }

        let stream = CmdStreamWord0::from_bits(w0);
        let sid = stream.stream_id();
        let ssid = stream.ssv().then_some(Pasid(stream.substream_id()));
        let tlbi0 = CmdTlbiWord0::from_bits(w0);
        let (vmid, asid) = (tlbi0.vmid(), tlbi0.asid());

        Ok(match op {
            Opcode::PrefetchConfig => Self::PrefetchConfig { sid, ssid },
            Opcode::PrefetchAddr => {
                let w1 = CmdPrefetchWord1::from_bits(w1);
                Self::PrefetchAddr {
                    sid,
                    ssid,
                    addr: Va(w1.address() << 12),
                    size: w1.size(),
                    stride: w1.stride(),
                }
            }
            Opcode::CfgiSte => Self::CfgiSte {
                sid,
                leaf: CmdLeafWord1::from_bits(w1).leaf(),
            },
            Opcode::CfgiSteRange => match CmdRangeWord1::from_bits(w1).range() {
                31 => Self::CfgiAll,
                range => Self::CfgiSteRange { sid, range },
            },
            Opcode::CfgiCd => Self::CfgiCd {
                sid,
                ssid: Pasid(stream.substream_id()),
                leaf: CmdLeafWord1::from_bits(w1).leaf(),
            },
            Opcode::CfgiCdAll => Self::CfgiCdAll { sid },
            Opcode::CfgiVmsPidm => Self::CfgiVmsPidm { vmid },
            Opcode::TlbiNhAll => Self::TlbiNhAll { vmid },
            Opcode::TlbiNhAsid => Self::TlbiNhAsid { vmid, asid },
            Opcode::TlbiEl3All => Self::TlbiEl3All,
            Opcode::TlbiEl2All => Self::TlbiEl2All,
            Opcode::TlbiEl2Asid => Self::TlbiEl2Asid { asid },
            Opcode::TlbiS12Vmall => Self::TlbiS12Vmall { vmid },
            Opcode::TlbiNsnhAll => Self::TlbiNsnhAll,
            Opcode::TlbiNhVa
            | Opcode::TlbiNhVaa
            | Opcode::TlbiEl3Va
            | Opcode::TlbiEl2Va
            | Opcode::TlbiEl2Vaa
            | Opcode::TlbiS2Ipa => {
                let t1 = CmdTlbiWord1::from_bits(w1);
                let range = TlbiRange {
                    tg: t1.tg(),
                    ttl: t1.ttl(),
                    num: tlbi0.num(),
                    scale: tlbi0.scale(),
                };
                if matches!(range.tg, TlbiGranule::Any) && range != TlbiRange::NONE {
                    let (word, bits) = if range.ttl != 0 {
                        (1, w1 & bits(9, 8))
                    } else {
                        (0, w0 & (bits(16, 12) | bits(25, 20)))
                    };
                    return Err(CommandError::ReservedBits {
                        opcode: op,
                        word,
                        bits,
                    });
                }
                let (addr, leaf) = (Va(t1.address() << 12), t1.leaf());
                match op {
                    Opcode::TlbiNhVa => Self::TlbiNhVa {
                        vmid,
                        asid,
                        addr,
                        leaf,
                        range,
                    },
                    Opcode::TlbiNhVaa => Self::TlbiNhVaa {
                        vmid,
                        addr,
                        leaf,
                        range,
                    },
                    Opcode::TlbiEl3Va => Self::TlbiEl3Va { addr, leaf, range },
                    Opcode::TlbiEl2Va => Self::TlbiEl2Va {
                        asid,
                        addr,
                        leaf,
                        range,
                    },
                    Opcode::TlbiEl2Vaa => Self::TlbiEl2Vaa { addr, leaf, range },
                    _ => Self::TlbiS2Ipa {
                        vmid,
                        ipa: addr.0,
                        leaf,
                        range,
                    },
                }
            }
            Opcode::AtcInv => {
                let w1 = CmdAtcInvWord1::from_bits(w1);
                Self::AtcInv {
                    sid,
                    ssid,
                    global: stream.global(),
                    addr: Va(w1.address() << 12),
                    size: w1.size(),
                }
            }
            Opcode::PriResp => {
                let w1 = CmdPriRespWord1::from_bits(w1);
                let resp = w1.resp();
                if resp.is_reserved() {
                    return Err(CommandError::IllegalField {
                        opcode: op,
                        field: "Resp",
                        value: u64::from(resp.into_bits()),
                    });
                }
                Self::PriResp {
                    sid,
                    ssid,
                    prg_index: w1.prg_index(),
                    resp,
                }
            }
            Opcode::Resume => {
                let r0 = CmdResumeWord0::from_bits(w0);
                let action = if r0.ac() {
                    ResumeAction::Retry
                } else {
                    ResumeAction::Terminate { abort: r0.ab() }
                };
                Self::Resume {
                    sid,
                    stag: CmdResumeWord1::from_bits(w1).stag(),
                    action,
                }
            }
            Opcode::StallTerm => Self::StallTerm { sid },
            Opcode::Sync => {
                let s0 = CmdSyncWord0::from_bits(w0);
                if s0.cs().is_reserved() {
                    return Err(CommandError::IllegalField {
                        opcode: op,
                        field: "CS",
                        value: u64::from(s0.cs().into_bits()),
                    });
                }
                Self::Sync {
                    cs: s0.cs(),
                    msh: s0.msh(),
                    msi_attr: s0.msi_attr(),
                    msi_data: s0.msi_data(),
                    msi_addr: Pa(CmdSyncWord1::from_bits(w1).msi_addr() << 2),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(cmd: Command, words: [u64; 2]) {
        assert_eq!(cmd.encode(), words, "{} encoding", cmd.name());
        assert_eq!(Command::decode(words), Ok(cmd), "{} decoding", cmd.name());
    }

    #[test]
    fn opcode_numbers() {
        let expected: [(Opcode, u8); 25] = [
            (Opcode::PrefetchConfig, 0x01),
            (Opcode::PrefetchAddr, 0x02),
            (Opcode::CfgiSte, 0x03),
            (Opcode::CfgiSteRange, 0x04),
            (Opcode::CfgiCd, 0x05),
            (Opcode::CfgiCdAll, 0x06),
            (Opcode::CfgiVmsPidm, 0x07),
            (Opcode::TlbiNhAll, 0x10),
            (Opcode::TlbiNhAsid, 0x11),
            (Opcode::TlbiNhVa, 0x12),
            (Opcode::TlbiNhVaa, 0x13),
            (Opcode::TlbiEl3All, 0x18),
            (Opcode::TlbiEl3Va, 0x1A),
            (Opcode::TlbiEl2All, 0x20),
            (Opcode::TlbiEl2Asid, 0x21),
            (Opcode::TlbiEl2Va, 0x22),
            (Opcode::TlbiEl2Vaa, 0x23),
            (Opcode::TlbiS12Vmall, 0x28),
            (Opcode::TlbiS2Ipa, 0x2A),
            (Opcode::TlbiNsnhAll, 0x30),
            (Opcode::AtcInv, 0x40),
            (Opcode::PriResp, 0x41),
            (Opcode::Resume, 0x44),
            (Opcode::StallTerm, 0x45),
            (Opcode::Sync, 0x46),
        ];
        for (op, raw) in expected {
            assert_eq!(op as u8, raw, "{}", op.name());
            assert_eq!(Opcode::from_u8(raw), Some(op));
        }
        for raw in [
            0x00, 0x08, 0x14, 0x19, 0x29, 0x42, 0x43, 0x47, 0x50, 0x60, 0x70, 0x80, 0xFF,
        ] {
            assert_eq!(
                Opcode::from_u8(raw),
                None,
                "{raw:#x} is not a Non-secure opcode"
            );
        }
    }

    #[test]
    fn cfgi_literals() {
        round_trip(
            Command::CfgiSte {
                sid: StreamId(0x1234),
                leaf: true,
            },
            [0x0000_1234_0000_0003, 1],
        );
        round_trip(
            Command::CfgiCd {
                sid: StreamId(0x10),
                ssid: Pasid(0x5),
                leaf: true,
            },
            [0x0000_0010_0000_5005, 1],
        );
        round_trip(
            Command::CfgiCdAll {
                sid: StreamId(0xFFFF_FFFF),
            },
            [0xFFFF_FFFF_0000_0006, 0],
        );
        round_trip(
            Command::CfgiSteRange {
                sid: StreamId(0x100),
                range: 7,
            },
            [0x0000_0100_0000_0004, 7],
        );
        round_trip(Command::CfgiAll, [0x04, 0x1F]);
        assert_eq!(
            Command::decode([0x0000_0100_0000_0004, 0x1F]),
            Ok(Command::CfgiAll)
        );
        assert_eq!(Command::CfgiAll.name(), "CMD_CFGI_ALL");
    }

    #[test]
    fn tlbi_literals() {
        let range = TlbiRange {
            tg: TlbiGranule::Size4K,
            ttl: 3,
            num: 15,
            scale: 1,
        };
        round_trip(
            Command::TlbiNhVa {
                vmid: Vmid(0),
                asid: Asid(0x42),
                addr: Va(0x7FFF_1234_5000),
                leaf: true,
                range,
            },
            [0x0042_0000_0010_F012, 0x7FFF_1234_5701],
        );
        assert_eq!(range.bytes(), Some(32 * 4096));
        round_trip(
            Command::TlbiNhVa {
                vmid: Vmid(3),
                asid: Asid(1),
                addr: Va(0x40_0000),
                leaf: false,
                range: TlbiRange::NONE,
            },
            [0x0001_0003_0000_0012, 0x40_0000],
        );
        round_trip(
            Command::TlbiNhAsid {
                vmid: Vmid(0x12),
                asid: Asid(0x3456),
            },
            [0x3456_0012_0000_0011, 0],
        );
        round_trip(
            Command::TlbiNhAll { vmid: Vmid(0xABCD) },
            [0x0000_ABCD_0000_0010, 0],
        );
        round_trip(Command::TlbiNsnhAll, [0x30, 0]);
        round_trip(
            Command::TlbiEl2Asid { asid: Asid(9) },
            [0x0009_0000_0000_0021, 0],
        );
        round_trip(
            Command::TlbiS2Ipa {
                vmid: Vmid(1),
                ipa: 0x8_0000_0000,
                leaf: true,
                range: TlbiRange::NONE,
            },
            [0x0000_0001_0000_002A, 0x8_0000_0001],
        );
    }

    #[test]
    fn atc_pri_resume_literals() {
        round_trip(
            Command::AtcInv {
                sid: StreamId(0x100),
                ssid: Some(Pasid(7)),
                global: false,
                addr: Va(0),
                size: 52,
            },
            [0x0000_0100_0000_7840, 52],
        );
        round_trip(
            Command::AtcInv {
                sid: StreamId(0x8),
                ssid: None,
                global: true,
                addr: Va(0x1234_5000),
                size: 0,
            },
            [0x0000_0008_0000_0240, 0x1234_5000],
        );
        round_trip(
            Command::PriResp {
                sid: StreamId(0x100),
                ssid: Some(Pasid(1)),
                prg_index: 0x1A5,
                resp: PriResponse::Success,
            },
            [0x0000_0100_0000_1841, 0x21A5],
        );
        round_trip(
            Command::PriResp {
                sid: StreamId(2),
                ssid: None,
                prg_index: 3,
                resp: PriResponse::Invalid,
            },
            [0x0000_0002_0000_0041, 0x1003],
        );
        round_trip(
            Command::Resume {
                sid: StreamId(0x20),
                stag: 0xBEEF,
                action: ResumeAction::Retry,
            },
            [0x0000_0020_0000_1044, 0xBEEF],
        );
        round_trip(
            Command::Resume {
                sid: StreamId(0x20),
                stag: 1,
                action: ResumeAction::Terminate { abort: true },
            },
            [0x0000_0020_0000_2044, 1],
        );
        round_trip(
            Command::Resume {
                sid: StreamId(0x20),
                stag: 1,
                action: ResumeAction::Terminate { abort: false },
            },
            [0x0000_0020_0000_0044, 1],
        );
        // Ab is IGNORED on retry.
        assert_eq!(
            Command::decode([0x0000_0020_0000_3044, 1]),
            Ok(Command::Resume {
                sid: StreamId(0x20),
                stag: 1,
                action: ResumeAction::Retry
            })
        );
        round_trip(
            Command::StallTerm { sid: StreamId(5) },
            [0x0000_0005_0000_0045, 0],
        );
    }

    #[test]
    fn sync_literals() {
        let none = Command::Sync {
            cs: SyncCs::None,
            msh: Shareability::NonShareable,
            msi_attr: 0,
            msi_data: 0,
            msi_addr: Pa(0),
        };
        round_trip(none, [0x46, 0]);
        let irq = Command::Sync {
            cs: SyncCs::Irq,
            msh: Shareability::InnerShareable,
            msi_attr: 0xF,
            msi_data: 0xDEAD_BEEF,
            msi_addr: Pa(0x8_0000_1000),
        };
        round_trip(irq, [0xDEAD_BEEF_0FC0_1046, 0x8_0000_1000]);
        let sev = Command::Sync {
            cs: SyncCs::Sev,
            msh: Shareability::NonShareable,
            msi_attr: 0,
            msi_data: 0,
            msi_addr: Pa(0),
        };
        round_trip(sev, [0x2046, 0]);
    }

    #[test]
    fn malformed_commands() {
        assert_eq!(
            Command::decode([0x00, 0]),
            Err(CommandError::UnknownOpcode(0))
        );
        assert_eq!(
            Command::decode([0x50, 0]),
            Err(CommandError::UnknownOpcode(0x50))
        );
        assert_eq!(
            Command::decode([0x03 | (1 << 10), 0]),
            Err(CommandError::IllegalField {
                opcode: Opcode::CfgiSte,
                field: "SSec",
                value: 1
            })
        );
        assert_eq!(
            Command::decode([0x03, 2]),
            Err(CommandError::ReservedBits {
                opcode: Opcode::CfgiSte,
                word: 1,
                bits: 2
            })
        );
        assert_eq!(
            Command::decode([0x03 | (1 << 11), 0]),
            Err(CommandError::ReservedBits {
                opcode: Opcode::CfgiSte,
                word: 0,
                bits: 1 << 11
            })
        );
        assert_eq!(
            Command::decode([0x46 | (3 << 12), 0]),
            Err(CommandError::IllegalField {
                opcode: Opcode::Sync,
                field: "CS",
                value: 3
            })
        );
        assert_eq!(
            Command::decode([0x41, 3 << 12]),
            Err(CommandError::IllegalField {
                opcode: Opcode::PriResp,
                field: "Resp",
                value: 3
            })
        );
        // SSec is a reserved bit, not a field, in CMD_SYNC.
        assert_eq!(
            Command::decode([0x46 | (1 << 10), 0]),
            Err(CommandError::ReservedBits {
                opcode: Opcode::Sync,
                word: 0,
                bits: 1 << 10
            })
        );
        // NUM without TG.
        assert_eq!(
            Command::decode([0x12 | (1 << 12), 0]),
            Err(CommandError::ReservedBits {
                opcode: Opcode::TlbiNhVa,
                word: 0,
                bits: 1 << 12
            })
        );
        // TTL without TG.
        assert_eq!(
            Command::decode([0x12, 1 << 8]),
            Err(CommandError::ReservedBits {
                opcode: Opcode::TlbiNhVa,
                word: 1,
                bits: 1 << 8
            })
        );
        // IPA above bit 51.
        assert_eq!(
            Command::decode([0x2A, 1 << 60]),
            Err(CommandError::ReservedBits {
                opcode: Opcode::TlbiS2Ipa,
                word: 1,
                bits: 1 << 60
            })
        );
    }

    fn sid() -> impl Strategy<Value = StreamId> {
        any::<u32>().prop_map(StreamId)
    }

    fn ssid() -> impl Strategy<Value = Option<Pasid>> {
        proptest::option::of((0u32..(1 << 20)).prop_map(Pasid))
    }

    fn page() -> impl Strategy<Value = Va> {
        any::<u64>().prop_map(|a| Va(a & !0xFFF))
    }

    fn range() -> impl Strategy<Value = TlbiRange> {
        prop_oneof![
            Just(TlbiRange::NONE),
            (1u8..4, 0u8..4, 0u8..32, 0u8..64).prop_map(|(tg, ttl, num, scale)| TlbiRange {
                tg: TlbiGranule::from_bits(tg),
                ttl,
                num,
                scale
            }),
        ]
    }

    fn shareability() -> impl Strategy<Value = Shareability> {
        (0u8..4).prop_map(Shareability::from_bits)
    }

    fn command() -> impl Strategy<Value = Command> {
        let vmid = || any::<u16>().prop_map(Vmid);
        let asid = || any::<u16>().prop_map(Asid);
        prop_oneof![
            (sid(), ssid()).prop_map(|(sid, ssid)| Command::PrefetchConfig { sid, ssid }),
            (sid(), ssid(), page(), 0u8..32, 0u8..32).prop_map(
                |(sid, ssid, addr, size, stride)| Command::PrefetchAddr {
                    sid,
                    ssid,
                    addr,
                    size,
                    stride
                }
            ),
            (sid(), any::<bool>()).prop_map(|(sid, leaf)| Command::CfgiSte { sid, leaf }),
            (sid(), 0u8..31).prop_map(|(sid, range)| Command::CfgiSteRange { sid, range }),
            Just(Command::CfgiAll),
            (sid(), 0u32..(1 << 20), any::<bool>()).prop_map(|(sid, ssid, leaf)| Command::CfgiCd {
                sid,
                ssid: Pasid(ssid),
                leaf
            }),
            sid().prop_map(|sid| Command::CfgiCdAll { sid }),
            vmid().prop_map(|vmid| Command::CfgiVmsPidm { vmid }),
            vmid().prop_map(|vmid| Command::TlbiNhAll { vmid }),
            (vmid(), asid()).prop_map(|(vmid, asid)| Command::TlbiNhAsid { vmid, asid }),
            (vmid(), asid(), page(), any::<bool>(), range()).prop_map(
                |(vmid, asid, addr, leaf, range)| Command::TlbiNhVa {
                    vmid,
                    asid,
                    addr,
                    leaf,
                    range
                }
            ),
            (vmid(), page(), any::<bool>(), range()).prop_map(|(vmid, addr, leaf, range)| {
                Command::TlbiNhVaa {
                    vmid,
                    addr,
                    leaf,
                    range,
                }
            }),
            Just(Command::TlbiEl3All),
            (page(), any::<bool>(), range()).prop_map(|(addr, leaf, range)| Command::TlbiEl3Va {
                addr,
                leaf,
                range
            }),
            Just(Command::TlbiEl2All),
            asid().prop_map(|asid| Command::TlbiEl2Asid { asid }),
            (asid(), page(), any::<bool>(), range()).prop_map(|(asid, addr, leaf, range)| {
                Command::TlbiEl2Va {
                    asid,
                    addr,
                    leaf,
                    range,
                }
            }),
            (page(), any::<bool>(), range()).prop_map(|(addr, leaf, range)| Command::TlbiEl2Vaa {
                addr,
                leaf,
                range
            }),
            vmid().prop_map(|vmid| Command::TlbiS12Vmall { vmid }),
            (vmid(), 0u64..(1 << 40), any::<bool>(), range()).prop_map(
                |(vmid, ipa, leaf, range)| Command::TlbiS2Ipa {
                    vmid,
                    ipa: ipa << 12,
                    leaf,
                    range
                }
            ),
            Just(Command::TlbiNsnhAll),
            (sid(), ssid(), any::<bool>(), page(), 0u8..64).prop_map(
                |(sid, ssid, global, addr, size)| Command::AtcInv {
                    sid,
                    ssid,
                    global,
                    addr,
                    size
                }
            ),
            (sid(), ssid(), 0u16..512, 0u8..3).prop_map(|(sid, ssid, prg_index, resp)| {
                Command::PriResp {
                    sid,
                    ssid,
                    prg_index,
                    resp: PriResponse::from_bits(resp),
                }
            }),
            (sid(), any::<u16>(), proptest::option::of(any::<bool>())).prop_map(
                |(sid, stag, abort)| Command::Resume {
                    sid,
                    stag,
                    action: abort.map_or(ResumeAction::Retry, |abort| ResumeAction::Terminate {
                        abort
                    }),
                }
            ),
            sid().prop_map(|sid| Command::StallTerm { sid }),
            (
                0u8..3,
                shareability(),
                0u8..16,
                any::<u32>(),
                0u64..(1 << 50)
            )
                .prop_map(|(cs, msh, msi_attr, msi_data, addr)| Command::Sync {
                    cs: SyncCs::from_bits(cs),
                    msh,
                    msi_attr,
                    msi_data,
                    msi_addr: Pa(addr << 2),
                }),
        ]
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(cmd in command()) {
            prop_assert_eq!(Command::decode(cmd.encode()), Ok(cmd));
        }

        #[test]
        fn decode_never_panics_and_is_canonical(
            w0: u64,
            w1: u64,
            op in proptest::sample::select(Opcode::ALL.to_vec()),
        ) {
            // Raw words, a known opcode with raw fields, and a known opcode with only its
            // defined bits set (so that the field checks, not the RES0 check, decide).
            let [d0, d1] = op.defined_bits();
            let with_op = [(w0 & !0xFF) | op as u64, w1];
            let defined = [(w0 & d0 & !0xFF) | op as u64, w1 & d1];
            for (words, known) in [([w0, w1], false), (with_op, true), (defined, true)] {
                if let Ok(cmd) = Command::decode(words) {
                    if known {
                        prop_assert_eq!(cmd.opcode(), op);
                    }
                    prop_assert_eq!(Command::decode(cmd.encode()), Ok(cmd));
                }
            }
        }
    }
}
