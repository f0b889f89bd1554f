//! Reconnect recovery as a service over the [`OutboxStore`] port: numbering and
//! keeping a message before it is posted ([`keep`]). The rules are
//! `domain::recovery`'s. Not yet wired into `delivery`, the handler and `serve`.

use chrono::TimeDelta;

use crate::domain::recovery::{OutboxHead, OutboxMessage};
use crate::domain::{Timestamp, UserId};
use crate::ports::{OutboxStore, StoreError};

/// How often a numbering that lost to a concurrent sender (or a resume's mark) is
/// tried again before the send fails: enough for dozens of senders of one user at once.
const MAX_CONFLICT_RETRIES: u32 = 64;

/// Gives `data` the user's next sequence number and keeps it for `window`, in one
/// conditional write with the outbox head; again on conflict. Returns the message
/// and the head as written (its resume marks tell the sender how to post).
pub async fn keep(
    outbox: &dyn OutboxStore,
    user_id: &UserId,
    data: &str,
    now: Timestamp,
    window: TimeDelta,
) -> Result<(OutboxMessage, OutboxHead), StoreError> {
    let mut attempt = 0;
    loop {
        let (mut head, version) = match outbox.head(user_id).await? {
            Some((head, version)) => (head, Some(version)),
            None => (OutboxHead::default(), None),
        };
        head.last_seq += 1;
        let message = OutboxMessage {
            user_id: user_id.clone(),
            seq: head.last_seq,
            data: data.to_owned(),
            sent_at: now,
            expires_at: now.plus(window),
        };
        match outbox.append_message(&head, &message, version).await {
            Ok(_) => return Ok((message, head)),
            Err(StoreError::Conflict(_)) if attempt < MAX_CONFLICT_RETRIES => {
                attempt += 1;
                crate::backoff::pause(attempt.min(4)).await;
            }
            Err(error) => return Err(error),
        }
    }
}
