//! The `wsledger` command line: argument parsing and output. Each command is a thin
//! layer over library calls.

mod migrate;

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
}

/// Runs a parsed command line; the error is for the user, on one line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Migrate(args) => migrate::run(args).await,
    }
}
