//! Adapters: implementations of the ports. Only adapters know item attribute names,
//! SDK types and wire formats. The embedded SQLite store is the root package's
//! (`wsledger::adapters::sqlite`).

pub mod apigw;
pub mod aws;
pub mod dynamodb;
pub mod emf;
pub mod eventbridge;
pub mod faulty;
pub mod memory;
pub mod sinks;
pub mod stored;
pub mod webhook;
