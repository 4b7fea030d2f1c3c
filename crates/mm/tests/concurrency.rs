//! Several CPU threads on one address space at once.

mod common;

use common::*;
use std::sync::Arc;
use sva_mm::{MapFlags, Prot};

#[test]
fn threads_fault_write_and_unmap_concurrently() {
    let sys = Arc::new(system());
    let mm = sys.spawn().unwrap();
    let rw = Prot::READ | Prot::WRITE;
    let va = mm
        .mmap(
            None,
            64 * PAGE,
            rw,
            MapFlags::PRIVATE | MapFlags::NOHUGEPAGE,
        )
        .unwrap();
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let mm = mm.clone();
            std::thread::spawn(move || {
                for round in 0..50u64 {
                    for i in 0..16 {
                        let at = va + (t * 16 + i) * PAGE + round;
                        mm.write(at, &[t as u8 + 1]).unwrap();
                        let mut b = [0u8];
                        mm.read(at, &mut b).unwrap();
                        assert_eq!(b[0], t as u8 + 1);
                    }
                }
            })
        })
        .collect();
    // Meanwhile another thread maps and unmaps elsewhere and reclaims.
    let churn = {
        let mm = mm.clone();
        std::thread::spawn(move || {
            for _ in 0..50 {
                let x = mm.mmap(None, 8 * PAGE, rw, MapFlags::PRIVATE).unwrap();
                mm.fill(x, 9, (8 * PAGE) as usize).unwrap();
                mm.reclaim(x, 8 * PAGE).unwrap();
                mm.munmap(x, 8 * PAGE).unwrap();
            }
        })
    };
    for w in workers {
        w.join().unwrap();
    }
    churn.join().unwrap();
    sys.exit(mm.pid()).unwrap();
    assert_eq!(sys.ram().stats().used_frames, 0);
    assert_eq!(sys.swap_stats().used, 0);
}
