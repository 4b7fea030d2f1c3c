use bitflags::bitflags;

bitflags! {
    /// Page protection, as mmap's PROT_* bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Prot: u32 {
        /// PROT_READ.
        const READ = 1;
        /// PROT_WRITE. The Arm AP field has no write-only encoding, so a writable page is
        /// also readable (as on Linux/arm64).
        const WRITE = 2;
        /// PROT_EXEC.
        const EXEC = 4;
    }
}

impl Prot {
    /// PROT_NONE.
    pub const NONE: Prot = Prot::empty();
}

bitflags! {
    /// mmap flags (MAP_*) and VMA properties.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct MapFlags: u32 {
        /// MAP_PRIVATE: copy-on-write after fork.
        const PRIVATE = 1 << 0;
        /// MAP_SHARED: one set of pages, seen by every process mapping it (also after fork).
        const SHARED = 1 << 1;
        /// MAP_FIXED: place exactly at the hint, replacing what is there.
        const FIXED = 1 << 2;
        /// MAP_FIXED_NOREPLACE: place exactly at the hint, fail if something is there.
        const FIXED_NOREPLACE = 1 << 3;
        /// MAP_POPULATE: fault every page in now.
        const POPULATE = 1 << 4;
        /// MADV_DONTFORK / VM_DONTCOPY: the child does not get this mapping.
        const DONTCOPY = 1 << 5;
        /// MADV_WIPEONFORK: the child gets the range, empty (zero-fill on demand).
        const WIPEONFORK = 1 << 6;
        /// MADV_NOHUGEPAGE: never use block (THP) mappings here.
        const NOHUGEPAGE = 1 << 7;
    }
}

impl MapFlags {
    /// The flags that describe a VMA (as opposed to how mmap places it).
    pub(crate) const VMA_MASK: MapFlags = MapFlags::PRIVATE
        .union(MapFlags::SHARED)
        .union(MapFlags::DONTCOPY)
        .union(MapFlags::WIPEONFORK)
        .union(MapFlags::NOHUGEPAGE);
}

/// The kind of a CPU (or device) access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// A load.
    Read,
    /// A store.
    Write,
    /// An instruction fetch.
    Execute,
}

impl AccessKind {
    /// The VMA protection this access needs.
    pub fn needs(self) -> Prot {
        match self {
            AccessKind::Read => Prot::READ,
            AccessKind::Write => Prot::WRITE,
            AccessKind::Execute => Prot::EXEC,
        }
    }

    pub(crate) fn to_vmsa(self) -> sva_vmsa::AccessKind {
        match self {
            AccessKind::Read => sva_vmsa::AccessKind::Read,
            AccessKind::Write => sva_vmsa::AccessKind::Write,
            AccessKind::Execute => sva_vmsa::AccessKind::Execute,
        }
    }
}
