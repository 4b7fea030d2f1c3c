use crate::{Error, FRAME_SHIFT, FRAME_SIZE, MAX_RAM_SIZE, PhysMemory, Result};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use sva_addr::Pa;

const WORDS_PER_FRAME: usize = (FRAME_SIZE / 8) as usize;
/// Frames per leaf node: a leaf covers 2 MiB.
const LEAF_SHIFT: u32 = 9;
/// Leaves per middle node: a middle node covers 1 GiB.
const MID_SHIFT: u32 = 9;

type Frame = [AtomicU64; WORDS_PER_FRAME];
type Slots<T> = Box<[OnceLock<Box<T>>]>;

fn slots<T>(n: usize) -> Slots<T> {
    (0..n).map(|_| OnceLock::new()).collect()
}

/// Sparse simulated RAM: a three-level radix tree (1 GiB / 2 MiB / 4 KiB) whose frames are
/// allocated on first write. Reads of untouched memory return zeroes without committing
/// anything, so 1 TiB of RAM costs a few MiB of host memory until it is used.
///
/// Each frame is an array of `AtomicU64`, which gives real 64-bit atomics for descriptors and
/// race-free byte access without `unsafe`. Frames are never returned to the host once touched
/// (zeroing a frame keeps its storage): host usage is bounded by the peak of touched RAM.
pub struct SparseRam {
    size: u64,
    top: Slots<Slots<Slots<Frame>>>,
    committed: AtomicU64,
}

impl core::fmt::Debug for SparseRam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SparseRam")
            .field("size", &self.size)
            .field("committed_frames", &self.committed_frames())
            .finish()
    }
}

impl SparseRam {
    /// RAM of `size` bytes (a non-zero multiple of 4 KiB, at most 2^48).
    pub fn new(size: u64) -> Result<Self> {
        if size == 0 || !size.is_multiple_of(FRAME_SIZE) || size > MAX_RAM_SIZE {
            return Err(Error::BadRamSize(size));
        }
        let frames = size >> FRAME_SHIFT;
        let mids = frames.div_ceil(1 << (LEAF_SHIFT + MID_SHIFT));
        Ok(Self {
            size,
            top: slots(mids as usize),
            committed: AtomicU64::new(0),
        })
    }

    /// Number of 4 KiB frames that hold host memory (were written at least once).
    pub fn committed_frames(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    fn indices(frame: u64) -> (usize, usize, usize) {
        let leaf = (frame & ((1 << LEAF_SHIFT) - 1)) as usize;
        let mid = ((frame >> LEAF_SHIFT) & ((1 << MID_SHIFT) - 1)) as usize;
        let top = (frame >> (LEAF_SHIFT + MID_SHIFT)) as usize;
        (top, mid, leaf)
    }

    /// The frame holding `frame`, if it was ever written.
    fn frame(&self, frame: u64) -> Option<&Frame> {
        let (t, m, l) = Self::indices(frame);
        let mid = self.top[t].get()?;
        let leaf = mid[m].get()?;
        leaf[l].get().map(|b| &**b)
    }

    /// The frame holding `frame`, materialised (zeroed) if needed.
    fn frame_mut(&self, frame: u64) -> &Frame {
        let (t, m, l) = Self::indices(frame);
        let mid = self.top[t].get_or_init(|| Box::new(slots(1 << MID_SHIFT)));
        let leaf = mid[m].get_or_init(|| Box::new(slots(1 << LEAF_SHIFT)));
        leaf[l].get_or_init(|| {
            self.committed.fetch_add(1, Ordering::Relaxed);
            Box::new(core::array::from_fn(|_| AtomicU64::new(0)))
        })
    }

    /// Splits `[pa, pa + len)` into per-frame pieces: (frame number, offset in frame, length).
    fn pieces(pa: Pa, len: u64) -> impl Iterator<Item = (u64, usize, usize)> {
        let mut addr = pa.raw();
        let end = addr + len;
        core::iter::from_fn(move || {
            if addr >= end {
                return None;
            }
            let off = addr & (FRAME_SIZE - 1);
            let n = (FRAME_SIZE - off).min(end - addr);
            let piece = (addr >> FRAME_SHIFT, off as usize, n as usize);
            addr += n;
            Some(piece)
        })
    }
}

/// Splits a byte range `[off, off + len)` of a frame into a head (bytes before the first
/// word boundary), whole words, and a tail: (head length, first whole word, word count).
fn word_span(off: usize, len: usize) -> (usize, usize, usize) {
    let head = ((8 - off % 8) % 8).min(len);
    let words = (len - head) / 8;
    (head, (off + head) / 8, words)
}

/// Copies bytes `[off, off + out.len())` of a frame into `out`.
fn read_frame(frame: &Frame, off: usize, out: &mut [u8]) {
    let (head, first, words) = word_span(off, out.len());
    read_partial(frame, off, &mut out[..head]);
    let body = &mut out[head..head + words * 8];
    for (chunk, cell) in body.chunks_exact_mut(8).zip(&frame[first..first + words]) {
        chunk.copy_from_slice(&cell.load(Ordering::Relaxed).to_le_bytes());
    }
    let done = head + words * 8;
    read_partial(frame, off + done, &mut out[done..]);
}

/// Reads up to one word's worth of bytes that lie within a single word.
fn read_partial(frame: &Frame, off: usize, out: &mut [u8]) {
    if out.is_empty() {
        return;
    }
    let word = frame[off / 8].load(Ordering::Relaxed).to_le_bytes();
    let start = off % 8;
    out.copy_from_slice(&word[start..start + out.len()]);
}

/// Writes `data` at byte `off` of a frame. Whole words are stored; partial words are merged
/// with a compare-exchange loop so concurrent writers of the other bytes are not lost.
fn write_frame(frame: &Frame, off: usize, data: &[u8]) {
    let (head, first, words) = word_span(off, data.len());
    write_partial(frame, off, &data[..head]);
    let body = &data[head..head + words * 8];
    for (chunk, cell) in body.chunks_exact(8).zip(&frame[first..first + words]) {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of 8"));
        cell.store(word, Ordering::Relaxed);
    }
    let done = head + words * 8;
    write_partial(frame, off + done, &data[done..]);
}

/// Merges up to one word's worth of bytes that lie within a single word.
fn write_partial(frame: &Frame, off: usize, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let start = off % 8;
    let cell = &frame[off / 8];
    let mut current = cell.load(Ordering::Relaxed);
    loop {
        let mut bytes = current.to_le_bytes();
        bytes[start..start + data.len()].copy_from_slice(data);
        match cell.compare_exchange_weak(
            current,
            u64::from_le_bytes(bytes),
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}

impl PhysMemory for SparseRam {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, pa: Pa, buf: &mut [u8]) -> Result<()> {
        self.check_range(pa, buf.len() as u64)?;
        let mut pos = 0;
        for (frame, off, n) in Self::pieces(pa, buf.len() as u64) {
            let out = &mut buf[pos..pos + n];
            match self.frame(frame) {
                Some(f) => read_frame(f, off, out),
                None => out.fill(0),
            }
            pos += n;
        }
        Ok(())
    }

    fn write(&self, pa: Pa, buf: &[u8]) -> Result<()> {
        self.check_range(pa, buf.len() as u64)?;
        let mut pos = 0;
        for (frame, off, n) in Self::pieces(pa, buf.len() as u64) {
            write_frame(self.frame_mut(frame), off, &buf[pos..pos + n]);
            pos += n;
        }
        Ok(())
    }

    fn load_u64(&self, pa: Pa) -> Result<u64> {
        self.check_word(pa)?;
        let word = (pa.raw() & (FRAME_SIZE - 1)) as usize / 8;
        Ok(self
            .frame(pa.raw() >> FRAME_SHIFT)
            .map_or(0, |f| f[word].load(Ordering::Acquire)))
    }

    fn store_u64(&self, pa: Pa, val: u64) -> Result<()> {
        self.check_word(pa)?;
        let word = (pa.raw() & (FRAME_SIZE - 1)) as usize / 8;
        self.frame_mut(pa.raw() >> FRAME_SHIFT)[word].store(val, Ordering::Release);
        Ok(())
    }

    fn compare_exchange_u64(
        &self,
        pa: Pa,
        current: u64,
        new: u64,
    ) -> Result<core::result::Result<u64, u64>> {
        self.check_word(pa)?;
        let word = (pa.raw() & (FRAME_SIZE - 1)) as usize / 8;
        Ok(
            self.frame_mut(pa.raw() >> FRAME_SHIFT)[word].compare_exchange(
                current,
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ),
        )
    }

    /// Word to word when source and destination share their alignment within a word (the
    /// common case: page-aligned DMA), one pass with no staging buffer; byte-wise through
    /// a buffer otherwise.
    fn copy(&self, src: Pa, dst: Pa, len: u64) -> Result<()> {
        self.check_range(src, len)?;
        self.check_range(dst, len)?;
        if src.raw() % 8 != dst.raw() % 8 {
            let mut buf = [0u8; FRAME_SIZE as usize];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(FRAME_SIZE) as usize;
                self.read(src + done, &mut buf[..n])?;
                self.write(dst + done, &buf[..n])?;
                done += n as u64;
            }
            return Ok(());
        }
        let mut done = 0;
        while done < len {
            let (s, d) = (src + done, dst + done);
            let s_off = (s.raw() & (FRAME_SIZE - 1)) as usize;
            let d_off = (d.raw() & (FRAME_SIZE - 1)) as usize;
            let n = (FRAME_SIZE as usize - s_off)
                .min(FRAME_SIZE as usize - d_off)
                .min((len - done) as usize);
            let to = self.frame_mut(d.raw() >> FRAME_SHIFT);
            match self.frame(s.raw() >> FRAME_SHIFT) {
                None => write_frame(to, d_off, &[0u8; FRAME_SIZE as usize][..n]),
                Some(from) => {
                    let (head, first, words) = word_span(s_off, n);
                    let mut part = [0u8; 8];
                    read_partial(from, s_off, &mut part[..head]);
                    write_partial(to, d_off, &part[..head]);
                    let dst_first = (d_off + head) / 8;
                    for (out, cell) in to[dst_first..dst_first + words]
                        .iter()
                        .zip(&from[first..first + words])
                    {
                        out.store(cell.load(Ordering::Relaxed), Ordering::Relaxed);
                    }
                    let body = head + words * 8;
                    let tail = n - body;
                    read_partial(from, s_off + body, &mut part[..tail]);
                    write_partial(to, d_off + body, &part[..tail]);
                }
            }
            done += n as u64;
        }
        Ok(())
    }

    fn fill(&self, pa: Pa, byte: u8, len: u64) -> Result<()> {
        self.check_range(pa, len)?;
        let word = u64::from_ne_bytes([byte; 8]);
        for (frame, off, n) in Self::pieces(pa, len) {
            // Zeroing memory that was never written is a no-op: it already reads as zero.
            let f = if byte == 0 {
                match self.frame(frame) {
                    Some(f) => f,
                    None => continue,
                }
            } else {
                self.frame_mut(frame)
            };
            if off % 8 == 0 && n % 8 == 0 {
                for cell in &f[off / 8..(off + n) / 8] {
                    cell.store(word, Ordering::Relaxed);
                }
            } else {
                write_frame(f, off, &vec![byte; n]);
            }
        }
        Ok(())
    }

    /// One frame lookup per frame and word loads in place (an emptiness check of a table
    /// on every unmap would otherwise look the frame up for each of its 512 words).
    fn is_zero(&self, pa: Pa, len: u64) -> Result<bool> {
        self.check_range(pa, len)?;
        for (frame, off, n) in Self::pieces(pa, len) {
            let Some(f) = self.frame(frame) else {
                continue;
            };
            let (head, first, words) = word_span(off, n);
            let mut edge = [0u8; 16];
            read_partial(f, off, &mut edge[..head]);
            let body = head + words * 8;
            read_partial(f, off + body, &mut edge[head..head + n - body]);
            // 64 words OR-ed per branch: a table found empty is read whole.
            let mut cells = f[first..first + words].chunks(64);
            if edge.iter().any(|&b| b != 0)
                || cells.any(|c| c.iter().fold(0, |acc, w| acc | w.load(Ordering::Acquire)) != 0)
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forwards the required methods only, so the trait's default `is_zero` is tested.
    struct Plain<'a>(&'a SparseRam);

    impl PhysMemory for Plain<'_> {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read(&self, pa: Pa, buf: &mut [u8]) -> Result<()> {
            self.0.read(pa, buf)
        }
        fn write(&self, pa: Pa, buf: &[u8]) -> Result<()> {
            self.0.write(pa, buf)
        }
        fn load_u64(&self, pa: Pa) -> Result<u64> {
            self.0.load_u64(pa)
        }
        fn store_u64(&self, pa: Pa, val: u64) -> Result<()> {
            self.0.store_u64(pa, val)
        }
        fn compare_exchange_u64(
            &self,
            pa: Pa,
            current: u64,
            new: u64,
        ) -> Result<core::result::Result<u64, u64>> {
            self.0.compare_exchange_u64(pa, current, new)
        }
    }

    proptest::proptest! {
        /// `is_zero` agrees with reading the bytes, for any alignment, length and frame
        /// crossing, around one non-zero byte anywhere (or none).
        #[test]
        fn is_zero_matches_the_bytes(
            pa in 0u64..2 * FRAME_SIZE,
            len in 0u64..2 * FRAME_SIZE + 20,
            dirty in proptest::option::of(0u64..4 * FRAME_SIZE + 20),
        ) {
            let ram = SparseRam::new(16 * FRAME_SIZE).unwrap();
            // A written frame that is all zero again must read as zero too.
            ram.store_u64(Pa(FRAME_SIZE), 7).unwrap();
            ram.store_u64(Pa(FRAME_SIZE), 0).unwrap();
            if let Some(at) = dirty {
                ram.write(Pa(at), &[0x80]).unwrap();
            }
            let mut bytes = vec![0u8; len as usize];
            ram.read(Pa(pa), &mut bytes).unwrap();
            let want = bytes.iter().all(|&b| b == 0);
            proptest::prop_assert_eq!(ram.is_zero(Pa(pa), len).unwrap(), want);
            proptest::prop_assert_eq!(
                Plain(&ram).is_zero(Pa(pa), len).unwrap(),
                want
            );
        }

        /// The word-to-word copy agrees with reading and writing the same bytes, for any
        /// alignment, length and frame crossing, from written and never-written memory.
        #[test]
        fn copy_matches_read_then_write(
            src in 0u64..2 * FRAME_SIZE,
            dst in 5 * FRAME_SIZE..7 * FRAME_SIZE,
            len in 0u64..2 * FRAME_SIZE + 20,
            written in proptest::bool::ANY,
        ) {
            let ram = SparseRam::new(16 * FRAME_SIZE).unwrap();
            let image: Vec<u8> = (0..8 * FRAME_SIZE).map(|i| (i * 7 + i / 4096) as u8).collect();
            ram.write(Pa(5 * FRAME_SIZE), &image[..4 * FRAME_SIZE as usize]).unwrap();
            if written {
                ram.write(Pa(0), &image[..4 * FRAME_SIZE as usize]).unwrap();
            }
            let mut expected = vec![0u8; 12 * FRAME_SIZE as usize];
            ram.read(Pa(0), &mut expected).unwrap();
            let moved = expected[src as usize..(src + len) as usize].to_vec();
            expected[dst as usize..(dst + len) as usize].copy_from_slice(&moved);
            ram.copy(Pa(src), Pa(dst), len).unwrap();
            let mut got = vec![0u8; 12 * FRAME_SIZE as usize];
            ram.read(Pa(0), &mut got).unwrap();
            proptest::prop_assert!(got == expected);
        }
    }

    #[test]
    fn untouched_memory_reads_zero_and_commits_nothing() {
        let ram = SparseRam::new(1 << 40).unwrap();
        let mut buf = [0xffu8; 64];
        ram.read(Pa((1 << 40) - 64), &mut buf).unwrap();
        assert_eq!(buf, [0; 64]);
        assert_eq!(ram.load_u64(Pa(0x1234_5000)).unwrap(), 0);
        ram.fill(Pa(0), 0, 1 << 30).unwrap();
        assert_eq!(ram.committed_frames(), 0);
    }

    #[test]
    fn one_tebibyte_commits_only_touched_frames() {
        let ram = SparseRam::new(1 << 40).unwrap();
        for i in 0..16u64 {
            ram.write(Pa(i << 36), b"touched").unwrap();
        }
        assert_eq!(ram.committed_frames(), 16);
        let mut buf = [0u8; 7];
        ram.read(Pa(15 << 36), &mut buf).unwrap();
        assert_eq!(&buf, b"touched");
    }

    #[test]
    fn unaligned_writes_cross_frames_and_words() {
        let ram = SparseRam::new(1 << 20).unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 3) as u8).collect();
        ram.write(Pa(4093), &data).unwrap();
        let mut back = vec![0u8; data.len()];
        ram.read(Pa(4093), &mut back).unwrap();
        assert_eq!(back, data);
        // Neighbouring bytes are untouched.
        let mut edge = [0u8; 1];
        ram.read(Pa(4092), &mut edge).unwrap();
        assert_eq!(edge, [0]);
        ram.read(Pa(4093 + 10_000), &mut edge).unwrap();
        assert_eq!(edge, [0]);
    }

    #[test]
    fn words_are_little_endian_and_atomic() {
        let ram = SparseRam::new(1 << 20).unwrap();
        ram.store_u64(Pa(0x1008), 0x1122_3344_5566_7788).unwrap();
        let mut b = [0u8; 8];
        ram.read(Pa(0x1008), &mut b).unwrap();
        assert_eq!(b, 0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(
            ram.compare_exchange_u64(Pa(0x1008), 1, 2).unwrap(),
            Err(0x1122_3344_5566_7788)
        );
        assert_eq!(
            ram.compare_exchange_u64(Pa(0x1008), 0x1122_3344_5566_7788, 5)
                .unwrap(),
            Ok(0x1122_3344_5566_7788)
        );
        assert_eq!(ram.load_u64(Pa(0x1008)).unwrap(), 5);
    }

    #[test]
    fn bad_accesses_are_typed_errors() {
        assert_eq!(SparseRam::new(0).unwrap_err(), Error::BadRamSize(0));
        assert_eq!(SparseRam::new(4097).unwrap_err(), Error::BadRamSize(4097));
        assert!(SparseRam::new(MAX_RAM_SIZE * 2).is_err());
        let ram = SparseRam::new(1 << 20).unwrap();
        assert!(matches!(
            ram.read(Pa((1 << 20) - 4), &mut [0; 8]),
            Err(Error::OutOfRange { .. })
        ));
        assert!(matches!(
            ram.write(Pa(u64::MAX - 2), &[0; 8]),
            Err(Error::OutOfRange { .. })
        ));
        assert_eq!(
            ram.load_u64(Pa(4)).unwrap_err(),
            Error::Misaligned {
                pa: Pa(4),
                align: 8
            }
        );
        assert!(matches!(
            ram.store_u64(Pa(1 << 20), 0),
            Err(Error::OutOfRange { .. })
        ));
    }

    #[test]
    fn concurrent_partial_word_writes_are_not_lost() {
        let ram = std::sync::Arc::new(SparseRam::new(1 << 20).unwrap());
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let ram = ram.clone();
                std::thread::spawn(move || {
                    for round in 0..1000u32 {
                        ram.write(Pa(u64::from(i)), &[(round as u8) | 1]).unwrap();
                    }
                    ram.write(Pa(u64::from(i)), &[i + 100]).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut b = [0u8; 8];
        ram.read(Pa(0), &mut b).unwrap();
        assert_eq!(b, [100, 101, 102, 103, 104, 105, 106, 107]);
    }
}
