//! The MQTT adapter: the topics and payloads of `openapi/asyncapi.yaml`, the embedded broker that
//! enforces device authentication and topic ACLs, and the backend's own client connection.

pub mod broker;
pub mod client;
pub mod dynsec;
pub mod front_door;
pub mod payload;
pub mod topics;
