//! `TestDevice`: a device on a real MQTT connection (rumqttc) behaving as `openapi/asyncapi.yaml`
//! asks of firmware, a bare connection attempt for the broker's refusals, and a polling helper.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet,
    Publish, QoS, SubscribeReasonCode,
};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::{Instant, timeout};

use super::app::{ProvisionedDevice, TestApp};

/// How long a test waits for the broker or the server before it fails: generous, because a
/// loaded CI machine runs many of these tests at once, and a deadline is not a timing goal.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How often [`eventually`] looks again.
const POLL_EVERY: Duration = Duration::from_millis(25);

/// rumqttc accepts 1 s at the least; 5 s keeps pings rare while a device that vanished
/// without closing its socket is still noticed well within [`DEADLINE`].
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// rumqttc refuses to send packets over 10 KiB by default, and some tests need to show the
/// server a payload over the 16 KiB limit to see it dropped there.
const MAX_PACKET_BYTES: usize = 256 * 1024;

/// Polls `check` every 25 ms until it gives `Some`, and fails the test naming `what` if
/// that takes longer than [`DEADLINE`]: the way to wait for asynchronous effects (ingestion,
/// status, reconnects) without guessing a sleep.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The MQTT topic `devices/{device_id}/{leaf}`.
pub fn topic(device_id: &str, leaf: &str) -> String {
    format!("devices/{device_id}/{leaf}")
}

/// A command as a device receives it on `devices/{id}/commands`.
#[derive(Debug, Clone)]
pub struct DeviceCommand {
    pub id: String,
    pub name: String,
    pub params: Value,
    /// Unix milliseconds.
    pub expires_at: i64,
}

/// Someone waiting for rumqttc to send a packet, and then for the broker's acknowledgement.
enum Waiter {
    Publish(oneshot::Sender<()>),
    Subscribe(oneshot::Sender<Vec<SubscribeReasonCode>>),
}

/// What the event loop task and the test's calls share.
#[derive(Default)]
struct Pending {
    /// Requests handed to rumqttc that have no packet id yet, oldest first: rumqttc sends
    /// requests in the order it receives them, so the next `Outgoing` event is the oldest.
    unsent: VecDeque<Waiter>,
    publishes: HashMap<u16, oneshot::Sender<()>>,
    subscribes: HashMap<u16, oneshot::Sender<Vec<SubscribeReasonCode>>>,
    /// Why the connection ended, once it has.
    ended: Option<String>,
}

/// A connected device. Its event loop runs in a task of its own; commands and any other
/// message it receives queue up until the test asks for them.
pub struct TestDevice {
    pub id: String,
    client: AsyncClient,
    pending: Arc<StdMutex<Pending>>,
    /// Held while a waiter is queued and its request handed to rumqttc, so the two orders
    /// stay the same when a test publishes from several tasks.
    order: Mutex<()>,
    incoming: Mutex<mpsc::UnboundedReceiver<Publish>>,
    event_loop: tokio::task::JoinHandle<()>,
}

impl TestDevice {
    /// Connects `device` to the app's broker as `openapi/asyncapi.yaml` describes, announces itself
    /// `online` and subscribes to its commands; panics if any step fails.
    pub async fn connect(app: &TestApp, device: &ProvisionedDevice) -> TestDevice {
        TestDevice::connect_to(&app.mqtt_host, app.mqtt_port, device).await
    }

    /// Like [`TestDevice::connect`], to a broker named by address: for tests with more than
    /// one server, where the device's broker is not the app's.
    pub async fn connect_to(host: &str, port: u16, device: &ProvisionedDevice) -> TestDevice {
        let id = device.device_id.clone();
        let mut options = MqttOptions::new(&id, host, port);
        options
            .set_credentials(&device.mqtt_username, &device.mqtt_password)
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
            .set_last_will(LastWill::new(
                topic(&id, "status"),
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
        let (client, mut event_loop) = AsyncClient::new(options, 64);
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        event_loop.set_network_options(network);
        match timeout(DEADLINE, event_loop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {}
            Ok(Ok(other)) => panic!("device {id} expected a CONNACK, got {other:?}"),
            Ok(Err(error)) => panic!("device {id} could not connect to {host}:{port}: {error}"),
            Err(_) => panic!("device {id} got no CONNACK from {host}:{port} in {DEADLINE:?}"),
        }

        let pending = Arc::new(StdMutex::new(Pending::default()));
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let event_loop = tokio::spawn(run_event_loop(event_loop, pending.clone(), incoming_tx));
        let device = TestDevice {
            id,
            client,
            pending,
            order: Mutex::new(()),
            incoming: Mutex::new(incoming),
            event_loop,
        };

        device
            .publish_acked(&topic(&device.id, "status"), "online", true)
            .await;
        let granted = device
            .subscribe(&topic(&device.id, "commands"), QoS::AtLeastOnce)
            .await;
        assert!(
            matches!(granted.as_slice(), [SubscribeReasonCode::Success(_)]),
            "device {} may subscribe to its own commands, got {granted:?}",
            device.id
        );
        device
    }

    /// Publishes with QoS 1 and waits for the broker's PUBACK.
    pub async fn publish_acked(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        let acked = self
            .publish(topic, payload.into(), QoS::AtLeastOnce, retain)
            .await;
        match timeout(DEADLINE, acked).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!(
                "device {} lost its connection before the PUBACK for {topic}: {}",
                self.id,
                self.ended().unwrap_or_default()
            ),
            Err(_) => panic!(
                "device {} got no PUBACK for {topic} in {DEADLINE:?}",
                self.id
            ),
        }
    }

    /// Publishes with QoS 1 without waiting for the PUBACK: for publishes the broker must
    /// drop, where whether it acknowledges them is its own business.
    pub async fn publish_unacked(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        let acked = self
            .publish(topic, payload.into(), QoS::AtLeastOnce, false)
            .await;
        drop(acked);
    }

    /// Sends `payload` (any bytes) on the device's own telemetry topic and waits for the
    /// PUBACK.
    pub async fn send_raw_telemetry(&self, payload: impl Into<Vec<u8>>) {
        self.publish_acked(&topic(&self.id, "telemetry"), payload, false)
            .await;
    }

    /// Sends a telemetry message as JSON and waits for the PUBACK.
    pub async fn send_telemetry(&self, message: &Value) {
        self.send_raw_telemetry(message.to_string()).await;
    }

    /// Answers a command on `devices/{id}/commands/result` and waits for the PUBACK.
    pub async fn answer(&self, reply: &Value) {
        self.publish_acked(
            &topic(&self.id, "commands/result"),
            reply.to_string(),
            false,
        )
        .await;
    }

    /// Answers `command` with `succeeded` and `result`.
    pub async fn succeed(&self, command: &DeviceCommand, result: Value) {
        self.answer(&serde_json::json!({
            "id": command.id,
            "status": "succeeded",
            "result": result,
        }))
        .await;
    }

    /// Subscribes to `filter` and returns the broker's return codes from the SUBACK.
    pub async fn subscribe(&self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
        let (done, granted) = oneshot::channel();
        {
            let _order = self.order.lock().await;
            self.lock().unsent.push_back(Waiter::Subscribe(done));
            self.client
                .subscribe(filter, qos)
                .await
                .expect("the event loop takes requests");
        }
        match timeout(DEADLINE, granted).await {
            Ok(Ok(codes)) => codes,
            Ok(Err(_)) => panic!(
                "device {} lost its connection before the SUBACK for {filter}: {}",
                self.id,
                self.ended().unwrap_or_default()
            ),
            Err(_) => panic!(
                "device {} got no SUBACK for {filter} in {DEADLINE:?}",
                self.id
            ),
        }
    }

    /// The next message the broker delivered to this device, on any topic.
    pub async fn next_message(&self) -> Publish {
        let mut incoming = self.incoming.lock().await;
        match timeout(DEADLINE, incoming.recv()).await {
            Ok(Some(message)) => message,
            Ok(None) => panic!(
                "device {} lost its connection while waiting for a message: {}",
                self.id,
                self.ended().unwrap_or_default()
            ),
            Err(_) => panic!("device {} received nothing in {DEADLINE:?}", self.id),
        }
    }

    /// The next message, which must be a command on the device's own commands topic.
    pub async fn next_command(&self) -> DeviceCommand {
        let message = self.next_message().await;
        assert_eq!(
            message.topic,
            topic(&self.id, "commands"),
            "device {} expected its next message to be one of its commands",
            self.id
        );
        let body: Value = serde_json::from_slice(&message.payload).unwrap_or_else(|error| {
            panic!(
                "a command is JSON ({error}): {:?}",
                String::from_utf8_lossy(&message.payload)
            )
        });
        DeviceCommand {
            id: body["id"].as_str().expect("a command has an id").to_owned(),
            name: body["name"]
                .as_str()
                .expect("a command has a name")
                .to_owned(),
            params: body.get("params").cloned().expect("a command has params"),
            expires_at: body["expires_at"]
                .as_i64()
                .unwrap_or_else(|| panic!("a command has expires_at in unix ms: {body}")),
        }
    }

    /// Why the connection ended, or `None` while it is up.
    pub fn ended(&self) -> Option<String> {
        self.lock().ended.clone()
    }

    /// Leaves politely, as firmware shutting down does: a retained `offline`, then
    /// DISCONNECT, after which the broker discards the last will.
    pub async fn disconnect(self) {
        self.publish_acked(&topic(&self.id, "status"), "offline", true)
            .await;
        self.client
            .disconnect()
            .await
            .expect("the event loop takes requests");
        // The event loop ends once DISCONNECT is on the wire.
        let mut device = self;
        let _ = timeout(DEADLINE, &mut device.event_loop).await;
    }

    /// Dies without a goodbye, as a device losing power does: the socket closes with no
    /// DISCONNECT, so the broker publishes the last will.
    pub async fn vanish(self) {
        let mut device = self;
        device.event_loop.abort();
        // Once the aborted task is gone, so is the socket it owned.
        let _ = (&mut device.event_loop).await;
    }

    async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        qos: QoS,
        retain: bool,
    ) -> oneshot::Receiver<()> {
        let (done, acked) = oneshot::channel();
        let _order = self.order.lock().await;
        self.lock().unsent.push_back(Waiter::Publish(done));
        self.client
            .publish(topic, qos, retain, payload)
            .await
            .expect("the event loop takes requests");
        acked
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .expect("no panics while holding the lock")
    }
}

impl Drop for TestDevice {
    fn drop(&mut self) {
        self.event_loop.abort();
    }
}

/// Drives one device's connection: matches acknowledgements to waiters, hands received
/// messages to the test, and records why the connection ended. It does not reconnect, so a
/// test sees a dropped connection instead of a quietly replaced one.
async fn run_event_loop(
    mut event_loop: EventLoop,
    pending: Arc<StdMutex<Pending>>,
    incoming: mpsc::UnboundedSender<Publish>,
) {
    loop {
        let event = event_loop.poll().await;
        let mut pending = pending.lock().expect("no panics while holding the lock");
        match event {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(Waiter::Publish(done)) = pending.unsent.pop_front() {
                    if pkid == 0 {
                        // QoS 0 has no acknowledgement: being sent is all there is.
                        let _ = done.send(());
                    } else {
                        pending.publishes.insert(pkid, done);
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => {
                if let Some(Waiter::Subscribe(done)) = pending.unsent.pop_front() {
                    pending.subscribes.insert(pkid, done);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(done) = pending.publishes.remove(&ack.pkid) {
                    let _ = done.send(());
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if let Some(done) = pending.subscribes.remove(&ack.pkid) {
                    let _ = done.send(ack.return_codes);
                }
            }
            Ok(Event::Incoming(Packet::Publish(message))) => {
                let _ = incoming.send(message);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Closing the socket is the client's job after DISCONNECT (MQTT 3.1.1
                // §3.14.4); returning drops it.
                pending.ended = Some("disconnected".to_owned());
                return;
            }
            Ok(_) => {}
            Err(error) => {
                pending.ended = Some(error.to_string());
                // Dropping the waiters tells everyone waiting that no ack will come.
                pending.unsent.clear();
                pending.publishes.clear();
                pending.subscribes.clear();
                return;
            }
        }
    }
}

/// One bare connection attempt with these credentials: `Ok` on a successful CONNACK, else
/// the error, which for a refusal is `ConnectionError::ConnectionRefused(code)`.
pub async fn try_connect_raw(
    host: &str,
    port: u16,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<(), ConnectionError> {
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_credentials(username, password)
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_session(true);
    try_connect(options).await
}

/// Connects as `device` with a last will of `payload` on `will_topic` and leaves politely
/// (so the broker never publishes the will): the CONNACK is the answer.
pub async fn try_connect_with_will(
    host: &str,
    port: u16,
    device: &ProvisionedDevice,
    will_topic: &str,
    payload: &str,
) -> Result<(), ConnectionError> {
    let mut options = MqttOptions::new(&device.device_id, host, port);
    options
        .set_credentials(&device.mqtt_username, &device.mqtt_password)
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_session(true)
        .set_last_will(LastWill::new(will_topic, payload, QoS::AtLeastOnce, true));
    try_connect(options).await
}

async fn try_connect(options: MqttOptions) -> Result<(), ConnectionError> {
    let (client, mut event_loop) = AsyncClient::new(options, 8);
    let outcome = match timeout(DEADLINE, event_loop.poll()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(ConnectionError::NetworkTimeout),
    };
    if outcome.is_ok() {
        let _ = client.try_disconnect();
        let _ = timeout(Duration::from_secs(1), event_loop.poll()).await;
    }
    outcome
}

/// An MQTT 3.1.1 string: two length bytes, then the bytes as they are (no validation, which
/// is the point).
pub fn mqtt_string(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A packet: fixed header byte, variable-length remaining length, body.
pub fn mqtt_packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut length = body.len();
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if length == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A raw MQTT 3.1.1 CONNECT with clean session, username and password.
pub fn raw_connect(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    let mut connect = mqtt_string(b"MQTT");
    connect.extend_from_slice(&[4, 0b1100_0010, 0, 30]);
    connect.extend(mqtt_string(client_id.as_bytes()));
    connect.extend(mqtt_string(username.as_bytes()));
    connect.extend(mqtt_string(password.as_bytes()));
    mqtt_packet(0x10, &connect)
}
