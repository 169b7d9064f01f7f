//! The backend's own MQTT connection (rumqttc), to the embedded broker or an external one.
//!
//! rumqttc reconnects as soon as it is polled again, which against a dead broker is a tight
//! loop; this wrapper waits with capped exponential backoff between attempts, subscribes
//! again after every connect (a clean session forgets them; for a persistent one it is
//! harmless), and tells readiness whether it is up.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing,
    Packet, QoS, SubscribeFilter, SubscribeReasonCode,
};
use secrecy::{ExposeSecret, SecretString};

use super::dynsec::{self, PendingAnswers};
use super::topics::DeviceTopic;

/// First wait after a failed connection attempt; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Requests (publishes, subscribes) queued for the event loop; a full queue fails a publish
/// at once instead of blocking a request handler.
const REQUEST_QUEUE: usize = 10_000;
/// The backend receives every device's messages, so it accepts packets up to this size and
/// leaves the per-topic limits to the payload parsers.
const MAX_PACKET_BYTES: usize = 1024 * 1024;
/// Unacknowledged QoS 1 publishes (commands) in flight at once.
const MAX_INFLIGHT: u16 = 1_000;

/// Where and as whom the backend connects.
#[derive(Clone)]
pub struct ClientConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// How telemetry reaches the backend.
    pub telemetry: TelemetryRoute,
    /// A stable id means a persistent session: the broker queues what arrives while the
    /// backend is disconnected and delivers it on reconnect. `None`: a fresh id, clean session.
    pub client_id: Option<String>,
    /// Set: the connection also takes the dynamic security plugin's answers, for these
    /// waiting requests.
    pub dynsec_answers: Option<Arc<PendingAnswers>>,
    /// `false` for a one-off administrative connection: it subscribes to no device topic.
    pub device_messages: bool,
}

/// How the backend takes telemetry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TelemetryRoute {
    /// Through a shared subscription of this group: replicas in one group split it.
    Shared(String),
    /// Through a plain subscription (a single replica).
    Plain,
    /// Not over this connection: the embedded broker hands it over in process.
    InProcess,
}

/// Receives what devices publish on their topics.
pub trait Inbound: Send + Sync + 'static {
    /// Runs on the connection's event loop: it may wait for a bounded queue (that is the
    /// backpressure) but must not do slow work itself.
    fn deliver(&self, topic: DeviceTopic, payload: Bytes) -> impl Future<Output = ()> + Send;
}

/// A handle on the backend's connection; cheap to clone.
#[derive(Clone)]
pub struct MqttClient {
    client: AsyncClient,
    /// Whether the broker granted every subscription of the current connection: until it
    /// has, what devices send may find no subscriber.
    subscribed: Arc<AtomicBool>,
    /// What the backend subscribes to after every connect.
    subscriptions: Arc<Vec<String>>,
    connected: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

/// A connection not yet started: see [`MqttClient::new`].
pub struct Connection {
    eventloop: EventLoop,
    config: ClientConfig,
}

impl MqttClient {
    /// A client and its not yet running connection. They come apart so that what handles
    /// incoming messages (which may itself publish through the client) can be built between.
    pub fn new(config: ClientConfig) -> (MqttClient, Connection) {
        let (client_id, clean_session) = match &config.client_id {
            Some(id) => (id.clone(), false),
            None => (format!("iotbind-{}", uuid::Uuid::new_v4().simple()), true),
        };
        let mut options = MqttOptions::new(client_id, config.host.clone(), config.port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(clean_session)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
            .set_inflight(MAX_INFLIGHT);
        if let Some(username) = &config.username {
            let password = config
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .unwrap_or_default();
            options.set_credentials(username.clone(), password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
        // Commands are small packets that must leave at once: with Nagle's algorithm a command
        // written while an earlier packet awaits its (delayed) ACK sits for up to 40 ms.
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let mut subscriptions = if config.device_messages {
            backend_subscriptions(&config.telemetry)
        } else {
            Vec::new()
        };
        if config.dynsec_answers.is_some() {
            subscriptions.push(dynsec::RESPONSE_TOPIC.to_owned());
        }
        let handle = MqttClient {
            client,
            subscribed: Arc::new(AtomicBool::new(false)),
            subscriptions: Arc::new(subscriptions),
            connected: Arc::new(AtomicBool::new(false)),
            stopping: Arc::new(AtomicBool::new(false)),
            task: Arc::new(Mutex::new(None)),
        };
        (handle, Connection { eventloop, config })
    }

    /// Starts connecting in the background; messages on device topics go to `inbound`.
    pub fn run(&self, connection: Connection, inbound: impl Inbound) {
        let task = tokio::spawn(run(
            connection.eventloop,
            self.clone(),
            connection.config,
            inbound,
        ));
        if let Ok(mut slot) = self.task.lock() {
            *slot = Some(task);
        }
    }

    /// Whether the connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Whether the connection is up and the broker granted its subscriptions: what readiness
    /// asks, since before that device messages may find nobody to take them.
    pub fn is_ready(&self) -> bool {
        self.is_connected() && self.subscribed.load(Ordering::Relaxed)
    }

    /// Queues a QoS 1 publish without waiting; while disconnected it leaves on reconnect. Fails
    /// only when the request queue is full or closed.
    pub fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), rumqttc::ClientError> {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
    }

    /// Subscribes again to what the backend subscribes to after a connect, for when the
    /// broker refused earlier because the backend had no rights yet.
    pub fn subscribe_again(&self) {
        subscribe(&self.client, &self.subscriptions);
    }

    /// Disconnects and stops the event loop, so no more messages arrive.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
        let task = self.task.lock().ok().and_then(|mut slot| slot.take());
        if let Some(task) = task {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.connected.store(false, Ordering::Relaxed);
    }
}
/// What the backend subscribes to. Telemetry goes through a shared subscription so that
/// replicas in one group split it, or a plain one (one replica), or not at all when the
/// embedded broker hands it over in process; every replica sees every result and status (few,
/// and applying them is idempotent).
fn backend_subscriptions(telemetry: &TelemetryRoute) -> Vec<String> {
    let mut filters = vec![
        "devices/+/status".to_owned(),
        "devices/+/commands/result".to_owned(),
    ];
    match telemetry {
        TelemetryRoute::Shared(group) => {
            filters.push(format!("$share/{group}/devices/+/telemetry"))
        }
        TelemetryRoute::Plain => filters.push("devices/+/telemetry".to_owned()),
        TelemetryRoute::InProcess => {}
    }
    filters
}

fn subscribe(client: &AsyncClient, filters: &[String]) {
    let filters = filters
        .iter()
        .map(|filter| SubscribeFilter::new(filter.clone(), QoS::AtLeastOnce));
    if let Err(err) = client.try_subscribe_many(filters) {
        tracing::error!(error = %err, "cannot queue the backend's subscriptions");
    }
}

async fn run(
    mut eventloop: EventLoop,
    handle: MqttClient,
    config: ClientConfig,
    inbound: impl Inbound,
) {
    let MqttClient {
        client,
        subscriptions,
        subscribed,
        connected,
        stopping,
        ..
    } = handle;
    let broker = format!("mqtt://{}:{}", config.host, config.port);
    let mut backoff = MIN_BACKOFF;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                backoff = MIN_BACKOFF;
                connected.store(true, Ordering::Relaxed);
                metrics::gauge!(crate::metrics::MQTT_CONNECTED).set(1.0);
                tracing::info!(%broker, "MQTT connected");
                subscribe(&client, &subscriptions);
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|code| matches!(code, SubscribeReasonCode::Failure));
                subscribed.store(!refused, Ordering::Relaxed);
                if refused {
                    tracing::error!(%broker, "the broker refused a backend subscription; check its ACL");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if let Some(answers) = &config.dynsec_answers
                    && publish.topic == dynsec::RESPONSE_TOPIC
                {
                    answers.deliver(&publish.payload);
                    continue;
                }
                match DeviceTopic::parse(&publish.topic) {
                    Some(topic) => inbound.deliver(topic, publish.payload).await,
                    None => {
                        tracing::debug!(topic = %publish.topic, "ignored a message on a topic that is not a device's");
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) if stopping.load(Ordering::Relaxed) => break,
            Ok(_) => {}
            Err(err) => {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                subscribed.store(false, Ordering::Relaxed);
                if connected.swap(false, Ordering::Relaxed) {
                    metrics::gauge!(crate::metrics::MQTT_CONNECTED).set(0.0);
                    tracing::warn!(%broker, error = %err, "MQTT connection lost; reconnecting");
                } else {
                    tracing::debug!(%broker, error = %err, retry_in = ?backoff, "MQTT connection attempt failed");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    connected.store(false, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_takes_telemetry_by_subscription_only_from_an_external_broker() {
        let shared = backend_subscriptions(&TelemetryRoute::Shared("g".to_owned()));
        assert!(shared.contains(&"$share/g/devices/+/telemetry".to_owned()));
        let plain = backend_subscriptions(&TelemetryRoute::Plain);
        assert!(plain.contains(&"devices/+/telemetry".to_owned()));
        let in_process = backend_subscriptions(&TelemetryRoute::InProcess);
        assert!(
            !in_process
                .iter()
                .any(|filter| filter.ends_with("/telemetry"))
        );
        for filters in [shared, plain, in_process] {
            assert!(filters.contains(&"devices/+/status".to_owned()));
            assert!(filters.contains(&"devices/+/commands/result".to_owned()));
        }
    }
}
