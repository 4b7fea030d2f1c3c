//! The DSA device model fed arbitrary descriptors: [`dsa_descriptor`].

use crate::dma::{PAGE, PageDma};
use crate::{Input, watch};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sva_addr::Pasid;
use sva_dsa::{
    COMPLETION_RECORD_SIZE, CompletionRecord, DESCRIPTOR_SIZE, DescFlags, Descriptor, Device,
    DeviceConfig, Status, WqConfig, WqMode,
};
use sva_mm::IoMemory;

const A: u32 = 1;
const B: u32 = 2;
/// The PASID of the final check, which no fuzzed descriptor runs in.
const C: u32 = 3;
/// Memory mapped in A and B from address 0.
const LOW: u64 = 0x2_0000;
/// Blocking accesses below this fault pages in (at most [`FAULT_IN_PAGES`]).
const FAULT_IN_BELOW: u64 = 1 << 20;
const FAULT_IN_PAGES: u64 = 64;
/// Where the final check works (above anything fuzzed descriptors can fault in).
const CHECK: u64 = 0x100_0000;
const MAX_OPS: usize = 64;
/// How long the final check waits for a completion record.
const DEADLINE: Duration = Duration::from_secs(10);

struct Rig {
    dma: Arc<PageDma>,
    dev: Device,
    dwq: Arc<dyn IoMemory>,
    swq: Arc<dyn IoMemory>,
}

fn pasid_of(x: u8) -> Pasid {
    Pasid(if x & 1 == 0 { A } else { B })
}

/// Points the descriptor's addresses into the mapped low memory and asks for a
/// completion record, so the operations themselves run (on fuzzed sizes and flags).
fn aim(raw: &mut [u8; DESCRIPTOR_SIZE]) {
    let mut d = Descriptor::decode(raw);
    d.completion_addr &= (LOW - 1) & !(COMPLETION_RECORD_SIZE as u64 - 1);
    d.src &= LOW - 1;
    d.dst &= LOW - 1;
    d.xfer_size %= 0x1_0000;
    d.flags = DescFlags::from_bits(d.flags.into_bits() | DescFlags::CRAV | DescFlags::RCR);
    d.reserved0 = 0;
    d.reserved1 = 0;
    *raw = d.encode();
}

impl Rig {
    fn new() -> Self {
        let dma = Arc::new(PageDma::new(FAULT_IN_PAGES, FAULT_IN_BELOW));
        for p in [A, B] {
            dma.map(Some(p), 0, LOW);
        }
        // The last page of the 64-bit address space, for address arithmetic at the top.
        dma.map(Some(A), u64::MAX - (PAGE - 1), PAGE);
        let dev = Device::new(
            dma.clone(),
            DeviceConfig {
                wqs: vec![
                    WqConfig {
                        mode: WqMode::Dedicated,
                        size: 8,
                    },
                    WqConfig {
                        mode: WqMode::Shared,
                        size: 8,
                    },
                ],
                engines: 1,
                max_xfer_size: 0x1_0000,
                max_batch_size: 8,
                drain_timeout: Duration::from_secs(5),
                abort_timeout: Duration::from_secs(5),
                cr_fault_log: 8,
            },
        )
        .expect("valid device config");
        dev.set_wq_pasid(0, Some(Pasid(A))).expect("dedicated WQ");
        dev.enable_wq(0).expect("WQ 0");
        dev.enable_wq(1).expect("WQ 1");
        let dwq = dev.portal(0).expect("portal 0");
        let swq = dev.portal(1).expect("portal 1");
        Self { dma, dev, dwq, swq }
    }

    /// Disables and re-enables both WQs: returns once nothing fuzzed is queued or
    /// running. Every descriptor must have finished within the drain timeout.
    fn quiesce(&self) {
        let aborted = self.dev.counters().aborted;
        for wq in 0..2 {
            self.dev
                .disable_wq(wq)
                .expect("descriptors end within the abort timeout");
        }
        assert_eq!(
            self.dev.counters().aborted,
            aborted,
            "a descriptor ran longer than the drain timeout"
        );
        for wq in 0..2 {
            self.dev.enable_wq(wq).expect("enable");
        }
        for p in [A, B, C] {
            self.dev.unblock_pasid(1, Pasid(p)).expect("unblock");
        }
    }

    /// A memmove in `pasid` through `wq` must complete with Success and copy.
    fn check_memmove(&self, wq: usize, pasid: u32) {
        let base = CHECK + 0x10_0000 * wq as u64;
        let (src, dst, cr) = (base, base + 0x2000, base + 0x4000);
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + pasid) as u8).collect();
        self.dma.put(Some(pasid), src, &data);
        self.dma.put(Some(pasid), dst, &[0u8; 300]);
        self.dma
            .put(Some(pasid), cr, &[0u8; COMPLETION_RECORD_SIZE]);
        let d = Descriptor::memmove(cr, src, dst, data.len() as u32).encode();
        let deadline = Instant::now() + DEADLINE;
        if wq == 0 {
            self.dwq.write(0, &d).expect("MOVDIR64B");
        } else {
            while !self.swq.enqueue(0, &d, Some(Pasid(pasid))).expect("ENQCMD") {
                assert!(Instant::now() < deadline, "the shared WQ never accepts");
                std::thread::yield_now();
            }
        }
        let rec = loop {
            let raw = self
                .dma
                .get(Some(pasid), cr, COMPLETION_RECORD_SIZE)
                .expect("the record page is mapped");
            if raw[0] != 0 {
                let raw: [u8; COMPLETION_RECORD_SIZE] = raw.try_into().expect("32 bytes");
                break CompletionRecord::decode(&raw);
            }
            assert!(
                Instant::now() < deadline,
                "no completion on WQ {wq}: the device stopped working"
            );
            std::thread::sleep(Duration::from_micros(50));
        };
        assert_eq!(rec.status(), Some(Status::Success), "{rec:?}");
        assert_eq!(
            self.dma.get(Some(pasid), dst, data.len()),
            Some(data),
            "memmove copied wrong data"
        );
    }
}

/// Target `dsa_descriptor`: a DSA device (one engine, a dedicated WQ in PASID A and a
/// shared WQ) over memory mapped at 0..128 KiB in PASIDs A and B (plus the top page of the
/// address space in A). The input is a sequence of a control byte and 64 bytes: a
/// descriptor stored through the dedicated portal (MOVDIR64B) or enqueued on the shared
/// one (ENQCMD in A or B), as is or "aimed" at the mapped memory, or written into memory
/// (batch lists), or a misdirected portal access, or a WQ disable/enable, a PASID drain, a
/// software-error clear. Afterwards both WQs must drain in time and a memmove on each must
/// complete correctly; no engine thread may panic.
pub fn dsa_descriptor(data: &[u8]) {
    watch::no_thread_panics("dsa_descriptor", || run(data));
}

fn run(data: &[u8]) {
    let r = Rig::new();
    let mut input = Input::new(data);
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let ctl = input.u8();
        let mut raw: [u8; DESCRIPTOR_SIZE] = input.array();
        match ctl % 10 {
            0..=2 => {
                let _ = r.dwq.write(0, &raw);
            }
            3 | 4 => {
                let _ = r.swq.enqueue(0, &raw, Some(pasid_of(ctl >> 4)));
            }
            5 => {
                aim(&mut raw);
                let _ = r.dwq.write(0, &raw);
            }
            6 => {
                aim(&mut raw);
                let _ = r.swq.enqueue(0, &raw, Some(pasid_of(ctl >> 4)));
            }
            7 => {
                let at = (u64::from(u16::from_le_bytes([raw[0], raw[1]])) % LOW) & !63;
                r.dma.put(Some(pasid_of(ctl >> 4).raw()), at, &raw);
            }
            8 => {
                // Misdirected accesses: both must be refused without harm.
                let offset = u64::from(raw[0]) * 8;
                let _ = r.dwq.enqueue(offset, &raw, Some(pasid_of(ctl >> 4)));
                let _ = r.swq.write(offset, &raw);
                let _ = r.swq.enqueue(offset, &raw, None);
                let _ = r.dwq.write(offset, &raw[..usize::from(raw[1] % 65)]);
                let mut buf = [0u8; 8];
                let _ = r.dwq.read(offset, &mut buf);
            }
            _ => match (ctl >> 4) % 4 {
                0 => {
                    let wq = usize::from(raw[0] & 1);
                    let _ = r.dev.disable_wq(wq);
                    let _ = r.dev.enable_wq(wq);
                }
                1 => {
                    let p = pasid_of(raw[0]);
                    let _ = r.dev.drain_pasid(1, p);
                    let _ = r.dev.unblock_pasid(1, p);
                }
                2 => r.dev.clear_swerr(),
                _ => {
                    let _ = r.dev.take_cr_faults();
                    let _ = r.dev.swerr();
                }
            },
        }
    }
    r.quiesce();
    r.check_memmove(0, A);
    r.check_memmove(1, C);
}
