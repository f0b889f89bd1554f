//! `wsledger history`, `wsledger connections` and `wsledger usage`.

use std::io;

use anyhow::{Context, bail};
use clap::Args;

use super::output::{EventWriter, Format, write_presence, write_usage, write_views};
use super::stores::{StoreArgs, explain, parse_time};
use crate::audit::{ConnectionsError, HistoryFilter, HistoryQuery, HistoryReader, connections};
use crate::domain::{ConnectionId, ConnectionStatus, EventKind, TimeRange, Timestamp, UserId};
use crate::usage::{UsageBy, UsageQuery, usage};

/// How results are printed (history, connections).
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output format (default: table on a terminal, else json).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Show times in the local time zone (tables only).
    #[arg(long)]
    local_time: bool,
}

/// `--since` and `--until` as a range (each RFC 3339 or a span before `now`).
fn time_range(since: Option<&str>, until: Option<&str>, now: Timestamp) -> anyhow::Result<TimeRange> {
    let time = |flag: &str, value: Option<&str>| -> anyhow::Result<Option<Timestamp>> {
        value.map(|value| parse_time(value, now).map_err(|error| anyhow::anyhow!("--{flag}: {error}"))).transpose()
    };
    Ok(TimeRange { since: time("since", since)?, until: time("until", until)? })
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// One connection's history.
    #[arg(long, conflicts_with = "user")]
    connection: Option<String>,
    /// One user's history.
    #[arg(long)]
    user: Option<String>,
    /// From this time on (RFC 3339, or a span before now: 15m, 2h, 7d). Without
    /// --connection or --user: every user's events in the window.
    #[arg(long)]
    since: Option<String>,
    /// Before this time (default: now).
    #[arg(long)]
    until: Option<String>,
    /// Only events of this type (repeatable): Connected, Activity, VoiceStarted, VoiceEnded, Disconnected.
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// At most this many events.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run_history(args: HistoryArgs) -> anyhow::Result<()> {
    let now = Timestamp::now();
    let range = time_range(args.since.as_deref(), args.until.as_deref(), now)?;
    let mut kinds = Vec::new();
    for name in &args.types {
        match EventKind::parse(name) {
            Some(kind) => kinds.push(kind),
            None => bail!(
                "--type {name:?} is not an event type: use Connected, Activity, VoiceStarted, VoiceEnded or Disconnected"
            ),
        }
    }
    let query = match (&args.connection, &args.user) {
        (Some(connection), _) => HistoryQuery::Connection {
            connection_id: ConnectionId::parse(connection.as_str())
                .map_err(|error| anyhow::anyhow!("--connection: {error}"))?,
            range,
        },
        (None, Some(user)) => HistoryQuery::User {
            user_id: UserId::parse(user.as_str()).map_err(|error| anyhow::anyhow!("--user: {error}"))?,
            range,
        },
        (None, None) => match range.since {
            Some(since) => {
                HistoryQuery::Window { since, until: range.until.unwrap_or(now.plus(chrono::TimeDelta::seconds(1))) }
            }
            None => bail!("say whose history: --connection ID, --user ID, or a window with --since (and --until)"),
        },
    };
    let store = args.store.open_existing().await?;
    let filter = HistoryFilter { kinds, limit: args.limit };
    let mut reader = HistoryReader::new(store.events(), query, filter);
    let mut writer =
        EventWriter::new(io::stdout().lock(), Format::or_default(args.output.format), args.output.local_time)?;
    loop {
        let page = reader.next_page().await.map_err(|error| explain(error, &args.store))?;
        let Some(page) = page else { break };
        writer.write_page(&page).context("writing the output")?;
    }
    writer.finish().context("writing the output")?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// One user's connections (newest first). Without it: every live connection.
    #[arg(long)]
    user: Option<String>,
    /// Only connections with this status.
    #[arg(long, value_parser = ["connected", "disconnected"])]
    status: Option<String>,
    /// At most this many connections (the newest).
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run_connections(args: ConnectionsArgs) -> anyhow::Result<()> {
    let user_id =
        args.user.as_deref().map(UserId::parse).transpose().map_err(|error| anyhow::anyhow!("--user: {error}"))?;
    let status = args.status.as_deref().and_then(ConnectionStatus::parse);
    let store = args.store.open_existing().await?;
    let views = match connections(store.views(), user_id.as_ref(), status, args.limit).await {
        Ok(views) => views,
        Err(ConnectionsError::Store(error)) => return Err(explain(error, &args.store)),
        Err(error) => return Err(error.into()),
    };
    write_views(io::stdout().lock(), Format::or_default(args.output.format), args.output.local_time, &views)
        .context("writing the output")?;
    Ok(())
}

#[derive(Debug, Args)]
#[command(after_help = "Cost on DynamoDB: with --user, one GetItem. Without --user, one Query per partition of \
the live index that holds presence records (8, each per 1 MB page): only users online, offlines waiting for \
their grace and deliveries to retry are in it. No Scan.")]
pub struct PresenceArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// One user's presence (online or not). Without it: the users online now.
    #[arg(long)]
    user: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run_presence(args: PresenceArgs) -> anyhow::Result<()> {
    let user_id =
        args.user.as_deref().map(UserId::parse).transpose().map_err(|error| anyhow::anyhow!("--user: {error}"))?;
    let store = args.store.open_existing().await?;
    let now = Timestamp::now();
    let presence = match &user_id {
        Some(user_id) => match crate::presence::read(store.presence(), user_id, now).await {
            Ok(Some(presence)) => vec![presence],
            Ok(None) => anyhow::bail!("no presence recorded for user {user_id}"),
            Err(error) => return Err(explain(error, &args.store)),
        },
        None => crate::presence::online(store.presence(), now).await.map_err(|error| explain(error, &args.store))?,
    };
    write_presence(io::stdout().lock(), Format::or_default(args.output.format), args.output.local_time, &presence)
        .context("writing the output")?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ByArg {
    /// One row per user and UTC day.
    Day,
    /// One row per user.
    Total,
}

#[derive(Debug, Args)]
#[command(after_help = "Cost on DynamoDB: with --user, one Query per 100 of the user's connections (newest \
first, back to two hours before --since). Without --user, the window's connections are found through the \
events' time index (8 Queries per UTC day of the window, from two hours before --since, per 1 MB page), \
then one GetItem per connection. No Scan.")]
pub struct UsageArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// One user's usage. Without it: every user with a connection in --since/--until.
    #[arg(long)]
    user: Option<String>,
    /// From the UTC day holding this time (RFC 3339, or a span before now: 15m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// To the UTC day holding the last moment before this time (default: now).
    #[arg(long)]
    until: Option<String>,
    /// Per UTC day or in total.
    #[arg(long, value_enum, default_value_t = ByArg::Total)]
    by: ByArg,
    /// Output format (default: table on a terminal, else json).
    #[arg(long, value_enum)]
    format: Option<Format>,
}

pub async fn run_usage(args: UsageArgs) -> anyhow::Result<()> {
    let now = Timestamp::now();
    let TimeRange { since, until } = time_range(args.since.as_deref(), args.until.as_deref(), now)?;
    let query = match (&args.user, since) {
        (Some(user), _) => UsageQuery::User {
            user_id: UserId::parse(user.as_str()).map_err(|error| anyhow::anyhow!("--user: {error}"))?,
            since,
            until,
        },
        (None, Some(since)) => {
            UsageQuery::Window { since, until: until.unwrap_or(now.plus(chrono::TimeDelta::seconds(1))) }
        }
        (None, None) => bail!("say whose usage: --user ID, or every user in a window with --since (and --until)"),
    };
    let by = match args.by {
        ByArg::Day => UsageBy::Day,
        ByArg::Total => UsageBy::Total,
    };
    let store = args.store.open_existing().await?;
    let rows = usage(store.events(), store.views(), query, by).await.map_err(|error| explain(error, &args.store))?;
    write_usage(io::stdout().lock(), Format::or_default(args.format), by == UsageBy::Day, &rows)
        .context("writing the output")?;
    Ok(())
}
