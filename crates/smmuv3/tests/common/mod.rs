//! A hand-driven rig: the SMMU programmed through MMIO, tables and queues in a `Ram`.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::sync::{Arc, Mutex};

use sva_physmem::{PhysMemory, Ram};
use sva_smmuv3::{
    AccessKind, AtsRequest, Endpoint, Mmio, Pasid, PriResponse, Smmu, SmmuConfig, StreamId,
    Transaction,
};
use sva_smmuv3_spec::cd::{Cd, CdWord0, CdWord1};
use sva_smmuv3_spec::command::{Command, SyncCs};
use sva_smmuv3_spec::encoding::{AddressSize, Shareability, Tg0};
use sva_smmuv3_spec::event::Event;
use sva_smmuv3_spec::regs;
use sva_smmuv3_spec::ste::{Eats, S1Dss, S1Fmt, Ste, SteWord0, SteWord1, StreamConfig};
use sva_vmsa::{Attributes, Granule, NoTlb, Pa, PageTable, TableConfig, Va};

pub const STE_LOG2: u8 = 8;
pub const CMDQ_LOG2: u8 = 8;
pub const EVTQ_LOG2: u8 = 5;
pub const PRIQ_LOG2: u8 = 3;
pub const RAM_SIZE: u64 = 256 << 20;

/// CR0 with SMMUEN, PRIQEN, EVENTQEN, CMDQEN.
pub const CR0_ALL: u32 = 0b1111;
pub const CR0_QUEUES: u32 = 0b1110;

pub struct Rig {
    pub ram: Arc<Ram>,
    pub smmu: Arc<Smmu>,
    pub strtab: u64,
    pub cmdq: u64,
    pub evtq: u64,
    pub priq: u64,
    pub prod: u32,
}

/// An endpoint recording what the SMMU sends it.
#[derive(Default)]
pub struct MockEp {
    pub log: Mutex<Vec<EpMsg>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpMsg {
    Atc(Option<Pasid>, u64, u64),
    Pri(Option<Pasid>, u16, PriResponse),
    Stall(u16, bool),
}

impl Endpoint for MockEp {
    fn atc_invalidate(&self, ssid: Option<Pasid>, addr: u64, size: u64) {
        self.log.lock().unwrap().push(EpMsg::Atc(ssid, addr, size));
    }
    fn pri_response(&self, ssid: Option<Pasid>, prg_index: u16, response: PriResponse) {
        self.log
            .lock()
            .unwrap()
            .push(EpMsg::Pri(ssid, prg_index, response));
    }
    fn stall_resolved(&self, stag: u16, retry: bool) {
        self.log.lock().unwrap().push(EpMsg::Stall(stag, retry));
    }
}

impl MockEp {
    pub fn take(&self) -> Vec<EpMsg> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

pub fn rig() -> Rig {
    rig_with(SmmuConfig::default())
}

/// Programs queues and a linear stream table, enables everything, CFGI_ALL + TLBI + SYNC.
pub fn rig_with(config: SmmuConfig) -> Rig {
    let r = rig_disabled(config);
    r.smmu.write64(u64::from(regs::STRTAB_BASE), r.strtab);
    r.smmu
        .write32(u64::from(regs::STRTAB_BASE_CFG), u32::from(STE_LOG2));
    r.enable()
}

/// Queues programmed and enabled, SMMUEN clear, stream table not programmed.
pub fn rig_disabled(config: SmmuConfig) -> Rig {
    let ram = Arc::new(Ram::new(RAM_SIZE).unwrap());
    let smmu = Smmu::new(ram.clone(), config);
    let strtab = ram.alloc(64 << STE_LOG2).unwrap().raw();
    let cmdq = ram.alloc(16 << CMDQ_LOG2).unwrap().raw();
    let evtq = ram.alloc(4096).unwrap().raw();
    let priq = ram.alloc(4096).unwrap().raw();
    smmu.write64(u64::from(regs::CMDQ_BASE), cmdq | u64::from(CMDQ_LOG2));
    smmu.write32(u64::from(regs::CMDQ_PROD), 0);
    smmu.write32(u64::from(regs::CMDQ_CONS), 0);
    smmu.write64(u64::from(regs::EVENTQ_BASE), evtq | u64::from(EVTQ_LOG2));
    smmu.write32(u64::from(regs::EVENTQ_PROD), 0);
    smmu.write32(u64::from(regs::EVENTQ_CONS), 0);
    smmu.write64(u64::from(regs::PRIQ_BASE), priq | u64::from(PRIQ_LOG2));
    smmu.write32(u64::from(regs::PRIQ_PROD), 0);
    smmu.write32(u64::from(regs::PRIQ_CONS), 0);
    smmu.write32(u64::from(regs::CR2), 1 << 1);
    smmu.write32(u64::from(regs::IRQ_CTRL), 0b111);
    smmu.write32(u64::from(regs::CR0), CR0_QUEUES);
    Rig {
        ram,
        smmu,
        strtab,
        cmdq,
        evtq,
        priq,
        prod: 0,
    }
}

impl Rig {
    pub fn mem(&self) -> &dyn PhysMemory {
        &*self.ram
    }

    pub fn enable(mut self) -> Self {
        self.cmd(Command::CfgiAll);
        self.cmd(Command::TlbiNsnhAll);
        self.sync();
        let cr0 = self.smmu.read32(u64::from(regs::CR0));
        self.smmu.write32(u64::from(regs::CR0), cr0 | 1);
        assert_eq!(self.smmu.read32(u64::from(regs::CR0ACK)) & 1, 1);
        self
    }

    pub fn raw_cmd(&mut self, words: [u64; 2]) {
        let idx = u64::from(self.prod & ((1 << CMDQ_LOG2) - 1));
        let at = self.cmdq + idx * 16;
        self.ram.store_u64(Pa(at), words[0]).unwrap();
        self.ram.store_u64(Pa(at + 8), words[1]).unwrap();
        self.prod = (self.prod + 1) & ((2 << CMDQ_LOG2) - 1);
        self.smmu.write32(u64::from(regs::CMDQ_PROD), self.prod);
    }

    pub fn cmd(&mut self, cmd: Command) {
        self.raw_cmd(cmd.encode());
    }

    pub fn sync(&mut self) {
        self.cmd(sync_cmd(SyncCs::None, 0, 0));
    }

    pub fn cons(&self) -> u32 {
        self.smmu.read32(u64::from(regs::CMDQ_CONS))
    }

    /// Reads and consumes every new event record.
    pub fn events(&self) -> Vec<Event> {
        let mask2 = (2u32 << EVTQ_LOG2) - 1;
        let prod = self.smmu.read32(u64::from(regs::EVENTQ_PROD));
        let cons_reg = self.smmu.read32(u64::from(regs::EVENTQ_CONS));
        let mut cons = cons_reg & mask2;
        let mut out = Vec::new();
        while cons != prod & mask2 {
            let idx = u64::from(cons & ((1 << EVTQ_LOG2) - 1));
            let at = self.evtq + idx * 32;
            let words = [0, 1, 2, 3].map(|i| self.ram.load_u64(Pa(at + 8 * i)).unwrap());
            out.push(Event::decode(words).unwrap());
            cons = (cons + 1) & mask2;
        }
        self.smmu
            .write32(u64::from(regs::EVENTQ_CONS), (cons_reg & (1 << 31)) | cons);
        out
    }

    pub fn write_ste(&self, sid: u32, ste: &Ste) {
        write_words(self.mem(), self.strtab + u64::from(sid) * 64, &ste.words());
    }

    pub fn write_cd(&self, at: u64, cd: &Cd) {
        write_words(self.mem(), at, &cd.words());
    }

    /// A 48-bit, 4K-granule page table.
    pub fn table(&self) -> PageTable {
        PageTable::new(
            &self.ram,
            TableConfig::new(Granule::Size4K, 48, 48).unwrap(),
        )
        .unwrap()
    }

    pub fn map(&self, pt: &PageTable, va: u64, pa: u64, size: u64, attrs: Attributes) {
        pt.map(&self.ram, Va(va), Pa(pa), size, attrs, false, &NoTlb)
            .unwrap();
    }

    pub fn alloc(&self, size: u64) -> u64 {
        self.ram
            .alloc(size.max(4096).next_power_of_two())
            .unwrap()
            .raw()
    }

    /// A stream `sid` with a single CD (ASID `asid`) over a fresh table; returns the table.
    pub fn simple_stream(&self, sid: u32, asid: u16) -> PageTable {
        let pt = self.table();
        let cd_at = self.alloc(4096);
        self.write_cd(cd_at, &cd(pt.root().raw(), asid));
        self.write_ste(sid, &s1_ste(cd_at, 0, S1Fmt::Linear, S1Dss::Terminate));
        pt
    }

    /// Like [`Rig::simple_stream`] (ASID 4), but the CD stalls faulting transactions.
    pub fn stalling_stream(&self, sid: u32) -> PageTable {
        let pt = self.table();
        let cd_at = self.alloc(0x1000);
        let c = cd(pt.root().raw(), 4);
        self.write_cd(cd_at, &c.with_word0(c.word0().with_s(true)));
        self.write_ste(sid, &s1_ste(cd_at, 0, S1Fmt::Linear, S1Dss::Terminate));
        pt
    }

    /// A recording endpoint attached at `sid`.
    pub fn mock_endpoint(&self, sid: u32) -> Arc<MockEp> {
        let ep = Arc::new(MockEp::default());
        self.smmu.attach_endpoint(StreamId(sid), &ep);
        ep
    }
}

pub fn write_words(mem: &dyn PhysMemory, at: u64, words: &[u64]) {
    for (i, &w) in words.iter().enumerate() {
        mem.store_u64(Pa(at + 8 * i as u64), w).unwrap();
    }
}

pub fn sync_cmd(cs: SyncCs, msi_data: u32, msi_addr: u64) -> Command {
    Command::Sync {
        cs,
        msh: Shareability::InnerShareable,
        msi_attr: 0,
        msi_data,
        msi_addr: Pa(msi_addr),
    }
}

/// A valid stage 1 STE with full ATS.
pub fn s1_ste(cd_ptr: u64, cdmax: u8, fmt: S1Fmt, dss: S1Dss) -> Ste {
    Ste::new()
        .with_word0(
            SteWord0::new()
                .with_v(true)
                .with_config(StreamConfig::S1Trans)
                .with_s1fmt(fmt)
                .with_s1_context_ptr_pa(Pa(cd_ptr))
                .with_s1cdmax(cdmax),
        )
        .with_word1(SteWord1::new().with_s1dss(dss).with_eats(Eats::Full))
}

pub fn bypass_ste() -> Ste {
    Ste::new().with_word0(
        SteWord0::new()
            .with_v(true)
            .with_config(StreamConfig::Bypass),
    )
}

/// A valid CD: 48-bit VA, 4K granule, 48-bit IPS, AA64, R and A set.
pub fn cd(ttb0: u64, asid: u16) -> Cd {
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
                .with_asid(sva_smmuv3::Asid(asid)),
        )
        .with_word1(CdWord1::new().with_ttb0_pa(Pa(ttb0)))
}

/// User RW, non-global.
pub fn rw() -> Attributes {
    Attributes::AF | Attributes::SH_INNER | Attributes::AP_EL0 | Attributes::NG
}

pub fn txn(sid: u32, ssid: Option<u32>, addr: u64, access: AccessKind) -> Transaction {
    Transaction {
        sid: StreamId(sid),
        ssid: ssid.map(Pasid),
        addr,
        access,
        privileged: false,
        translated: false,
    }
}

/// An unprivileged ATS request for a writable, non-executable translation of `addr`,
/// without PASID.
pub fn ats_req(sid: u32, addr: u64) -> AtsRequest {
    AtsRequest {
        sid: StreamId(sid),
        ssid: None,
        addr,
        no_write: false,
        exec: false,
        privileged: false,
    }
}

pub fn read(sid: u32, addr: u64) -> Transaction {
    txn(sid, None, addr, AccessKind::Read)
}
