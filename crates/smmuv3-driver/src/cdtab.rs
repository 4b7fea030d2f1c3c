//! Context descriptor tables (§5.3, §5.4).
//!
//! A stream's CD table is a single CD (`S1CDMax = 0`), a linear array of `2^bits` CDs, or a
//! 2-level table: an array of [`L1Cd`] pointing at 64 KiB leaves of 1024 CDs
//! (`S1Fmt = 64K_L2`). Leaves are allocated when a CD in their range is first set; the L1
//! descriptor is written (and made valid) only after the CD in the new leaf is complete, then
//! CMD_CFGI_CD with Leaf = 0 makes the SMMU drop any cached invalid L1CD.
//!
//! A new CD is written words 1..7 first and word 0 (holding V) last. Replacing a valid CD is
//! hitless when the bits in use change in one word only (an ASID change, or quieting it);
//! otherwise V is cleared and invalidated first (see `entry`).

use std::collections::BTreeMap;

use sva_smmuv3_spec::cd::{CdWord0, CdWord1, CdWord3};
use sva_smmuv3_spec::command::Command;
use sva_smmuv3_spec::encoding::{AddressSize, Cacheability, Granule, Shareability, Tg0};
use sva_smmuv3_spec::ste::S1Fmt;
use sva_smmuv3_spec::{Cd, L1Cd};

use crate::entry::{CD_V, cd_used, update_plan};
use crate::invalidate::ATC_INV_SIZE_ALL;
use crate::strtab::CdTableConfig;
use crate::{Asid, Error, Features, Pa, Pasid, Result, SmmuDriver, StreamId, Va, lock};

/// log2 of the number of CDs in a level-2 leaf (64 KiB of 64-byte CDs).
pub(crate) const CD_LEAF_BITS: u8 = 10;
/// Largest linear CD table: 2^10 CDs (64 KiB), as Linux.
pub(crate) const CD_LINEAR_MAX_BITS: u8 = 10;

/// The translation regime of one context (a CD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdConfig {
    /// Translation table base (TTB0), the root of a VMSAv8-64 stage 1 table.
    pub ttb0: Pa,
    /// T0SZ: the input range is `2^(64 - t0sz)` bytes.
    pub t0sz: u8,
    /// TG0: translation granule.
    pub tg0: Granule,
    /// IPS: output address size.
    pub ips: AddressSize,
    /// ASID tagging the context's TLB entries.
    pub asid: Asid,
    /// MAIR (eight attribute bytes, as MAIR_EL1).
    pub mair: u64,
    /// EPD1: TTB1 walks disabled.
    pub epd1: bool,
    /// HA: hardware Access flag updates.
    pub ha: bool,
    /// HD: hardware dirty state updates.
    pub hd: bool,
    /// S: faults stall (the stream must not have stalls disabled).
    pub stall: bool,
    /// R: faults are recorded in the Event queue.
    pub record: bool,
    /// AA64: VMSAv8-64 tables (must be true: the driver supports nothing else).
    pub aa64: bool,
}

impl CdConfig {
    /// A 48-bit, 4 KiB-granule context over `ttb0` with ASID `asid`: faults recorded, no
    /// stall, no HTTU, MAIR index 0 Normal write-back and index 1 Device-nGnRE.
    #[must_use]
    pub const fn new(ttb0: Pa, asid: Asid) -> Self {
        Self {
            ttb0,
            t0sz: 16,
            tg0: Granule::Size4K,
            ips: AddressSize::Bits48,
            asid,
            mair: 0x04ff,
            epd1: true,
            ha: false,
            hd: false,
            stall: false,
            record: true,
            aa64: true,
        }
    }
}

/// Builds the CD words of `cfg` (V set), checking it against the enabled features.
pub(crate) fn build_cd(cfg: &CdConfig, f: &Features) -> Result<Cd> {
    if !cfg.aa64 {
        return Err(Error::Unsupported("VMSAv8-32 LPAE context descriptors"));
    }
    if (cfg.ha && !f.ha) || (cfg.hd && !f.hd) {
        return Err(Error::FeatureUnavailable("HTTU"));
    }
    if cfg.stall && !f.stall {
        return Err(Error::FeatureUnavailable("stall"));
    }
    if !f.granules.contains(&cfg.tg0) {
        return Err(Error::FeatureUnavailable("translation granule"));
    }
    if !(16..=39).contains(&cfg.t0sz) {
        return Err(Error::InvalidArgument("T0SZ out of 16..=39"));
    }
    if u32::from(cfg.asid.0) >> f.asid_bits != 0 {
        return Err(Error::InvalidArgument("ASID wider than SMMU ASID bits"));
    }
    let ips = if cfg.ips.bits() > f.oas.bits() {
        f.oas
    } else {
        cfg.ips
    };
    let w0 = CdWord0::new()
        .with_t0sz(cfg.t0sz)
        .with_tg0(Tg0::from_granule(cfg.tg0))
        .with_ir0(Cacheability::WriteBackAllocate)
        .with_or0(Cacheability::WriteBackAllocate)
        .with_sh0(Shareability::InnerShareable)
        .with_epd1(cfg.epd1)
        .with_v(true)
        .with_ips(ips)
        .with_aa64(true)
        .with_hd(cfg.hd)
        .with_ha(cfg.ha || cfg.hd)
        .with_s(cfg.stall || f.stall_forced)
        .with_r(cfg.record)
        .with_a(true)
        .with_asid(cfg.asid);
    let w1 = CdWord1::new().with_ttb0_pa(cfg.ttb0);
    Ok(Cd::new()
        .with_word0(w0)
        .with_word1(w1)
        .with_word3(CdWord3::from_mair(cfg.mair)))
}

/// The quiet form of a valid CD: still valid (no C_BAD_CD), TTB0 walks disabled (EPD0) so
/// nothing translates, and faults neither stall nor get recorded (unless stalls are forced).
pub(crate) fn quiet(cd: &Cd, stall_forced: bool) -> Cd {
    let w0 = cd
        .word0()
        .with_epd0(true)
        .with_s(stall_forced)
        .with_r(false);
    cd.with_word0(w0)
}

#[derive(Debug)]
enum CdLayout {
    /// `2^bits` CDs in one block (bits == 0: a single CD).
    Linear { base: Pa },
    /// L1 table and leaves by L1 index.
    TwoLevel { l1: Pa, leaves: BTreeMap<u32, Pa> },
}

/// Where a CD lives.
struct CdSlot {
    addr: Pa,
    /// When the leaf was just allocated: it still has to be filled, published through its
    /// L1 descriptor, then recorded with [`CdTable::insert_leaf`].
    publish: Option<NewLeaf>,
}

/// A level-2 CD table allocated but not yet published.
#[derive(Clone, Copy)]
struct NewLeaf {
    l1_desc: Pa,
    leaf: Pa,
    idx: u32,
}

/// A stream's CD table.
#[derive(Debug)]
pub(crate) struct CdTable {
    bits: u8,
    config: CdTableConfig,
    layout: CdLayout,
}

impl CdTable {
    pub(crate) fn new(drv: &SmmuDriver, cfg: CdTableConfig) -> Result<Self> {
        let f = drv.features();
        if cfg.max_ssid_bits > f.ssid_bits {
            return Err(Error::FeatureUnavailable("that many SubstreamID bits"));
        }
        let bits = cfg.max_ssid_bits;
        let layout = if cfg.two_level && bits > CD_LEAF_BITS {
            if !f.two_level_cd {
                return Err(Error::FeatureUnavailable("2-level CD tables"));
            }
            let l1_entries = 1u64 << (bits - CD_LEAF_BITS);
            CdLayout::TwoLevel {
                l1: drv.alloc(l1_entries * 8)?,
                leaves: BTreeMap::new(),
            }
        } else {
            if bits > CD_LINEAR_MAX_BITS && !cfg.two_level {
                return Err(Error::InvalidArgument(
                    "linear CD tables hold at most 2^10 CDs; use a 2-level table",
                ));
            }
            CdLayout::Linear {
                base: drv.alloc((1u64 << bits) * Cd::BYTES)?,
            }
        };
        Ok(Self {
            bits,
            config: cfg,
            layout,
        })
    }

    /// The configuration the table was made for.
    pub(crate) fn config(&self) -> CdTableConfig {
        self.config
    }

    pub(crate) fn bits(&self) -> u8 {
        self.bits
    }

    pub(crate) fn root(&self) -> Pa {
        match &self.layout {
            CdLayout::Linear { base } => *base,
            CdLayout::TwoLevel { l1, .. } => *l1,
        }
    }

    pub(crate) fn s1fmt(&self) -> S1Fmt {
        match self.layout {
            CdLayout::Linear { .. } => S1Fmt::Linear,
            CdLayout::TwoLevel { .. } => S1Fmt::TwoLevel64K,
        }
    }

    /// Frees the table's memory (after the STE no longer points at it).
    pub(crate) fn free(self, drv: &SmmuDriver) {
        // Freeing only fails for blocks the driver did not allocate; nothing to do then.
        match self.layout {
            CdLayout::Linear { base } => {
                let _ = drv.ram.put(base);
            }
            CdLayout::TwoLevel { l1, leaves } => {
                for leaf in leaves.values() {
                    let _ = drv.ram.put(*leaf);
                }
                let _ = drv.ram.put(l1);
            }
        }
    }

    /// Records a published leaf.
    fn insert_leaf(&mut self, idx: u32, leaf: Pa) {
        if let CdLayout::TwoLevel { leaves, .. } = &mut self.layout {
            leaves.insert(idx, leaf);
        }
    }

    /// Where CD `ssid` lives (allocating, but not recording, a missing leaf with `create`).
    fn locate(
        &mut self,
        drv: &SmmuDriver,
        sid: StreamId,
        ssid: Pasid,
        create: bool,
    ) -> Result<Option<CdSlot>> {
        if u64::from(ssid.0) >> self.bits != 0 {
            return Err(Error::SsidOutOfRange {
                sid,
                ssid,
                bits: u32::from(self.bits),
            });
        }
        match &mut self.layout {
            CdLayout::Linear { base } => Ok(Some(CdSlot {
                addr: *base + u64::from(ssid.0) * Cd::BYTES,
                publish: None,
            })),
            CdLayout::TwoLevel { l1, leaves } => {
                let idx = ssid.0 >> CD_LEAF_BITS;
                let off = u64::from(ssid.0 & ((1 << CD_LEAF_BITS) - 1)) * Cd::BYTES;
                if let Some(leaf) = leaves.get(&idx) {
                    return Ok(Some(CdSlot {
                        addr: *leaf + off,
                        publish: None,
                    }));
                }
                if !create {
                    return Ok(None);
                }
                let leaf = drv.alloc((1u64 << CD_LEAF_BITS) * Cd::BYTES)?;
                Ok(Some(CdSlot {
                    addr: leaf + off,
                    publish: Some(NewLeaf {
                        l1_desc: *l1 + u64::from(idx) * 8,
                        leaf,
                        idx,
                    }),
                }))
            }
        }
    }
}

impl SmmuDriver {
    /// Installs the context of SubstreamID `ssid` on stream `sid` (SSID 0 is the CD used for
    /// transactions without a PASID when the stream has `S1dss::Ssid0`, or the only CD).
    pub fn set_cd(&self, sid: StreamId, ssid: Pasid, cfg: &CdConfig) -> Result<()> {
        let cd = build_cd(cfg, &self.features)?;
        self.write_cd_entry(sid, ssid, |_| Ok(cd))?;
        lock(&self.asid_granules).insert(cfg.asid.0, cfg.tg0);
        Ok(())
    }

    /// Invalidates the CD of `ssid` (V = 0): its transactions fault with C_BAD_CD.
    pub fn clear_cd(&self, sid: StreamId, ssid: Pasid) -> Result<()> {
        let mut table = lock(&self.streams);
        let state = table.streams.get_mut(&sid.0).ok_or(Error::NoCdTable(sid))?;
        let ats = state.ats;
        let cdt = state.cd.as_mut().ok_or(Error::NoCdTable(sid))?;
        let Some(CdSlot { addr, .. }) = cdt.locate(self, sid, ssid, false)? else {
            return Ok(());
        };
        self.write_words(addr, &[0])?;
        let mut cmds = vec![Command::CfgiCd {
            sid,
            ssid,
            leaf: true,
        }];
        if ats {
            cmds.push(atc_inv_all(sid, ssid));
        }
        self.submit_batch(&cmds)?;
        self.write_words(addr + 8, &[0; 7])
    }

    /// Makes the CD of `ssid` quiet: valid, TTB0 walks disabled (EPD0), no stall and no
    /// recording, so a device still using the PASID gets immediate aborts. This is what SVA
    /// does when the address space exits before the PASID is unbound. The CD's ASID is then
    /// invalidated from the TLB (CMD_TLBI_NH_ASID), since EPD0 only stops new walks; with ATS
    /// the PASID's ATC entries are invalidated too.
    pub fn quiet_cd(&self, sid: StreamId, ssid: Pasid) -> Result<()> {
        let stall_forced = self.features.stall_forced;
        let current = self.write_cd_entry(sid, ssid, |cur| {
            if cur.is_valid() {
                Ok(quiet(&cur, stall_forced))
            } else {
                Err(Error::NoContext { sid, ssid })
            }
        })?;
        // EPD0 only stops walks: drop what the TLB still holds for the context's ASID.
        self.tlbi_asid(current.asid())
    }

    /// The CD currently in the table for `(sid, ssid)`, if its leaf exists.
    pub fn cd(&self, sid: StreamId, ssid: Pasid) -> Result<Option<Cd>> {
        let mut table = lock(&self.streams);
        let state = table.streams.get_mut(&sid.0).ok_or(Error::NoCdTable(sid))?;
        let cdt = state.cd.as_mut().ok_or(Error::NoCdTable(sid))?;
        match cdt.locate(self, sid, ssid, false)? {
            Some(slot) => Ok(Some(Cd::from_words(self.read_words::<8>(slot.addr)?))),
            None => Ok(None),
        }
    }

    /// Replaces the CD of `(sid, ssid)` by `make(current)`; returns the previous CD.
    fn write_cd_entry(
        &self,
        sid: StreamId,
        ssid: Pasid,
        make: impl FnOnce(Cd) -> Result<Cd>,
    ) -> Result<Cd> {
        let mut table = lock(&self.streams);
        let state = table.streams.get_mut(&sid.0).ok_or(Error::NoCdTable(sid))?;
        let ats = state.ats;
        let stalls_disabled = state.ste.word1().s1stalld();
        let make = |cur: Cd| -> Result<Cd> {
            let cd = make(cur)?;
            // CD.S with STE.S1STALLD makes the CD ILLEGAL (C_BAD_CD).
            if cd.word0().s() && stalls_disabled {
                return Err(Error::InvalidArgument(
                    "stalling CD on a stream attached with stall_disable",
                ));
            }
            Ok(cd)
        };
        let cdt = state.cd.as_mut().ok_or(Error::NoCdTable(sid))?;
        let CdSlot { addr, publish } = cdt
            .locate(self, sid, ssid, true)?
            .ok_or(Error::Hardware("CD leaf missing"))?;
        if let Some(n) = publish {
            // The leaf is not visible yet: fill the CD (V last), then publish the leaf.
            let filled = make(Cd::new()).and_then(|target| {
                let new = target.words();
                self.write_words(addr + 8, &new[1..])?;
                self.write_words(addr, &new[..1])
            });
            if let Err(e) = filled {
                // Never published: give the leaf back.
                let _ = self.ram.put(n.leaf);
                return Err(e);
            }
            let desc = L1Cd::new().with_v(true).with_l2ptr_pa(n.leaf);
            self.write_words(n.l1_desc, &[desc.into_bits()])?;
            cdt.insert_leaf(n.idx, n.leaf);
            self.submit_batch(&[Command::CfgiCd {
                sid,
                ssid,
                leaf: false,
            }])?;
            return Ok(Cd::new());
        }
        let cur = self.read_words::<8>(addr)?;
        let current = Cd::from_words(cur);
        let new = make(current)?.words();
        let plan = update_plan(&cur, &new, CD_V, cd_used);
        let mut last = Vec::new();
        if ats && current.is_valid() {
            last.push(atc_inv_all(sid, ssid));
        }
        let cfgi = Command::CfgiCd {
            sid,
            ssid,
            leaf: true,
        };
        self.write_entry_plan(addr, &cur, &plan, cfgi, &last)?;
        Ok(current)
    }
}

fn atc_inv_all(sid: StreamId, ssid: Pasid) -> Command {
    Command::AtcInv {
        sid,
        ssid: Some(ssid),
        global: false,
        addr: Va(0),
        size: ATC_INV_SIZE_ALL,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn features() -> Features {
        Features {
            ats: true,
            atschk: true,
            pri: true,
            stall: true,
            hw_stall: true,
            stall_forced: false,
            ha: true,
            hd: true,
            btm: false,
            hyp: false,
            coherent: true,
            two_level_strtab: true,
            strtab_split: 8,
            two_level_cd: true,
            range_inv: true,
            sid_bits: 16,
            ssid_bits: 20,
            asid_bits: 16,
            oas: AddressSize::Bits48,
            granules: vec![Granule::Size4K, Granule::Size64K],
            cmdq_log2: 8,
            eventq_log2: 7,
            priq_log2: 7,
            msi_sync: false,
        }
    }

    #[test]
    fn cd_words_match_hand_encoding() {
        let mut cfg = CdConfig::new(Pa(0x4_5678_9000), Asid(0x1234));
        cfg.t0sz = 25;
        cfg.mair = 0x0044_ff04;
        let cd = build_cd(&cfg, &features()).unwrap();
        // T0SZ=25 | TG0=4K(0) | IR0=WBRA(1<<8) | OR0=WBRA(1<<10) | SH0=ISH(3<<12) |
        // EPD1(1<<30) | V(1<<31) | IPS=48(5<<32) | AA64(1<<41) | R(1<<45) | A(1<<46) |
        // ASID<<48.
        let w0: u64 = 25
            | (1 << 8)
            | (1 << 10)
            | (3 << 12)
            | (1 << 30)
            | (1 << 31)
            | (5 << 32)
            | (1 << 41)
            | (1 << 45)
            | (1 << 46)
            | (0x1234 << 48);
        assert_eq!(cd.words(), [w0, 0x4_5678_9000, 0, 0x0044_ff04, 0, 0, 0, 0]);
        let q = quiet(&cd, false);
        assert_eq!(q.words()[0], (w0 | (1 << 14)) & !(1 << 45));
        assert_eq!(&q.words()[1..], &cd.words()[1..]);
    }

    #[test]
    fn cd_checks_features() {
        let mut f = features();
        f.ha = false;
        f.hd = false;
        let mut cfg = CdConfig::new(Pa(0x1000), Asid(1));
        cfg.hd = true;
        assert_eq!(build_cd(&cfg, &f), Err(Error::FeatureUnavailable("HTTU")));
        cfg.hd = false;
        cfg.tg0 = Granule::Size16K;
        assert!(build_cd(&cfg, &f).is_err());
        let mut f8 = features();
        f8.asid_bits = 8;
        assert!(build_cd(&CdConfig::new(Pa(0x1000), Asid(256)), &f8).is_err());
        // IPS is capped at the SMMU's OAS.
        let mut f40 = features();
        f40.oas = AddressSize::Bits40;
        let cd = build_cd(&CdConfig::new(Pa(0x1000), Asid(1)), &f40).unwrap();
        assert_eq!(cd.word0().ips(), AddressSize::Bits40);
    }

    #[test]
    fn l1cd_word() {
        let d = L1Cd::new().with_v(true).with_l2ptr_pa(Pa(0x12_3400_0000));
        assert_eq!(d.into_bits(), 0x12_3400_0001);
    }
}
