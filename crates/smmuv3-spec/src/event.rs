//! Event queue records (§7.3 Event records).
//!
//! A record is 32 bytes: four little-endian 64-bit words. Word 0 is common to every event
//! (type, SSV, SubstreamID, StreamID); what words 1 to 3 hold depends on the event number:
//!
//! | words | carried by |
//! |---|---|
//! | 1: STAG, Stall, PnU, InD, RnW, NSIPA, S2, CLASS, TTRnW; 3: IPA | F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION |
//! | 1: Reason (same bits as STAG); 3: FetchAddr | F_STE_FETCH, F_CD_FETCH, F_VMS_FETCH, F_WALK_EABT |
//! | 2: InputAddr | all faults on a transaction |
//! | 1: Span and anticipated permissions; 2: InputAddr\[63:12\] | E_PAGE_REQUEST |
//!
//! [`Event`] is the typed record. It has one field per architectural field; [`Event::encode`]
//! writes only the fields the event number defines and [`Event::decode`] leaves the others at
//! their zero value, so `decode(encode(e)) == e.canonical()`.

use bitfield_struct::bitfield;
use sva_addr::{Pa, Pasid, StreamId, Va};

use crate::encoding::{bits, spec_enum, truncate};
use crate::error::EventError;

/// An event number (§7.3.2 to §7.3.21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventId {
    /// `0x01` F_UUT: unsupported upstream transaction.
    FUut,
    /// `0x02` C_BAD_STREAMID: StreamID out of range of the Stream table.
    CBadStreamid,
    /// `0x03` F_STE_FETCH: external abort fetching an STE or L1STD.
    FSteFetch,
    /// `0x04` C_BAD_STE: invalid or ILLEGAL STE.
    CBadSte,
    /// `0x05` F_BAD_ATS_TREQ: ATS Translation Request not allowed for the stream.
    FBadAtsTreq,
    /// `0x06` F_STREAM_DISABLED: transaction without (or with substream 0 under S1DSS=SSID0)
    /// a SubstreamID on a stream that requires one.
    FStreamDisabled,
    /// `0x07` F_TRANSL_FORBIDDEN: ATS Translated transaction not allowed.
    FTranslForbidden,
    /// `0x08` C_BAD_SUBSTREAMID: SubstreamID out of range, or an invalid L1CD.
    CBadSubstreamid,
    /// `0x09` F_CD_FETCH: external abort fetching a CD or L1CD.
    FCdFetch,
    /// `0x0A` C_BAD_CD: invalid or ILLEGAL CD.
    CBadCd,
    /// `0x0B` F_WALK_EABT: external abort during a translation table walk.
    FWalkEabt,
    /// `0x10` F_TRANSLATION: translation fault (no valid descriptor).
    FTranslation,
    /// `0x11` F_ADDR_SIZE: address size fault.
    FAddrSize,
    /// `0x12` F_ACCESS: Access flag fault.
    FAccess,
    /// `0x13` F_PERMISSION: permission fault.
    FPermission,
    /// `0x20` F_TLB_CONFLICT: TLB multiple-hit.
    FTlbConflict,
    /// `0x21` F_CFG_CONFLICT: configuration cache multiple-hit.
    FCfgConflict,
    /// `0x24` E_PAGE_REQUEST: speculative page request hint (non-PCIe).
    EPageRequest,
    /// `0x25` F_VMS_FETCH: external abort fetching a VMS.
    FVmsFetch,
    /// `0xE0` to `0xEF` IMPDEF_EVENTn: IMPLEMENTATION DEFINED (only word 0 is decoded).
    ImpDef(u8),
}

impl EventId {
    /// Every architected event, in numeric order (without IMPLEMENTATION DEFINED events).
    pub const ALL: [EventId; 19] = [
        Self::FUut,
        Self::CBadStreamid,
        Self::FSteFetch,
        Self::CBadSte,
        Self::FBadAtsTreq,
        Self::FStreamDisabled,
        Self::FTranslForbidden,
        Self::CBadSubstreamid,
        Self::FCdFetch,
        Self::CBadCd,
        Self::FWalkEabt,
        Self::FTranslation,
        Self::FAddrSize,
        Self::FAccess,
        Self::FPermission,
        Self::FTlbConflict,
        Self::FCfgConflict,
        Self::EPageRequest,
        Self::FVmsFetch,
    ];

    /// The event number.
    #[must_use]
    pub const fn raw(self) -> u8 {
        match self {
            Self::FUut => 0x01,
            Self::CBadStreamid => 0x02,
            Self::FSteFetch => 0x03,
            Self::CBadSte => 0x04,
            Self::FBadAtsTreq => 0x05,
            Self::FStreamDisabled => 0x06,
            Self::FTranslForbidden => 0x07,
            Self::CBadSubstreamid => 0x08,
            Self::FCdFetch => 0x09,
            Self::CBadCd => 0x0A,
            Self::FWalkEabt => 0x0B,
            Self::FTranslation => 0x10,
            Self::FAddrSize => 0x11,
            Self::FAccess => 0x12,
            Self::FPermission => 0x13,
            Self::FTlbConflict => 0x20,
            Self::FCfgConflict => 0x21,
            Self::EPageRequest => 0x24,
            Self::FVmsFetch => 0x25,
            Self::ImpDef(raw) => raw,
        }
    }

    /// The event with this number, or `None` if the number is reserved.
    #[must_use]
    pub const fn from_raw(raw: u8) -> Option<Self> {
        if raw >= 0xE0 && raw <= 0xEF {
            return Some(Self::ImpDef(raw));
        }
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i].raw() == raw {
                return Some(Self::ALL[i]);
            }
            i += 1;
        }
        None
    }

    /// The architectural name, e.g. `F_TRANSLATION`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::FUut => "F_UUT",
            Self::CBadStreamid => "C_BAD_STREAMID",
            Self::FSteFetch => "F_STE_FETCH",
            Self::CBadSte => "C_BAD_STE",
            Self::FBadAtsTreq => "F_BAD_ATS_TREQ",
            Self::FStreamDisabled => "F_STREAM_DISABLED",
            Self::FTranslForbidden => "F_TRANSL_FORBIDDEN",
            Self::CBadSubstreamid => "C_BAD_SUBSTREAMID",
            Self::FCdFetch => "F_CD_FETCH",
            Self::CBadCd => "C_BAD_CD",
            Self::FWalkEabt => "F_WALK_EABT",
            Self::FTranslation => "F_TRANSLATION",
            Self::FAddrSize => "F_ADDR_SIZE",
            Self::FAccess => "F_ACCESS",
            Self::FPermission => "F_PERMISSION",
            Self::FTlbConflict => "F_TLB_CONFLICT",
            Self::FCfgConflict => "F_CFG_CONFLICT",
            Self::EPageRequest => "E_PAGE_REQUEST",
            Self::FVmsFetch => "F_VMS_FETCH",
            Self::ImpDef(_) => "IMPDEF_EVENT",
        }
    }

    /// Whether the event can report a stalled transaction (Stall/STAG fields, §7.3.21).
    #[must_use]
    pub const fn can_stall(self) -> bool {
        self.layout().stall
    }

    /// Which fields the record of this event carries.
    const fn layout(self) -> Layout {
        const HEADER: Layout = Layout {
            ssv: true,
            ssid_always: false,
            stall: false,
            reason: false,
            attrs: false,
            rnw: false,
            stage: false,
            tt_rnw: false,
            input: false,
            input_page: false,
            ipa: false,
            fetch: false,
            hint: false,
        };
        const FETCH: Layout = Layout {
            reason: true,
            fetch: true,
            ..HEADER
        };
        const FAULT: Layout = Layout {
            stall: true,
            attrs: true,
            rnw: true,
            stage: true,
            input: true,
            ipa: true,
            ..HEADER
        };
        match self {
            Self::CBadStreamid | Self::CBadSte | Self::CBadCd | Self::ImpDef(_) => HEADER,
            Self::FUut => Layout {
                reason: true,
                attrs: true,
                rnw: true,
                input: true,
                ..HEADER
            },
            Self::FSteFetch | Self::FCdFetch | Self::FVmsFetch => FETCH,
            Self::FBadAtsTreq => Layout {
                input: true,
                ..HEADER
            },
            Self::FStreamDisabled => Layout {
                ssv: false,
                ..HEADER
            },
            Self::FTranslForbidden => Layout {
                ssv: false,
                rnw: true,
                input: true,
                ..HEADER
            },
            Self::CBadSubstreamid => Layout {
                ssv: false,
                ssid_always: true,
                ..HEADER
            },
            Self::FWalkEabt => Layout {
                attrs: true,
                rnw: true,
                stage: true,
                input: true,
                ..FETCH
            },
            Self::FTranslation | Self::FAddrSize | Self::FAccess => FAULT,
            Self::FPermission => Layout {
                tt_rnw: true,
                ..FAULT
            },
            Self::FTlbConflict => Layout {
                stall: false,
                reason: true,
                ..FAULT
            },
            Self::FCfgConflict => Layout {
                reason: true,
                ..HEADER
            },
            Self::EPageRequest => Layout {
                hint: true,
                input_page: true,
                ..HEADER
            },
        }
    }
}

/// The fields an event record defines beyond StreamID and the event number.
#[derive(Clone, Copy)]
struct Layout {
    /// SSV and SubstreamID.
    ssv: bool,
    /// SubstreamID without SSV (always valid).
    ssid_always: bool,
    /// Stall and STAG.
    stall: bool,
    /// IMPLEMENTATION DEFINED Reason in bits `[79:64]`.
    reason: bool,
    /// PnU and InD.
    attrs: bool,
    /// RnW.
    rnw: bool,
    /// S2, CLASS and NSIPA.
    stage: bool,
    /// TTRnW.
    tt_rnw: bool,
    /// InputAddr\[63:0\].
    input: bool,
    /// InputAddr\[63:12\].
    input_page: bool,
    /// IPA\[51:12\].
    ipa: bool,
    /// FetchAddr\[51:3\].
    fetch: bool,
    /// Span and the anticipated permissions.
    hint: bool,
}

spec_enum! {
    /// CLASS: what the faulting access was doing.
    pub enum FaultClass: 2 {
        /// `0b00` CD: fetching a CD (stage 2 fault on the CD address).
        Cd = 0,
        /// `0b01` TT: fetching a stage 1 translation table descriptor.
        Tt = 1,
        /// `0b10` IN: translating the transaction's input address.
        In = 2,
    }
}

/// §7.3 Event record word 0: common to all events.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct EventWord0 {
    /// [7:0] Event number.
    #[bits(8)]
    pub event_id: u8,
    /// [10:8] Reserved, RES0.
    #[bits(3)]
    __: u8,
    /// [11] SSV: SubstreamID valid.
    pub ssv: bool,
    /// [31:12] SubstreamID.
    #[bits(20)]
    pub substream_id: u32,
    /// [63:32] StreamID.
    #[bits(32, from = StreamId, into = StreamId::raw)]
    pub stream_id: StreamId,
}

/// §7.3.13 to §7.3.16 Event record word 1 of translation-related faults (bits `[127:64]`); the
/// fetch and conflict events put their IMPLEMENTATION DEFINED Reason in the STAG bits.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct FaultWord1 {
    /// [15:0] STAG: stall tag to quote in CMD_RESUME (Reason in non-stalling events).
    pub stag: u16,
    /// [30:16] Reserved, RES0 (GPCF at bit 16 in fetch events with RME).
    #[bits(15)]
    __: u16,
    /// [31] Stall: the transaction is stalled and awaits CMD_RESUME.
    pub stall: bool,
    /// [32] Reserved, RES0.
    #[bits(1)]
    __: u8,
    /// [33] PnU: privileged (1) or unprivileged (0) access.
    pub pnu: bool,
    /// [34] InD: instruction (1) or data (0) access.
    pub ind: bool,
    /// [35] RnW: read (1) or write (0) access.
    pub rnw: bool,
    /// [37:36] Reserved, RES0.
    #[bits(2)]
    __: u8,
    /// [38] NSIPA: the IPA is Non-secure (Secure Event queue only).
    pub nsipa: bool,
    /// [39] S2: the fault occurred at stage 2.
    pub s2: bool,
    /// [41:40] CLASS: what the faulting access was doing.
    #[bits(2)]
    pub class: FaultClass,
    /// [43:42] Reserved, RES0.
    #[bits(2)]
    __: u8,
    /// [44] TTRnW (F_PERMISSION with CLASS == TT): the descriptor access was a read.
    pub tt_rnw: bool,
    /// [63:45] Reserved, RES0.
    #[bits(19)]
    __: u32,
}

/// §7.3.19 E_PAGE_REQUEST word 1 (bits `[127:64]`): the anticipated access.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct PageHintWord1 {
    /// [33:0] Reserved, RES0.
    #[bits(34)]
    __: u64,
    /// [34] uX: unprivileged execute anticipated.
    pub ux: bool,
    /// [35] uW: unprivileged write anticipated.
    pub uw: bool,
    /// [36] uR: unprivileged read anticipated.
    pub ur: bool,
    /// [37] pX: privileged execute anticipated.
    pub px: bool,
    /// [38] pW: privileged write anticipated.
    pub pw: bool,
    /// [39] pR: privileged read anticipated.
    pub pr: bool,
    /// [43:40] Reserved, RES0.
    #[bits(4)]
    __: u8,
    /// [51:44] Span: the access spans `Span * 4096` bytes.
    pub span: u8,
    /// [63:52] Reserved, RES0.
    #[bits(12)]
    __: u16,
}

/// Word 3 (bits `[255:192]`) of translation-related faults: the faulting IPA.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct IpaWord3 {
    /// [11:0] Reserved, RES0.
    #[bits(12)]
    __: u16,
    /// [51:12] IPA[51:12]: valid when S2 == 1 (the CD or descriptor address for CLASS CD/TT).
    #[bits(40)]
    pub ipa: u64,
    /// [63:52] Reserved, RES0.
    #[bits(12)]
    __: u16,
}

/// Word 3 (bits `[255:192]`) of fetch-abort events: the address of the failed fetch.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct FetchWord3 {
    /// [2:0] Reserved, RES0.
    #[bits(3)]
    __: u8,
    /// [51:3] FetchAddr[51:3]: physical address of the STE, CD, VMS or descriptor fetched.
    #[bits(49)]
    pub fetch_addr: u64,
    /// [63:52] Reserved, RES0.
    #[bits(12)]
    __: u16,
}

/// The accesses an E_PAGE_REQUEST anticipates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct AccessHint {
    /// pR: privileged read.
    pub pr: bool,
    /// pW: privileged write.
    pub pw: bool,
    /// pX: privileged execute.
    pub px: bool,
    /// uR: unprivileged read.
    pub ur: bool,
    /// uW: unprivileged write.
    pub uw: bool,
    /// uX: unprivileged execute.
    pub ux: bool,
}

/// A decoded event record (§7.3). Fields the event number does not define are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// Event number.
    pub id: EventId,
    /// StreamID of the transaction.
    pub stream_id: StreamId,
    /// SubstreamID, if the transaction had one (SSV).
    pub substream_id: Option<Pasid>,
    /// Stall: the transaction waits for CMD_RESUME or CMD_STALL_TERM.
    pub stall: bool,
    /// STAG: token identifying the stalled transaction.
    pub stag: u16,
    /// IMPLEMENTATION DEFINED reason (F_UUT, fetch and conflict events).
    pub reason: u16,
    /// PnU: privileged access.
    pub pnu: bool,
    /// InD: instruction access.
    pub ind: bool,
    /// RnW: read access (0: write).
    pub rnw: bool,
    /// S2: the fault is at stage 2.
    pub s2: bool,
    /// CLASS of the faulting access.
    pub class: FaultClass,
    /// NSIPA: the IPA is Non-secure (Secure streams only).
    pub nsipa: bool,
    /// TTRnW: the stage 1 descriptor access that faulted at stage 2 was a read.
    pub tt_rnw: bool,
    /// InputAddr: the address the device issued (a VA under SVA; an IPA or PA when stage 1
    /// bypasses).
    pub input_addr: Va,
    /// IPA of a stage 2 fault (bits `[51:12]`).
    pub ipa: u64,
    /// FetchAddr of a fetch abort (bits `[51:3]`).
    pub fetch_addr: Pa,
    /// Span of an E_PAGE_REQUEST, in 4 KiB pages.
    pub span: u8,
    /// Anticipated accesses of an E_PAGE_REQUEST.
    pub hint: AccessHint,
}

impl Event {
    /// A record of event `id` for `stream_id` with every other field zero.
    #[must_use]
    pub const fn new(id: EventId, stream_id: StreamId) -> Self {
        Self {
            id,
            stream_id,
            substream_id: None,
            stall: false,
            stag: 0,
            reason: 0,
            pnu: false,
            ind: false,
            rnw: false,
            s2: false,
            class: FaultClass::Cd,
            nsipa: false,
            tt_rnw: false,
            input_addr: Va(0),
            ipa: 0,
            fetch_addr: Pa(0),
            span: 0,
            hint: AccessHint {
                pr: false,
                pw: false,
                px: false,
                ur: false,
                uw: false,
                ux: false,
            },
        }
    }

    /// The record as [`Event::decode`] returns it after [`Event::encode`]: fields the event
    /// does not define cleared, values truncated to their field widths.
    #[must_use]
    pub fn canonical(&self) -> Self {
        let l = self.id.layout();
        let mut e = Self::new(self.id, self.stream_id);
        if l.ssv {
            e.substream_id = self.substream_id.map(|p| Pasid(p.0 & 0xF_FFFF));
        }
        if l.ssid_always {
            e.substream_id = Some(Pasid(self.substream_id.map_or(0, |p| p.0 & 0xF_FFFF)));
        }
        if l.stall {
            e.stall = self.stall;
            e.stag = self.stag;
        }
        if l.reason {
            e.reason = self.reason;
        }
        if l.attrs {
            e.pnu = self.pnu;
            e.ind = self.ind;
        }
        if l.rnw {
            e.rnw = self.rnw;
        }
        if l.stage {
            e.s2 = self.s2;
            e.class = FaultClass::from_bits(self.class.into_bits());
            e.nsipa = self.nsipa;
        }
        if l.tt_rnw {
            e.tt_rnw = self.tt_rnw;
        }
        if l.input {
            e.input_addr = self.input_addr;
        }
        if l.input_page {
            e.input_addr = Va(self.input_addr.0 & !0xFFF);
        }
        if l.ipa {
            e.ipa = self.ipa & bits(51, 12);
        }
        if l.fetch {
            e.fetch_addr = Pa(self.fetch_addr.0 & bits(51, 3));
        }
        if l.hint {
            e.span = self.span;
            e.hint = self.hint;
        }
        e
    }

    /// The four words of the record, word 0 first.
    #[must_use]
    pub fn encode(&self) -> [u64; 4] {
        let l = self.id.layout();
        let (ssv, ssid) = match self.substream_id {
            Some(p) if l.ssv => (true, p.0 & 0xF_FFFF),
            Some(p) if l.ssid_always => (false, p.0 & 0xF_FFFF),
            _ => (false, 0),
        };
        let w0 = EventWord0::new()
            .with_event_id(self.id.raw())
            .with_ssv(ssv)
            .with_substream_id(ssid)
            .with_stream_id(self.stream_id);

        let w1 = if l.hint {
            let h = self.hint;
            PageHintWord1::new()
                .with_pr(h.pr)
                .with_pw(h.pw)
                .with_px(h.px)
                .with_ur(h.ur)
                .with_uw(h.uw)
                .with_ux(h.ux)
                .with_span(self.span)
                .into_bits()
        } else {
            let info = match (l.stall, l.reason) {
                (true, _) => self.stag,
                (false, true) => self.reason,
                (false, false) => 0,
            };
            FaultWord1::new()
                .with_stag(info)
                .with_stall(l.stall && self.stall)
                .with_pnu(l.attrs && self.pnu)
                .with_ind(l.attrs && self.ind)
                .with_rnw(l.rnw && self.rnw)
                .with_nsipa(l.stage && self.nsipa)
                .with_s2(l.stage && self.s2)
                .with_class(if l.stage { self.class } else { FaultClass::Cd })
                .with_tt_rnw(l.tt_rnw && self.tt_rnw)
                .into_bits()
        };

        let w2 = match (l.input, l.input_page) {
            (true, _) => self.input_addr.0,
            (false, true) => self.input_addr.0 & !0xFFF,
            (false, false) => 0,
        };

        let w3 = if l.ipa {
            IpaWord3::new()
                .with_ipa(truncate(self.ipa >> 12, 40))
                .into_bits()
        } else if l.fetch {
            FetchWord3::new()
                .with_fetch_addr(truncate(self.fetch_addr.0 >> 3, 49))
                .into_bits()
        } else {
            0
        };
        [w0.into_bits(), w1, w2, w3]
    }

    /// Decodes a record. Only the event number is checked; bits the event does not define
    /// are ignored, as software must tolerate fields added by later revisions.
    pub fn decode(words: [u64; 4]) -> Result<Self, EventError> {
        let [w0, w1, w2, w3] = words;
        let w0 = EventWord0::from_bits(w0);
        let id = EventId::from_raw(w0.event_id()).ok_or(EventError::UnknownId(w0.event_id()))?;
        let l = id.layout();
        let mut e = Self::new(id, w0.stream_id());
        if (l.ssv && w0.ssv()) || l.ssid_always {
            e.substream_id = Some(Pasid(w0.substream_id()));
        }
        if l.hint {
            let h = PageHintWord1::from_bits(w1);
            e.span = h.span();
            e.hint = AccessHint {
                pr: h.pr(),
                pw: h.pw(),
                px: h.px(),
                ur: h.ur(),
                uw: h.uw(),
                ux: h.ux(),
            };
        } else {
            let f = FaultWord1::from_bits(w1);
            if l.stall {
                e.stall = f.stall();
                e.stag = f.stag();
            }
            if l.reason {
                e.reason = f.stag();
            }
            if l.attrs {
                e.pnu = f.pnu();
                e.ind = f.ind();
            }
            if l.rnw {
                e.rnw = f.rnw();
            }
            if l.stage {
                e.s2 = f.s2();
                e.class = f.class();
                e.nsipa = f.nsipa();
            }
            if l.tt_rnw {
                e.tt_rnw = f.tt_rnw();
            }
        }
        if l.input {
            e.input_addr = Va(w2);
        }
        if l.input_page {
            e.input_addr = Va(w2 & !0xFFF);
        }
        if l.ipa {
            e.ipa = IpaWord3::from_bits(w3).ipa() << 12;
        }
        if l.fetch {
            e.fetch_addr = Pa(FetchWord3::from_bits(w3).fetch_addr() << 3);
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn event_numbers() {
        let expected: [(EventId, u8); 19] = [
            (EventId::FUut, 0x01),
            (EventId::CBadStreamid, 0x02),
            (EventId::FSteFetch, 0x03),
            (EventId::CBadSte, 0x04),
            (EventId::FBadAtsTreq, 0x05),
            (EventId::FStreamDisabled, 0x06),
            (EventId::FTranslForbidden, 0x07),
            (EventId::CBadSubstreamid, 0x08),
            (EventId::FCdFetch, 0x09),
            (EventId::CBadCd, 0x0A),
            (EventId::FWalkEabt, 0x0B),
            (EventId::FTranslation, 0x10),
            (EventId::FAddrSize, 0x11),
            (EventId::FAccess, 0x12),
            (EventId::FPermission, 0x13),
            (EventId::FTlbConflict, 0x20),
            (EventId::FCfgConflict, 0x21),
            (EventId::EPageRequest, 0x24),
            (EventId::FVmsFetch, 0x25),
        ];
        for (id, raw) in expected {
            assert_eq!(id.raw(), raw, "{}", id.name());
            assert_eq!(EventId::from_raw(raw), Some(id));
        }
        assert_eq!(EventId::from_raw(0xE5), Some(EventId::ImpDef(0xE5)));
        for raw in [0x00, 0x0C, 0x14, 0x22, 0x26, 0xDF, 0xF0] {
            assert_eq!(EventId::from_raw(raw), None, "{raw:#x} is reserved");
        }
        assert!(EventId::FPermission.can_stall() && !EventId::FWalkEabt.can_stall());
    }

    #[test]
    fn f_translation_stalled() {
        let event = Event {
            substream_id: Some(Pasid(0x12)),
            stall: true,
            stag: 7,
            rnw: true,
            class: FaultClass::In,
            input_addr: Va(0x7FFF_0000_1234),
            ..Event::new(EventId::FTranslation, StreamId(0x100))
        };
        let words = [
            0x0000_0100_0001_2810,
            0x0000_0208_8000_0007,
            0x7FFF_0000_1234,
            0,
        ];
        assert_eq!(event.encode(), words);
        assert_eq!(Event::decode(words), Ok(event));
    }

    #[test]
    fn f_permission_stage2_walk() {
        let event = Event {
            pnu: true,
            s2: true,
            class: FaultClass::Tt,
            tt_rnw: true,
            input_addr: Va(0x4000),
            ipa: 0x8_0000_3000,
            ..Event::new(EventId::FPermission, StreamId(1))
        };
        let words = [
            0x0000_0001_0000_0013,
            0x0000_1182_0000_0000,
            0x4000,
            0x8_0000_3000,
        ];
        assert_eq!(event.encode(), words);
        assert_eq!(Event::decode(words), Ok(event));
    }

    #[test]
    fn c_bad_ste() {
        let event = Event::new(EventId::CBadSte, StreamId(0x42));
        assert_eq!(event.encode(), [0x0000_0042_0000_0004, 0, 0, 0]);
        assert_eq!(Event::decode([0x0000_0042_0000_0004, 0, 0, 0]), Ok(event));
        let with_ssid = Event {
            substream_id: Some(Pasid(3)),
            ..event
        };
        assert_eq!(with_ssid.encode()[0], 0x0000_0042_0000_3804);
    }

    #[test]
    fn fetch_and_substream_events() {
        let fetch = Event {
            reason: 3,
            fetch_addr: Pa(0x8000_0040),
            ..Event::new(EventId::FSteFetch, StreamId(9))
        };
        let words = [0x0000_0009_0000_0003, 3, 0, 0x8000_0040];
        assert_eq!(fetch.encode(), words);
        assert_eq!(Event::decode(words), Ok(fetch));

        // C_BAD_SUBSTREAMID has no SSV: the SubstreamID is always valid.
        let bad = Event {
            substream_id: Some(Pasid(0xFFFFF)),
            ..Event::new(EventId::CBadSubstreamid, StreamId(2))
        };
        assert_eq!(bad.encode()[0], 0x0000_0002_FFFF_F008);
        assert_eq!(Event::decode(bad.encode()), Ok(bad));
    }

    #[test]
    fn page_request_hint() {
        let hint = Event {
            substream_id: Some(Pasid(1)),
            span: 4,
            hint: AccessHint {
                pr: true,
                uw: true,
                ..AccessHint::default()
            },
            input_addr: Va(0x1234_5000),
            ..Event::new(EventId::EPageRequest, StreamId(1))
        };
        let words = hint.encode();
        assert_eq!(words[1], (4 << 44) | (1 << 39) | (1 << 35));
        assert_eq!(Event::decode(words), Ok(hint));
    }

    #[test]
    fn undefined_fields_are_dropped() {
        let noisy = Event {
            stall: true,
            ipa: 0x5000,
            ..Event::new(EventId::CBadCd, StreamId(1))
        };
        assert_eq!(noisy.encode(), [0x0000_0001_0000_000A, 0, 0, 0]);
        assert_eq!(Event::decode(noisy.encode()), Ok(noisy.canonical()));
        assert_eq!(
            Event::decode([0x0C, 0, 0, 0]),
            Err(EventError::UnknownId(0x0C))
        );
    }

    fn event() -> impl Strategy<Value = Event> {
        let id = prop_oneof![
            proptest::sample::select(EventId::ALL.to_vec()),
            (0xE0u8..=0xEF).prop_map(EventId::ImpDef),
        ];
        (
            id,
            any::<u32>(),
            proptest::option::of(any::<u32>()),
            any::<(bool, u16, u16, bool, bool, bool, bool, u8, bool, bool)>(),
            any::<(u64, u64, u64, u8, [bool; 6])>(),
        )
            .prop_map(|(id, sid, ssid, a, b)| {
                let (stall, stag, reason, pnu, ind, rnw, s2, class, nsipa, tt_rnw) = a;
                let (input, ipa, fetch, span, [pr, pw, px, ur, uw, ux]) = b;
                Event {
                    id,
                    stream_id: StreamId(sid),
                    substream_id: ssid.map(Pasid),
                    stall,
                    stag,
                    reason,
                    pnu,
                    ind,
                    rnw,
                    s2,
                    class: FaultClass::from_bits(class),
                    nsipa,
                    tt_rnw,
                    input_addr: Va(input),
                    ipa,
                    fetch_addr: Pa(fetch),
                    span,
                    hint: AccessHint {
                        pr,
                        pw,
                        px,
                        ur,
                        uw,
                        ux,
                    },
                }
            })
    }

    proptest! {
        #[test]
        fn round_trip(event in event()) {
            let canonical = event.canonical();
            prop_assert_eq!(Event::decode(event.encode()), Ok(canonical));
            prop_assert_eq!(canonical.canonical(), canonical);
        }

        #[test]
        fn decode_never_panics(words: [u64; 4]) {
            if let Ok(event) = Event::decode(words) {
                prop_assert_eq!(event.canonical(), event);
                prop_assert_eq!(Event::decode(event.encode()), Ok(event));
            }
        }
    }
}
