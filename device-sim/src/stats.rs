//! Counters every simulated device keeps, their fleet-wide totals, and the final summary.
//!
//! Counters are plain atomics written by the device's own tasks and read by anyone (the
//! status line, a test) at any time without stopping the fleet.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::firmware::Outcome;

/// The live counters of one device.
#[derive(Debug, Default)]
pub struct DeviceStats {
    /// Telemetry messages the broker took: acknowledged with PUBACK at QoS 1, written to the
    /// socket at QoS 0.
    pub telemetry_sent: AtomicU64,
    /// Telemetry the device produced but could not get to the broker: while disconnected,
    /// with its send queue full, or unacknowledged when it stopped.
    pub telemetry_unsent: AtomicU64,
    /// Commands received on the commands topic, valid or not.
    pub commands_received: AtomicU64,
    pub answered_succeeded: AtomicU64,
    pub answered_failed: AtomicU64,
    pub answered_rejected: AtomicU64,
    /// Answers that never reached the broker.
    pub answers_unsent: AtomicU64,
    /// Commands dropped because they arrived past `expires_at`.
    pub commands_expired: AtomicU64,
    /// Second deliveries of a command id, not answered again.
    pub commands_duplicate: AtomicU64,
    /// Commands a silent device received and kept quiet about.
    pub commands_ignored: AtomicU64,
    /// Payloads on the commands topic that were not commands.
    pub commands_invalid: AtomicU64,
    /// Successful connections (CONNACK accepted), the first one included.
    pub connects: AtomicU64,
    /// Failed connection attempts and lost connections.
    pub connection_errors: AtomicU64,
    /// Connected and subscribed to its commands: ready to be sent commands.
    pub online: AtomicBool,
    /// The last connection error, for telling a wrong password from a dead broker.
    pub last_error: Mutex<Option<String>>,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl DeviceStats {
    /// Counts one answer the broker took.
    pub(crate) fn answered(&self, outcome: Outcome) {
        bump(match outcome {
            Outcome::Succeeded => &self.answered_succeeded,
            Outcome::Failed => &self.answered_failed,
            Outcome::Rejected => &self.answered_rejected,
        });
    }

    pub(crate) fn set_last_error(&self, error: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error);
        }
    }

    /// The counters as they are now.
    pub fn snapshot(&self) -> Counts {
        Counts {
            devices: 1,
            online: u64::from(self.online.load(Ordering::Relaxed)),
            telemetry_sent: read(&self.telemetry_sent),
            telemetry_unsent: read(&self.telemetry_unsent),
            commands_received: read(&self.commands_received),
            answered_succeeded: read(&self.answered_succeeded),
            answered_failed: read(&self.answered_failed),
            answered_rejected: read(&self.answered_rejected),
            answers_unsent: read(&self.answers_unsent),
            commands_expired: read(&self.commands_expired),
            commands_duplicate: read(&self.commands_duplicate),
            commands_ignored: read(&self.commands_ignored),
            commands_invalid: read(&self.commands_invalid),
            connects: read(&self.connects),
            connection_errors: read(&self.connection_errors),
        }
    }

    /// The last connection error, if there was one.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|last| last.clone())
    }
}

/// A snapshot of counters, of one device or added up over a fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// How many devices these counts cover.
    pub devices: u64,
    /// Devices connected and subscribed right now.
    pub online: u64,
    /// The rest mean what the [`DeviceStats`] field of the same name means.
    pub telemetry_sent: u64,
    pub telemetry_unsent: u64,
    pub commands_received: u64,
    pub answered_succeeded: u64,
    pub answered_failed: u64,
    pub answered_rejected: u64,
    pub answers_unsent: u64,
    pub commands_expired: u64,
    pub commands_duplicate: u64,
    pub commands_ignored: u64,
    pub commands_invalid: u64,
    pub connects: u64,
    pub connection_errors: u64,
}

impl Counts {
    /// Answers the broker took, whatever their outcome.
    pub fn answered(&self) -> u64 {
        self.answered_succeeded + self.answered_failed + self.answered_rejected
    }

    /// Connections after each device's first: after a lost connection or a reboot.
    pub fn reconnects(&self, devices_connected_once: u64) -> u64 {
        self.connects.saturating_sub(devices_connected_once)
    }

    /// What went wrong, in one number for the status line.
    pub fn errors(&self) -> u64 {
        self.telemetry_unsent + self.answers_unsent + self.commands_invalid + self.connection_errors
    }
}

impl std::ops::Add for Counts {
    type Output = Counts;

    fn add(self, other: Counts) -> Counts {
        Counts {
            devices: self.devices + other.devices,
            online: self.online + other.online,
            telemetry_sent: self.telemetry_sent + other.telemetry_sent,
            telemetry_unsent: self.telemetry_unsent + other.telemetry_unsent,
            commands_received: self.commands_received + other.commands_received,
            answered_succeeded: self.answered_succeeded + other.answered_succeeded,
            answered_failed: self.answered_failed + other.answered_failed,
            answered_rejected: self.answered_rejected + other.answered_rejected,
            answers_unsent: self.answers_unsent + other.answers_unsent,
            commands_expired: self.commands_expired + other.commands_expired,
            commands_duplicate: self.commands_duplicate + other.commands_duplicate,
            commands_ignored: self.commands_ignored + other.commands_ignored,
            commands_invalid: self.commands_invalid + other.commands_invalid,
            connects: self.connects + other.connects,
            connection_errors: self.connection_errors + other.connection_errors,
        }
    }
}

impl std::iter::Sum for Counts {
    fn sum<I: Iterator<Item = Counts>>(iter: I) -> Counts {
        iter.fold(Counts::default(), |total, counts| total + counts)
    }
}

/// How a fleet run ended: its totals over its whole life.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Every device's counters added up.
    pub totals: Counts,
    /// Devices that connected at least once (the rest never got in: wrong credentials, no
    /// broker).
    pub devices_connected_once: u64,
    /// From the start of the fleet to the end of its stop.
    pub elapsed: Duration,
    /// The seed, to repeat the run.
    pub seed: u64,
}

impl Summary {
    /// Connections after each device's first.
    pub fn reconnects(&self) -> u64 {
        self.totals.reconnects(self.devices_connected_once)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.totals;
        let seconds = self.elapsed.as_secs_f64().max(f64::EPSILON);
        writeln!(
            f,
            "device-sim summary: {} devices for {:.1} s (seed {})",
            t.devices, seconds, self.seed
        )?;
        writeln!(
            f,
            "  telemetry sent:     {} ({:.1}/s)",
            t.telemetry_sent,
            t.telemetry_sent as f64 / seconds
        )?;
        writeln!(f, "  failed to send:     {}", t.telemetry_unsent)?;
        writeln!(
            f,
            "  commands received:  {} (answered {}: succeeded {}, failed {}, rejected {}; \
             expired {}, duplicates {}, ignored by silent devices {}, invalid {}, answers not sent {})",
            t.commands_received,
            t.answered(),
            t.answered_succeeded,
            t.answered_failed,
            t.answered_rejected,
            t.commands_expired,
            t.commands_duplicate,
            t.commands_ignored,
            t.commands_invalid,
            t.answers_unsent
        )?;
        write!(
            f,
            "  connections:        {} devices connected, {} reconnects, {} connection errors",
            self.devices_connected_once,
            self.reconnects(),
            t.connection_errors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_over_devices() {
        let a = DeviceStats::default();
        let b = DeviceStats::default();
        bump(&a.telemetry_sent);
        bump(&b.telemetry_sent);
        bump(&b.connects);
        b.answered(Outcome::Rejected);
        b.online.store(true, Ordering::Relaxed);
        let total: Counts = [a.snapshot(), b.snapshot()].into_iter().sum();
        assert_eq!(total.devices, 2);
        assert_eq!(total.online, 1);
        assert_eq!(total.telemetry_sent, 2);
        assert_eq!(total.answered(), 1);
        assert_eq!(total.reconnects(1), 0);
    }
}
