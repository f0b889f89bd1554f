//! The API Gateway WebSocket emulator itself: the accept loop and its limits
//! (`http`), who may use the HTTP API (`exposure`, `sigv4`), the WebSocket routes
//! (`socket`, `apigw_event`), live connections and `@connections` (`registry`,
//! `management`), and `GET /metrics` (`prometheus`).

pub mod apigw_event;
pub mod exposure;
pub mod http;
pub(crate) mod management;
pub mod prometheus;
pub mod registry;
pub mod sigv4;
pub(crate) mod socket;
