//! iotbind: the backend that links WeChat mini program users to platform accounts and relays
//! their commands to their IoT devices over MQTT, and stores what the devices report.
//!
//! A request flows [`api`] → [`service`] → [`entity`]; [`wechat`] and [`mqtt`] adapt the
//! outside world, and the services reach them through what they are handed at start (a
//! WeChat client, the backend's MQTT connection, a [`service::clock::Clock`]). [`state`] and
//! [`config`] hold values, never rules. The HTTP contract is `openapi/openapi.json`, the MQTT
//! contract `openapi/asyncapi.yaml`.
//!
//! # Layout
//!
//! - [`cli`]: the `iotbind` command line (serve, migrate, openapi, user and device commands).
//! - [`config`]: `IOTBIND_*` variables and flags, parsed into typed [`config::Settings`]
//!   (HTTP, the database URL, the embedded or external broker, WeChat, tokens).
//! - [`startup`]: builds the app from settings (database, broker, listeners, background
//!   tasks) and runs it until a shutdown signal.
//! - [`state`]: [`state::AppState`], the services and connections handlers share.
//! - [`api`]: HTTP only: the poem-openapi operations, one file per tag; the error shape and
//!   how each service error maps to a status; client addresses behind trusted proxies; the
//!   per-address password-attempt limit; the accept loop with its timeouts; the broker hooks.
//! - [`service`]: the rules, one module per concern, each with its error enum: WeChat login,
//!   bind and register ([`service::auth`]), passwords and the lockout
//!   ([`service::credentials`]), tokens, the account ([`service::me`]), devices, telemetry,
//!   commands, what devices send ([`service::device_messages`]), broker logins, health.
//! - [`entity`]: the sea-orm tables; the schema itself lives in the `migration` crate.
//! - [`db`]: connecting to SQLite or PostgreSQL and migrating; [`db::inline`] reads the SQLite
//!   file on the request's own thread where sqlx's thread hand-off would cost more than the read.
//! - [`mqtt`]: the MQTT adapter: topics and payloads, the embedded broker (rmqtt) with its
//!   front door and device access rules, the backend's own client, and Mosquitto's dynamic
//!   security.
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
