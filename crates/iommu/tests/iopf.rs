//! The I/O page fault path on real address spaces.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use sva_addr::{Pasid, Va};
use sva_iommu::{DeviceId, IopfQueue, PageRequest, PageResponse, ResponseSink};
use sva_mm::{MapFlags, MmConfig, Prot, System};
use sva_physmem::Ram;

const DEV: DeviceId = DeviceId(7);
const PAGE: u64 = 4096;

#[derive(Default)]
struct Sink {
    got: Mutex<Vec<(DeviceId, Pasid, u16, PageResponse)>>,
    cv: Condvar,
}

impl ResponseSink for Sink {
    fn respond(&self, device: DeviceId, pasid: Pasid, group: u16, response: PageResponse) {
        self.got
            .lock()
            .unwrap()
            .push((device, pasid, group, response));
        self.cv.notify_all();
    }
}

impl Sink {
    fn wait(&self, n: usize) -> Vec<(DeviceId, Pasid, u16, PageResponse)> {
        let g = self.got.lock().unwrap();
        let (g, t) = self
            .cv
            .wait_timeout_while(g, Duration::from_secs(10), |v| v.len() < n)
            .unwrap();
        assert!(!t.timed_out(), "only {} responses", g.len());
        g.clone()
    }
}

fn req(pasid: u32, group: u16, last: bool, addr: Va) -> PageRequest {
    PageRequest {
        device: DEV,
        pasid: Pasid(pasid),
        group,
        last,
        addr,
        read: true,
        write: true,
        exec: false,
        privileged: false,
    }
}

fn system(ram: u64) -> System {
    System::new(Arc::new(Ram::new(ram).unwrap()), MmConfig::default()).unwrap()
}

#[test]
fn a_group_is_answered_once_after_its_last_request() {
    let sys = system(64 << 20);
    let mm = sys.spawn().unwrap();
    let va = mm
        .mmap(None, 3 * PAGE, Prot::READ | Prot::WRITE, MapFlags::PRIVATE)
        .unwrap();
    let sink = Arc::new(Sink::default());
    let q = IopfQueue::new(2, sink.clone());
    q.add_space(Pasid(1), &mm);
    q.report(req(1, 3, false, va));
    q.report(req(1, 3, false, va + PAGE));
    std::thread::sleep(Duration::from_millis(20));
    assert!(sink.got.lock().unwrap().is_empty(), "answered before LAST");
    assert_eq!(q.outstanding(Pasid(1)), 2);
    q.report(req(1, 3, true, va + 2 * PAGE));
    assert_eq!(sink.wait(1), [(DEV, Pasid(1), 3, PageResponse::Success)]);
    for i in 0..3 {
        assert!(
            mm.translate(va + i * PAGE, sva_mm::AccessKind::Write)
                .unwrap()
                .is_some()
        );
    }
    q.drain(Pasid(1));
    assert_eq!(q.outstanding(Pasid(1)), 0);
    let s = q.stats();
    assert_eq!((s.requests, s.success, s.invalid, s.failure), (3, 1, 0, 0));
}

#[test]
fn refusals_are_invalid_and_map_nothing() {
    let sys = system(64 << 20);
    let mm = sys.spawn().unwrap();
    let ro = mm.mmap(None, PAGE, Prot::READ, MapFlags::PRIVATE).unwrap();
    let rw = mm
        .mmap(None, PAGE, Prot::READ | Prot::WRITE, MapFlags::PRIVATE)
        .unwrap();
    let sink = Arc::new(Sink::default());
    let q = IopfQueue::new(1, sink.clone());
    q.add_space(Pasid(1), &mm);
    // Write to a read-only mapping.
    q.report(req(1, 1, true, ro));
    // Privileged request on a user address space.
    q.report(PageRequest {
        privileged: true,
        ..req(1, 2, true, rw)
    });
    // Execute on a non-executable mapping.
    q.report(PageRequest {
        exec: true,
        write: false,
        ..req(1, 3, true, rw)
    });
    // No mapping at all.
    q.report(req(1, 4, true, Va(0x1_0000)));
    // Unknown PASID.
    q.report(req(9, 5, true, rw));
    let got = sink.wait(5);
    assert!(got.iter().all(|r| r.3 == PageResponse::Invalid), "{got:?}");
    assert_eq!(got.iter().map(|r| r.2).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(
        mm.resident_bytes().unwrap(),
        0,
        "a refused request mapped a page"
    );
    assert_eq!(q.stats().invalid, 5);
}

#[test]
fn exited_address_space_is_invalid_and_broken_handler_is_failure() {
    let sys = system(64 << 20);
    let mm = sys.spawn().unwrap();
    let va = mm
        .mmap(None, PAGE, Prot::READ | Prot::WRITE, MapFlags::PRIVATE)
        .unwrap();
    let sink = Arc::new(Sink::default());
    let q = IopfQueue::new(1, sink.clone());
    q.add_space(Pasid(1), &mm);
    sys.exit(mm.pid()).unwrap();
    q.report(req(1, 1, true, va));
    assert_eq!(sink.wait(1)[0].3, PageResponse::Invalid);

    // RAM too small for the page: the fault handler fails, the device must stop.
    let tiny = system(4 * PAGE);
    let mm2 = tiny.spawn().unwrap();
    let big = mm2
        .mmap(
            None,
            16 * PAGE,
            Prot::READ | Prot::WRITE,
            MapFlags::PRIVATE | MapFlags::NOHUGEPAGE,
        )
        .unwrap();
    q.add_space(Pasid(2), &mm2);
    for i in 0..8 {
        q.report(req(2, 10 + i, true, big + u64::from(i) * PAGE));
    }
    let got = sink.wait(9);
    assert!(
        got[1..].iter().any(|r| r.3 == PageResponse::Failure),
        "{got:?}"
    );
    assert_eq!(
        q.stats().failure as usize,
        got.iter().filter(|r| r.3 == PageResponse::Failure).count()
    );
}

#[test]
fn responses_of_one_pasid_come_in_order() {
    let sys = system(256 << 20);
    let mm = sys.spawn().unwrap();
    let va = mm
        .mmap(
            None,
            256 * PAGE,
            Prot::READ | Prot::WRITE,
            MapFlags::PRIVATE | MapFlags::NOHUGEPAGE,
        )
        .unwrap();
    let sink = Arc::new(Sink::default());
    let q = IopfQueue::new(4, sink.clone());
    q.add_space(Pasid(3), &mm);
    for g in 0..256u16 {
        q.report(req(3, g % 512, true, va + u64::from(g) * PAGE));
    }
    let got = sink.wait(256);
    let order: Vec<u16> = got.iter().map(|r| r.2).collect();
    assert_eq!(order, (0..256).collect::<Vec<_>>());
    q.drain(Pasid(3));
}

#[test]
fn drain_discards_partial_groups_and_waits_for_the_rest() {
    let sys = system(64 << 20);
    let mm = sys.spawn().unwrap();
    let va = mm
        .mmap(None, 4 * PAGE, Prot::READ | Prot::WRITE, MapFlags::PRIVATE)
        .unwrap();
    let sink = Arc::new(Sink::default());
    let q = IopfQueue::new(1, sink.clone());
    q.add_space(Pasid(1), &mm);
    q.report(req(1, 1, false, va)); // its LAST never comes: the device stopped
    for i in 0..3 {
        q.report(req(1, 2 + i, true, va + u64::from(i) * PAGE));
    }
    q.drain(Pasid(1));
    // Everything complete was answered before drain returned; the partial group was not.
    assert_eq!(sink.got.lock().unwrap().len(), 3);
    assert_eq!(q.outstanding(Pasid(1)), 0);
    q.remove_space(Pasid(1));
    q.report(req(1, 9, true, va));
    assert_eq!(sink.wait(4)[3].3, PageResponse::Invalid);
}
