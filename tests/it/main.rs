//! Black-box tests: one binary (one link step), against real DynamoDB Local.

mod audit_cli;
mod authorizer_lambda;
mod connection_handler_lambda;
mod contract;
mod dashboard;
mod delivery;
mod dynamodb;
mod dynamodb_local;
mod faults;
mod lambda_runtime_api;
mod management_api;
mod memory;
mod migrate_cli;
mod observability;
mod ops_cli;
mod packaged;
mod projector_lambda;
mod same_millisecond;
mod serve;
mod serve_hostile;
mod sqlite;
mod stalled;
mod support;
mod template;
mod usage;
