use crate::{Error, Result};
use std::collections::BTreeMap;
use sva_sync::{Mutex, MutexGuard, lock};

/// A swap slot number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SwapSlot(pub u64);

/// The backing store page reclaim writes to: host memory standing in for a swap device.
#[derive(Debug)]
pub struct SwapStore {
    state: Mutex<SwapState>,
}

#[derive(Debug)]
struct SwapState {
    slots: BTreeMap<u64, Box<[u8]>>,
    next: u64,
    capacity: u64,
    writes: u64,
    reads: u64,
}

/// Swap usage figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SwapStats {
    /// Slots in use.
    pub used: u64,
    /// Pages written out so far.
    pub writes: u64,
    /// Pages read back so far.
    pub reads: u64,
}

impl SwapStore {
    /// A store of at most `capacity` pages.
    pub fn new(capacity: u64) -> Self {
        Self {
            state: Mutex::new(SwapState {
                slots: BTreeMap::new(),
                next: 0,
                capacity,
                writes: 0,
                reads: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SwapState> {
        lock(&self.state)
    }

    /// Stores a page; returns its slot.
    pub fn write(&self, data: Box<[u8]>) -> Result<SwapSlot> {
        let mut st = self.lock();
        if st.slots.len() as u64 >= st.capacity {
            return Err(Error::SwapFull(st.capacity));
        }
        let slot = st.next;
        st.next += 1;
        st.writes += 1;
        st.slots.insert(slot, data);
        Ok(SwapSlot(slot))
    }

    /// Takes a page back out, freeing its slot.
    pub fn take(&self, slot: SwapSlot) -> Option<Box<[u8]>> {
        let mut st = self.lock();
        let data = st.slots.remove(&slot.0);
        if data.is_some() {
            st.reads += 1;
        }
        data
    }

    /// Copies a slot into a new one (fork of a swapped private page).
    pub fn duplicate(&self, slot: SwapSlot) -> Result<SwapSlot> {
        let data = self.lock().slots.get(&slot.0).cloned();
        self.write(data.unwrap_or_default())
    }

    /// Drops a slot without reading it.
    pub fn discard(&self, slot: SwapSlot) {
        self.lock().slots.remove(&slot.0);
    }

    /// Usage figures.
    pub fn stats(&self) -> SwapStats {
        let st = self.lock();
        SwapStats {
            used: st.slots.len() as u64,
            writes: st.writes,
            reads: st.reads,
        }
    }
}
