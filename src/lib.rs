//! wsledger: an event-sourced connection ledger for API Gateway WebSocket APIs.
//!
//! See ARCHITECTURE.md for the map. In short: [`domain`] is pure (events, the fold)
//! and [`ports`] are the traits the application needs, both in the `wsledger-core`
//! crate (no I/O in its dependencies); the services, the AWS adapters and the
//! Lambda bootstraps are in `wsledger-aws`; both are re-exported here. This package
//! adds the embedded SQLite store, `wsledger serve` ([`local`]) and the CLI
//! ([`cli`], `src/bin/wsledger.rs`).

pub mod adapters;
pub mod cli;
pub mod local;

use wsledger_aws::sync;
/// `wsledger usage` as a library (the contract's name for it).
pub use wsledger_aws::usage_queries as usage;
pub use wsledger_aws::{
    audit, auth, backoff, delivery, dynamodb_tables, error_chain, handler, lambda, metrics, policy, presence,
    private_files, projection, projector, recovery, settings, sweep, trust_roots,
};
pub use wsledger_core::{domain, ports};
