//! The `wsledger` command line: argument parsing and output. Each command is a thin
//! layer over library calls.

mod audit;
mod migrate;
mod ops;
mod output;
mod serve;
mod stores;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "wsledger", version, about = "An event-sourced connection ledger for API Gateway WebSocket APIs")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update the DynamoDB tables (names from EVENTS_TABLE_NAME and
    /// CONNECTIONS_TABLE_NAME); a second run changes nothing.
    Migrate(migrate::MigrateArgs),
    /// Check connections that API Gateway must have closed by now, and record the
    /// ones it says are gone (410).
    Sweep(ops::SweepArgs),
    /// Post a message to every live connection of a user.
    Send(ops::SendArgs),
    /// Re-fold views from the ledger (safe while projectors run).
    Rebuild(ops::RebuildArgs),
    /// Events in order: of a connection, of a user over a range, or of every user in a window.
    History(audit::HistoryArgs),
    /// Connections (the ConnectionInfo view): a user's, or every live one.
    Connections(audit::ConnectionsArgs),
    /// Who is online now, on which devices, in voice or not; or one user's presence.
    Presence(audit::PresenceArgs),
    /// What users used: connections, connected time, messages, voice sessions and
    /// voice time, per UTC day or in total.
    Usage(audit::UsageArgs),
    /// Run the whole system locally: an API Gateway WebSocket emulator with the
    /// handler, projector and sweep in-process.
    Serve(Box<serve::ServeArgs>),
}

/// Runs a parsed command line; the error is for the user, on one line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Migrate(args) => migrate::run(args).await,
        Command::Sweep(args) => ops::run_sweep(args).await,
        Command::Send(args) => ops::run_send(args).await,
        Command::Rebuild(args) => ops::run_rebuild(args).await,
        Command::Serve(args) => serve::run(*args).await,
        Command::History(args) => audit::run_history(args).await,
        Command::Connections(args) => audit::run_connections(args).await,
        Command::Usage(args) => audit::run_usage(args).await,
        Command::Presence(args) => audit::run_presence(args).await,
    }
}
