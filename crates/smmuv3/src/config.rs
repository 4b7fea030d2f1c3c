//! Configuration structures: the Stream table walk to an STE (§3.3), the CD table walk to a
//! CD (§3.4), their validity checks, and the configuration cache that keeps them until
//! CMD_CFGI_* (or eviction) — a driver that forgets the invalidation sees stale config.

use std::collections::{BTreeMap, VecDeque};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sva_physmem::PhysMemory;
use sva_smmuv3_spec::cd::{Cd, L1Cd};
use sva_smmuv3_spec::event::EventId;
use sva_smmuv3_spec::ste::{
    Eats, L1Std, S1Dss, S1Fmt, Ste, StreamConfig, StrtabBase, StrtabBaseCfg, StrtabFmt, Strw,
};
use sva_vmsa::{Granule, TableConfig};

use crate::regs::Regs;
use crate::{HttuLevel, Pa, SmmuConfig};

/// Removes the entries of `map` whose keys are in `range` (the FIFO's stale keys are
/// dropped by `make_room`).
fn remove_range<K: Ord + Copy, V>(map: &mut BTreeMap<K, V>, range: RangeInclusive<K>) {
    let keys: Vec<K> = map.range(range).map(|(&k, _)| k).collect();
    for k in keys {
        map.remove(&k);
    }
}

/// A configuration error: the event to record (with FetchAddr for fetch aborts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CfgFault {
    pub id: EventId,
    pub fetch_addr: u64,
}

impl CfgFault {
    fn new(id: EventId) -> Self {
        Self { id, fetch_addr: 0 }
    }

    fn fetch(id: EventId, addr: u64) -> Self {
        Self {
            id,
            fetch_addr: addr,
        }
    }
}

/// Stage 1 configuration of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct S1Stream {
    pub ctx_ptr: u64,
    pub fmt: S1Fmt,
    pub cdmax: u8,
    pub dss: S1Dss,
    pub stalld: bool,
    /// STE.PRIVCFG: the privilege every transaction is treated with, or `None` to use the
    /// incoming one.
    pub priv_override: Option<bool>,
}

impl S1Stream {
    /// The privilege a transaction is translated with: STE.PRIVCFG, or the incoming one.
    pub(crate) fn privileged(&self, incoming: bool) -> bool {
        self.priv_override.unwrap_or(incoming)
    }
}

/// What an STE asks for. Stage 2 and nesting would be further variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamCfg {
    /// Abort silently (Config = 0b000, or a reserved encoding).
    Abort,
    /// Bypass.
    Bypass,
    /// Stage 1 translation, stage 2 bypass.
    Stage1(S1Stream),
}

/// A decoded, valid STE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CachedSte {
    pub cfg: StreamCfg,
    /// Effective EATS (Abort when the SMMU has no ATS).
    pub eats: Eats,
}

/// A decoded, valid CD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CtxDesc {
    pub table: TableConfig,
    pub ttb0: Pa,
    pub asid: u16,
    pub epd0: bool,
    pub tbi0: bool,
    pub affd: bool,
    pub ha: bool,
    pub hd: bool,
    /// CD.S, effective (stalls supported).
    pub stall: bool,
    /// CD.R.
    pub record: bool,
    pub aset: bool,
    /// CD.MAIR, stored (memory attributes are not modelled).
    pub mair: u64,
}

impl CtxDesc {
    /// log2 of the leaf sizes this context's granule allows, smallest first.
    pub fn leaf_sizes(&self) -> &'static [u8] {
        match self.table.granule() {
            Granule::Size4K => &[12, 21, 30],
            Granule::Size16K => &[14, 25],
            Granule::Size64K => &[16, 29],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Ste(u32),
    Cd(u32, u32),
}

/// The configuration cache: STEs by StreamID and CDs by (StreamID, CD index), bounded, FIFO
/// replacement.
#[derive(Debug)]
pub(crate) struct ConfigCache {
    capacity: usize,
    seq: u64,
    ste: BTreeMap<u32, (CachedSte, u64)>,
    cd: BTreeMap<(u32, u32), (CtxDesc, u64)>,
    fifo: VecDeque<(Key, u64)>,
    pub hits: u64,
    pub misses: u64,
    /// Bumped whenever an entry leaves the cache (the micro-TLB's validity check).
    generation: Arc<AtomicU64>,
}

impl ConfigCache {
    pub fn new(capacity: usize, generation: Arc<AtomicU64>) -> Self {
        Self {
            capacity: capacity.max(1),
            seq: 0,
            ste: BTreeMap::new(),
            cd: BTreeMap::new(),
            fifo: VecDeque::new(),
            hits: 0,
            misses: 0,
            generation,
        }
    }

    pub fn len(&self) -> usize {
        self.ste.len() + self.cd.len()
    }

    fn make_room(&mut self) {
        while self.len() >= self.capacity {
            self.generation.fetch_add(1, Ordering::Release);
            let Some((key, seq)) = self.fifo.pop_front() else {
                return;
            };
            match key {
                Key::Ste(sid) => {
                    if self.ste.get(&sid).is_some_and(|e| e.1 == seq) {
                        self.ste.remove(&sid);
                    }
                }
                Key::Cd(sid, idx) => {
                    if self.cd.get(&(sid, idx)).is_some_and(|e| e.1 == seq) {
                        self.cd.remove(&(sid, idx));
                    }
                }
            }
        }
        // Drop stale FIFO records left by invalidations.
        if self.fifo.len() > 2 * self.capacity + 16 {
            let (ste, cd) = (&self.ste, &self.cd);
            self.fifo.retain(|&(k, seq)| match k {
                Key::Ste(sid) => ste.get(&sid).is_some_and(|e| e.1 == seq),
                Key::Cd(sid, idx) => cd.get(&(sid, idx)).is_some_and(|e| e.1 == seq),
            });
        }
    }

    fn insert_ste(&mut self, sid: u32, ste: CachedSte) {
        self.make_room();
        self.seq += 1;
        self.ste.insert(sid, (ste, self.seq));
        self.fifo.push_back((Key::Ste(sid), self.seq));
    }

    fn insert_cd(&mut self, sid: u32, idx: u32, cd: CtxDesc) {
        self.make_room();
        self.seq += 1;
        self.cd.insert((sid, idx), (cd, self.seq));
        self.fifo.push_back((Key::Cd(sid, idx), self.seq));
    }

    /// CMD_CFGI_STE / STE_RANGE: STEs of `[first, last]` and the CDs fetched through them.
    pub fn invalidate_sids(&mut self, first: u32, last: u32) {
        self.generation.fetch_add(1, Ordering::Release);
        remove_range(&mut self.ste, first..=last);
        remove_range(&mut self.cd, (first, 0)..=(last, u32::MAX));
    }

    /// CMD_CFGI_CD.
    pub fn invalidate_cd(&mut self, sid: u32, idx: u32) {
        self.generation.fetch_add(1, Ordering::Release);
        self.cd.remove(&(sid, idx));
    }

    /// CMD_CFGI_CD_ALL.
    pub fn invalidate_cds(&mut self, sid: u32) {
        self.generation.fetch_add(1, Ordering::Release);
        remove_range(&mut self.cd, (sid, 0)..=(sid, u32::MAX));
    }

    /// CMD_CFGI_ALL.
    pub fn invalidate_all(&mut self) {
        self.generation.fetch_add(1, Ordering::Release);
        self.ste.clear();
        self.cd.clear();
        self.fifo.clear();
    }

    /// The STE of `sid`, from the cache or the Stream table.
    pub fn ste(
        &mut self,
        mem: &dyn PhysMemory,
        regs: &Regs,
        config: &SmmuConfig,
        sid: u32,
    ) -> Result<CachedSte, CfgFault> {
        if let Some((ste, _)) = self.ste.get(&sid) {
            self.hits += 1;
            return Ok(*ste);
        }
        self.misses += 1;
        let raw = fetch_ste(mem, regs, config, sid)?;
        let ste = decode_ste(&raw, config)?;
        self.insert_ste(sid, ste);
        Ok(ste)
    }

    /// The CD at index `idx` of stream `sid` with stage 1 configuration `s1`.
    pub fn cd(
        &mut self,
        mem: &dyn PhysMemory,
        config: &SmmuConfig,
        sid: u32,
        s1: &S1Stream,
        idx: u32,
    ) -> Result<CtxDesc, CfgFault> {
        if let Some((cd, _)) = self.cd.get(&(sid, idx)) {
            self.hits += 1;
            return Ok(*cd);
        }
        self.misses += 1;
        let raw = fetch_cd(mem, s1, idx)?;
        let cd = decode_cd(&raw, s1, config)?;
        self.insert_cd(sid, idx, cd);
        Ok(cd)
    }
}

fn read_words<const N: usize>(mem: &dyn PhysMemory, addr: u64) -> Option<[u64; N]> {
    let mut words = [0u64; N];
    for (i, w) in words.iter_mut().enumerate() {
        *w = mem.load_u64(Pa(addr.checked_add(8 * i as u64)?)).ok()?;
    }
    Some(words)
}

/// Walks the Stream table to the STE of `sid`.
fn fetch_ste(
    mem: &dyn PhysMemory,
    regs: &Regs,
    config: &SmmuConfig,
    sid: u32,
) -> Result<Ste, CfgFault> {
    let cfg = StrtabBaseCfg::from_bits(regs.strtab_base_cfg);
    let base = StrtabBase::from_bits(regs.strtab_base).addr_pa().raw();
    let log2size = cfg.log2size().min(config.sidsize);
    if u64::from(sid) >= 1u64 << log2size {
        return Err(CfgFault::new(EventId::CBadStreamid));
    }
    let ste_addr = if cfg.fmt() == StrtabFmt::TwoLevel && config.st_2level {
        let split = match cfg.split() {
            s @ (6 | 8 | 10) => s,
            _ => 6,
        };
        let l1_idx = u64::from(sid) >> split;
        let l1_addr = base + l1_idx * 8;
        let l1 =
            read_words::<1>(mem, l1_addr).ok_or(CfgFault::fetch(EventId::FSteFetch, l1_addr))?;
        let l1 = L1Std::from_bits(l1[0]);
        let l2_idx = u64::from(sid) & ((1u64 << split) - 1);
        if l1.span() == 0 || l1.span() > split + 1 || l2_idx >= u64::from(l1.l2_entries()) {
            return Err(CfgFault::new(EventId::CBadStreamid));
        }
        l1.l2ptr_pa().raw() + l2_idx * Ste::BYTES
    } else {
        base + u64::from(sid) * Ste::BYTES
    };
    let words =
        read_words::<8>(mem, ste_addr).ok_or(CfgFault::fetch(EventId::FSteFetch, ste_addr))?;
    Ok(Ste::from_words(words))
}

/// Checks an STE and extracts what the model uses.
fn decode_ste(ste: &Ste, config: &SmmuConfig) -> Result<CachedSte, CfgFault> {
    let bad = CfgFault::new(EventId::CBadSte);
    if !ste.is_valid() || ste.reserved_bits_set().is_some() {
        return Err(bad);
    }
    let w0 = ste.word0();
    let w1 = ste.word1();
    // EATS is IGNORED without IDR0.ATS; 0b11 (DPT checks) behaves as 0b00 without
    // IDR3.DPT (§5.2 EATS).
    let eats = match w1.eats() {
        _ if !config.ats => Eats::Abort,
        Eats::FullDpt => Eats::Abort,
        e => e,
    };
    let cfg = match ste.config() {
        StreamConfig::Abort | StreamConfig::Reserved(_) => StreamConfig::Abort,
        other => other,
    };
    let cfg = match cfg {
        StreamConfig::Bypass => StreamCfg::Bypass,
        StreamConfig::S1Trans => {
            if w1.strw() != Strw::El1 {
                // No EL2 (IDR0.HYP = 0); 0bx1 is ILLEGAL for Non-secure streams.
                return Err(bad);
            }
            if eats == Eats::SplitStage {
                // Split-stage ATS is ILLEGAL unless both stages translate.
                return Err(bad);
            }
            if w1.s1stalld() && !config.stall {
                // S1STALLD = 1 is ILLEGAL unless STALL_MODEL = 0b00 (§5.2 S1STALLD).
                return Err(bad);
            }
            let cdmax = w0.s1cdmax();
            if cdmax > config.ssidsize {
                return Err(bad);
            }
            let fmt = w0.s1fmt();
            if cdmax > 0 && fmt.l2_index_bits().is_some() && !config.cd_2level {
                return Err(bad);
            }
            let dss = match w1.s1dss() {
                S1Dss::Reserved(_) => S1Dss::Terminate,
                d => d,
            };
            StreamCfg::Stage1(S1Stream {
                ctx_ptr: w0.s1_context_ptr_pa().raw(),
                fmt,
                cdmax,
                dss,
                stalld: w1.s1stalld(),
                priv_override: match w1.privcfg() {
                    sva_smmuv3_spec::encoding::PrivCfg::Unprivileged => Some(false),
                    sva_smmuv3_spec::encoding::PrivCfg::Privileged => Some(true),
                    _ => None,
                },
            })
        }
        // Stage 2 and nesting are not modelled yet (IDR0.S2P = 0): such an STE is ILLEGAL.
        StreamConfig::S2Trans | StreamConfig::Nested => return Err(bad),
        _ => StreamCfg::Abort,
    };
    Ok(CachedSte { cfg, eats })
}

/// Walks the CD table of `s1` to CD `idx`.
fn fetch_cd(mem: &dyn PhysMemory, s1: &S1Stream, idx: u32) -> Result<Cd, CfgFault> {
    let idx = u64::from(idx);
    let cd_addr = if s1.cdmax == 0 {
        s1.ctx_ptr
    } else if let Some(l2_bits) = s1.fmt.l2_index_bits() {
        let l1_addr = s1.ctx_ptr + (idx >> l2_bits) * 8;
        let l1 =
            read_words::<1>(mem, l1_addr).ok_or(CfgFault::fetch(EventId::FCdFetch, l1_addr))?;
        let l1 = L1Cd::from_bits(l1[0]);
        if !l1.v() {
            return Err(CfgFault::new(EventId::CBadSubstreamid));
        }
        l1.l2ptr_pa().raw() + (idx & ((1 << l2_bits) - 1)) * Cd::BYTES
    } else {
        s1.ctx_ptr + idx * Cd::BYTES
    };
    let words = read_words::<8>(mem, cd_addr).ok_or(CfgFault::fetch(EventId::FCdFetch, cd_addr))?;
    Ok(Cd::from_words(words))
}

/// Checks a CD and extracts what the model uses.
fn decode_cd(cd: &Cd, s1: &S1Stream, config: &SmmuConfig) -> Result<CtxDesc, CfgFault> {
    let bad = CfgFault::new(EventId::CBadCd);
    if !cd.is_valid() || cd.reserved_bits_set().is_some() {
        return Err(bad);
    }
    let w0 = cd.word0();
    let w1 = cd.word1();
    // AArch32 tables and big-endian walks are not supported (IDR0.TTF, TTENDIAN).
    if !w0.aa64() || w0.endi() {
        return Err(bad);
    }
    let tg0 = w0.tg0().into_bits();
    let granule = Granule::from_tg0(tg0).ok_or(bad)?;
    let supported = match granule {
        Granule::Size4K => config.granules.g4k,
        Granule::Size16K => config.granules.g16k,
        Granule::Size64K => config.granules.g64k,
    };
    if !supported && !w0.epd0() {
        return Err(bad);
    }
    // IPS is capped at IDR5.OAS (48 bits, encoding 0b101).
    let ips = w0.ips().into_bits().min(5);
    let table = TableConfig::from_fields(tg0, w0.t0sz(), ips).map_err(|_| bad)?;
    // A TTB0 outside the IPS range makes the CD ILLEGAL (§5.4.1).
    if !w0.epd0() && w1.ttb0_pa().raw() >= table.oa_size() {
        return Err(bad);
    }
    let stall = w0.s() && config.stall;
    if stall && s1.stalld {
        return Err(bad);
    }
    let asid = if config.asid16 {
        w0.asid().0
    } else {
        w0.asid().0 & 0xFF
    };
    Ok(CtxDesc {
        table,
        ttb0: w1.ttb0_pa(),
        asid,
        epd0: w0.epd0(),
        tbi0: w0.tbi() & 1 != 0,
        affd: w0.affd(),
        ha: w0.ha() && config.httu != HttuLevel::None,
        hd: w0.hd() && config.httu == HttuLevel::AccessDirty,
        stall,
        record: w0.r(),
        aset: w0.aset(),
        mair: cd.word3().mair(),
    })
}
