//! Black-box tests: one binary (one link step), against real DynamoDB Local.

mod contract;
mod dynamodb;
mod dynamodb_local;
mod memory;
mod migrate_cli;
