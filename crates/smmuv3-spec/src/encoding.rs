//! Field encodings shared by several structures: memory attributes, address sizes and
//! translation granules, plus the [`ReservedBits`] report used by the reserved-bit checks.
//!
//! Every enum here converts to and from the raw field with `from_bits`/`into_bits`, so it can
//! be a field type of a `#[bitfield]` word. Decoding never fails: an encoding the architecture
//! reserves is kept as a `Reserved(raw)` variant, and it is the consumer (the model) that
//! decides whether that makes a structure ILLEGAL.

/// Defines a field encoding enum with `from_bits`/`into_bits` conversions.
///
/// The plain form adds a `Reserved(u8)` variant for encodings the architecture does not define.
/// The `exhaustive` form is for fields whose every encoding is defined; its `from_bits` masks the
/// raw value to the field width, so the fallback arm is never taken.
macro_rules! spec_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $bits:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// An encoding the architecture reserves; the raw field value is kept.
            Reserved(u8),
        }

        impl $name {
            /// Width of the field in bits.
            pub const BITS: u32 = $bits;
            const MASK: u8 = ((1u16 << $bits) - 1) as u8;

            /// Decodes a raw field value; bits above the field width are ignored.
            #[must_use]
            pub const fn from_bits(raw: u8) -> Self {
                match raw & Self::MASK {
                    $( $value => Self::$variant, )+
                    other => Self::Reserved(other),
                }
            }

            /// The raw field value.
            #[must_use]
            pub const fn into_bits(self) -> u8 {
                match self {
                    $( Self::$variant => $value, )+
                    Self::Reserved(raw) => raw & Self::MASK,
                }
            }

            /// Whether this is an encoding the architecture reserves.
            #[must_use]
            pub const fn is_reserved(self) -> bool {
                matches!(self, Self::Reserved(_))
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis exhaustive enum $name:ident: $bits:literal {
            $(#[$fmeta:meta])* $first:ident = $fvalue:literal,
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $(#[$fmeta])* $first,
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            /// Width of the field in bits.
            pub const BITS: u32 = $bits;
            const MASK: u8 = ((1u16 << $bits) - 1) as u8;

            /// Decodes a raw field value; bits above the field width are ignored.
            #[must_use]
            pub const fn from_bits(raw: u8) -> Self {
                match raw & Self::MASK {
                    $( $value => Self::$variant, )*
                    _ => Self::$first,
                }
            }

            /// The raw field value.
            #[must_use]
            pub const fn into_bits(self) -> u8 {
                match self {
                    Self::$first => $fvalue,
                    $( Self::$variant => $value, )*
                }
            }
        }
    };
}

pub(crate) use spec_enum;

/// Defines the typed word accessors of a multi-word structure (a newtype over `[u64; N]`):
/// for each `index: getter, setter -> Word;` a getter that decodes word `index` as the
/// `#[bitfield]` type `Word`, with the doc comment given, and a `setter` that replaces it.
macro_rules! word_accessors {
    ($( $(#[$doc:meta])* $index:literal: $get:ident, $set:ident -> $word:ty; )+) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub const fn $get(&self) -> $word {
                <$word>::from_bits(self.0[$index])
            }
        )+

        $(
            #[doc = concat!("Replaces word ", stringify!($index), ".")]
            #[must_use]
            pub const fn $set(mut self, word: $word) -> Self {
                self.0[$index] = word.into_bits();
                self
            }
        )+
    };
}

pub(crate) use word_accessors;

/// Mask of bits `hi..=lo` of a 64-bit word.
pub(crate) const fn bits(hi: u32, lo: u32) -> u64 {
    (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
}

/// Keeps the low `width` bits of `value` (`width` < 64).
pub(crate) const fn truncate(value: u64, width: u32) -> u64 {
    value & ((1u64 << width) - 1)
}

/// Non-zero bits found where a structure requires RES0.
///
/// Returned by the `reserved_bits_set` checks of multi-word structures; `word` is the index of
/// the first offending 64-bit word and `bits` the offending bits of that word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservedBits {
    /// Index of the 64-bit word (0 is the lowest-addressed word).
    pub word: usize,
    /// The bits set in that word that must be zero.
    pub bits: u64,
}

/// Returns the first word of `words` with a bit set inside `res0`.
pub(crate) fn first_reserved(words: &[u64], res0: &[u64]) -> Option<ReservedBits> {
    words
        .iter()
        .zip(res0)
        .enumerate()
        .find_map(|(word, (&w, &m))| (w & m != 0).then_some(ReservedBits { word, bits: w & m }))
}

spec_enum! {
    /// Shareability of a memory access: STE.S1CSH and S2SH0, CD.SH0/SH1, SMMU_CR1.*_SH,
    /// SMMU_*_IRQ_CFG2.SH and CMD_SYNC.MSH. `0b01` is reserved and behaves as Non-shareable.
    pub enum Shareability: 2 {
        /// `0b00` Non-shareable.
        NonShareable = 0,
        /// `0b10` Outer Shareable.
        OuterShareable = 2,
        /// `0b11` Inner Shareable.
        InnerShareable = 3,
    }
}

spec_enum! {
    /// Shareability override of STE.SHCFG (§5.2) and SMMU_GBPA.SHCFG (§6.3.14).
    pub exhaustive enum ShareCfg: 2 {
        /// `0b00` Non-shareable.
        NonShareable = 0,
        /// `0b01` Use the incoming Shareability attribute.
        Incoming = 1,
        /// `0b10` Outer Shareable.
        OuterShareable = 2,
        /// `0b11` Inner Shareable.
        InnerShareable = 3,
    }
}

spec_enum! {
    /// Cacheability of a translation-table or structure walk: CD.IR0/OR0/IR1/OR1,
    /// STE.S1CIR/S1COR and STE.S2IR0/S2OR0 (§5.2, §5.4).
    pub exhaustive enum Cacheability: 2 {
        /// `0b00` Normal Non-cacheable.
        NonCacheable = 0,
        /// `0b01` Write-Back cacheable, Read-Allocate (and Write-Allocate for table walks).
        WriteBackAllocate = 1,
        /// `0b10` Write-Through cacheable, Read-Allocate.
        WriteThrough = 2,
        /// `0b11` Write-Back cacheable, no Write-Allocate (no Read-Allocate for CD fetches).
        WriteBackNoAllocate = 3,
    }
}

spec_enum! {
    /// Cacheability of SMMU_CR1.{QUEUE,TABLE}_{IC,OC} (§6.3.11); these fields do not follow the
    /// walk encoding of [`Cacheability`]. `0b11` is reserved and behaves as Non-cacheable.
    pub enum Cr1Cacheability: 2 {
        /// `0b00` Non-cacheable.
        NonCacheable = 0,
        /// `0b01` Write-Back cacheable.
        WriteBack = 1,
        /// `0b10` Write-Through cacheable.
        WriteThrough = 2,
    }
}

spec_enum! {
    /// A physical or intermediate physical address size: SMMU_IDR5.OAS (§6.3.6), CD.IPS and
    /// STE.S2PS. Every encoding is defined; `0b110` (52 bits) needs SMMUv3.1 and `0b111`
    /// (56 bits) SMMUv3.4.
    pub exhaustive enum AddressSize: 3 {
        /// `0b000` 32 bits (4 GiB).
        Bits32 = 0,
        /// `0b001` 36 bits (64 GiB).
        Bits36 = 1,
        /// `0b010` 40 bits (1 TiB).
        Bits40 = 2,
        /// `0b011` 42 bits (4 TiB).
        Bits42 = 3,
        /// `0b100` 44 bits (16 TiB).
        Bits44 = 4,
        /// `0b101` 48 bits (256 TiB).
        Bits48 = 5,
        /// `0b110` 52 bits (4 PiB).
        Bits52 = 6,
        /// `0b111` 56 bits (reserved before SMMUv3.4).
        Bits56 = 7,
    }
}

impl AddressSize {
    /// The size in bits.
    #[must_use]
    pub const fn bits(self) -> u32 {
        match self {
            Self::Bits32 => 32,
            Self::Bits36 => 36,
            Self::Bits40 => 40,
            Self::Bits42 => 42,
            Self::Bits44 => 44,
            Self::Bits48 => 48,
            Self::Bits52 => 52,
            Self::Bits56 => 56,
        }
    }

    /// The encoding for an address size given in bits, if there is one.
    #[must_use]
    pub const fn from_bit_count(bits: u32) -> Option<Self> {
        Some(match bits {
            32 => Self::Bits32,
            36 => Self::Bits36,
            40 => Self::Bits40,
            42 => Self::Bits42,
            44 => Self::Bits44,
            48 => Self::Bits48,
            52 => Self::Bits52,
            56 => Self::Bits56,
            _ => return None,
        })
    }

    /// The smaller of two sizes (the effective IPS/S2PS is capped by the OAS).
    #[must_use]
    pub const fn min(self, other: Self) -> Self {
        if self.into_bits() <= other.into_bits() {
            self
        } else {
            other
        }
    }
}

/// A translation granule size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granule {
    /// 4 KiB pages.
    Size4K,
    /// 16 KiB pages.
    Size16K,
    /// 64 KiB pages.
    Size64K,
}

impl Granule {
    /// log2 of the granule size in bytes.
    #[must_use]
    pub const fn shift(self) -> u32 {
        match self {
            Self::Size4K => 12,
            Self::Size16K => 14,
            Self::Size64K => 16,
        }
    }

    /// The granule size in bytes.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }
}

/// Defines a translation granule encoding with [`spec_enum!`] (variants `Size4K`, `Size16K`
/// and `Size64K`) and its conversions to and from [`Granule`]. TG0 and TG1 encode the
/// granules with different values, so each names its own.
macro_rules! granule_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $bits:literal { $($body:tt)* }
    ) => {
        spec_enum! {
            $(#[$meta])*
            $vis enum $name: $bits { $($body)* }
        }

        impl $name {
            /// The granule, or `None` for the reserved encoding.
            #[must_use]
            pub const fn granule(self) -> Option<Granule> {
                match self {
                    Self::Size4K => Some(Granule::Size4K),
                    Self::Size16K => Some(Granule::Size16K),
                    Self::Size64K => Some(Granule::Size64K),
                    Self::Reserved(_) => None,
                }
            }

            /// The encoding of a granule.
            #[must_use]
            pub const fn from_granule(granule: Granule) -> Self {
                match granule {
                    Granule::Size4K => Self::Size4K,
                    Granule::Size16K => Self::Size16K,
                    Granule::Size64K => Self::Size64K,
                }
            }
        }
    };
}

granule_enum! {
    /// The granule encoding of CD.TG0 and STE.S2TG (same as TCR_ELx.TG0).
    pub enum Tg0: 2 {
        /// `0b00` 4 KiB.
        Size4K = 0,
        /// `0b01` 64 KiB.
        Size64K = 1,
        /// `0b10` 16 KiB.
        Size16K = 2,
    }
}

granule_enum! {
    /// The granule encoding of CD.TG1 (same as TCR_ELx.TG1, which differs from TG0).
    pub enum Tg1: 2 {
        /// `0b01` 16 KiB.
        Size16K = 1,
        /// `0b10` 4 KiB.
        Size4K = 2,
        /// `0b11` 64 KiB.
        Size64K = 3,
    }
}

spec_enum! {
    /// Privilege override of STE.PRIVCFG and SMMU_GBPA.PRIVCFG. `0b01` behaves as `Incoming`.
    pub enum PrivCfg: 2 {
        /// `0b00` Use the incoming PRIV attribute.
        Incoming = 0,
        /// `0b10` Unprivileged.
        Unprivileged = 2,
        /// `0b11` Privileged.
        Privileged = 3,
    }
}

spec_enum! {
    /// Instruction/data override of STE.INSTCFG and SMMU_GBPA.INSTCFG (reads only).
    /// `0b01` behaves as `Incoming`.
    pub enum InstCfg: 2 {
        /// `0b00` Use the incoming INST attribute.
        Incoming = 0,
        /// `0b10` Data.
        Data = 2,
        /// `0b11` Instruction.
        Instruction = 3,
    }
}

spec_enum! {
    /// Non-secure attribute override of STE.NSCFG (Secure streams only; IGNORED for a
    /// Non-secure STE). `0b01` behaves as `Incoming`.
    pub enum NsCfg: 2 {
        /// `0b00` Use the incoming NS attribute.
        Incoming = 0,
        /// `0b10` Secure.
        Secure = 2,
        /// `0b11` Non-secure.
        NonSecure = 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_masks() {
        assert_eq!(bits(63, 0), u64::MAX);
        assert_eq!(bits(0, 0), 1);
        assert_eq!(bits(51, 12), 0x000F_FFFF_FFFF_F000);
        assert_eq!(bits(63, 59), 0xF800_0000_0000_0000);
        assert_eq!(truncate(0x1_2345, 16), 0x2345);
    }

    #[test]
    fn reserved_encodings_round_trip() {
        assert_eq!(Shareability::from_bits(1), Shareability::Reserved(1));
        assert_eq!(Shareability::Reserved(1).into_bits(), 1);
        assert_eq!(Shareability::from_bits(0b111), Shareability::InnerShareable);
        assert!(Tg1::from_bits(0).is_reserved());
        assert_eq!(Tg0::from_bits(1).granule(), Some(Granule::Size64K));
        assert_eq!(Tg1::from_bits(1).granule(), Some(Granule::Size16K));
        for raw in 0..8 {
            assert_eq!(AddressSize::from_bits(raw).into_bits(), raw);
        }
    }

    #[test]
    fn granule_encodings_round_trip() {
        for g in [Granule::Size4K, Granule::Size16K, Granule::Size64K] {
            assert_eq!(Tg0::from_granule(g).granule(), Some(g));
            assert_eq!(Tg1::from_granule(g).granule(), Some(g));
        }
        assert_eq!(Tg0::from_granule(Granule::Size16K).into_bits(), 0b10);
        assert_eq!(Tg1::from_granule(Granule::Size16K).into_bits(), 0b01);
    }

    #[test]
    fn address_sizes() {
        assert_eq!(AddressSize::from_bits(5).bits(), 48);
        assert_eq!(AddressSize::from_bit_count(52), Some(AddressSize::Bits52));
        assert_eq!(AddressSize::from_bit_count(47), None);
        assert_eq!(
            AddressSize::Bits52.min(AddressSize::Bits44),
            AddressSize::Bits44
        );
        assert_eq!(Granule::Size16K.bytes(), 16384);
    }

    #[test]
    fn first_reserved_word() {
        let words = [0u64, 0b100, 0b1];
        let res0 = [u64::MAX, 0b011, 0b1];
        assert_eq!(
            first_reserved(&words, &res0),
            Some(ReservedBits { word: 2, bits: 1 })
        );
        assert_eq!(first_reserved(&words, &[0, 0, 0]), None);
    }
}
