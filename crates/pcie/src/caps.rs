//! The PCIe extended capabilities a function implements for SVA: PASID (PCIe 6.0
//! §7.8.8), ATS (§10.5.1) and PRI (§10.5.2). Software enables them through
//! [`crate::PciFunction`]; the function's DMA engine honours what is enabled.

/// What the function implements. Zero/false means the capability is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// PASID capability: Max PASID Width (1–20 bits); 0 = no PASID capability.
    pub pasid_width: u8,
    /// PASID capability: Execute Permission Supported.
    pub pasid_exec: bool,
    /// PASID capability: Privileged Mode Supported.
    pub pasid_privileged: bool,
    /// ATS capability present (the function has an ATC).
    pub ats: bool,
    /// ATS Invalidate Queue Depth (0 = 32 outstanding invalidations).
    pub ats_inv_queue_depth: u8,
    /// PRI capability: Outstanding Page Request Capacity; 0 = no PRI capability.
    pub pri_capacity: u32,
    /// Entries of the ATC.
    pub atc_entries: usize,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            pasid_width: 20,
            pasid_exec: false,
            pasid_privileged: false,
            ats: true,
            ats_inv_queue_depth: 0,
            pri_capacity: 32,
            atc_entries: 512,
        }
    }
}

/// ATS Control: Smallest Translation Unit, in 4 KiB × 2^STU.
pub type Stu = u8;

/// The capability registers software writes (Control) and reads (Status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapState {
    /// PASID Control: PASID Enable.
    pub pasid_enabled: bool,
    /// PASID Control: Execute Permission Enable.
    pub pasid_exec: bool,
    /// PASID Control: Privileged Mode Enable.
    pub pasid_privileged: bool,
    /// ATS Control: Enable.
    pub ats_enabled: bool,
    /// ATS Control: Smallest Translation Unit.
    pub ats_stu: Stu,
    /// PRI Control: Enable.
    pub pri_enabled: bool,
    /// PRI: Outstanding Page Request Allocation (set by software, ≤ capacity).
    pub pri_allocation: u32,
    /// PRI Status: Response Failure (a PRG Response Failure arrived; PRI stopped).
    pub pri_response_failure: bool,
    /// PRI Status: Unexpected PRG Index (a response named no outstanding group).
    pub pri_unexpected_index: bool,
}
