//! The SMMUv3 model driven by fuzzer bytes: [`smmu_mmio`] (registers, memory, traffic) and
//! [`smmu_cmdq`] (command-queue entries, then a valid set-up must still work).

use crate::Input;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use sva_physmem::{PhysMemory, Ram};
use sva_smmuv3::{
    AccessKind, Asid, AtsRequest, BroadcastTlbi, Endpoint, HttuLevel, IrqLine, Mmio, Pasid,
    PriResponse, Smmu, SmmuConfig, StreamId, Transaction, TranslateOutcome,
};
use sva_smmuv3_spec::cd::{Cd, CdWord0, CdWord1, L1Cd};
use sva_smmuv3_spec::command::{Command, SyncCs};
use sva_smmuv3_spec::control::Gerror;
use sva_smmuv3_spec::encoding::{AddressSize, Shareability, Tg0};
use sva_smmuv3_spec::pri::PageRequest;
use sva_smmuv3_spec::regs::{self, Register, Width};
use sva_smmuv3_spec::ste::{Eats, S1Dss, S1Fmt, Ste, SteWord0, SteWord1, StreamConfig};
use sva_vmsa::{Attributes, Granule, NoTlb, Pa, PageTable, TableConfig, Va};

const RAM_SIZE: u64 = 16 << 20;
/// Low memory that "anywhere" memory writes reach: the structures and the page tables.
const MEM_WINDOW: u64 = 4 << 20;
const STE_LOG2: u8 = 6;
const CMDQ_LOG2: u8 = 6;
const EVTQ_LOG2: u8 = 3;
const PRIQ_LOG2: u8 = 2;
const CMDQ_ENTRIES: u32 = 1 << CMDQ_LOG2;
/// Streams with endpoints attached and pre-built configurations.
const SIDS: u32 = 8;
/// Operations per input, at most.
const MAX_OPS: usize = 512;
/// GERROR interrupts the careless handler acknowledges per input.
const MAX_ACKS: u32 = 16;

/// An endpoint that accepts every message.
struct NullEp;

impl Endpoint for NullEp {
    fn atc_invalidate(&self, _ssid: Option<Pasid>, _addr: u64, _size: u64) {}
    fn pri_response(&self, _ssid: Option<Pasid>, _prg_index: u16, _response: PriResponse) {}
    fn stall_resolved(&self, _stag: u16, _retry: bool) {}
}

/// The SMMU over its RAM, with the structures a driver would have set up.
struct Rig {
    ram: Arc<Ram>,
    smmu: Arc<Smmu>,
    strtab: u64,
    cmdq: u64,
    evtq: u64,
    priq: u64,
    /// Linear CD table (64 CDs).
    cds: u64,
    /// Level-1 and level-2 tables of a 2-level CD table.
    l1cd: u64,
    l2cd: u64,
    /// Zeroed frames for the final check of [`smmu_cmdq`].
    spare: u64,
    pt: PageTable,
    /// The function behind every StreamID (the SMMU links to it weakly).
    ep: Arc<NullEp>,
    prod: u32,
}

fn config_from(flags: u8) -> SmmuConfig {
    SmmuConfig {
        sidsize: 8,
        st_2level: flags & 0x02 == 0,
        stall: flags & 0x04 == 0,
        ats: flags & 0x08 == 0,
        pri: flags & 0x10 == 0,
        httu: match (flags >> 5) & 3 {
            0 => HttuLevel::AccessDirty,
            1 => HttuLevel::Access,
            _ => HttuLevel::None,
        },
        range_inv: flags & 0x80 == 0,
        iotlb_entries: 16,
        config_cache_entries: 8,
        ..SmmuConfig::default()
    }
}

fn w(r: &Rig, reg: u32, v: u32) {
    r.smmu.write32(u64::from(reg), v);
}

fn store(ram: &Ram, at: u64, words: &[u64]) {
    for (i, &v) in words.iter().enumerate() {
        ram.store_u64(Pa(at + 8 * i as u64), v)
            .expect("rig structures are inside RAM");
    }
}

fn cd(ttb0: u64, asid: u16, stall: bool) -> Cd {
    Cd::new()
        .with_word0(
            CdWord0::new()
                .with_t0sz(16)
                .with_tg0(Tg0::Size4K)
                .with_v(true)
                .with_ips(AddressSize::Bits48)
                .with_aa64(true)
                .with_r(true)
                .with_a(true)
                .with_s(stall)
                .with_ha(true)
                .with_hd(true)
                .with_asid(Asid(asid)),
        )
        .with_word1(CdWord1::new().with_ttb0_pa(Pa(ttb0)))
}

fn s1_ste(cd_ptr: u64, cdmax: u8, fmt: S1Fmt) -> Ste {
    Ste::new()
        .with_word0(
            SteWord0::new()
                .with_v(true)
                .with_config(StreamConfig::S1Trans)
                .with_s1fmt(fmt)
                .with_s1_context_ptr_pa(Pa(cd_ptr))
                .with_s1cdmax(cdmax),
        )
        .with_word1(
            SteWord1::new()
                .with_s1dss(S1Dss::Ssid0)
                .with_eats(Eats::Full),
        )
}

fn user_rw() -> Attributes {
    Attributes::AF | Attributes::SH_INNER | Attributes::AP_EL0 | Attributes::NG
}

impl Rig {
    /// Memory and structures; the SMMU at reset (nothing programmed).
    fn new(config: SmmuConfig) -> Self {
        let ram = Arc::new(Ram::new(RAM_SIZE).expect("valid RAM size"));
        let smmu = Smmu::new(ram.clone(), config);
        let region = ram.alloc(1 << 20).expect("RAM for the structures").raw();
        let spare = ram.alloc(1 << 16).expect("RAM for the check").raw();
        let pt = PageTable::new(
            &ram,
            TableConfig::new(Granule::Size4K, 48, 48).expect("valid table config"),
        )
        .expect("RAM for the page table");
        let r = Self {
            strtab: region,
            cmdq: region + 0x4000,
            evtq: region + 0x5000,
            priq: region + 0x6000,
            cds: region + 0x8000,
            l1cd: region + 0x9000,
            l2cd: region + 0xA000,
            spare,
            ram,
            smmu,
            pt,
            ep: Arc::new(NullEp),
            prod: 0,
        };
        // Eight pages and a 2 MiB block, user RW, into the data area of the region.
        let data = region + 0x8_0000;
        r.pt.map(
            &r.ram,
            Va(0x1000),
            Pa(data),
            0x8000,
            user_rw(),
            false,
            &NoTlb,
        )
        .expect("map pages");
        r.pt.map(
            &r.ram,
            Va(0x20_0000),
            Pa(0x20_0000),
            0x20_0000,
            user_rw(),
            true,
            &NoTlb,
        )
        .expect("map a block");
        let root = r.pt.root().raw();
        // sid 1: one CD. sid 2: eight CDs, CD 1 stalls. sid 3: bypass. sid 4: 2-level CDs.
        // sid 5: abort. Others invalid.
        store(&r.ram, r.cds, &cd(root, 1, false).words());
        for i in 0..8u64 {
            store(
                &r.ram,
                r.cds + 0x200 + 64 * i,
                &cd(root, 2 + i as u16, i == 1).words(),
            );
        }
        store(&r.ram, r.l2cd + 64 * 3, &cd(root, 20, false).words());
        let l1 = L1Cd::new().with_v(true).with_l2ptr_pa(Pa(r.l2cd));
        store(&r.ram, r.l1cd, &[l1.into_bits()]);
        let ste = |sid: u64, s: &Ste| store(&r.ram, r.strtab + 64 * sid, &s.words());
        ste(1, &s1_ste(r.cds, 0, S1Fmt::Linear));
        ste(2, &s1_ste(r.cds + 0x200, 3, S1Fmt::Linear));
        ste(
            3,
            &Ste::new().with_word0(
                SteWord0::new()
                    .with_v(true)
                    .with_config(StreamConfig::Bypass),
            ),
        );
        ste(4, &s1_ste(r.l1cd, 8, S1Fmt::TwoLevel4K));
        ste(
            5,
            &Ste::new().with_word0(
                SteWord0::new()
                    .with_v(true)
                    .with_config(StreamConfig::Abort),
            ),
        );
        for sid in 0..SIDS {
            r.smmu.attach_endpoint(StreamId(sid), &r.ep);
        }
        r
    }

    /// Programs the queues and the linear stream table, enables everything.
    fn enable(&mut self) {
        let s = &self.smmu;
        s.write64(u64::from(regs::STRTAB_BASE), self.strtab);
        w(self, regs::STRTAB_BASE_CFG, u32::from(STE_LOG2));
        s.write64(u64::from(regs::CMDQ_BASE), self.cmdq | u64::from(CMDQ_LOG2));
        s.write64(
            u64::from(regs::EVENTQ_BASE),
            self.evtq | u64::from(EVTQ_LOG2),
        );
        s.write64(u64::from(regs::PRIQ_BASE), self.priq | u64::from(PRIQ_LOG2));
        w(self, regs::CR2, 1 << 1);
        w(self, regs::IRQ_CTRL, 0b111);
        w(self, regs::CR0, 0b1110);
        self.cmd(&Command::CfgiAll);
        self.cmd(&Command::TlbiNsnhAll);
        self.cmd(&sync(SyncCs::None, 0));
        w(self, regs::CR0, 0b1111);
    }

    /// Writes an entry at PROD without publishing it.
    fn put(&mut self, words: [u64; 2]) {
        let idx = u64::from(self.prod % CMDQ_ENTRIES);
        store(&self.ram, self.cmdq + 16 * idx, &words);
        self.prod = (self.prod + 1) % (2 * CMDQ_ENTRIES);
    }

    fn publish(&self) {
        w(self, regs::CMDQ_PROD, self.prod);
    }

    fn cmd(&mut self, c: &Command) {
        self.put(c.encode());
        self.publish();
    }

    fn cons(&self) -> u32 {
        self.smmu.read32(u64::from(regs::CMDQ_CONS))
    }

    fn gerror_active(&self) -> Gerror {
        Gerror::active(
            Gerror::from_bits(self.smmu.read32(u64::from(regs::GERROR))),
            Gerror::from_bits(self.smmu.read32(u64::from(regs::GERRORN))),
        )
    }

    fn ack_gerror(&self) {
        w(
            self,
            regs::GERRORN,
            self.smmu.read32(u64::from(regs::GERROR)),
        );
    }

    /// Consumes every Event and PRI queue entry.
    fn drain_queues(&self) {
        for (prod, cons) in [
            (regs::EVENTQ_PROD, regs::EVENTQ_CONS),
            (regs::PRIQ_PROD, regs::PRIQ_CONS),
        ] {
            let p = self.smmu.read32(u64::from(prod));
            // Keep OVFLG acknowledged: CONS.OVACKFLG = PROD.OVFLG.
            w(self, cons, p);
        }
    }

    /// What Linux does on CMDQ_ERR: the entry at CONS becomes a CMD_SYNC, then the error is
    /// acknowledged (processing restarts at CONS). Returns once the queue is empty; panics
    /// if it does not empty (a stuck queue).
    fn drain_cmdq(&mut self) {
        for _ in 0..=2 * CMDQ_ENTRIES {
            self.publish();
            if self.gerror_active().cmdq_err() {
                let cons = self.cons() % CMDQ_ENTRIES;
                store(
                    &self.ram,
                    self.cmdq + 16 * u64::from(cons),
                    &sync(SyncCs::None, 0).encode(),
                );
                self.ack_gerror();
            }
            if self.cons() & (2 * CMDQ_ENTRIES - 1) == self.prod {
                return;
            }
        }
        panic!(
            "command queue stuck: PROD {:#x} CONS {:#x} GERROR {:#x}",
            self.prod,
            self.cons(),
            self.gerror_active().into_bits()
        );
    }

    fn free_slots(&self) -> u32 {
        let cons = self.cons() & (2 * CMDQ_ENTRIES - 1);
        CMDQ_ENTRIES - (self.prod + 2 * CMDQ_ENTRIES - cons) % (2 * CMDQ_ENTRIES)
    }

    fn translate(&self, input: &mut Input<'_>) -> TranslateOutcome {
        let sid = u32::from(input.u8());
        let ssid = input.u8();
        let ssid = (ssid & 0x80 != 0).then(|| Pasid(u32::from(ssid & 0x7F)));
        let addr = match input.u8() % 4 {
            0 => input.u64(),
            1 => u64::from(input.u16()) << 12,
            _ => u64::from(input.u32()),
        };
        let access = input.pick(&[AccessKind::Read, AccessKind::Write, AccessKind::Execute]);
        let flags = input.u8();
        self.smmu.translate(&Transaction {
            sid: StreamId(sid),
            ssid,
            addr,
            access,
            privileged: flags & 1 != 0,
            translated: flags & 2 != 0,
        })
    }
}

fn sync(cs: SyncCs, msi_addr: u64) -> Command {
    Command::Sync {
        cs,
        msh: Shareability::InnerShareable,
        msi_attr: 0,
        msi_data: 0x5A5A,
        msi_addr: Pa(msi_addr),
    }
}

/// Offsets worth writing: every register, the upper halves of the 64-bit ones, the page-0
/// aliases of the page-1 registers, and a few reserved ones.
fn register_offsets() -> Vec<u64> {
    let mut v: Vec<u64> = Register::ALL
        .iter()
        .flat_map(|r| {
            let o = u64::from(r.offset());
            match r.width() {
                Width::Bits32 => vec![o],
                Width::Bits64 => vec![o, o + 4],
            }
        })
        .collect();
    v.extend([0xA8, 0xAC, 0xC8, 0xCC, 0x30, 0x4C, 0xE0, 0x1_0000, 0x1_FFFC]);
    v
}

/// Installs interrupt handlers that touch the registers again (re-entrancy): GERROR is
/// acknowledged (at most [`MAX_ACKS`] times), the Event and PRI queues are consumed.
fn careless_handlers(smmu: &Arc<Smmu>) {
    let weak: Weak<Smmu> = Arc::downgrade(smmu);
    let acks = AtomicU32::new(0);
    smmu.set_irq_handler(
        IrqLine::GlobalError,
        Arc::new(move |_| {
            if acks.fetch_add(1, Ordering::Relaxed) >= MAX_ACKS {
                return;
            }
            if let Some(s) = weak.upgrade() {
                let g = s.read32(u64::from(regs::GERROR));
                s.write32(u64::from(regs::GERRORN), g);
            }
        }),
    );
    for (line, prod, cons) in [
        (IrqLine::EventQueue, regs::EVENTQ_PROD, regs::EVENTQ_CONS),
        (IrqLine::PriQueue, regs::PRIQ_PROD, regs::PRIQ_CONS),
    ] {
        let weak: Weak<Smmu> = Arc::downgrade(smmu);
        smmu.set_irq_handler(
            line,
            Arc::new(move |_| {
                if let Some(s) = weak.upgrade() {
                    let p = s.read32(u64::from(prod));
                    s.write32(u64::from(cons), p);
                }
            }),
        );
    }
}

/// Target `smmu_mmio`: the first byte picks the features and whether the SMMU starts at
/// reset or programmed (queues, stream table, a few streams with CDs over one page table);
/// the rest is a program of MMIO writes and reads (register offsets or anything in the two
/// pages), 64-bit stores into the tables, queues and page tables (or anywhere in the low
/// 4 MiB), translations, ATS Translation Requests, page requests, command-queue entries
/// and PROD updates, broadcast TLBIs, GERROR acknowledgements.
pub fn smmu_mmio(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let mut r = Rig::new(config_from(flags));
    if flags & 1 != 0 {
        r.enable();
    }
    if input.bool() {
        careless_handlers(&r.smmu);
    }
    let offsets = register_offsets();
    let bases = [
        r.strtab,
        r.cmdq,
        r.evtq,
        r.priq,
        r.cds,
        r.l1cd,
        r.l2cd,
        r.pt.root().raw(),
    ];
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 16 {
            0 => {
                let o = input.pick(&offsets);
                r.smmu.write32(o, input.u32());
            }
            1 => {
                let o = input.pick(&offsets) & !7;
                r.smmu.write64(o, input.u64());
            }
            2 => {
                let o = u64::from(input.u32());
                r.smmu.write32(o, input.u32());
            }
            3 => {
                let o = input.pick(&offsets);
                let _ = r.smmu.read32(o);
                let _ = r.smmu.read64(o & !7);
            }
            4 | 5 => {
                let base = input.pick(&bases);
                let at = base + u64::from(input.u16() & !7);
                let _ = r.ram.store_u64(Pa(at), input.u64());
            }
            6 => {
                let at = (u64::from(input.u32()) % MEM_WINDOW) & !7;
                let _ = r.ram.store_u64(Pa(at), input.u64());
            }
            7 | 8 => {
                let _ = r.translate(&mut input);
            }
            9 => {
                let sid = u32::from(input.u8());
                let ssid = input.u8();
                let flags = input.u8();
                let _ = r.smmu.ats_translate(&AtsRequest {
                    sid: StreamId(sid),
                    ssid: (ssid & 0x80 != 0).then(|| Pasid(u32::from(ssid & 0x7F))),
                    addr: input.u64(),
                    no_write: flags & 1 != 0,
                    exec: flags & 2 != 0,
                    privileged: flags & 4 != 0,
                });
            }
            10 => {
                let sid = u32::from(input.u8());
                let words = [input.u64(), input.u64()];
                if let Ok(mut req) = PageRequest::decode(words) {
                    req.stream_id = StreamId(sid);
                    r.smmu.page_request(&req);
                }
            }
            11 => {
                let words = [input.u64(), input.u64()];
                r.put(words);
                if input.bool() {
                    r.publish();
                }
            }
            12 => w(&r, regs::CMDQ_PROD, input.u32()),
            13 => {
                let asid = Asid(input.u16());
                let op = match input.u8() % 3 {
                    0 => BroadcastTlbi::All,
                    1 => BroadcastTlbi::Asid(asid),
                    _ => BroadcastTlbi::Va {
                        asid,
                        va: input.u64(),
                        size: input.u64() >> (input.u8() % 64),
                        leaf_only: input.bool(),
                    },
                };
                r.smmu.broadcast_tlbi(op);
            }
            14 => r.ack_gerror(),
            _ => r.drain_queues(),
        }
    }
    let _ = r.smmu.stats();
}

/// Target `smmu_cmdq`: an enabled SMMU (queues, stream table, streams as in
/// [`smmu_mmio`]); the input is a sequence of a control byte and a 16-byte command entry
/// (any bits). Control bits: 0 publish PROD, 1 append a CMD_SYNC (with an MSI to an address
/// from the input when bit 6 is set), 2 recover from a command error as Linux does, 3 make a
/// transaction (stalls give CMD_RESUME something to resume), 4 consume the Event and PRI
/// queues. Then the queue must drain (after recovery), no global error may remain, and a
/// freshly written STE, CD and page table must translate.
pub fn smmu_cmdq(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let mut r = Rig::new(config_from(flags & !1));
    r.enable();
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let ctl = input.u8();
        let words = [input.u64(), input.u64()];
        if r.free_slots() < 2 {
            r.drain_cmdq();
        }
        r.put(words);
        if ctl & 1 != 0 {
            r.publish();
        }
        if ctl & 2 != 0 {
            let cs = [SyncCs::None, SyncCs::Irq, SyncCs::Sev][usize::from((ctl >> 4) & 3) % 3];
            let msi = if ctl & 0x40 != 0 {
                (u64::from(input.u32()) % RAM_SIZE) & !3
            } else {
                0
            };
            r.put(sync(cs, msi).encode());
            r.publish();
        }
        if ctl & 4 != 0 {
            r.drain_cmdq();
        }
        if ctl & 8 != 0 {
            let _ = r.translate(&mut input);
        }
        if ctl & 0x80 != 0 {
            r.drain_queues();
        }
    }
    r.drain_cmdq();
    assert!(
        !r.gerror_active().any(),
        "global errors left after recovery: {:#x}",
        r.gerror_active().into_bits()
    );
    check_translation(&mut r);
}

/// A valid configuration, written from scratch into zeroed memory, translates.
fn check_translation(r: &mut Rig) {
    const SID: u32 = 7;
    const VA: u64 = 0x0000_1234_5678_9000;
    let frames = 8u64;
    r.ram
        .fill(Pa(r.spare), 0, frames * 4096)
        .expect("spare frames are in RAM");
    let frame = |i: u64| r.spare + i * 4096;
    let cd_at = frame(0);
    let root = frame(1);
    let target = frame(7);
    let cfg = TableConfig::new(Granule::Size4K, 48, 48).expect("valid table config");
    // Tables at levels 0..=2 in frames 1..=3, the page at level 3 in frame 4.
    for level in 0..=3u8 {
        let table = frame(1 + u64::from(level));
        let slot = table + cfg.index(level, Va(VA)) * 8;
        let desc = if level < 3 {
            frame(2 + u64::from(level)) | 0b11
        } else {
            target | user_rw().bits() | 0b11
        };
        store(&r.ram, slot, &[desc]);
    }
    store(&r.ram, cd_at, &cd(root, 0x77, false).words());
    store(
        &r.ram,
        r.strtab + 64 * u64::from(SID),
        &s1_ste(cd_at, 0, S1Fmt::Linear).words(),
    );
    r.cmd(&Command::CfgiAll);
    r.cmd(&Command::TlbiNsnhAll);
    r.cmd(&sync(SyncCs::None, 0));
    r.drain_cmdq();
    for access in [AccessKind::Read, AccessKind::Write] {
        let out = r.smmu.translate(&Transaction {
            sid: StreamId(SID),
            ssid: None,
            addr: VA + 0x123,
            access,
            privileged: false,
            translated: false,
        });
        match out {
            TranslateOutcome::Translated { pa, size, .. } => {
                assert_eq!(pa, Pa(target + 0x123), "wrong translation");
                assert_eq!(size, 4096);
            }
            other => panic!("a valid set-up no longer translates: {other:?}"),
        }
    }
}
