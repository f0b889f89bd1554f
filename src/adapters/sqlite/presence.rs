//! [`PresenceStore`] on the embedded store: the `presence` table
//! (`migrations/sqlite/0003_presence.sql`), one row per user, the record as JSON
//! with the DynamoDB item's attribute names, `check_at` indexed where set.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, decode_cursor, encode, encode_cursor, sql_error};
use crate::adapters::stored::{PresenceItem, corrupt};
use crate::domain::presence::PresenceRecord;
use crate::domain::{Timestamp, UserId};
use crate::ports::{Page, PageRequest, PresenceStore, StoreError, ViewCursor};

fn decode(json: &str) -> Result<PresenceRecord, StoreError> {
    let item: PresenceItem = serde_json::from_str(json).map_err(|error| corrupt(format!("presence item: {error}")))?;
    PresenceRecord::try_from(item)
}

#[async_trait]
impl PresenceStore for SqliteStore {
    async fn presence(&self, user_id: &UserId) -> Result<Option<(PresenceRecord, u64)>, StoreError> {
        let id = user_id.to_string();
        let row: Option<(i64, String)> = self
            .with(move |connection| {
                connection
                    .query_row("SELECT version, item FROM presence WHERE user_id = ?1", params![id], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .optional()
                    .map_err(sql_error)
            })
            .await?;
        row.map(|(version, json)| Ok((decode(&json)?, version as u64))).transpose()
    }

    async fn put_presence(
        &self,
        record: &PresenceRecord,
        check_at: Option<Timestamp>,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let version = expected_version.map_or(1, |version| version + 1);
        let json = encode(&PresenceItem::from(record))?;
        let user_id = record.user_id.to_string();
        let id = user_id.clone();
        let check_at = check_at.map(|at| at.to_rfc3339());
        let changed = self
            .with(move |connection| {
                let result = match expected_version {
                    None => connection.execute(
                        "INSERT INTO presence (user_id, version, check_at, item) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT DO NOTHING",
                        params![id, version as i64, check_at, json],
                    ),
                    Some(expected) => connection.execute(
                        "UPDATE presence SET version = ?2, check_at = ?3, item = ?4 WHERE user_id = ?1 AND version = ?5",
                        params![id, version as i64, check_at, json, expected as i64],
                    ),
                };
                result.map_err(sql_error)
            })
            .await?;
        if changed == 0 {
            return Err(StoreError::Conflict(
                format!("presence of {user_id} is not at version {expected_version:?}").into(),
            ));
        }
        Ok(version)
    }

    async fn list_presence(
        &self,
        due_by: Option<Timestamp>,
        page: PageRequest<ViewCursor>,
    ) -> Result<Page<PresenceRecord, ViewCursor>, StoreError> {
        let (after_check, after_id) = match &page.after {
            Some(cursor) => decode_cursor(cursor)?,
            None => (String::new(), String::new()),
        };
        // Far in the future when every record in the index is wanted.
        let due_by = due_by.map_or_else(|| "9999".to_owned(), |at| at.to_rfc3339());
        let limit = page.limit;
        let rows: Vec<(String, String, String)> = self
            .with(move |connection| {
                let mut statement = connection
                    .prepare_cached(
                        "SELECT check_at, user_id, item FROM presence WHERE check_at IS NOT NULL AND check_at <= ?1 \
                         AND (check_at > ?2 OR (check_at = ?2 AND user_id > ?3)) \
                         ORDER BY check_at, user_id LIMIT ?4",
                    )
                    .map_err(sql_error)?;
                let rows = statement
                    .query_map(params![due_by, after_check, after_id, (limit + 1) as i64], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .map_err(sql_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)
            })
            .await?;
        let next = (rows.len() > limit).then(|| encode_cursor(&rows[limit - 1].0, &rows[limit - 1].1));
        let items = rows.iter().take(limit).map(|(_, _, json)| decode(json)).collect::<Result<Vec<_>, _>>()?;
        Ok(Page { items, next })
    }
}
