//! Usage queries over the ports: what each user used, per UTC day or in total,
//! from the usage the projector keeps on every view (`domain::usage`).
//!
//! Figures are per UTC day, so a range selects whole days: the days from the one
//! holding `since` to the one holding the last moment before `until`.

use std::collections::{BTreeMap, HashSet};

use chrono::NaiveDate;

use crate::domain::usage::{Figures, day_of};
use crate::domain::{ConnectionId, ConnectionInfo, MAX_CONNECTION_DURATION, Timestamp, UserId};
use crate::ports::{EventStore, PageRequest, StoreError, ViewStore};

/// Whose usage, over which days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageQuery {
    /// One user's connections (a query on the user's views, newest first).
    User { user_id: UserId, since: Option<Timestamp>, until: Option<Timestamp> },
    /// Every user with a connection in the window: found through the events' time
    /// index (from two hours before `since`, the longest a connection lives), then
    /// one view read per connection.
    Window { since: Timestamp, until: Timestamp },
}

/// Per day or in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageBy {
    Day,
    Total,
}

/// One line of a usage answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub user_id: UserId,
    /// With [`UsageBy::Day`].
    pub day: Option<NaiveDate>,
    pub figures: Figures,
}

/// The days a range selects (whole UTC days; open ends are open).
fn day_range(since: Option<Timestamp>, until: Option<Timestamp>) -> (Option<NaiveDate>, Option<NaiveDate>) {
    (since.map(|since| day_of(since.epoch_millis())), until.map(|until| day_of(until.epoch_millis() - 1)))
}

/// Adds `view`'s usage on the selected days to `totals`.
fn add_view(
    totals: &mut BTreeMap<(UserId, Option<NaiveDate>), Figures>,
    view: &ConnectionInfo,
    (first, last): (Option<NaiveDate>, Option<NaiveDate>),
    by: UsageBy,
) {
    let Some(usage) = &view.usage else { return };
    for (day, figures) in &usage.days {
        if first.is_some_and(|first| *day < first) || last.is_some_and(|last| *day > last) {
            continue;
        }
        let key = (view.user_id.clone(), (by == UsageBy::Day).then_some(*day));
        *totals.entry(key).or_default() += *figures;
    }
}

/// Usage by user (and day), sorted by user then day.
pub async fn usage(
    events: &dyn EventStore,
    views: &dyn ViewStore,
    query: UsageQuery,
    by: UsageBy,
) -> Result<Vec<UsageRow>, StoreError> {
    let mut totals: BTreeMap<(UserId, Option<NaiveDate>), Figures> = BTreeMap::new();
    match query {
        UsageQuery::User { user_id, since, until } => {
            let days = day_range(since, until);
            // Connections opened up to two hours before the range can reach into it.
            let oldest = since.map(|since| since.minus(MAX_CONNECTION_DURATION));
            for view in &crate::user_views::newest_since(views, &user_id, oldest, 100).await? {
                add_view(&mut totals, view, days, by);
            }
        }
        UsageQuery::Window { since, until } => {
            let days = day_range(Some(since), Some(until));
            let mut seen: HashSet<ConnectionId> = HashSet::new();
            let mut page = PageRequest::first(1_000);
            loop {
                let window = events.window(since.minus(MAX_CONNECTION_DURATION), until, page).await?;
                for event in &window.items {
                    if !seen.insert(event.connection_id.clone()) {
                        continue;
                    }
                    if let Some(view) = views.read(&event.connection_id).await? {
                        add_view(&mut totals, &view, days, by);
                    }
                }
                match window.next {
                    Some(next) => page.after = Some(next),
                    None => break,
                }
            }
        }
    }
    Ok(totals.into_iter().map(|((user_id, day), figures)| UsageRow { user_id, day, figures }).collect())
}

/// Today's usage (UTC) of every user of `connections` (the dashboard's panel).
pub fn today_by_user<'a>(connections: impl IntoIterator<Item = &'a ConnectionInfo>, now: Timestamp) -> Vec<UsageRow> {
    let today = day_of(now.epoch_millis());
    let mut totals = BTreeMap::new();
    for view in connections {
        add_view(&mut totals, view, (Some(today), Some(today)), UsageBy::Total);
    }
    totals.into_iter().map(|((user_id, day), figures)| UsageRow { user_id, day, figures }).collect()
}
