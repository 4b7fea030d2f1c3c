//! A small in-memory [`Dma`] for the device targets: 4 KiB pages per address space, absent
//! pages fault.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use sva_addr::Pasid;
use sva_pcie::{Dma, DmaCtx, DmaFault, FaultReason};

pub(crate) const PAGE: u64 = 4096;

type Key = (Option<u32>, u64);

/// Memory of several address spaces (`None`: the non-PASID context) as 4 KiB pages. An
/// absent page faults; a blocking access may fault it in (zeroed, as PRI would) while the
/// fault-in budget lasts, so garbage lengths cannot make the host allocate without bound.
pub(crate) struct PageDma {
    pages: Mutex<HashMap<Key, Box<[u8]>>>,
    /// Pages blocking accesses may still fault in.
    fault_in_budget: AtomicU64,
    /// Only addresses below this are faulted in.
    fault_in_below: u64,
}

fn space(ctx: DmaCtx) -> Option<u32> {
    ctx.pasid.map(Pasid::raw)
}

impl PageDma {
    /// Memory where blocking accesses below `fault_in_below` fault in up to
    /// `fault_in_budget` pages.
    pub(crate) fn new(fault_in_budget: u64, fault_in_below: u64) -> Self {
        Self {
            pages: Mutex::new(HashMap::new()),
            fault_in_budget: AtomicU64::new(fault_in_budget),
            fault_in_below,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Box<[u8]>>> {
        self.pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the pages of `[addr, addr + len)` present (zeroed where new).
    pub(crate) fn map(&self, space: Option<u32>, addr: u64, len: u64) {
        let mut pages = self.lock();
        let first = addr / PAGE;
        let last = addr.saturating_add(len.max(1) - 1) / PAGE;
        for p in first..=last {
            pages
                .entry((space, p))
                .or_insert_with(|| vec![0u8; PAGE as usize].into_boxed_slice());
        }
    }

    /// Writes `data` at `addr` as the CPU would (mapping the pages first).
    pub(crate) fn put(&self, space: Option<u32>, addr: u64, data: &[u8]) {
        self.map(space, addr, data.len() as u64);
        let mut pages = self.lock();
        for (i, &b) in data.iter().enumerate() {
            let a = addr.wrapping_add(i as u64);
            if let Some(p) = pages.get_mut(&(space, a / PAGE)) {
                p[(a % PAGE) as usize] = b;
            }
        }
    }

    /// Reads `len` bytes at `addr`; `None` if a page is absent.
    pub(crate) fn get(&self, space: Option<u32>, addr: u64, len: usize) -> Option<Vec<u8>> {
        let pages = self.lock();
        (0..len as u64)
            .map(|i| {
                let a = addr.checked_add(i)?;
                pages
                    .get(&(space, a / PAGE))
                    .map(|p| p[(a % PAGE) as usize])
            })
            .collect()
    }

    fn access(
        &self,
        ctx: DmaCtx,
        addr: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(&mut [u8], usize),
    ) -> Result<(), DmaFault> {
        let mut done = 0usize;
        while done < len {
            let fault = |a, reason| DmaFault {
                addr: a,
                done: done as u64,
                write,
                reason,
            };
            let Some(a) = addr.checked_add(done as u64) else {
                return Err(fault(u64::MAX, FaultReason::Memory));
            };
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(len - done);
            let key = (space(ctx), a / PAGE);
            let mut pages = self.lock();
            let page = match pages.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    if !ctx.block_on_fault {
                        return Err(fault(a, FaultReason::NotPresent));
                    }
                    let budget = self.fault_in_budget.load(Ordering::Relaxed);
                    if budget == 0 || a >= self.fault_in_below {
                        return Err(fault(a, FaultReason::Invalid));
                    }
                    self.fault_in_budget.store(budget - 1, Ordering::Relaxed);
                    slot.insert(vec![0u8; PAGE as usize].into_boxed_slice())
                }
            };
            f(&mut page[off..off + n], done);
            done += n;
        }
        Ok(())
    }
}

impl Dma for PageDma {
    fn read(&self, ctx: DmaCtx, addr: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        let len = buf.len();
        self.access(ctx, addr, len, false, |page, at| {
            buf[at..at + page.len()].copy_from_slice(page);
        })
    }

    fn write(&self, ctx: DmaCtx, addr: u64, data: &[u8]) -> Result<(), DmaFault> {
        self.access(ctx, addr, data.len(), true, |page, at| {
            let n = page.len();
            page.copy_from_slice(&data[at..at + n]);
        })
    }
}
