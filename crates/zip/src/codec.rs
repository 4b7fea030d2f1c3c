//! The engine's datapath: DEFLATE (miniz_oxide) with zlib and gzip framing done here,
//! so that the checksum and ISIZE the hardware reports are at hand and a bad checksum
//! can be told from a bad stream. Pure functions on byte slices; never panics on input.

use crate::sqe::Alg;
use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress as inflate, inflate_flags};

/// The compression level the engine uses (zlib's default).
pub const LEVEL: u8 = 6;

/// What a compression or decompression produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The output bytes.
    pub data: Vec<u8>,
    /// Input bytes consumed (decompression: up to the end of the stream, trailer
    /// included; anything after it is left).
    pub consumed: usize,
    /// Uncompressed size modulo 2^32.
    pub isize: u32,
    /// Adler-32 (zlib), CRC-32 (gzip) of the uncompressed data; 0 for raw DEFLATE.
    pub checksum: u32,
}

/// Why a decompression failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The uncompressed data is longer than the room given.
    #[error("output does not fit")]
    OutputTooSmall,
    /// The checksum (or gzip ISIZE) does not match.
    #[error("checksum mismatch")]
    Checksum,
    /// Not a valid stream, or truncated.
    #[error("invalid or truncated stream")]
    Data,
}

/// Adler-32 (RFC 1950 §8.2).
pub fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 is the largest n such that 255 n (n + 1) / 2 + (n + 1) (MOD - 1) fits in u32.
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// CRC-32 (the gzip polynomial).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

/// The gzip header the engine writes: no name, no mtime, OS = Unix.
pub const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03];

/// Compresses `input` as one whole `alg` stream.
pub fn compress(alg: Alg, input: &[u8]) -> Output {
    let raw = miniz_oxide::deflate::compress_to_vec(input, LEVEL);
    let isize = input.len() as u32;
    let (data, checksum) = match alg {
        Alg::Deflate => (raw, 0),
        Alg::Zlib => {
            let sum = adler32(input);
            // CMF = 0x78 (deflate, 32 KiB window); FLG = 0x9c (default level, check bits).
            let mut v = Vec::with_capacity(raw.len() + 6);
            v.extend_from_slice(&[0x78, 0x9c]);
            v.extend_from_slice(&raw);
            v.extend_from_slice(&sum.to_be_bytes());
            (v, sum)
        }
        Alg::Gzip => {
            let sum = crc32(input);
            let mut v = Vec::with_capacity(raw.len() + 18);
            v.extend_from_slice(&GZIP_HEADER);
            v.extend_from_slice(&raw);
            v.extend_from_slice(&sum.to_le_bytes());
            v.extend_from_slice(&isize.to_le_bytes());
            (v, sum)
        }
    };
    Output {
        data,
        consumed: input.len(),
        isize,
        checksum,
    }
}

/// Inflates raw DEFLATE at the start of `input` into at most `limit` bytes; returns the
/// output and the input bytes the stream took.
fn inflate_raw(input: &[u8], limit: usize) -> Result<(Vec<u8>, usize), DecodeError> {
    let mut out = vec![0u8; limit];
    let mut state = Box::<DecompressorOxide>::default();
    let (status, used, written) = inflate(
        &mut state,
        input,
        &mut out,
        0,
        inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
    );
    match status {
        TINFLStatus::Done => {
            out.truncate(written);
            Ok((out, used))
        }
        TINFLStatus::HasMoreOutput => Err(DecodeError::OutputTooSmall),
        _ => Err(DecodeError::Data),
    }
}

/// Length of the gzip header at the start of `input` (RFC 1952 §2.3).
fn gzip_header_len(input: &[u8]) -> Result<usize, DecodeError> {
    const FHCRC: u8 = 1 << 1;
    const FEXTRA: u8 = 1 << 2;
    const FNAME: u8 = 1 << 3;
    const FCOMMENT: u8 = 1 << 4;
    if input.len() < 10 || input[0] != 0x1f || input[1] != 0x8b || input[2] != 8 {
        return Err(DecodeError::Data);
    }
    let flags = input[3];
    if flags & 0xe0 != 0 {
        return Err(DecodeError::Data);
    }
    let mut at = 10usize;
    if flags & FEXTRA != 0 {
        let xlen = input.get(at..at + 2).ok_or(DecodeError::Data)?;
        at += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let rest = input.get(at..).ok_or(DecodeError::Data)?;
            let nul = rest.iter().position(|&b| b == 0).ok_or(DecodeError::Data)?;
            at += nul + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    if at > input.len() {
        return Err(DecodeError::Data);
    }
    Ok(at)
}

/// Decompresses the `alg` stream at the start of `input` into at most `limit` bytes.
pub fn decompress(alg: Alg, input: &[u8], limit: usize) -> Result<Output, DecodeError> {
    match alg {
        Alg::Deflate => {
            let (data, used) = inflate_raw(input, limit)?;
            Ok(Output {
                isize: data.len() as u32,
                data,
                consumed: used,
                checksum: 0,
            })
        }
        Alg::Zlib => {
            let [cmf, flg] = *input.first_chunk::<2>().ok_or(DecodeError::Data)?;
            let header_ok = cmf & 0x0f == 8
                && cmf >> 4 <= 7
                && (u16::from(cmf) * 256 + u16::from(flg)) % 31 == 0
                && flg & 0x20 == 0;
            if !header_ok {
                return Err(DecodeError::Data);
            }
            let (data, used) = inflate_raw(&input[2..], limit)?;
            let end = 2 + used;
            let trailer = input.get(end..end + 4).ok_or(DecodeError::Data)?;
            let want = u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
            let sum = adler32(&data);
            if sum != want {
                return Err(DecodeError::Checksum);
            }
            Ok(Output {
                isize: data.len() as u32,
                data,
                consumed: end + 4,
                checksum: sum,
            })
        }
        Alg::Gzip => {
            let start = gzip_header_len(input)?;
            let (data, used) = inflate_raw(&input[start..], limit)?;
            let end = start + used;
            let t = input.get(end..end + 8).ok_or(DecodeError::Data)?;
            let want_crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
            let want_size = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
            let sum = crc32(&data);
            if sum != want_crc || data.len() as u32 != want_size {
                return Err(DecodeError::Checksum);
            }
            Ok(Output {
                isize: want_size,
                data,
                consumed: end + 8,
                checksum: sum,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    const TEXT: &[u8] = include_bytes!("codec.rs");

    #[test]
    fn adler_matches_known_value() {
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
        assert_eq!(adler32(b""), 1);
        let big = vec![0xffu8; 100_000];
        // Reference: straightforward modular sum.
        let (mut a, mut b) = (1u64, 0u64);
        for &x in &big {
            a = (a + u64::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(adler32(&big), ((b << 16) | a) as u32);
    }

    #[test]
    fn flate2_reads_what_we_write() {
        let z = compress(Alg::Zlib, TEXT);
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(&z.data[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, TEXT);
        let g = compress(Alg::Gzip, TEXT);
        out.clear();
        flate2::read::GzDecoder::new(&g.data[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, TEXT);
        let d = compress(Alg::Deflate, TEXT);
        out.clear();
        flate2::read::DeflateDecoder::new(&d.data[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, TEXT);
    }

    #[test]
    fn we_read_what_flate2_writes() {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(TEXT).unwrap();
        let gz = e.finish().unwrap();
        let o = decompress(Alg::Gzip, &gz, TEXT.len()).unwrap();
        assert_eq!(o.data, TEXT);
        assert_eq!(o.consumed, gz.len());
        assert_eq!(o.checksum, crc32(TEXT));
        // Named gzip with extra field, via the builder.
        let mut e = flate2::GzBuilder::new()
            .filename("a.txt")
            .comment("c")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::fast());
        e.write_all(TEXT).unwrap();
        let gz = e.finish().unwrap();
        assert_eq!(decompress(Alg::Gzip, &gz, TEXT.len()).unwrap().data, TEXT);
    }

    #[test]
    fn errors_are_classified() {
        let z = compress(Alg::Zlib, TEXT).data;
        assert_eq!(
            decompress(Alg::Zlib, &z, TEXT.len() - 1),
            Err(DecodeError::OutputTooSmall)
        );
        let mut bad = z.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(
            decompress(Alg::Zlib, &bad, TEXT.len()),
            Err(DecodeError::Checksum)
        );
        assert_eq!(
            decompress(Alg::Zlib, &z[..n - 10], TEXT.len()),
            Err(DecodeError::Data)
        );
        assert_eq!(
            decompress(Alg::Gzip, b"not gzip at all", 100),
            Err(DecodeError::Data)
        );
        assert_eq!(decompress(Alg::Deflate, &[], 100), Err(DecodeError::Data));
        // Trailing bytes after the stream are left unconsumed.
        let mut more = z.clone();
        more.extend_from_slice(b"trailing");
        let o = decompress(Alg::Zlib, &more, TEXT.len()).unwrap();
        assert_eq!(o.consumed, z.len());
    }
}
