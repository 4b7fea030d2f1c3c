//! The translation granule: page size and table size of a VMSAv8-64 regime.

/// Translation granule size (TCR_ELx.TG0, SMMU CD.TG0).
///
/// The granule is the page size, the size of every translation table, and sets how many
/// input-address bits each lookup level resolves (granule shift minus 3, since a descriptor is
/// 8 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Granule {
    /// 4 KiB pages and tables: 9 bits per level, blocks of 1 GiB (level 1) and 2 MiB (level 2).
    Size4K,
    /// 16 KiB pages and tables: 11 bits per level, blocks of 32 MiB (level 2).
    Size16K,
    /// 64 KiB pages and tables: 13 bits per level, blocks of 512 MiB (level 2).
    Size64K,
}

impl Granule {
    /// Every granule, smallest first.
    pub const ALL: [Granule; 3] = [Granule::Size4K, Granule::Size16K, Granule::Size64K];

    /// Page (and table) size in bytes: 4096, 16384 or 65536.
    #[must_use]
    pub const fn size(self) -> u64 {
        1 << self.shift()
    }

    /// log2 of [`size`](Self::size): 12, 14 or 16.
    #[must_use]
    pub const fn shift(self) -> u32 {
        match self {
            Granule::Size4K => 12,
            Granule::Size16K => 14,
            Granule::Size64K => 16,
        }
    }

    /// Input-address bits resolved per lookup level: 9, 11 or 13.
    #[must_use]
    pub const fn bits_per_level(self) -> u32 {
        self.shift() - 3
    }

    /// Number of descriptors in a full table: 512, 2048 or 8192.
    #[must_use]
    pub const fn entries_per_table(self) -> u64 {
        1 << self.bits_per_level()
    }

    /// TCR_ELx.TG0 / SMMU CD.TG0 encoding: 4K = 0b00, 64K = 0b01, 16K = 0b10.
    #[must_use]
    pub const fn tg0(self) -> u8 {
        match self {
            Granule::Size4K => 0b00,
            Granule::Size64K => 0b01,
            Granule::Size16K => 0b10,
        }
    }

    /// Decodes a TG0 field; `None` for the reserved value 0b11 (and anything wider than 2 bits).
    #[must_use]
    pub const fn from_tg0(tg0: u8) -> Option<Self> {
        match tg0 {
            0b00 => Some(Granule::Size4K),
            0b01 => Some(Granule::Size64K),
            0b10 => Some(Granule::Size16K),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_shifts_and_bits_per_level() {
        let expect = [
            (Granule::Size4K, 4096, 12, 9, 512),
            (Granule::Size16K, 16384, 14, 11, 2048),
            (Granule::Size64K, 65536, 16, 13, 8192),
        ];
        for (g, size, shift, bpl, entries) in expect {
            assert_eq!(g.size(), size);
            assert_eq!(g.shift(), shift);
            assert_eq!(g.bits_per_level(), bpl);
            assert_eq!(g.entries_per_table(), entries);
            // A full table is exactly one granule.
            assert_eq!(g.entries_per_table() * 8, g.size());
        }
    }

    #[test]
    fn tg0_encoding_round_trips() {
        assert_eq!(Granule::Size4K.tg0(), 0b00);
        assert_eq!(Granule::Size64K.tg0(), 0b01);
        assert_eq!(Granule::Size16K.tg0(), 0b10);
        for g in Granule::ALL {
            assert_eq!(Granule::from_tg0(g.tg0()), Some(g));
        }
        assert_eq!(Granule::from_tg0(0b11), None);
        assert_eq!(Granule::from_tg0(0xff), None);
    }
}
