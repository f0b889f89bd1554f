//! What wsledger's integration tests (`tests/it`) and benches share, in one place:
//! Amazon's DynamoDB Local started on a free loopback port, a Lambda Runtime API
//! that drives the real bootstraps, and [`eventually`] for state that a background
//! task brings about. A dev-dependency only; it is not published.
//!
//! The crate's own unit tests do not use it (they would see a second copy of the
//! `wsledger` types); its fault-injecting store is `wsledger::adapters::faulty`.

pub mod dynamodb_local;
pub mod lambda_runtime_api;
mod support;

pub use support::{bootstrap_bin, eventually};
