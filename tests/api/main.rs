//! Integration tests: each spawns the whole server on port 0 with its own database and talks
//! to it over HTTP (and runs the `iotbind` binary for the CLI), as a client would.

// Test code fails by panicking; the workspace's ban on unwrap and expect is for the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod asyncapi;
mod auth;
mod broker;
mod broker_hooks;
mod cli;
mod commands;
mod devices;
mod dynsec;
mod errors;
mod faults;
mod fleet;
mod hostile_devices;
mod hostile_input;
mod lockout;
mod me;
mod openapi;
mod operations;
mod password_guessing;
mod proxies;
mod races;
mod replicas;
mod rmqttd_cluster;
mod sessions;
mod slow_clients;
mod support;
mod telemetry;
mod tokens;
mod wechat;
