//! Adapters: implementations of the ports. Those that speak to AWS, and the
//! in-memory store, are `wsledger-aws`'s (re-exported here); the embedded SQLite
//! store of `wsledger serve` is this package's.

pub use wsledger_aws::adapters::{apigw, aws, dynamodb, emf, eventbridge, faulty, memory, sinks, stored, webhook};

pub mod sqlite;
