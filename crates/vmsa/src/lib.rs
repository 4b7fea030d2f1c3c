//! VMSAv8-64 stage-1 translation tables in simulated physical memory, in the real Arm
//! descriptor format, so that a CPU model and an SMMU model walk the same tables.
//!
//! - [`Granule`] and [`TableConfig`]: the regime parameters (TG0, T0SZ, IPS) and the table
//!   shape they imply (start level, level sizes, where blocks may go).
//! - [`Descriptor`]: the 64-bit descriptor word as a bitfield (Arm ARM D8.3), and
//!   [`Attributes`]: leaf attribute bits at their architectural positions.
//! - [`PageTable`]: builds and edits a table tree in [`sva_physmem::Ram`]: `map`, `unmap`,
//!   `protect`, `split_block`, `update_leaf`, with break-before-make and TLB maintenance
//!   through a [`TlbInvalidate`] hook; and queries it (`lookup`, `leaves`).
//! - [`walk`]: the hardware walk with faults, permission checks and hardware access-flag
//!   and dirty-state updates (HTTU).
//!
//! Not modelled: 52-bit addresses (FEAT_LPA/LPA2), stage 2, PAN, WXN, the upper (TTBR1)
//! range. See README.md.
//!
//! ```
//! use sva_physmem::Ram;
//! use sva_vmsa::{Access, AccessKind, Attributes, Granule, Httu, NoTlb, PageTable, Pa,
//!     TableConfig, Va};
//!
//! let ram = Ram::new(16 << 20)?;
//! let table = PageTable::new(&ram, TableConfig::new(Granule::Size4K, 39, 40)?)?;
//! let attrs = Attributes::AF | Attributes::SH_INNER | Attributes::AP_EL0 | Attributes::UXN;
//! table.map(&ram, Va(0x40_0000), Pa(0x8000), 0x1000, attrs, false, &NoTlb)?;
//! let t = table
//!     .walk(&ram, Va(0x40_0123), Access::new(AccessKind::Write, false), Httu::default())
//!     .expect("mapped and writable");
//! assert_eq!(t.pa, Pa(0x8123));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod attributes;
mod config;
mod descriptor;
mod error;
mod granule;
mod map;
mod protect;
mod table;
mod tlb;
mod unmap;
mod walk;

pub use attributes::Attributes;
pub use config::{LEAF_LEVEL, TableConfig};
pub use descriptor::Descriptor;
pub use error::{Error, Result};
pub use granule::Granule;
pub use sva_addr::{Pa, Va};
pub use table::{Leaf, PageTable};
pub use tlb::{NoTlb, TlbInvalidate};
pub use walk::{Access, AccessKind, Fault, FaultKind, Httu, Permissions, Translation, walk};
