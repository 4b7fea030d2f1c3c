//! What an engine does with one descriptor: validation, the operations over [`Dma`], batch
//! processing and completion-record delivery. Work-queue bookkeeping (drain ordering,
//! aborts, software errors) is the device's, reached through [`Hooks`].

use crate::counters::CounterSet;
use crate::{CompletionRecord, DescFlags, Descriptor, Opcode, Status};
use sva_addr::Pasid;
use sva_pcie::{Dma, DmaCtx, DmaFault, FaultReason};

/// The page size operations split their accesses on, so that a fault ends a transfer at a
/// page boundary and the rest of the chunk is untouched.
pub(crate) const PAGE: u64 = 4096;

/// The largest piece an operation moves between two checks for an abort.
const COPY_CHUNK: u64 = 4 * PAGE;

/// Device limits checked by validation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_xfer_size: u32,
    pub(crate) max_batch_size: u32,
}

/// An error the engine reports to the software error register.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SwErrReport {
    pub(crate) error: u8,
    pub(crate) opcode: u8,
    pub(crate) batch_idx: Option<u16>,
    pub(crate) fault_write: bool,
    pub(crate) privileged: bool,
    pub(crate) address: u64,
    pub(crate) invalid_flags: u32,
}

/// What the device provides to a running descriptor.
pub(crate) trait Hooks {
    /// Whether the work this descriptor belongs to is being aborted.
    fn aborted(&self) -> bool;
    /// Records a software error.
    fn swerr(&self, report: SwErrReport);
    /// Keeps a completion record that could not be written.
    fn cr_fault(&self, address: u64, record: CompletionRecord);
}

/// The descriptor was aborted: it stops touching memory and writes no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Aborted;

type Step = Result<CompletionRecord, Aborted>;

/// One descriptor's execution context.
pub(crate) struct Exec<'a> {
    pub(crate) dma: &'a dyn Dma,
    pub(crate) limits: Limits,
    pub(crate) counters: &'a CounterSet,
    pub(crate) hooks: &'a dyn Hooks,
    /// The PASID the descriptor runs in (the WQ's, or the ENQCMD submitter's).
    pub(crate) pasid: Option<Pasid>,
}

fn record(status: Status) -> CompletionRecord {
    CompletionRecord::with_status(status)
}

fn page_rem(addr: u64) -> u64 {
    PAGE - addr % PAGE
}

/// Whether `[a, a + len)` and `[b, b + len)` overlap (`len` > 0, no wrap: validated).
fn overlaps(a: u64, b: u64, len: u64) -> bool {
    a < b + len && b < a + len
}

/// The byte `off` of a buffer filled with the little-endian `pattern`.
fn pattern_byte(pattern: u64, off: u64) -> u8 {
    pattern.to_le_bytes()[(off % 8) as usize]
}

/// The bytes a DMA of `len` bytes moved: all of them, or those before the fault.
fn moved(res: &Result<(), DmaFault>, len: usize) -> u64 {
    match res {
        Ok(()) => len as u64,
        Err(f) => f.done,
    }
}

impl Exec<'_> {
    fn ctx(&self, bof: bool) -> DmaCtx {
        DmaCtx {
            pasid: self.pasid,
            block_on_fault: bof,
        }
    }

    fn check_abort(&self) -> Result<(), Aborted> {
        if self.hooks.aborted() {
            Err(Aborted)
        } else {
            Ok(())
        }
    }

    /// The record of an operation that stopped on `f` after `done` bytes.
    fn fault(&self, f: &DmaFault, bof: bool, done: u64) -> CompletionRecord {
        CounterSet::add(&self.counters.page_faults, 1);
        let status = match f.reason {
            FaultReason::NotPresent if !bof => Status::PageFaultNoBof,
            FaultReason::Aborted | FaultReason::Disabled | FaultReason::AtsRejected => {
                Status::TranslationFail
            }
            FaultReason::Memory => Status::HwErr1,
            _ => Status::PageFaultIr,
        };
        let mut r = record(status);
        if matches!(status, Status::PageFaultNoBof | Status::PageFaultIr) {
            r.status.set_write(f.write);
        }
        r.fault_info.set_write(f.write);
        r.fault_addr = f.addr;
        r.bytes_completed = done as u32;
        r
    }

    fn read_counted(&self, ctx: DmaCtx, addr: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        let res = self.dma.read(ctx, addr, buf);
        CounterSet::add(&self.counters.bytes_read, moved(&res, buf.len()));
        res
    }

    fn write_counted(&self, ctx: DmaCtx, addr: u64, data: &[u8]) -> Result<(), DmaFault> {
        let res = self.dma.write(ctx, addr, data);
        CounterSet::add(&self.counters.bytes_written, moved(&res, data.len()));
        res
    }

    /// Checks a descriptor the way the hardware does before executing it.
    pub(crate) fn validate(
        &self,
        d: &Descriptor,
        in_batch: bool,
    ) -> Result<Opcode, CompletionRecord> {
        let Some(op) = d.op() else {
            return Err(record(Status::BadOpcode));
        };
        if in_batch && matches!(op, Opcode::Batch | Opcode::Drain) {
            return Err(record(Status::BadOpcode));
        }
        let mut bad_flags = d.flags.unsupported();
        if d.flags.rcr() && !d.flags.crav() {
            bad_flags |= DescFlags::RCR;
        }
        if bad_flags != 0 {
            let mut r = record(Status::InvalidFlags);
            r.set_invalid_flags(bad_flags);
            return Err(r);
        }
        if d.flags.crav()
            && !d
                .completion_addr
                .is_multiple_of(crate::COMPLETION_RECORD_SIZE as u64)
        {
            return Err(record(Status::CraAlign));
        }
        let os = &d.op_specific;
        let zero = |b: &[u8]| b.iter().all(|&x| x == 0);
        let reserved_ok = d.reserved0 == 0
            && d.reserved1 == 0
            && match op {
                Opcode::Noop | Opcode::Drain => {
                    d.src == 0 && d.dst == 0 && d.xfer_size == 0 && zero(os)
                }
                Opcode::Memmove | Opcode::Memfill => zero(os),
                Opcode::Compare | Opcode::CompareValue => zero(&os[1..]),
                Opcode::Dualcast => zero(&os[8..]),
                Opcode::CrcGen => d.dst == 0 && zero(&os[4..]),
                Opcode::Batch => d.dst == 0 && zero(os),
            };
        if !reserved_ok {
            return Err(record(Status::NonZeroReserved));
        }
        let len = u64::from(d.xfer_size);
        let fits = |a: u64| a.checked_add(len).is_some();
        match op {
            Opcode::Noop | Opcode::Drain => {}
            Opcode::Batch => {
                let list_len = len * crate::DESCRIPTOR_SIZE as u64;
                if d.xfer_size < 2
                    || d.xfer_size > self.limits.max_batch_size
                    || d.src.checked_add(list_len).is_none()
                {
                    return Err(record(Status::DescCountErange));
                }
                if !d.src.is_multiple_of(crate::DESCRIPTOR_SIZE as u64) {
                    return Err(record(Status::DescListAlign));
                }
            }
            _ => {
                let addresses_fit = match op {
                    Opcode::Memmove | Opcode::Compare | Opcode::Dualcast => {
                        fits(d.src) && fits(d.dst)
                    }
                    Opcode::Memfill => fits(d.dst),
                    _ => fits(d.src),
                } && (op != Opcode::Dualcast || fits(d.dst2()));
                if d.xfer_size == 0 || d.xfer_size > self.limits.max_xfer_size || !addresses_fit {
                    return Err(record(Status::XferErange));
                }
            }
        }
        if op == Opcode::Dualcast {
            if (d.dst ^ d.dst2()) & (PAGE - 1) != 0 {
                return Err(record(Status::DcastErr));
            }
            if overlaps(d.src, d.dst, len)
                || overlaps(d.src, d.dst2(), len)
                || overlaps(d.dst, d.dst2(), len)
            {
                return Err(record(Status::OverlapBuffers));
            }
        }
        Ok(op)
    }

    /// Validates and executes a descriptor (a drain has already waited); `batch_idx` is its
    /// index when it is a batch member. Returns the completion record, not yet delivered.
    pub(crate) fn execute(&self, d: &Descriptor, batch_idx: Option<u16>) -> Step {
        self.counters.opcode(d.opcode);
        let op = match self.validate(d, batch_idx.is_some()) {
            Ok(op) => op,
            Err(r) => return Ok(r),
        };
        match op {
            Opcode::Noop | Opcode::Drain => Ok(record(Status::Success)),
            Opcode::Memmove => self.memmove(d),
            Opcode::Memfill => self.memfill(d),
            Opcode::Compare => self.compare(d),
            Opcode::CompareValue => self.compare_pattern(d),
            Opcode::Dualcast => self.dualcast(d),
            Opcode::CrcGen => self.crc(d),
            Opcode::Batch => self.batch(d),
        }
    }

    fn success(len: u64) -> CompletionRecord {
        let mut r = record(Status::Success);
        r.bytes_completed = len as u32;
        r
    }

    fn memmove(&self, d: &Descriptor) -> Step {
        let (src, dst, len, bof) = (d.src, d.dst, u64::from(d.xfer_size), d.flags.bof());
        let ctx = self.ctx(bof);
        // A destination that starts inside the source must be copied from the end, or the
        // copy would overwrite source bytes before reading them.
        let descending = dst > src && dst < src + len;
        if !descending {
            let mut off = 0;
            while off < len {
                self.check_abort()?;
                let n = (len - off).min(COPY_CHUNK);
                if let Err(f) = self.dma.copy(ctx, src + off, dst + off, n) {
                    CounterSet::add(&self.counters.bytes_read, f.done);
                    CounterSet::add(&self.counters.bytes_written, f.done);
                    return Ok(self.fault(&f, bof, off + f.done));
                }
                CounterSet::add(&self.counters.bytes_read, n);
                CounterSet::add(&self.counters.bytes_written, n);
                off += n;
            }
            return Ok(Self::success(len));
        }
        // Descending: `end` is the offset below which nothing is copied yet; each piece lies
        // in one source page and one destination page, so a fault leaves it untouched.
        let mut buf = vec![0u8; PAGE as usize];
        let mut end = len;
        while end > 0 {
            self.check_abort()?;
            let last_s = src + end - 1;
            let last_d = dst + end - 1;
            let start = (end.saturating_sub(PAGE))
                .max((last_s - last_s % PAGE).saturating_sub(src))
                .max((last_d - last_d % PAGE).saturating_sub(dst));
            let piece = &mut buf[..(end - start) as usize];
            let res = self
                .read_counted(ctx, src + start, piece)
                .and_then(|()| self.write_counted(ctx, dst + start, piece));
            if let Err(f) = res {
                let mut r = self.fault(&f, bof, len - end);
                r.result = 1;
                return Ok(r);
            }
            end = start;
        }
        let mut r = Self::success(len);
        r.result = 1;
        Ok(r)
    }

    fn memfill(&self, d: &Descriptor) -> Step {
        let (pattern, dst, len, bof) = (d.src, d.dst, u64::from(d.xfer_size), d.flags.bof());
        let ctx = self.ctx(bof);
        let mut buf = vec![0u8; PAGE as usize];
        let mut off = 0;
        while off < len {
            self.check_abort()?;
            let n = (len - off).min(page_rem(dst + off));
            let piece = &mut buf[..n as usize];
            for (i, b) in piece.iter_mut().enumerate() {
                *b = pattern_byte(pattern, off + i as u64);
            }
            if let Err(f) = self.write_counted(ctx, dst + off, piece) {
                return Ok(self.fault(&f, bof, off + f.done));
            }
            off += n;
        }
        Ok(Self::success(len))
    }

    /// The record of a comparison that found its first difference at `at` (`None`: equal).
    fn compared(d: &Descriptor, len: u64, at: Option<u64>) -> CompletionRecord {
        let result = u8::from(at.is_some());
        let status = if d.flags.cr() && result != d.expected_res() {
            Status::SuccessPred
        } else {
            Status::Success
        };
        let mut r = record(status);
        r.result = result;
        r.bytes_completed = at.unwrap_or(len) as u32;
        r
    }

    fn compare(&self, d: &Descriptor) -> Step {
        let (a, b, len, bof) = (d.src, d.dst, u64::from(d.xfer_size), d.flags.bof());
        let ctx = self.ctx(bof);
        let mut buf_a = vec![0u8; PAGE as usize];
        let mut buf_b = vec![0u8; PAGE as usize];
        let mut off = 0;
        while off < len {
            self.check_abort()?;
            let n = (len - off).min(page_rem(a + off)).min(page_rem(b + off)) as usize;
            let (pa, pb) = (&mut buf_a[..n], &mut buf_b[..n]);
            let res = self
                .read_counted(ctx, a + off, pa)
                .and_then(|()| self.read_counted(ctx, b + off, pb));
            if let Err(f) = res {
                return Ok(self.fault(&f, bof, off));
            }
            if let Some(i) = pa.iter().zip(pb.iter()).position(|(x, y)| x != y) {
                return Ok(Self::compared(d, len, Some(off + i as u64)));
            }
            off += n as u64;
        }
        Ok(Self::compared(d, len, None))
    }

    fn compare_pattern(&self, d: &Descriptor) -> Step {
        let (src, pattern, len, bof) = (d.src, d.dst, u64::from(d.xfer_size), d.flags.bof());
        let ctx = self.ctx(bof);
        let mut buf = vec![0u8; PAGE as usize];
        let mut off = 0;
        while off < len {
            self.check_abort()?;
            let n = (len - off).min(page_rem(src + off)) as usize;
            let piece = &mut buf[..n];
            if let Err(f) = self.read_counted(ctx, src + off, piece) {
                return Ok(self.fault(&f, bof, off));
            }
            let diff = piece
                .iter()
                .enumerate()
                .position(|(i, &x)| x != pattern_byte(pattern, off + i as u64));
            if let Some(i) = diff {
                return Ok(Self::compared(d, len, Some(off + i as u64)));
            }
            off += n as u64;
        }
        Ok(Self::compared(d, len, None))
    }

    fn dualcast(&self, d: &Descriptor) -> Step {
        let (src, dst1, dst2) = (d.src, d.dst, d.dst2());
        let (len, bof) = (u64::from(d.xfer_size), d.flags.bof());
        let ctx = self.ctx(bof);
        let mut buf = vec![0u8; PAGE as usize];
        let mut off = 0;
        while off < len {
            self.check_abort()?;
            // dst1 and dst2 share bits [11:0], so one bound serves both.
            let n = (len - off)
                .min(page_rem(src + off))
                .min(page_rem(dst1 + off)) as usize;
            let piece = &mut buf[..n];
            let res = self
                .read_counted(ctx, src + off, piece)
                .and_then(|()| self.write_counted(ctx, dst1 + off, piece))
                .and_then(|()| self.write_counted(ctx, dst2 + off, piece));
            if let Err(f) = res {
                return Ok(self.fault(&f, bof, off));
            }
            off += n as u64;
        }
        Ok(Self::success(len))
    }

    fn crc(&self, d: &Descriptor) -> Step {
        let (src, len, bof) = (d.src, u64::from(d.xfer_size), d.flags.bof());
        let ctx = self.ctx(bof);
        let mut crc = d.crc_seed();
        let mut buf = vec![0u8; PAGE as usize];
        let mut off = 0;
        while off < len {
            self.check_abort()?;
            let n = (len - off).min(page_rem(src + off)) as usize;
            let piece = &mut buf[..n];
            if let Err(f) = self.read_counted(ctx, src + off, piece) {
                // The bytes read before the fault are in the CRC: software resumes with the
                // CRC value as the seed.
                let done = (f.done as usize).min(n);
                crc = crc32c::crc32c_append(crc, &piece[..done]);
                let mut r = self.fault(&f, bof, off + done as u64);
                r.set_crc_val(u64::from(crc));
                return Ok(r);
            }
            crc = crc32c::crc32c_append(crc, piece);
            off += n as u64;
        }
        let mut r = Self::success(len);
        r.set_crc_val(u64::from(crc));
        Ok(r)
    }

    fn batch(&self, d: &Descriptor) -> Step {
        let bof = d.flags.bof();
        let ctx = self.ctx(bof);
        let count = d.xfer_size;
        // `failed`: a member did not complete (or its record was lost); `clean`: every member
        // so far completed with plain Success (what a FENCE needs).
        let mut failed = false;
        let mut clean = true;
        for i in 0..count {
            self.check_abort()?;
            let mut raw = [0u8; crate::DESCRIPTOR_SIZE];
            let at = d.src + u64::from(i) * crate::DESCRIPTOR_SIZE as u64;
            if let Err(f) = self.dma.read(ctx, at, &mut raw) {
                let mut r = self.fault(&f, bof, u64::from(i));
                if r.status() == Some(Status::PageFaultNoBof) {
                    r.status = r.status.with_code(Status::BatchPageFault.code());
                }
                r.fault_info.set_desc_list(true);
                r.result = u8::from(failed);
                return Ok(r);
            }
            let member = Descriptor::decode(&raw);
            if member.flags.fence() && !clean {
                // This member and the rest are abandoned: no records for them.
                let mut r = record(Status::BatchFail);
                r.result = 1;
                r.bytes_completed = i;
                return Ok(r);
            }
            let rec = self.execute(&member, Some(i as u16))?;
            self.check_abort()?;
            if !self.deliver(&member, &rec, Some(i as u16)) {
                failed = true;
            }
            clean &= rec.status() == Some(Status::Success);
            failed |= !rec.is_success();
        }
        let mut r = record(if failed {
            Status::BatchFail
        } else {
            Status::Success
        });
        r.result = u8::from(failed);
        r.bytes_completed = count;
        Ok(r)
    }

    /// Writes the completion record as the descriptor asks: at its completion address, in
    /// the descriptor's PASID, blocking on faults, the status byte last. Errors that cannot
    /// go to a record go to SWERR. Returns false when the record was lost (CRA_XLAT).
    pub(crate) fn deliver(
        &self,
        d: &Descriptor,
        rec: &CompletionRecord,
        batch_idx: Option<u16>,
    ) -> bool {
        self.counters.status(rec.code());
        if d.flags.rci() {
            CounterSet::add(&self.counters.interrupts, 1);
        }
        let error = !rec.is_success();
        let report = SwErrReport {
            error: rec.code(),
            opcode: d.opcode,
            batch_idx,
            fault_write: rec.fault_on_write(),
            privileged: d.privileged,
            address: rec.fault_addr,
            invalid_flags: rec.invalid_flags(),
        };
        if rec.status() == Some(Status::CraAlign) || !d.flags.crav() {
            if error {
                let address = if d.flags.crav() {
                    d.completion_addr
                } else {
                    rec.fault_addr
                };
                self.hooks.swerr(SwErrReport { address, ..report });
            }
            return true;
        }
        if !d.flags.rcr() && !error {
            return true;
        }
        let bytes = rec.encode();
        let ctx = self.ctx(true);
        // An unaligned record (reported for an earlier error) may end past the top of the
        // address space: it cannot be written.
        let res = match d.completion_addr.checked_add(1) {
            Some(rest) => self
                .dma
                .write(ctx, rest, &bytes[1..])
                .and_then(|()| self.dma.write(ctx, d.completion_addr, &bytes[..1])),
            None => Err(DmaFault {
                addr: d.completion_addr,
                done: 0,
                write: true,
                reason: FaultReason::Memory,
            }),
        };
        match res {
            Ok(()) => true,
            Err(_) => {
                CounterSet::add(&self.counters.cr_faults, 1);
                self.hooks.swerr(SwErrReport {
                    error: Status::CraXlat.code(),
                    fault_write: true,
                    address: d.completion_addr,
                    ..report
                });
                self.hooks.cr_fault(d.completion_addr, *rec);
                false
            }
        }
    }
}
