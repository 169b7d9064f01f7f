//! iotbind: the backend that links WeChat mini program users to platform accounts and relays
//! their commands to their IoT devices over MQTT.
//!
//! A request flows `api` → `service` → `entity`; `wechat` and `mqtt` adapt the outside world.
//!
//! # Layout
//!
//! - [`cli`]: the `iotbind` command line (serve, migrate, openapi, user create).
//! - [`config`]: `IOTBIND_*` variables and flags, parsed into typed [`config::Settings`].
//! - [`startup`]: builds the app from settings (database, listeners) and runs it until a
//!   shutdown signal.
//! - [`state`]: [`state::AppState`], what handlers and background tasks share.
//! - [`api`]: HTTP only: the poem-openapi operations, the error shape, the request envelope.
//! - [`service`]: the rules (WeChat login, bind and register, tokens, lockout, the account,
//!   health), each module with its error enum.
//! - [`entity`]: the sea-orm tables; the schema itself lives in the `migration` crate.
//! - [`db`]: connecting to SQLite or PostgreSQL and migrating; [`db::inline`] reads the SQLite
//!   file on the request's own thread where sqlx's thread hand-off would cost more than the read.
//! - [`wechat`]: the WeChat adapter: code exchange, user info decryption, and the fake WeChat
//!   API that development mode serves under `/dev/wechat`.
//! - [`metrics`]: the Prometheus recorder and metric names.
//! - [`net`]: client addresses as the per-address limits count them.
//! - [`logging`]: tracing output, human or JSON.

pub mod api;
pub mod cli;
pub mod config;
pub mod db;
pub mod entity;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod net;
pub mod service;
pub mod startup;
pub mod state;
pub mod wechat;
