//! The synchronisation primitives the fault queue uses: std's, or shuttle's when the
//! `shuttle` feature explores thread schedules in tests.

#[cfg(feature = "shuttle")]
pub(crate) use shuttle::sync::mpsc::{Receiver, Sender, channel};
#[cfg(feature = "shuttle")]
pub(crate) use shuttle::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockWriteGuard};
#[cfg(feature = "shuttle")]
pub(crate) use shuttle::thread::{self, JoinHandle};

#[cfg(not(feature = "shuttle"))]
pub(crate) use std::sync::mpsc::{Receiver, Sender, channel};
#[cfg(not(feature = "shuttle"))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockWriteGuard};
#[cfg(not(feature = "shuttle"))]
pub(crate) use std::thread::{self, JoinHandle};

/// What `try_recv` says of an empty or closed channel (shuttle uses std's type).
pub(crate) use std::sync::mpsc::TryRecvError;

/// How long an idle fault worker polls before it sleeps: a request that comes soon after
/// the last one is taken without a thread wake-up, which costs tens of microseconds on
/// an idle virtual CPU. Schedule exploration does not spin (time is not part of it).
#[cfg(not(feature = "shuttle"))]
pub(crate) const SPIN: std::time::Duration = std::time::Duration::from_micros(50);
#[cfg(feature = "shuttle")]
pub(crate) const SPIN: std::time::Duration = std::time::Duration::ZERO;

/// Locks `m`, taking the data of a poisoned lock (a panicking holder leaves it consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
