//! Virtual memory areas: the address space's map of what may be mapped where, with split
//! on partial munmap/mprotect and merge of compatible neighbours.

use crate::{FrameRegion, IoMemory, MapFlags, Prot};
use std::collections::BTreeMap;
use std::sync::Arc;
use sva_addr::Va;
use sva_physmem::{Pa, Ram};
use sva_sync::{Mutex, lock};

/// The pages behind a MAP_SHARED anonymous mapping: one frame per page offset, shared by
/// every VMA (in any process) that maps the object. Holds one reference on each frame.
pub struct ShmObject {
    ram: Arc<Ram>,
    pages: Mutex<BTreeMap<u64, Pa>>,
}

impl core::fmt::Debug for ShmObject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ShmObject")
            .field("pages", &self.pages.lock().map(|p| p.len()).unwrap_or(0))
            .finish()
    }
}

impl ShmObject {
    pub(crate) fn new(ram: Arc<Ram>) -> Self {
        Self {
            ram,
            pages: Mutex::new(BTreeMap::new()),
        }
    }

    /// The frame for page `pgoff`, allocated (zeroed) on first use. The caller gets a
    /// reference of its own.
    pub(crate) fn page(&self, pgoff: u64, size: u64) -> sva_physmem::Result<Pa> {
        let mut pages = lock(&self.pages);
        let pa = match pages.get(&pgoff) {
            Some(&pa) => pa,
            None => {
                let pa = self.ram.alloc(size)?;
                pages.insert(pgoff, pa);
                pa
            }
        };
        self.ram.get(pa)?;
        Ok(pa)
    }
}

impl Drop for ShmObject {
    fn drop(&mut self) {
        let pages = core::mem::take(self.pages.get_mut().unwrap_or_else(|p| p.into_inner()));
        for pa in pages.into_values() {
            // The object's own reference; mappings hold theirs separately.
            let _ = self.ram.put(pa);
        }
    }
}

/// What backs a VMA's pages.
#[derive(Clone)]
pub enum Backing {
    /// Private anonymous memory: zero-fill on demand, copy-on-write after fork.
    Anonymous,
    /// Shared anonymous memory: page `i` of the VMA is page `pgoff + i` of the object.
    Shared {
        /// The shared pages.
        object: Arc<ShmObject>,
        /// Page offset of the VMA's first page in the object.
        pgoff: u64,
    },
    /// Device registers (`remap_pfn_range` of MMIO): no frames and no page-table entries;
    /// CPU accesses to byte `b` of the VMA go to `region` at `pgoff * page + b`.
    Io {
        /// The registers.
        region: Arc<dyn IoMemory>,
        /// Page offset of the VMA's first page in the region.
        pgoff: u64,
    },
    /// Driver-owned frames (`dma_mmap_coherent`): page `i` of the VMA is
    /// `region.frames()[pgoff + i]`, shared (never copied on write).
    Frames {
        /// The frames.
        region: Arc<FrameRegion>,
        /// Page offset of the VMA's first page in the region.
        pgoff: u64,
    },
}

impl core::fmt::Debug for Backing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Backing::Anonymous => f.write_str("Anonymous"),
            Backing::Shared { object, pgoff } => f
                .debug_struct("Shared")
                .field("object", object)
                .field("pgoff", pgoff)
                .finish(),
            Backing::Io { region, pgoff } => f
                .debug_struct("Io")
                .field("size", &region.size())
                .field("pgoff", pgoff)
                .finish(),
            Backing::Frames { region, pgoff } => f
                .debug_struct("Frames")
                .field("region", region)
                .field("pgoff", pgoff)
                .finish(),
        }
    }
}

impl Backing {
    /// Whether the pages are shared memory that a write never copies (MAP_SHARED objects
    /// and driver frames).
    pub(crate) fn is_shared_memory(&self) -> bool {
        matches!(self, Backing::Shared { .. } | Backing::Frames { .. })
    }

    /// Whether a driver installed this mapping (device registers or driver frames).
    pub(crate) fn is_device(&self) -> bool {
        matches!(self, Backing::Io { .. } | Backing::Frames { .. })
    }

    /// The page offset into the backing object, for backings that have one.
    fn pgoff_mut(&mut self) -> Option<&mut u64> {
        match self {
            Backing::Anonymous => None,
            Backing::Shared { pgoff, .. }
            | Backing::Io { pgoff, .. }
            | Backing::Frames { pgoff, .. } => Some(pgoff),
        }
    }
}

/// One virtual memory area.
#[derive(Debug, Clone)]
pub struct Vma {
    /// First byte.
    pub start: Va,
    /// One past the last byte.
    pub end: Va,
    /// Allowed accesses.
    pub prot: Prot,
    /// PRIVATE or SHARED plus fork/THP properties.
    pub flags: MapFlags,
    /// What backs the pages.
    pub backing: Backing,
}

impl Vma {
    /// Length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether `va` lies inside.
    pub fn contains(&self, va: Va) -> bool {
        self.start <= va && va < self.end
    }

    /// Whether `other` starts where this ends and can be one VMA with it.
    fn mergeable_with(&self, other: &Vma, page: u64) -> bool {
        if self.end != other.start || self.prot != other.prot || self.flags != other.flags {
            return false;
        }
        match (&self.backing, &other.backing) {
            (Backing::Anonymous, Backing::Anonymous) => true,
            (
                Backing::Shared {
                    object: a,
                    pgoff: pa,
                },
                Backing::Shared {
                    object: b,
                    pgoff: pb,
                },
            ) => Arc::ptr_eq(a, b) && pa + self.len() / page == *pb,
            (
                Backing::Io {
                    region: a,
                    pgoff: pa,
                },
                Backing::Io {
                    region: b,
                    pgoff: pb,
                },
            ) => Arc::ptr_eq(a, b) && pa + self.len() / page == *pb,
            (
                Backing::Frames {
                    region: a,
                    pgoff: pa,
                },
                Backing::Frames {
                    region: b,
                    pgoff: pb,
                },
            ) => Arc::ptr_eq(a, b) && pa + self.len() / page == *pb,
            _ => false,
        }
    }

    /// Splits at `at` (strictly inside); `self` keeps the lower part.
    fn split_off(&mut self, at: Va, page: u64) -> Vma {
        let mut upper = self.clone();
        upper.start = at;
        if let Some(pgoff) = upper.backing.pgoff_mut() {
            *pgoff += (at - self.start) / page;
        }
        self.end = at;
        upper
    }
}

/// A summary of one VMA for callers outside the crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmaInfo {
    /// First byte.
    pub start: Va,
    /// One past the last byte.
    pub end: Va,
    /// Allowed accesses.
    pub prot: Prot,
    /// VMA flags.
    pub flags: MapFlags,
}

/// The VMAs of one address space, by start address.
#[derive(Debug, Default)]
pub(crate) struct VmaMap {
    map: BTreeMap<Va, Vma>,
    page: u64,
}

impl VmaMap {
    pub(crate) fn new(page: u64) -> Self {
        Self {
            map: BTreeMap::new(),
            page,
        }
    }

    pub(crate) fn find(&self, va: Va) -> Option<&Vma> {
        self.map
            .range(..=va)
            .next_back()
            .map(|(_, v)| v)
            .filter(|v| v.contains(va))
    }

    /// VMAs intersecting `[start, end)`, in order.
    pub(crate) fn overlapping(&self, start: Va, end: Va) -> impl Iterator<Item = &Vma> {
        let first = self
            .map
            .range(..start)
            .next_back()
            .filter(|(_, v)| v.end > start)
            .map(|(k, _)| *k)
            .unwrap_or(start);
        self.map.range(first..end).map(|(_, v)| v)
    }

    /// Whether `[start, end)` is entirely covered by VMAs.
    pub(crate) fn covers(&self, start: Va, end: Va) -> Result<(), Va> {
        let mut at = start;
        for v in self.overlapping(start, end) {
            if v.start > at {
                return Err(at);
            }
            at = v.end;
        }
        if at < end { Err(at) } else { Ok(()) }
    }

    /// Makes `at` a VMA boundary if a VMA strictly contains it.
    pub(crate) fn split_at(&mut self, at: Va) {
        let Some(key) = self.find(at).filter(|v| v.start != at).map(|v| v.start) else {
            return;
        };
        let vma = self.map.get_mut(&key).expect("found above");
        let upper = vma.split_off(at, self.page);
        self.map.insert(at, upper);
    }

    /// Removes and returns the parts of VMAs inside `[start, end)`.
    pub(crate) fn remove_range(&mut self, start: Va, end: Va) -> Vec<Vma> {
        self.split_at(start);
        self.split_at(end);
        let keys: Vec<Va> = self.map.range(start..end).map(|(k, _)| *k).collect();
        keys.into_iter()
            .filter_map(|k| self.map.remove(&k))
            .collect()
    }

    /// Inserts a VMA over a free range and merges it with compatible neighbours.
    pub(crate) fn insert(&mut self, vma: Vma) {
        debug_assert!(self.overlapping(vma.start, vma.end).next().is_none());
        let start = vma.start;
        self.map.insert(start, vma);
        self.merge_around(start);
    }

    /// Applies `f` to every VMA inside `[start, end)` (split at the edges), then merges.
    pub(crate) fn update_range(&mut self, start: Va, end: Va, mut f: impl FnMut(&mut Vma)) {
        self.split_at(start);
        self.split_at(end);
        let keys: Vec<Va> = self.map.range(start..end).map(|(k, _)| *k).collect();
        for k in &keys {
            f(self.map.get_mut(k).expect("listed"));
        }
        for k in keys {
            if self.map.contains_key(&k) {
                self.merge_around(k);
            }
        }
        if let Some(k) = self.find(end).map(|v| v.start) {
            self.merge_around(k);
        }
    }

    /// Merges the VMA at `key` with its previous and next neighbours where compatible.
    fn merge_around(&mut self, key: Va) {
        let mut key = key;
        if let Some((&pk, prev)) = self.map.range(..key).next_back()
            && prev.mergeable_with(&self.map[&key], self.page)
        {
            let cur = self.map.remove(&key).expect("present");
            self.map.get_mut(&pk).expect("present").end = cur.end;
            key = pk;
        }
        let end = self.map[&key].end;
        if let Some(next) = self.map.get(&end)
            && self.map[&key].mergeable_with(next, self.page)
        {
            let next = self.map.remove(&end).expect("present");
            self.map.get_mut(&key).expect("present").end = next.end;
        }
    }

    /// The highest free range of `len` bytes, aligned to `align`, inside `[low, high)`.
    pub(crate) fn find_gap_topdown(&self, len: u64, align: u64, low: Va, high: Va) -> Option<Va> {
        let mut top = high;
        let candidate = |top: Va, bottom: Va| -> Option<Va> {
            let start = Va(top.raw().checked_sub(len)?).align_down(align);
            (start >= bottom && start >= low).then_some(start)
        };
        for (_, v) in self.map.range(..high).rev() {
            if v.end <= top
                && let Some(s) = candidate(top, v.end)
            {
                return Some(s);
            }
            top = top.min(v.start);
            if top <= low {
                return None;
            }
        }
        candidate(top, low)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.map.values()
    }

    pub(crate) fn take_all(&mut self) -> Vec<Vma> {
        core::mem::take(&mut self.map).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon(start: u64, end: u64, prot: Prot) -> Vma {
        Vma {
            start: Va(start),
            end: Va(end),
            prot,
            flags: MapFlags::PRIVATE,
            backing: Backing::Anonymous,
        }
    }

    fn spans(m: &VmaMap) -> Vec<(u64, u64)> {
        m.iter().map(|v| (v.start.raw(), v.end.raw())).collect()
    }

    #[test]
    fn neighbours_merge_and_split() {
        let mut m = VmaMap::new(0x1000);
        m.insert(anon(0x1000, 0x3000, Prot::READ));
        m.insert(anon(0x3000, 0x5000, Prot::READ));
        assert_eq!(spans(&m), [(0x1000, 0x5000)]);
        m.update_range(Va(0x2000), Va(0x3000), |v| {
            v.prot = Prot::READ | Prot::WRITE;
        });
        assert_eq!(
            spans(&m),
            [(0x1000, 0x2000), (0x2000, 0x3000), (0x3000, 0x5000)]
        );
        m.update_range(Va(0x2000), Va(0x3000), |v| v.prot = Prot::READ);
        assert_eq!(spans(&m), [(0x1000, 0x5000)]);
        let removed = m.remove_range(Va(0x2000), Va(0x4000));
        assert_eq!(removed.len(), 1);
        assert_eq!(spans(&m), [(0x1000, 0x2000), (0x4000, 0x5000)]);
        assert!(m.find(Va(0x2000)).is_none());
        assert_eq!(m.find(Va(0x4fff)).unwrap().start, Va(0x4000));
        assert_eq!(m.covers(Va(0x1000), Va(0x2000)), Ok(()));
        assert_eq!(m.covers(Va(0x1000), Va(0x5000)), Err(Va(0x2000)));
    }

    struct Regs(u64);

    impl IoMemory for Regs {
        fn size(&self) -> u64 {
            self.0
        }
        fn read(&self, _: u64, _: &mut [u8]) -> Result<(), crate::IoError> {
            Ok(())
        }
        fn write(&self, _: u64, _: &[u8]) -> Result<(), crate::IoError> {
            Ok(())
        }
    }

    fn io(start: u64, end: u64, region: &Arc<dyn IoMemory>, pgoff: u64) -> Vma {
        Vma {
            start: Va(start),
            end: Va(end),
            prot: Prot::READ,
            flags: MapFlags::SHARED,
            backing: Backing::Io {
                region: region.clone(),
                pgoff,
            },
        }
    }

    fn pgoffs(m: &VmaMap) -> Vec<(u64, u64)> {
        m.iter()
            .map(|v| match &v.backing {
                Backing::Io { pgoff, .. } | Backing::Frames { pgoff, .. } => {
                    (v.start.raw(), *pgoff)
                }
                _ => (v.start.raw(), u64::MAX),
            })
            .collect()
    }

    #[test]
    fn device_mappings_split_with_offsets_and_merge_only_within_a_region() {
        let a: Arc<dyn IoMemory> = Arc::new(Regs(0x4000));
        let b: Arc<dyn IoMemory> = Arc::new(Regs(0x4000));
        let mut m = VmaMap::new(0x1000);
        m.insert(io(0x10000, 0x14000, &a, 0));
        m.update_range(Va(0x11000), Va(0x13000), |v| v.prot = Prot::NONE);
        assert_eq!(
            pgoffs(&m),
            [(0x10000, 0), (0x11000, 1), (0x13000, 3)],
            "a split keeps each part's offset into the region"
        );
        m.update_range(Va(0x11000), Va(0x13000), |v| v.prot = Prot::READ);
        assert_eq!(
            pgoffs(&m),
            [(0x10000, 0)],
            "the parts of one region merge back"
        );
        // Another region right after, and the same region at a non-matching offset: both
        // stay separate VMAs.
        m.insert(io(0x14000, 0x18000, &b, 0));
        m.insert(io(0x18000, 0x1c000, &a, 0));
        assert_eq!(pgoffs(&m), [(0x10000, 0), (0x14000, 0), (0x18000, 0)]);
        let removed = m.remove_range(Va(0x10000), Va(0x12000));
        assert_eq!(removed.len(), 1);
        assert_eq!(pgoffs(&m)[0], (0x12000, 2));
    }

    #[test]
    fn gaps_are_found_top_down() {
        let mut m = VmaMap::new(0x1000);
        m.insert(anon(0x8000, 0x10000, Prot::READ));
        assert_eq!(
            m.find_gap_topdown(0x1000, 0x1000, Va(0x1000), Va(0x10000)),
            Some(Va(0x7000))
        );
        assert_eq!(
            m.find_gap_topdown(0x8000, 0x1000, Va(0x1000), Va(0x10000)),
            None
        );
        assert_eq!(
            m.find_gap_topdown(0x7000, 0x1000, Va(0x1000), Va(0x10000)),
            Some(Va(0x1000))
        );
        assert_eq!(
            m.find_gap_topdown(0x2000, 0x1000, Va(0x1000), Va(0x20000)),
            Some(Va(0x1e000))
        );
    }
}
