//! sea-orm entities: one module per table, mirroring the migrations.
//!
//! Instants that the rules compare in SQL (expiries, lockouts, spent marks) are unix
//! milliseconds in `i64` columns, so comparisons are numeric on SQLite and PostgreSQL alike.

pub mod bind_tickets;
pub mod claim_failures;
pub mod commands;
pub mod devices;
pub mod login_failures;
pub mod refresh_families;
pub mod refresh_tokens;
pub mod server_secrets;
pub mod telemetry;
pub mod users;
pub mod wechat_identities;
