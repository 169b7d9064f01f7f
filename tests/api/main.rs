//! Integration tests: each spawns the whole server on port 0 with its own database and talks
//! to it over HTTP (and runs the `iotbind` binary for the CLI), as a client would.

mod auth;
mod cli;
mod errors;
mod helpers;
mod me;
mod openapi;
mod operations;
mod races;
mod tokens;
mod wechat;
