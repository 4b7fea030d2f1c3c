use crate::{Error, Result};
use std::collections::BTreeSet;
use sva_addr::Asid;
use sva_sync::{Mutex, lock};

/// Allocator of 16-bit ASIDs. ASID 0 is reserved (kernel / no process). The lowest free
/// ASID is handed out, so runs are deterministic.
#[derive(Debug)]
pub struct AsidAllocator {
    state: Mutex<AsidState>,
}

#[derive(Debug)]
struct AsidState {
    next: u32,
    max: u32,
    freed: BTreeSet<u16>,
}

impl AsidAllocator {
    /// ASIDs `1..=max`.
    pub fn new(max: u16) -> Self {
        Self {
            state: Mutex::new(AsidState {
                next: 1,
                max: u32::from(max),
                freed: BTreeSet::new(),
            }),
        }
    }

    /// A free ASID.
    pub fn alloc(&self) -> Result<Asid> {
        let mut st = lock(&self.state);
        if let Some(a) = st.freed.pop_first() {
            return Ok(Asid(a));
        }
        if st.next > st.max {
            return Err(Error::AsidsExhausted);
        }
        let a = st.next as u16;
        st.next += 1;
        Ok(Asid(a))
    }

    /// Returns `asid` to the pool.
    pub fn free(&self, asid: Asid) {
        let mut st = lock(&self.state);
        debug_assert!(asid.0 != 0 && u32::from(asid.0) < st.next);
        st.freed.insert(asid.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_first_and_exhaustion() {
        let a = AsidAllocator::new(3);
        assert_eq!(a.alloc().unwrap(), Asid(1));
        assert_eq!(a.alloc().unwrap(), Asid(2));
        assert_eq!(a.alloc().unwrap(), Asid(3));
        assert!(matches!(a.alloc(), Err(Error::AsidsExhausted)));
        a.free(Asid(2));
        assert_eq!(a.alloc().unwrap(), Asid(2));
    }
}
