//! Ordered updates of live 64-byte table entries (STEs and CDs).
//!
//! The SMMU reads an entry with 64-bit single-copy atomicity only, and may read it at any
//! moment, so an update must never expose a mix of old and new words that means something
//! else. The plan follows the "used bits" method (as Linux `arm_smmu_write_entry`): every
//! bit the current entry does not use can be changed freely; if the bits the target uses
//! then differ in one 64-bit word only, that word is written alone (hitless); otherwise the
//! entry is made invalid (V = 0) first, words 1..7 are written, then word 0. Every step is
//! followed by a configuration invalidation and CMD_SYNC.

use sva_smmuv3_spec::ste::StreamConfig as SteConfig;
use sva_smmuv3_spec::{Cd, Ste};

/// Words of an entry.
pub(crate) type Words = [u64; 8];

/// Bits of each word that an entry uses, given its own contents.
pub(crate) type UsedFn = fn(&Words) -> Words;

/// The entry states to write in turn, each followed by a sync. Returns an empty plan when
/// nothing changes.
pub(crate) fn update_plan(cur: &Words, target: &Words, v_bit: u64, used: UsedFn) -> Vec<Words> {
    let cur_used = used(cur);
    let tgt_used = used(target);
    let mut unused_update = [0u64; 8];
    for i in 0..8 {
        unused_update[i] = (cur[i] & cur_used[i]) | (target[i] & !cur_used[i]);
    }
    let diff: Vec<usize> = (0..8)
        .filter(|&i| unused_update[i] & tgt_used[i] != target[i] & tgt_used[i])
        .collect();
    let mut steps: Vec<Words> = Vec::new();
    let mut state = *cur;
    let mut push = |next: Words| {
        if next != state {
            steps.push(next);
            state = next;
        }
    };
    match diff.as_slice() {
        [] => push(*target),
        [critical] => {
            push(unused_update);
            let mut s = unused_update;
            s[*critical] = target[*critical];
            push(s);
            push(*target);
        }
        _ => {
            // Not hitless: invalidate, fill in words 1..7, then publish word 0.
            let mut s = *cur;
            s[0] &= !v_bit;
            push(s);
            s[1..].copy_from_slice(&target[1..]);
            push(s);
            push(*target);
        }
    }
    steps
}

/// STE.V.
pub(crate) const STE_V: u64 = 1;
/// CD.V (bit 31).
pub(crate) const CD_V: u64 = 1 << 31;

/// Bits an STE uses (Non-secure, stage 1 only: the driver never programs stage 2).
pub(crate) fn ste_used(w: &Words) -> Words {
    let ste = Ste::from_words(*w);
    let mut used = [0u64; 8];
    used[0] = STE_V;
    if !ste.is_valid() {
        return used;
    }
    // Config [3:1].
    used[0] |= 0b1110;
    const SHCFG: u64 = 0b11 << 44;
    match ste.config() {
        SteConfig::Bypass => used[1] |= SHCFG,
        SteConfig::S1Trans | SteConfig::Nested => {
            // S1Fmt [5:4], S1ContextPtr [51:6], S1CDMax [63:59].
            used[0] |= (0b11 << 4) | (((1u64 << 46) - 1) << 6) | (0x1F << 59);
            // S1DSS, S1CIR, S1COR, S1CSH [7:0], S1STALLD [27], EATS [29:28], STRW [31:30],
            // PRIVCFG [49:48].
            used[1] |= 0xFF | (1 << 27) | (0b11 << 28) | (0b11 << 30) | (0b11 << 48);
            if ste.word1().s1dss().into_bits() == 1 {
                used[1] |= SHCFG;
            }
        }
        _ => {}
    }
    used
}

/// Bits a CD uses: everything once valid, except the TTB0 walk parameters under EPD0.
pub(crate) fn cd_used(w: &Words) -> Words {
    let cd = Cd::from_words(*w);
    let mut used = [0u64; 8];
    used[0] = CD_V;
    if !cd.is_valid() {
        return used;
    }
    used = [u64::MAX; 8];
    if cd.word0().epd0() {
        // T0SZ, TG0, IR0, OR0, SH0 [13:0]; TTB0 [51:4].
        used[0] &= !0x3FFF;
        used[1] &= !(((1u64 << 48) - 1) << 4);
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdtab::{CdConfig, build_cd, quiet};
    use crate::strtab::{S1Ste, S1dss, abort_ste, bypass_ste, s1_ste};
    use crate::{Asid, Pa};
    use sva_smmuv3_spec::ste::S1Fmt;

    /// Runs a plan like the KUnit harness of Linux: at every sync the entry, restricted to
    /// the bits it uses, must equal the initial or the target entry (or be invalid, which
    /// makes the update non-hitless). Returns (syncs, hitless).
    fn run(cur: &Words, target: &Words, v: u64, used: UsedFn) -> (usize, bool) {
        let plan = update_plan(cur, target, v, used);
        let mut hitless = true;
        for s in &plan {
            if s[0] & v == 0 {
                hitless = false;
                continue;
            }
            let u = used(s);
            let m = |w: &Words| -> Words { core::array::from_fn(|i| w[i] & u[i]) };
            assert!(
                m(s) == m(cur) || m(s) == m(target),
                "intermediate {s:x?} is neither {cur:x?} nor {target:x?}"
            );
        }
        assert_eq!(plan.last().copied().unwrap_or(*cur), *target);
        (plan.len(), hitless)
    }

    fn cdtable(dss: S1dss, ptr: u64) -> Words {
        s1_ste(S1Ste {
            cd_ptr: Pa(ptr),
            fmt: S1Fmt::TwoLevel64K,
            cdmax: 8,
            s1dss: dss,
            ats: true,
            stalld: true,
        })
        .words()
    }

    #[test]
    fn ste_transitions_match_linux_kunit() {
        let abort = abort_ste().words();
        let bypass = bypass_ste().words();
        let s = |a: &Words, b: &Words| run(a, b, STE_V, ste_used);
        assert_eq!(s(&bypass, &abort), (2, true));
        assert_eq!(s(&abort, &bypass), (2, true));
        let cdt = cdtable(S1dss::Ssid0, 0x10_0000);
        assert_eq!(s(&cdt, &abort), (2, true));
        assert_eq!(s(&abort, &cdt), (2, true));
        assert_eq!(s(&cdt, &bypass), (3, true));
        assert_eq!(s(&bypass, &cdt), (3, true));
        // S1DSS SSID0 -> bypass also starts using SHCFG (incoming): one sync for that unused
        // field, one for S1DSS. Back: one.
        let cdt_bypass = cdtable(S1dss::Bypass, 0x10_0000);
        assert_eq!(s(&cdt, &cdt_bypass), (2, true));
        assert_eq!(s(&cdt_bypass, &cdt), (1, true));
        assert_eq!(s(&cdt_bypass, &bypass), (2, true));
        // New CD table pointer and new S1DSS at once: not hitless.
        let other = cdtable(S1dss::Bypass, 0x20_0000);
        assert_eq!(s(&cdt, &other), (3, false));
        // From an invalid entry.
        assert_eq!(s(&[0; 8], &cdt), (2, false));
        // No change: nothing to do.
        assert_eq!(s(&cdt, &cdt), (0, true));
    }

    #[test]
    fn cd_transitions() {
        let f = crate::cdtab::tests::features();
        let c = |asid: u16| build_cd(&CdConfig::new(Pa(0x4000), Asid(asid)), &f).unwrap();
        let a = c(778).words();
        let b = c(1997).words();
        let r = |x: &Words, y: &Words| run(x, y, CD_V, cd_used);
        assert_eq!(r(&[0; 8], &a), (2, false));
        assert_eq!(r(&a, &[0; 8]), (2, false));
        assert_eq!(r(&a, &b), (1, true));
        let q = quiet(&Cd::from_words(a), false).words();
        assert_eq!(r(&a, &q), (1, true));
        assert_eq!(r(&q, &a), (1, true));
        // New table root and ASID at once: not hitless.
        let other = build_cd(&CdConfig::new(Pa(0x8000), Asid(5)), &f)
            .unwrap()
            .words();
        assert_eq!(r(&a, &other), (3, false));
    }
}
