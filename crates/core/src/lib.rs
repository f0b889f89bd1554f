//! wsledger's core: what the ledger is and what it asks of the world, with no I/O.
//!
//! - [`domain`]: events, identifiers and times, the folds (the connection view, its
//!   usage, connection leases), and the socket protocol. Values are parsed once and
//!   valid from then on; nothing here fails on stored history.
//! - [`ports`]: the small traits the adapters implement (event store, view store,
//!   lease store, connection gateway, the voice and text ports) and the errors they
//!   give.
//!
//! The crate's dependencies are the proof of its purity: no async runtime, no SDK,
//! no database, no HTTP.

pub mod domain;
pub mod ports;
