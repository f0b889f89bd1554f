//! Presence as an application service: keeps each user's [`PresenceRecord`] from
//! the views the projector wrote, and delivers its presence events to the sinks.
//!
//! Per user touched by a batch: one strongly consistent read of the record and,
//! when something changed, one conditional write (re-read and redone on conflict).
//! The other devices' views are not read: the record already holds what presence
//! needs of them. Events are queued in the record *before* any sink sees them, and
//! leave it only once a sink acknowledged them (at least once, in order per user,
//! the same ids every time). A sink that fails is retried by the record's own
//! back-off ([`PresenceRecord::delivery_failed`]), on the next batch of that user
//! or by [`check_due`]; projection of views never waits for it, since views are
//! written before presence runs.
//!
//! [`check_due`] is the follow-up that nothing else triggers: an offline whose grace
//! has ended, a ghost past its `live_until`, a delivery to retry. The projector
//! Lambda runs it on a schedule, `serve` every second (ARCHITECTURE.md explains why).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::TimeDelta;
use futures::stream::{self, StreamExt};

use crate::domain::presence::{DEFAULT_GRACE, PresenceEvent, PresenceRecord};
use crate::domain::{ConnectionInfo, Timestamp, UserId};
use crate::metrics::{Metrics, names};
use crate::ports::{PageRequest, PresenceSink, PresenceStore, StoreError};

/// How many users are brought up to date at once.
const CONCURRENCY: usize = 8;
/// How often a write that lost to a concurrent writer is tried again.
const MAX_CONFLICT_RETRIES: u32 = 8;
/// At most this many due records per [`check_due`] run; the rest wait for the next.
const DUE_PER_RUN: usize = 1_000;

/// What presence needs: its store, the sinks, the grace period, the counters.
#[derive(Clone)]
pub struct Presence {
    pub store: Arc<dyn PresenceStore>,
    pub sinks: Vec<Arc<dyn PresenceSink>>,
    pub grace: TimeDelta,
    pub metrics: Arc<Metrics>,
}

impl Presence {
    pub fn new(store: Arc<dyn PresenceStore>, metrics: Arc<Metrics>) -> Self {
        Self { store, sinks: Vec::new(), grace: DEFAULT_GRACE, metrics }
    }

    fn sink_names(&self) -> Vec<String> {
        self.sinks.iter().map(|sink| sink.name().to_owned()).collect()
    }
}

/// What a round of presence work did.
#[derive(Debug, Default)]
pub struct PresenceReport {
    pub users: usize,
    /// The events made, in order per user.
    pub told: Vec<PresenceEvent>,
    /// Users whose record could not be written (their views' records must come again).
    pub failed: Vec<UserId>,
}

impl PresenceReport {
    fn merge(&mut self, user_id: UserId, result: Result<Vec<PresenceEvent>, StoreError>) {
        self.users += 1;
        match result {
            Ok(told) => self.told.extend(told),
            Err(error) => {
                tracing::error!(%user_id, error = %crate::error_chain::chain(&error), "writing presence failed");
                self.failed.push(user_id);
            }
        }
    }
}

/// Brings the presence of the users of `views` (views just projected) up to date at `now`.
pub async fn observe(presence: &Presence, views: &[ConnectionInfo], now: Timestamp) -> PresenceReport {
    // Owned, so that the futures below hold no borrow of `views` (they must be `Send`
    // for any lifetime when a spawned task awaits them).
    let mut by_user: BTreeMap<UserId, Vec<ConnectionInfo>> = BTreeMap::new();
    for view in views {
        by_user.entry(view.user_id.clone()).or_default().push(view.clone());
    }
    update_all(presence, by_user, now).await
}

/// Brings each user up to date with their views, [`CONCURRENCY`] users at a time.
async fn update_all(
    presence: &Presence,
    users: impl IntoIterator<Item = (UserId, Vec<ConnectionInfo>)>,
    now: Timestamp,
) -> PresenceReport {
    let results: Vec<(UserId, Result<Vec<PresenceEvent>, StoreError>)> = stream::iter(users)
        .map(|(user_id, views)| async move {
            let result = update_user(presence, &user_id, &views, now).await;
            (user_id, result)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut report = PresenceReport::default();
    for (user_id, result) in results {
        report.merge(user_id, result);
    }
    report
}

/// Settles every record that is due at `now` (an offline whose grace ended, a
/// ghost, a delivery to retry), at most [`DUE_PER_RUN`] of them.
pub async fn check_due(presence: &Presence, now: Timestamp) -> Result<PresenceReport, StoreError> {
    let mut due = Vec::new();
    let mut page = PageRequest::first(DUE_PER_RUN);
    loop {
        let listed = presence.store.list_presence(Some(now), page.clone()).await?;
        due.extend(listed.items.into_iter().map(|record| record.user_id));
        match listed.next {
            Some(next) if due.len() < DUE_PER_RUN => page.after = Some(next),
            _ => break,
        }
    }
    Ok(update_all(presence, due.into_iter().map(|user_id| (user_id, Vec::new())), now).await)
}

/// The presence of one user as read at `now` (`None`: never seen).
pub async fn read(
    store: &dyn PresenceStore,
    user_id: &UserId,
    now: Timestamp,
) -> Result<Option<crate::domain::presence::Presence>, StoreError> {
    Ok(store.presence(user_id).await?.map(|(record, _)| record.presence(now)))
}

/// The users online at `now`, in user id order: the records in the store's index,
/// which holds every user with a live device (and a few more: offlines waiting for
/// their grace, deliveries to retry).
pub async fn online(
    store: &dyn PresenceStore,
    now: Timestamp,
) -> Result<Vec<crate::domain::presence::Presence>, StoreError> {
    let mut online = Vec::new();
    let mut page = PageRequest::first(1_000);
    loop {
        let listed = store.list_presence(None, page.clone()).await?;
        online.extend(
            listed.items.iter().map(|record| record.presence(now)).filter(|presence| !presence.devices.is_empty()),
        );
        match listed.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    online.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    Ok(online)
}

/// Observes `views` into the user's record, settles it at `now`, writes it if it
/// changed, then delivers what it owes. Returns the events made.
async fn update_user(
    presence: &Presence,
    user_id: &UserId,
    views: &[ConnectionInfo],
    now: Timestamp,
) -> Result<Vec<PresenceEvent>, StoreError> {
    let sinks = presence.sink_names();
    let mut attempt = 0;
    loop {
        let stored = presence.store.presence(user_id).await?;
        let mut record =
            stored.as_ref().map_or_else(|| PresenceRecord::new(user_id.clone()), |(record, _)| record.clone());
        for view in views {
            record.observe(view);
        }
        let told = record.settle(now, presence.grace, &sinks);
        let dropped = record.trim_outbox();
        let version = stored.as_ref().map(|(_, version)| *version);
        if stored.as_ref().is_some_and(|(before, _)| *before == record) {
            deliver(presence, record, version, now).await;
            return Ok(told);
        }
        match presence.store.put_presence(&record, record.check_at(presence.grace), version).await {
            Ok(version) => {
                presence.metrics.add(names::PRESENCE_EVENTS, told.len() as u64);
                presence.metrics.add(names::PRESENCE_EVENTS_DROPPED, dropped as u64);
                deliver(presence, record, Some(version), now).await;
                return Ok(told);
            }
            Err(StoreError::Conflict(_)) if attempt < MAX_CONFLICT_RETRIES => {
                attempt += 1;
                crate::backoff::pause(attempt).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Publishes what `record` owes each sink (unless its back-off says wait), then
/// writes down what was acknowledged. A failure to write that down is only logged:
/// the events stay owed and go again (at least once).
async fn deliver(presence: &Presence, record: PresenceRecord, version: Option<u64>, now: Timestamp) {
    let user_id = record.user_id.clone();
    if let Err(error) = try_deliver(presence, record, version, now).await {
        tracing::warn!(%user_id, error = %crate::error_chain::chain(&error), "recording delivered presence events failed; they will be delivered again");
    }
}

async fn try_deliver(
    presence: &Presence,
    mut record: PresenceRecord,
    mut version: Option<u64>,
    now: Timestamp,
) -> Result<(), StoreError> {
    if record.outbox.is_empty() || !record.delivery_due(now) {
        return Ok(());
    }
    let mut acknowledged: Vec<(String, Vec<String>)> = Vec::new();
    let mut failed = false;
    for sink in &presence.sinks {
        let owed = record.owed_to(sink.name());
        if owed.is_empty() {
            continue;
        }
        match sink.publish(&owed).await {
            Ok(()) => {
                presence.metrics.add(names::PRESENCE_DELIVERED, owed.len() as u64);
                acknowledged.push((sink.name().to_owned(), owed.into_iter().map(|event| event.event_id).collect()));
            }
            Err(error) => {
                tracing::warn!(user_id = %record.user_id, sink = sink.name(), %error, events = owed.len(), "presence events not delivered; kept for the next attempt");
                presence.metrics.add_by(names::PRESENCE_DELIVERY_FAILURES, "Sink", sink.name(), 1);
                failed = true;
            }
        }
    }
    for attempt in 0..=MAX_CONFLICT_RETRIES {
        for (sink, event_ids) in &acknowledged {
            record.delivered(sink, event_ids);
        }
        if failed {
            record.delivery_failed(now);
        } else {
            record.delivery_succeeded();
        }
        match presence.store.put_presence(&record, record.check_at(presence.grace), version).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict(_)) if attempt < MAX_CONFLICT_RETRIES => {
                crate::backoff::pause(attempt + 1).await;
                let Some((stored, stored_version)) = presence.store.presence(&record.user_id).await? else {
                    return Ok(());
                };
                (record, version) = (stored, Some(stored_version));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// How presence is configured: `PRESENCE` (`off` turns it off), `PRESENCE_GRACE_SECS`
/// (default 5), `PRESENCE_WEBHOOK_URL` with `PRESENCE_WEBHOOK_SECRET`, and
/// `PRESENCE_EVENT_BUS` (a name or an ARN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceSettings {
    pub enabled: bool,
    pub grace: TimeDelta,
    pub webhook: Option<(String, String)>,
    pub event_bus: Option<String>,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self { enabled: true, grace: DEFAULT_GRACE, webhook: None, event_bus: None }
    }
}

impl PresenceSettings {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let enabled = match lookup("PRESENCE").map(|value| value.trim().to_ascii_lowercase()).as_deref() {
            None | Some("" | "on") => true,
            Some("off") => false,
            Some(other) => return Err(format!("PRESENCE={other:?} is neither on nor off")),
        };
        let grace = crate::setting::number::<u32>(&lookup, "PRESENCE_GRACE_SECS")?
            .map_or(DEFAULT_GRACE, |seconds| TimeDelta::seconds(i64::from(seconds)));
        let url = lookup("PRESENCE_WEBHOOK_URL");
        let secret = lookup("PRESENCE_WEBHOOK_SECRET");
        let webhook = crate::adapters::webhook::check_config(url.as_deref(), secret.as_deref())?
            .map(|(uri, secret)| (uri.to_string(), secret));
        let event_bus = lookup("PRESENCE_EVENT_BUS").map(|bus| bus.trim().to_owned()).filter(|bus| !bus.is_empty());
        Ok(Self { enabled, grace, webhook, event_bus })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_from_the_environment_and_refuse_in_one_line() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned())
        };
        assert_eq!(PresenceSettings::from_lookup(env(&[])).unwrap(), PresenceSettings::default());
        let settings = PresenceSettings::from_lookup(env(&[
            ("PRESENCE_GRACE_SECS", "12"),
            ("PRESENCE_WEBHOOK_URL", "https://hooks.example/presence"),
            ("PRESENCE_WEBHOOK_SECRET", "s3cret"),
            ("PRESENCE_EVENT_BUS", "presence-bus"),
        ]))
        .unwrap();
        assert_eq!(settings.grace, TimeDelta::seconds(12));
        assert_eq!(settings.webhook, Some(("https://hooks.example/presence".into(), "s3cret".into())));
        assert_eq!(settings.event_bus.as_deref(), Some("presence-bus"));
        assert!(!PresenceSettings::from_lookup(env(&[("PRESENCE", "off")])).unwrap().enabled);
        for bad in [
            &[("PRESENCE_WEBHOOK_URL", "https://hooks.example/p")][..],
            &[("PRESENCE_GRACE_SECS", "-1")][..],
            &[("PRESENCE", "maybe")][..],
        ] {
            let error = PresenceSettings::from_lookup(env(bad)).unwrap_err();
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
