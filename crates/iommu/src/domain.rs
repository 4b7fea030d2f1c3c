//! Domains for DMA without PASID: what a device's plain DMA goes through. A device always
//! sits in one: blocked (the default), identity, or a DMA domain with a private I/O page
//! table, an IOVA allocator and an ASID from the CPUs' own ASID space (so it can never clash
//! with a process's ASID in an IOMMU that shares the ASID space with the CPUs).

use crate::driver::{DomainConfig, IommuDriver, SvaContext};
use crate::iopf::DeviceId;
use crate::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use sva_addr::{Asid, Iova, Pa, Pasid, Va};
use sva_mm::{AsidAllocator, Prot};
use sva_physmem::Ram;
use sva_sync::{Mutex, lock};
use sva_vmsa::{Attributes, Granule, PageTable, TableConfig};

/// Lowest IOVA handed out: page 0 stays unmapped so a null DMA address faults.
pub const IOVA_BASE: u64 = 0x1_0000;

/// A domain to put a device's DMA without PASID in.
#[derive(Clone)]
pub enum Domain {
    /// Every access is terminated.
    Blocked,
    /// IOVA = physical address.
    Identity,
    /// Translated by a DMA domain.
    Dma(Arc<DmaDomain>),
}

impl core::fmt::Debug for Domain {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Domain::Blocked => f.write_str("Blocked"),
            Domain::Identity => f.write_str("Identity"),
            Domain::Dma(d) => write!(f, "Dma(asid {})", d.asid()),
        }
    }
}

/// First-fit allocator of naturally aligned IOVA ranges in `[IOVA_BASE, limit)`.
#[derive(Debug)]
struct IovaSpace {
    limit: u64,
    /// Allocated ranges: start → length.
    used: BTreeMap<u64, u64>,
}

impl IovaSpace {
    /// The lowest free `size`-byte range aligned to `align`.
    fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        let mut at = IOVA_BASE;
        for (&start, &len) in &self.used {
            let cand = at.checked_add(align - 1)? & !(align - 1);
            if cand.checked_add(size)? <= start {
                break;
            }
            at = at.max(start + len);
        }
        let cand = at.checked_add(align - 1)? & !(align - 1);
        (cand.checked_add(size)? <= self.limit).then(|| {
            self.used.insert(cand, size);
            cand
        })
    }

    /// Reserves `[start, start + size)` if it is free.
    fn reserve(&mut self, start: u64, size: u64) -> bool {
        let end = match start.checked_add(size) {
            Some(e) if start >= IOVA_BASE && e <= self.limit => e,
            _ => return false,
        };
        let overlaps = self
            .used
            .range(..end)
            .next_back()
            .is_some_and(|(&s, &l)| s + l > start);
        if overlaps {
            return false;
        }
        self.used.insert(start, size);
        true
    }
}

/// An I/O page table owned by the core (a DMA domain's, or a device's private table for a
/// PASID): a 48-bit, 4 KiB-granule table in simulated RAM with an ASID from the CPUs'
/// allocator. Dropping it flushes its ASID from the IOTLB before the ASID is freed.
pub(crate) struct IoTable {
    ram: Arc<Ram>,
    table: PageTable,
    asid: Asid,
    asids: Arc<AsidAllocator>,
    driver: Arc<dyn IommuDriver>,
}

impl IoTable {
    pub(crate) fn new(
        driver: Arc<dyn IommuDriver>,
        ram: Arc<Ram>,
        asids: Arc<AsidAllocator>,
    ) -> Result<Self> {
        let config = TableConfig::new(Granule::Size4K, 48, 48).map_err(Error::Table)?;
        if !driver.supports_tables(&config) {
            return Err(Error::IncompatibleAddressSpace {
                granule: config.granule().size(),
                ia_bits: config.ia_bits(),
            });
        }
        let asid = asids.alloc()?;
        let table = match PageTable::new(&ram, config) {
            Ok(t) => t,
            Err(e) => {
                asids.free(asid);
                return Err(Error::Table(e));
            }
        };
        Ok(Self {
            ram,
            table,
            asid,
            asids,
            driver,
        })
    }

    pub(crate) fn asid(&self) -> Asid {
        self.asid
    }

    pub(crate) fn limit(&self) -> u64 {
        self.table.config().ia_size()
    }

    /// What the IOMMU is pointed at.
    pub(crate) fn context(&self) -> SvaContext {
        SvaContext {
            table_root: self.table.root(),
            config: *self.table.config(),
            asid: self.asid,
            mair: sva_mm::MAIR,
        }
    }

    /// Device-accessible leaf attributes: unprivileged, never executable, read-only unless
    /// `prot` has WRITE.
    fn attrs(prot: Prot) -> Attributes {
        let mut a = Attributes::AF
            | Attributes::SH_INNER
            | Attributes::NG
            | Attributes::AP_EL0
            | Attributes::UXN
            | Attributes::PXN;
        if !prot.contains(Prot::WRITE) {
            a |= Attributes::AP_RO;
        }
        a
    }

    pub(crate) fn map(&self, iova: u64, pa: Pa, size: u64, prot: Prot) -> Result<()> {
        self.table
            .map(
                &self.ram,
                Va(iova),
                pa,
                size,
                Self::attrs(prot),
                false,
                &sva_vmsa::NoTlb,
            )
            .map_err(Error::Table)
    }

    /// Unmaps `[iova, iova + size)` and waits until no IOTLB entry of the table and no TLB
    /// of `targets` holds it.
    pub(crate) fn unmap(&self, iova: u64, size: u64, targets: &[(DeviceId, Pasid)]) -> Result<()> {
        self.table
            .unmap(&self.ram, Va(iova), size, &sva_vmsa::NoTlb)
            .map_err(Error::Table)?;
        self.driver
            .invalidate(self.asid, Va(iova), Va(iova + size), targets, false)?;
        Ok(())
    }

    pub(crate) fn translate(&self, iova: u64) -> Option<Pa> {
        let leaf = self.table.lookup(&*self.ram, Va(iova)).ok()??;
        Some(leaf.pa + (iova - leaf.va.raw()))
    }
}

impl Drop for IoTable {
    fn drop(&mut self) {
        // No device uses the table any more; drop what the IOTLB may hold before the ASID
        // can go to a process.
        let top = Va(self.limit());
        let _ = self.driver.invalidate(self.asid, Va(0), top, &[], false);
        let _ = self.table.clone().destroy(&self.ram);
        self.asids.free(self.asid);
    }
}

struct DomainState {
    iova: IovaSpace,
    devices: BTreeSet<DeviceId>,
}

/// A DMA domain: a private I/O page table in simulated RAM, in the CPU's table format.
pub struct DmaDomain {
    io: IoTable,
    state: Mutex<DomainState>,
}

impl core::fmt::Debug for DmaDomain {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DmaDomain")
            .field("asid", &self.asid())
            .finish_non_exhaustive()
    }
}

impl DmaDomain {
    pub(crate) fn new(io: IoTable) -> Self {
        let limit = io.limit();
        Self {
            io,
            state: Mutex::new(DomainState {
                iova: IovaSpace {
                    limit,
                    used: BTreeMap::new(),
                },
                devices: BTreeSet::new(),
            }),
        }
    }

    /// The domain's ASID.
    pub fn asid(&self) -> Asid {
        self.io.asid()
    }

    pub(crate) fn context(&self) -> SvaContext {
        self.io.context()
    }

    pub(crate) fn attach(&self, device: DeviceId) {
        lock(&self.state).devices.insert(device);
    }

    pub(crate) fn detach(&self, device: DeviceId) {
        lock(&self.state).devices.remove(&device);
    }

    fn check(pa: Pa, size: u64) -> Result<()> {
        if size == 0 || !size.is_multiple_of(4096) || !pa.is_aligned(4096) {
            return Err(Error::BadMapping { pa, size });
        }
        Ok(())
    }

    /// Maps `[pa, pa + size)` at a newly allocated IOVA (aligned to the largest power of two
    /// up to 2 MiB that divides the size, so blocks can be used) and returns it. The caller
    /// owns the memory and keeps it alive while mapped.
    pub fn map(&self, pa: Pa, size: u64, prot: Prot) -> Result<Iova> {
        Self::check(pa, size)?;
        let align = (1u64 << size.trailing_zeros().min(21)).max(4096);
        let iova = lock(&self.state)
            .iova
            .alloc(size, align)
            .ok_or(Error::IovaExhausted(size))?;
        self.map_table(iova, pa, size, prot)
    }

    /// Maps `[pa, pa + size)` at `iova`, which must be free.
    pub fn map_at(&self, iova: Iova, pa: Pa, size: u64, prot: Prot) -> Result<Iova> {
        Self::check(pa, size)?;
        if !iova.is_aligned(4096) || !lock(&self.state).iova.reserve(iova.raw(), size) {
            return Err(Error::IovaBusy { iova, size });
        }
        self.map_table(iova.raw(), pa, size, prot)
    }

    fn map_table(&self, iova: u64, pa: Pa, size: u64, prot: Prot) -> Result<Iova> {
        if let Err(e) = self.io.map(iova, pa, size, prot) {
            lock(&self.state).iova.used.remove(&iova);
            return Err(e);
        }
        Ok(Iova(iova))
    }

    /// Unmaps the mapping that starts at `iova` and waits until no IOTLB or device TLB of
    /// an attached device holds it. Returns its size.
    pub fn unmap(&self, iova: Iova) -> Result<u64> {
        let (size, targets) = {
            let st = lock(&self.state);
            let size = *st
                .iova
                .used
                .get(&iova.raw())
                .ok_or(Error::NotMapped(iova))?;
            let targets: Vec<(DeviceId, Pasid)> =
                st.devices.iter().map(|&d| (d, Pasid(0))).collect();
            (size, targets)
        };
        self.io.unmap(iova.raw(), size, &targets)?;
        // Only now may the range be handed out again.
        lock(&self.state).iova.used.remove(&iova.raw());
        Ok(size)
    }

    /// The physical address `iova` maps to, if any.
    pub fn translate(&self, iova: Iova) -> Option<Pa> {
        self.io.translate(iova.raw())
    }

    /// Bytes currently mapped.
    pub fn mapped_bytes(&self) -> u64 {
        lock(&self.state).iova.used.values().sum()
    }
}

impl Domain {
    pub(crate) fn config(&self) -> DomainConfig {
        match self {
            Domain::Blocked => DomainConfig::Blocked,
            Domain::Identity => DomainConfig::Identity,
            Domain::Dma(d) => DomainConfig::Dma(d.context()),
        }
    }
}
