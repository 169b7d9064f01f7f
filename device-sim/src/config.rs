//! How a fleet runs: the broker, the telemetry rate and QoS, the seed, and how badly some
//! devices behave (fail, answer late, never answer).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;

use crate::rate::Rate;

/// Where the devices connect: `mqtt://host:port` (port 1883 when left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// A host name or IP address.
    pub host: String,
    /// The MQTT port (1883 unless the URL says otherwise).
    pub port: u16,
}

/// The MQTT port when a broker URL names none.
const DEFAULT_MQTT_PORT: u16 = 1883;

/// Why a setting did not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("a broker is mqtt://host[:port], not {0:?} (TLS is not supported)")]
    Broker(String),
    #[error("QoS is 0 or 1, not {0:?}")]
    Qos(String),
    #[error("a reply delay is a duration (500ms) or a range (100ms..2s), not {0:?}: {1}")]
    Delay(String, String),
    #[error("{name} is a fraction from 0 to 1, not {value}")]
    Fraction { name: &'static str, value: f64 },
    #[error("fail rate and silent rate add up to more than 1 ({0})")]
    RatesOverOne(f64),
    #[error("jitter is a fraction from 0 to 1, not {0}")]
    Jitter(f64),
}

impl FromStr for Broker {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Broker, ConfigError> {
        let bad = || ConfigError::Broker(text.to_owned());
        let rest = text.trim().strip_prefix("mqtt://").ok_or_else(bad)?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
            None => (rest, DEFAULT_MQTT_PORT),
        };
        if host.is_empty() || host.contains('/') || host.contains('@') {
            return Err(bad());
        }
        Ok(Broker {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mqtt://{}:{}", self.host, self.port)
    }
}

/// The QoS of telemetry (status and command results always use QoS 1, as `openapi/asyncapi.yaml`
/// asks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// Fire and forget: "sent" means written to the socket.
    AtMostOnce,
    /// Acknowledged: "sent" means the broker's PUBACK arrived.
    AtLeastOnce,
}

impl FromStr for Qos {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Qos, ConfigError> {
        match text.trim() {
            "0" => Ok(Qos::AtMostOnce),
            "1" => Ok(Qos::AtLeastOnce),
            other => Err(ConfigError::Qos(other.to_owned())),
        }
    }
}

impl From<Qos> for rumqttc::QoS {
    fn from(qos: Qos) -> rumqttc::QoS {
        match qos {
            Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
            Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        }
    }
}

/// How long a device takes to answer a command: a fixed time or a uniform range, so that some
/// answers arrive after the command's timeout and the server's `timed_out` can be seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DelayRange {
    /// The shortest delay.
    pub min: Duration,
    /// The longest delay (equal to `min` for a fixed delay).
    pub max: Duration,
}

impl DelayRange {
    /// Answers at once.
    pub const NONE: DelayRange = DelayRange {
        min: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// One delay drawn from the range.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        if self.max <= self.min {
            self.min
        } else {
            rng.random_range(self.min..=self.max)
        }
    }
}

impl FromStr for DelayRange {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<DelayRange, ConfigError> {
        let parse = |part: &str| {
            humantime::parse_duration(part.trim())
                .map_err(|e| ConfigError::Delay(text.to_owned(), e.to_string()))
        };
        let (min, max) = match text.split_once("..") {
            Some((min, max)) => (parse(min)?, parse(max)?),
            None => {
                let fixed = parse(text)?;
                (fixed, fixed)
            }
        };
        if max < min {
            return Err(ConfigError::Delay(
                text.to_owned(),
                "the range ends before it starts".to_owned(),
            ));
        }
        Ok(DelayRange { min, max })
    }
}

/// How a device treats the commands it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Carries out what it knows, rejects what it does not.
    Normal,
    /// Answers every known command `failed` (a stuck relay, a full flash): unknown ones are
    /// still `rejected`, as firmware checks the name before trying.
    Failing,
    /// Receives commands and never answers, so the server has to time them out.
    Silent,
}

/// Everything a fleet needs besides the devices' credentials.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Where every device connects.
    pub broker: Broker,
    /// Telemetry rate of each device.
    pub rate: Rate,
    /// Fraction (0–1) by which each telemetry interval may differ from the period.
    pub jitter: f64,
    /// QoS of telemetry.
    pub qos: Qos,
    /// The same seed, credentials and rate give the same values and schedules.
    pub seed: u64,
    /// Fraction of devices that are [`Behaviour::Failing`].
    pub fail_rate: f64,
    /// Fraction of devices that are [`Behaviour::Silent`].
    pub silent_rate: f64,
    /// How long each answer waits.
    pub reply_delay: DelayRange,
    /// How long a device stays off after a `reboot` command.
    pub reboot_pause: Duration,
    /// MQTT keep-alive: how soon the broker notices a device that vanished.
    pub keep_alive: Duration,
    /// Each device's first connection waits a random time up to this, so that thousands of
    /// devices do not all knock at once.
    pub ramp_up: Duration,
    /// First wait after a failed connection; it doubles on each failure up to
    /// [`FleetConfig::max_backoff`].
    pub min_backoff: Duration,
    /// The longest wait between connection attempts, so a device notices a returning
    /// broker within this long.
    pub max_backoff: Duration,
}

impl FleetConfig {
    /// A fleet at 1/s with QoS 1, well-behaved devices that answer at once, and seed 0.
    pub fn new(broker: Broker) -> FleetConfig {
        FleetConfig {
            broker,
            rate: Rate::ONE_PER_SECOND,
            jitter: 0.1,
            qos: Qos::AtLeastOnce,
            seed: 0,
            fail_rate: 0.0,
            silent_rate: 0.0,
            reply_delay: DelayRange::NONE,
            reboot_pause: Duration::from_secs(2),
            keep_alive: Duration::from_secs(30),
            ramp_up: Duration::ZERO,
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
        }
    }

    /// Checks the fractions, so a fleet never starts with settings it cannot honour.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("fail rate", self.fail_rate),
            ("silent rate", self.silent_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ConfigError::Fraction { name, value });
            }
        }
        if self.fail_rate + self.silent_rate > 1.0 {
            return Err(ConfigError::RatesOverOne(self.fail_rate + self.silent_rate));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError::Jitter(self.jitter));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_and_without_a_port() {
        assert_eq!(
            "mqtt://127.0.0.1:1884".parse::<Broker>().unwrap(),
            Broker {
                host: "127.0.0.1".to_owned(),
                port: 1884
            }
        );
        assert_eq!("mqtt://broker.local".parse::<Broker>().unwrap().port, 1883);
        for bad in ["127.0.0.1:1883", "mqtts://h:8883", "mqtt://", "mqtt://h:x"] {
            assert!(bad.parse::<Broker>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn reply_delays_are_fixed_or_ranges() {
        let fixed: DelayRange = "500ms".parse().unwrap();
        assert_eq!(fixed.min, Duration::from_millis(500));
        assert_eq!(fixed.max, Duration::from_millis(500));
        let range: DelayRange = "100ms..2s".parse().unwrap();
        assert_eq!(range.min, Duration::from_millis(100));
        assert_eq!(range.max, Duration::from_secs(2));
        assert!("2s..1s".parse::<DelayRange>().is_err());
        assert!("soon".parse::<DelayRange>().is_err());
    }

    #[test]
    fn fractions_out_of_range_are_refused() {
        let broker: Broker = "mqtt://h".parse().unwrap();
        let mut config = FleetConfig::new(broker);
        assert_eq!(config.validate(), Ok(()));
        config.fail_rate = 0.7;
        config.silent_rate = 0.5;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::RatesOverOne(_))
        ));
        config.silent_rate = -0.1;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Fraction { .. })
        ));
    }
}
