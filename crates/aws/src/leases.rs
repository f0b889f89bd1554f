//! Changing a user's connection leases (`domain::lease`) through the `LeaseStore`
//! port: read, change, conditional write, read again when a concurrent writer got
//! there first. The handler takes, renews and releases leases with it; the sweep
//! releases a gone connection's.

use crate::domain::lease::UserLeases;
use crate::domain::{ConnectionId, Timestamp, UserId};
use crate::ports::{LeaseStore, StoreError};

/// How often a lease write that lost to a concurrent one is tried again.
pub const MAX_CONFLICTS: u32 = 8;

/// Reads the user's leases (none stored: an empty set), lets `change` decide what
/// to answer and whether it changed them, and writes them back when it did, on the
/// condition that nobody wrote in between; read and decided again when somebody did.
pub async fn update<T>(
    store: &dyn LeaseStore,
    user_id: &UserId,
    mut change: impl FnMut(&mut UserLeases) -> (T, bool),
) -> Result<T, StoreError> {
    let mut attempt = 0;
    loop {
        let (mut leases, version) = match store.leases(user_id).await? {
            Some((leases, version)) => (leases, Some(version)),
            None => (UserLeases::new(user_id.clone()), None),
        };
        let (answer, changed) = change(&mut leases);
        if !changed {
            return Ok(answer);
        }
        match store.put_leases(&leases, version).await {
            Ok(_) => return Ok(answer),
            Err(StoreError::Conflict(_)) if attempt < MAX_CONFLICTS => {
                attempt += 1;
                crate::backoff::pause(attempt).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Changes the user's leases with `change` (which says whether it changed
/// anything). Best effort: a lease left behind expires by itself, so a failure is
/// logged, not returned.
pub async fn change(store: &dyn LeaseStore, user_id: &UserId, change: impl Fn(&mut UserLeases) -> bool) {
    if let Err(error) = update(store, user_id, |leases| ((), change(leases))).await {
        tracing::warn!(error = %crate::error_chain::chain(&error), "updating the user's connection leases failed (the lease expires by itself)");
    }
}

/// Gives `connection_id`'s slot back.
pub async fn release(store: &dyn LeaseStore, user_id: &UserId, connection_id: &ConnectionId, now: Timestamp) {
    change(store, user_id, |leases| leases.release(connection_id, now)).await;
}
