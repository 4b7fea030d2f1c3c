//! Schedule exploration of the fault queue (unbind vs page requests): with the `shuttle`
//! feature, shuttle runs these closures under many thread interleavings.
//! `cargo test -p sva-iommu --features shuttle --test iopf_shuttle`
#![cfg(feature = "shuttle")]

use shuttle::sync::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use sva_addr::{Pasid, Va};
use sva_iommu::{DeviceId, IopfQueue, PageRequest, PageResponse, ResponseSink};

#[derive(Default)]
struct Sink(Mutex<BTreeMap<u16, u32>>);

impl ResponseSink for Sink {
    fn respond(&self, _: DeviceId, _: Pasid, group: u16, _: PageResponse) {
        *self.0.lock().unwrap().entry(group).or_insert(0) += 1;
    }
}

fn req(group: u16, last: bool) -> PageRequest {
    PageRequest {
        device: DeviceId(1),
        pasid: Pasid(1),
        group,
        last,
        addr: Va(0x1000),
        read: true,
        write: false,
        exec: false,
        privileged: false,
    }
}

const GROUPS: u16 = 3;

/// A fault queue with two workers, answering into a sink that counts responses per group.
fn queue_with_counting_sink() -> (Arc<Sink>, Arc<IopfQueue>) {
    let sink = Arc::new(Sink::default());
    let q = Arc::new(IopfQueue::new(2, sink.clone()));
    (sink, q)
}

/// Reports [`GROUPS`] groups of one request each, as the device does.
fn report_complete_groups(q: &IopfQueue) {
    for g in 0..GROUPS {
        q.report(req(g, true));
    }
}

/// Each of the [`GROUPS`] groups got exactly one response and nothing is outstanding.
fn assert_each_group_answered_once(sink: &Sink, q: &IopfQueue) {
    let answered = sink.0.lock().unwrap().clone();
    assert_eq!(answered.len(), usize::from(GROUPS), "{answered:?}");
    assert!(answered.values().all(|&n| n == 1), "{answered:?}");
    assert_eq!(q.outstanding(Pasid(1)), 0);
}

/// The device stops, then unbind drains: every group it sent is answered exactly once by
/// the time drain returns, and nothing is left outstanding.
#[test]
fn drain_after_the_device_stopped_leaves_nothing_unanswered() {
    shuttle::check_random(
        || {
            let (sink, q) = queue_with_counting_sink();
            let device = {
                let q = q.clone();
                shuttle::thread::spawn(move || {
                    q.report(req(100, false)); // a group whose LAST never comes
                    report_complete_groups(&q);
                })
            };
            device.join().unwrap();
            q.drain(Pasid(1));
            assert_each_group_answered_once(&sink, &q);
        },
        2000,
    );
}

/// Requests and a drain race: no response is lost or doubled, and a final drain leaves
/// nothing outstanding.
#[test]
fn racing_drain_loses_and_doubles_nothing() {
    shuttle::check_random(
        || {
            let (sink, q) = queue_with_counting_sink();
            let device = {
                let q = q.clone();
                shuttle::thread::spawn(move || {
                    report_complete_groups(&q);
                })
            };
            let unbind = {
                let q = q.clone();
                shuttle::thread::spawn(move || q.drain(Pasid(1)))
            };
            device.join().unwrap();
            unbind.join().unwrap();
            q.drain(Pasid(1));
            assert_each_group_answered_once(&sink, &q);
        },
        2000,
    );
}
