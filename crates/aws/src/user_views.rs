//! A user's connections read newest first from the user's index, no further back
//! than needed: the one walk that sends, the `$connect` and voice limits and usage
//! queries share, so that what they cost does not grow with the user's history.

use chrono::TimeDelta;

use crate::domain::{ConnectionInfo, MAX_CONNECTION_DURATION, Timestamp, UserId};
use crate::ports::{PageRequest, StoreError, ViewStore};

/// How many views one read of [`connected`] asks for: a user rarely opened more
/// connections in the last two hours, so one read is the usual cost.
const CONNECTED_PAGE: usize = 25;

/// Room for clocks that disagree by a little.
const CLOCK_MARGIN: TimeDelta = TimeDelta::minutes(1);

/// The views of `user_id` created at or after `oldest` (all of them without it),
/// newest first, read `page_size` at a time.
pub async fn newest_since(
    views: &dyn ViewStore,
    user_id: &UserId,
    oldest: Option<Timestamp>,
    page_size: usize,
) -> Result<Vec<ConnectionInfo>, StoreError> {
    let mut newest = Vec::new();
    let mut page = PageRequest::first(page_size);
    loop {
        let listed = views.list_by_user(user_id, None, page.clone()).await?;
        for view in listed.items {
            if oldest.is_some_and(|oldest| view.created_at < oldest) {
                return Ok(newest);
            }
            newest.push(view);
        }
        match listed.next {
            Some(next) => page.after = Some(next),
            None => return Ok(newest),
        }
    }
}

/// The connections of `user_id` that may still be open at `now`: its `CONNECTED`
/// views created within [`MAX_CONNECTION_DURATION`] (and a minute), newest first.
/// An older view still marked connected is a ghost that API Gateway has closed;
/// the sweep finds it.
pub async fn connected(
    views: &dyn ViewStore,
    user_id: &UserId,
    now: Timestamp,
) -> Result<Vec<ConnectionInfo>, StoreError> {
    let oldest = now.minus(MAX_CONNECTION_DURATION).minus(CLOCK_MARGIN);
    let mut recent = newest_since(views, user_id, Some(oldest), CONNECTED_PAGE).await?;
    recent.retain(ConnectionInfo::is_connected);
    Ok(recent)
}
