//! A user's connections that may still be open: their `CONNECTED` views, read from
//! the user's connections newest first and no further back than a connection can
//! live on API Gateway (two hours), so the cost of a send or a `$connect` check
//! does not grow with the user's history. A view older than that still marked
//! connected is a ghost that API Gateway has closed; the sweep finds it.

use chrono::TimeDelta;

use crate::domain::{ConnectionInfo, MAX_CONNECTION_DURATION, Timestamp, UserId};
use crate::ports::{PageRequest, StoreError, ViewStore};

/// How many views one read asks for: a user rarely opened more connections in the
/// last two hours, so one read is the usual cost.
const PAGE: usize = 25;

/// Room for clocks that disagree by a little.
const CLOCK_MARGIN: TimeDelta = TimeDelta::minutes(1);

/// The `CONNECTED` views of `user_id` created within [`MAX_CONNECTION_DURATION`]
/// of `now`, newest first.
pub async fn connected_views(
    views: &dyn ViewStore,
    user_id: &UserId,
    now: Timestamp,
) -> Result<Vec<ConnectionInfo>, StoreError> {
    let oldest = now.minus(MAX_CONNECTION_DURATION).minus(CLOCK_MARGIN);
    let mut connected = Vec::new();
    let mut page = PageRequest::first(PAGE);
    loop {
        let listed = views.list_by_user(user_id, None, page.clone()).await?;
        for view in listed.items {
            if view.created_at < oldest {
                return Ok(connected);
            }
            if view.is_connected() {
                connected.push(view);
            }
        }
        match listed.next {
            Some(next) => page.after = Some(next),
            None => return Ok(connected),
        }
    }
}
