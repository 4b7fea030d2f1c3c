//! Schedule exploration of the SVA core: bind, unbind, I/O page faults, munmap
//! (invalidation) and exit racing, under shuttle's randomized scheduler. The IOMMU driver
//! is a recorder; the address spaces are real (`sva_mm`).
//! `cargo test -p sva-iommu --features shuttle --test sva_shuttle`
#![cfg(feature = "shuttle")]

use shuttle::thread::JoinHandle;
use std::sync::{Arc, Mutex};
use sva_addr::{Asid, Pasid, Va};
use sva_iommu::{
    DeviceId, DomainConfig, DriverError, IommuDriver, PageRequest, PageResponse, Sva, SvaCaps,
    SvaContext, SvaFeatures,
};
use sva_mm::{MapFlags, MmConfig, Prot, System};
use sva_physmem::Ram;
use sva_vmsa::TableConfig;

/// What the driver was asked, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    SetPasid(DeviceId, Pasid),
    Quiet(DeviceId, Pasid),
    Clear(DeviceId, Pasid),
    Invalidate,
    Response(DeviceId, Pasid, u16, PageResponse),
    /// Not a driver call: the test's own marker, "unbind of this pair returned".
    Unbound(DeviceId, Pasid),
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Call>>);

impl Recorder {
    fn push(&self, c: Call) {
        self.0.lock().unwrap().push(c);
    }
    fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }
}

impl IommuDriver for Recorder {
    fn min_pasid(&self) -> Pasid {
        Pasid(1)
    }
    fn sva_caps(&self, _: DeviceId) -> Result<SvaCaps, DriverError> {
        Ok(SvaCaps {
            pasid_bits: 4,
            iopf: true,
            btm: false,
        })
    }
    fn supports_tables(&self, _: &TableConfig) -> bool {
        true
    }
    fn set_domain(&self, _: DeviceId, _: &DomainConfig) -> Result<(), DriverError> {
        Ok(())
    }
    fn enable_sva(&self, _: DeviceId, _: bool) -> Result<(), DriverError> {
        Ok(())
    }
    fn disable_sva(&self, _: DeviceId) -> Result<(), DriverError> {
        Ok(())
    }
    fn set_pasid(&self, d: DeviceId, p: Pasid, _: &SvaContext) -> Result<(), DriverError> {
        self.push(Call::SetPasid(d, p));
        Ok(())
    }
    fn quiet_pasid(&self, d: DeviceId, p: Pasid) -> Result<(), DriverError> {
        self.push(Call::Quiet(d, p));
        Ok(())
    }
    fn clear_pasid(&self, d: DeviceId, p: Pasid) -> Result<(), DriverError> {
        self.push(Call::Clear(d, p));
        Ok(())
    }
    fn invalidate(
        &self,
        _: Asid,
        _: Va,
        _: Va,
        _: &[(DeviceId, Pasid)],
        _: bool,
    ) -> Result<(), DriverError> {
        self.push(Call::Invalidate);
        Ok(())
    }
    fn page_response(
        &self,
        d: DeviceId,
        p: Pasid,
        group: u16,
        r: PageResponse,
    ) -> Result<(), DriverError> {
        self.push(Call::Response(d, p, group, r));
        Ok(())
    }
}

const DEV: DeviceId = DeviceId(1);
const OTHER: DeviceId = DeviceId(2);
const IOPF: SvaFeatures = SvaFeatures {
    iopf: true,
    max_pasid: None,
};

fn request(pasid: Pasid, group: u16, addr: Va) -> PageRequest {
    PageRequest {
        device: DEV,
        pasid,
        group,
        last: true,
        addr,
        read: true,
        write: true,
        exec: false,
        privileged: false,
    }
}

/// A system of 64 MiB and an SVA core on a recording driver, with [`DEV`] and [`OTHER`]
/// enabled for I/O page faults.
fn sva_with_two_devices() -> (System, Arc<Recorder>, Arc<Sva>) {
    let ram = Arc::new(Ram::new(64 << 20).unwrap());
    let sys = System::new(ram.clone(), MmConfig::default()).unwrap();
    let drv = Arc::new(Recorder::default());
    let sva = Arc::new(Sva::new(drv.clone(), 2, ram, sys.asid_allocator()));
    sva.enable_device(DEV, IOPF).unwrap();
    sva.enable_device(OTHER, IOPF).unwrap();
    (sys, drv, sva)
}

/// A thread that, as [`DEV`], reports one fault per page for `groups` pages from `va`.
fn faulting_device(sva: &Arc<Sva>, pasid: Pasid, va: Va, groups: u16) -> JoinHandle<()> {
    let sva = sva.clone();
    shuttle::thread::spawn(move || {
        for g in 0..groups {
            sva.report_fault(request(pasid, g, va + u64::from(g) * 4096));
        }
    })
}

/// The device faults pages in while the process unmaps part of its buffer and another
/// device binds; then the device stops and the driver unbinds. Every group is answered
/// exactly once, all before unbind returns; the PASID is free at the end; nothing
/// deadlocks.
#[test]
fn faults_munmap_bind_and_unbind_race_safely() {
    shuttle::check_random(
        || {
            let (sys, drv, sva) = sva_with_two_devices();
            let mm = sys.spawn().unwrap();
            let rw = Prot::READ | Prot::WRITE;
            let va = mm.mmap(None, 4 * 4096, rw, MapFlags::PRIVATE).unwrap();
            let bond = sva.bind(DEV, &mm).unwrap();

            let device = faulting_device(&sva, bond.pasid, va, 3);
            let cpu = {
                let mm = mm.clone();
                shuttle::thread::spawn(move || mm.munmap(va + 2 * 4096, 2 * 4096).unwrap())
            };
            let second = {
                let (sva, mm) = (sva.clone(), mm.clone());
                shuttle::thread::spawn(move || {
                    let b = sva.bind(OTHER, &mm).unwrap();
                    assert_eq!(b.pasid, bond.pasid, "one PASID per address space");
                    sva.unbind(b).unwrap();
                })
            };
            device.join().unwrap();
            // The device has stopped issuing requests: unbind drains what is in flight.
            sva.unbind(bond).unwrap();
            drv.push(Call::Unbound(DEV, bond.pasid));
            cpu.join().unwrap();
            second.join().unwrap();

            let calls = drv.calls();
            let unbound = calls
                .iter()
                .position(|c| *c == Call::Unbound(DEV, bond.pasid))
                .unwrap();
            for g in 0..3u16 {
                let answers: Vec<usize> = calls
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| matches!(c, Call::Response(DEV, _, group, _) if *group == g))
                    .map(|(i, _)| i)
                    .collect();
                assert_eq!(answers.len(), 1, "group {g} answered once: {calls:?}");
                assert!(
                    answers[0] < unbound,
                    "group {g} answered after unbind: {calls:?}"
                );
            }
            assert!(!sva.pasid_allocated(bond.pasid));
            assert_eq!(sva.stats().pasids_in_use, 0);
        },
        300,
    );
}

/// The process exits while the device's faults are being handled and a second device
/// binds: faults are answered (Success before the exit, Invalid after), the contexts are
/// made quiet before anything is torn down, binding an exited address space fails
/// cleanly, and the PASID stays allocated until the last unbind.
#[test]
fn exit_races_faults_and_binds() {
    shuttle::check_random(
        || {
            let (sys, drv, sva) = sva_with_two_devices();
            let mm = sys.spawn().unwrap();
            let va = mm
                .mmap(None, 2 * 4096, Prot::READ | Prot::WRITE, MapFlags::PRIVATE)
                .unwrap();
            let bond = sva.bind(DEV, &mm).unwrap();
            let pid = mm.pid();

            let device = faulting_device(&sva, bond.pasid, va, 2);
            let binder = {
                let (sva, mm) = (sva.clone(), mm.clone());
                shuttle::thread::spawn(move || sva.bind(OTHER, &mm))
            };
            sys.exit(pid).unwrap();
            device.join().unwrap();
            let other = binder.join().unwrap();
            assert!(sva.pasid_allocated(bond.pasid), "kept while bonds remain");
            sva.unbind(bond).unwrap();
            if let Ok(b) = other {
                assert!(sva.pasid_allocated(b.pasid));
                sva.unbind(b).unwrap();
            }
            assert!(!sva.pasid_allocated(bond.pasid));

            let calls = drv.calls();
            let answered = calls
                .iter()
                .filter(|c| matches!(c, Call::Response(DEV, ..)))
                .count();
            assert_eq!(answered, 2, "{calls:?}");
            assert!(
                calls
                    .iter()
                    .all(|c| !matches!(c, Call::Response(_, _, _, PageResponse::Failure))),
                "{calls:?}"
            );
            // Quiet before clear for the device that was bound at exit.
            let quiet = calls
                .iter()
                .position(|c| *c == Call::Quiet(DEV, bond.pasid));
            let clear = calls
                .iter()
                .position(|c| *c == Call::Clear(DEV, bond.pasid));
            assert!(
                quiet.is_some() && clear.is_some() && quiet < clear,
                "{calls:?}"
            );
        },
        300,
    );
}
