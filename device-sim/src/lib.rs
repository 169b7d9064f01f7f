//! device-sim: a fleet of simulated iotbind devices that speak only the MQTT contract of
//! `openapi/asyncapi.yaml`, for demos, end-to-end tests and load.
//!
//! Each simulated device has its own MQTT connection (client id = username = device id, last
//! will `offline`), says `online` after every connect, publishes telemetry whose values
//! evolve like a real sensor's, and answers commands as firmware would: it drops expired
//! ones, answers each command id once, and may be set to fail, answer late or never answer.
//! Nothing here touches the server's database or code, so what works with the simulator
//! works with real devices.
//!
//! ```no_run
//! # async fn demo(devices: Vec<device_sim::DeviceCredentials>) -> anyhow::Result<()> {
//! use device_sim::{Fleet, FleetConfig};
//! let mut config = FleetConfig::new("mqtt://127.0.0.1:1883".parse()?);
//! config.rate = "5/s".parse()?;
//! let fleet = Fleet::start(&config, &devices)?;
//! // … later:
//! println!("{}", fleet.stop().await);
//! # Ok(())
//! # }
//! ```
//!
//! Layout:
//! - `config`: the fleet's settings (broker, QoS, seed, misbehaviour) and their parsing.
//! - `rate`: telemetry rates (`10/s`, `1/min`) and the jittered per-device schedule.
//! - `sensor`: the values a device reports and how they evolve.
//! - `firmware`: command handling without I/O: expiry, duplicates, answers.
//! - `connection`: one device's rumqttc event loop, backoff, and which publishes arrived.
//! - `device`: `SimDevice`, the device's own task tying the above together.
//! - `fleet`: `Fleet`, many devices started, counted and stopped together.
//! - `stats`: per-device counters, fleet totals and the final summary.
//! - `credentials`: the JSON lines of `iotbind device provision`, and the admin API.
//! - `report`: the live status line of the command line tool.

pub mod config;
mod connection;
pub mod credentials;
pub mod device;
pub mod firmware;
pub mod fleet;
pub mod rate;
pub mod report;
pub mod sensor;
pub mod stats;

pub use config::{Behaviour, Broker, ConfigError, DelayRange, FleetConfig, Qos};
pub use credentials::{DeviceCredentials, parse_jsonl, provision, to_jsonl};
pub use device::SimDevice;
pub use fleet::Fleet;
pub use rate::Rate;
pub use stats::{Counts, DeviceStats, Summary};
