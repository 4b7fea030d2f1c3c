//! One request on the ZIP engine: fetch the SQE from the SQ (non-PASID context), check
//! it, read the source and write the destination in the queue's address space (blocking
//! on I/O page faults), write the results back into the SQE slot and post the CQE.
//!
//! Transfers run in pieces of at most [`CHUNK`] bytes, ending at `CHUNK`-aligned
//! addresses; a queue being stopped is noticed between pieces. The output is computed in
//! full before any of it is written, so a request that fails for any reason other than a
//! destination fault writes nothing at the destination, and one whose destination faults
//! has written only inside `[dest_addr, dest_addr + produced)`.

use crate::codec::{self, DecodeError};
use crate::cqe::Cqe;
use crate::qm::{Inner, QueueType, cqe_offset, sqe_offset};
use crate::sqe::{
    Dw3, MAX_REQUEST_SIZE, SQE_SIZE, SQE_TYPE_V2, SQE_TYPE_V3, Sqe, WRITEBACK_RANGES, fault_code,
    status,
};
use std::sync::atomic::{AtomicBool, Ordering};
use sva_pcie::{Dma, DmaCtx, DmaFault};

/// Largest piece of one transfer.
pub const CHUNK: u64 = 64 * 1024;

/// A claimed SQE and where its results go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job {
    pub(crate) qp: u16,
    pub(crate) sq_base: u64,
    pub(crate) sq_idx: u16,
    pub(crate) cq_base: u64,
    pub(crate) cq_idx: u16,
    pub(crate) phase: bool,
    pub(crate) data_ctx: DmaCtx,
    pub(crate) qtype: QueueType,
}

/// How a job ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum JobResult {
    /// The SQE was updated and its CQE written.
    Completed,
    /// A ring access faulted: the queue must stop.
    RingFault(DmaFault),
}

/// What a request produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Completion {
    status: u8,
    consumed: u32,
    produced: u32,
    last_block: bool,
    fault: Option<DmaFault>,
    isize: u32,
    checksum: u32,
}

impl Completion {
    fn status(status: u8) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    fn apply(&self, sqe: &mut Sqe) {
        sqe.consumed = self.consumed;
        sqe.produced = self.produced;
        let mut dw3 = Dw3::new()
            .with_status(self.status)
            .with_last_block(self.last_block);
        sqe.fault_addr = 0;
        if let Some(f) = self.fault {
            dw3.set_fault_reason(fault_code::encode(f.reason));
            dw3.set_fault_write(f.write);
            sqe.fault_addr = f.addr;
        }
        sqe.dw3 = dw3;
        sqe.isize = self.isize;
        sqe.checksum = self.checksum;
    }
}

enum Xfer {
    /// A DMA faulted; `done` counts from the start of the whole buffer.
    Fault(DmaFault),
    /// The queue is being stopped.
    Aborted,
}

/// Splits `[addr, addr + len)` into pieces ending at `CHUNK` boundaries.
fn pieces(addr: u64, len: u64) -> impl Iterator<Item = (u64, u64)> {
    let mut off = 0u64;
    std::iter::from_fn(move || {
        (off < len).then(|| {
            let at = addr.wrapping_add(off);
            let n = (CHUNK - at % CHUNK).min(len - off);
            let piece = (off, n);
            off += n;
            piece
        })
    })
}

fn read_buf(
    dma: &dyn Dma,
    ctx: DmaCtx,
    addr: u64,
    len: u32,
    abort: &AtomicBool,
) -> Result<Vec<u8>, Xfer> {
    let mut buf = vec![0u8; len as usize];
    for (off, n) in pieces(addr, u64::from(len)) {
        if abort.load(Ordering::Acquire) {
            return Err(Xfer::Aborted);
        }
        let piece = &mut buf[off as usize..(off + n) as usize];
        dma.read(ctx, addr + off, piece).map_err(|f| {
            Xfer::Fault(DmaFault {
                done: off + f.done,
                ..f
            })
        })?;
    }
    Ok(buf)
}

fn write_buf(
    dma: &dyn Dma,
    ctx: DmaCtx,
    addr: u64,
    data: &[u8],
    abort: &AtomicBool,
) -> Result<(), Xfer> {
    for (off, n) in pieces(addr, data.len() as u64) {
        if abort.load(Ordering::Acquire) {
            return Err(Xfer::Aborted);
        }
        let piece = &data[off as usize..(off + n) as usize];
        dma.write(ctx, addr + off, piece).map_err(|f| {
            Xfer::Fault(DmaFault {
                done: off + f.done,
                ..f
            })
        })?;
    }
    Ok(())
}

/// Runs the request in `sqe`.
fn execute(dma: &dyn Dma, sqe: &Sqe, job: &Job, abort: &AtomicBool) -> Completion {
    let Some(req) = sqe.req_type() else {
        return Completion::status(status::BAD_REQUEST);
    };
    let sqe_type = sqe.dw7.sqe_type();
    if (sqe_type != SQE_TYPE_V2 && sqe_type != SQE_TYPE_V3)
        || sqe.dw9.buf_type() != 0
        || sqe.dw7.stream_mode()
    {
        return Completion::status(status::BAD_REQUEST);
    }
    let len = sqe.input_data_length;
    let cap = sqe.dest_avail_out.min(MAX_REQUEST_SIZE);
    let (src, dst) = (sqe.source_addr, sqe.dest_addr);
    if len > MAX_REQUEST_SIZE
        || src.checked_add(u64::from(len)).is_none()
        || dst.checked_add(u64::from(cap)).is_none()
    {
        return Completion::status(status::BAD_LENGTH);
    }
    let ctx = job.data_ctx;
    let input = match read_buf(dma, ctx, src, len, abort) {
        Ok(b) => b,
        Err(Xfer::Aborted) => return Completion::status(status::ABORTED),
        Err(Xfer::Fault(f)) => {
            return Completion {
                fault: Some(f),
                ..Completion::status(status::ADDR_FAULT)
            };
        }
    };
    let decompress = req.decompress || job.qtype == QueueType::Decompress;
    let (out, mut done) = if decompress {
        match codec::decompress(req.alg, &input, cap as usize) {
            Ok(o) => {
                let c = Completion {
                    status: status::DECOMP_END,
                    last_block: true,
                    consumed: o.consumed as u32,
                    produced: o.data.len() as u32,
                    isize: o.isize,
                    checksum: o.checksum,
                    fault: None,
                };
                (o.data, c)
            }
            Err(e) => {
                let s = match e {
                    DecodeError::OutputTooSmall => status::OUTPUT_TOO_SMALL,
                    DecodeError::Checksum => status::CRC_ERROR,
                    DecodeError::Data => status::DATA_ERROR,
                };
                return Completion::status(s);
            }
        }
    } else {
        let o = codec::compress(req.alg, &input);
        if o.data.len() > cap as usize {
            return Completion {
                consumed: 0,
                ..Completion::status(status::OUTPUT_TOO_SMALL)
            };
        }
        let s = if o.data.len() > input.len() {
            status::NEGATIVE_COMPRESSION
        } else {
            status::SUCCESS
        };
        let c = Completion {
            status: s,
            consumed: len,
            produced: o.data.len() as u32,
            isize: o.isize,
            checksum: o.checksum,
            last_block: false,
            fault: None,
        };
        (o.data, c)
    };
    match write_buf(dma, ctx, dst, &out, abort) {
        Ok(()) => done,
        Err(Xfer::Aborted) => Completion::status(status::ABORTED),
        Err(Xfer::Fault(f)) => {
            done.status = status::ADDR_FAULT;
            done.produced = f.done as u32;
            done.last_block = false;
            done.fault = Some(f);
            done
        }
    }
}

/// Runs one job to its CQE.
pub(crate) fn run(qm: &Inner, job: &Job, abort: &AtomicBool) -> JobResult {
    let dma = qm.dma();
    let ring = DmaCtx::iova();
    let slot = job.sq_base.wrapping_add(sqe_offset(job.sq_idx));
    let mut raw = [0u8; SQE_SIZE];
    if let Err(f) = dma.read(ring, slot, &mut raw) {
        return JobResult::RingFault(f);
    }
    let mut sqe = Sqe::decode(&raw);
    let c = execute(dma, &sqe, job, abort);
    {
        let mut stats = qm.stats();
        match sqe.req_type() {
            Some(r) => *stats.by_type.entry(r).or_default() += 1,
            None => stats.bad_type += 1,
        }
        *stats.by_status.entry(c.status).or_default() += 1;
        stats.bytes_in += u64::from(c.consumed);
        stats.bytes_out += u64::from(c.produced);
        if c.fault.is_some() {
            stats.dma_faults += 1;
        }
    }
    c.apply(&mut sqe);
    let bytes = sqe.encode();
    for r in WRITEBACK_RANGES {
        if let Err(f) = dma.write(ring, slot.wrapping_add(r.start as u64), &bytes[r]) {
            return JobResult::RingFault(f);
        }
    }
    let cqe = Cqe::new(sqe.tag() as u16, job.sq_idx, job.qp, job.phase);
    let at = job.cq_base.wrapping_add(cqe_offset(job.cq_idx));
    if let Err(f) = dma.write(ring, at, &cqe.encode()) {
        return JobResult::RingFault(f);
    }
    JobResult::Completed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_end_on_chunk_boundaries() {
        let v: Vec<_> = pieces(CHUNK - 10, 20 + CHUNK).collect();
        assert_eq!(v, vec![(0, 10), (10, CHUNK), (10 + CHUNK, 10)]);
        assert_eq!(pieces(0, 0).count(), 0);
    }
}
