//! The Stream table (§5.1, §5.2) and stream attachment.
//!
//! The table is linear when StreamIDs are few, or 2-level: an L1 array of [`L1Std`], each
//! pointing at a level-2 array of `2^SPLIT` STEs allocated when a StreamID of its group is
//! first attached. Unused STEs (all of a linear table, the rest of an allocated level-2
//! table) are valid and abort (Config = abort), so stray traffic is terminated without
//! C_BAD_STE events; a StreamID whose level-2 table was never allocated meets an invalid
//! L1STD and is reported as C_BAD_STREAMID.
//!
//! STE updates follow the ordering rules of the architecture (the SMMU reads an entry with
//! 64-bit single-copy atomicity only), hitless whenever the bits in use change in one 64-bit
//! word only; see `entry`. Each step is followed by CMD_CFGI_STE and CMD_SYNC.

use std::collections::BTreeMap;

use sva_smmuv3_spec::command::Command;
use sva_smmuv3_spec::encoding::{Cacheability, ShareCfg, Shareability};
use sva_smmuv3_spec::ste::{
    Eats, S1Dss, S1Fmt, SteWord0, SteWord1, StreamConfig as SteConfig, Strw,
};
use sva_smmuv3_spec::{L1Std, Ste};

use crate::cdtab::CdTable;
use crate::entry::{STE_V, ste_used, update_plan};
use crate::invalidate::ATC_INV_SIZE_ALL;
use crate::{Error, Pa, Result, SmmuDriver, StreamId, Va, lock};

/// StreamID bits up to which the Stream table is linear (256 STEs, 16 KiB).
pub(crate) const LINEAR_STRTAB_MAX_SID_BITS: u8 = 8;
/// StreamID bits a linear table covers at most when the SMMU has no 2-level support
/// (65536 STEs, 4 MiB).
pub(crate) const LINEAR_STRTAB_CAP_SID_BITS: u8 = 16;
/// SPLIT: StreamID bits indexing a level-2 table (256 STEs, 16 KiB per level-2 table).
pub(crate) const STRTAB_SPLIT: u8 = 8;
/// Largest L1 table: 2^17 descriptors (1 MiB), as Linux.
pub(crate) const STRTAB_L1_MAX_BITS: u8 = 17;

/// What a transaction without a SubstreamID does on a stream with substreams (STE.S1DSS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum S1dss {
    /// Terminate it (F_STREAM_DISABLED).
    #[default]
    Terminate,
    /// Bypass stage 1.
    Bypass,
    /// Translate it with CD 0 (then SubstreamID 0 itself is terminated).
    Ssid0,
}

/// Shape of a stream's CD table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdTableConfig {
    /// log2 of the number of CDs (0: a single CD, no substreams; at most 20).
    pub max_ssid_bits: u8,
    /// 2-level table (L1CDs and 1024-CD leaves allocated on demand).
    pub two_level: bool,
}

impl CdTableConfig {
    /// A linear table of `2^bits` CDs.
    #[must_use]
    pub const fn linear(bits: u8) -> Self {
        Self {
            max_ssid_bits: bits,
            two_level: false,
        }
    }

    /// A 2-level table covering `2^bits` SubstreamIDs.
    #[must_use]
    pub const fn two_level(bits: u8) -> Self {
        Self {
            max_ssid_bits: bits,
            two_level: true,
        }
    }
}

/// How a stream is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamConfig {
    /// All traffic aborts silently.
    Abort,
    /// All traffic bypasses translation.
    Bypass,
    /// Stage 1 translation through a CD table.
    S1 {
        /// The CD table.
        cd_table: CdTableConfig,
        /// Treatment of transactions without a SubstreamID.
        s1dss: S1dss,
        /// Forbid stalls for this stream (STE.S1STALLD; required for PCIe endpoints).
        stall_disable: bool,
        /// Enable ATS (STE.EATS = full).
        ats: bool,
    },
}

impl StreamConfig {
    /// Stage 1 with the given CD table, S1DSS terminate, stalls disabled, no ATS.
    #[must_use]
    pub const fn s1(cd_table: CdTableConfig) -> Self {
        Self::S1 {
            cd_table,
            s1dss: S1dss::Terminate,
            stall_disable: true,
            ats: false,
        }
    }
}

/// A StreamID's state as the driver wrote it.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub(crate) ste: Ste,
    pub(crate) cd: Option<CdTable>,
    pub(crate) ats: bool,
}

#[derive(Debug)]
pub(crate) enum Layout {
    Linear {
        base: Pa,
    },
    TwoLevel {
        l1: Pa,
        split: u8,
        /// Level-2 tables by L1 index.
        l2: BTreeMap<u32, Pa>,
    },
}

/// The Stream table and the per-stream state.
#[derive(Debug)]
pub(crate) struct StreamTable {
    pub(crate) layout: Layout,
    pub(crate) sid_bits: u8,
    pub(crate) streams: BTreeMap<u32, StreamState>,
}

/// The STE that aborts all traffic without recording events.
#[must_use]
pub(crate) fn abort_ste() -> Ste {
    Ste::new().with_word0(SteWord0::new().with_v(true).with_config(SteConfig::Abort))
}

/// The STE that bypasses translation, keeping incoming shareability.
#[must_use]
pub(crate) fn bypass_ste() -> Ste {
    Ste::new()
        .with_word0(SteWord0::new().with_v(true).with_config(SteConfig::Bypass))
        .with_word1(SteWord1::new().with_shcfg(ShareCfg::Incoming))
}

/// Parameters of a stage 1 STE.
#[derive(Debug, Clone, Copy)]
pub(crate) struct S1Ste {
    pub(crate) cd_ptr: Pa,
    pub(crate) fmt: S1Fmt,
    pub(crate) cdmax: u8,
    pub(crate) s1dss: S1dss,
    pub(crate) ats: bool,
    pub(crate) stalld: bool,
}

/// A stage 1 STE pointing at a CD table.
#[must_use]
pub(crate) fn s1_ste(p: S1Ste) -> Ste {
    let dss = match p.s1dss {
        S1dss::Terminate => S1Dss::Terminate,
        S1dss::Bypass => S1Dss::Bypass,
        S1dss::Ssid0 => S1Dss::Ssid0,
    };
    let w0 = SteWord0::new()
        .with_v(true)
        .with_config(SteConfig::S1Trans)
        .with_s1fmt(if p.cdmax == 0 { S1Fmt::Linear } else { p.fmt })
        .with_s1_context_ptr_pa(p.cd_ptr)
        .with_s1cdmax(p.cdmax);
    let dss = if p.cdmax == 0 { S1Dss::Terminate } else { dss };
    let w1 = SteWord1::new()
        .with_s1dss(dss)
        // Bypassed traffic keeps its shareability, as with an STE in bypass.
        .with_shcfg(if dss == S1Dss::Bypass {
            ShareCfg::Incoming
        } else {
            ShareCfg::NonShareable
        })
        .with_s1cir(Cacheability::WriteBackAllocate)
        .with_s1cor(Cacheability::WriteBackAllocate)
        .with_s1csh(Shareability::InnerShareable)
        .with_s1stalld(p.stalld)
        .with_eats(if p.ats { Eats::Full } else { Eats::Abort })
        .with_strw(Strw::El1)
        // Every context is a user address space or an unprivileged I/O page table: a
        // device claiming privilege (PnU) gets no EL1-only access, e.g. to PROT_NONE pages.
        .with_privcfg(sva_smmuv3_spec::encoding::PrivCfg::Unprivileged);
    Ste::new().with_word0(w0).with_word1(w1)
}

impl StreamTable {
    /// The address of `sid`'s STE; with `create`, allocates its level-2 table if missing
    /// (the returned flag tells that a new L1 descriptor was installed).
    pub(crate) fn ste_addr(
        &mut self,
        drv: &SmmuDriver,
        sid: StreamId,
        create: bool,
    ) -> Result<Option<(Pa, bool)>> {
        if u64::from(sid.0) >> self.sid_bits != 0 {
            return Err(Error::SidOutOfRange {
                sid,
                bits: u32::from(self.sid_bits),
            });
        }
        match &mut self.layout {
            Layout::Linear { base } => Ok(Some((*base + u64::from(sid.0) * Ste::BYTES, false))),
            Layout::TwoLevel { l1, split, l2 } => {
                let idx = sid.0 >> *split;
                let off = u64::from(sid.0 & ((1u32 << *split) - 1)) * Ste::BYTES;
                if let Some(t) = l2.get(&idx) {
                    return Ok(Some((*t + off, false)));
                }
                if !create {
                    return Ok(None);
                }
                let entries = 1u64 << *split;
                let table = drv.alloc(entries * Ste::BYTES)?;
                let abort = abort_ste();
                for i in 0..entries {
                    drv.write_words(table + i * Ste::BYTES, &abort.words())?;
                }
                let desc = L1Std::new().with_span(*split + 1).with_l2ptr_pa(table);
                drv.write_words(*l1 + u64::from(idx) * 8, &[desc.into_bits()])?;
                l2.insert(idx, table);
                Ok(Some((table + off, true)))
            }
        }
    }
}

impl SmmuDriver {
    /// Configures stream `sid`: writes its STE in a safe order, then CMD_CFGI_STE and
    /// CMD_SYNC. A previous CD table of the stream is kept if the new configuration has the
    /// same [`CdTableConfig`], otherwise freed once the new STE is visible.
    pub fn attach(&self, sid: StreamId, config: StreamConfig) -> Result<()> {
        let mut table = lock(&self.streams);
        let (addr, new_l2) = table
            .ste_addr(self, sid, true)?
            .ok_or(Error::Hardware("level-2 Stream table missing"))?;
        let f = &self.features;
        let (target, cd, ats) = match config {
            StreamConfig::Abort => (abort_ste(), None, false),
            StreamConfig::Bypass => (bypass_ste(), None, false),
            StreamConfig::S1 {
                cd_table,
                s1dss,
                stall_disable,
                ats,
            } => {
                if ats && !f.ats {
                    return Err(Error::FeatureUnavailable("ATS"));
                }
                // Keep the stream's CD table (and its CDs) when its shape does not change.
                let reuse = table
                    .streams
                    .get_mut(&sid.0)
                    .and_then(|s| s.cd.take_if(|cd| cd.config() == cd_table));
                let cd = match reuse {
                    Some(cd) => cd,
                    None => CdTable::new(self, cd_table)?,
                };
                let ste = s1_ste(S1Ste {
                    cd_ptr: cd.root(),
                    fmt: cd.s1fmt(),
                    cdmax: cd.bits(),
                    s1dss,
                    ats,
                    stalld: f.hw_stall && !f.stall_forced && (stall_disable || !f.stall),
                });
                (ste, Some(cd), ats)
            }
        };
        let old_ats = table.streams.get(&sid.0).is_some_and(|s| s.ats);
        let current = Ste::from_words(self.read_words::<8>(addr)?);
        let mut after = Vec::new();
        if new_l2 {
            // A new L1STD: the SMMU may have cached the invalid one.
            after.push(Command::CfgiSte { sid, leaf: false });
        }
        if ats || old_ats {
            after.push(Command::AtcInv {
                sid,
                ssid: None,
                global: false,
                addr: Va(0),
                size: ATC_INV_SIZE_ALL,
            });
        }
        let res = self.write_ste(sid, addr, &current, &target, &after);
        let old = match res {
            Ok(()) => table.streams.insert(
                sid.0,
                StreamState {
                    ste: target,
                    cd,
                    ats,
                },
            ),
            Err(e) => {
                // The STE may point at the table now: keep it with the stream rather than
                // free it (unless the stream still owns another one).
                if let Some(cd) = cd {
                    match table.streams.get_mut(&sid.0) {
                        Some(s) if s.cd.is_none() => s.cd = Some(cd),
                        _ => cd.free(self),
                    }
                }
                return Err(e);
            }
        };
        if let Some(old_cd) = old.and_then(|s| s.cd) {
            old_cd.free(self);
        }
        Ok(())
    }

    /// Detaches stream `sid`: its STE aborts all traffic.
    pub fn detach(&self, sid: StreamId) -> Result<()> {
        self.attach(sid, StreamConfig::Abort)
    }

    /// The STE currently written for `sid` (`None` if the stream was never attached).
    pub fn ste(&self, sid: StreamId) -> Option<Ste> {
        lock(&self.streams).streams.get(&sid.0).map(|s| s.ste)
    }

    /// Writes `target` over the live entry `current` at `addr` (see `entry` for the
    /// ordering), with CMD_CFGI_STE and CMD_SYNC after each step; `after` joins the last
    /// step.
    fn write_ste(
        &self,
        sid: StreamId,
        addr: Pa,
        current: &Ste,
        target: &Ste,
        after: &[Command],
    ) -> Result<()> {
        let cur = current.words();
        let plan = update_plan(&cur, &target.words(), STE_V, ste_used);
        self.write_entry_plan(
            addr,
            &cur,
            &plan,
            Command::CfgiSte { sid, leaf: true },
            after,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_and_bypass_words() {
        // V = 1, Config = 0b000.
        assert_eq!(abort_ste().words(), [0x1, 0, 0, 0, 0, 0, 0, 0]);
        // V = 1, Config = 0b100 (bits 3:1 = 0b100 -> 0x8); SHCFG = incoming (0b01 at 45:44).
        assert_eq!(bypass_ste().words(), [0x9, 1 << 44, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn s1_ste_words() {
        let ste = s1_ste(S1Ste {
            cd_ptr: Pa(0x1234_0000),
            fmt: S1Fmt::TwoLevel64K,
            cdmax: 20,
            s1dss: S1dss::Ssid0,
            ats: true,
            stalld: true,
        });
        // Word 0: V | Config=S1 (0b101 << 1 = 0xA) | S1Fmt=0b10 << 4 | ptr | S1CDMax=20 << 59.
        let w0 = 1 | 0xA | (2 << 4) | 0x1234_0000 | (20u64 << 59);
        assert_eq!(ste.words()[0], w0);
        // Word 1: S1DSS=0b10, S1CIR=WBRA (1<<2), S1COR=WBRA (1<<4), S1CSH=ISH (3<<6),
        // S1STALLD (1<<27), EATS=0b01 (1<<28), STRW=EL1 (0), PRIVCFG=unprivileged (2<<48).
        let w1 = 2 | (1 << 2) | (1 << 4) | (3 << 6) | (1 << 27) | (1 << 28) | (2 << 48);
        assert_eq!(ste.words()[1], w1);
        assert_eq!(&ste.words()[2..], &[0; 6]);
    }

    #[test]
    fn single_cd_ste_ignores_fmt_and_dss() {
        let ste = s1_ste(S1Ste {
            cd_ptr: Pa(0x8000),
            fmt: S1Fmt::TwoLevel64K,
            cdmax: 0,
            s1dss: S1dss::Bypass,
            ats: false,
            stalld: false,
        });
        assert_eq!(ste.words()[0], 1 | 0xA | 0x8000);
        assert_eq!(ste.words()[1] & 3, 0);
    }
}
