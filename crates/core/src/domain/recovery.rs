//! Reconnect recovery (docs/contract.md, "Round three"): every message sent to a
//! user gets the user's next sequence number and is kept for the recovery window,
//! so that a client coming back on a new connection can `resume` from the last
//! `seq` it saw.
//!
//! The rules here are pure: what a `resume` asks for, given what the outbox holds
//! ([`plan_resume`]), and how a resuming connection moves from replaying to live
//! ([`ResumeState`]), which is what keeps a message sent during a replay from being
//! lost, reordered or delivered twice:
//!
//! - a resume first marks its connection `Replaying` (a write that changes the
//!   outbox head's version), then reads the messages after `lastSeq` up to the
//!   head's `last_seq` and replays them in order, then marks the connection `Live`
//!   on condition that no message was added meanwhile (otherwise it replays those
//!   too and tries again);
//! - a sender assigns a sequence number with a write conditional on the head's
//!   version, so it sees every mark made before its message exists: it skips a
//!   `Replaying` connection (the replay will carry its message), posts a
//!   `delivery` frame to a `Live` one, and the message as today to the others.

use chrono::TimeDelta;

use super::ids::{ConnectionId, UserId};
use super::protocol::{MAX_MESSAGE_BYTES, ServerMessage};
use super::time::Timestamp;

/// How long a sent message is kept for a resume (`RECOVERY_WINDOW_SECS`).
pub const DEFAULT_RECOVERY_WINDOW: TimeDelta = TimeDelta::seconds(120);
/// At most this many messages are replayed by one resume.
pub const MAX_REPLAY_MESSAGES: usize = 1_000;
/// At most this many bytes of messages are replayed by one resume.
pub const MAX_REPLAY_BYTES: usize = 1024 * 1024;
/// How long a replay may post before it stops and says so (`resume_failed` with
/// reason `deadline`; the messages are still kept, so the client resumes again from
/// the last `seq` it saw): the handler's Lambda must answer within 29 s.
pub const REPLAY_BUDGET: TimeDelta = TimeDelta::seconds(20);
/// How long after its budget a `Replaying` mark still holds senders back. Past it
/// the replay is taken to have died (its Lambda timed out, crashed or lost the
/// store) and senders post to the connection as to a live one, so a replay that
/// never finished cannot leave the connection without messages; the `seq` of the
/// next delivery shows the client its gap.
pub const REPLAYING_MARK_MARGIN: TimeDelta = TimeDelta::seconds(5);
/// At most this many connections of one user are remembered as resumed; the
/// oldest mark is forgotten beyond it (that connection then gets messages as today).
pub const MAX_RESUMED_CONNECTIONS: usize = 32;

/// The message a sender asks to keep, as text, or why it cannot be kept: it must
/// be UTF-8 (a `delivery` frame carries it in JSON) and its `delivery` frame must
/// fit in one API Gateway message ([`MAX_MESSAGE_BYTES`]), or no replay could post
/// it. Checked before anything is numbered, so a refused message changes nothing.
pub fn keepable(data: &[u8]) -> Result<&str, String> {
    let text = std::str::from_utf8(data).map_err(|error| {
        format!("a message kept for recovery must be UTF-8 text ({error}); send it with recovery off (a window of 0)")
    })?;
    let frame = ServerMessage::Delivery { seq: u64::MAX, data: text.to_owned() }.to_json();
    if frame.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "the message is too large to keep for recovery: its delivery frame is {} bytes, API Gateway posts at most {MAX_MESSAGE_BYTES}",
            frame.len()
        ));
    }
    Ok(text)
}

/// One message kept for recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub user_id: UserId,
    /// The user's sequence number: from 1, without gaps.
    pub seq: u64,
    /// The message as sent (its bytes, as text).
    pub data: String,
    pub sent_at: Timestamp,
    /// When the window ends for it.
    pub expires_at: Timestamp,
}

impl OutboxMessage {
    pub fn is_kept(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }
}

/// Where a connection that sent `resume` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResumeState {
    /// Its replay is running: senders leave it to the replay, until `until` (see
    /// [`REPLAYING_MARK_MARGIN`]).
    Replaying { until: Timestamp },
    /// It has caught up: senders post `delivery` frames to it.
    Live,
}

impl ResumeState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ResumeState::Replaying { .. } => "replaying",
            ResumeState::Live => "live",
        }
    }

    /// The state named `value`; a replaying one holds until `until`.
    pub fn parse(value: &str, until: Timestamp) -> Option<Self> {
        match value {
            "replaying" => Some(ResumeState::Replaying { until }),
            "live" => Some(ResumeState::Live),
            _ => None,
        }
    }
}

/// The head of a user's outbox: the last sequence number given, and the
/// connections that resumed, in the order they did (oldest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxHead {
    pub last_seq: u64,
    pub resumed: Vec<(ConnectionId, ResumeState)>,
}

impl OutboxHead {
    /// Marks `connection` (`None` forgets it), keeping at most
    /// [`MAX_RESUMED_CONNECTIONS`] marks.
    pub fn mark(&mut self, connection: &ConnectionId, state: Option<ResumeState>) {
        self.resumed.retain(|(resumed, _)| resumed != connection);
        if let Some(state) = state {
            self.resumed.push((connection.clone(), state));
        }
        let excess = self.resumed.len().saturating_sub(MAX_RESUMED_CONNECTIONS);
        self.resumed.drain(..excess);
    }

    pub fn state_of(&self, connection: &ConnectionId) -> Option<ResumeState> {
        self.resumed.iter().find(|(resumed, _)| resumed == connection).map(|(_, state)| *state)
    }

    /// The state a sender acts on at `now`: a `Replaying` mark past its `until`
    /// belongs to a replay that died, and counts as `Live`.
    pub fn state_at(&self, connection: &ConnectionId, now: Timestamp) -> Option<ResumeState> {
        match self.state_of(connection) {
            Some(ResumeState::Replaying { until }) if now >= until => Some(ResumeState::Live),
            state => state,
        }
    }
}

/// Why a resume cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeFailure {
    /// Some of the messages after `lastSeq` are past the window.
    Expired,
    /// More than [`MAX_REPLAY_MESSAGES`] messages to replay.
    TooMany,
    /// More than [`MAX_REPLAY_BYTES`] to replay.
    TooLarge,
    /// The replay ran out of [`REPLAY_BUDGET`] before it had posted everything;
    /// what it posted stands, the rest is still kept (resume again).
    Deadline,
}

impl ResumeFailure {
    pub fn as_str(&self) -> &'static str {
        match self {
            ResumeFailure::Expired => "expired",
            ResumeFailure::TooMany => "too_many",
            ResumeFailure::TooLarge => "too_large",
            ResumeFailure::Deadline => "deadline",
        }
    }
}

/// What to do with a `resume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumePlan {
    /// Replay these, in order (none when the client has everything).
    Replay(Vec<OutboxMessage>),
    /// `resume_failed`: the client must reload; `oldest_seq` is the oldest message kept.
    Failed { reason: ResumeFailure, oldest_seq: u64 },
    /// An error frame and no change: a `lastSeq` ahead of the last message sent.
    Refused(String),
}

/// Plans a resume from `asked` (the client's last `seq`) at `now`, given the
/// outbox head's `last_seq` and what the outbox returned for `(asked, last_seq]`
/// in sequence order (at most [`MAX_REPLAY_MESSAGES`] + 1 of them, expired ones
/// included or not).
pub fn plan_resume(asked: u64, last_seq: u64, kept: &[OutboxMessage], now: Timestamp) -> ResumePlan {
    if asked > last_seq {
        return ResumePlan::Refused(format!(
            "resume: data.lastSeq {asked} is ahead of the last message sent to this user ({last_seq})"
        ));
    }
    let kept: Vec<&OutboxMessage> =
        kept.iter().filter(|message| message.seq > asked && message.seq <= last_seq && message.is_kept(now)).collect();
    let oldest_seq = kept.first().map_or(last_seq + 1, |message| message.seq);
    let missing = last_seq - asked;
    if missing == 0 {
        return ResumePlan::Replay(Vec::new());
    }
    let contiguous = kept.iter().enumerate().all(|(index, message)| message.seq == asked + 1 + index as u64);
    if oldest_seq != asked + 1 || !contiguous {
        return ResumePlan::Failed { reason: ResumeFailure::Expired, oldest_seq };
    }
    if missing > MAX_REPLAY_MESSAGES as u64 {
        return ResumePlan::Failed { reason: ResumeFailure::TooMany, oldest_seq };
    }
    if kept.len() as u64 != missing {
        return ResumePlan::Failed { reason: ResumeFailure::Expired, oldest_seq };
    }
    if kept.iter().map(|message| message.data.len()).sum::<usize>() > MAX_REPLAY_BYTES {
        return ResumePlan::Failed { reason: ResumeFailure::TooLarge, oldest_seq };
    }
    ResumePlan::Replay(kept.into_iter().cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, sent_ms: i64) -> OutboxMessage {
        let sent_at = Timestamp::from_epoch_millis(1_764_000_000_000 + sent_ms);
        OutboxMessage {
            user_id: UserId::parse("u").unwrap(),
            seq,
            data: format!("{{\"n\":{seq}}}"),
            sent_at,
            expires_at: sent_at.plus(DEFAULT_RECOVERY_WINDOW),
        }
    }

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_epoch_millis(1_764_000_000_000 + ms)
    }

    #[test]
    fn a_replaying_mark_past_its_time_counts_as_live() {
        let mut head = OutboxHead::default();
        head.mark(&ConnectionId::parse("Replaying1=").unwrap(), Some(ResumeState::Replaying { until: at(1_000) }));
        let connection = ConnectionId::parse("Replaying1=").unwrap();
        assert_eq!(head.state_at(&connection, at(999)), Some(ResumeState::Replaying { until: at(1_000) }));
        assert_eq!(head.state_at(&connection, at(1_000)), Some(ResumeState::Live), "its replay died");
        assert_eq!(head.state_at(&ConnectionId::parse("Other1=").unwrap(), at(0)), None);
    }

    #[test]
    fn a_message_is_kept_only_as_text_whose_delivery_frame_fits_a_message() {
        assert_eq!(keepable(br#"{"n":1}"#), Ok(r#"{"n":1}"#));
        assert!(keepable(&[0xff, 0xfe]).unwrap_err().contains("UTF-8"), "binary data");
        let fits = format!("\"{}\"", "x".repeat(MAX_MESSAGE_BYTES - 80));
        assert!(keepable(fits.as_bytes()).is_ok());
        let too_large = format!("\"{}\"", "x".repeat(MAX_MESSAGE_BYTES - 10));
        let error = keepable(too_large.as_bytes()).unwrap_err();
        assert!(error.contains("too large") && error.contains("131072"), "{error}");
    }

    fn seqs(plan: &ResumePlan) -> Vec<u64> {
        match plan {
            ResumePlan::Replay(messages) => messages.iter().map(|message| message.seq).collect(),
            other => panic!("not a replay: {other:?}"),
        }
    }

    #[test]
    fn a_gap_is_replayed_in_order_and_nothing_when_the_client_has_everything() {
        let kept: Vec<OutboxMessage> = (1..=5).map(|seq| message(seq, seq as i64 * 1_000)).collect();
        assert_eq!(seqs(&plan_resume(2, 5, &kept, at(10_000))), vec![3, 4, 5]);
        assert_eq!(seqs(&plan_resume(5, 5, &kept, at(10_000))), Vec::<u64>::new());
        assert_eq!(seqs(&plan_resume(0, 5, &kept, at(10_000))), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_future_last_seq_is_refused_and_an_expired_window_fails_with_the_oldest_kept() {
        let kept: Vec<OutboxMessage> = (1..=5).map(|seq| message(seq, seq as i64 * 1_000)).collect();
        assert!(matches!(plan_resume(6, 5, &kept, at(10_000)), ResumePlan::Refused(_)));
        // Messages 1 and 2 are past the window at 122.5 s; 3 to 5 are kept.
        assert_eq!(
            plan_resume(0, 5, &kept, at(122_500)),
            ResumePlan::Failed { reason: ResumeFailure::Expired, oldest_seq: 3 }
        );
        assert_eq!(seqs(&plan_resume(2, 5, &kept, at(122_500))), vec![3, 4, 5]);
        // Everything expired (or deleted by TTL): the oldest kept is the next one.
        assert_eq!(
            plan_resume(1, 5, &[], at(500_000)),
            ResumePlan::Failed { reason: ResumeFailure::Expired, oldest_seq: 6 }
        );
    }

    #[test]
    fn a_replay_is_bounded_in_messages_and_bytes() {
        let many: Vec<OutboxMessage> = (1..=1_001).map(|seq| message(seq, 0)).collect();
        assert!(matches!(
            plan_resume(0, 1_001, &many, at(1)),
            ResumePlan::Failed { reason: ResumeFailure::TooMany, .. }
        ));
        assert_eq!(seqs(&plan_resume(1, 1_001, &many, at(1))).len(), 1_000);
        let mut large: Vec<OutboxMessage> = (1..=3).map(|seq| message(seq, 0)).collect();
        for message in &mut large {
            message.data = "x".repeat(400 * 1024);
        }
        assert!(matches!(plan_resume(0, 3, &large, at(1)), ResumePlan::Failed { reason: ResumeFailure::TooLarge, .. }));
    }

    #[test]
    fn marks_are_bounded_and_replaced() {
        let mut head = OutboxHead::default();
        let connection = |index: usize| ConnectionId::parse(format!("c{index}")).unwrap();
        for index in 0..(MAX_RESUMED_CONNECTIONS + 3) {
            head.mark(&connection(index), Some(ResumeState::Replaying { until: at(1_000) }));
        }
        assert_eq!(head.resumed.len(), MAX_RESUMED_CONNECTIONS);
        assert_eq!(head.state_of(&connection(0)), None, "the oldest marks are forgotten");
        head.mark(&connection(5), Some(ResumeState::Live));
        assert_eq!(head.state_of(&connection(5)), Some(ResumeState::Live));
        head.mark(&connection(5), None);
        assert_eq!(head.state_of(&connection(5)), None);
    }
}
