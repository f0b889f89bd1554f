//! The stored shape of a user's outbox (reconnect recovery): the head and the
//! messages kept for the window, with the attribute names of the outbox table.

use serde::{Deserialize, Serialize};

use super::{corrupt, timestamp};
use crate::domain::recovery::{OutboxHead, OutboxMessage, ResumeState};
use crate::domain::{ConnectionId, Timestamp, UserId};
use crate::ports::StoreError;

/// A connection that resumed, and where its resume stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumedItem {
    pub connection_id: String,
    pub state: String,
    /// A replaying mark's end, epoch milliseconds (absent: it has ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
}

/// The head: the last sequence number given and the resumed connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxHeadItem {
    pub last_seq: u64,
    #[serde(default)]
    pub resumed: Vec<ResumedItem>,
}

impl From<&OutboxHead> for OutboxHeadItem {
    fn from(head: &OutboxHead) -> Self {
        Self {
            last_seq: head.last_seq,
            resumed: head
                .resumed
                .iter()
                .map(|(connection_id, state)| ResumedItem {
                    connection_id: connection_id.to_string(),
                    state: state.as_str().to_owned(),
                    until: match state {
                        ResumeState::Replaying { until } => Some(until.epoch_millis()),
                        ResumeState::Live => None,
                    },
                })
                .collect(),
        }
    }
}

impl TryFrom<OutboxHeadItem> for OutboxHead {
    type Error = StoreError;

    fn try_from(item: OutboxHeadItem) -> Result<Self, StoreError> {
        let resumed = item
            .resumed
            .into_iter()
            .map(|resumed| {
                let until = Timestamp::from_epoch_millis(resumed.until.unwrap_or(0));
                let state = ResumeState::parse(&resumed.state, until)
                    .ok_or_else(|| corrupt(format!("resume state {:?}", resumed.state)))?;
                Ok((ConnectionId::parse(resumed.connection_id).map_err(corrupt)?, state))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(OutboxHead { last_seq: item.last_seq, resumed })
    }
}

/// A message kept for the window. `expiresAt` is epoch seconds (DynamoDB's TTL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxMessageItem {
    pub user_id: String,
    pub seq: u64,
    pub data: String,
    pub sent_at: String,
    pub expires_at: i64,
    /// The end of the window to the millisecond (`expiresAt` is whole seconds).
    pub expires_at_ms: i64,
}

impl From<&OutboxMessage> for OutboxMessageItem {
    fn from(message: &OutboxMessage) -> Self {
        Self {
            user_id: message.user_id.to_string(),
            seq: message.seq,
            data: message.data.clone(),
            sent_at: message.sent_at.to_rfc3339(),
            expires_at: message.expires_at.epoch_seconds(),
            expires_at_ms: message.expires_at.epoch_millis(),
        }
    }
}

impl TryFrom<OutboxMessageItem> for OutboxMessage {
    type Error = StoreError;

    fn try_from(item: OutboxMessageItem) -> Result<Self, StoreError> {
        Ok(OutboxMessage {
            user_id: UserId::parse(item.user_id).map_err(corrupt)?,
            seq: item.seq,
            data: item.data,
            sent_at: timestamp("sentAt", &item.sent_at)?,
            expires_at: Timestamp::from_epoch_millis(item.expires_at_ms),
        })
    }
}
