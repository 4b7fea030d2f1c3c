//! A small timing harness: calibrate a batch size, warm up, then time `samples` batches
//! and report the median and the minimum time per iteration.
//!
//! A routine is given a number of iterations and returns the time its timed part took,
//! so that set-up and tear-down around each iteration (a fresh mapping, a munmap) can stay
//! outside the figure, as criterion's `iter_custom` does.

use anyhow::Result;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The most iterations one batch may hold.
const MAX_ITERS: u64 = 1 << 32;

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Harness {
    /// Timed batches per measurement.
    pub samples: usize,
    /// Time spent running batches before the first sample.
    pub warmup: Duration,
    /// What one batch should take: the iterations per batch are chosen for it.
    pub batch: Duration,
}

/// One measurement: time per iteration over the samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stats {
    /// Median time per iteration, in nanoseconds.
    pub median_ns: f64,
    /// Fastest sample's time per iteration, in nanoseconds.
    pub min_ns: f64,
    /// Samples taken.
    pub samples: usize,
    /// Iterations in each sample.
    pub iters: u64,
}

impl Harness {
    /// Measures `routine`, which runs the iterations it is given and returns the time of
    /// its timed part.
    pub fn measure(&self, mut routine: impl FnMut(u64) -> Result<Duration>) -> Result<Stats> {
        let iters = self.calibrate(&mut routine)?;
        let start = Instant::now();
        while start.elapsed() < self.warmup {
            routine(iters)?;
        }
        let mut per_iter = Vec::with_capacity(self.samples);
        for _ in 0..self.samples.max(1) {
            let t = routine(iters)?;
            per_iter.push(t.as_secs_f64() * 1e9 / iters as f64);
        }
        per_iter.sort_by(f64::total_cmp);
        let n = per_iter.len();
        let median_ns = if n % 2 == 1 {
            per_iter[n / 2]
        } else {
            (per_iter[n / 2 - 1] + per_iter[n / 2]) / 2.0
        };
        Ok(Stats {
            median_ns,
            min_ns: per_iter[0],
            samples: n,
            iters,
        })
    }

    /// Iterations for one batch of about [`Harness::batch`]: grows the count until a
    /// batch takes a quarter of that, then scales it (at least one iteration).
    fn calibrate(&self, routine: &mut impl FnMut(u64) -> Result<Duration>) -> Result<u64> {
        let target = self.batch.as_secs_f64();
        let mut iters = 1u64;
        loop {
            let t = routine(iters)?.as_secs_f64();
            if t >= target / 4.0 || iters >= MAX_ITERS {
                let per_iter = t / iters as f64;
                let scaled = if per_iter > 0.0 {
                    (target / per_iter).round() as u64
                } else {
                    MAX_ITERS
                };
                return Ok(scaled.clamp(1, MAX_ITERS));
            }
            iters = iters.saturating_mul(8).min(MAX_ITERS);
        }
    }
}

/// Times `iters` calls of `op`, whose results are kept from the optimiser.
pub(crate) fn timed<T>(iters: u64, mut op: impl FnMut() -> T) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        black_box(op());
    }
    t.elapsed()
}

/// Times `iters` calls of a fallible `op`, stopping at the first error.
pub(crate) fn timed_try<T>(iters: u64, mut op: impl FnMut() -> Result<T>) -> Result<Duration> {
    let t = Instant::now();
    for _ in 0..iters {
        black_box(op()?);
    }
    Ok(t.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_min_of_a_known_routine() {
        let h = Harness {
            samples: 5,
            warmup: Duration::ZERO,
            batch: Duration::from_micros(50),
        };
        // Each iteration "takes" 1 µs.
        let s = h.measure(|iters| Ok(Duration::from_micros(iters))).unwrap();
        assert_eq!(s.samples, 5);
        assert!((s.median_ns - 1000.0).abs() < 1e-6, "{s:?}");
        assert!((s.min_ns - 1000.0).abs() < 1e-6, "{s:?}");
        assert_eq!(s.iters, 50);
    }

    #[test]
    fn errors_stop_the_measurement() {
        let h = Harness {
            samples: 3,
            warmup: Duration::ZERO,
            batch: Duration::from_micros(1),
        };
        assert!(h.measure(|_| anyhow::bail!("set-up failed")).is_err());
    }
}
