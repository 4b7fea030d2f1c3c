//! The synchronisation primitives of every crate on the device path (address spaces, the
//! SMMU model and its driver, PCIe functions, the SVA core, the platform): std's, or with
//! the `shuttle` feature shuttle's, so that `shuttle::check_random` explores the thread
//! schedules of the whole stack rather than of one crate.
//!
//! Shuttle runs all its threads on one OS thread and switches only at its own
//! synchronisation operations. A std lock held across such a switch point therefore
//! deadlocks a run, and a std lock can never be preempted: a crate on the device path takes
//! every lock, condition variable, channel, thread and thread-local from here. Shuttle does
//! not model time either, so what waits on the clock goes through the helpers here too:
//! [`spin_until`] does not spin, a [`Deadline`] never passes and a [`Poll`] yields to the
//! scheduler (a wait that nothing ends is then a deadlock or a step-bound failure that
//! shuttle reports, instead of a timeout).
//!
//! Without the feature everything is std's and the helpers do what the crates did by hand:
//! nothing changes in behaviour or speed.
//!
//! Atomics and `Arc` stay std's: atomics never block, so they cannot hang a run, and the
//! counters among them as switch points would only widen the schedule space. A leaf lock
//! never held across a switch point (the frame allocator's in `sva-physmem`) may stay
//! std's too: no other shuttle thread runs while it is held.

use std::time::{Duration, Instant};

#[cfg(feature = "shuttle")]
pub use shuttle::sync::{
    Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc,
};
#[cfg(not(feature = "shuttle"))]
pub use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};

/// Declares a thread-local: std's, or shuttle's, whose threads share one OS thread.
#[cfg(feature = "shuttle")]
pub use shuttle::thread_local;
#[cfg(not(feature = "shuttle"))]
pub use std::thread_local;

/// Threads: std's, or shuttle's.
pub mod thread {
    #[cfg(feature = "shuttle")]
    pub use shuttle::thread::{Builder, JoinHandle, spawn, yield_now};
    #[cfg(not(feature = "shuttle"))]
    pub use std::thread::{Builder, JoinHandle, spawn, yield_now};
}

/// How long a thread polls for work that usually comes soon before it sleeps on it: a
/// thread wake-up costs tens of microseconds on an idle virtual CPU. Zero under shuttle,
/// where time is not part of the exploration.
pub const SPIN: Duration = if cfg!(feature = "shuttle") {
    Duration::ZERO
} else {
    Duration::from_micros(50)
};

/// Locks `m`, taking the data of a poisoned lock (a panicking holder leaves it consistent).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read-locks `l`, taking the data of a poisoned lock.
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// Write-locks `l`, taking the data of a poisoned lock.
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Waits on `cv` with `guard`'s lock, taking the data of a poisoned lock.
pub fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(|p| p.into_inner())
}

/// Polls `f` for up to [`SPIN`], yielding between polls, and returns its first `Some`;
/// `None` if it had none by then (the caller then sleeps). `f` runs at least once.
pub fn spin_until<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= SPIN {
            return None;
        }
        thread::yield_now();
    }
}

/// A point in time after which a wait gives up. Under shuttle it never passes: a wait
/// ends with the notification it waits for, or shuttle reports the deadlock.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now() + timeout)
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        !cfg!(feature = "shuttle") && Instant::now() >= self.0
    }

    /// Waits on `cv` with `guard`'s lock until notified (or spuriously woken) or until the
    /// deadline; `None` when the deadline had already passed, without waiting.
    pub fn wait<'a, T>(&self, cv: &Condvar, guard: MutexGuard<'a, T>) -> Option<MutexGuard<'a, T>> {
        if cfg!(feature = "shuttle") {
            return Some(wait(cv, guard));
        }
        let left = self.0.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        Some(
            cv.wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0,
        )
    }
}

/// A bounded busy poll for a condition another agent makes true (a register, a counter):
/// spins a little, then yields. Under shuttle every wait yields to the scheduler, so the
/// agent runs, and the poll never times out.
#[derive(Debug)]
pub struct Poll {
    deadline: Deadline,
    spins: u32,
}

impl Poll {
    /// A poll that gives up `timeout` from now.
    pub fn new(timeout: Duration) -> Self {
        Self {
            deadline: Deadline::after(timeout),
            spins: 0,
        }
    }

    /// Waits a little; `false` once the deadline has passed.
    pub fn wait(&mut self) -> bool {
        self.spins = self.spins.saturating_add(1);
        if self.spins < 64 && !cfg!(feature = "shuttle") {
            core::hint::spin_loop();
        } else {
            thread::yield_now();
        }
        !self.deadline.passed()
    }
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn spin_until_returns_the_first_value_or_gives_up() {
        let mut n = 0;
        assert_eq!(
            spin_until(|| {
                n += 1;
                (n == 3).then_some(n)
            }),
            Some(3)
        );
        assert_eq!(spin_until(|| None::<()>), None);
    }

    #[test]
    fn a_deadline_wait_times_out_once_it_passed() {
        let pair = (Mutex::new(()), Condvar::new());
        let d = Deadline::after(Duration::from_millis(1));
        let mut g = lock(&pair.0);
        while let Some(again) = d.wait(&pair.1, g) {
            g = again;
        }
        assert!(d.passed());
    }

    #[test]
    fn a_deadline_wait_ends_with_a_notification() {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let d = Deadline::after(Duration::from_secs(60));
        let t = {
            let pair = pair.clone();
            thread::spawn(move || {
                *lock(&pair.0) = true;
                pair.1.notify_all();
            })
        };
        let mut g = lock(&pair.0);
        while !*g {
            g = d.wait(&pair.1, g).expect("the deadline is far");
        }
        drop(g);
        t.join().unwrap();
        assert!(!d.passed());
    }

    #[test]
    fn a_poll_gives_up_at_its_deadline() {
        // The clock starts first: a preemption between the two must not shorten the wait.
        let start = Instant::now();
        let mut p = Poll::new(Duration::from_millis(1));
        while p.wait() {}
        assert!(start.elapsed() >= Duration::from_millis(1));
    }

    #[test]
    fn poisoned_locks_are_taken_with_their_data() {
        let m = Arc::new(Mutex::new(5));
        let l = Arc::new(RwLock::new(6));
        let (m2, l2) = (m.clone(), l.clone());
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            let _w = l2.write().unwrap();
            panic!("poison both");
        })
        .join();
        assert!(m.is_poisoned() && l.is_poisoned());
        assert_eq!(*lock(&m), 5);
        assert_eq!(*read(&l), 6);
        *write(&l) = 7;
        assert_eq!(*read(&l), 7);
    }
}
