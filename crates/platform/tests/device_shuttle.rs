//! Schedule exploration of the device-side races, end to end: PCIe functions with PASID,
//! ATS and PRI, bound to a process, do DMA through their ATCs while the CPU side changes the
//! address space (munmap, fork, reclaim, migration, exit) or the driver unbinds. With the
//! `shuttle` feature every lock, condition variable and thread of the stack (address
//! spaces, SMMU model, driver, SVA core and its fault workers, the interrupt thread) is
//! shuttle's, so `shuttle::check_random` interleaves the real paths: ATS Translation
//! Requests and ATC fills, PRI page requests through the PRI queue, the interrupt thread and
//! the fault worker, CMD_PRI_RESP, stalls and CMD_RESUME, MMU notifiers, broadcast TLBIs,
//! CMD_CFGI_CD / CMD_ATC_INV / CMD_SYNC. The std-thread stress versions of the first three
//! are in `stress_devices.rs`.
//!
//! In each test a device keeps issuing DMA (value 1, 2, 3, ...) from before the CPU-side
//! operation starts until two DMAs after it returned, so the operation always meets a
//! device with live translations and DMAs in flight.
//!
//! `cargo test -p sva-platform --features shuttle --test device_shuttle`
//!
//! Each test's comment names the mutations (the protection it checks, removed) it was
//! seen to catch at this file's iteration count, and those it does not. Random scheduling
//! does not reach a race that needs one thread held back for a whole invalidation (some
//! twenty switch points) while another runs.
#![cfg(feature = "shuttle")]

use shuttle::thread::JoinHandle;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use sva_addr::{Pa, Pasid, StreamId, Va};
use sva_iommu::{Bond, DeviceId, Sva};
use sva_mm::{AccessKind, Mm, Prot};
use sva_pcie::{Capabilities, Dma, DmaCtx, PciFunction};
use sva_physmem::PhysMemory;
use sva_platform::{Platform, PlatformConfig};

const RW: Prot = Prot::READ.union(Prot::WRITE);
const PAGE: u64 = 4096;
/// Schedules explored per test (the file runs in about 12 s in debug on 2 busy cores;
/// the weakest-caught mutation below shows up about once in 150 schedules).
const ITERATIONS: usize = 2000;

/// A machine with PCIe functions bound to one process.
struct Machine {
    p: Platform,
    mm: Arc<Mm>,
    fs: Vec<Arc<PciFunction>>,
    bonds: Vec<Bond>,
    ctx: DmaCtx,
}

impl Machine {
    /// One function per entry of `ats`, at StreamIDs 0x60, 0x61, ...: with ATS (an ATC,
    /// faulting through PRI) or without (the SMMU translates its DMA, faulting through
    /// stalls).
    fn new(ats: &[bool]) -> Self {
        let p = Platform::new(PlatformConfig {
            // Interrupts on a (shuttle) thread of their own, as on hardware: page requests
            // reach the fault worker through the PRI queue and the driver's handler.
            irq_thread: true,
            iopf_workers: 1,
            ..PlatformConfig::default()
        })
        .unwrap();
        let mm = p.system.spawn().unwrap();
        let sva = p.sva.clone().unwrap();
        let (fs, bonds) = (0x60..)
            .zip(ats)
            .map(|(sid, &ats)| {
                let caps = if ats {
                    Capabilities::default()
                } else {
                    Capabilities {
                        ats: false,
                        pri_capacity: 0,
                        ..Capabilities::default()
                    }
                };
                let f = p.sva_function(StreamId(sid), caps).unwrap();
                (f, sva.bind(DeviceId(sid), &mm).unwrap())
            })
            .unzip();
        let ctx = DmaCtx::pasid(sva.pasid_of(mm.pid()).unwrap());
        Self {
            p,
            mm,
            fs,
            bonds,
            ctx,
        }
    }

    fn sva(&self) -> &Sva {
        self.p.sva.as_deref().unwrap()
    }

    fn pasid(&self) -> Pasid {
        self.ctx.pasid.unwrap()
    }

    /// A private read-write page, faulted in now (`populate`) or left to the first access.
    fn page(&self, populate: bool) -> Va {
        let flags = if populate {
            sva_mm::MapFlags::PRIVATE | sva_mm::MapFlags::POPULATE
        } else {
            sva_mm::MapFlags::PRIVATE
        };
        self.mm.mmap(None, PAGE, RW, flags).unwrap()
    }

    /// The first function writing 1, 2, 3, ... to two pages in turn: one it faults in
    /// through PRI, one populated.
    fn alternating_writer(&self) -> ([Va; 2], Arc<Progress>, Device) {
        let pages = [self.page(false), self.page(true)];
        let (f, ctx) = (self.fs[0].clone(), self.ctx);
        let (progress, device) = Progress::spawn(move |v| {
            let at = pages[(v % 2) as usize];
            f.write(ctx, at.raw(), &v.to_le_bytes()).is_ok()
        });
        (pages, progress, device)
    }

    /// Whether `frame` is allocated, or free and still zero (frames are zeroed when
    /// freed): false means someone wrote it after it was freed.
    fn untouched_unless_allocated(&self, frame: Pa) -> bool {
        if self.p.ram.refcount(frame).is_ok() {
            return true;
        }
        let mut b = vec![0u8; PAGE as usize];
        self.p.ram.read(frame, &mut b).unwrap();
        b.iter().all(|&x| x == 0)
    }

    /// The function's PRI state once its DMA ended: no page request left waiting, no
    /// response that named no outstanding group, no Response Failure (a fault handler that
    /// broke instead of answering).
    fn assert_pri_settled(&self, f: &PciFunction) {
        assert_eq!(
            f.outstanding_page_requests(),
            0,
            "page requests left waiting"
        );
        let caps = f.cap_state();
        assert!(
            !caps.pri_unexpected_index,
            "a response for no outstanding group"
        );
        assert!(!caps.pri_response_failure, "a fault handler failed");
    }
}

/// Faults the address space handled, including those that found the page mapped.
fn fault_count(mm: &Mm) -> u64 {
    let s = mm.stats();
    s.faults + s.spurious_faults
}

fn read_u64(mm: &Mm, at: Va) -> u64 {
    let mut b = [0u8; 8];
    mm.read(at, &mut b).unwrap();
    u64::from_le_bytes(b)
}

/// A device's DMA thread: it returns each value it wrote with whether the DMA completed.
type Device = JoinHandle<Vec<(u64, bool)>>;

/// One device's DMA loop as the CPU side sees it.
struct Progress {
    /// The value of the last DMA that started.
    started: AtomicU64,
    /// The value of the last DMA that completed.
    completed: AtomicU64,
    /// The value of the last DMA to issue (none yet: `u64::MAX`).
    last: AtomicU64,
}

impl Progress {
    /// Runs `dma(1)`, `dma(2)`, ... on a new thread until [`Progress::finish`] says when
    /// to stop; `dma` says whether its DMA completed. The thread returns each value with
    /// that answer.
    fn spawn(dma: impl Fn(u64) -> bool + Send + 'static) -> (Arc<Self>, Device) {
        let p = Arc::new(Self {
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            last: AtomicU64::new(u64::MAX),
        });
        let device = {
            let p = p.clone();
            shuttle::thread::spawn(move || {
                let mut done = Vec::new();
                let mut v = 1;
                while v <= p.last.load(Ordering::SeqCst) {
                    p.started.store(v, Ordering::SeqCst);
                    let ok = dma(v);
                    if ok {
                        p.completed.store(v, Ordering::SeqCst);
                    }
                    done.push((v, ok));
                    v += 1;
                }
                done
            })
        };
        (p, device)
    }

    /// Lets the device run until a DMA that started after the call completed, so the CPU
    /// side meets it with live translations, not blocked in a fault.
    fn wait_for_a_new_dma(&self) {
        let from = self.started.load(Ordering::SeqCst);
        while self.completed.load(Ordering::SeqCst) <= from {
            shuttle::thread::yield_now();
        }
    }

    /// Called once the CPU-side operation returned: the device issues two more DMAs and
    /// stops. Returns the value of the last DMA that started before the call: every DMA
    /// above it started after the operation returned.
    fn finish(&self) -> u64 {
        let cutoff = self.started.load(Ordering::SeqCst);
        self.last.store(cutoff + 2, Ordering::SeqCst);
        cutoff
    }
}

/// Whether every DMA that started after the cutoff failed.
fn none_completed_after(done: &[(u64, bool)], cutoff: u64) -> bool {
    done.iter().all(|&(v, ok)| !ok || v <= cutoff)
}

/// Two functions with ATS keep writing a page through their ATCs (filled by ATS, then
/// faulting through PRI once the page is gone), and one without ATS through the SMMU's
/// IOTLB (faulting through stalls), while the CPU unmaps the page. Once munmap returned
/// no ATC maps the frame, the frame is free, no DMA that starts afterwards completes, and
/// no device writes the frame afterwards: every translation a device or the SMMU held was
/// invalidated before munmap freed the frame.
///
/// Mutations caught: the driver's invalidation without CMD_ATC_INV (`SmmuSva::invalidate`);
/// the SMMU not snooping the CPUs' broadcast TLBIs (the platform's `Btm` a no-op), so the
/// IOTLB keeps the translation for the function without ATS. Not caught: `Atc::insert`
/// without its generation check (a translation an invalidation overtook cached anyway),
/// which needs the device held back between the ATS completion and the fill for the whole
/// invalidation.
#[test]
fn munmap_against_in_flight_dma_and_atc_fills() {
    shuttle::check_random(
        || {
            let m = Machine::new(&[true, true, false]);
            let at = m.page(true);
            let frame = m.mm.translate(at, AccessKind::Write).unwrap().unwrap();
            let devices: Vec<_> =
                m.fs.iter()
                    .map(|f| {
                        let (f, ctx) = (f.clone(), m.ctx);
                        Progress::spawn(move |_| f.write(ctx, at.raw(), &[0xee; 256]).is_ok())
                    })
                    .collect();
            devices[0].0.wait_for_a_new_dma();
            m.mm.munmap(at, PAGE).unwrap();
            let cutoffs: Vec<u64> = devices.iter().map(|d| d.0.finish()).collect();
            assert!(
                m.fs.iter().all(|f| !f.atc().maps_frame(frame, PAGE)),
                "an ATC maps the frame munmap freed"
            );
            assert!(m.p.ram.refcount(frame).is_err(), "munmap freed the frame");
            for ((_, device), cutoff) in devices.into_iter().zip(cutoffs) {
                let done = device.join().unwrap();
                assert!(
                    none_completed_after(&done, cutoff),
                    "a DMA that started after munmap returned ({cutoff}) completed: {done:?}"
                );
            }
            assert!(
                m.untouched_unless_allocated(frame),
                "a device wrote into the frame after munmap freed it"
            );
            assert!(
                m.fs.iter().all(|f| !f.atc().maps_frame(frame, PAGE)),
                "an ATC cached a translation of the freed frame"
            );
            for f in &m.fs {
                m.assert_pri_settled(f);
            }
        },
        ITERATIONS,
    );
}

/// A function keeps writing a rising value into a private page while the process forks.
/// The child sees the page as it was at some instant of the fork (every write that
/// completed before fork started, none that started after it returned), and its copy never
/// changes afterwards: the device's later writes break copy-on-write (through PRI) and
/// land in the parent's own copy, which ends with the last one.
///
/// Mutations caught: fork write-protecting the parent's pages outside an MMU-notifier
/// bracket (`Mm::copy_into` calling `copy()` without `invalidating`), so the ATC keeps a
/// writable translation of the frame the child now shares; the driver's invalidation
/// without CMD_ATC_INV.
#[test]
fn fork_against_dma_into_a_page_that_becomes_copy_on_write() {
    shuttle::check_random(
        || {
            let m = Machine::new(&[true]);
            let at = m.page(true);
            let (progress, device) = {
                let (f, ctx) = (m.fs[0].clone(), m.ctx);
                Progress::spawn(move |v| f.write(ctx, at.raw(), &v.to_le_bytes()).is_ok())
            };
            progress.wait_for_a_new_dma();
            let before = progress.completed.load(Ordering::SeqCst);
            let child = m.p.system.fork(m.mm.pid()).unwrap();
            let cutoff = progress.finish();
            let frozen = read_u64(&child, at);
            assert!(
                (before..=cutoff).contains(&frozen),
                "the child has {frozen}: a write completed before fork ({before}) is missing, \
                 or one that started after it returned ({cutoff}) landed"
            );
            let done = device.join().unwrap();
            assert!(done.iter().all(|&(_, ok)| ok), "{done:?}");
            assert_eq!(
                read_u64(&child, at),
                frozen,
                "a device write reached the child's copy after fork"
            );
            assert_eq!(
                read_u64(&m.mm, at),
                cutoff + 2,
                "the parent has the last write"
            );
            m.p.system.exit(child.pid()).unwrap();
            m.assert_pri_settled(&m.fs[0]);
        },
        ITERATIONS,
    );
}

/// A function keeps writing a rising value into a private page and reading it back while
/// the CPU migrates the page to another frame and then reclaims it to swap (the device
/// faults it back in through PRI). The device always reads back what it wrote, and the
/// CPU finds the last write: no write went to the old frame after its contents were copied
/// away.
///
/// Mutations caught: `Mm::migrate` copying the page before unmapping it; `Mm::reclaim`
/// reading the page for swap before unmapping it; the driver's invalidation without
/// CMD_ATC_INV.
#[test]
fn reclaim_and_migration_against_device_access() {
    shuttle::check_random(
        || {
            let m = Machine::new(&[true]);
            let at = m.page(true);
            let (progress, device) = {
                let (f, ctx) = (m.fs[0].clone(), m.ctx);
                Progress::spawn(move |v| {
                    let mut b = [0u8; 8];
                    f.read(ctx, at.raw(), &mut b).unwrap();
                    assert_eq!(
                        u64::from_le_bytes(b),
                        v - 1,
                        "the device's last write is lost"
                    );
                    f.write(ctx, at.raw(), &v.to_le_bytes()).unwrap();
                    true
                })
            };
            progress.wait_for_a_new_dma();
            m.mm.migrate(at).unwrap();
            progress.wait_for_a_new_dma();
            assert_eq!(m.mm.reclaim(at, PAGE).unwrap(), 1, "the page was reclaimed");
            let cutoff = progress.finish();
            device.join().unwrap();
            assert_eq!(read_u64(&m.mm, at), cutoff + 2, "a device write was lost");
            m.assert_pri_settled(&m.fs[0]);
        },
        ITERATIONS,
    );
}

/// A function keeps writing two pages in turn, one mapped and one it faults in through
/// PRI, while its driver unbinds it. No DMA that started after unbind returned completes
/// or reaches memory, no page request reaches the address space after unbind returned,
/// the function has no page request left waiting and got no response it did not ask for,
/// and the PASID is free again.
///
/// Mutation caught: unbind leaving the PASID's context valid (`Sva::unbind` without
/// `clear_pasid`). Not caught: unbind without its own invalidation (redundant here: the
/// driver's CD update already sends CMD_ATC_INV); unbind without draining the fault
/// queue, which needs the fault worker held back between finding the address space and
/// faulting in for the rest of the unbind.
#[test]
fn unbind_against_page_requests() {
    shuttle::check_random(
        || {
            let m = Machine::new(&[true]);
            let (pages, progress, device) = m.alternating_writer();
            progress.wait_for_a_new_dma();
            m.sva().unbind(m.bonds[0]).unwrap();
            let cutoff = progress.finish();
            let faults = fault_count(&m.mm);
            let done = device.join().unwrap();
            assert_eq!(
                fault_count(&m.mm),
                faults,
                "a page request reached the address space after unbind returned"
            );
            assert!(
                none_completed_after(&done, cutoff),
                "a DMA that started after unbind returned ({cutoff}) completed: {done:?}"
            );
            let value = pages
                .map(|at| read_u64(&m.mm, at))
                .into_iter()
                .max()
                .unwrap();
            assert!(
                value <= cutoff,
                "write {value} started after unbind returned ({cutoff}) and reached memory"
            );
            m.assert_pri_settled(&m.fs[0]);
            assert!(!m.sva().pasid_allocated(m.pasid()), "the PASID is free");
        },
        ITERATIONS,
    );
}

/// A function keeps writing two pages in turn, one mapped and one it faults in through
/// PRI, while the process exits. No DMA that started after exit returned completes (no
/// ATC or IOTLB entry survives the exit, and page requests are answered Invalid, not
/// Failure), the function has nothing left waiting, and the driver can still unbind it.
///
/// Mutation caught: the exit (release) notifier leaving the PASID's context valid
/// (`Inner::release` without `quiet_pasid`), so ATS keeps translating through tables exit
/// is tearing down. Not caught: the release notifier without its own invalidation
/// (redundant here: quieting the CD already sends CMD_TLBI_NH_ASID and CMD_ATC_INV).
#[test]
fn exit_against_fault_handling() {
    shuttle::check_random(
        || {
            let m = Machine::new(&[true]);
            let (_, progress, device) = m.alternating_writer();
            progress.wait_for_a_new_dma();
            m.p.system.exit(m.mm.pid()).unwrap();
            let cutoff = progress.finish();
            let done = device.join().unwrap();
            assert!(
                none_completed_after(&done, cutoff),
                "a DMA that started after exit returned ({cutoff}) completed: {done:?}"
            );
            assert!(m.fs[0].atc().is_empty(), "the ATC kept a translation");
            m.assert_pri_settled(&m.fs[0]);
            m.sva().unbind(m.bonds[0]).unwrap();
            assert!(!m.sva().pasid_allocated(m.pasid()), "the PASID is free");
        },
        ITERATIONS,
    );
}
