//! [`OutboxStore`] on the embedded store (`migrations/sqlite/0004_outbox.sql`): a
//! message and its head are written in one transaction, conditional on the head's
//! version; expired messages are removed by [`OutboxStore::expire`].

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, encode, sql_error};
use crate::adapters::stored::{OutboxHeadItem, OutboxMessageItem, corrupt};
use crate::domain::recovery::{OutboxHead, OutboxMessage};
use crate::domain::{Timestamp, UserId};
use crate::ports::{OutboxStore, StoreError};

/// Writes the head if it is still at `expected` (inside the caller's transaction);
/// false when another writer moved it.
fn write_head(
    connection: &rusqlite::Connection,
    user_id: &str,
    json: &str,
    version: u64,
    expected: Option<u64>,
) -> Result<bool, StoreError> {
    let changed = match expected {
        None => connection.execute(
            "INSERT INTO outbox_heads (user_id, version, item) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![user_id, version as i64, json],
        ),
        Some(expected) => connection.execute(
            "UPDATE outbox_heads SET version = ?2, item = ?3 WHERE user_id = ?1 AND version = ?4",
            params![user_id, version as i64, json, expected as i64],
        ),
    };
    Ok(changed.map_err(sql_error)? == 1)
}

fn conflict(user_id: &str) -> StoreError {
    StoreError::Conflict(format!("the outbox of {user_id} moved").into())
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn head(&self, user_id: &UserId) -> Result<Option<(OutboxHead, u64)>, StoreError> {
        let id = user_id.to_string();
        let row: Option<(i64, String)> = self
            .with(move |connection| {
                connection
                    .query_row("SELECT version, item FROM outbox_heads WHERE user_id = ?1", params![id], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .optional()
                    .map_err(sql_error)
            })
            .await?;
        row.map(|(version, json)| {
            let item: OutboxHeadItem =
                serde_json::from_str(&json).map_err(|error| corrupt(format!("outbox head: {error}")))?;
            Ok((OutboxHead::try_from(item)?, version as u64))
        })
        .transpose()
    }

    async fn append_message(
        &self,
        head: &OutboxHead,
        message: &OutboxMessage,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let version = expected_version.map_or(1, |version| version + 1);
        let head_json = encode(&OutboxHeadItem::from(head))?;
        let message_json = encode(&OutboxMessageItem::from(message))?;
        let (user_id, seq, expires) = (message.user_id.to_string(), message.seq, message.expires_at.epoch_millis());
        self.with(move |connection| {
            let transaction = connection.transaction().map_err(sql_error)?;
            if !write_head(&transaction, &user_id, &head_json, version, expected_version)? {
                return Err(conflict(&user_id));
            }
            let inserted = transaction
                .execute(
                    "INSERT INTO outbox_messages (user_id, seq, expires_at_ms, item) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT DO NOTHING",
                    params![user_id, seq as i64, expires, message_json],
                )
                .map_err(sql_error)?;
            if inserted != 1 {
                return Err(conflict(&user_id));
            }
            transaction.commit().map_err(sql_error)
        })
        .await?;
        Ok(version)
    }

    async fn put_head(
        &self,
        user_id: &UserId,
        head: &OutboxHead,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let version = expected_version.map_or(1, |version| version + 1);
        let json = encode(&OutboxHeadItem::from(head))?;
        let id = user_id.to_string();
        let written =
            self.with(move |connection| write_head(connection, &id, &json, version, expected_version)).await?;
        if !written {
            return Err(conflict(user_id.as_str()));
        }
        Ok(version)
    }

    async fn messages(
        &self,
        user_id: &UserId,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let id = user_id.to_string();
        let rows: Vec<String> = self
            .with(move |connection| {
                let mut statement = connection
                    .prepare_cached(
                        "SELECT item FROM outbox_messages WHERE user_id = ?1 AND seq > ?2 AND seq <= ?3 \
                         ORDER BY seq LIMIT ?4",
                    )
                    .map_err(sql_error)?;
                let rows = statement
                    .query_map(params![id, after as i64, until.min(i64::MAX as u64) as i64, limit as i64], |row| {
                        row.get(0)
                    })
                    .map_err(sql_error)?;
                rows.collect::<Result<Vec<String>, _>>().map_err(sql_error)
            })
            .await?;
        rows.iter()
            .map(|json| {
                let item: OutboxMessageItem =
                    serde_json::from_str(json).map_err(|error| corrupt(format!("outbox message: {error}")))?;
                OutboxMessage::try_from(item)
            })
            .collect()
    }

    async fn expire(&self, now: Timestamp) -> Result<usize, StoreError> {
        let now = now.epoch_millis();
        self.with(move |connection| {
            connection.execute("DELETE FROM outbox_messages WHERE expires_at_ms <= ?1", params![now]).map_err(sql_error)
        })
        .await
    }
}
