//! Locks whose data stays valid whatever a panicking holder was doing: every
//! critical section in this crate is a single insert, update or read of a map or a
//! counter (or one SQLite call, whose transaction rolls back as it unwinds), so a
//! poisoned lock is recovered rather than skipped or turned into an error forever.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, recovering it from poisoning.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
