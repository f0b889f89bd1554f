//! Black-box tests: one binary (one link step), against real DynamoDB Local.

use wsledger_testkit::{dynamodb_local, lambda_runtime_api};

mod audit_cli;
mod authorizer_lambda;
mod connection_handler_lambda;
mod contract;
mod dashboard;
mod delivery;
mod dynamodb;
mod faults;
mod limits;
mod management_api;
mod memory;
mod migrate_cli;
mod observability;
mod ops_cli;
mod packaged;
mod presence;
mod presence_receiver;
mod projector_lambda;
mod recovery;
mod runtime_api;
mod same_millisecond;
mod serve;
mod serve_hostile;
mod serve_lambda;
mod sqlite;
mod stalled;
mod template;
mod usage;
