//! wsledger: an event-sourced connection ledger for API Gateway WebSocket APIs.
//!
//! See ARCHITECTURE.md for the map. In short: [`domain`] is pure (events, the fold),
//! [`ports`] are the traits the application needs, [`adapters`] implement them, and
//! the binaries under `src/bin` are thin entry points.

pub mod adapters;
pub mod audit;
pub mod auth;
pub mod backoff;
pub mod cli;
pub mod delivery;
pub mod domain;
pub mod handler;
pub mod lambda;
pub mod local;
pub mod metrics;
pub mod migrations;
pub mod policy;
pub mod ports;
pub mod private_files;
pub mod projection;
pub mod projector;
pub mod report;
pub mod settings;
pub mod sweep;
mod sync;
pub mod usage;
