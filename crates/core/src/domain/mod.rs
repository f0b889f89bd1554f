//! The domain: events, identifiers, time and the fold into the connection view.
//!
//! Nothing in here does I/O, knows an AWS type or an item attribute name, or can fail
//! on history that was already stored. Validation happens when values are made
//! (`parse`), so a value that exists is valid.

pub mod decide;
mod event;
mod ids;
mod kind;
pub mod lease;
pub mod presence;
pub mod protocol;
pub mod recovery;
mod time;
pub mod usage;
mod view;

pub use event::{ConnectionEvent, DisconnectReason, EventEnvelope, EventKind};
pub use ids::{ConnectionId, EventId, InvalidId, UserId};
pub use time::{InvalidTimestamp, TimeRange, Timestamp};
pub use view::{ConnectionInfo, ConnectionStatus, GoneObservation, IDLE_TIMEOUT, MAX_CONNECTION_DURATION};
