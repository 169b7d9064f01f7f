//! The rules of iotbind, free of HTTP: each module owns one subject and one error enum.

pub mod auth;
pub mod broker_logins;
pub mod clock;
pub mod code_exchange;
pub mod commands;
pub mod credentials;
pub mod device_messages;
pub mod devices;
pub mod health;
pub mod me;
pub mod passwords;
pub mod secrets;
pub mod telemetry;
pub mod text;
pub mod tokens;
pub mod users;
