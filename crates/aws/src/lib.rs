//! wsledger on AWS: the application services over the ports, the adapters that
//! speak to AWS (DynamoDB, the API Gateway Management API, EMF metrics), the
//! in-memory store, and the Lambda entry glue of the three bootstraps in `src/bin`.
//!
//! The domain and the ports come from `wsledger-core` (re-exported here as
//! [`domain`] and [`ports`]); the emulator and the CLI live in the root package,
//! which depends on this one and never the other way round.

pub use wsledger_core::{domain, ports};

pub mod adapters;
pub mod audit;
pub mod auth;
pub mod backoff;
pub mod delivery;
pub mod dynamodb_tables;
pub mod error_chain;
pub mod handler;
pub mod https_get;
pub mod lambda;
pub mod leases;
pub mod metrics;
pub mod policy;
pub mod posting;
pub mod presence;
pub mod private_files;
pub mod projection;
pub mod projector;
pub mod recovery;
pub mod setting;
pub mod settings;
pub mod sweep;
pub mod sync;
pub mod trust_roots;
pub mod usage_queries;
pub mod user_views;
