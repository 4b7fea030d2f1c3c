//! Helpers shared by the address-space tests.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use sva_mm::{InvalidateRange, MmConfig, MmuNotifier, System, TlbSnooper, Tlbi};
use sva_physmem::Ram;

pub const PAGE: u64 = 4096;
pub const BLOCK: u64 = 2 << 20;

pub fn system() -> System {
    system_with(MmConfig::default())
}

pub fn system_with(config: MmConfig) -> System {
    System::new(Arc::new(Ram::new(256 << 20).unwrap()), config).unwrap()
}

/// Records every notifier call; checks start/end pairing and that no frame is freed
/// between start and end.
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<(&'static str, InvalidateRange)>>,
    pub released: Mutex<u32>,
    pub ram: Option<Arc<Ram>>,
    pub used_at_start: Mutex<Vec<u64>>,
}

impl Recorder {
    pub fn with_ram(ram: Arc<Ram>) -> Self {
        Self {
            ram: Some(ram),
            ..Self::default()
        }
    }

    pub fn reasons(&self) -> Vec<sva_mm::InvalidateReason> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k == "end")
            .map(|(_, r)| r.reason)
            .collect()
    }
}

impl MmuNotifier for Recorder {
    fn invalidate_range_start(&self, range: &InvalidateRange) {
        self.events.lock().unwrap().push(("start", *range));
        if let Some(ram) = &self.ram {
            self.used_at_start
                .lock()
                .unwrap()
                .push(ram.stats().used_frames);
        }
    }

    fn invalidate_range_end(&self, range: &InvalidateRange) {
        let mut ev = self.events.lock().unwrap();
        let last_start = ev
            .iter()
            .rev()
            .find(|(k, _)| *k == "start")
            .map(|(_, r)| *r);
        assert_eq!(last_start, Some(*range), "end without matching start");
        ev.push(("end", *range));
        if let Some(ram) = &self.ram {
            let at_start = self.used_at_start.lock().unwrap().pop().unwrap();
            // Frames may be allocated inside the bracket (splits), never freed.
            assert!(
                ram.stats().used_frames >= at_start,
                "a frame was freed before invalidate_range_end returned"
            );
        }
    }

    fn release(&self, _asid: sva_addr::Asid) {
        *self.released.lock().unwrap() += 1;
    }
}

#[derive(Default)]
pub struct Snooper {
    pub ops: Mutex<Vec<Tlbi>>,
}

impl TlbSnooper for Snooper {
    fn tlbi(&self, op: &Tlbi) {
        self.ops.lock().unwrap().push(*op);
    }
}
