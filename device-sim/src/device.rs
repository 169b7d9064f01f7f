//! `SimDevice`: one simulated device behaving like firmware, with its telemetry schedule,
//! its sensor, its command handling and its own MQTT connection.
//!
//! Each device runs two tasks: the connection (see [`crate::connection`]) and the device
//! itself, which reacts to the connection's events, its telemetry timer and its delayed
//! answers. Neither blocks the other, so a slow broker never stalls the sensor's clock.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rumqttc::QoS;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::config::{Behaviour, FleetConfig};
use crate::connection::{self, Intent, Kind, Link, LinkEvent, Timing};
use crate::credentials::DeviceCredentials;
use crate::firmware::{Action, Command, Decision, Firmware, Reply};
use crate::rate::Schedule;
use crate::sensor::Sensor;
use crate::stats::{DeviceStats, bump};

/// How long a device waits for the broker to take its last words (an answer before a reboot,
/// `offline` before it stops) before it goes anyway.
const GOODBYE_WAIT: Duration = Duration::from_secs(5);

/// A running simulated device. Dropping it leaves its tasks running until the runtime
/// ends; [`SimDevice::stop`] ends them cleanly.
pub struct SimDevice {
    id: String,
    behaviour: Behaviour,
    stats: Arc<DeviceStats>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl SimDevice {
    /// Starts a device in the current tokio runtime: it connects to `config.broker` with
    /// `credentials`, sends telemetry at `config.rate` and answers commands as `behaviour`
    /// says. `seed` fixes its values and schedule; `stop` (or [`SimDevice::stop`]) ends it.
    pub fn start(
        credentials: &DeviceCredentials,
        behaviour: Behaviour,
        seed: u64,
        config: &FleetConfig,
        stop: CancellationToken,
    ) -> SimDevice {
        let stats = Arc::new(DeviceStats::default());
        let mut rng = StdRng::seed_from_u64(seed);
        let start_delay = if config.ramp_up.is_zero() {
            Duration::ZERO
        } else {
            config
                .ramp_up
                .mul_f64(rand::Rng::random_range(&mut rng, 0.0..1.0))
        };
        let (link, eventloop) = Link::new(
            credentials,
            &config.broker.host,
            config.broker.port,
            config.keep_alive,
            stats.clone(),
        );
        let (events_tx, events) = mpsc::unbounded_channel();
        let hard_stop = CancellationToken::new();
        let connection = tokio::spawn(connection::drive(
            eventloop,
            link.clone(),
            events_tx,
            Timing {
                start_delay,
                min_backoff: config.min_backoff,
                max_backoff: config.max_backoff,
            },
            hard_stop.clone(),
        ));
        let (replies_tx, replies) = mpsc::unbounded_channel();
        let device = Device {
            link,
            stats: stats.clone(),
            firmware: Firmware::new(behaviour),
            sensor: Sensor::new(&mut rng),
            rng,
            config: config.clone(),
            state: State::Booting,
            schedule: None,
            last_step: Instant::now(),
            replies_tx,
            stop: stop.clone(),
        };
        let task = tokio::spawn(device.run(events, replies, connection, hard_stop));
        SimDevice {
            id: credentials.device_id.clone(),
            behaviour,
            stats,
            stop,
            task,
        }
    }

    /// The device id (also its MQTT client id).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How it answers commands.
    pub fn behaviour(&self) -> Behaviour {
        self.behaviour
    }

    /// Its live counters.
    pub fn stats(&self) -> &Arc<DeviceStats> {
        &self.stats
    }

    /// Whether it is connected and subscribed to its commands right now.
    pub fn is_online(&self) -> bool {
        self.stats.online.load(Ordering::Relaxed)
    }

    /// Says `offline`, disconnects cleanly and waits for both tasks to end.
    pub async fn stop(self) {
        self.stop.cancel();
        self.join().await;
    }

    /// Waits for the device to end after its stop token was cancelled.
    pub(crate) async fn join(self) {
        let _ = self.task.await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected yet: no sensor readings.
    Booting,
    Running,
    /// Connection lost: readings go on and count as not sent.
    Offline,
    /// Off for a reboot: no readings.
    Rebooting,
}

struct Device {
    link: Arc<Link>,
    stats: Arc<DeviceStats>,
    firmware: Firmware,
    sensor: Sensor,
    rng: StdRng,
    config: FleetConfig,
    state: State,
    schedule: Option<Schedule>,
    last_step: Instant,
    replies_tx: mpsc::UnboundedSender<(Reply, Action)>,
    stop: CancellationToken,
}

impl Device {
    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<LinkEvent>,
        mut replies: mpsc::UnboundedReceiver<(Reply, Action)>,
        connection: JoinHandle<()>,
        hard_stop: CancellationToken,
    ) {
        loop {
            let due = self
                .schedule
                .as_ref()
                .filter(|_| matches!(self.state, State::Running | State::Offline))
                .map(Schedule::due);
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                event = events.recv() => match event {
                    Some(event) => self.on_link_event(event).await,
                    // The connection ended on its own (hard stop): nothing left to do.
                    None => break,
                },
                Some((reply, action)) = replies.recv() => self.answer(reply, action).await,
                _ = sleep_until_due(due) => self.tick(),
            }
        }
        self.shut_down(connection, hard_stop).await;
    }

    async fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Ready => {
                let now = Instant::now();
                // After a boot or a reboot the sensor starts on a new phase; after a lost
                // connection it kept its rhythm all along.
                if self.schedule.is_none() || self.state != State::Offline {
                    self.schedule = Some(Schedule::start(
                        self.config.rate.period(),
                        self.config.jitter,
                        now,
                        &mut self.rng,
                    ));
                }
                if self.state != State::Offline {
                    self.last_step = now;
                }
                self.state = State::Running;
            }
            LinkEvent::Down => {
                if self.state == State::Running {
                    self.state = State::Offline;
                }
            }
            LinkEvent::Command(payload) => self.on_command(&payload).await,
        }
    }

    /// One sensor reading, sent if connected and counted as not sent otherwise.
    fn tick(&mut self) {
        let now = Instant::now();
        self.sensor
            .step(now.saturating_duration_since(self.last_step), &mut self.rng);
        self.last_step = now;
        let reading = self.sensor.reading(unix_ms());
        if self.state == State::Running {
            self.link.publish(
                "telemetry",
                reading.to_string().into_bytes(),
                self.config.qos.into(),
                false,
                Kind::Telemetry,
                None,
            );
        } else {
            bump(&self.stats.telemetry_unsent);
        }
        if let Some(schedule) = self.schedule.as_mut() {
            schedule.advance(now, &mut self.rng);
        }
    }

    async fn on_command(&mut self, payload: &[u8]) {
        bump(&self.stats.commands_received);
        let command = match Command::parse(payload) {
            Ok(command) => command,
            Err(_) => {
                bump(&self.stats.commands_invalid);
                return;
            }
        };
        match self.firmware.decide(&command, unix_ms()) {
            Decision::Expired => bump(&self.stats.commands_expired),
            Decision::Duplicate => bump(&self.stats.commands_duplicate),
            Decision::Ignored => bump(&self.stats.commands_ignored),
            Decision::Answer { reply, action } => {
                let delay = self.config.reply_delay.sample(&mut self.rng);
                if delay.is_zero() {
                    self.answer(reply, action).await;
                } else {
                    let replies = self.replies_tx.clone();
                    let stop = self.stop.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = tokio::time::sleep(delay) => {
                                let _ = replies.send((reply, action));
                            }
                        }
                    });
                }
            }
        }
    }

    /// Carries out `action` and publishes `reply`. The relay switches before the answer
    /// leaves, so every reading after a `succeeded` shows the new state.
    async fn answer(&mut self, reply: Reply, action: Action) {
        if let Action::SetRelay(on) = action {
            self.sensor.set_relay(on);
        }
        let (acked_tx, acked) = oneshot::channel();
        self.link.publish(
            "commands/result",
            reply.to_payload(),
            QoS::AtLeastOnce,
            false,
            Kind::Answer(reply.outcome),
            Some(acked_tx),
        );
        if action == Action::Reboot {
            self.reboot(acked).await;
        }
    }

    /// Goes off as a rebooting device does: once the broker has the answer, says `offline`
    /// and disconnects; the connection comes back after the reboot pause.
    async fn reboot(&mut self, answered: oneshot::Receiver<()>) {
        self.state = State::Rebooting;
        let _ = timeout(GOODBYE_WAIT, answered).await;
        self.say_offline().await;
        self.link
            .disconnect(Intent::Reboot(self.config.reboot_pause));
    }

    /// Publishes a retained `offline` and waits for the broker to take it: the broker
    /// acknowledges in order, so everything sent before it has arrived too.
    async fn say_offline(&self) {
        let (acked_tx, acked) = oneshot::channel();
        let queued = self.link.publish(
            "status",
            b"offline".to_vec(),
            QoS::AtLeastOnce,
            true,
            Kind::Status,
            Some(acked_tx),
        );
        if queued {
            let _ = timeout(GOODBYE_WAIT, acked).await;
        }
    }

    /// Says goodbye if connected, then ends the connection.
    async fn shut_down(self, mut connection: JoinHandle<()>, hard_stop: CancellationToken) {
        if self.stats.online.load(Ordering::Relaxed) {
            self.say_offline().await;
            if self.link.disconnect(Intent::Stop)
                && timeout(GOODBYE_WAIT, &mut connection).await.is_ok()
            {
                return;
            }
        }
        hard_stop.cancel();
        let _ = connection.await;
    }
}

/// Sleeps until `due`, or forever when nothing is due.
async fn sleep_until_due(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// The device's clock, in unix milliseconds.
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
