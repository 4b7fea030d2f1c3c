//! Translation regime parameters: granule, input and output address sizes, and what they
//! imply for the shape of the tables.

use crate::{Error, Granule, Result};
use sva_addr::Va;

/// The last lookup level: the one holding page descriptors.
pub const LEAF_LEVEL: u8 = 3;

/// Output address sizes the model supports, indexed by their IPS/PS encoding.
const OA_SIZES: [u32; 6] = [32, 36, 40, 42, 44, 48];

/// The parameters a walker needs besides the root address: TCR_ELx.{TG0, T0SZ, IPS} for a
/// CPU, CD.{TG0, T0SZ, IPS} for an SMMU.
///
/// The input address size is `ia_bits` (T0SZ = 64 - `ia_bits`), from 25 to 48 bits; the
/// output address size is one of the IPS sizes 32, 36, 40, 42, 44 or 48 bits. 52-bit
/// addresses (FEAT_LPA, FEAT_LPA2) are not modelled.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct TableConfig {
    granule: Granule,
    ia_bits: u32,
    oa_bits: u32,
}

impl TableConfig {
    /// Smallest supported input address size (T0SZ = 39).
    pub const MIN_IA_BITS: u32 = 25;
    /// Largest supported input address size (T0SZ = 16).
    pub const MAX_IA_BITS: u32 = 48;

    /// A configuration of `granule` with `ia_bits` (25..=48) input and `oa_bits` (32, 36, 40,
    /// 42, 44 or 48) output address bits.
    pub fn new(granule: Granule, ia_bits: u32, oa_bits: u32) -> Result<Self> {
        if !(Self::MIN_IA_BITS..=Self::MAX_IA_BITS).contains(&ia_bits) {
            return Err(Error::BadConfig {
                reason: format!(
                    "input address size {ia_bits} bits is outside {}..={}",
                    Self::MIN_IA_BITS,
                    Self::MAX_IA_BITS
                ),
            });
        }
        if !OA_SIZES.contains(&oa_bits) {
            return Err(Error::BadConfig {
                reason: format!(
                    "output address size {oa_bits} bits is not one of {OA_SIZES:?} (no 52-bit support)"
                ),
            });
        }
        Ok(Self {
            granule,
            ia_bits,
            oa_bits,
        })
    }

    /// Decodes the register fields TG0, T0SZ and IPS (as found in TCR_EL1 or an SMMU CD).
    pub fn from_fields(tg0: u8, t0sz: u8, ips: u8) -> Result<Self> {
        let granule = Granule::from_tg0(tg0).ok_or_else(|| Error::BadConfig {
            reason: format!("TG0 {tg0:#04b} is reserved"),
        })?;
        let oa_bits = *OA_SIZES
            .get(usize::from(ips))
            .ok_or_else(|| Error::BadConfig {
                reason: format!("IPS {ips:#05b} is reserved or needs 52-bit support"),
            })?;
        let ia_bits = 64u32.saturating_sub(u32::from(t0sz));
        Self::new(granule, ia_bits, oa_bits)
    }

    /// The translation granule.
    #[must_use]
    pub fn granule(&self) -> Granule {
        self.granule
    }

    /// Input address size in bits.
    #[must_use]
    pub fn ia_bits(&self) -> u32 {
        self.ia_bits
    }

    /// Output address size in bits.
    #[must_use]
    pub fn oa_bits(&self) -> u32 {
        self.oa_bits
    }

    /// Size of the input address space in bytes, `2^ia_bits`.
    #[must_use]
    pub fn ia_size(&self) -> u64 {
        1 << self.ia_bits
    }

    /// Size of the output address space in bytes, `2^oa_bits`.
    #[must_use]
    pub fn oa_size(&self) -> u64 {
        1 << self.oa_bits
    }

    /// The T0SZ field: `64 - ia_bits`.
    #[must_use]
    pub fn t0sz(&self) -> u8 {
        // ia_bits is 25..=48, so this is 16..=39.
        (64 - self.ia_bits) as u8
    }

    /// The IPS (CD.IPS, TCR_EL1.IPS) encoding of the output size: 0b000 = 32 bits, 0b001 =
    /// 36, 0b010 = 40, 0b011 = 42, 0b100 = 44, 0b101 = 48.
    #[must_use]
    pub fn ips(&self) -> u8 {
        OA_SIZES
            .iter()
            .position(|&b| b == self.oa_bits)
            .map_or(0, |i| i as u8)
    }

    /// The initial lookup level, 0..=3: the level whose table resolves the top input
    /// address bits (pseudocode `AArch64.S1StartLevel`: 3 - (ia_bits - 1 - shift) / stride).
    #[must_use]
    pub fn start_level(&self) -> u8 {
        let g = self.granule;
        let levels_below = (self.ia_bits - 1 - g.shift()) / g.bits_per_level();
        // ia_bits <= 48 keeps levels_below <= 3 for every granule.
        LEAF_LEVEL - levels_below as u8
    }

    /// log2 of [`level_size`](Self::level_size): the lowest input address bit that `level`
    /// indexes. Levels above 3 are treated as 3.
    #[must_use]
    pub fn level_shift(&self, level: u8) -> u32 {
        let g = self.granule;
        g.shift() + u32::from(LEAF_LEVEL - level.min(LEAF_LEVEL)) * g.bits_per_level()
    }

    /// Bytes of input address space one descriptor at `level` maps (a page at level 3, a
    /// block or a whole next-level table above). 0 for a level above 3.
    #[must_use]
    pub fn level_size(&self, level: u8) -> u64 {
        if level > LEAF_LEVEL {
            return 0;
        }
        1 << self.level_shift(level)
    }

    /// Number of descriptors in a table at `level`: the root table (at the start level) may
    /// be shorter than a full granule's worth; 0 for levels this configuration never looks up.
    #[must_use]
    pub fn entries(&self, level: u8) -> u64 {
        let start = self.start_level();
        if level < start || level > LEAF_LEVEL {
            0
        } else if level == start {
            1 << (self.ia_bits - self.level_shift(level))
        } else {
            self.granule.entries_per_table()
        }
    }

    /// Index of the descriptor for `va` in a table at `level`.
    #[must_use]
    pub fn index(&self, level: u8, va: Va) -> u64 {
        let entries = self.entries(level).max(1);
        (va.raw() >> self.level_shift(level)) & (entries - 1)
    }

    /// Whether a leaf may sit at `level`: 4K granule: blocks at levels 1 and 2; 16K and 64K:
    /// blocks at level 2 only (their level-1 blocks need 52-bit output addresses, not
    /// supported); level 3 holds pages, so it is `true` for every granule.
    #[must_use]
    pub fn block_allowed(&self, level: u8) -> bool {
        matches!((self.granule, level), (_, 2 | 3) | (Granule::Size4K, 1))
    }

    /// Page size: the granule size.
    #[must_use]
    pub fn page_size(&self) -> u64 {
        self.granule.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(g: Granule, ia: u32) -> TableConfig {
        TableConfig::new(g, ia, 48).unwrap()
    }

    /// Initial lookup level for every granule and input size, from the Arm ARM tables of
    /// T0SZ ranges (4K: T0SZ 16-24 level 0, 25-33 level 1, 34-39 level 2; 16K: 16 level 0,
    /// 17-27 level 1, 28-38 level 2, 39 level 3; 64K: 16-21 level 1, 22-34 level 2, 35-39
    /// level 3).
    #[test]
    fn start_levels_for_every_granule_and_input_size() {
        for ia in 25..=48u32 {
            let t0sz = 64 - ia;
            let k4 = match t0sz {
                16..=24 => 0,
                25..=33 => 1,
                _ => 2,
            };
            let k16 = match t0sz {
                16 => 0,
                17..=27 => 1,
                28..=38 => 2,
                _ => 3,
            };
            let k64 = match t0sz {
                16..=21 => 1,
                22..=34 => 2,
                _ => 3,
            };
            assert_eq!(cfg(Granule::Size4K, ia).start_level(), k4, "4K ia {ia}");
            assert_eq!(cfg(Granule::Size16K, ia).start_level(), k16, "16K ia {ia}");
            assert_eq!(cfg(Granule::Size64K, ia).start_level(), k64, "64K ia {ia}");
            for g in Granule::ALL {
                let c = cfg(g, ia);
                assert_eq!(u32::from(c.t0sz()), t0sz);
                // The root table resolves exactly the bits left over, at most a full table.
                let root = c.entries(c.start_level());
                assert!(root >= 2 && root <= g.entries_per_table(), "{g:?} ia {ia}");
                assert_eq!(root * c.level_size(c.start_level()), 1 << ia);
            }
        }
    }

    #[test]
    fn ips_encodings() {
        for (ips, oa) in [(0, 32), (1, 36), (2, 40), (3, 42), (4, 44), (5, 48)] {
            let c = TableConfig::new(Granule::Size4K, 48, oa).unwrap();
            assert_eq!(c.ips(), ips);
            assert_eq!(c.oa_size(), 1 << oa);
            assert_eq!(TableConfig::from_fields(0, 16, ips).unwrap(), c);
        }
    }

    #[test]
    fn level_sizes() {
        let k4 = cfg(Granule::Size4K, 48);
        assert_eq!(
            [0, 1, 2, 3].map(|l| k4.level_size(l)),
            [512 << 30, 1 << 30, 2 << 20, 4 << 10]
        );
        let k16 = cfg(Granule::Size16K, 48);
        assert_eq!(
            [0, 1, 2, 3].map(|l| k16.level_size(l)),
            [128 << 40, 64 << 30, 32 << 20, 16 << 10]
        );
        let k64 = cfg(Granule::Size64K, 48);
        assert_eq!(
            [1, 2, 3].map(|l| k64.level_size(l)),
            [4 << 40, 512 << 20, 64 << 10]
        );
        assert_eq!(k64.level_size(4), 0);
        for c in [k4, k16, k64] {
            assert_eq!(c.page_size(), c.granule().size());
            assert_eq!(c.level_size(3), c.page_size());
        }
    }

    #[test]
    fn block_levels() {
        let allowed = |g| [0, 1, 2, 3].map(|l| cfg(g, 48).block_allowed(l));
        assert_eq!(allowed(Granule::Size4K), [false, true, true, true]);
        assert_eq!(allowed(Granule::Size16K), [false, false, true, true]);
        assert_eq!(allowed(Granule::Size64K), [false, false, true, true]);
    }

    #[test]
    fn entries_and_indices() {
        let c = cfg(Granule::Size4K, 39);
        assert_eq!(c.entries(0), 0);
        assert_eq!(c.entries(1), 512);
        assert_eq!(c.entries(3), 512);
        let va = Va((5 << 30) | (7 << 21) | (9 << 12) | 0x123);
        assert_eq!([1, 2, 3].map(|l| c.index(l, va)), [5, 7, 9]);
        let c = cfg(Granule::Size64K, 48);
        assert_eq!(c.entries(1), 64);
        assert_eq!(c.index(1, Va(0xffff_ffff_ffff)), 63);
        assert_eq!(c.index(3, Va(0xffff_ffff_ffff)), 8191);
    }

    #[test]
    fn bad_configs_are_errors() {
        for (ia, oa) in [
            (24, 48),
            (49, 48),
            (0, 48),
            (39, 52),
            (39, 31),
            (39, 0),
            (39, 41),
        ] {
            assert!(
                matches!(
                    TableConfig::new(Granule::Size4K, ia, oa),
                    Err(Error::BadConfig { .. })
                ),
                "ia {ia} oa {oa}"
            );
        }
        assert!(matches!(
            TableConfig::from_fields(0b11, 25, 0),
            Err(Error::BadConfig { .. })
        ));
        assert!(matches!(
            TableConfig::from_fields(0, 25, 0b110),
            Err(Error::BadConfig { .. })
        ));
        assert!(matches!(
            TableConfig::from_fields(0, 100, 0),
            Err(Error::BadConfig { .. })
        ));
        assert!(matches!(
            TableConfig::from_fields(0, 15, 0),
            Err(Error::BadConfig { .. })
        ));
    }
}
