//! One address space: VMAs, its translation table, the page-fault handler, and the
//! operations that change translations (each bracketed by MMU notifiers).

use crate::notifier::{InvalidateRange, InvalidateReason, MmuNotifier, NotifierId};
use crate::swap::SwapSlot;
use crate::system::Shared;
use crate::tlb::{AsidTlb, Tlbi};
use crate::vma::{Backing, ShmObject, Vma, VmaInfo, VmaMap};
use crate::{
    ATTR_INDEX_NORMAL, AccessKind, Error, FrameRegion, IoError, IoMemory, MMAP_MIN_ADDR, MapFlags,
    Pid, Prot, Result, SegvCode,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use sva_addr::{Asid, Pa, Pasid, Va};
use sva_physmem::{PhysMemory, Ram};
use sva_sync::{RwLock, RwLockReadGuard, RwLockWriteGuard, read, write};
use sva_vmsa::{Access, Attributes, Granule, Httu, Leaf, PageTable, TableConfig};

/// How many times a CPU access retries after a fault the handler resolved before giving up
/// (more than one retry happens only when another thread changes the mapping meanwhile).
const FAULT_RETRIES: usize = 8;

/// The permission-related leaf bits an address space sets itself.
const PERM_BITS: Attributes = Attributes::AP_EL0
    .union(Attributes::AP_RO)
    .union(Attributes::UXN)
    .union(Attributes::PXN);

/// Counters of one address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MmStats {
    /// Page faults handled (CPU and I/O) that mapped or changed something.
    pub faults: u64,
    /// Faults that found the page already mapped (another thread or device got there).
    pub spurious_faults: u64,
    /// Copy-on-write breaks (a private copy made).
    pub cow_breaks: u64,
    /// Copy-on-write faults that reused the frame because no one else held it.
    pub cow_reuses: u64,
    /// Faults served by a 2 MiB block.
    pub thp_faults: u64,
    /// Block mappings split into pages.
    pub thp_splits: u64,
    /// Pages written to swap.
    pub swap_outs: u64,
    /// Pages read back from swap.
    pub swap_ins: u64,
    /// Pages moved to another frame.
    pub migrations: u64,
}

#[derive(Default)]
struct Counters {
    faults: AtomicU64,
    spurious_faults: AtomicU64,
    cow_breaks: AtomicU64,
    cow_reuses: AtomicU64,
    thp_faults: AtomicU64,
    thp_splits: AtomicU64,
    swap_outs: AtomicU64,
    swap_ins: AtomicU64,
    migrations: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct State {
    vmas: VmaMap,
    /// Swapped-out private pages, by page address.
    swapped: BTreeMap<Va, SwapSlot>,
    /// Pages pinned for a device (their frame holds one extra reference per pin), by page
    /// address.
    pins: BTreeMap<Va, u32>,
    alive: bool,
}

/// A process's address space (the kernel's `mm_struct`).
pub struct Mm {
    pid: Pid,
    asid: Asid,
    table: PageTable,
    shared: Arc<Shared>,
    state: RwLock<State>,
    notifiers: RwLock<Vec<(NotifierId, Arc<dyn MmuNotifier>)>>,
    next_notifier: AtomicU64,
    counters: Counters,
    /// The process's PASID (x86 `mm->pasid`), [`NO_PASID`] when it has none.
    pasid: AtomicU64,
}

/// The value of [`Mm::pasid`]'s slot when the process has no PASID (above any 20-bit PASID).
const NO_PASID: u64 = u64::MAX;

impl core::fmt::Debug for Mm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mm")
            .field("pid", &self.pid)
            .field("asid", &self.asid)
            .field("root", &self.table.root())
            .finish_non_exhaustive()
    }
}

/// The leaf attributes of a user page with VMA protection `prot`.
fn leaf_attrs(prot: Prot, writable: bool) -> Attributes {
    let mut a = (Attributes::AF | Attributes::SH_INNER | Attributes::NG | Attributes::PXN)
        .with_attr_indx(ATTR_INDEX_NORMAL);
    if prot.is_empty() {
        // PROT_NONE: EL0 has no access (AP = 0b10: EL1 read-only).
        return a | Attributes::AP_RO | Attributes::UXN;
    }
    a |= Attributes::AP_EL0;
    if !writable {
        a |= Attributes::AP_RO;
    }
    if !prot.contains(Prot::EXEC) {
        a |= Attributes::UXN;
    }
    a
}

/// Whether the VMA protection allows `access`. PROT_WRITE implies read: the AP field has
/// no write-only encoding.
fn vma_allows(prot: Prot, access: AccessKind) -> bool {
    match access {
        AccessKind::Read => prot.intersects(Prot::READ | Prot::WRITE),
        kind => prot.contains(kind.needs()),
    }
}

impl Mm {
    pub(crate) fn new(pid: Pid, shared: Arc<Shared>) -> Result<Self> {
        let asid = shared.asids.alloc()?;
        let table = match PageTable::new(&shared.ram, shared.table) {
            Ok(t) => t,
            Err(e) => {
                shared.asids.free(asid);
                return Err(e.into());
            }
        };
        let page = shared.table.page_size();
        Ok(Self {
            pid,
            asid,
            table,
            shared,
            state: RwLock::new(State {
                vmas: VmaMap::new(page),
                swapped: BTreeMap::new(),
                pins: BTreeMap::new(),
                alive: true,
            }),
            notifiers: RwLock::new(Vec::new()),
            next_notifier: AtomicU64::new(0),
            counters: Counters::default(),
            pasid: AtomicU64::new(NO_PASID),
        })
    }

    /// The owning process.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The ASID tagging this address space's TLB entries (shared with an SMMU context).
    pub fn asid(&self) -> Asid {
        self.asid
    }

    /// Physical address of the translation table root (TTBR0_EL1, and CD.TTB0 under SVA).
    pub fn table_root(&self) -> Pa {
        self.table.root()
    }

    /// Translation regime parameters (granule, T0SZ, IPS).
    pub fn table_config(&self) -> TableConfig {
        *self.table.config()
    }

    /// The translation table, for walkers that share it.
    pub fn table(&self) -> &PageTable {
        &self.table
    }

    /// Page size.
    pub fn page_size(&self) -> u64 {
        self.table.config().page_size()
    }

    /// The PASID the process's threads issue with ENQCMD (x86's `mm->pasid`, loaded into
    /// IA32_PASID), or `None`. Set by the SVA core when the address space is first bound to
    /// a device; a forked child starts without one.
    pub fn pasid(&self) -> Option<Pasid> {
        let raw = self.pasid.load(Ordering::Acquire);
        u32::try_from(raw).ok().map(Pasid)
    }

    /// Sets (at first bind) or clears (when the PASID is released) the process's PASID.
    pub fn set_pasid(&self, pasid: Option<Pasid>) {
        let raw = pasid.map_or(NO_PASID, |p| u64::from(p.raw()));
        self.pasid.store(raw, Ordering::Release);
    }

    /// Whether the process is still running.
    pub fn is_alive(&self) -> bool {
        self.read_state().is_ok()
    }

    fn ram(&self) -> &Ram {
        &self.shared.ram
    }

    fn tlb(&self) -> AsidTlb<'_> {
        AsidTlb {
            bcast: &self.shared.tlb,
            asid: self.asid,
        }
    }

    fn read_state(&self) -> Result<RwLockReadGuard<'_, State>> {
        let st = read(&self.state);
        if st.alive {
            Ok(st)
        } else {
            Err(Error::Exited(self.pid))
        }
    }

    fn write_state(&self) -> Result<RwLockWriteGuard<'_, State>> {
        let st = write(&self.state);
        if st.alive {
            Ok(st)
        } else {
            Err(Error::Exited(self.pid))
        }
    }

    // ---- notifiers ----

    /// Registers a secondary MMU. See [`crate::notifier`] for what it may do.
    pub fn register_notifier(&self, n: Arc<dyn MmuNotifier>) -> Result<NotifierId> {
        // Hold the state lock so registration cannot interleave with an exit.
        let _st = self.read_state()?;
        let id = NotifierId(self.next_notifier.fetch_add(1, Ordering::Relaxed));
        write(&self.notifiers).push((id, n));
        Ok(id)
    }

    /// Unregisters a notifier; waits for its callbacks in flight. Returns whether it was
    /// registered (it is not after the release at exit).
    pub fn unregister_notifier(&self, id: NotifierId) -> bool {
        let mut list = write(&self.notifiers);
        let before = list.len();
        list.retain(|(i, _)| *i != id);
        list.len() != before
    }

    fn notify(&self, start: Va, end: Va, reason: InvalidateReason, begin: bool) {
        let range = InvalidateRange {
            asid: self.asid,
            start,
            end,
            reason,
        };
        for (_, n) in read(&self.notifiers).iter() {
            if begin {
                n.invalidate_range_start(&range);
            } else {
                n.invalidate_range_end(&range);
            }
        }
    }

    /// Runs `f` between invalidate_range_start and invalidate_range_end of `[start, end)`.
    fn invalidating<T>(
        &self,
        start: Va,
        end: Va,
        reason: InvalidateReason,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.notify(start, end, reason, true);
        let r = f();
        self.notify(start, end, reason, false);
        r
    }

    // ---- argument checks ----

    fn check_range(&self, va: Va, len: u64) -> Result<Va> {
        let page = self.page_size();
        if len == 0 {
            return Err(Error::ZeroLength);
        }
        if !va.is_aligned(page) {
            return Err(Error::Unaligned {
                what: "address",
                value: va.raw(),
                granule: page,
            });
        }
        let ia_bits = self.table.config().ia_bits();
        match va.checked_add(len) {
            Some(end) if end.raw() <= 1 << ia_bits => Ok(end),
            _ => Err(Error::OutOfRange { va, len, ia_bits }),
        }
    }

    fn round_len(&self, len: u64) -> Result<u64> {
        if len == 0 {
            return Err(Error::ZeroLength);
        }
        Va(len)
            .checked_align_up(self.page_size())
            .map(Va::raw)
            .ok_or(Error::NoSpace(len))
    }

    // ---- frames ----

    /// Takes a reference on every allocation block in `[pa, pa + size)`.
    fn get_frames(&self, pa: Pa, size: u64) -> Result<()> {
        let mut at = pa;
        while at < pa + size {
            self.ram().get(at)?;
            at = at + self.ram().block_size(at)?;
        }
        Ok(())
    }

    /// Drops a reference on every allocation block in `[pa, pa + size)` (a block mapping
    /// whose frames were split by another process's split is several blocks).
    fn put_frames(&self, pa: Pa, size: u64) -> Result<()> {
        let mut at = pa;
        while at < pa + size {
            let block = self.ram().block_size(at)?;
            self.ram().put(at)?;
            at = at + block;
        }
        Ok(())
    }

    /// Whether this mapping is the only holder of the frames behind `leaf`.
    fn exclusive(&self, leaf: &Leaf) -> Result<bool> {
        Ok(self.ram().refcount(leaf.pa)? == 1 && self.ram().block_size(leaf.pa)? == leaf.size)
    }

    /// Whether this address space owns the frames behind `leaf` alone, device pins aside:
    /// a pinned page must stay the page the device sees, so a write never copies it away.
    fn owned(&self, st: &State, leaf: &Leaf) -> Result<bool> {
        let pins = st.pins.get(&leaf.va).copied().unwrap_or(0);
        Ok(self.ram().refcount(leaf.pa)? == 1 + pins
            && self.ram().block_size(leaf.pa)? == leaf.size)
    }

    /// Splits the block mapping `leaf` into pages (and its allocation into frames).
    fn split_leaf(&self, leaf: &Leaf) -> Result<()> {
        let end = leaf.va + leaf.size;
        self.invalidating(leaf.va, end, InvalidateReason::Split, || {
            if self.ram().block_size(leaf.pa)? > self.page_size() {
                self.ram().split(leaf.pa)?;
            }
            self.table.split_block(self.ram(), leaf.va, &self.tlb())?;
            Ok(())
        })?;
        bump(&self.counters.thp_splits);
        Ok(())
    }

    /// Splits block mappings that straddle `start` or `end` so the range can be changed
    /// page by page.
    fn split_edges(&self, start: Va, end: Va) -> Result<()> {
        for edge in [start, end] {
            if edge.raw() >= 1 << self.table.config().ia_bits() {
                continue;
            }
            if let Some(leaf) = self.table.lookup(self.ram(), edge)?
                && leaf.va != edge
                && leaf.size > self.page_size()
            {
                self.split_leaf(&leaf)?;
            }
        }
        Ok(())
    }

    /// Splits every block mapping inside `[start, end)`.
    fn split_all(&self, start: Va, end: Va) -> Result<()> {
        for leaf in self.table.leaves(self.ram(), start, end - start)? {
            if leaf.size > self.page_size() {
                self.split_leaf(&leaf)?;
            }
        }
        Ok(())
    }

    /// Removes every page in `[start, end)` from the tables (the VMAs stay): notifiers,
    /// table update with TLB broadcast, then frames and swap slots are released.
    fn zap_range(&self, st: &mut State, start: Va, end: Va) -> Result<()> {
        self.split_edges(start, end)?;
        let removed = self.invalidating(start, end, InvalidateReason::Unmap, || {
            Ok(self
                .table
                .unmap(self.ram(), start, end - start, &self.tlb())?)
        })?;
        for leaf in removed {
            self.put_frames(leaf.pa, leaf.size)?;
        }
        // A pinned page stays with whoever pinned it; it is no longer this address space's.
        let pinned: Vec<Va> = st.pins.range(start..end).map(|(v, _)| *v).collect();
        for va in pinned {
            st.pins.remove(&va);
        }
        let slots: Vec<Va> = st.swapped.range(start..end).map(|(v, _)| *v).collect();
        for va in slots {
            if let Some(slot) = st.swapped.remove(&va) {
                self.shared.swap.discard(slot);
            }
        }
        Ok(())
    }

    // ---- mmap family ----

    /// mmap of anonymous memory. `addr` is a hint, or the exact place with FIXED /
    /// FIXED_NOREPLACE. The length is rounded up to whole pages. Exactly one of PRIVATE
    /// and SHARED must be given. Returns the start of the mapping. If MAP_POPULATE fails
    /// (e.g. RAM is exhausted) the new mapping is removed again and the error returned.
    pub fn mmap(&self, addr: Option<Va>, len: u64, prot: Prot, flags: MapFlags) -> Result<Va> {
        if flags.contains(MapFlags::PRIVATE) == flags.contains(MapFlags::SHARED) {
            return Err(Error::InvalidFlags("exactly one of PRIVATE and SHARED"));
        }
        if flags.contains(MapFlags::SHARED | MapFlags::WIPEONFORK) {
            return Err(Error::InvalidFlags(
                "WIPEONFORK applies to private mappings",
            ));
        }
        Self::check_placement(flags)?;
        let len = self.round_len(len)?;
        let backing = if flags.contains(MapFlags::SHARED) {
            Backing::Shared {
                object: Arc::new(ShmObject::new(self.shared.ram.clone())),
                pgoff: 0,
            }
        } else {
            Backing::Anonymous
        };
        self.map_vma(addr, len, prot, flags, backing)
    }

    /// Maps device registers into the process (a driver's mmap doing `remap_pfn_range` on
    /// MMIO): the whole of `region`, whose size must be a non-zero multiple of the page
    /// size, at an address chosen as mmap chooses one without a hint (FIXED and
    /// FIXED_NOREPLACE need an address and are refused). The mapping is shared (PRIVATE is
    /// refused, SHARED is implied); POPULATE and NOHUGEPAGE have no effect.
    ///
    /// No frames and no page-table entries are involved. CPU accesses ([`Mm::read`],
    /// [`Mm::write`], [`Mm::fill`], [`Mm::touch`]) are routed to `region`'s `read`/`write` at
    /// the matching offset, in as many pieces as VMAs they span; the VMA's protection is
    /// checked first ([`SegvCode::AccErr`]), instruction fetches are always refused (device
    /// memory is execute-never), and [`IoError::Bus`] becomes [`Error::Bus`]. Page faults
    /// on the range, such as a device's I/O page fault, fail with [`Error::Bus`]: there is
    /// nothing to fault in. With DONTCOPY or WIPEONFORK a forked child does not get the
    /// mapping (WIPEONFORK cannot wipe registers, so it acts as DONTCOPY); without either,
    /// the child maps the same registers.
    pub fn mmap_io(&self, region: Arc<dyn IoMemory>, prot: Prot, flags: MapFlags) -> Result<Va> {
        let flags = Self::device_flags(flags)?;
        let size = region.size();
        if size == 0 {
            return Err(Error::ZeroLength);
        }
        let page = self.page_size();
        if !size.is_multiple_of(page) {
            return Err(Error::Unaligned {
                what: "device region size",
                value: size,
                granule: page,
            });
        }
        self.map_vma(None, size, prot, flags, Backing::Io { region, pgoff: 0 })
    }

    /// Maps driver-owned frames into the process (a driver's mmap doing
    /// `dma_mmap_coherent`): page `i` of the returned mapping is `region.frames()[i]`. The
    /// frames must be frames of this address space's RAM of [`Mm::page_size`] bytes each
    /// ([`Error::BadRegion`] otherwise). Placement and flags are as for [`Mm::mmap_io`],
    /// except that POPULATE maps every page now.
    ///
    /// Pages are mapped on fault as ordinary shared memory: writes go to the driver's frame
    /// (never copy-on-write), so the process and the device's DMA see the same bytes. Each
    /// mapped page holds a reference on its frame until it is unmapped, zapped
    /// ([`Mm::zap`]) or the process exits. Faulting a page of a revoked region
    /// ([`FrameRegion::revoke`]) gives [`Error::Bus`]. Reclaim and migration leave these
    /// pages alone. Fork: as for [`Mm::mmap_io`] (DONTCOPY or WIPEONFORK: the child gets
    /// nothing; otherwise it maps the same frames).
    pub fn mmap_frames(&self, region: Arc<FrameRegion>, prot: Prot, flags: MapFlags) -> Result<Va> {
        let flags = Self::device_flags(flags)?;
        let page = self.page_size();
        if region.frames().is_empty() {
            return Err(Error::ZeroLength);
        }
        if !Arc::ptr_eq(region.ram(), &self.shared.ram) {
            return Err(Error::BadRegion("its frames belong to another RAM"));
        }
        for &pa in region.frames() {
            if self.ram().block_size(pa)? != page {
                return Err(Error::BadRegion(
                    "its frames are not of the address space's page size",
                ));
            }
        }
        let len = u64::try_from(region.frames().len())
            .ok()
            .and_then(|n| n.checked_mul(page))
            .ok_or(Error::NoSpace(u64::MAX))?;
        self.map_vma(None, len, prot, flags, Backing::Frames { region, pgoff: 0 })
    }

    /// The flags of a device mapping: shared, never private.
    fn device_flags(flags: MapFlags) -> Result<MapFlags> {
        if flags.contains(MapFlags::PRIVATE) {
            return Err(Error::InvalidFlags(
                "device mappings are shared, not PRIVATE",
            ));
        }
        Self::check_placement(flags)?;
        Ok(flags | MapFlags::SHARED)
    }

    fn check_placement(flags: MapFlags) -> Result<()> {
        if flags.contains(MapFlags::FIXED | MapFlags::FIXED_NOREPLACE) {
            return Err(Error::InvalidFlags("FIXED and FIXED_NOREPLACE together"));
        }
        Ok(())
    }

    /// Places a new VMA of `len` bytes (whole pages) as mmap does, inserts it and
    /// populates it with MAP_POPULATE (device registers have nothing to populate). A failed
    /// populate removes the new VMA again.
    fn map_vma(
        &self,
        addr: Option<Va>,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        backing: Backing,
    ) -> Result<Va> {
        let fixed = flags.intersects(MapFlags::FIXED | MapFlags::FIXED_NOREPLACE);
        let page = self.page_size();
        let ia_top = Va(1 << self.table.config().ia_bits());
        let mut st = self.write_state()?;
        let start = if fixed {
            let va = addr.ok_or(Error::InvalidFlags("FIXED needs an address"))?;
            let end = self.check_range(va, len)?;
            if va.raw() < MMAP_MIN_ADDR {
                return Err(Error::OutOfRange {
                    va,
                    len,
                    ia_bits: self.table.config().ia_bits(),
                });
            }
            if st.vmas.overlapping(va, end).next().is_some() {
                if flags.contains(MapFlags::FIXED_NOREPLACE) {
                    return Err(Error::Exists { va, len });
                }
                self.zap_range(&mut st, va, end)?;
                st.vmas.remove_range(va, end);
            }
            va
        } else {
            let hint = addr.filter(|&va| {
                va.raw() >= MMAP_MIN_ADDR
                    && self
                        .check_range(va, len)
                        .is_ok_and(|end| st.vmas.overlapping(va, end).next().is_none())
            });
            // Block alignment lets THP serve the range; device mappings have no blocks.
            let thp = self
                .thp_size()
                .filter(|&b| len >= b && !backing.is_device());
            match hint {
                Some(va) => va,
                None => thp
                    .and_then(|b| st.vmas.find_gap_topdown(len, b, Va(MMAP_MIN_ADDR), ia_top))
                    .or_else(|| {
                        st.vmas
                            .find_gap_topdown(len, page, Va(MMAP_MIN_ADDR), ia_top)
                    })
                    .ok_or(Error::NoSpace(len))?,
            }
        };
        let populate = flags.contains(MapFlags::POPULATE) && !matches!(backing, Backing::Io { .. });
        st.vmas.insert(Vma {
            start,
            end: start + len,
            prot,
            flags: flags & MapFlags::VMA_MASK,
            backing,
        });
        if populate {
            let access = if prot.contains(Prot::WRITE) {
                AccessKind::Write
            } else {
                AccessKind::Read
            };
            if vma_allows(prot, access)
                && let Err(e) = self.populate(&mut st, start, start + len, access)
            {
                // The caller gets no address to unmap: take the half-populated mapping back.
                let _ = self.zap_range(&mut st, start, start + len);
                st.vmas.remove_range(start, start + len);
                return Err(e);
            }
        }
        Ok(start)
    }

    /// munmap: removes mappings and pages in the range (holes are fine).
    pub fn munmap(&self, va: Va, len: u64) -> Result<()> {
        let end = self.check_range(va, self.round_len(len)?)?;
        let mut st = self.write_state()?;
        self.zap_range(&mut st, va, end)?;
        st.vmas.remove_range(va, end);
        Ok(())
    }

    /// mprotect: changes the protection of a fully mapped range (ENOMEM on a hole),
    /// splitting and merging VMAs, and updates the pages already mapped.
    pub fn mprotect(&self, va: Va, len: u64, prot: Prot) -> Result<()> {
        let end = self.check_range(va, self.round_len(len)?)?;
        let mut st = self.write_state()?;
        st.vmas.covers(va, end).map_err(Error::NotMapped)?;
        st.vmas.update_range(va, end, |v| v.prot = prot);
        self.split_edges(va, end)?;
        self.invalidating(va, end, InvalidateReason::ProtectionChange, || {
            for leaf in self.table.leaves(self.ram(), va, end - va)? {
                let shared = st
                    .vmas
                    .find(leaf.va)
                    .is_some_and(|v| v.backing.is_shared_memory());
                let writable = prot.contains(Prot::WRITE) && (shared || self.owned(&st, &leaf)?);
                self.table.protect(
                    self.ram(),
                    leaf.va,
                    leaf.size,
                    leaf_attrs(prot, writable),
                    PERM_BITS,
                    &self.tlb(),
                )?;
            }
            Ok(())
        })
    }

    /// madvise(MADV_DONTNEED): drops the pages of a mapped range; private memory reads as
    /// zeroes afterwards, shared memory keeps its contents.
    pub fn madvise_dontneed(&self, va: Va, len: u64) -> Result<()> {
        let end = self.check_range(va, self.round_len(len)?)?;
        let mut st = self.write_state()?;
        st.vmas.covers(va, end).map_err(Error::NotMapped)?;
        self.zap_range(&mut st, va, end)
    }

    /// Removes the page-table entries of the driver-frame mappings ([`Mm::mmap_frames`])
    /// in `[va, va + len)` but keeps their VMAs (Linux `zap_vma_ptes` /
    /// `unmap_mapping_range`): the usual MMU-notifier bracket and TLB invalidation, then
    /// the pages' frame references are dropped. Later accesses fault again, and fail with
    /// [`Error::Bus`] if the region was revoked meanwhile. `va` must be page-aligned; the
    /// length is rounded up to whole pages; holes are fine. Like `zap_vma_ptes`, only
    /// device mappings are affected: anonymous and MAP_SHARED memory in the range keeps its
    /// pages (a driver must not destroy what the process mapped over a range it unmapped),
    /// and device registers ([`Mm::mmap_io`]) have no entries to remove (the region itself
    /// answers Bus once the device is gone).
    pub fn zap(&self, va: Va, len: u64) -> Result<()> {
        let end = self.check_range(va, self.round_len(len)?)?;
        let mut st = self.write_state()?;
        // Contiguous driver-frame pieces, one notifier bracket each.
        let mut ranges: Vec<(Va, Va)> = Vec::new();
        for v in st.vmas.overlapping(va, end) {
            if !matches!(v.backing, Backing::Frames { .. }) {
                continue;
            }
            let (s, e) = (v.start.max(va), v.end.min(end));
            match ranges.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ => ranges.push((s, e)),
            }
        }
        for (s, e) in ranges {
            self.zap_range(&mut st, s, e)?;
        }
        Ok(())
    }

    /// The VMAs, lowest first.
    pub fn vmas(&self) -> Result<Vec<VmaInfo>> {
        Ok(self
            .read_state()?
            .vmas
            .iter()
            .map(|v| VmaInfo {
                start: v.start,
                end: v.end,
                prot: v.prot,
                flags: v.flags,
            })
            .collect())
    }

    // ---- faults ----

    fn thp_size(&self) -> Option<u64> {
        let cfg = self.table.config();
        (self.shared.config.thp && cfg.granule() == Granule::Size4K && cfg.block_allowed(2))
            .then(|| cfg.level_size(2))
    }

    /// The page-fault handler, for CPU faults and I/O page faults alike: maps the page at
    /// `va` for `access` if the VMA allows it (demand zero-fill, swap-in, copy-on-write),
    /// or returns [`Error::Segv`].
    pub fn handle_fault(&self, va: Va, access: AccessKind) -> Result<()> {
        let mut st = self.write_state()?;
        self.fault_locked(&mut st, va, access)
    }

    fn segv(va: Va, access: AccessKind, code: SegvCode) -> Error {
        Error::Segv { va, access, code }
    }

    fn fault_locked(&self, st: &mut State, va: Va, access: AccessKind) -> Result<()> {
        let vma = st
            .vmas
            .find(va)
            .cloned()
            .ok_or(Self::segv(va, access, SegvCode::MapErr))?;
        if !vma_allows(vma.prot, access) {
            return Err(Self::segv(va, access, SegvCode::AccErr));
        }
        if let Backing::Io { .. } = vma.backing {
            // Device registers are execute-never and have no pages to fault in (Linux
            // answers VM_FAULT_SIGBUS for a VM_PFNMAP VMA without a fault handler).
            if access == AccessKind::Execute {
                return Err(Self::segv(va, access, SegvCode::AccErr));
            }
            return Err(Error::Bus { va });
        }
        let page_va = va.align_down(self.page_size());
        match self.table.lookup(self.ram(), page_va)? {
            None => self.fault_in(st, &vma, va),
            Some(leaf) => {
                let attrs = leaf.desc.attributes();
                if access == AccessKind::Write && attrs.contains(Attributes::AP_RO) {
                    self.write_protect_fault(st, &vma, &leaf, page_va)
                } else if !attrs.contains(Attributes::AF) {
                    self.table
                        .update_leaf(self.ram(), page_va, &mut |d| d.with_af(true))?;
                    bump(&self.counters.faults);
                    Ok(())
                } else {
                    bump(&self.counters.spurious_faults);
                    Ok(())
                }
            }
        }
    }

    /// A fault at `va` on a page with no translation.
    fn fault_in(&self, st: &mut State, vma: &Vma, va: Va) -> Result<()> {
        let page = self.page_size();
        let page_va = va.align_down(page);
        if let Backing::Frames { region, .. } = &vma.backing
            && region.is_revoked()
        {
            // The driver's memory is gone: nothing may be mapped any more.
            return Err(Error::Bus { va });
        }
        bump(&self.counters.faults);
        if let Some(slot) = st.swapped.remove(&page_va) {
            let data = self.shared.swap.take(slot).unwrap_or_default();
            let pa = self.ram().alloc(page)?;
            self.ram().write(pa, &data)?;
            bump(&self.counters.swap_ins);
            return self.map_new(
                pa,
                page_va,
                page,
                leaf_attrs(vma.prot, vma.prot.contains(Prot::WRITE)),
            );
        }
        let writable = vma.prot.contains(Prot::WRITE);
        match &vma.backing {
            Backing::Shared { object, pgoff } => {
                let pa = object.page(pgoff + (page_va - vma.start) / page, page)?;
                self.map_new(pa, page_va, page, leaf_attrs(vma.prot, writable))
            }
            Backing::Frames { region, pgoff } => {
                let index = usize::try_from(pgoff + (page_va - vma.start) / page).ok();
                let Some(&pa) = index.and_then(|i| region.frames().get(i)) else {
                    return Err(Error::Bus { va });
                };
                self.ram().get(pa)?;
                self.map_new(pa, page_va, page, leaf_attrs(vma.prot, writable))
            }
            // Refused by `fault_locked` before the tables are looked at.
            Backing::Io { .. } => Err(Error::Bus { va }),
            Backing::Anonymous => {
                let attrs = leaf_attrs(vma.prot, writable);
                if let Some((base, size)) = self.try_thp(st, vma, page_va)? {
                    match self.ram().alloc(size) {
                        Ok(pa) => {
                            bump(&self.counters.thp_faults);
                            return self.map_new(pa, base, size, attrs);
                        }
                        // Fragmented or nearly full: fall back to a page, as THP does.
                        Err(sva_physmem::Error::Exhausted { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                let pa = self.ram().alloc(page)?;
                self.map_new(pa, page_va, page, attrs)
            }
        }
    }

    /// The 2 MiB region around `page_va`, if it can be served by one block: private
    /// anonymous, THP allowed, inside the VMA, nothing mapped or swapped there yet.
    fn try_thp(&self, st: &State, vma: &Vma, page_va: Va) -> Result<Option<(Va, u64)>> {
        let Some(size) = self.thp_size() else {
            return Ok(None);
        };
        let base = page_va.align_down(size);
        let eligible = !vma.flags.contains(MapFlags::NOHUGEPAGE)
            && vma.start <= base
            && base + size <= vma.end
            && st.swapped.range(base..base + size).next().is_none()
            && self.table.leaves(self.ram(), base, size)?.is_empty();
        Ok(eligible.then_some((base, size)))
    }

    /// Maps a frame we hold a reference on where nothing was mapped; on failure the
    /// reference is dropped.
    fn map_new(&self, pa: Pa, va: Va, size: u64, attrs: Attributes) -> Result<()> {
        if let Err(e) = self
            .table
            .map(self.ram(), va, pa, size, attrs, false, &self.tlb())
        {
            self.put_frames(pa, size)?;
            return Err(e.into());
        }
        Ok(())
    }

    /// A write to a present read-only page in a writable VMA: make it writable if this
    /// mapping owns the frame, otherwise copy it (copy-on-write break).
    fn write_protect_fault(&self, st: &State, vma: &Vma, leaf: &Leaf, page_va: Va) -> Result<()> {
        let writable_attrs = leaf_attrs(vma.prot, true);
        let shared = vma.backing.is_shared_memory();
        if shared || self.owned(st, leaf)? {
            // Upgrade in place: no stale translation can allow more than the new one.
            self.table.protect(
                self.ram(),
                leaf.va,
                leaf.size,
                writable_attrs,
                PERM_BITS,
                &self.tlb(),
            )?;
            bump(&self.counters.cow_reuses);
            return Ok(());
        }
        if leaf.size > self.page_size() {
            self.split_leaf(leaf)?;
            let page_leaf = self
                .table
                .lookup(self.ram(), page_va)?
                .ok_or(Error::NotMapped(page_va))?;
            return self.write_protect_fault(st, vma, &page_leaf, page_va);
        }
        let new = self.ram().alloc(self.page_size())?;
        // The old frame is read-only everywhere, so copying before the switch is safe.
        self.ram().copy(leaf.pa, new, leaf.size)?;
        self.invalidating(
            page_va,
            page_va + leaf.size,
            InvalidateReason::CowBreak,
            || {
                Ok(self.table.map(
                    self.ram(),
                    page_va,
                    new,
                    leaf.size,
                    writable_attrs,
                    true,
                    &self.tlb(),
                )?)
            },
        )?;
        self.ram().put(leaf.pa)?;
        bump(&self.counters.cow_breaks);
        bump(&self.counters.faults);
        Ok(())
    }

    fn populate(&self, st: &mut State, start: Va, end: Va, access: AccessKind) -> Result<()> {
        let mut va = start;
        while va < end {
            self.fault_locked(st, va, access)?;
            let mapped = self.table.lookup(self.ram(), va)?;
            va = mapped.map_or(va + self.page_size(), |l| l.va + l.size);
        }
        Ok(())
    }

    // ---- CPU accesses ----

    /// Walks the tables for a CPU access, faulting pages in as needed, and calls `op` with
    /// each piece: (where it goes, offset in the buffer, length). RAM pieces are physically
    /// contiguous; a piece on device registers ([`Backing::Io`]) ends at its VMA's end and
    /// is handed to `op` with the address-space lock released, so the device may call back
    /// into this address space (e.g. a doorbell starting DMA that takes an I/O page fault).
    fn access(
        &self,
        va: Va,
        len: usize,
        kind: AccessKind,
        mut op: impl FnMut(Target<'_>, usize, usize) -> Result<()>,
    ) -> Result<()> {
        let ia_top = 1u64 << self.table.config().ia_bits();
        let mut pos = 0usize;
        while pos < len {
            let at = va
                .checked_add(pos as u64)
                .filter(|a| a.raw() < ia_top)
                .ok_or(Self::segv(va + pos as u64, kind, SegvCode::MapErr))?;
            let mut done = false;
            for _ in 0..FAULT_RETRIES {
                let mut io = None;
                {
                    let st = self.read_state()?;
                    let access = Access {
                        kind: kind.to_vmsa(),
                        privileged: false,
                    };
                    let httu = Httu {
                        ha: true,
                        hd: false,
                    };
                    if let Ok(t) = self.table.walk(self.ram(), at, access, httu) {
                        let in_leaf = t.size - t.pa.offset_in(t.size);
                        let n = (len - pos).min(in_leaf as usize);
                        op(Target::Ram(t.pa), pos, n)?;
                        pos += n;
                        done = true;
                    } else if let Some(vma) = st.vmas.find(at)
                        && let Backing::Io { region, pgoff } = &vma.backing
                    {
                        if kind == AccessKind::Execute || !vma_allows(vma.prot, kind) {
                            return Err(Self::segv(at, kind, SegvCode::AccErr));
                        }
                        let n = (vma.end - at).min((len - pos) as u64) as usize;
                        let offset = pgoff * self.page_size() + (at - vma.start);
                        io = Some((region.clone(), offset, n));
                    }
                }
                if let Some((region, offset, n)) = io {
                    let target = IoTarget {
                        region: &*region,
                        offset,
                        va: at,
                    };
                    op(Target::Io(target), pos, n)?;
                    pos += n;
                    done = true;
                }
                if done {
                    break;
                }
                self.handle_fault(at, kind)?;
            }
            if !done {
                return Err(Self::segv(at, kind, SegvCode::AccErr));
            }
        }
        Ok(())
    }

    /// CPU loads of `buf.len()` bytes at `va`, through the tables and the fault handler.
    /// On device registers ([`Mm::mmap_io`]) the loads are the region's reads.
    pub fn read(&self, va: Va, buf: &mut [u8]) -> Result<()> {
        let ram = self.shared.ram.clone();
        self.access(va, buf.len(), AccessKind::Read, |to, pos, n| match to {
            Target::Ram(pa) => Ok(ram.read(pa, &mut buf[pos..pos + n])?),
            Target::Io(io) => io.read(&mut buf[pos..pos + n]),
        })
    }

    /// CPU stores of `data` at `va`, through the tables and the fault handler. On device
    /// registers ([`Mm::mmap_io`]) the stores are the region's (posted) writes.
    pub fn write(&self, va: Va, data: &[u8]) -> Result<()> {
        let ram = self.shared.ram.clone();
        self.access(va, data.len(), AccessKind::Write, |to, pos, n| match to {
            Target::Ram(pa) => Ok(ram.write(pa, &data[pos..pos + n])?),
            Target::Io(io) => io.write(&data[pos..pos + n]),
        })
    }

    /// CPU instruction fetches of `buf.len()` bytes at `va`. Device registers are
    /// execute-never: a fetch there is [`SegvCode::AccErr`].
    pub fn fetch(&self, va: Va, buf: &mut [u8]) -> Result<()> {
        let ram = self.shared.ram.clone();
        self.access(va, buf.len(), AccessKind::Execute, |to, pos, n| match to {
            Target::Ram(pa) => Ok(ram.read(pa, &mut buf[pos..pos + n])?),
            // Not reached: `access` refuses fetches from device registers.
            Target::Io(io) => Err(Self::segv(io.va, AccessKind::Execute, SegvCode::AccErr)),
        })
    }

    /// Fills `len` bytes at `va` with `byte`, as CPU stores (one region write per piece on
    /// device registers).
    pub fn fill(&self, va: Va, byte: u8, len: usize) -> Result<()> {
        let ram = self.shared.ram.clone();
        self.access(va, len, AccessKind::Write, |to, _, n| match to {
            Target::Ram(pa) => Ok(ram.fill(pa, byte, n as u64)?),
            Target::Io(io) => io.write(&vec![byte; n]),
        })
    }

    /// Touches every page of `[va, va + len)` with `kind` accesses (faulting them in). On
    /// device registers these are real register accesses: a one-byte read per page, and
    /// for `Write` that read followed by a one-byte write of the value read.
    pub fn touch(&self, va: Va, len: u64, kind: AccessKind) -> Result<()> {
        let page = self.page_size();
        let mut at = va.align_down(page);
        let end = va.checked_add(len).ok_or(Error::ZeroLength)?;
        let mut byte = [0u8; 1];
        while at < end {
            match kind {
                AccessKind::Read => self.read(at, &mut byte)?,
                AccessKind::Execute => self.fetch(at, &mut byte)?,
                AccessKind::Write => {
                    // A store of the byte already there: faults like a store, changes nothing.
                    self.read(at, &mut byte)?;
                    self.write(at, &byte)?;
                }
            }
            at = at + page;
        }
        Ok(())
    }

    /// The physical address `va` translates to for `kind`, without faulting.
    pub fn translate(&self, va: Va, kind: AccessKind) -> Result<Option<Pa>> {
        let _st = self.read_state()?;
        let access = Access {
            kind: kind.to_vmsa(),
            privileged: false,
        };
        Ok(self
            .table
            .walk(self.ram(), va, access, Httu::default())
            .ok()
            .map(|t| t.pa))
    }

    /// ENQCMD: a non-posted 64-byte store of `data` to a work-queue portal at `va`, which
    /// must be 64-byte aligned ([`Error::EnqcmdUnaligned`]) and inside device registers
    /// ([`Mm::mmap_io`]; [`Error::NotDeviceMemory`] on other memory, [`SegvCode::MapErr`]
    /// where nothing is mapped) that the process may write ([`SegvCode::AccErr`]). The
    /// region's `enqueue` gets the offset, `data` and this process's [`Mm::pasid`];
    /// returns whether the device accepted the command (`false`: retry, ZF = 1). A region
    /// that does not take ENQCMD there gives [`Error::IoUnsupported`].
    pub fn enqcmd(&self, va: Va, data: &[u8; 64]) -> Result<bool> {
        if !va.is_aligned(64) {
            return Err(Error::EnqcmdUnaligned(va));
        }
        let access = AccessKind::Write;
        let (region, offset) = {
            let st = self.read_state()?;
            let vma = st
                .vmas
                .find(va)
                .ok_or(Self::segv(va, access, SegvCode::MapErr))?;
            let Backing::Io { region, pgoff } = &vma.backing else {
                return Err(Error::NotDeviceMemory(va));
            };
            if !vma_allows(vma.prot, access) {
                return Err(Self::segv(va, access, SegvCode::AccErr));
            }
            (region.clone(), pgoff * self.page_size() + (va - vma.start))
        };
        // The lock is released: the device may act on the command at once.
        region
            .enqueue(offset, data, self.pasid())
            .map_err(|e| io_error(e, va, offset))
    }

    // ---- pinning for devices ----

    /// Pins the pages of `[va, va + len)` for a device that cannot take I/O page faults:
    /// faults each in for `write` (or read) access as the CPU would (breaking copy-on-write
    /// first, so the device gets this address space's own copy), gives each its own frame
    /// (block mappings are split), and takes a reference on each frame. While pinned a page
    /// is never copied away by a write fault, never reclaimed or migrated, and fork gives
    /// the child a copy instead of sharing it. Returns (page, frame) pairs for
    /// [`Mm::unpin_pages`].
    pub fn pin_pages(&self, va: Va, len: u64, write: bool) -> Result<Vec<(Va, Pa)>> {
        let page = self.page_size();
        let start = va.align_down(page);
        let end = va
            .checked_add(len)
            .and_then(|e| e.checked_align_up(page))
            .ok_or(Error::ZeroLength)?;
        self.check_range(start, end - start)?;
        let access = if write {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        let mut st = self.write_state()?;
        let mut pinned = Vec::new();
        let mut at = start;
        let result = (|| -> Result<()> {
            while at < end {
                self.fault_locked(&mut st, at, access)?;
                let mut leaf = self
                    .table
                    .lookup(self.ram(), at)?
                    .ok_or(Error::NotMapped(at))?;
                if leaf.size > page {
                    self.split_leaf(&leaf)?;
                    leaf = self
                        .table
                        .lookup(self.ram(), at)?
                        .ok_or(Error::NotMapped(at))?;
                }
                self.ram().get(leaf.pa)?;
                *st.pins.entry(at).or_insert(0) += 1;
                pinned.push((at, leaf.pa));
                at = at + page;
            }
            Ok(())
        })();
        if let Err(e) = result {
            drop(st);
            self.unpin_pages(&pinned);
            return Err(e);
        }
        Ok(pinned)
    }

    /// Drops pins taken by [`Mm::pin_pages`]. Works after exit too: the frames are released
    /// when their last holder lets go.
    pub fn unpin_pages(&self, pages: &[(Va, Pa)]) {
        let mut st = write(&self.state);
        for &(va, pa) in pages {
            if let Some(n) = st.pins.get_mut(&va) {
                *n -= 1;
                if *n == 0 {
                    st.pins.remove(&va);
                }
            }
            let _ = self.ram().put(pa);
        }
    }

    /// Pages currently pinned in this address space.
    pub fn pinned_pages(&self) -> usize {
        self.read_state().map_or(0, |st| st.pins.len())
    }

    // ---- reclaim, migration, aging ----

    /// Swaps out the private, unshared pages of `[va, va + len)`; returns how many. Shared
    /// and copy-on-write-shared pages are skipped (reclaiming them needs a reverse map).
    pub fn reclaim(&self, va: Va, len: u64) -> Result<usize> {
        let end = self.check_range(va, self.round_len(len)?)?;
        let mut st = self.write_state()?;
        self.split_edges(va, end)?;
        self.split_all(va, end)?;
        let mut victims = Vec::new();
        for leaf in self.table.leaves(self.ram(), va, end - va)? {
            let private = st
                .vmas
                .find(leaf.va)
                .is_some_and(|v| matches!(v.backing, Backing::Anonymous));
            if private && self.exclusive(&leaf)? {
                victims.push(leaf);
            }
        }
        if victims.is_empty() {
            return Ok(0);
        }
        self.invalidating(va, end, InvalidateReason::Reclaim, || {
            for leaf in &victims {
                self.table
                    .unmap(self.ram(), leaf.va, leaf.size, &self.tlb())?;
            }
            Ok(())
        })?;
        for leaf in &victims {
            let mut data = vec![0u8; leaf.size as usize].into_boxed_slice();
            self.ram().read(leaf.pa, &mut data)?;
            let slot = self.shared.swap.write(data)?;
            st.swapped.insert(leaf.va, slot);
            self.ram().put(leaf.pa)?;
            bump(&self.counters.swap_outs);
        }
        Ok(victims.len())
    }

    /// Moves the private page at `va` to a new frame; returns the new frame.
    pub fn migrate(&self, va: Va) -> Result<Pa> {
        let page = self.page_size();
        let va = va.align_down(page);
        self.check_range(va, page)?;
        let st = self.write_state()?;
        let vma = st.vmas.find(va).ok_or(Error::NotMapped(va))?;
        if !matches!(vma.backing, Backing::Anonymous) {
            return Err(Error::PageShared(va));
        }
        let mut leaf = self
            .table
            .lookup(self.ram(), va)?
            .ok_or(Error::NotMapped(va))?;
        if leaf.size > page {
            self.split_leaf(&leaf)?;
            leaf = self
                .table
                .lookup(self.ram(), va)?
                .ok_or(Error::NotMapped(va))?;
        }
        if !self.exclusive(&leaf)? {
            return Err(Error::PageShared(va));
        }
        let new = self.ram().alloc(page)?;
        // Unmap first so no agent can write the old frame while it is copied.
        self.invalidating(va, va + page, InvalidateReason::Migration, || {
            Ok(self.table.unmap(self.ram(), va, page, &self.tlb())?)
        })?;
        self.ram().copy(leaf.pa, new, page)?;
        let attrs = leaf.desc.attributes();
        self.map_new(new, va, page, attrs)?;
        self.ram().put(leaf.pa)?;
        bump(&self.counters.migrations);
        Ok(new)
    }

    /// Clears the access flag of every page in the range (page aging); returns how many
    /// had been accessed. The hardware (CPU or SMMU with HTTU) sets it again on access.
    pub fn clear_young(&self, va: Va, len: u64) -> Result<usize> {
        let end = self.check_range(va, self.round_len(len)?)?;
        let _st = self.write_state()?;
        self.invalidating(va, end, InvalidateReason::AccessFlagClear, || {
            let mut young = 0;
            for leaf in self.table.leaves(self.ram(), va, end - va)? {
                if leaf.desc.af() {
                    young += 1;
                    self.table
                        .update_leaf(self.ram(), leaf.va, &mut |d| d.with_af(false))?;
                    self.tlb().invalidate_leaf(leaf.va, leaf.size);
                }
            }
            Ok(young)
        })
    }

    // ---- statistics ----

    /// Counters.
    pub fn stats(&self) -> MmStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MmStats {
            faults: l(&c.faults),
            spurious_faults: l(&c.spurious_faults),
            cow_breaks: l(&c.cow_breaks),
            cow_reuses: l(&c.cow_reuses),
            thp_faults: l(&c.thp_faults),
            thp_splits: l(&c.thp_splits),
            swap_outs: l(&c.swap_outs),
            swap_ins: l(&c.swap_ins),
            migrations: l(&c.migrations),
        }
    }

    /// Bytes currently mapped (resident set).
    pub fn resident_bytes(&self) -> Result<u64> {
        let st = self.read_state()?;
        let mut total = 0;
        for v in st.vmas.iter() {
            for leaf in self.table.leaves(self.ram(), v.start, v.len())? {
                total += leaf.size;
            }
        }
        Ok(total)
    }

    /// Pages currently swapped out.
    pub fn swapped_pages(&self) -> usize {
        self.read_state().map_or(0, |st| st.swapped.len())
    }

    // ---- fork and exit ----

    /// Copies this address space into the empty `child` (fork).
    pub(crate) fn copy_into(&self, child: &Mm) -> Result<()> {
        let st = self.write_state()?;
        let mut cst = child.write_state()?;
        for vma in st.vmas.iter() {
            // Device mappings cannot be wiped (there is no zero page of device memory or of
            // driver frames): WIPEONFORK leaves them out of the child like DONTCOPY.
            if vma.flags.contains(MapFlags::DONTCOPY)
                || (vma.backing.is_device() && vma.flags.contains(MapFlags::WIPEONFORK))
            {
                continue;
            }
            cst.vmas.insert(vma.clone());
            if vma.flags.contains(MapFlags::WIPEONFORK) {
                continue;
            }
            let leaves = self.table.leaves(self.ram(), vma.start, vma.len())?;
            let private = matches!(vma.backing, Backing::Anonymous);
            let cow = private && vma.prot.contains(Prot::WRITE);
            let copy = || -> Result<()> {
                for leaf in &leaves {
                    if private && st.pins.contains_key(&leaf.va) {
                        // A device holds this page: the parent keeps it, writable; the
                        // child gets its own copy now rather than sharing it.
                        let frame = self.ram().alloc(leaf.size)?;
                        self.ram().copy(leaf.pa, frame, leaf.size)?;
                        child
                            .table
                            .map(
                                self.ram(),
                                leaf.va,
                                frame,
                                leaf.size,
                                leaf.desc.attributes(),
                                false,
                                &child.tlb(),
                            )
                            .inspect_err(|_| {
                                let _ = self.ram().put(frame);
                            })?;
                        continue;
                    }
                    self.get_frames(leaf.pa, leaf.size)?;
                    let mut attrs = leaf.desc.attributes();
                    if cow && !attrs.contains(Attributes::AP_RO) {
                        self.table.protect(
                            self.ram(),
                            leaf.va,
                            leaf.size,
                            Attributes::AP_RO,
                            Attributes::empty(),
                            &self.tlb(),
                        )?;
                        attrs |= Attributes::AP_RO;
                    }
                    child
                        .table
                        .map(
                            self.ram(),
                            leaf.va,
                            leaf.pa,
                            leaf.size,
                            attrs,
                            false,
                            &child.tlb(),
                        )
                        .inspect_err(|_| {
                            let _ = self.put_frames(leaf.pa, leaf.size);
                        })?;
                }
                Ok(())
            };
            if cow && !leaves.is_empty() {
                self.invalidating(vma.start, vma.end, InvalidateReason::ProtectionChange, copy)?;
            } else {
                copy()?;
            }
            if private {
                for (va, slot) in st.swapped.range(vma.start..vma.end) {
                    cst.swapped.insert(*va, self.shared.swap.duplicate(*slot)?);
                }
            }
        }
        Ok(())
    }

    /// Exit: release notifiers first (tables still intact), then every page, swap slot,
    /// table frame and the ASID go back to their pools. Idempotent.
    pub(crate) fn exit(&self) {
        let notifiers = core::mem::take(&mut *write(&self.notifiers));
        for (_, n) in &notifiers {
            n.release(self.asid);
        }
        let mut st = write(&self.state);
        if !st.alive {
            return;
        }
        st.alive = false;
        let top = 1u64 << self.table.config().ia_bits();
        // One ASID-wide invalidation at the end instead of one per page.
        if let Ok(removed) = self.table.unmap(self.ram(), Va(0), top, &sva_vmsa::NoTlb) {
            for leaf in removed {
                let _ = self.put_frames(leaf.pa, leaf.size);
            }
        }
        drop(st.vmas.take_all());
        for (_, slot) in core::mem::take(&mut st.swapped) {
            self.shared.swap.discard(slot);
        }
        let _ = self.table.clone().destroy(self.ram());
        self.shared.tlb.send(Tlbi::Asid(self.asid));
        self.shared.asids.free(self.asid);
    }
}

impl Drop for Mm {
    fn drop(&mut self) {
        // An address space nobody exited explicitly still returns its memory.
        self.exit();
    }
}

impl AsidTlb<'_> {
    fn invalidate_leaf(&self, va: Va, size: u64) {
        sva_vmsa::TlbInvalidate::invalidate(self, va, size, true);
    }
}

/// Where a piece of a CPU access goes.
enum Target<'a> {
    /// Physical memory.
    Ram(Pa),
    /// Device registers.
    Io(IoTarget<'a>),
}

/// A piece of a CPU access on device registers: `region` at `offset`, which is `va`.
struct IoTarget<'a> {
    region: &'a dyn IoMemory,
    offset: u64,
    va: Va,
}

impl IoTarget<'_> {
    fn read(&self, buf: &mut [u8]) -> Result<()> {
        self.region
            .read(self.offset, buf)
            .map_err(|e| io_error(e, self.va, self.offset))
    }

    fn write(&self, data: &[u8]) -> Result<()> {
        self.region
            .write(self.offset, data)
            .map_err(|e| io_error(e, self.va, self.offset))
    }
}

/// The address-space error for a failed register access that started at region offset
/// `offset`, which `va` maps: the failing offset is translated back to its address.
fn io_error(e: IoError, va: Va, offset: u64) -> Error {
    let at = |off: u64| {
        off.checked_sub(offset)
            .and_then(|d| va.checked_add(d))
            .unwrap_or(va)
    };
    match e {
        IoError::Bus(off) => Error::Bus { va: at(off) },
        IoError::Unsupported(off) => Error::IoUnsupported { va: at(off) },
    }
}
