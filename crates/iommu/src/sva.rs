//! Binding devices to CPU address spaces: one PASID per address space system-wide,
//! refcounted bonds per (device, address space), an MMU notifier per bound address space
//! that turns every CPU-side change into IOMMU and device-TLB invalidation, and the exit
//! rules of the seed design.
//!
//! # Locking
//! `bind_lock` serialises enable/disable/bind/unbind/exit bookkeeping (it may call into the
//! driver and register notifiers on an address space). The notifier of a bound address
//! space never takes it: it reads its own target list and calls the driver, so the order
//! is `bind_lock` → address-space lock → notifier targets → driver, and the address
//! space's invalidations never wait for a bind.

use crate::domain::{DmaDomain, Domain, IoTable};
use crate::driver::{IommuDriver, SvaContext};
use crate::iopf::{DeviceId, IopfQueue, PageRequest, PageResponse, ResponseSink};
use crate::{Error, PasidAllocator, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use sva_addr::{Asid, Pasid, Va};
use sva_mm::{InvalidateRange, Mm, MmuNotifier, NotifierId, Pid};
use sva_sync::{Mutex, lock};

/// What a device asks for when it enables SVA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SvaFeatures {
    /// I/O page faults (PRI or stall): without them the device must only touch memory that
    /// is already mapped.
    pub iopf: bool,
    /// A PASID limit below what the device and the IOMMU support.
    pub max_pasid: Option<Pasid>,
}

/// A device bound to an address space. Unbinding drops one reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bond {
    /// The device.
    pub device: DeviceId,
    /// The address space's PASID: what the device tags its DMA with.
    pub pasid: Pasid,
    /// The process owning the address space.
    pub pid: Pid,
}

/// Called when a bound address space exits, with the PASID it had, before its memory is
/// torn down: the device driver stops the queues using it.
pub type ExitHandler = Arc<dyn Fn(DeviceId, Pasid) + Send + Sync>;

struct DeviceState {
    max_pasid: Pasid,
    bonds: usize,
}

/// A device's private I/O page table for an address space's PASID: explicit mappings of
/// pinned pages, at the same addresses as in the process.
struct PrivateTable {
    io: IoTable,
    /// Pinned pages mapped in the table: page → frame.
    pins: BTreeMap<Va, sva_addr::Pa>,
}

struct Space {
    mm: Arc<Mm>,
    asid: Asid,
    notifier: Arc<SvaNotifier>,
    notifier_id: NotifierId,
    /// Bond references per device.
    bonds: BTreeMap<DeviceId, u32>,
    /// Devices bound with a private table instead of the CPU's.
    private: BTreeMap<DeviceId, PrivateTable>,
    exited: bool,
}

#[derive(Default)]
struct State {
    /// Default domains (DMA without PASID) of devices that left Blocked.
    domains: BTreeMap<DeviceId, Domain>,
    devices: BTreeMap<DeviceId, DeviceState>,
    spaces: BTreeMap<Pasid, Space>,
    by_pid: BTreeMap<Pid, Pasid>,
}

struct Inner {
    driver: Arc<dyn IommuDriver>,
    ram: Arc<sva_physmem::Ram>,
    asids: Arc<sva_mm::AsidAllocator>,
    pasids: PasidAllocator,
    iopf: IopfQueue,
    bind_lock: Mutex<State>,
    exit_handlers: Mutex<BTreeMap<DeviceId, ExitHandler>>,
    /// The (device, PASID) pairs with a bond: page requests from any other pair are
    /// answered Invalid without reaching an address space. Kept apart from `bind_lock` so
    /// the interrupt path never waits for a bind.
    bound: Mutex<std::collections::BTreeSet<(DeviceId, Pasid)>>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    binds: AtomicU64,
    unbinds: AtomicU64,
    pasids_allocated: AtomicU64,
}

/// Counters of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SvaStats {
    /// Successful binds (a rebind of the same pair counts again).
    pub binds: u64,
    /// Successful unbinds.
    pub unbinds: u64,
    /// PASIDs handed to address spaces.
    pub pasids_allocated: u64,
    /// Address spaces holding a PASID now.
    pub pasids_in_use: u64,
}

/// The SVA core for one IOMMU driver.
pub struct Sva {
    inner: Arc<Inner>,
}

impl core::fmt::Debug for Sva {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sva").finish_non_exhaustive()
    }
}

/// Responses from the fault queue go back through the driver.
struct DriverSink(Weak<dyn IommuDriver>);

impl ResponseSink for DriverSink {
    fn respond(&self, device: DeviceId, pasid: Pasid, group: u16, response: PageResponse) {
        if let Some(d) = self.0.upgrade() {
            // A response the hardware refuses leaves the device to its completion timeout;
            // nothing the core could do differs.
            let _ = d.page_response(device, pasid, group, response);
        }
    }
}

/// The MMU notifier of one bound address space.
struct SvaNotifier {
    inner: Weak<Inner>,
    pasid: Pasid,
    /// Devices bound to this address space (the ATCs to invalidate).
    targets: Mutex<Vec<(DeviceId, Pasid)>>,
}

impl MmuNotifier for SvaNotifier {
    fn invalidate_range_end(&self, range: &InvalidateRange) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let targets = lock(&self.targets).clone();
        // The IOMMU must not keep a translation the CPU dropped; an error here means the
        // hardware did not confirm, and there is no caller to hand it to.
        let _ = inner
            .driver
            .invalidate(range.asid, range.start, range.end, &targets, true);
    }

    fn release(&self, asid: Asid) {
        if let Some(inner) = self.inner.upgrade() {
            inner.release(self.pasid, asid);
        }
    }
}

impl Sva {
    /// The core for `driver`, with `iopf_workers` fault-handling threads. I/O page tables
    /// the core owns (DMA domains, private PASID tables) live in `ram` and take their ASIDs
    /// from `asids`: pass the CPUs' allocator ([`sva_mm::System::asid_allocator`]) so they
    /// can never clash with a process's ASID.
    pub fn new(
        driver: Arc<dyn IommuDriver>,
        iopf_workers: usize,
        ram: Arc<sva_physmem::Ram>,
        asids: Arc<sva_mm::AsidAllocator>,
    ) -> Self {
        let sink = Arc::new(DriverSink(Arc::downgrade(&driver)));
        Self {
            inner: Arc::new(Inner {
                driver,
                ram,
                asids,
                pasids: PasidAllocator::new(),
                iopf: IopfQueue::new(iopf_workers, sink),
                bind_lock: Mutex::new(State::default()),
                exit_handlers: Mutex::new(BTreeMap::new()),
                bound: Mutex::new(std::collections::BTreeSet::new()),
                counters: Counters::default(),
            }),
        }
    }

    /// Enables SVA for `device`. Enabling may briefly interrupt the device's DMA without
    /// PASID while its stream is reprogrammed (on PCIe, PASID is enabled before ATS).
    pub fn enable_device(&self, device: DeviceId, features: SvaFeatures) -> Result<()> {
        let mut st = lock(&self.inner.bind_lock);
        if st.devices.contains_key(&device) {
            return Err(Error::AlreadyEnabled(device));
        }
        let caps = self.inner.driver.sva_caps(device)?;
        if caps.pasid_bits == 0 {
            return Err(Error::NoSvaSupport(device));
        }
        if features.iopf && !caps.iopf {
            return Err(Error::FeatureMissing {
                device,
                feature: "I/O page faults (PRI or stall)",
            });
        }
        let hw_max = Pasid(((1u64 << caps.pasid_bits.min(20)) - 1) as u32);
        let max_pasid = features.max_pasid.map_or(hw_max, |m| m.min(hw_max));
        if max_pasid < self.inner.driver.min_pasid() {
            return Err(Error::NoSvaSupport(device));
        }
        self.inner.driver.enable_sva(device, features.iopf)?;
        st.devices.insert(
            device,
            DeviceState {
                max_pasid,
                bonds: 0,
            },
        );
        Ok(())
    }

    /// Disables SVA for `device`; it must have no bond left.
    pub fn disable_device(&self, device: DeviceId) -> Result<()> {
        let mut st = lock(&self.inner.bind_lock);
        let dev = st.devices.get(&device).ok_or(Error::NotEnabled(device))?;
        if dev.bonds > 0 {
            return Err(Error::DeviceBusy(device));
        }
        self.inner.driver.disable_sva(device)?;
        st.devices.remove(&device);
        Ok(())
    }

    /// A new DMA domain.
    pub fn dma_domain(&self) -> Result<Arc<DmaDomain>> {
        Ok(Arc::new(DmaDomain::new(self.inner.io_table()?)))
    }

    /// Puts `device`'s DMA without PASID in `domain` (every device starts Blocked). Leaving
    /// a DMA domain flushes the device's TLB of it. Independent of SVA, which it keeps.
    pub fn attach_domain(&self, device: DeviceId, domain: Domain) -> Result<()> {
        let mut st = lock(&self.inner.bind_lock);
        self.inner.driver.set_domain(device, &domain.config())?;
        if let Domain::Dma(d) = &domain {
            d.attach(device);
        }
        let previous = st.domains.insert(device, domain);
        if let Some(Domain::Dma(old)) = previous {
            old.detach(device);
            let top = Va(1 << 48);
            self.inner
                .driver
                .invalidate(old.asid(), Va(0), top, &[(device, Pasid(0))], false)?;
        }
        Ok(())
    }

    /// The domain `device`'s DMA without PASID is in.
    pub fn domain_of(&self, device: DeviceId) -> Domain {
        lock(&self.inner.bind_lock)
            .domains
            .get(&device)
            .cloned()
            .unwrap_or(Domain::Blocked)
    }

    /// Registers what to call when an address space bound to `device` exits.
    pub fn set_exit_handler(&self, device: DeviceId, handler: ExitHandler) {
        lock(&self.inner.exit_handlers).insert(device, handler);
    }

    /// Binds `device` to `mm`: the device may then DMA with the returned PASID on the
    /// process's virtual addresses. Binding the same pair again takes another reference on
    /// the same bond.
    pub fn bind(&self, device: DeviceId, mm: &Arc<Mm>) -> Result<Bond> {
        self.bind_mode(device, mm, false)
    }

    /// Bind, unbind and PASID counters.
    pub fn stats(&self) -> SvaStats {
        let c = &self.inner.counters;
        SvaStats {
            binds: c.binds.load(Ordering::Relaxed),
            unbinds: c.unbinds.load(Ordering::Relaxed),
            pasids_allocated: c.pasids_allocated.load(Ordering::Relaxed),
            pasids_in_use: lock(&self.inner.bind_lock).spaces.len() as u64,
        }
    }

    /// Binds `device` to `mm` with a private I/O page table at the address space's PASID,
    /// for devices that cannot take I/O page faults: the device sees only what
    /// [`Sva::map`] mapped (pinned, at the same addresses as in the process), and two
    /// devices may see different parts of one process. CPU-side changes do not reach the
    /// table: a mapped page stays the device's until [`Sva::unmap`].
    pub fn bind_private(&self, device: DeviceId, mm: &Arc<Mm>) -> Result<Bond> {
        self.bind_mode(device, mm, true)
    }

    fn bind_mode(&self, device: DeviceId, mm: &Arc<Mm>, private: bool) -> Result<Bond> {
        let bond = self.bind_locked(device, mm, private)?;
        self.inner.counters.binds.fetch_add(1, Ordering::Relaxed);
        Ok(bond)
    }

    fn bind_locked(&self, device: DeviceId, mm: &Arc<Mm>, private: bool) -> Result<Bond> {
        let inner = &self.inner;
        let mut guard = lock(&inner.bind_lock);
        let st = &mut *guard;
        let dev = st.devices.get(&device).ok_or(Error::NotEnabled(device))?;
        let max = dev.max_pasid;
        if !mm.is_alive() {
            return Err(Error::Exited(mm.pid()));
        }
        let config = mm.table_config();
        if !inner.driver.supports_tables(&config) {
            return Err(Error::IncompatibleAddressSpace {
                granule: config.granule().size(),
                ia_bits: config.ia_bits(),
            });
        }
        let ctx = SvaContext {
            table_root: mm.table_root(),
            config,
            asid: mm.asid(),
            mair: sva_mm::MAIR,
        };
        let (pasid, new_space) = match st.by_pid.get(&mm.pid()) {
            Some(&pasid) => {
                if pasid > max {
                    return Err(Error::PasidAboveDeviceMax { pasid, max });
                }
                let space = st.spaces.get_mut(&pasid).expect("by_pid and spaces agree");
                if space.exited {
                    return Err(Error::Exited(mm.pid()));
                }
                if let Some(refs) = space.bonds.get_mut(&device) {
                    if space.private.contains_key(&device) != private {
                        // Bound already, the other way.
                        return Err(Error::DeviceBusy(device));
                    }
                    *refs += 1;
                    return Ok(Bond {
                        device,
                        pasid,
                        pid: mm.pid(),
                    });
                }
                (pasid, false)
            }
            None => {
                let pasid = inner.pasids.alloc(inner.driver.min_pasid(), max)?;
                inner
                    .counters
                    .pasids_allocated
                    .fetch_add(1, Ordering::Relaxed);
                let notifier = Arc::new(SvaNotifier {
                    inner: Arc::downgrade(inner),
                    pasid,
                    targets: Mutex::new(Vec::new()),
                });
                let notifier_id = match mm.register_notifier(notifier.clone()) {
                    Ok(id) => id,
                    Err(e) => {
                        let _ = inner.pasids.free(pasid);
                        return Err(e.into());
                    }
                };
                inner.iopf.add_space(pasid, mm);
                // The process's PASID (what ENQCMD stores carry), until it is freed.
                mm.set_pasid(Some(pasid));
                st.spaces.insert(
                    pasid,
                    Space {
                        mm: mm.clone(),
                        asid: mm.asid(),
                        notifier,
                        notifier_id,
                        bonds: BTreeMap::new(),
                        private: BTreeMap::new(),
                        exited: false,
                    },
                );
                st.by_pid.insert(mm.pid(), pasid);
                (pasid, true)
            }
        };
        let table = if private {
            match inner.io_table() {
                Ok(t) => Some(t),
                Err(e) => {
                    if new_space {
                        Self::drop_space(inner, st, pasid);
                    }
                    return Err(e);
                }
            }
        } else {
            None
        };
        let ctx = table.as_ref().map_or(ctx, IoTable::context);
        if let Err(e) = inner.driver.set_pasid(device, pasid, &ctx) {
            if new_space {
                Self::drop_space(inner, st, pasid);
            }
            return Err(e.into());
        }
        let space = st.spaces.get_mut(&pasid).expect("present");
        space.bonds.insert(device, 1);
        lock(&inner.bound).insert((device, pasid));
        match table {
            Some(io) => {
                space.private.insert(
                    device,
                    PrivateTable {
                        io,
                        pins: BTreeMap::new(),
                    },
                );
            }
            None => lock(&space.notifier.targets).push((device, pasid)),
        }
        st.devices.get_mut(&device).expect("checked").bonds += 1;
        Ok(Bond {
            device,
            pasid,
            pid: mm.pid(),
        })
    }

    /// Drops one reference on `bond`. The last one tears the PASID context down. The caller
    /// guarantees the device no longer issues DMA or page requests with the PASID; the core
    /// waits until every page request already received for it has been answered, then
    /// removes the context and invalidates what the IOMMU and the device cached. The PASID
    /// returns to the allocator when its address space has no bond left.
    pub fn unbind(&self, bond: Bond) -> Result<()> {
        self.unbind_locked(bond)?;
        self.inner.counters.unbinds.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn unbind_locked(&self, bond: Bond) -> Result<()> {
        let inner = &self.inner;
        let mut guard = lock(&inner.bind_lock);
        let st = &mut *guard;
        let space = st
            .spaces
            .get_mut(&bond.pasid)
            .filter(|s| s.mm.pid() == bond.pid)
            .ok_or(Error::NotBound(bond))?;
        let refs = space
            .bonds
            .get_mut(&bond.device)
            .ok_or(Error::NotBound(bond))?;
        *refs -= 1;
        if *refs > 0 {
            return Ok(());
        }
        space.bonds.remove(&bond.device);
        lock(&space.notifier.targets).retain(|t| t.0 != bond.device);
        let private = space.private.remove(&bond.device);
        let last = space.bonds.is_empty();
        // From now on the device's requests for the PASID are refused without reaching the
        // address space; those still in the hardware queues are flushed out first, so none
        // can reach the next owner of the PASID.
        lock(&inner.bound).remove(&(bond.device, bond.pasid));
        let _ = inner.driver.flush_page_requests(bond.device);
        inner.iopf.drain(bond.pasid);
        let cleared = inner.driver.clear_pasid(bond.device, bond.pasid);
        let target = [(bond.device, bond.pasid)];
        let invalidated = match &private {
            Some(pt) => {
                inner
                    .driver
                    .invalidate(pt.io.asid(), Va(0), Va(pt.io.limit()), &target, false)
            }
            None => {
                let top = Va(space.mm.table_config().ia_size());
                inner
                    .driver
                    .invalidate(space.asid, Va(0), top, &target, true)
            }
        };
        if let Some(pt) = private {
            // The device can no longer reach the pages: give them back.
            let pins: Vec<_> = pt.pins.into_iter().collect();
            space.mm.unpin_pages(&pins);
        }
        if let Some(d) = st.devices.get_mut(&bond.device) {
            d.bonds -= 1;
        }
        if last {
            Self::drop_space(inner, st, bond.pasid);
        }
        cleared?;
        invalidated?;
        Ok(())
    }

    fn drop_space(inner: &Inner, st: &mut State, pasid: Pasid) {
        if let Some(space) = st.spaces.remove(&pasid) {
            space.mm.unregister_notifier(space.notifier_id);
            inner.iopf.remove_space(pasid);
            st.by_pid.remove(&space.mm.pid());
            space.mm.set_pasid(None);
            // Freed only now: every bond is gone and its page requests drained.
            let _ = inner.pasids.free(pasid);
        }
    }

    /// Makes `[va, va + len)` of the process visible to the device of a private bond, at the
    /// same addresses: the pages are faulted in for `prot` and pinned. No page of the range
    /// may be mapped for the device already.
    pub fn map(&self, bond: Bond, va: Va, len: u64, prot: sva_mm::Prot) -> Result<()> {
        let mut guard = lock(&self.inner.bind_lock);
        let space = Self::private_space(&mut guard, bond)?;
        let page = space.mm.page_size();
        let start = va.align_down(page);
        let end = va
            .checked_add(len)
            .and_then(|e| e.checked_align_up(page))
            .ok_or(Error::BadMapping {
                pa: sva_addr::Pa(0),
                size: len,
            })?;
        let pt = space
            .private
            .get_mut(&bond.device)
            .ok_or(Error::NotPrivate(bond))?;
        if let Some((&taken, _)) = pt.pins.range(start..end).next() {
            return Err(Error::AlreadyMapped(taken));
        }
        let pins = space
            .mm
            .pin_pages(start, end - start, prot.contains(sva_mm::Prot::WRITE))?;
        for (i, &(at, pa)) in pins.iter().enumerate() {
            if let Err(e) = pt.io.map(at.raw(), pa, page, prot) {
                for &(done, _) in &pins[..i] {
                    pt.pins.remove(&done);
                }
                let _ = pt
                    .io
                    .unmap(start.raw(), end - start, &[(bond.device, bond.pasid)]);
                space.mm.unpin_pages(&pins);
                return Err(e);
            }
            pt.pins.insert(at, pa);
        }
        Ok(())
    }

    /// Removes `[va, va + len)` from the device's private table, waits until no IOTLB or
    /// device TLB holds it, then unpins the pages.
    pub fn unmap(&self, bond: Bond, va: Va, len: u64) -> Result<()> {
        let mut guard = lock(&self.inner.bind_lock);
        let space = Self::private_space(&mut guard, bond)?;
        let page = space.mm.page_size();
        let start = va.align_down(page);
        let end = va
            .checked_add(len)
            .and_then(|e| e.checked_align_up(page))
            .ok_or(Error::NotBound(bond))?;
        let pt = space
            .private
            .get_mut(&bond.device)
            .ok_or(Error::NotPrivate(bond))?;
        let gone: Vec<(Va, sva_addr::Pa)> =
            pt.pins.range(start..end).map(|(&v, &p)| (v, p)).collect();
        if gone.is_empty() {
            return Ok(());
        }
        pt.io
            .unmap(start.raw(), end - start, &[(bond.device, bond.pasid)])?;
        for (v, _) in &gone {
            pt.pins.remove(v);
        }
        space.mm.unpin_pages(&gone);
        Ok(())
    }

    /// The space of a private bond.
    fn private_space(st: &mut State, bond: Bond) -> Result<&mut Space> {
        let space = st
            .spaces
            .get_mut(&bond.pasid)
            .filter(|s| s.mm.pid() == bond.pid && s.bonds.contains_key(&bond.device))
            .ok_or(Error::NotBound(bond))?;
        if !space.private.contains_key(&bond.device) {
            return Err(Error::NotPrivate(bond));
        }
        if space.exited {
            return Err(Error::Exited(bond.pid));
        }
        Ok(space)
    }

    /// Takes a page request reported by the driver (PRI queue or stall event). A request
    /// from a device for a PASID it is not bound to is answered Invalid (on its LAST) and
    /// reaches no address space.
    pub fn report_fault(&self, req: PageRequest) {
        if !lock(&self.inner.bound).contains(&(req.device, req.pasid)) {
            if req.last {
                let _ = self.inner.driver.page_response(
                    req.device,
                    req.pasid,
                    req.group,
                    PageResponse::Invalid,
                );
            }
            return;
        }
        self.inner.iopf.report(req);
    }

    /// The PASID of `mm`, if it is bound to any device.
    pub fn pasid_of(&self, pid: Pid) -> Option<Pasid> {
        lock(&self.inner.bind_lock).by_pid.get(&pid).copied()
    }

    /// Whether `pasid` is currently allocated.
    pub fn pasid_allocated(&self, pasid: Pasid) -> bool {
        self.inner.pasids.is_allocated(pasid)
    }

    /// Counters of the fault path.
    pub fn iopf_stats(&self) -> crate::IopfStats {
        self.inner.iopf.stats()
    }
}

impl Inner {
    fn io_table(&self) -> Result<IoTable> {
        IoTable::new(self.driver.clone(), self.ram.clone(), self.asids.clone())
    }

    /// The address space behind `pasid` is exiting, its tables still intact: quiet every
    /// context (valid, translating nothing, faults not reported), flush what was cached,
    /// answer its page requests Invalid from now on, and tell the device drivers. The
    /// PASID stays allocated until every bond is unbound.
    fn release(&self, pasid: Pasid, asid: Asid) {
        let (devices, top) = {
            let mut st = lock(&self.bind_lock);
            let Some(space) = st.spaces.get_mut(&pasid) else {
                return;
            };
            space.exited = true;
            let devices: Vec<DeviceId> = space.bonds.keys().copied().collect();
            for &d in &devices {
                let _ = self.driver.quiet_pasid(d, pasid);
            }
            let targets: Vec<(DeviceId, Pasid)> = devices.iter().map(|&d| (d, pasid)).collect();
            let top = Va(space.mm.table_config().ia_size());
            let _ = self.driver.invalidate(asid, Va(0), top, &targets, true);
            self.iopf.remove_space(pasid);
            (devices, top)
        };
        let _ = top;
        let handlers = lock(&self.exit_handlers).clone();
        for d in devices {
            if let Some(h) = handlers.get(&d) {
                h(d, pasid);
            }
        }
    }
}
