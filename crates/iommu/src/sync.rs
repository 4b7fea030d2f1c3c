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
