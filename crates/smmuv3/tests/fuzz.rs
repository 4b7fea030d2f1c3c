//! Random register writes, random memory and random traffic never panic or hang.

mod common;

use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use sva_physmem::PhysMemory;
use sva_smmuv3::{
    AccessKind, Asid, AtsRequest, BroadcastTlbi, IrqLine, Mmio, Pasid, SmmuConfig, StreamId,
    Transaction,
};
use sva_smmuv3_spec::pri::PageRequest;
use sva_smmuv3_spec::regs::Register;
use sva_vmsa::{Pa, Va};

#[derive(Debug, Clone)]
enum Op {
    W32(u64, u32),
    W64(u64, u64),
    R32(u64),
    Mem(u64, u64),
    Translate(u32, Option<u32>, u64, u8, bool, bool),
    Ats(u32, Option<u32>, u64, bool),
    PageReq(u32, u64, u64),
    Btm(u8, u16, u64),
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => proptest::sample::select(Register::ALL.to_vec()).prop_map(|r| u64::from(r.offset())),
        1 => 0u64..0x2_1000,
        1 => any::<u64>(),
    ]
}

fn op(tables: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (offset(), any::<u32>()).prop_map(|(o, v)| Op::W32(o, v)),
        1 => (offset(), any::<u64>()).prop_map(|(o, v)| Op::W64(o, v)),
        1 => offset().prop_map(Op::R32),
        3 => (0u64..0x4_0000, any::<u64>()).prop_map(move |(o, v)| Op::Mem(tables + (o & !7), v)),
        3 => (0u32..300, proptest::option::of(0u32..(1 << 20)), any::<u64>(), 0u8..3, any::<bool>(), any::<bool>())
            .prop_map(|(s, ss, a, k, p, t)| Op::Translate(s, ss, a, k, p, t)),
        1 => (0u32..300, proptest::option::of(0u32..(1 << 20)), any::<u64>(), any::<bool>())
            .prop_map(|(s, ss, a, nw)| Op::Ats(s, ss, a, nw)),
        1 => (0u32..300, any::<u64>(), any::<u64>()).prop_map(|(s, w0, w1)| Op::PageReq(s, w0, w1)),
        1 => (0u8..3, any::<u16>(), any::<u64>()).prop_map(|(k, a, v)| Op::Btm(k, a, v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_mmio_and_memory_never_panic(
        ops in proptest::collection::vec(op(0), 1..150),
        garbage in proptest::collection::vec(any::<u64>(), 256),
    ) {
        let mut r = rig_with(SmmuConfig { iotlb_entries: 16, config_cache_entries: 8, ..SmmuConfig::default() });
        let ep = Arc::new(MockEp::default());
        for sid in 0..4 {
            r.smmu.attach_endpoint(StreamId(sid), &ep);
        }
        let weak = Arc::downgrade(&r.smmu);
        // A careless driver: acknowledges errors without fixing the command (a livelock on
        // hardware too), so it gives up after a while.
        let acks = std::sync::atomic::AtomicU32::new(0);
        r.smmu.set_irq_handler(IrqLine::GlobalError, Arc::new(move |_| {
            if acks.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 100 {
                return;
            }
            if let Some(s) = weak.upgrade() {
                let g = s.read32(0x60);
                s.write32(0x64, g);
            }
        }));
        // Garbage STEs, CDs and commands.
        for (i, &w) in garbage.iter().enumerate() {
            let _ = r.ram.store_u64(Pa(r.strtab + 8 * i as u64), w);
        }
        let pt = r.simple_stream(1, 1);
        r.map(&pt, 0x1000, 0x10_0000, 0x1000, rw());
        let base = r.strtab;
        for op in ops {
            match op {
                Op::W32(o, v) => r.smmu.write32(o, v),
                Op::W64(o, v) => r.smmu.write64(o & !7, v),
                Op::R32(o) => { let _ = r.smmu.read32(o); let _ = r.smmu.read64(o & !7); }
                Op::Mem(a, v) => { let _ = r.ram.store_u64(Pa(base + (a & 0x3_FFF8)), v); }
                Op::Translate(sid, ssid, addr, kind, privileged, translated) => {
                    let access = [AccessKind::Read, AccessKind::Write, AccessKind::Execute][usize::from(kind)];
                    let _ = r.smmu.translate(&Transaction {
                        sid: StreamId(sid), ssid: ssid.map(Pasid), addr, access, privileged, translated,
                    });
                }
                Op::Ats(sid, ssid, addr, no_write) => {
                    let _ = r.smmu.ats_translate(&AtsRequest {
                        sid: StreamId(sid), ssid: ssid.map(Pasid), addr, no_write, exec: true, privileged: false,
                    });
                }
                Op::PageReq(sid, w0, w1) => {
                    if let Ok(mut req) = PageRequest::decode([w0, w1]) {
                        req.stream_id = StreamId(sid);
                        r.smmu.page_request(&req);
                    }
                }
                Op::Btm(k, asid, va) => r.smmu.broadcast_tlbi(match k {
                    0 => BroadcastTlbi::All,
                    1 => BroadcastTlbi::Asid(Asid(asid)),
                    _ => BroadcastTlbi::Va { asid: Asid(asid), va, size: va >> 40, leaf_only: false },
                }),
            }
        }
        // Garbage in the command queue.
        for i in 0..32u64 {
            let _ = r.ram.store_u64(Pa(r.cmdq + 8 * i), garbage[i as usize].rotate_left(7));
        }
        r.prod = r.smmu.read32(0x98) & 0xFFFFF;
        r.sync();
        let _ = r.smmu.stats();
        let _ = Va(0);
    }
}
