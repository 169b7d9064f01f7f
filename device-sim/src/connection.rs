//! One device's MQTT connection: its rumqttc event loop, driven in a task of its own with
//! capped exponential backoff between attempts, and the bookkeeping that tells which of the
//! device's publishes the broker took.
//!
//! rumqttc reconnects as soon as its event loop is polled again, which against a dead broker
//! is a tight loop: the wait between attempts is ours. After every CONNACK the device says
//! `online` (retained) and subscribes to its commands again, since sessions are clean.
//!
//! rumqttc reports a publish only by packet id (`Outgoing::Publish(pkid)` when written,
//! `PubAck(pkid)` when acknowledged). It takes requests in the order they were queued, so a
//! ledger of what was queued, in order, names each packet id as it appears; a packet id
//! already in flight is a resend after a reconnect, not a new message.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    SubscribeReasonCode,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::credentials::DeviceCredentials;
use crate::firmware::Outcome;
use crate::stats::{DeviceStats, bump};

/// Requests (publishes, subscribes) a device may have queued for its event loop; beyond this
/// a publish fails at once and counts as not sent, rather than piling up while the broker is
/// away.
const REQUEST_QUEUE: usize = 64;

/// What a publish was, for counting it once the broker has it (or once it is lost).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Telemetry,
    Status,
    Answer(Outcome),
}

struct Tracked {
    kind: Kind,
    /// Told when the broker has the message.
    acked: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
struct Ledger {
    /// Queued for rumqttc, not yet written: oldest first.
    queued: VecDeque<Tracked>,
    /// Written with QoS 1, waiting for the PUBACK.
    in_flight: HashMap<u16, Tracked>,
}

/// What the device wants of its connection when it next goes down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Intent {
    /// Stay connected; reconnect after a loss.
    Run,
    /// Disconnect, stay off this long, then connect again.
    Reboot(Duration),
    /// Disconnect for good.
    Stop,
}

/// What the connection tells its device.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    /// Connected, `online` queued, and subscribed to the commands topic.
    Ready,
    /// The connection is gone.
    Down,
    /// A payload on the device's commands topic.
    Command(Bytes),
}

/// The device's side of its connection: publishing, and saying what it wants.
pub(crate) struct Link {
    id: String,
    client: AsyncClient,
    ledger: Mutex<Ledger>,
    intent: Mutex<Intent>,
    stats: Arc<DeviceStats>,
}

/// Backoff and timing settings for [`drive`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub start_delay: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// `devices/{id}/{leaf}`, as `openapi/asyncapi.yaml` names it.
pub(crate) fn topic(id: &str, leaf: &str) -> String {
    format!("devices/{id}/{leaf}")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent at every await-free step, so a panic
    // elsewhere leaves nothing half-done to protect against.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Link {
    /// A client for `credentials` and its not yet polled event loop.
    pub(crate) fn new(
        credentials: &DeviceCredentials,
        host: &str,
        port: u16,
        keep_alive: Duration,
        stats: Arc<DeviceStats>,
    ) -> (Arc<Link>, EventLoop) {
        let id = credentials.device_id.clone();
        let mut options = MqttOptions::new(&id, host, port);
        options
            .set_credentials(&credentials.mqtt_username, &credentials.mqtt_password)
            .set_keep_alive(keep_alive)
            .set_clean_session(true)
            .set_last_will(LastWill::new(
                topic(&id, "status"),
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
        // Results and telemetry are small packets; Nagle's algorithm would hold one back for
        // up to a delayed ACK (40 ms) behind the previous one.
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let link = Link {
            id,
            client,
            ledger: Mutex::new(Ledger::default()),
            intent: Mutex::new(Intent::Run),
            stats,
        };
        (Arc::new(link), eventloop)
    }

    /// Queues a publish on the device's `leaf` topic; false (and counted as not sent) when the
    /// queue is full. `acked` is told once the broker has it.
    pub(crate) fn publish(
        &self,
        leaf: &str,
        payload: Vec<u8>,
        qos: QoS,
        retain: bool,
        kind: Kind,
        acked: Option<oneshot::Sender<()>>,
    ) -> bool {
        let mut ledger = lock(&self.ledger);
        // Queued in the ledger and in rumqttc under one lock, so both orders are the same.
        ledger.queued.push_back(Tracked { kind, acked });
        match self
            .client
            .try_publish(topic(&self.id, leaf), qos, retain, payload)
        {
            Ok(()) => true,
            Err(_) => {
                if let Some(tracked) = ledger.queued.pop_back() {
                    self.count_lost(tracked.kind);
                }
                false
            }
        }
    }

    /// Asks for a disconnect that leads to `intent`; false if the request could not be queued.
    pub(crate) fn disconnect(&self, intent: Intent) -> bool {
        *lock(&self.intent) = intent;
        self.client.try_disconnect().is_ok()
    }

    fn intent(&self) -> Intent {
        *lock(&self.intent)
    }

    /// rumqttc wrote a publish with this packet id (0 for QoS 0).
    fn written(&self, pkid: u16) {
        let mut ledger = lock(&self.ledger);
        if pkid != 0 && ledger.in_flight.contains_key(&pkid) {
            return;
        }
        let Some(tracked) = ledger.queued.pop_front() else {
            return;
        };
        if pkid == 0 {
            drop(ledger);
            self.count_delivered(tracked);
        } else {
            ledger.in_flight.insert(pkid, tracked);
        }
    }

    /// The broker acknowledged this packet id.
    fn acknowledged(&self, pkid: u16) {
        let tracked = lock(&self.ledger).in_flight.remove(&pkid);
        if let Some(tracked) = tracked {
            self.count_delivered(tracked);
        }
    }

    fn count_delivered(&self, tracked: Tracked) {
        match tracked.kind {
            Kind::Telemetry => bump(&self.stats.telemetry_sent),
            Kind::Answer(outcome) => self.stats.answered(outcome),
            Kind::Status => {}
        }
        if let Some(acked) = tracked.acked {
            let _ = acked.send(());
        }
    }

    fn count_lost(&self, kind: Kind) {
        match kind {
            Kind::Telemetry => bump(&self.stats.telemetry_unsent),
            Kind::Answer(_) => bump(&self.stats.answers_unsent),
            Kind::Status => {}
        }
    }

    /// Ends the session for good (a reboot or a stop): closes the socket and counts whatever
    /// was queued or unacknowledged as not sent, since a rebooted device has forgotten it.
    fn end_session(&self, eventloop: &mut EventLoop) {
        let mut guard = lock(&self.ledger);
        eventloop.clean();
        eventloop.pending.clear();
        let ledger = &mut *guard;
        let lost: Vec<Kind> = ledger
            .queued
            .drain(..)
            .chain(ledger.in_flight.drain().map(|(_, tracked)| tracked))
            .map(|tracked| tracked.kind)
            .collect();
        drop(guard);
        for kind in lost {
            self.count_lost(kind);
        }
    }
}

/// Drives the event loop until the device stops (or `hard_stop`): connects, reconnects with
/// backoff, forwards commands and connection changes to the device, and counts publishes.
pub(crate) async fn drive(
    mut eventloop: EventLoop,
    link: Arc<Link>,
    events: mpsc::UnboundedSender<LinkEvent>,
    timing: Timing,
    hard_stop: CancellationToken,
) {
    let stats = link.stats.clone();
    let commands = topic(&link.id, "commands");
    if !timing.start_delay.is_zero() {
        tokio::select! {
            _ = hard_stop.cancelled() => return,
            _ = tokio::time::sleep(timing.start_delay) => {}
        }
    }
    let mut backoff = timing.min_backoff;
    loop {
        // Cancelling a poll midway may leave the event loop unusable; that is fine here, as
        // it is only ever cancelled for good.
        let polled = tokio::select! {
            biased;
            _ = hard_stop.cancelled() => break,
            polled = eventloop.poll() => polled,
        };
        match polled {
            // rumqttc turns a refused CONNACK into an error, so this one is accepted.
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = timing.min_backoff;
                *lock(&link.intent) = Intent::Run;
                bump(&stats.connects);
                link.publish(
                    "status",
                    b"online".to_vec(),
                    QoS::AtLeastOnce,
                    true,
                    Kind::Status,
                    None,
                );
                if let Err(error) = link.client.try_subscribe(&commands, QoS::AtLeastOnce) {
                    stats.set_last_error(format!("cannot subscribe to {commands}: {error}"));
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let granted = ack
                    .return_codes
                    .iter()
                    .all(|code| matches!(code, SubscribeReasonCode::Success(_)));
                if granted {
                    stats.online.store(true, Ordering::Relaxed);
                    let _ = events.send(LinkEvent::Ready);
                } else {
                    stats.set_last_error(format!(
                        "the broker refused the subscription to {commands}"
                    ));
                }
            }
            Ok(Event::Incoming(Packet::Publish(message))) => {
                if message.topic == commands {
                    let _ = events.send(LinkEvent::Command(message.payload));
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => link.acknowledged(ack.pkid),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => link.written(pkid),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // The DISCONNECT is on the wire; closing our end is the client's job (MQTT
                // 3.1.1 §3.14.4), and the broker discards the last will.
                stats.online.store(false, Ordering::Relaxed);
                link.end_session(&mut eventloop);
                let _ = events.send(LinkEvent::Down);
                match link.intent() {
                    Intent::Reboot(pause) => {
                        tokio::select! {
                            _ = hard_stop.cancelled() => break,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                    Intent::Run | Intent::Stop => break,
                }
            }
            Ok(_) => {}
            Err(error) => {
                stats.online.store(false, Ordering::Relaxed);
                if link.intent() == Intent::Stop {
                    break;
                }
                bump(&stats.connection_errors);
                stats.set_last_error(error.to_string());
                let _ = events.send(LinkEvent::Down);
                // Half to all of the backoff, so a fleet that lost its broker does not come
                // back in one synchronized wave.
                let wait = backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
                backoff = (backoff * 2).min(timing.max_backoff);
                tokio::select! {
                    _ = hard_stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    stats.online.store(false, Ordering::Relaxed);
    link.end_session(&mut eventloop);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;

    fn link() -> (Arc<Link>, EventLoop) {
        let credentials = DeviceCredentials {
            device_id: "d1".to_owned(),
            serial: None,
            claim_code: None,
            mqtt_username: "d1".to_owned(),
            mqtt_password: "p".to_owned(),
        };
        Link::new(
            &credentials,
            "127.0.0.1",
            1,
            Duration::from_secs(30),
            Arc::new(DeviceStats::default()),
        )
    }

    fn publish(link: &Link, kind: Kind, qos: QoS) -> oneshot::Receiver<()> {
        let (acked_tx, acked) = oneshot::channel();
        assert!(link.publish(
            "telemetry",
            b"{}".to_vec(),
            qos,
            false,
            kind,
            Some(acked_tx)
        ));
        acked
    }

    #[test]
    fn a_publish_counts_as_sent_once_its_packet_id_is_acknowledged() {
        let (link, _eventloop) = link();
        let mut first = publish(&link, Kind::Telemetry, QoS::AtLeastOnce);
        let _answer = publish(&link, Kind::Answer(Outcome::Rejected), QoS::AtLeastOnce);
        link.written(1);
        link.written(2);
        assert_eq!(link.stats.telemetry_sent.load(Relaxed), 0, "not acked yet");
        link.acknowledged(1);
        assert_eq!(link.stats.telemetry_sent.load(Relaxed), 1);
        assert!(first.try_recv().is_ok(), "the waiter is told");
        // A resend after a reconnect carries the same packet id: still one message.
        link.written(2);
        link.acknowledged(2);
        link.acknowledged(2);
        assert_eq!(link.stats.answered_rejected.load(Relaxed), 1);
        assert_eq!(link.stats.telemetry_sent.load(Relaxed), 1);
    }

    #[test]
    fn a_qos_0_publish_counts_as_sent_when_written() {
        let (link, _eventloop) = link();
        let _telemetry = publish(&link, Kind::Telemetry, QoS::AtMostOnce);
        link.written(0);
        assert_eq!(link.stats.telemetry_sent.load(Relaxed), 1);
    }

    #[test]
    fn what_was_queued_or_unacknowledged_when_a_session_ends_counts_as_not_sent() {
        let (link, mut eventloop) = link();
        let _in_flight = publish(&link, Kind::Telemetry, QoS::AtLeastOnce);
        let _queued = publish(&link, Kind::Telemetry, QoS::AtLeastOnce);
        let _answer = publish(&link, Kind::Answer(Outcome::Succeeded), QoS::AtLeastOnce);
        link.written(1);
        link.end_session(&mut eventloop);
        assert_eq!(link.stats.telemetry_unsent.load(Relaxed), 2);
        assert_eq!(link.stats.answers_unsent.load(Relaxed), 1);
        assert_eq!(link.stats.telemetry_sent.load(Relaxed), 0);
    }

    #[test]
    fn a_full_request_queue_counts_the_publish_as_not_sent() {
        let (link, _eventloop) = link();
        for _ in 0..REQUEST_QUEUE {
            drop(publish(&link, Kind::Telemetry, QoS::AtLeastOnce));
        }
        assert!(!link.publish(
            "telemetry",
            b"{}".to_vec(),
            QoS::AtLeastOnce,
            false,
            Kind::Telemetry,
            None
        ));
        assert_eq!(link.stats.telemetry_unsent.load(Relaxed), 1);
    }
}
