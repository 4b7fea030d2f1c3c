use crate::{AsidAllocator, Error, Mm, Result, SwapStats, SwapStore, TlbBroadcast};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use sva_physmem::Ram;
use sva_sync::{Mutex, MutexGuard, lock};
use sva_vmsa::{Granule, TableConfig};

/// A process identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid(pub u32);

impl core::fmt::Display for Pid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How address spaces are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmConfig {
    /// Translation granule (page size) of every address space.
    pub granule: Granule,
    /// Virtual address bits (T0SZ = 64 - ia_bits), 25..=48.
    pub ia_bits: u32,
    /// Physical address bits the tables may output (IPS).
    pub oa_bits: u32,
    /// Use 2 MiB block mappings for aligned private anonymous memory (4 KiB granule only).
    pub thp: bool,
    /// Swap store capacity in pages.
    pub swap_pages: u64,
    /// Largest ASID (16-bit ASIDs: 65535).
    pub max_asid: u16,
}

impl Default for MmConfig {
    fn default() -> Self {
        Self {
            granule: Granule::Size4K,
            ia_bits: 48,
            oa_bits: 48,
            thp: true,
            swap_pages: 1 << 20,
            max_asid: u16::MAX,
        }
    }
}

/// What every address space of a system shares.
pub(crate) struct Shared {
    pub(crate) ram: Arc<Ram>,
    pub(crate) tlb: Arc<TlbBroadcast>,
    pub(crate) swap: SwapStore,
    pub(crate) asids: Arc<AsidAllocator>,
    pub(crate) config: MmConfig,
    pub(crate) table: TableConfig,
}

/// The operating system model: processes and what they share.
pub struct System {
    shared: Arc<Shared>,
    procs: Mutex<BTreeMap<Pid, Arc<Mm>>>,
    next_pid: AtomicU32,
}

impl core::fmt::Debug for System {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("System")
            .field("config", &self.shared.config)
            .field("processes", &self.pids())
            .finish_non_exhaustive()
    }
}

impl System {
    /// A system on `ram` whose address spaces follow `config`.
    pub fn new(ram: Arc<Ram>, config: MmConfig) -> Result<Self> {
        let table = TableConfig::new(config.granule, config.ia_bits, config.oa_bits)?;
        Ok(Self {
            shared: Arc::new(Shared {
                ram,
                tlb: Arc::new(TlbBroadcast::default()),
                swap: SwapStore::new(config.swap_pages),
                asids: Arc::new(AsidAllocator::new(config.max_asid)),
                config,
                table,
            }),
            procs: Mutex::new(BTreeMap::new()),
            next_pid: AtomicU32::new(1),
        })
    }

    /// The RAM every address space allocates from.
    pub fn ram(&self) -> &Arc<Ram> {
        &self.shared.ram
    }

    /// The CPUs' broadcast TLB maintenance, for snoopers (an SMMU with BTM).
    pub fn tlb(&self) -> &Arc<TlbBroadcast> {
        &self.shared.tlb
    }

    /// The ASID allocator of the CPUs' address spaces. An IOMMU whose private contexts
    /// share the ASID space with CPU contexts (SMMUv3 with BTM and SVA) allocates them here,
    /// so no private ASID can ever clash with a process's.
    pub fn asid_allocator(&self) -> Arc<AsidAllocator> {
        self.shared.asids.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &MmConfig {
        &self.shared.config
    }

    /// Swap usage.
    pub fn swap_stats(&self) -> SwapStats {
        self.shared.swap.stats()
    }

    fn procs(&self) -> MutexGuard<'_, BTreeMap<Pid, Arc<Mm>>> {
        lock(&self.procs)
    }

    fn add(&self, mm: Mm) -> Arc<Mm> {
        let mm = Arc::new(mm);
        self.procs().insert(mm.pid(), mm.clone());
        mm
    }

    /// A new process with an empty address space.
    pub fn spawn(&self) -> Result<Arc<Mm>> {
        let pid = Pid(self.next_pid.fetch_add(1, Ordering::Relaxed));
        Ok(self.add(Mm::new(pid, self.shared.clone())?))
    }

    /// fork: a new process whose address space is a copy-on-write copy of `parent`'s.
    /// MAP_SHARED mappings are shared, DONTCOPY ones left out, WIPEONFORK ones empty
    /// (device mappings, [`Mm::mmap_io`] and [`Mm::mmap_frames`], with WIPEONFORK are left
    /// out like DONTCOPY). Notifiers are not inherited: the child is bound to no device, and
    /// it has no PASID ([`Mm::pasid`]).
    pub fn fork(&self, parent: Pid) -> Result<Arc<Mm>> {
        let parent = self.process(parent)?;
        let pid = Pid(self.next_pid.fetch_add(1, Ordering::Relaxed));
        let child = Mm::new(pid, self.shared.clone())?;
        if let Err(e) = parent.copy_into(&child) {
            child.exit();
            return Err(e);
        }
        Ok(self.add(child))
    }

    /// exit: runs the release notifiers, then tears the address space down (every frame,
    /// table, swap slot and the ASID return to their pools).
    pub fn exit(&self, pid: Pid) -> Result<()> {
        let mm = self.procs().remove(&pid).ok_or(Error::NoProcess(pid))?;
        mm.exit();
        Ok(())
    }

    /// The live process `pid`.
    pub fn process(&self, pid: Pid) -> Result<Arc<Mm>> {
        self.procs().get(&pid).cloned().ok_or(Error::NoProcess(pid))
    }

    /// Live processes, lowest pid first.
    pub fn pids(&self) -> Vec<Pid> {
        self.procs().keys().copied().collect()
    }
}
