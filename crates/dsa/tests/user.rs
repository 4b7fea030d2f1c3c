//! The user library end to end on a real process address space: the driver hands out a
//! queue, the process maps its portal, the session submits with MOVDIR64B or ENQCMD, and
//! recovers from partial completions by touching pages from the CPU. The device reaches
//! the process's memory through a `Dma` that walks the process's page tables (what the
//! SMMU would do) and faults on pages that are not mapped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use sva_addr::{Pasid, Va};
use sva_dsa::{
    Descriptor, Device, DeviceConfig, DsaDriver, DsaSession, Error, SessionConfig, Status,
    WqConfig, WqMode,
};
use sva_mm::{AccessKind, MapFlags, Mm, MmConfig, Prot, System};
use sva_pcie::{Dma, DmaCtx, DmaFault, FaultReason};
use sva_physmem::{Pa, PhysMemory, Ram};
use sva_uacce::UacceQueueOps;

const PAGE: u64 = 4096;
const P: Pasid = Pasid(0x42);
const RW: Prot = Prot::READ.union(Prot::WRITE);

/// DMA in one process's address space through its page tables. Pages that do not
/// translate for the access fault; with block-on-fault and `fault_in` the fault handler
/// runs, as an I/O page fault served through PRI would.
struct MmDma {
    mm: Arc<Mm>,
    ram: Arc<Ram>,
    fault_in: AtomicBool,
    gate_closed: Mutex<bool>,
    gate: Condvar,
}

impl MmDma {
    fn wait_gate(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut closed = self.gate_closed.lock().unwrap();
        while *closed && Instant::now() < deadline {
            closed = self
                .gate
                .wait_timeout(closed, Duration::from_millis(5))
                .unwrap()
                .0;
        }
    }

    fn set_gate(&self, closed: bool) {
        *self.gate_closed.lock().unwrap() = closed;
        self.gate.notify_all();
    }

    fn access(
        &self,
        ctx: DmaCtx,
        addr: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(Pa, usize, usize),
    ) -> Result<(), DmaFault> {
        self.wait_gate();
        let kind = if write {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        let mut pos = 0;
        while pos < len {
            let a = addr + pos as u64;
            let fault = |reason| DmaFault {
                addr: a,
                done: pos as u64,
                write,
                reason,
            };
            if ctx.pasid != Some(P) {
                return Err(fault(FaultReason::Invalid));
            }
            let n = ((PAGE - a % PAGE) as usize).min(len - pos);
            let pa = match self.mm.translate(Va(a), kind) {
                Ok(Some(pa)) => pa,
                Ok(None) if ctx.block_on_fault && self.fault_in.load(Ordering::SeqCst) => {
                    self.mm
                        .handle_fault(Va(a), kind)
                        .map_err(|_| fault(FaultReason::Invalid))?;
                    continue;
                }
                Ok(None) if ctx.block_on_fault => return Err(fault(FaultReason::Timeout)),
                Ok(None) => return Err(fault(FaultReason::NotPresent)),
                Err(_) => return Err(fault(FaultReason::Invalid)),
            };
            f(pa, pos, n);
            pos += n;
        }
        Ok(())
    }
}

impl Dma for MmDma {
    fn read(&self, ctx: DmaCtx, addr: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        let ram = self.ram.clone();
        self.access(ctx, addr, buf.len(), false, |pa, pos, n| {
            ram.read(pa, &mut buf[pos..pos + n]).unwrap();
        })
    }

    fn write(&self, ctx: DmaCtx, addr: u64, data: &[u8]) -> Result<(), DmaFault> {
        let ram = self.ram.clone();
        self.access(ctx, addr, data.len(), true, |pa, pos, n| {
            ram.write(pa, &data[pos..pos + n]).unwrap();
        })
    }
}

struct Stack {
    _sys: System,
    mm: Arc<Mm>,
    dma: Arc<MmDma>,
    drv: DsaDriver,
    queue: Arc<sva_dsa::DsaQueue>,
    portal: Va,
    shared: bool,
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Unmapping the portal breaks the cycle process -> portal -> device -> Dma -> process.
        let _ = self.mm.munmap(self.portal, PAGE);
        self.queue.put();
    }
}

fn stack(mode: WqMode, wq_size: usize) -> Stack {
    let sys = System::new(Arc::new(Ram::new(64 << 20).unwrap()), MmConfig::default()).unwrap();
    let mm = sys.spawn().unwrap();
    mm.set_pasid(Some(P)); // what binding the process to the device does
    let dma = Arc::new(MmDma {
        mm: mm.clone(),
        ram: sys.ram().clone(),
        fault_in: AtomicBool::new(false),
        gate_closed: Mutex::new(false),
        gate: Condvar::new(),
    });
    let dev = Device::new(
        dma.clone(),
        DeviceConfig {
            wqs: vec![
                WqConfig {
                    mode: WqMode::Dedicated,
                    size: wq_size,
                },
                WqConfig {
                    mode: WqMode::Shared,
                    size: wq_size,
                },
            ],
            engines: 2,
            ..DeviceConfig::default()
        },
    )
    .unwrap();
    let drv = DsaDriver::new(Arc::new(dev)).unwrap();
    let wq = usize::from(mode == WqMode::Shared);
    let queue = drv.get_queue_on(wq, Some(P)).unwrap();
    queue.start().unwrap();
    let portal = mm.mmap_io(queue.mmio(), RW, MapFlags::SHARED).unwrap();
    Stack {
        _sys: sys,
        mm,
        dma,
        drv,
        queue,
        portal,
        shared: mode == WqMode::Shared,
    }
}

impl Stack {
    fn session(&self) -> DsaSession {
        DsaSession::new(&self.mm, self.portal, self.shared).unwrap()
    }

    fn buffer(&self, pages: u64) -> Va {
        self.mm
            .mmap(
                None,
                pages * PAGE,
                RW,
                MapFlags::PRIVATE | MapFlags::NOHUGEPAGE,
            )
            .unwrap()
    }

    /// A buffer holding `bytes`, whose pages are then swapped out (so the device faults).
    fn swapped(&self, bytes: &[u8]) -> Va {
        let va = self.buffer((bytes.len() as u64).div_ceil(PAGE) + 1);
        self.mm.write(va, bytes).unwrap();
        assert!(self.mm.reclaim(va, bytes.len() as u64).unwrap() > 0);
        va
    }

    fn read(&self, va: Va, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mm.read(va, &mut b).unwrap();
        b
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

#[test]
fn copy_recovers_from_faults_on_both_sides() {
    for mode in [WqMode::Dedicated, WqMode::Shared] {
        let s = stack(mode, 16);
        let mut ses = s.session();
        let bytes = data(4 * PAGE as usize + 100, 1);
        let src = s.swapped(&bytes);
        let dst = s.buffer(6);
        let r = ses.copy(dst + 3, src, bytes.len() as u32).unwrap();
        assert_eq!(r.status(), Some(Status::Success), "{mode:?}");
        assert_eq!(r.bytes_completed as usize, bytes.len());
        assert_eq!(s.read(dst + 3, bytes.len()), bytes, "{mode:?}");
        let st = ses.stats();
        // 5 source pages to swap in, 5 destination pages to fault in.
        assert_eq!(st.faults_touched, 10, "{mode:?} {st:?}");
        assert_eq!(st.resubmissions, 10);
        assert_eq!(st.submissions, 11);
        let c = s.drv.device().counters();
        assert_eq!(c.status(Status::PageFaultNoBof.code()), 10);
        assert_eq!(c.status(Status::Success.code()), 1);
    }
}

#[test]
fn an_overlapping_copy_recovers_without_advancing() {
    let s = stack(WqMode::Dedicated, 16);
    let mut ses = s.session();
    let buf = s.buffer(4);
    let bytes = data(2 * PAGE as usize, 2);
    s.mm.write(buf, &bytes).unwrap(); // pages 2 and 3 stay untouched
    let r = ses.copy(buf + 0x1800, buf + 0x800, 0x2000).unwrap();
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(r.result, 1, "descending");
    assert_eq!(r.bytes_completed, 0x2000);
    assert!(ses.stats().resubmissions >= 2);
    let mut cpu = bytes.clone();
    cpu.resize(4 * PAGE as usize, 0);
    cpu.copy_within(0x800..0x2800, 0x1800);
    assert_eq!(s.read(buf, cpu.len()), cpu);
}

#[test]
fn fill_keeps_the_pattern_phase_across_resubmissions() {
    let s = stack(WqMode::Dedicated, 16);
    let mut ses = s.session();
    let dst = s.buffer(4);
    let pattern = 0x8877_6655_4433_2211u64;
    let len = 3 * PAGE as usize;
    let r = ses.fill(dst + 5, pattern, len as u32).unwrap();
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(ses.stats().resubmissions, 4, "one per destination page");
    let want: Vec<u8> = (0..len).map(|i| pattern.to_le_bytes()[i % 8]).collect();
    assert_eq!(s.read(dst + 5, len), want);
}

#[test]
fn compare_finds_the_first_difference_after_faults() {
    let s = stack(WqMode::Shared, 16);
    let mut ses = s.session();
    let a = data(3 * PAGE as usize, 3);
    let mut b = a.clone();
    let va = s.swapped(&a);
    let at = 2 * PAGE as usize + 77;
    b[at] ^= 1;
    let vb = s.swapped(&b);
    let r = ses.compare(va + 1, vb + 1, a.len() as u32 - 1).unwrap();
    assert_eq!(r.status(), Some(Status::SuccessPred));
    assert_eq!(r.result, 1);
    assert_eq!(
        r.bytes_completed as usize,
        at - 1,
        "offset from the start of the compare"
    );
    assert!(ses.stats().resubmissions >= 4);

    let r = ses.compare(va, va, a.len() as u32).unwrap();
    assert_eq!((r.status(), r.result), (Some(Status::Success), 0));
}

#[test]
fn compare_pattern_rotates_the_pattern_on_resubmission() {
    let s = stack(WqMode::Dedicated, 16);
    let mut ses = s.session();
    let pattern = 0x0102_0304_0506_0708u64;
    let len = 3 * PAGE as usize;
    let bytes: Vec<u8> = (0..len + 3)
        .map(|i| pattern.to_le_bytes()[(i + 5) % 8])
        .collect();
    let va = s.swapped(&bytes);
    // From byte 3 on, the buffer is the pattern from its first byte.
    let r = ses.compare_pattern(va + 3, pattern, len as u32).unwrap();
    assert_eq!((r.status(), r.result), (Some(Status::Success), 0));
    assert!(ses.stats().resubmissions >= 3);
    s.mm.write(va + 3 + 9000, &[0]).unwrap();
    let r = ses.compare_pattern(va + 3, pattern, len as u32).unwrap();
    assert_eq!((r.result, r.bytes_completed), (1, 9000));
}

#[test]
fn crc32c_chains_the_partial_crc_through_the_seed() {
    let s = stack(WqMode::Shared, 16);
    let mut ses = s.session();
    let bytes = data(5 * PAGE as usize + 11, 4);
    let va = s.swapped(&bytes);
    let r = ses.crc32c(va + 7, bytes.len() as u32 - 7).unwrap();
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(r.crc_val(), u64::from(crc32c::crc32c(&bytes[7..])));
    assert!(ses.stats().resubmissions >= 5);
}

#[test]
fn dualcast_recovers_on_three_buffers() {
    let s = stack(WqMode::Dedicated, 16);
    let mut ses = s.session();
    let bytes = data(2 * PAGE as usize, 5);
    let src = s.swapped(&bytes);
    let d1 = s.buffer(4);
    let d2 = s.buffer(4);
    let r = ses
        .dualcast(src, d1 + 0x123, d2 + 0x123, bytes.len() as u32)
        .unwrap();
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(s.read(d1 + 0x123, bytes.len()), bytes);
    assert_eq!(s.read(d2 + 0x123, bytes.len()), bytes);
}

#[test]
fn a_batch_with_a_faulting_member_is_completed_by_the_library() {
    let s = stack(WqMode::Dedicated, 16);
    let mut ses = s.session();
    let bytes = data(PAGE as usize, 6);
    let src = s.buffer(1);
    s.mm.write(src, &bytes).unwrap();
    let dst = s.buffer(1);
    s.mm.write(dst, &[0; 8]).unwrap(); // faulted in
    let untouched = s.buffer(2);
    let members = [
        Descriptor::memmove(0, src.raw(), dst.raw(), PAGE as u32),
        Descriptor::memfill(0, untouched.raw(), 0x0101_0101_0101_0101, 2 * PAGE as u32),
        Descriptor::crc32c(0, src.raw(), PAGE as u32, 0),
    ];
    let out = ses.batch(&members).unwrap();
    assert_eq!(out.record.status(), Some(Status::BatchFail));
    assert_eq!(out.record.descs_completed(), 3);
    assert_eq!(out.recovered, 1);
    for (i, m) in out.members.iter().enumerate() {
        assert_eq!(m.status(), Some(Status::Success), "member {i}");
    }
    assert_eq!(out.members[1].bytes_completed, 2 * PAGE as u32);
    assert_eq!(out.members[2].crc_val(), u64::from(crc32c::crc32c(&bytes)));
    assert_eq!(s.read(dst, bytes.len()), bytes);
    assert_eq!(
        s.read(untouched, 2 * PAGE as usize),
        vec![1; 2 * PAGE as usize]
    );
}

#[test]
fn members_abandoned_after_a_fence_are_run_once_the_fault_is_fixed() {
    let s = stack(WqMode::Shared, 16);
    let mut ses = s.session();
    let a = s.buffer(1);
    let b = s.buffer(1);
    s.mm.write(b, &[0; 1]).unwrap();
    let mut fenced = Descriptor::memmove(0, a.raw(), b.raw(), 64);
    fenced.flags.set_fence(true);
    let members = [
        Descriptor::memfill(0, a.raw(), 0x0909_0909_0909_0909, 64), // faults: a untouched
        fenced,
        Descriptor::noop(0),
    ];
    let out = ses.batch(&members).unwrap();
    assert_eq!(out.record.status(), Some(Status::BatchFail));
    assert_eq!(out.record.descs_completed(), 1);
    assert_eq!(out.recovered, 3);
    assert!(
        out.members
            .iter()
            .all(|m| m.status() == Some(Status::Success))
    );
    assert_eq!(
        s.read(b, 64),
        vec![9; 64],
        "the fenced copy ran after the fill"
    );
}

#[test]
fn bad_descriptors_come_back_with_their_status() {
    let s = stack(WqMode::Dedicated, 16);
    let mut ses = s.session();
    let va = s.buffer(1);
    let r = ses.copy(va, va + 64, 0).unwrap();
    assert_eq!(r.status(), Some(Status::XferErange));
    let r = ses.batch(&[Descriptor::noop(0)]).unwrap();
    assert_eq!(r.record.status(), Some(Status::DescCountErange));
    assert_eq!(ses.stats().resubmissions, 0);
}

#[test]
fn a_fault_on_an_unmapped_address_is_the_callers_segv() {
    let s = stack(WqMode::Dedicated, 16);
    let mut ses = s.session();
    let va = s.buffer(1);
    let e = ses.copy(Va(0x7000_0000_0000), va, 64).unwrap_err();
    assert!(matches!(e, Error::Mm(sva_mm::Error::Segv { .. })), "{e}");
}

#[test]
fn block_on_fault_needs_no_software_recovery() {
    let s = stack(WqMode::Dedicated, 16);
    s.dma.fault_in.store(true, Ordering::SeqCst);
    let mut ses = DsaSession::with_config(
        &s.mm,
        s.portal,
        false,
        SessionConfig {
            block_on_fault: true,
            ..SessionConfig::default()
        },
    )
    .unwrap();
    let bytes = data(3 * PAGE as usize, 7);
    let src = s.swapped(&bytes);
    let dst = s.buffer(4);
    let r = ses.copy(dst, src, bytes.len() as u32).unwrap();
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(s.read(dst, bytes.len()), bytes);
    assert_eq!(ses.stats().resubmissions, 0);
    assert_eq!(ses.stats().faults_touched, 0);
}

#[test]
fn a_full_shared_wq_makes_the_session_give_up_after_its_retries() {
    let s = stack(WqMode::Shared, 1);
    let mut ses = s.session();
    let cr = s.buffer(1);
    s.mm.write(cr, &[0; 64]).unwrap();
    s.dma.set_gate(true);
    // Two engines each take one descriptor and block; the third fills the WQ.
    for i in 0..3u64 {
        let d = Descriptor::noop(cr.raw() + 32 * (i % 2));
        assert!(s.mm.enqcmd(s.portal, &d.encode()).unwrap());
        if i < 2 {
            let deadline = Instant::now() + Duration::from_secs(5);
            while s.drv.device().wq_occupancy(1).unwrap() != 0 {
                assert!(Instant::now() < deadline);
                std::thread::yield_now();
            }
        }
    }
    let e = ses.noop().unwrap_err();
    assert!(matches!(e, Error::Busy(_)), "{e}");
    assert_eq!(
        ses.stats().enqcmd_retries,
        4,
        "the first attempt and 3 retries"
    );
    s.dma.set_gate(false);
    let r = ses.noop();
    // The WQ drains once the gate opens; the session's retries may or may not catch it
    // free on the first try, so retry a little.
    let r = match r {
        Ok(r) => r,
        Err(_) => {
            std::thread::sleep(Duration::from_millis(20));
            ses.noop().unwrap()
        }
    };
    assert_eq!(r.status(), Some(Status::Success));
}
