//! The uacce driver: device description, queue allocation (dedicated: one opener), queue
//! start/stop/put life cycle, is_updated.

mod common;

use common::*;
use std::time::Duration;
use sva_addr::Pasid;
use sva_dsa::driver::{IOCTL_WQ_INDEX, IOCTL_WQ_SHARED};
use sva_dsa::swerr::SWERR_WQ_DISABLED;
use sva_dsa::{Descriptor, DeviceConfig, DsaDriver, Status};
use sva_uacce::{Error, UACCE_DEV_SVA, UacceOps};

fn driver(wqs: Vec<sva_dsa::WqConfig>) -> (std::sync::Arc<PageDma>, DsaDriver) {
    let dma = PageDma::new();
    let dev = sva_dsa::Device::new(
        dma.clone(),
        DeviceConfig {
            wqs,
            engines: 1,
            ..DeviceConfig::default()
        },
    )
    .unwrap();
    (dma, DsaDriver::new(std::sync::Arc::new(dev)).unwrap())
}

#[test]
fn info_describes_an_sva_portal_device() {
    let (_, drv) = driver(vec![dedicated(4)]);
    let info = drv.info();
    assert_eq!(info.name, "dsa");
    assert_eq!(info.api, "dsa_v1");
    assert_eq!(info.flags & UACCE_DEV_SVA, UACCE_DEV_SVA);
    assert_eq!(
        info.algorithms,
        ["memmove", "fill", "compare", "crc32c", "dualcast", "batch"]
    );
    assert_eq!((info.mmio_size, info.dus_size), (4096, 0));
}

#[test]
fn a_dedicated_wq_takes_one_opener() {
    let (_, drv) = driver(vec![dedicated(4)]);
    assert_eq!(drv.available_instances(), 1);
    let q = drv.get_queue(Some(A)).unwrap();
    assert_eq!(drv.available_instances(), 0);
    assert!(matches!(drv.get_queue(Some(B)), Err(Error::Busy(_))));
    assert!(matches!(drv.get_queue_on(0, Some(B)), Err(Error::Busy(_))));
    assert!(q.dus().is_none());
    assert_eq!(q.mmio().size(), 4096);
    q.put();
    assert_eq!(drv.available_instances(), 1);
    let q2 = drv.get_queue(Some(B)).unwrap();
    drop(q2); // dropping an unreleased queue gives the WQ back too
    assert_eq!(drv.available_instances(), 1);
}

#[test]
fn queues_need_a_pasid() {
    let (_, drv) = driver(vec![dedicated(4), shared(4)]);
    assert!(matches!(drv.get_queue(None), Err(Error::Invalid(_))));
    assert!(matches!(drv.get_queue_on(1, None), Err(Error::Invalid(_))));
    assert!(matches!(
        drv.get_queue_on(7, Some(A)),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn dedicated_wqs_are_handed_out_first_then_the_least_used_shared_wq() {
    let (_, drv) = driver(vec![shared(4), dedicated(4), shared(4)]);
    let wq = |q: &std::sync::Arc<dyn sva_uacce::UacceQueueOps>| {
        (
            q.ioctl(IOCTL_WQ_INDEX, 0).unwrap(),
            q.ioctl(IOCTL_WQ_SHARED, 0).unwrap(),
        )
    };
    let a = drv.get_queue(Some(A)).unwrap();
    assert_eq!(wq(&a), (1, 0), "the dedicated WQ first");
    let b = drv.get_queue(Some(B)).unwrap();
    assert_eq!(wq(&b), (0, 1));
    let c = drv.get_queue(Some(Pasid(3))).unwrap();
    assert_eq!(wq(&c), (2, 1), "the shared WQ with fewer openers");
    let d = drv.get_queue(Some(Pasid(4))).unwrap();
    assert_eq!(wq(&d), (0, 1));
    a.put();
    let e = drv.get_queue(Some(Pasid(5))).unwrap();
    assert_eq!(wq(&e), (1, 0), "the dedicated WQ is free again");
    assert!(matches!(a.ioctl(0x99, 0), Err(Error::UnknownIoctl(0x99))));
    drop((b, c, d, e));
}

#[test]
fn start_programs_the_pasid_and_stop_disables_the_wq() {
    let (dma, drv) = driver(vec![dedicated(4)]);
    let q = drv.get_queue(Some(A)).unwrap();
    let portal = q.mmio();
    dma.map(A, CR, PAGE);
    dma.put(A, 0x5000, &[7; 64]);
    dma.map(A, 0x6000, PAGE);
    assert!(!q.is_updated());
    q.start().unwrap();
    assert!(matches!(q.start(), Err(Error::State { .. })));
    assert!(drv.device().is_wq_enabled(0).unwrap());
    portal
        .write(0, &Descriptor::memmove(CR, 0x5000, 0x6000, 64).encode())
        .unwrap();
    assert_eq!(wait_record(&dma, A, CR).status(), Some(Status::Success));
    assert_eq!(dma.get(A, 0x6000, 64), vec![7; 64]);
    eventually("is_updated", || q.is_updated());
    assert!(!q.is_updated(), "nothing new since");

    q.stop();
    assert!(!drv.device().is_wq_enabled(0).unwrap());
    portal
        .write(0, &Descriptor::noop(CR + 32).encode())
        .unwrap();
    assert_eq!(drv.swerr().error(), SWERR_WQ_DISABLED);
    drv.clear_swerr();
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(dma.get(A, CR + 32, 1), vec![0]);

    // Restart works; put releases.
    q.start().unwrap();
    portal
        .write(0, &Descriptor::noop(CR + 32).encode())
        .unwrap();
    assert_eq!(
        wait_record(&dma, A, CR + 32).status(),
        Some(Status::Success)
    );
    q.put();
    assert!(matches!(q.start(), Err(Error::State { .. })));
    assert!(!drv.device().is_wq_enabled(0).unwrap());
}

#[test]
fn stopping_one_shared_queue_leaves_the_others_running() {
    let (dma, drv) = driver(vec![shared(8)]);
    let qa = drv.get_queue(Some(A)).unwrap();
    let qa2 = drv.get_queue(Some(A)).unwrap();
    let qb = drv.get_queue(Some(B)).unwrap();
    for q in [&qa, &qa2, &qb] {
        q.start().unwrap();
    }
    dma.map(A, CR, PAGE);
    dma.map(B, CR, PAGE);
    let portal = qa.mmio();
    let noop = |cr| Descriptor::noop(cr).encode();

    qb.stop();
    assert!(
        !portal.enqueue(0, &noop(CR), Some(B)).unwrap(),
        "B drained and blocked"
    );
    qa.stop();
    assert!(
        portal.enqueue(0, &noop(CR), Some(A)).unwrap(),
        "A still has a started queue"
    );
    assert_eq!(wait_record(&dma, A, CR).status(), Some(Status::Success));
    qa2.stop();
    assert!(!portal.enqueue(0, &noop(CR + 32), Some(A)).unwrap());
    qa.put();
    qa2.put();
    assert!(
        portal.enqueue(0, &noop(CR + 32), Some(A)).unwrap(),
        "a released PASID may be reused"
    );
    qb.start().unwrap();
    assert!(portal.enqueue(0, &noop(CR + 64), Some(B)).unwrap());
    assert_eq!(
        wait_record(&dma, B, CR + 64).status(),
        Some(Status::Success)
    );
    assert_eq!(drv.available_instances(), 1024 - 1);
}
