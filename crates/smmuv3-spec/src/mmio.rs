//! The contract between the SMMU and whoever programs it: 32- and 64-bit register accesses
//! at offsets into the two 64 KiB register pages, and the interrupt lines the platform wires.
//! The model implements [`Mmio`]; the driver holds a `dyn Mmio` and nothing else of it.

/// Register accesses at byte offsets from the SMMU's base (page 1 starts at 0x1_0000).
///
/// Accesses behave like the hardware: reserved or unimplemented offsets read as zero and
/// ignore writes; a 64-bit register may be accessed as two 32-bit halves.
pub trait Mmio: Send + Sync {
    /// Reads the 32-bit register at `offset`.
    fn read32(&self, offset: u64) -> u32;
    /// Writes the 32-bit register at `offset`.
    fn write32(&self, offset: u64, value: u32);
    /// Reads the 64-bit register at `offset` (8-byte aligned).
    fn read64(&self, offset: u64) -> u64;
    /// Writes the 64-bit register at `offset` (8-byte aligned).
    fn write64(&self, offset: u64, value: u64);
}

/// The SMMU's wired interrupt lines (§3.18). With MSIs the same events are memory writes
/// instead; a platform without MSI support wires these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IrqLine {
    /// New records in the event queue (IRQ_CTRL.EVENTQ_IRQEN).
    EventQueue,
    /// New entries in the PRI queue (IRQ_CTRL.PRIQ_IRQEN).
    PriQueue,
    /// A new GERROR condition (IRQ_CTRL.GERROR_IRQEN).
    GlobalError,
    /// A CMD_SYNC with CS = SIG_IRQ completed.
    CmdSync,
}
