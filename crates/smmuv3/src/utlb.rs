//! The micro-TLB: a small cache in front of the configuration cache and the IOTLB, keyed by
//! (StreamID, SubstreamID, 4 KiB page), like the per-TBU micro-TLBs of real SMMUs. It is
//! architecturally invisible: every entry records the generations of the IOTLB and of the
//! configuration cache it was derived from, and any removal from either makes all entries
//! stale. So it never answers differently from the full path; it only answers faster.

use rustc_hash::FxHashMap;
use sva_vmsa::Permissions;

/// Entries held before the micro-TLB is emptied and refilled.
const CAPACITY: usize = 256;

/// (StreamID, SubstreamID or `u32::MAX` for none, page number of the input address).
pub(crate) type Key = (u32, u32, u64);

#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    /// Output address of the 4 KiB page.
    pub pa_page: u64,
    /// Size of the leaf the translation came from.
    pub size: u64,
    pub perms: Permissions,
    gens: (u64, u64),
}

#[derive(Debug, Default)]
pub(crate) struct MicroTlb {
    map: FxHashMap<Key, Entry>,
}

impl MicroTlb {
    /// The entry for `key` if it is still current for the (config cache, IOTLB)
    /// generations `gens`.
    pub fn lookup(&self, key: &Key, gens: (u64, u64)) -> Option<Entry> {
        self.map.get(key).filter(|e| e.gens == gens).copied()
    }

    pub fn insert(
        &mut self,
        key: Key,
        pa_page: u64,
        size: u64,
        perms: Permissions,
        gens: (u64, u64),
    ) {
        if self.map.len() >= CAPACITY {
            self.map.clear();
        }
        self.map.insert(
            key,
            Entry {
                pa_page,
                size,
                perms,
                gens,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms() -> Permissions {
        Permissions {
            read: true,
            write: false,
            user: true,
            user_exec: false,
            priv_exec: false,
        }
    }

    #[test]
    fn entries_die_with_either_generation() {
        let mut u = MicroTlb::default();
        u.insert((1, 2, 3), 0x5000, 4096, perms(), (7, 9));
        assert_eq!(
            u.lookup(&(1, 2, 3), (7, 9)).map(|e| e.pa_page),
            Some(0x5000)
        );
        assert!(
            u.lookup(&(1, 2, 3), (8, 9)).is_none(),
            "config cache changed"
        );
        assert!(u.lookup(&(1, 2, 3), (7, 10)).is_none(), "IOTLB changed");
        assert!(u.lookup(&(1, 3, 3), (7, 9)).is_none(), "other SSID");
    }

    #[test]
    fn bounded() {
        let mut u = MicroTlb::default();
        for i in 0..10 * CAPACITY as u64 {
            u.insert((0, 0, i), i << 12, 4096, perms(), (0, 0));
        }
        assert!(u.map.len() <= CAPACITY);
    }
}
