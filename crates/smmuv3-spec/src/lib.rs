//! Architectural layouts of the Arm SMMUv3 (IHI 0070), shared by the SMMU model and the
//! reference driver.
//!
//! The model and the driver never share Rust state: they meet at MMIO registers and at
//! structures in memory. This crate is the contract between them, named as in the
//! specification, with its section numbers in the docs. The layouts are those of IHI 0070 G.b
//! (SMMUv3.3); sub-section numbers were checked against a later revision of the document,
//! which inserts a few sections (for example §4.6 DPT maintenance), so a number may be off by
//! one against G.b while the section title is the same:
//!
//! | module | contents | spec |
//! |---|---|---|
//! | [`regs`] | register offsets of pages 0 and 1, [`regs::Register`] table for dispatch and dumps | §6.2 |
//! | [`idr`] | SMMU_IDR0..5, IIDR, AIDR | §6.3.1 to §6.3.8 |
//! | [`control`] | CR0/CR0ACK, CR1, CR2, STATUSR, GBPA, IRQ_CTRL, GERROR/GERRORN, IRQ_CFG0..2 | §6.3.9 to §6.3.23 |
//! | [`queue`] | queue BASE/PROD/CONS registers and [`queue::QueueIndex`] wrap arithmetic | §3.5, §6.3.26 to §6.3.29 |
//! | [`ste`] | STRTAB_BASE(_CFG), L1STD and the Stream Table Entry | §5.1, §5.2, §6.3.24, §6.3.25 |
//! | [`cd`] | L1CD and the Context Descriptor | §5.3, §5.4 |
//! | [`command`] | Command queue entries: [`command::Command`] encode/decode | §4 |
//! | [`event`] | Event queue records: [`event::Event`] encode/decode | §7.3 |
//! | [`pri`] | PRI queue entries and PRI responses | §8, §4.5.2 |
//!
//! # Layout conventions
//!
//! - Every register, and every 64-bit word of a multi-word structure, is a `#[bitfield]` type
//!   (from `bitfield-struct`) whose fields carry the specification's names in snake_case. Each
//!   field's doc comment starts with its bit range within that word, e.g. `[19:16]`.
//! - Multi-word structures ([`ste::Ste`], [`cd::Cd`]) are arrays of little-endian `u64`
//!   words, word 0 at the lowest address, with typed accessors `word0()`, `word1()`, ...
//! - Field encodings with reserved values decode to an enum with a `Reserved(raw)` variant:
//!   decoding never fails or panics, and the consumer decides whether a reserved value makes a
//!   structure ILLEGAL ([`encoding`]).
//! - Address fields are stored as in the hardware (address bits shifted down); the `*_pa()`
//!   helpers convert to and from [`sva_addr::Pa`]. Addresses are 52-bit (SMMUv3.1 to v3.3);
//!   the bits that later revisions use for 56-bit addresses are reserved here.
//! - Queue entries have typed forms with `encode`/`decode`: commands, events and page requests.
//!   Decoders return a specific error (see [`error`]); malformed input is data, never a panic.
//!
//! # Example
//!
//! ```
//! use sva_addr::{Asid, Va, Vmid};
//! use sva_smmuv3_spec::command::{Command, TlbiRange};
//!
//! // The driver invalidates one page of ASID 5 ...
//! let cmd = Command::TlbiNhVa {
//!     vmid: Vmid(0),
//!     asid: Asid(5),
//!     addr: Va(0x4000),
//!     leaf: true,
//!     range: TlbiRange::NONE,
//! };
//! let words = cmd.encode();
//! assert_eq!(words, [0x0005_0000_0000_0012, 0x4001]);
//! // ... and the model reads the same command back from the queue.
//! assert_eq!(Command::decode(words), Ok(cmd));
//! ```
//!
//! The crate models the Non-secure programming interface: Secure, Realm and VATOS registers,
//! and Secure-only commands, are not described.

pub mod cd;
pub mod command;
pub mod control;
pub mod encoding;
pub mod error;
pub mod event;
pub mod idr;
pub mod mmio;
pub mod pri;
pub mod queue;
pub mod regs;
pub mod ste;

pub use cd::{Cd, L1Cd};
pub use command::{Command, Opcode};
pub use encoding::{AddressSize, Granule, ReservedBits};
pub use error::{CommandError, Error, EventError, PageRequestError, QueueError, Result};
pub use event::{Event, EventId};
pub use pri::{PageRequest, PriResponse};
pub use queue::QueueIndex;
pub use regs::Register;
pub use ste::{L1Std, Ste};
