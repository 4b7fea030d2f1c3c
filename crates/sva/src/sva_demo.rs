//! The SVA part of the demo: a process bound to two devices through the SMMUv3 model and
//! its driver, faults served through stall and PRI, invalidation on munmap, exit.

use crate::demo::Checks;
use anyhow::{Context, Result};
use std::io::Write;
use std::sync::{Arc, Mutex};
use sva_addr::StreamId;
use sva_iommu::{DeviceId, SvaFeatures};
use sva_mm::{MapFlags, Prot};
use sva_platform::{Message, Platform, PlatformConfig, TestEndpoint};
use sva_smmuv3::{AtsCompletion, PriResponse};
use sva_smmuv3_driver::{DeviceDesc, FaultPath};

const PRI_DEV: StreamId = StreamId(0x100);
const STALL_DEV: StreamId = StreamId(0x200);

/// Waits for the response to page request group `group`.
fn response(ep: &TestEndpoint, group: u16) -> Option<PriResponse> {
    for _ in 0..5000 {
        for m in ep.take_messages() {
            if let Message::PriResponse {
                prg_index,
                response,
                ..
            } = m
                && prg_index == group
            {
                return Some(response);
            }
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    None
}

pub(crate) fn run<W: Write + ?Sized>(c: &mut Checks<'_, W>) -> Result<()> {
    let p = Platform::new(PlatformConfig {
        irq_thread: true,
        ..PlatformConfig::default()
    })?;
    let sva = p.sva.clone().context("the SVA core")?;
    let f = p.driver.features();
    writeln!(
        c.out,
        "\nSVA on the SMMUv3 model: SSID bits {}, ATS {}, PRI {}, stall {}, HTTU {}/{}, BTM {}, 2-level CD tables {}",
        f.ssid_bits, f.ats, f.pri, f.stall, f.ha, f.hd, f.btm, f.two_level_cd
    )?;
    let pri = p.device(
        PRI_DEV,
        DeviceDesc {
            fault_path: FaultPath::Pri,
            ats: true,
        },
    );
    let stall = p.device(
        STALL_DEV,
        DeviceDesc {
            fault_path: FaultPath::Stall,
            ats: false,
        },
    );
    let iopf = SvaFeatures {
        iopf: true,
        max_pasid: None,
    };
    sva.enable_device(DeviceId(PRI_DEV.raw()), iopf)?;
    sva.enable_device(DeviceId(STALL_DEV.raw()), iopf)?;
    let exits: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = exits.clone();
    sva.set_exit_handler(
        DeviceId(STALL_DEV.raw()),
        Arc::new(move |d, pasid| {
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("device {:#x} told PASID {pasid} exited", d.0));
        }),
    );

    let mm = p.system.spawn()?;
    let buf = mm.mmap(
        None,
        64 << 10,
        Prot::READ | Prot::WRITE,
        MapFlags::PRIVATE | MapFlags::NOHUGEPAGE,
    )?;
    let a = sva.bind(DeviceId(PRI_DEV.raw()), &mm)?;
    let b = sva.bind(DeviceId(STALL_DEV.raw()), &mm)?;
    writeln!(
        c.out,
        "process {} bound to devices {:#x} and {:#x}: PASID {} and {}; buffer {buf} untouched",
        mm.pid(),
        PRI_DEV.raw(),
        STALL_DEV.raw(),
        a.pasid,
        b.pasid
    )?;
    c.check(
        a.pasid == b.pasid,
        "one address space, one PASID on both devices",
    )?;

    // The stall device writes into memory nobody touched: the SMMU stalls the transaction,
    // the core runs the process's fault handler, CMD_RESUME retries it.
    stall.dma_write(Some(b.pasid), buf.raw(), b"written by DMA after a stall")?;
    let mut got = vec![0u8; 28];
    mm.read(buf, &mut got)?;
    c.check(
        got == b"written by DMA after a stall",
        "stall: the device's write landed in the process's memory",
    )?;

    // The PRI device: ATS says no access, it sends a page request, the core answers.
    let page = buf + 0x8000;
    let before = pri.ats(Some(a.pasid), page.raw(), true);
    pri.page_request(Some(a.pasid), page.raw(), 7, true, true);
    let resp = response(&pri, 7);
    let after = pri.ats(Some(a.pasid), page.raw(), true);
    writeln!(
        c.out,
        "PRI: ATS before {before:?}; page request group 7 answered {resp:?}; ATS after {after:?}"
    )?;
    c.check(
        matches!(before, AtsCompletion::NoAccess)
            && resp == Some(PriResponse::Success)
            && matches!(after, AtsCompletion::Success { write: true, .. }),
        "PRI: the untouched page was faulted in and translated",
    )?;
    mm.write(page, b"cpu")?;
    c.check(
        pri.dma_read(Some(a.pasid), page.raw(), 3)? == b"cpu",
        "the device reads what the CPU wrote, through the CPU's own tables",
    )?;

    // munmap: the notifier invalidates the device's ATC (the IOTLB saw the CPU's TLBI).
    let _ = pri.take_messages();
    mm.munmap(page, 4096)?;
    let atc = pri
        .take_messages()
        .into_iter()
        .filter(|m| matches!(m, Message::AtcInvalidate { .. }))
        .count();
    let dma = pri.dma_read(Some(a.pasid), page.raw(), 3);
    writeln!(
        c.out,
        "munmap {page}: {atc} ATC invalidation(s) to the PRI device; DMA now: {}",
        dma.as_ref()
            .err()
            .map_or("succeeded".into(), ToString::to_string)
    )?;
    c.check(
        atc > 0 && dma.is_err(),
        "no stale translation survives munmap",
    )?;

    // Another untouched page, requested ahead of use.
    pri.take_messages();
    pri.page_request(Some(a.pasid), (buf + 0x4000).raw(), 8, true, true);
    c.check(
        response(&pri, 8) == Some(PriResponse::Success),
        "a second page request is served",
    )?;

    p.system.exit(mm.pid())?;
    for line in exits.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        writeln!(c.out, "exit: {line}")?;
    }
    c.check(
        sva.pasid_allocated(a.pasid),
        "after exit the PASID stays allocated while devices are still bound",
    )?;
    sva.unbind(a)?;
    sva.unbind(b)?;
    c.check(
        !sva.pasid_allocated(a.pasid),
        "after the last unbind the PASID is free",
    )?;

    let s = p.smmu.stats();
    let d = p.driver.stats();
    writeln!(
        c.out,
        "SMMU: {} transactions, IOTLB {} hits / {} misses, {} walks, {} page requests, {} stalls, {} syncs",
        s.transactions, s.iotlb_hits, s.iotlb_misses, s.walks, s.page_requests, s.stalls, s.syncs
    )?;
    writeln!(c.out, "      commands {:?}", s.commands)?;
    writeln!(c.out, "      events {:?}", s.events)?;
    let io = sva.iopf_stats();
    writeln!(
        c.out,
        "core: {} page requests; responses {} success, {} invalid, {} failure; driver saw {} page requests",
        io.requests, io.success, io.invalid, io.failure, d.page_requests
    )?;
    Ok(())
}
