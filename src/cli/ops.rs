//! `wsledger sweep`, `wsledger send` and `wsledger rebuild`.

use std::io::IsTerminal;

use anyhow::Context;
use chrono::TimeDelta;
use clap::Args;

use super::stores::{GatewayArgs, StoreArgs, explain, parse_time, retention_days};
use crate::delivery::{Recovery, SendError, send_to_user};
use crate::domain::{Timestamp, UserId};
use crate::projection::rebuild;
use crate::sweep::{SweepConfig, SweepPorts, sweep};

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Seconds past a connection's last possible moment before it is checked.
    #[arg(long, default_value_t = 120)]
    grace_secs: i64,
}

pub async fn run_sweep(args: SweepArgs) -> anyhow::Result<()> {
    let store = args.store.open_existing().await?;
    let gateway = args.gateway.open().await?;
    let config = SweepConfig {
        grace: TimeDelta::seconds(args.grace_secs.max(0)),
        retention_days: retention_days()?,
        ..SweepConfig::default()
    };
    let ports =
        SweepPorts { views: store.views(), events: store.events(), gateway: &gateway, leases: Some(store.leases()) };
    let report = sweep(ports, Timestamp::now(), config).await.context("sweeping")?;
    println!(
        "checked {}, gone {}, alive {} ({} with newer activity), errors {}",
        report.checked, report.gone, report.alive, report.refreshed, report.errors
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
    /// The user whose live connections receive the message.
    #[arg(long)]
    user: String,
    /// The message, a JSON document (sent as its compact text).
    #[arg(long)]
    data: String,
    /// Keep the message this long for clients that `resume` (reconnect recovery;
    /// 0 sends it as before, unnumbered).
    #[arg(long, env = "RECOVERY_WINDOW_SECS", default_value_t = 120, value_name = "SECONDS")]
    recovery_window: u32,
}

pub async fn run_send(args: SendArgs) -> anyhow::Result<()> {
    let user_id = UserId::parse(args.user.as_str()).map_err(|error| anyhow::anyhow!("--user: {error}"))?;
    let data: serde_json::Value =
        serde_json::from_str(&args.data).map_err(|error| anyhow::anyhow!("--data is not JSON: {error}"))?;
    let store = args.store.open_existing().await?;
    let gateway = args.gateway.open().await?;
    let window = TimeDelta::seconds(i64::from(args.recovery_window));
    let recovery = Recovery { outbox: store.outbox(), window, metrics: None };
    let report = send_to_user(
        store.views(),
        store.events(),
        &gateway,
        &user_id,
        data.to_string().as_bytes(),
        retention_days()?,
        Timestamp::now(),
        Some(recovery),
    )
    .await
    .map_err(|error| match error {
        SendError::Refused(why) => anyhow::anyhow!("--data: {why}"),
        SendError::Store(error) => explain(error, &args.store).context("sending"),
    })?;
    let seq = report.seq.map(|seq| format!(" (seq {seq})")).unwrap_or_default();
    println!("delivered {}, gone {}, failed {}{seq}", report.delivered, report.gone, report.failed);
    Ok(())
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Rebuild the connections with events since this time (RFC 3339 or a span such
    /// as 7d; default: the retention period, RETENTION_DAYS).
    #[arg(long)]
    since: Option<String>,
    /// ... and before this time (default: now).
    #[arg(long)]
    until: Option<String>,
}

pub async fn run_rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let now = Timestamp::now();
    let since = match &args.since {
        Some(since) => parse_time(since, now).map_err(|error| anyhow::anyhow!("--since: {error}"))?,
        None => match retention_days()? {
            0 => anyhow::bail!("RETENTION_DAYS=0 keeps events forever: pass --since to say how far back to rebuild"),
            days => now.minus(TimeDelta::days(i64::from(days))),
        },
    };
    let until = match &args.until {
        Some(until) => parse_time(until, now).map_err(|error| anyhow::anyhow!("--until: {error}"))?,
        None => now.plus(TimeDelta::seconds(1)),
    };
    let store = args.store.open_existing().await?;
    // A spinner on a terminal (the total is not known without reading everything
    // first); a plain counter every 1,000 connections otherwise.
    let on_terminal = std::io::stderr().is_terminal();
    let spinner = on_terminal.then(|| {
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        spinner
    });
    let report = rebuild(store.events(), store.views(), since, until, |report| {
        let line = format!("rebuilt {} connections ({} events)", report.connections, report.events);
        match &spinner {
            Some(spinner) => spinner.set_message(line),
            None if report.connections % 1_000 == 0 => eprintln!("{line}"),
            None => {}
        }
    })
    .await
    .context("rebuilding")?;
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    println!(
        "rebuilt {} connections from {} events: {} written, {} unchanged",
        report.connections, report.events, report.written, report.unchanged
    );
    Ok(())
}
