//! The hardware translation table walk, as a CPU MMU or an SMMU performs it.

use crate::{Descriptor, PageTable, TableConfig};
use core::fmt;
use sva_addr::{Pa, Va};
use sva_physmem::PhysMemory;

/// The kind of access being translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Execute,
}

/// An access to translate: its kind and the privilege it is made with (EL1 or EL0; for an
/// SMMU, the transaction's privileged attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// Read, write or execute.
    pub kind: AccessKind,
    /// `true` for EL1 (privileged), `false` for EL0 (unprivileged).
    pub privileged: bool,
}

impl Access {
    /// An access of `kind` with the given privilege.
    #[must_use]
    pub const fn new(kind: AccessKind, privileged: bool) -> Self {
        Self { kind, privileged }
    }
}

/// Hardware translation table updates (FEAT_HAFDBS: TCR_EL1.{HA, HD}; SMMU CD.{HA, HD}).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Httu {
    /// Hardware sets the access flag instead of raising an Access flag fault.
    pub ha: bool,
    /// Hardware marks DBM pages dirty (clears `AP[2]`) on a write instead of raising a
    /// Permission fault. As in the architecture, this only takes effect together with `ha`.
    pub hd: bool,
}

/// Effective permissions of a translation, after the leaf's `AP[2:1]`, PXN and UXN and the
/// hierarchical APTable, PXNTable and UXNTable of the tables above it.
///
/// Privileged reads are always allowed (PAN is not modelled); `write` is the privileged
/// write permission, and EL0 may read when `user` and write when `user && write` (AP has no
/// encoding that differs). WXN is not modelled either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Permissions {
    /// Data reads allowed (at EL1; at EL0 only with `user`).
    pub read: bool,
    /// Data writes allowed (at EL1; at EL0 only with `user`).
    pub write: bool,
    /// EL0 (unprivileged) data accesses allowed.
    pub user: bool,
    /// EL0 instruction fetches allowed (UXN and UXNTable clear).
    pub user_exec: bool,
    /// EL1 instruction fetches allowed (PXN and PXNTable clear, and EL0 cannot write).
    pub priv_exec: bool,
}

impl Permissions {
    /// The permissions leaf `d` grants under hierarchical restrictions `above`.
    fn of(d: Descriptor, above: TableRestrictions) -> Self {
        let mut write = d.ap() & 0b10 == 0;
        let mut user = d.ap() & 0b01 != 0;
        if above.ap_table & 0b01 != 0 {
            user = false;
        }
        if above.ap_table & 0b10 != 0 {
            write = false;
        }
        Self {
            read: true,
            write,
            user,
            user_exec: !(d.uxn() || above.uxn_table),
            // Memory EL0 can write is never executable at EL1.
            priv_exec: !(d.pxn() || above.pxn_table || (user && write)),
        }
    }

    /// Whether these permissions allow `access`.
    #[must_use]
    pub fn allows(&self, access: Access) -> bool {
        match (access.kind, access.privileged) {
            (AccessKind::Read, true) => self.read,
            (AccessKind::Read, false) => self.user && self.read,
            (AccessKind::Write, true) => self.write,
            (AccessKind::Write, false) => self.user && self.write,
            (AccessKind::Execute, true) => self.priv_exec,
            (AccessKind::Execute, false) => self.user_exec,
        }
    }
}

/// The result of a successful walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Translation {
    /// The output address of the translated input address (not just the page base).
    pub pa: Pa,
    /// Level of the leaf.
    pub level: u8,
    /// Size of the leaf: the page size at level 3, the block size above.
    pub size: u64,
    /// Effective permissions.
    pub perms: Permissions,
    /// The leaf descriptor, after any hardware update this walk made.
    pub desc: Descriptor,
}

/// Why a walk failed (the Arm fault status code class; SMMU event F_TRANSLATION,
/// F_ACCESS, F_PERMISSION, F_ADDR_SIZE, F_WALK_EABT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// No valid descriptor, an input address beyond the input address size, or an encoding
    /// that is not a leaf where one is needed.
    Translation,
    /// The leaf's access flag is 0 and hardware does not manage it.
    AccessFlag,
    /// The access is not permitted.
    Permission,
    /// A table or output address does not fit in the output address size.
    AddressSize,
    /// A descriptor read hit memory that does not exist.
    ExternalAbort,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::Translation => "translation",
            FaultKind::AccessFlag => "access flag",
            FaultKind::Permission => "permission",
            FaultKind::AddressSize => "address size",
            FaultKind::ExternalAbort => "synchronous external abort on walk",
        })
    }
}

/// A failed walk: what, at which lookup level, for which input address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fault {
    /// The fault.
    pub kind: FaultKind,
    /// The lookup level it was detected at.
    pub level: u8,
    /// The input address being translated.
    pub va: Va,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} fault at level {} for {}",
            self.kind, self.level, self.va
        )
    }
}

impl std::error::Error for Fault {}

/// Hierarchical attributes collected from the table descriptors walked through.
#[derive(Clone, Copy, Debug, Default)]
struct TableRestrictions {
    ap_table: u8,
    pxn_table: bool,
    uxn_table: bool,
}

impl TableRestrictions {
    fn add(&mut self, table: Descriptor) {
        self.ap_table |= table.ap_table();
        self.pxn_table |= table.pxn_table();
        self.uxn_table |= table.uxn_table();
    }
}

/// The stage-1 walk of `va` for `access` from the root table at `root` under `config`, as
/// an MMU or SMMU does it, including hardware access-flag and dirty-state updates.
///
/// - An input address at or above `2^ia_bits` is a Translation fault at the start level, a
///   root table at or above `2^oa_bits` an Address size fault there.
/// - Each level reads one descriptor with an Acquire load; memory outside RAM is an
///   external abort. Invalid descriptors, level-3 descriptors with bit 1 clear and blocks at
///   levels without blocks are Translation faults; a table or output address at or above
///   `2^oa_bits` is an Address size fault, at the level of the descriptor holding it.
/// - AF = 0 is an Access flag fault unless `httu.ha`. It takes priority over permission
///   faults.
/// - Permissions: `AP[2:1]` (0b00 EL1 RW / EL0 none, 0b01 both RW, 0b10 EL1 RO / EL0 none,
///   0b11 both RO), UXN for unprivileged and PXN for privileged instruction fetches,
///   privileged execute-never implied where EL0 can write, all narrowed by the APTable,
///   UXNTable and PXNTable of the tables walked. An unprivileged access to a page without
///   EL0 access is a Permission fault. PAN and WXN are not modelled.
/// - A write denied only by `AP[2]` on a DBM page with `httu.hd` (and `ha`) marks the page
///   dirty (clears `AP[2]`) instead of faulting.
/// - Hardware updates (setting AF, clearing `AP[2]`) are made only when the access succeeds,
///   with one compare-exchange of the leaf; if the descriptor changed meanwhile the walk
///   starts again from the root.
///
/// The contiguous hint, nG, NS and the memory attributes do not change the walk's outcome.
pub fn walk(
    mem: &dyn PhysMemory,
    root: Pa,
    config: &TableConfig,
    va: Va,
    access: Access,
    httu: Httu,
) -> Result<Translation, Fault> {
    let start = config.start_level();
    let fault = |kind, level| Fault { kind, level, va };
    if va.raw() >= config.ia_size() {
        return Err(fault(FaultKind::Translation, start));
    }
    if root.raw() >= config.oa_size() {
        return Err(fault(FaultKind::AddressSize, start));
    }
    let hd = httu.ha && httu.hd;
    'walk: loop {
        let mut table = root;
        let mut level = start;
        let mut above = TableRestrictions::default();
        loop {
            let entry = table + config.index(level, va) * 8;
            let raw = mem
                .load_u64(entry)
                .map_err(|_| fault(FaultKind::ExternalAbort, level))?;
            let d = Descriptor::from_bits(raw);
            if d.is_table(level) {
                let next = d.output_address(config, level);
                if next.raw() >= config.oa_size() {
                    return Err(fault(FaultKind::AddressSize, level));
                }
                above.add(d);
                table = next;
                level += 1;
                continue;
            }
            if !d.is_leaf(config, level) {
                return Err(fault(FaultKind::Translation, level));
            }
            let oa = d.output_address(config, level);
            if oa.raw() >= config.oa_size() {
                return Err(fault(FaultKind::AddressSize, level));
            }
            if !d.af() && !httu.ha {
                return Err(fault(FaultKind::AccessFlag, level));
            }
            let mut new = d.with_af(true);
            if !Permissions::of(d, above).allows(access) {
                // Dirty-state management: a DBM page is "writable, clean" while AP[2] is
                // set; the first write clears AP[2] if nothing else forbids it.
                let dirty = new.with_ap(d.ap() & 0b01);
                let may_dirty = access.kind == AccessKind::Write
                    && hd
                    && d.dbm()
                    && Permissions::of(dirty, above).allows(access);
                if !may_dirty {
                    return Err(fault(FaultKind::Permission, level));
                }
                new = dirty;
            }
            if new != d {
                match mem.compare_exchange_u64(entry, raw, new.into_bits()) {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => continue 'walk,
                    Err(_) => return Err(fault(FaultKind::ExternalAbort, level)),
                }
            }
            let size = config.level_size(level);
            return Ok(Translation {
                pa: Pa(oa.raw() | va.offset_in(size)),
                level,
                size,
                perms: Permissions::of(new, above),
                desc: new,
            });
        }
    }
}

impl PageTable {
    /// [`walk`] of this table.
    pub fn walk(
        &self,
        mem: &dyn PhysMemory,
        va: Va,
        access: Access,
        httu: Httu,
    ) -> Result<Translation, Fault> {
        walk(mem, self.root(), self.config(), va, access, httu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(ap: u8, pxn: bool, uxn: bool, ap_table: u8) -> Permissions {
        let d = Descriptor::new().with_ap(ap).with_pxn(pxn).with_uxn(uxn);
        Permissions::of(
            d,
            TableRestrictions {
                ap_table,
                ..TableRestrictions::default()
            },
        )
    }

    #[test]
    fn ap_encodings() {
        let p = |ap| {
            let p = perms(ap, false, false, 0);
            (p.write, p.user, p.priv_exec)
        };
        assert_eq!(p(0b00), (true, false, true));
        assert_eq!(p(0b01), (true, true, false)); // EL0-writable: implied PXN
        assert_eq!(p(0b10), (false, false, true));
        assert_eq!(p(0b11), (false, true, true));
    }

    #[test]
    fn ap_table_narrows() {
        // APTable[0]: no EL0 below; the implied PXN then no longer applies.
        let p = perms(0b01, false, false, 0b01);
        assert!(p.write && !p.user && p.priv_exec);
        // APTable[1]: no writes below.
        let p = perms(0b01, false, false, 0b10);
        assert!(!p.write && p.user && p.priv_exec);
        let p = perms(0b00, false, false, 0b11);
        assert!(!p.write && !p.user);
    }

    #[test]
    fn fault_display() {
        let f = Fault {
            kind: FaultKind::AccessFlag,
            level: 3,
            va: Va(0x1000),
        };
        assert_eq!(
            f.to_string(),
            "access flag fault at level 3 for 0x000000001000"
        );
    }
}
