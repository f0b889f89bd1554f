//! Changing a user's connection leases (`domain::lease`) through the `LeaseStore`
//! port: read, change, conditional write, read again when a concurrent writer got
//! there first. The handler takes, renews and releases leases with it; the sweep
//! releases a gone connection's.

use crate::domain::lease::UserLeases;
use crate::domain::{ConnectionId, Timestamp, UserId};
use crate::ports::{LeaseStore, StoreError};

/// How often a lease write that lost to a concurrent one is tried again.
pub const MAX_CONFLICTS: u32 = 8;

/// Changes the user's leases with `change` (which says whether it changed
/// anything). Best effort: a lease left behind expires by itself, so a failure is
/// logged, not returned.
pub async fn change(store: &dyn LeaseStore, user_id: &UserId, change: impl Fn(&mut UserLeases) -> bool) {
    let mut attempt = 0;
    loop {
        let result = match store.leases(user_id).await {
            Ok(Some((mut leases, version))) => {
                if !change(&mut leases) {
                    return;
                }
                store.put_leases(&leases, Some(version)).await
            }
            Ok(None) => return,
            Err(error) => Err(error),
        };
        match result {
            Ok(_) => return,
            Err(StoreError::Conflict(_)) if attempt < MAX_CONFLICTS => {
                attempt += 1;
                crate::backoff::pause(attempt).await;
            }
            Err(error) => {
                tracing::warn!(error = %crate::error_chain::chain(&error), "updating the user's connection leases failed (the lease expires by itself)");
                return;
            }
        }
    }
}

/// Gives `connection_id`'s slot back.
pub async fn release(store: &dyn LeaseStore, user_id: &UserId, connection_id: &ConnectionId, now: Timestamp) {
    change(store, user_id, |leases| leases.release(connection_id, now)).await;
}
