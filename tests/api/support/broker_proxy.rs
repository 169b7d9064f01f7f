//! `BrokerProxy`: a TCP forwarder in front of an MQTT broker that a test can cut and pause,
//! to show the backend a broker going away and coming back without restarting one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// What the accepting task and the test's calls share.
#[derive(Default)]
struct Shared {
    paused: AtomicBool,
    connections: Mutex<Vec<AbortHandle>>,
}

/// Forwards every connection on its own port to the target broker, until told otherwise.
pub struct BrokerProxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: JoinHandle<()>,
}

impl BrokerProxy {
    /// Listens on a free local port and forwards to `target_host:target_port`.
    pub async fn start(target_host: &str, target_port: u16) -> BrokerProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the proxy gets a port");
        let port = listener.local_addr().expect("a bound address").port();
        let target = format!("{target_host}:{target_port}");
        let shared = Arc::new(Shared::default());
        let acceptor = tokio::spawn(accept(listener, target, shared.clone()));
        BrokerProxy {
            port,
            shared,
            acceptor,
        }
    }

    /// The port clients connect to instead of the broker's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every open connection on both sides, as a broker restart does.
    pub fn cut(&self) {
        let connections = std::mem::take(&mut *self.shared.connections.lock().unwrap());
        for connection in connections {
            connection.abort();
        }
    }

    /// From now on, closes new connections as soon as they are accepted, as a broker that is
    /// still starting up would, so a reconnecting client keeps failing until [`resume`].
    ///
    /// [`resume`]: BrokerProxy::resume
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    /// Forwards new connections again.
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }
}

impl Drop for BrokerProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

async fn accept(listener: TcpListener, target: String, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        if shared.paused.load(Ordering::SeqCst) {
            drop(inbound);
            continue;
        }
        let forwarding = tokio::spawn(forward(inbound, target.clone()));
        let mut connections = shared.connections.lock().unwrap();
        connections.retain(|connection| !connection.is_finished());
        connections.push(forwarding.abort_handle());
    }
}

async fn forward(mut inbound: TcpStream, target: String) {
    let Ok(mut outbound) = TcpStream::connect(target.as_str()).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

/// Host and port of an `mqtt://host:port` URL, for pointing the proxy at an external broker.
pub fn host_and_port(url: &str) -> (String, u16) {
    let rest = url
        .strip_prefix("mqtt://")
        .unwrap_or(url)
        .trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{url} is mqtt://<host>:<port>"));
    let port = port
        .parse()
        .unwrap_or_else(|_| panic!("{url} has a numeric port"));
    (host.to_owned(), port)
}
