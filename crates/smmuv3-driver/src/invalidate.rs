//! TLB and ATC invalidation (§4.4, §4.5.1).
//!
//! `tlbi_va` invalidates `[va, va + size)` of an ASID:
//! - with range invalidation (SMMU_IDR3.RIL), a few CMD_TLBI_NH_VA each covering
//!   `(NUM + 1) * 2^SCALE` granules;
//! - without it, one CMD_TLBI_NH_VA per page, unless the range has at least
//!   [`max_tlbi_ops`] pages, in which case a single CMD_TLBI_NH_ASID is cheaper than flooding
//!   the Command queue.
//!
//! `atc_inv` sends one CMD_ATC_INV whose span is the smallest naturally aligned power of two
//! number of 4 KiB pages covering the range.

use sva_smmuv3_spec::command::{Command, TlbiGranule, TlbiRange};
use sva_smmuv3_spec::encoding::Granule;

use crate::{Asid, Pasid, Result, SmmuDriver, StreamId, Va, lock};

/// CMD_ATC_INV Size that invalidates the whole ATC of the function (§4.5.1).
pub const ATC_INV_SIZE_ALL: u8 = 52;

/// Without range invalidation, a range of at least `granule / MAX_TLBI_OPS_DIVISOR` pages
/// (512 pages = 2 MiB for 4 KiB pages) is invalidated by ASID instead of page by page. This
/// is Linux's `CMDQ_MAX_TLBI_OPS = 1 << (PAGE_SHIFT - 3)`: the number of per-page commands
/// worth one whole-ASID flush, introduced after per-page floods of large munmaps locked CPUs.
pub const MAX_TLBI_OPS_DIVISOR: u64 = 8;

/// The per-page TLBI threshold for `granule`: ranges of this many pages or more are
/// invalidated by ASID when range invalidation is not available.
#[must_use]
pub const fn max_tlbi_ops(granule: Granule) -> u64 {
    granule.bytes() / MAX_TLBI_OPS_DIVISOR
}

/// The TLB invalidation commands for `[va, va + size)` of `asid` (VMID 0), for entries of
/// `granule`. `leaf` restricts them to last-level entries. `size == 0` yields nothing;
/// `size == u64::MAX` flushes the ASID.
#[must_use]
pub fn tlbi_va_commands(
    asid: Asid,
    va: Va,
    size: u64,
    leaf: bool,
    granule: Granule,
    range_inv: bool,
) -> Vec<Command> {
    let by_asid = vec![Command::TlbiNhAsid {
        vmid: sva_addr::Vmid(0),
        asid,
    }];
    if size == 0 {
        return Vec::new();
    }
    if size == u64::MAX {
        return by_asid;
    }
    let shift = granule.shift();
    let start = va.0 >> shift << shift;
    let Some(end) = va.0.checked_add(size) else {
        return by_asid;
    };
    let mut num_pages = (end - start).div_ceil(granule.bytes());
    let mut cmds = Vec::new();
    if range_inv {
        let tg = match granule {
            Granule::Size4K => TlbiGranule::Size4K,
            Granule::Size16K => TlbiGranule::Size16K,
            Granule::Size64K => TlbiGranule::Size64K,
        };
        // TTL names the level of the leaf entries: level 3 for pages. Non-leaf invalidations
        // give no hint, and a first command with TTL = NUM = SCALE = 0 would then be the
        // reserved encoding: invalidate one page more instead (as Linux).
        let ttl = if leaf { 3 } else { 0 };
        if !leaf && num_pages & 0x1F == 1 {
            num_pages += 1;
        }
        let mut addr = start;
        while num_pages > 0 {
            let scale = num_pages.trailing_zeros();
            let num = (num_pages >> scale) & 0x1F;
            cmds.push(Command::TlbiNhVa {
                vmid: sva_addr::Vmid(0),
                asid,
                addr: Va(addr),
                leaf,
                range: TlbiRange {
                    tg,
                    ttl,
                    num: (num - 1) as u8,
                    scale: scale as u8,
                },
            });
            num_pages -= num << scale;
            addr = addr.wrapping_add((num << scale) << shift);
        }
        return cmds;
    }
    if num_pages >= max_tlbi_ops(granule) {
        return by_asid;
    }
    for i in 0..num_pages {
        cmds.push(Command::TlbiNhVa {
            vmid: sva_addr::Vmid(0),
            asid,
            addr: Va(start + (i << shift)),
            leaf,
            range: TlbiRange::NONE,
        });
    }
    cmds
}

/// The CMD_ATC_INV for `[va, va + size)` of `(sid, ssid)`: the smallest naturally aligned
/// span of `2^Size` 4 KiB pages covering the range (pages 7..=10 give pages 0..=15).
/// `size == 0` invalidates everything.
#[must_use]
pub fn atc_inv_command(sid: StreamId, ssid: Option<Pasid>, va: Va, size: u64) -> Command {
    let all = Command::AtcInv {
        sid,
        ssid,
        global: false,
        addr: Va(0),
        size: ATC_INV_SIZE_ALL,
    };
    if size == 0 {
        return all;
    }
    let Some(last) = va.0.checked_add(size - 1) else {
        return all;
    };
    let first_page = va.0 >> 12;
    let last_page = last >> 12;
    // fls(first ^ last): the number of low page bits that differ across the range.
    let log2_span = 64 - (first_page ^ last_page).leading_zeros();
    if log2_span >= u32::from(ATC_INV_SIZE_ALL) {
        return all;
    }
    let mask = (1u64 << log2_span) - 1;
    Command::AtcInv {
        sid,
        ssid,
        global: false,
        addr: Va((first_page & !mask) << 12),
        size: log2_span as u8,
    }
}

/// Commands gathered to be submitted under a single CMD_SYNC.
#[must_use = "a batch does nothing until submitted"]
pub struct Batch<'a> {
    drv: &'a SmmuDriver,
    cmds: Vec<Command>,
}

impl Batch<'_> {
    /// Adds any command.
    pub fn push(&mut self, cmd: Command) -> &mut Self {
        self.cmds.push(cmd);
        self
    }

    /// Adds CMD_TLBI_NH_ASID.
    pub fn tlbi_asid(&mut self, asid: Asid) -> &mut Self {
        self.push(Command::TlbiNhAsid {
            vmid: sva_addr::Vmid(0),
            asid,
        })
    }

    /// Adds the TLB invalidation of `[va, va + size)` of `asid` (see [`tlbi_va_commands`]).
    pub fn tlbi_va(&mut self, asid: Asid, va: Va, size: u64, leaf: bool) -> &mut Self {
        let granule = self.drv.asid_granule(asid);
        let cmds = tlbi_va_commands(asid, va, size, leaf, granule, self.drv.features.range_inv);
        self.cmds.extend(cmds);
        self
    }

    /// Adds the ATC invalidation of `[va, va + size)` for `(sid, ssid)` (see
    /// [`atc_inv_command`]).
    pub fn atc_inv(&mut self, sid: StreamId, ssid: Option<Pasid>, va: Va, size: u64) -> &mut Self {
        self.push(atc_inv_command(sid, ssid, va, size))
    }

    /// The commands gathered so far.
    #[must_use]
    pub fn commands(&self) -> &[Command] {
        &self.cmds
    }

    /// Submits the commands followed by one CMD_SYNC and waits for it.
    pub fn submit(&self) -> Result<()> {
        self.drv.submit_batch(&self.cmds)
    }
}

impl SmmuDriver {
    /// Starts a batch of commands submitted under one CMD_SYNC.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            drv: self,
            cmds: Vec::new(),
        }
    }

    /// The granule last used with `asid` in a CD (4 KiB if none).
    pub(crate) fn asid_granule(&self, asid: Asid) -> Granule {
        lock(&self.asid_granules)
            .get(&asid.0)
            .copied()
            .unwrap_or(Granule::Size4K)
    }

    /// Invalidates all TLB entries of `asid` (CMD_TLBI_NH_ASID + CMD_SYNC).
    pub fn tlbi_asid(&self, asid: Asid) -> Result<()> {
        self.batch().tlbi_asid(asid).submit()
    }

    /// Invalidates the TLB entries of `[va, va + size)` of `asid`, then CMD_SYNC.
    pub fn tlbi_va(&self, asid: Asid, va: Va, size: u64, leaf: bool) -> Result<()> {
        self.batch().tlbi_va(asid, va, size, leaf).submit()
    }

    /// Invalidates the ATC entries of `[va, va + size)` for `(sid, ssid)`, then CMD_SYNC.
    pub fn atc_inv(&self, sid: StreamId, ssid: Option<Pasid>, va: Va, size: u64) -> Result<()> {
        self.batch().atc_inv(sid, ssid, va, size).submit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(cmds: &[Command]) -> Vec<(u64, u8, u8, u8)> {
        cmds.iter()
            .map(|c| match c {
                Command::TlbiNhVa { addr, range, .. } => {
                    (addr.0, range.num, range.scale, range.ttl)
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn range_tlbi_fields() {
        // 1 page, leaf: NUM=0 SCALE=0 TTL=3.
        let c = tlbi_va_commands(Asid(1), Va(0x4000), 0x1000, true, Granule::Size4K, true);
        assert_eq!(ranges(&c), vec![(0x4000, 0, 0, 3)]);
        // 1 page, non-leaf: bumped to 2 pages, NUM=0 SCALE=1.
        let c = tlbi_va_commands(Asid(1), Va(0x4000), 0x1000, false, Granule::Size4K, true);
        assert_eq!(ranges(&c), vec![(0x4000, 0, 1, 0)]);
        // 33 pages, non-leaf: 34 pages (SCALE 1, NUM 16), never NUM = SCALE = TTL = 0.
        let c = tlbi_va_commands(Asid(1), Va(0), 33 << 12, false, Granule::Size4K, true);
        assert_eq!(ranges(&c), vec![(0, 16, 1, 0)]);
        // 31 pages: one command NUM=30 SCALE=0.
        let c = tlbi_va_commands(Asid(1), Va(0), 31 << 12, true, Granule::Size4K, true);
        assert_eq!(ranges(&c), vec![(0, 30, 0, 3)]);
        // 33 pages = 0b100001: 1 page (SCALE 0, NUM 0), then 32 pages (SCALE 5, NUM 0).
        let c = tlbi_va_commands(
            Asid(1),
            Va(0x10_0000),
            33 << 12,
            true,
            Granule::Size4K,
            true,
        );
        assert_eq!(ranges(&c), vec![(0x10_0000, 0, 0, 3), (0x10_1000, 0, 5, 3)]);
        // 512 pages = 2^9: NUM=0 SCALE=9.
        let c = tlbi_va_commands(Asid(1), Va(0), 512 << 12, true, Granule::Size4K, true);
        assert_eq!(ranges(&c), vec![(0, 0, 9, 3)]);
        // Total coverage always equals the page count.
        for pages in 1u64..300 {
            let c = tlbi_va_commands(Asid(1), Va(0), pages << 12, true, Granule::Size4K, true);
            let covered: u64 = c
                .iter()
                .map(|c| match c {
                    Command::TlbiNhVa { range, .. } => (range.bytes().unwrap() >> 12) as u64,
                    _ => 0,
                })
                .sum();
            assert_eq!(covered, pages);
        }
        // 64K granule: TG encodes 64K.
        let c = tlbi_va_commands(
            Asid(1),
            Va(0x1_0000),
            0x2_0000,
            true,
            Granule::Size64K,
            true,
        );
        match c[0] {
            Command::TlbiNhVa { range, .. } => {
                assert_eq!(range.tg, TlbiGranule::Size64K);
                assert_eq!((range.num, range.scale), (0, 1));
            }
            _ => panic!(),
        }
    }

    #[test]
    fn per_page_tlbi_and_threshold() {
        let c = tlbi_va_commands(Asid(2), Va(0x1800), 0x2000, true, Granule::Size4K, false);
        // [0x1800, 0x3800) touches pages 1, 2, 3.
        assert_eq!(
            ranges(&c),
            vec![(0x1000, 0, 0, 0), (0x2000, 0, 0, 0), (0x3000, 0, 0, 0)]
        );
        assert_eq!(max_tlbi_ops(Granule::Size4K), 512);
        let c = tlbi_va_commands(Asid(2), Va(0), 511 << 12, true, Granule::Size4K, false);
        assert_eq!(c.len(), 511);
        let c = tlbi_va_commands(Asid(2), Va(0), 512 << 12, true, Granule::Size4K, false);
        assert_eq!(
            c,
            vec![Command::TlbiNhAsid {
                vmid: sva_addr::Vmid(0),
                asid: Asid(2)
            }]
        );
        assert!(tlbi_va_commands(Asid(2), Va(0), 0, true, Granule::Size4K, false).is_empty());
    }

    fn atc(va: u64, size: u64) -> (u64, u8) {
        match atc_inv_command(StreamId(1), Some(Pasid(1)), Va(va), size) {
            Command::AtcInv { addr, size, .. } => (addr.0, size),
            _ => unreachable!(),
        }
    }

    #[test]
    fn atc_inv_size_encoding() {
        assert_eq!(atc(0x5000, 0x1000), (0x5000, 0));
        // Pages 7..=10 -> span 16 pages at page 0.
        assert_eq!(atc(0x7000, 0x4000), (0, 4));
        // Two pages straddling an aligned pair.
        assert_eq!(atc(0x2000, 0x2000), (0x2000, 1));
        // Unaligned one byte range within one page.
        assert_eq!(atc(0x12345, 1), (0x12000, 0));
        // Size 0 -> everything.
        assert_eq!(atc(0x12345, 0), (0, ATC_INV_SIZE_ALL));
        assert_eq!(atc(u64::MAX - 10, 100), (0, ATC_INV_SIZE_ALL));
    }
}
