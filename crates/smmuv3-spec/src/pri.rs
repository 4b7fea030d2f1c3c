//! PRI queue entries and page request responses (§8 Page request queue, §8.1 PRI queue
//! overflow, §4.5.2 CMD_PRI_RESP).
//!
//! A PCIe endpoint that misses in its ATC sends Page Requests, grouped by a PRG index; the SMMU
//! copies each into the PRI queue as a 16-byte entry. Software answers a whole group with one
//! CMD_PRI_RESP after the entry marked Last.

use bitfield_struct::bitfield;
use sva_addr::{Pasid, StreamId, Va};

use crate::encoding::{bits, spec_enum, truncate};
use crate::error::PageRequestError;

/// §8 PRI queue entry, word 0: requester and requested permissions.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct PriqWord0 {
    /// [31:0] StreamID: the requester (StreamID[15:0] is the PCIe Requester ID).
    #[bits(32, from = StreamId, into = StreamId::raw)]
    pub stream_id: StreamId,
    /// [51:32] SubstreamID: the PASID, UNKNOWN when SSV == 0.
    #[bits(20)]
    pub substream_id: u32,
    /// [57:52] Reserved, RES0.
    #[bits(6)]
    __: u8,
    /// [58] Priv: privileged access requested (0 when SSV == 0).
    pub privileged: bool,
    /// [59] Exe: execute permission requested (0 when SSV == 0).
    pub exec: bool,
    /// [60] Read: read permission requested.
    pub read: bool,
    /// [61] Write: write permission requested.
    pub write: bool,
    /// [62] Last: last request of its page request group.
    pub last: bool,
    /// [63] SSV: the request carried a PASID.
    pub ssv: bool,
}

/// §8 PRI queue entry, word 1: group index and page address.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct PriqWord1 {
    /// [8:0] PRGIndex: page request group index.
    #[bits(9)]
    pub prg_index: u16,
    /// [11:9] Reserved, RES0.
    #[bits(3)]
    __: u8,
    /// [63:12] Page address: bits `[63:12]` of the requested untranslated address.
    #[bits(52)]
    pub page_addr: u64,
}

/// A decoded PRI queue entry (§8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageRequest {
    /// The requesting function.
    pub stream_id: StreamId,
    /// The PASID, if the request carried one (SSV).
    pub substream_id: Option<Pasid>,
    /// Page-aligned requested address (bits `[11:0]` are not transported).
    pub addr: Va,
    /// Page request group index.
    pub prg_index: u16,
    /// Last request of the group: answer the group now.
    pub last: bool,
    /// Read access requested.
    pub read: bool,
    /// Write access requested.
    pub write: bool,
    /// Execute access requested.
    pub exec: bool,
    /// Privileged access requested.
    pub privileged: bool,
}

impl PageRequest {
    /// Reserved bits of the two words.
    pub const RES0: [u64; 2] = [bits(57, 52), bits(11, 9)];

    /// Encodes the entry. The PASID is truncated to 20 bits, the address to its page and
    /// the group index to 9 bits.
    #[must_use]
    pub fn encode(&self) -> [u64; 2] {
        let w0 = PriqWord0::new()
            .with_stream_id(self.stream_id)
            .with_substream_id(
                self.substream_id
                    .map_or(0, |p| truncate(u64::from(p.0), 20) as u32),
            )
            .with_ssv(self.substream_id.is_some())
            .with_privileged(self.privileged)
            .with_exec(self.exec)
            .with_read(self.read)
            .with_write(self.write)
            .with_last(self.last);
        let w1 = PriqWord1::new()
            .with_prg_index(self.prg_index & 0x1FF)
            .with_page_addr(self.addr.0 >> 12);
        [w0.into_bits(), w1.into_bits()]
    }

    /// Decodes an entry; the SubstreamID field is ignored when SSV == 0.
    pub fn decode(words: [u64; 2]) -> Result<Self, PageRequestError> {
        for (word, (&w, &m)) in words.iter().zip(&Self::RES0).enumerate() {
            if w & m != 0 {
                return Err(PageRequestError::ReservedBits { word, bits: w & m });
            }
        }
        let w0 = PriqWord0::from_bits(words[0]);
        let w1 = PriqWord1::from_bits(words[1]);
        Ok(Self {
            stream_id: w0.stream_id(),
            substream_id: w0.ssv().then_some(Pasid(w0.substream_id())),
            addr: Va(w1.page_addr() << 12),
            prg_index: w1.prg_index(),
            last: w0.last(),
            read: w0.read(),
            write: w0.write(),
            exec: w0.exec(),
            privileged: w0.privileged(),
        })
    }

    /// Whether this is a PCIe Stop Marker (a PASID, Last set, no read or write): it closes
    /// the PASID's outstanding requests and needs no response.
    #[must_use]
    pub const fn is_stop_marker(&self) -> bool {
        self.substream_id.is_some() && self.last && !self.read && !self.write
    }
}

spec_enum! {
    /// CMD_PRI_RESP.Resp (§4.5.2): the answer to a page request group. `0b11` is ILLEGAL.
    ///
    /// The numbering is the SMMU's, not PCIe's: [`PriResponse::pcie_code`] gives the
    /// Response Code of the PRG Response message the SMMU sends.
    pub enum PriResponse: 2 {
        /// `0b00` ResponseFailure: permanent, non-paging error; the function disables PRI.
        Failure = 0,
        /// `0b01` InvalidRequest: a page of the group could not be made available.
        Invalid = 1,
        /// `0b10` Success: all pages of the group were made available.
        Success = 2,
    }
}

impl PriResponse {
    /// The PCIe PRG Response Code: Success `0b0000`, Invalid Request `0b0001`, Response
    /// Failure `0b1111` (also used for the reserved encoding).
    #[must_use]
    pub const fn pcie_code(self) -> u8 {
        match self {
            Self::Success => 0b0000,
            Self::Invalid => 0b0001,
            Self::Failure | Self::Reserved(_) => 0b1111,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entry_layout() {
        let req = PageRequest {
            stream_id: StreamId(0x0100),
            substream_id: Some(Pasid(0x12345)),
            addr: Va(0x7FFF_DEAD_B000),
            prg_index: 0x1A5,
            last: true,
            read: true,
            write: true,
            exec: false,
            privileged: false,
        };
        // SSV(63) | Last(62) | Write(61) | Read(60) | SubstreamID 0x12345 << 32 | StreamID
        let words = [0xF001_2345_0000_0100, 0x7FFF_DEAD_B1A5];
        assert_eq!(req.encode(), words);
        assert_eq!(PageRequest::decode(words), Ok(req));
    }

    #[test]
    fn no_pasid_and_permission_bits() {
        let words = [(1 << 59) | (1 << 58) | 0x0002_3456_0000_0007, 0x1000];
        let req = PageRequest::decode(words).expect("valid entry");
        assert_eq!(req.substream_id, None, "SubstreamID ignored without SSV");
        assert!(req.exec && req.privileged && !req.last);
        assert_eq!(req.stream_id, StreamId(7));
        assert_eq!(req.addr, Va(0x1000));
    }

    #[test]
    fn reserved_bits_are_rejected() {
        assert_eq!(
            PageRequest::decode([1 << 55, 0]),
            Err(PageRequestError::ReservedBits {
                word: 0,
                bits: 1 << 55
            })
        );
        assert_eq!(
            PageRequest::decode([0, 1 << 10]),
            Err(PageRequestError::ReservedBits {
                word: 1,
                bits: 1 << 10
            })
        );
    }

    #[test]
    fn stop_marker() {
        let words = [(1 << 63) | (1 << 62) | (5 << 32), 0];
        let marker = PageRequest::decode(words).expect("valid entry");
        assert!(marker.is_stop_marker());
        let no_pasid = PageRequest::decode([1 << 62, 0]).expect("valid entry");
        assert!(
            !no_pasid.is_stop_marker(),
            "LWR = 0b100 without PASID is a page request"
        );
    }

    #[test]
    fn response_codes() {
        assert_eq!(PriResponse::Failure.into_bits(), 0);
        assert_eq!(PriResponse::Invalid.into_bits(), 1);
        assert_eq!(PriResponse::Success.into_bits(), 2);
        assert_eq!(PriResponse::from_bits(3), PriResponse::Reserved(3));
        assert_eq!(PriResponse::Success.pcie_code(), 0);
        assert_eq!(PriResponse::Invalid.pcie_code(), 1);
        assert_eq!(PriResponse::Failure.pcie_code(), 0xF);
    }

    fn page_request() -> impl Strategy<Value = PageRequest> {
        (
            any::<u32>(),
            proptest::option::of(0u32..(1 << 20)),
            any::<u64>(),
            0u16..512,
            any::<[bool; 5]>(),
        )
            .prop_map(
                |(sid, ssid, addr, prg_index, [last, read, write, exec, privileged])| PageRequest {
                    stream_id: StreamId(sid),
                    substream_id: ssid.map(Pasid),
                    addr: Va(addr & !0xFFF),
                    prg_index,
                    last,
                    read,
                    write,
                    exec,
                    privileged,
                },
            )
    }

    proptest! {
        #[test]
        fn round_trip(req in page_request()) {
            prop_assert_eq!(PageRequest::decode(req.encode()), Ok(req));
        }

        #[test]
        fn decode_never_panics(w0: u64, w1: u64) {
            if let Ok(req) = PageRequest::decode([w0, w1]) {
                let [e0, e1] = req.encode();
                prop_assert_eq!(e1, w1);
                if req.substream_id.is_some() {
                    prop_assert_eq!(e0, w0);
                }
            }
        }
    }
}
