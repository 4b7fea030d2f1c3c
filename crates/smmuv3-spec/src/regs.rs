//! Register offsets of the Non-secure programming interface (§6.2 Register overview).
//!
//! The SMMU occupies two 64 KiB pages. Page 0 holds the ID, control and base registers and the
//! Command queue indexes; page 1 (offset `0x1_0000`) holds the Event and PRI queue indexes, so
//! that a consumer can map them separately. On page 0 the offsets of the page-1 registers
//! (`0xA8`, `0xAC`, `0xC8`, `0xCC`) are optional aliases or RAZ/WI; [`Register::at`] only
//! knows the architectural page-1 locations.
//!
//! 64-bit registers can also be accessed as two 32-bit halves, bits `[31:0]` at the register
//! offset and bits `[63:32]` at offset + 4; [`Register::containing`] resolves such an access.
//! "RW" in the table is the access when the guarding enable is clear: several registers turn
//! read-only while the queue or the SMMU they configure is enabled (§6.3).

use core::fmt;

/// Size of one register page.
pub const PAGE_SIZE: u32 = 0x1_0000;
/// Offset of register page 1 from the SMMU base.
pub const PAGE1_BASE: u32 = PAGE_SIZE;
/// Size of the MMIO region covering pages 0 and 1.
pub const REGION_SIZE: u32 = 2 * PAGE_SIZE;

/// §6.3.1 SMMU_IDR0: feature identification.
pub const IDR0: u32 = 0x0000;
/// §6.3.2 SMMU_IDR1: table, queue and ID sizes.
pub const IDR1: u32 = 0x0004;
/// §6.3.3 SMMU_IDR2: VATOS page location.
pub const IDR2: u32 = 0x0008;
/// §6.3.4 SMMU_IDR3: optional features.
pub const IDR3: u32 = 0x000C;
/// §6.3.5 SMMU_IDR4: IMPLEMENTATION DEFINED.
pub const IDR4: u32 = 0x0010;
/// §6.3.6 SMMU_IDR5: address sizes and granules.
pub const IDR5: u32 = 0x0014;
/// §6.3.7 SMMU_IIDR: implementation identification.
pub const IIDR: u32 = 0x0018;
/// §6.3.8 SMMU_AIDR: architecture revision.
pub const AIDR: u32 = 0x001C;
/// §6.3.9 SMMU_CR0: enables.
pub const CR0: u32 = 0x0020;
/// §6.3.10 SMMU_CR0ACK: acknowledged enables.
pub const CR0ACK: u32 = 0x0024;
/// §6.3.11 SMMU_CR1: table and queue memory attributes.
pub const CR1: u32 = 0x0028;
/// §6.3.12 SMMU_CR2: global controls.
pub const CR2: u32 = 0x002C;
/// §6.3.13 SMMU_STATUSR: status.
pub const STATUSR: u32 = 0x0040;
/// §6.3.14 SMMU_GBPA: global bypass attributes.
pub const GBPA: u32 = 0x0044;
/// §6.3.15 SMMU_AGBPA: alternate (IMPLEMENTATION DEFINED) bypass attributes.
pub const AGBPA: u32 = 0x0048;
/// §6.3 SMMU_IRQ_CTRL: interrupt enables.
pub const IRQ_CTRL: u32 = 0x0050;
/// §6.3.18 SMMU_IRQ_CTRLACK: acknowledged interrupt enables.
pub const IRQ_CTRLACK: u32 = 0x0054;
/// §6.3.19 SMMU_GERROR: active global errors (toggled by the SMMU).
pub const GERROR: u32 = 0x0060;
/// §6.3.20 SMMU_GERRORN: acknowledged global errors (toggled by software).
pub const GERRORN: u32 = 0x0064;
/// §6.3.21 SMMU_GERROR_IRQ_CFG0: GERROR MSI address (64-bit).
pub const GERROR_IRQ_CFG0: u32 = 0x0068;
/// §6.3.22 SMMU_GERROR_IRQ_CFG1: GERROR MSI data.
pub const GERROR_IRQ_CFG1: u32 = 0x0070;
/// §6.3.23 SMMU_GERROR_IRQ_CFG2: GERROR MSI attributes.
pub const GERROR_IRQ_CFG2: u32 = 0x0074;
/// §6.3.24 SMMU_STRTAB_BASE: Stream table base (64-bit).
pub const STRTAB_BASE: u32 = 0x0080;
/// §6.3.25 SMMU_STRTAB_BASE_CFG: Stream table format and size.
pub const STRTAB_BASE_CFG: u32 = 0x0088;
/// §6.3.26 SMMU_CMDQ_BASE: Command queue base (64-bit).
pub const CMDQ_BASE: u32 = 0x0090;
/// §6.3.27 SMMU_CMDQ_PROD: Command queue producer index.
pub const CMDQ_PROD: u32 = 0x0098;
/// §6.3.28 SMMU_CMDQ_CONS: Command queue consumer index and error.
pub const CMDQ_CONS: u32 = 0x009C;
/// §6.3.29 SMMU_EVENTQ_BASE: Event queue base (64-bit).
pub const EVENTQ_BASE: u32 = 0x00A0;
/// §6.3.30 SMMU_EVENTQ_IRQ_CFG0: Event queue MSI address (64-bit).
pub const EVENTQ_IRQ_CFG0: u32 = 0x00B0;
/// §6.3.31 SMMU_EVENTQ_IRQ_CFG1: Event queue MSI data.
pub const EVENTQ_IRQ_CFG1: u32 = 0x00B8;
/// §6.3.32 SMMU_EVENTQ_IRQ_CFG2: Event queue MSI attributes.
pub const EVENTQ_IRQ_CFG2: u32 = 0x00BC;
/// §6.3.33 SMMU_PRIQ_BASE: PRI queue base (64-bit).
pub const PRIQ_BASE: u32 = 0x00C0;
/// §6.3.34 SMMU_PRIQ_IRQ_CFG0: PRI queue MSI address (64-bit).
pub const PRIQ_IRQ_CFG0: u32 = 0x00D0;
/// §6.3.35 SMMU_PRIQ_IRQ_CFG1: PRI queue MSI data.
pub const PRIQ_IRQ_CFG1: u32 = 0x00D8;
/// §6.3.36 SMMU_PRIQ_IRQ_CFG2: PRI queue MSI attributes.
pub const PRIQ_IRQ_CFG2: u32 = 0x00DC;
/// §6.3 SMMU_EVENTQ_PROD (page 1): Event queue producer index.
pub const EVENTQ_PROD: u32 = PAGE1_BASE + 0x00A8;
/// §6.3 SMMU_EVENTQ_CONS (page 1): Event queue consumer index.
pub const EVENTQ_CONS: u32 = PAGE1_BASE + 0x00AC;
/// §6.3 SMMU_PRIQ_PROD (page 1): PRI queue producer index.
pub const PRIQ_PROD: u32 = PAGE1_BASE + 0x00C8;
/// §6.3 SMMU_PRIQ_CONS (page 1): PRI queue consumer index.
pub const PRIQ_CONS: u32 = PAGE1_BASE + 0x00CC;

/// Width of a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Width {
    /// A 32-bit register.
    Bits32,
    /// A 64-bit register (also accessible as two 32-bit halves).
    Bits64,
}

impl Width {
    /// Size in bytes.
    #[must_use]
    pub const fn bytes(self) -> u32 {
        match self {
            Self::Bits32 => 4,
            Self::Bits64 => 8,
        }
    }
}

/// Software access to a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read-only: writes are ignored.
    ReadOnly,
    /// Read-write (possibly read-only while a guarding enable is set).
    ReadWrite,
}

macro_rules! registers {
    ($( $(#[$meta:meta])* $variant:ident = ($name:literal, $offset:ident, $width:ident, $access:ident), )+) => {
        /// A register of the Non-secure programming interface, for dispatch and dumps.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Register {
            $( $(#[$meta])* $variant, )+
        }

        impl Register {
            /// Every register, in ascending offset order.
            pub const ALL: &'static [Register] = &[$( Register::$variant, )+];

            /// The architectural name, e.g. `SMMU_CR0`.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $( Self::$variant => $name, )+
                }
            }

            /// Offset from the SMMU base (page-1 registers include [`PAGE1_BASE`]).
            #[must_use]
            pub const fn offset(self) -> u32 {
                match self {
                    $( Self::$variant => $offset, )+
                }
            }

            /// Register width.
            #[must_use]
            pub const fn width(self) -> Width {
                match self {
                    $( Self::$variant => Width::$width, )+
                }
            }

            /// Software access.
            #[must_use]
            pub const fn access(self) -> Access {
                match self {
                    $( Self::$variant => Access::$access, )+
                }
            }
        }
    };
}

registers! {
    /// SMMU_IDR0.
    Idr0 = ("SMMU_IDR0", IDR0, Bits32, ReadOnly),
    /// SMMU_IDR1.
    Idr1 = ("SMMU_IDR1", IDR1, Bits32, ReadOnly),
    /// SMMU_IDR2.
    Idr2 = ("SMMU_IDR2", IDR2, Bits32, ReadOnly),
    /// SMMU_IDR3.
    Idr3 = ("SMMU_IDR3", IDR3, Bits32, ReadOnly),
    /// SMMU_IDR4.
    Idr4 = ("SMMU_IDR4", IDR4, Bits32, ReadOnly),
    /// SMMU_IDR5.
    Idr5 = ("SMMU_IDR5", IDR5, Bits32, ReadOnly),
    /// SMMU_IIDR.
    Iidr = ("SMMU_IIDR", IIDR, Bits32, ReadOnly),
    /// SMMU_AIDR.
    Aidr = ("SMMU_AIDR", AIDR, Bits32, ReadOnly),
    /// SMMU_CR0.
    Cr0 = ("SMMU_CR0", CR0, Bits32, ReadWrite),
    /// SMMU_CR0ACK.
    Cr0Ack = ("SMMU_CR0ACK", CR0ACK, Bits32, ReadOnly),
    /// SMMU_CR1.
    Cr1 = ("SMMU_CR1", CR1, Bits32, ReadWrite),
    /// SMMU_CR2.
    Cr2 = ("SMMU_CR2", CR2, Bits32, ReadWrite),
    /// SMMU_STATUSR.
    Statusr = ("SMMU_STATUSR", STATUSR, Bits32, ReadOnly),
    /// SMMU_GBPA.
    Gbpa = ("SMMU_GBPA", GBPA, Bits32, ReadWrite),
    /// SMMU_AGBPA.
    Agbpa = ("SMMU_AGBPA", AGBPA, Bits32, ReadWrite),
    /// SMMU_IRQ_CTRL.
    IrqCtrl = ("SMMU_IRQ_CTRL", IRQ_CTRL, Bits32, ReadWrite),
    /// SMMU_IRQ_CTRLACK.
    IrqCtrlAck = ("SMMU_IRQ_CTRLACK", IRQ_CTRLACK, Bits32, ReadOnly),
    /// SMMU_GERROR.
    Gerror = ("SMMU_GERROR", GERROR, Bits32, ReadOnly),
    /// SMMU_GERRORN.
    Gerrorn = ("SMMU_GERRORN", GERRORN, Bits32, ReadWrite),
    /// SMMU_GERROR_IRQ_CFG0.
    GerrorIrqCfg0 = ("SMMU_GERROR_IRQ_CFG0", GERROR_IRQ_CFG0, Bits64, ReadWrite),
    /// SMMU_GERROR_IRQ_CFG1.
    GerrorIrqCfg1 = ("SMMU_GERROR_IRQ_CFG1", GERROR_IRQ_CFG1, Bits32, ReadWrite),
    /// SMMU_GERROR_IRQ_CFG2.
    GerrorIrqCfg2 = ("SMMU_GERROR_IRQ_CFG2", GERROR_IRQ_CFG2, Bits32, ReadWrite),
    /// SMMU_STRTAB_BASE.
    StrtabBase = ("SMMU_STRTAB_BASE", STRTAB_BASE, Bits64, ReadWrite),
    /// SMMU_STRTAB_BASE_CFG.
    StrtabBaseCfg = ("SMMU_STRTAB_BASE_CFG", STRTAB_BASE_CFG, Bits32, ReadWrite),
    /// SMMU_CMDQ_BASE.
    CmdqBase = ("SMMU_CMDQ_BASE", CMDQ_BASE, Bits64, ReadWrite),
    /// SMMU_CMDQ_PROD.
    CmdqProd = ("SMMU_CMDQ_PROD", CMDQ_PROD, Bits32, ReadWrite),
    /// SMMU_CMDQ_CONS.
    CmdqCons = ("SMMU_CMDQ_CONS", CMDQ_CONS, Bits32, ReadWrite),
    /// SMMU_EVENTQ_BASE.
    EventqBase = ("SMMU_EVENTQ_BASE", EVENTQ_BASE, Bits64, ReadWrite),
    /// SMMU_EVENTQ_IRQ_CFG0.
    EventqIrqCfg0 = ("SMMU_EVENTQ_IRQ_CFG0", EVENTQ_IRQ_CFG0, Bits64, ReadWrite),
    /// SMMU_EVENTQ_IRQ_CFG1.
    EventqIrqCfg1 = ("SMMU_EVENTQ_IRQ_CFG1", EVENTQ_IRQ_CFG1, Bits32, ReadWrite),
    /// SMMU_EVENTQ_IRQ_CFG2.
    EventqIrqCfg2 = ("SMMU_EVENTQ_IRQ_CFG2", EVENTQ_IRQ_CFG2, Bits32, ReadWrite),
    /// SMMU_PRIQ_BASE.
    PriqBase = ("SMMU_PRIQ_BASE", PRIQ_BASE, Bits64, ReadWrite),
    /// SMMU_PRIQ_IRQ_CFG0.
    PriqIrqCfg0 = ("SMMU_PRIQ_IRQ_CFG0", PRIQ_IRQ_CFG0, Bits64, ReadWrite),
    /// SMMU_PRIQ_IRQ_CFG1.
    PriqIrqCfg1 = ("SMMU_PRIQ_IRQ_CFG1", PRIQ_IRQ_CFG1, Bits32, ReadWrite),
    /// SMMU_PRIQ_IRQ_CFG2.
    PriqIrqCfg2 = ("SMMU_PRIQ_IRQ_CFG2", PRIQ_IRQ_CFG2, Bits32, ReadWrite),
    /// SMMU_EVENTQ_PROD (page 1).
    EventqProd = ("SMMU_EVENTQ_PROD", EVENTQ_PROD, Bits32, ReadWrite),
    /// SMMU_EVENTQ_CONS (page 1).
    EventqCons = ("SMMU_EVENTQ_CONS", EVENTQ_CONS, Bits32, ReadWrite),
    /// SMMU_PRIQ_PROD (page 1).
    PriqProd = ("SMMU_PRIQ_PROD", PRIQ_PROD, Bits32, ReadWrite),
    /// SMMU_PRIQ_CONS (page 1).
    PriqCons = ("SMMU_PRIQ_CONS", PRIQ_CONS, Bits32, ReadWrite),
}

impl Register {
    /// The register starting exactly at `offset`.
    #[must_use]
    pub fn at(offset: u32) -> Option<Self> {
        Self::containing(offset).and_then(|(r, inside)| (inside == 0).then_some(r))
    }

    /// The register covering byte `offset`, with the byte offset inside it (4 for the upper
    /// half of a 64-bit register). A binary search: every MMIO access decodes its offset,
    /// and [`Register::ALL`] is sorted by offset.
    #[must_use]
    pub fn containing(offset: u32) -> Option<(Self, u32)> {
        let next = Self::ALL.partition_point(|r| r.offset() <= offset);
        let r = *Self::ALL.get(next.checked_sub(1)?)?;
        let inside = offset - r.offset();
        (inside < r.width().bytes()).then_some((r, inside))
    }

    /// Whether the register lives on page 1.
    #[must_use]
    pub const fn on_page1(self) -> bool {
        self.offset() >= PAGE1_BASE
    }
}

impl fmt::Display for Register {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_the_register_overview() {
        let expected: &[(&str, u32)] = &[
            ("SMMU_IDR0", 0x0),
            ("SMMU_IDR5", 0x14),
            ("SMMU_IIDR", 0x18),
            ("SMMU_AIDR", 0x1C),
            ("SMMU_CR0", 0x20),
            ("SMMU_CR0ACK", 0x24),
            ("SMMU_CR2", 0x2C),
            ("SMMU_STATUSR", 0x40),
            ("SMMU_GBPA", 0x44),
            ("SMMU_IRQ_CTRL", 0x50),
            ("SMMU_GERROR", 0x60),
            ("SMMU_GERROR_IRQ_CFG0", 0x68),
            ("SMMU_GERROR_IRQ_CFG2", 0x74),
            ("SMMU_STRTAB_BASE", 0x80),
            ("SMMU_STRTAB_BASE_CFG", 0x88),
            ("SMMU_CMDQ_BASE", 0x90),
            ("SMMU_CMDQ_PROD", 0x98),
            ("SMMU_CMDQ_CONS", 0x9C),
            ("SMMU_EVENTQ_BASE", 0xA0),
            ("SMMU_EVENTQ_IRQ_CFG0", 0xB0),
            ("SMMU_EVENTQ_IRQ_CFG2", 0xBC),
            ("SMMU_PRIQ_BASE", 0xC0),
            ("SMMU_PRIQ_IRQ_CFG1", 0xD8),
            ("SMMU_EVENTQ_PROD", 0x100A8),
            ("SMMU_EVENTQ_CONS", 0x100AC),
            ("SMMU_PRIQ_PROD", 0x100C8),
            ("SMMU_PRIQ_CONS", 0x100CC),
        ];
        for &(name, offset) in expected {
            let reg = Register::at(offset).unwrap_or_else(|| panic!("no register at {offset:#x}"));
            assert_eq!(reg.name(), name);
        }
    }

    /// The binary search agrees with scanning the table, at every byte of the region.
    #[test]
    fn containing_agrees_with_a_scan() {
        for offset in 0..REGION_SIZE + 8 {
            let scan = Register::ALL.iter().copied().find_map(|r| {
                let inside = offset.checked_sub(r.offset())?;
                (inside < r.width().bytes()).then_some((r, inside))
            });
            assert_eq!(Register::containing(offset), scan, "offset {offset:#x}");
            let at = scan.filter(|&(_, inside)| inside == 0).map(|(r, _)| r);
            assert_eq!(Register::at(offset), at, "offset {offset:#x}");
        }
    }

    #[test]
    fn table_is_sorted_aligned_and_non_overlapping() {
        for pair in Register::ALL.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                a.offset() + a.width().bytes() <= b.offset(),
                "{a} overlaps {b}"
            );
        }
        for r in Register::ALL {
            assert_eq!(r.offset() % r.width().bytes(), 0, "{r} misaligned");
            assert!(r.offset() < REGION_SIZE);
        }
    }

    #[test]
    fn read_only_registers() {
        for r in [
            Register::Idr0,
            Register::Cr0Ack,
            Register::IrqCtrlAck,
            Register::Gerror,
        ] {
            assert_eq!(r.access(), Access::ReadOnly);
        }
        assert_eq!(Register::Gerrorn.access(), Access::ReadWrite);
        assert_eq!(Register::CmdqBase.width(), Width::Bits64);
    }

    #[test]
    fn halves_of_64_bit_registers() {
        assert_eq!(Register::containing(0x84), Some((Register::StrtabBase, 4)));
        assert_eq!(Register::containing(0x80), Some((Register::StrtabBase, 0)));
        assert_eq!(Register::containing(0x8C), None);
        assert_eq!(
            Register::containing(0x6C),
            Some((Register::GerrorIrqCfg0, 4))
        );
        assert_eq!(Register::at(0x84), None);
        assert!(Register::PriqCons.on_page1());
        assert_eq!(Register::Cr0.to_string(), "SMMU_CR0");
    }
}
