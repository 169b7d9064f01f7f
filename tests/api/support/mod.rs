//! What the integration tests share: a running server and its client ([`app`]), devices on
//! real MQTT connections ([`device`]), the requests most tests make ([`api`]), the binary
//! ([`cli`]), a private Mosquitto ([`mosquitto`]), a two-node rmqttd cluster ([`rmqttd`])
//! and a breakable broker link ([`broker_proxy`]). Test files import from here, never from
//! one another.

pub mod api;
pub mod app;
pub mod broker_proxy;
pub mod cli;
pub mod device;
pub mod mosquitto;
pub mod rmqttd;

pub use api::*;
pub use app::*;
pub use cli::*;
pub use device::*;
