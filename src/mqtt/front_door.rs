//! The embedded broker's front door: the listener devices connect to, which admits a
//! connection to the broker only once it has sent its CONNECT.
//!
//! rmqtt 0.24 waits without a time limit for a new connection's first bytes, and offers no
//! hook before a CONNECT arrives: anyone could hold thousands of connections open without
//! logging in, each a file descriptor and a task, until real devices can no longer connect.
//! So devices reach the broker through this listener. It closes a connection that has not
//! sent a complete CONNECT within the handshake timeout (`IOTBIND_MQTT_HANDSHAKE_TIMEOUT`), and
//! refuses at once a connection from an address that already has as many handshakes open as
//! `IOTBIND_MQTT_HANDSHAKES_PER_ADDRESS` allows (IPv6 counted by /64), so one address cannot
//! take the handshake capacity of all. An admitted connection is relayed to the broker's own
//! listener on the loopback, opened with a PROXY protocol header that carries the device's
//! real address, so the broker's hooks (and its failed-login budget) see who connected.
//!
//! The relay costs two extra socket operations per packet each way; measured on benchmark
//! case 5 (README, Performance).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy_protocol::version2::{ProxyAddresses, ProxyCommand, ProxyTransportProtocol};
use proxy_protocol::{ProxyHeader, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::net::client_key;

/// Bytes a relayed connection buffers each way: MQTT packets of devices are small, and a
/// bigger one simply takes more than one read.
const RELAY_BUFFER_BYTES: usize = 4 * 1024;

/// How the front door treats connections that have not logged in yet.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeLimits {
    /// How long a connection may take to send its CONNECT.
    pub timeout: Duration,
    /// Connections one client address may have open before they have sent their CONNECT.
    pub per_address: usize,
    /// Largest packet accepted, the CONNECT included.
    pub max_packet_bytes: usize,
}

/// The running front door.
pub struct FrontDoor {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FrontDoor {
    /// Serves devices on `listener`, relaying admitted connections to the broker at `broker`.
    pub fn open(listener: TcpListener, broker: SocketAddr, limits: HandshakeLimits) -> FrontDoor {
        let addr = listener.local_addr().unwrap_or(broker);
        let handshakes = Handshakes::default();
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let key = client_key(peer.ip());
                        let Some(slot) = handshakes.enter(key, limits.per_address) else {
                            refused("handshakes_per_address");
                            tracing::debug!(%peer, "MQTT connection refused: too many handshakes from its address");
                            continue;
                        };
                        tokio::spawn(relay(stream, peer, broker, limits, slot));
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot accept an MQTT connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        FrontDoor { addr, task }
    }

    /// Where devices connect (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting; connections already relayed end with the broker.
    pub fn close(&self) {
        self.task.abort();
    }
}

fn refused(reason: &'static str) {
    metrics::counter!(crate::metrics::MQTT_CONNECTIONS_REFUSED, "reason" => reason).increment(1);
}

/// Waits for the connection's CONNECT, then hands it to the broker and relays both ways.
async fn relay(
    mut device: TcpStream,
    peer: SocketAddr,
    broker: SocketAddr,
    limits: HandshakeLimits,
    slot: HandshakeSlot,
) {
    let connect = match tokio::time::timeout(
        limits.timeout,
        read_connect(&mut device, limits.max_packet_bytes),
    )
    .await
    {
        Ok(Ok(connect)) => connect,
        Ok(Err(reason)) => {
            refused(reason);
            tracing::debug!(%peer, reason, "MQTT connection closed before its CONNECT");
            return;
        }
        Err(_) => {
            refused("handshake_timeout");
            tracing::debug!(%peer, "MQTT connection closed: no CONNECT in time");
            return;
        }
    };
    drop(slot);
    let local = device.local_addr().unwrap_or(broker);
    let mut upstream = match TcpStream::connect(broker).await {
        Ok(upstream) => upstream,
        Err(err) => {
            tracing::warn!(error = %err, "cannot reach the embedded broker's own listener");
            return;
        }
    };
    let _ = device.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    // The broker reads the PROXY header with a single peek, so header and CONNECT go in one
    // write.
    let Some(mut opening) = proxy_header(peer, local) else {
        return;
    };
    opening.extend_from_slice(&connect);
    if upstream.write_all(&opening).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional_with_sizes(
        &mut device,
        &mut upstream,
        RELAY_BUFFER_BYTES,
        RELAY_BUFFER_BYTES,
    )
    .await;
}

/// The bytes of the connection's first packet, which must be a CONNECT; or why it was not one.
async fn read_connect(device: &mut TcpStream, max_bytes: usize) -> Result<Vec<u8>, &'static str> {
    let mut packet = Vec::with_capacity(128);
    let mut chunk = [0u8; 512];
    loop {
        match connect_length(&packet) {
            Length::Complete(total) if total > max_bytes => return Err("connect_too_large"),
            Length::Complete(total) if packet.len() >= total => return Ok(packet),
            Length::NotConnect => return Err("not_connect"),
            Length::Complete(_) | Length::Incomplete => {}
        }
        let read = device.read(&mut chunk).await.map_err(|_| "read_error")?;
        if read == 0 {
            return Err("closed");
        }
        packet.extend_from_slice(&chunk[..read]);
    }
}

/// What the first bytes of a connection say about its first packet.
#[derive(Debug, PartialEq, Eq)]
enum Length {
    /// Not enough bytes yet to know.
    Incomplete,
    /// The first packet is a CONNECT of this many bytes in all.
    Complete(usize),
    /// The first packet is something else, or its length is malformed.
    NotConnect,
}

/// Reads the fixed header: packet type 1 (CONNECT, flags 0) and the remaining length, a
/// variable-length integer of at most four bytes (MQTT 3.1.1 and 5, section 2.2).
fn connect_length(bytes: &[u8]) -> Length {
    let Some(&first) = bytes.first() else {
        return Length::Incomplete;
    };
    if first != 0x10 {
        return Length::NotConnect;
    }
    let mut remaining = 0usize;
    for (index, byte) in bytes[1..].iter().take(4).enumerate() {
        remaining |= usize::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Length::Complete(1 + (index + 1) + remaining);
        }
    }
    if bytes.len() >= 5 {
        Length::NotConnect
    } else {
        Length::Incomplete
    }
}

/// A PROXY protocol v2 header naming `peer` as the source; `None` if the two addresses are of
/// different families, which a listener never produces.
fn proxy_header(peer: SocketAddr, local: SocketAddr) -> Option<Vec<u8>> {
    let addresses = match (peer, local) {
        (SocketAddr::V4(source), SocketAddr::V4(destination)) => ProxyAddresses::Ipv4 {
            source,
            destination,
        },
        (SocketAddr::V6(source), SocketAddr::V6(destination)) => ProxyAddresses::Ipv6 {
            source,
            destination,
        },
        _ => return None,
    };
    encode(ProxyHeader::Version2 {
        command: ProxyCommand::Proxy,
        transport_protocol: ProxyTransportProtocol::Stream,
        addresses,
    })
    .ok()
    .map(|header| header.to_vec())
}

/// Open handshakes per client address.
#[derive(Clone, Default)]
struct Handshakes(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl Handshakes {
    /// A slot for one more handshake from `key`, or `None` when it has `limit` open already.
    fn enter(&self, key: IpAddr, limit: usize) -> Option<HandshakeSlot> {
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(HandshakeSlot {
            handshakes: self.clone(),
            key,
        })
    }
}

/// One open handshake; dropping it (CONNECT received, or the connection gone) frees it.
struct HandshakeSlot {
    handshakes: Handshakes,
    key: IpAddr,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut open = self
            .handshakes
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_header_gives_the_whole_packet_length() {
        assert_eq!(connect_length(&[]), Length::Incomplete);
        assert_eq!(connect_length(&[0x10]), Length::Incomplete);
        assert_eq!(connect_length(&[0x10, 12]), Length::Complete(14));
        // 321 = 0xC1 0x02 as a variable-length integer.
        assert_eq!(connect_length(&[0x10, 0xC1, 0x02]), Length::Complete(324));
        assert_eq!(connect_length(&[0x10, 0xff, 0xff]), Length::Incomplete);
    }

    #[test]
    fn anything_but_a_connect_or_an_overlong_length_is_refused() {
        assert_eq!(connect_length(&[0x30, 2]), Length::NotConnect);
        assert_eq!(connect_length(b"GET / HTTP/1.1"), Length::NotConnect);
        assert_eq!(
            connect_length(&[0x10, 0xff, 0xff, 0xff, 0xff]),
            Length::NotConnect
        );
    }

    #[test]
    fn an_address_gets_its_handshake_slots_back_as_they_end() {
        let handshakes = Handshakes::default();
        let key: IpAddr = "192.0.2.1".parse().unwrap();
        let first = handshakes.enter(key, 2).unwrap();
        let _second = handshakes.enter(key, 2).unwrap();
        assert!(handshakes.enter(key, 2).is_none());
        assert!(handshakes.enter("192.0.2.2".parse().unwrap(), 2).is_some());
        drop(first);
        assert!(handshakes.enter(key, 2).is_some());
    }

    #[test]
    fn the_proxy_header_is_version_2_and_names_the_device() {
        let header = proxy_header(
            "192.0.2.7:51000".parse().unwrap(),
            "127.0.0.1:1883".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(&header[..12], b"\r\n\r\n\0\r\nQUIT\n");
        let parsed = proxy_protocol::parse(&mut &header[..]).unwrap();
        assert!(format!("{parsed:?}").contains("192.0.2.7"));
    }
}
