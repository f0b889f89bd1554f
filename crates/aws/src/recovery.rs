//! Reconnect recovery as a service over the [`OutboxStore`] and
//! [`ConnectionGateway`] ports: numbering and keeping a message before it is posted
//! ([`keep`], which `delivery` calls), and serving a `resume` ([`resume`], which the
//! handler calls). The rules are `domain::recovery`'s.

use chrono::TimeDelta;

use crate::domain::protocol::ServerMessage;
use crate::domain::recovery::{
    MAX_REPLAY_MESSAGES, OutboxHead, OutboxMessage, REPLAYING_MARK_MARGIN, ResumeFailure, ResumePlan, ResumeState,
    plan_resume,
};
use crate::domain::{ConnectionId, Timestamp, UserId};
use crate::ports::{ConnectionGateway, GatewayError, OutboxStore, StoreError};

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

/// What a resume did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// `resumed` and this many deliveries were posted (and any message sent while
    /// they were, after them); the connection is live.
    Replayed { replayed: u64, live_deliveries: u64 },
    /// `resume_failed` was posted after `posted` deliveries: none when the resume
    /// could not be served (nothing changed), some when the replay ran out of its
    /// budget (`Deadline`; the connection is live).
    Failed { reason: ResumeFailure, oldest_seq: u64, posted: u64 },
    /// The request was wrong (a `lastSeq` ahead of the last message): an error
    /// frame, nothing changed.
    Refused(String),
    /// The connection went away while being replayed to.
    Gone,
}

/// Why a resume could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("the outbox: {0}")]
    Store(#[from] StoreError),
    #[error("posting to the connection: {0}")]
    Gateway(GatewayError),
    #[error("the outbox kept changing; the resume gave up")]
    Busy,
}

/// How many times a resume re-reads the outbox head before it gives up (a user
/// receiving messages without pause while one of their connections resumes).
const MAX_RESUME_ROUNDS: u32 = 64;

/// Serves `resume` from `asked` on `connection` of `user`: marks the connection
/// replaying, posts `resumed` and every kept message after `asked` in order, then
/// any message sent meanwhile, and marks it live once no message came in between
/// (see `domain::recovery`). Frames go through `gateway`, so that they arrive in
/// order whatever runs the handler.
///
/// The replay posts for at most `budget` (`domain::recovery::REPLAY_BUDGET` in the
/// handler); if that is not enough it stops, marks the connection live and posts
/// `resume_failed` with reason `deadline`. Senders wait for the replay only until
/// the budget and a margin are over, so a replay cut short by anything (the
/// Lambda's timeout included) never leaves the connection without messages.
pub async fn resume(
    outbox: &dyn OutboxStore,
    gateway: &dyn ConnectionGateway,
    user_id: &UserId,
    connection: &ConnectionId,
    asked: u64,
    now: Timestamp,
    budget: TimeDelta,
) -> Result<ResumeOutcome, ResumeError> {
    let stop_at = tokio::time::Instant::now() + budget.to_std().unwrap_or_default();
    let replaying = ResumeState::Replaying { until: now.plus(budget).plus(REPLAYING_MARK_MARGIN) };
    let (head, _) = match mark(outbox, user_id, connection, Some(replaying), Some(asked)).await? {
        Marked::Done(head, version) => (head, version),
        Marked::Ahead(last_seq) => {
            return Ok(ResumeOutcome::Refused(format!(
                "resume: data.lastSeq {asked} is ahead of the last message sent to this user ({last_seq})"
            )));
        }
    };
    let kept = outbox.messages(user_id, asked, head.last_seq, MAX_REPLAY_MESSAGES + 1).await?;
    let messages = match plan_resume(asked, head.last_seq, &kept, now) {
        ResumePlan::Replay(messages) => messages,
        ResumePlan::Failed { reason, oldest_seq } => {
            mark(outbox, user_id, connection, None, None).await?;
            return fail(gateway, connection, reason, oldest_seq, 0).await;
        }
        ResumePlan::Refused(message) => return Ok(ResumeOutcome::Refused(message)),
    };
    let replayed = messages.len() as u64;
    if !post(gateway, connection, &ServerMessage::Resumed { last_seq: asked, replayed }).await? {
        return Ok(ResumeOutcome::Gone);
    }
    match post_all(gateway, connection, &messages, stop_at).await? {
        Posted::All => {}
        Posted::Gone => return Ok(ResumeOutcome::Gone),
        Posted::Cut(posted) => return cut(outbox, gateway, user_id, connection, posted).await,
    }
    match go_live(outbox, gateway, user_id, connection, head.last_seq, stop_at).await? {
        Live::Marked(live_deliveries) => Ok(ResumeOutcome::Replayed { replayed, live_deliveries }),
        Live::Gone => Ok(ResumeOutcome::Gone),
        Live::Cut(posted) => cut(outbox, gateway, user_id, connection, replayed + posted).await,
    }
}

/// A replay out of budget after `posted` deliveries: the connection is marked live
/// (senders post to it again) and told `resume_failed` `deadline`, with the oldest
/// message kept; what was posted stands and the rest can be asked for again.
async fn cut(
    outbox: &dyn OutboxStore,
    gateway: &dyn ConnectionGateway,
    user_id: &UserId,
    connection: &ConnectionId,
    posted: u64,
) -> Result<ResumeOutcome, ResumeError> {
    // Without `asked`, the mark is never refused as ahead.
    let last_seq = match mark(outbox, user_id, connection, Some(ResumeState::Live), None).await? {
        Marked::Done(head, _) => head.last_seq,
        Marked::Ahead(last_seq) => last_seq,
    };
    let oldest = outbox.messages(user_id, 0, last_seq, 1).await?;
    let oldest_seq = oldest.first().map_or(last_seq + 1, |message| message.seq);
    fail(gateway, connection, ResumeFailure::Deadline, oldest_seq, posted).await
}

/// Posts `resume_failed` for `reason` after `posted` deliveries.
async fn fail(
    gateway: &dyn ConnectionGateway,
    connection: &ConnectionId,
    reason: ResumeFailure,
    oldest_seq: u64,
    posted: u64,
) -> Result<ResumeOutcome, ResumeError> {
    let frame = ServerMessage::ResumeFailed { reason: reason.as_str().to_owned(), oldest_seq };
    match post(gateway, connection, &frame).await? {
        true => Ok(ResumeOutcome::Failed { reason, oldest_seq, posted }),
        false => Ok(ResumeOutcome::Gone),
    }
}

enum Live {
    /// Marked live after this many deliveries sent during the replay.
    Marked(u64),
    Gone,
    /// Out of budget after this many deliveries sent during the replay.
    Cut(u64),
}

/// Marks the connection live, on condition that the head has not moved since it
/// was read; posts what was sent after `through` (during the replay) first.
async fn go_live(
    outbox: &dyn OutboxStore,
    gateway: &dyn ConnectionGateway,
    user_id: &UserId,
    connection: &ConnectionId,
    mut through: u64,
    stop_at: tokio::time::Instant,
) -> Result<Live, ResumeError> {
    let mut live_deliveries = 0;
    for _ in 0..MAX_RESUME_ROUNDS {
        let (mut head, current) = outbox.head(user_id).await?.ok_or(ResumeError::Busy)?;
        if head.last_seq > through {
            let sent_meanwhile = outbox.messages(user_id, through, head.last_seq, usize::MAX).await?;
            match post_all(gateway, connection, &sent_meanwhile, stop_at).await? {
                Posted::All => {}
                Posted::Gone => return Ok(Live::Gone),
                Posted::Cut(posted) => return Ok(Live::Cut(live_deliveries + posted)),
            }
            live_deliveries += sent_meanwhile.len() as u64;
            through = head.last_seq;
        }
        head.mark(connection, Some(ResumeState::Live));
        match outbox.put_head(user_id, &head, Some(current)).await {
            Ok(_) => return Ok(Live::Marked(live_deliveries)),
            Err(StoreError::Conflict(_)) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(ResumeError::Busy)
}

enum Marked {
    Done(OutboxHead, u64),
    /// The resume asked from beyond the head's last number.
    Ahead(u64),
}

/// Sets the connection's mark in the head (`None` forgets it), again on conflict;
/// with `asked`, refuses first when it is ahead of the head.
async fn mark(
    outbox: &dyn OutboxStore,
    user_id: &UserId,
    connection: &ConnectionId,
    state: Option<ResumeState>,
    asked: Option<u64>,
) -> Result<Marked, ResumeError> {
    for attempt in 0..MAX_RESUME_ROUNDS {
        let (mut head, version) = match outbox.head(user_id).await? {
            Some((head, version)) => (head, Some(version)),
            None => (OutboxHead::default(), None),
        };
        if asked.is_some_and(|asked| asked > head.last_seq) {
            return Ok(Marked::Ahead(head.last_seq));
        }
        head.mark(connection, state);
        match outbox.put_head(user_id, &head, version).await {
            Ok(version) => return Ok(Marked::Done(head, version)),
            Err(StoreError::Conflict(_)) => crate::backoff::pause(attempt.min(4) + 1).await,
            Err(error) => return Err(error.into()),
        }
    }
    Err(ResumeError::Busy)
}

/// Posts `frame`; false when the connection is gone.
async fn post(
    gateway: &dyn ConnectionGateway,
    connection: &ConnectionId,
    frame: &ServerMessage,
) -> Result<bool, ResumeError> {
    match crate::posting::post_with_retries(gateway, connection, frame.to_json().as_bytes()).await {
        Ok(()) => Ok(true),
        Err(GatewayError::Gone) => Ok(false),
        Err(error) => Err(ResumeError::Gateway(error)),
    }
}

enum Posted {
    All,
    Gone,
    /// `stop_at` came after this many.
    Cut(u64),
}

/// Posts each message as a `delivery`, in order, none once `stop_at` has come.
async fn post_all(
    gateway: &dyn ConnectionGateway,
    connection: &ConnectionId,
    messages: &[OutboxMessage],
    stop_at: tokio::time::Instant,
) -> Result<Posted, ResumeError> {
    for (posted, message) in messages.iter().enumerate() {
        if tokio::time::Instant::now() >= stop_at {
            return Ok(Posted::Cut(posted as u64));
        }
        let frame = ServerMessage::Delivery { seq: message.seq, data: message.data.clone() };
        if !post(gateway, connection, &frame).await? {
            return Ok(Posted::Gone);
        }
    }
    Ok(Posted::All)
}
