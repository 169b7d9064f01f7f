//! The rules of iotbind, free of HTTP: each module owns one subject and one error enum.

pub mod health;
pub mod passwords;
pub mod users;
