//! `serve --lambda`: the functions of a SAM template run as Lambda runs them. The
//! template read for a local run (`template`), a Runtime API per process that only
//! that process can use (`runtime_api`, `peer`), and the routes, authorizer,
//! stream and schedules that invoke them (`routes`).

pub mod peer;
pub mod routes;
pub mod runtime_api;
pub mod template;
