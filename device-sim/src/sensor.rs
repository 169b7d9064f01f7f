//! The simulated sensor: values that evolve as a real one's would, from a seeded generator.
//!
//! Temperature wanders around the device's own set point (a bounded, mean-reverting random
//! walk), humidity wanders and dips as it gets warmer, the battery drains a little with
//! every hour (faster while the relay is on), and the relay holds whatever the last
//! `set_relay` command set. Each reading carries a sequence number, so anyone comparing what
//! was sent with what was stored can tell a lost message from a repeated one.

use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};

/// How far temperature may stray from the device's set point, in °C.
const TEMPERATURE_SPAN: f64 = 6.0;
/// Humidity stays within this band, in %.
const HUMIDITY_BOUNDS: (f64, f64) = (20.0, 90.0);
/// Battery drain per hour, in percentage points: quick enough that a demo sees it move.
const DRAIN_PER_HOUR: f64 = 2.0;
/// Extra drain per hour while the relay is on.
const RELAY_DRAIN_PER_HOUR: f64 = 4.0;

/// One device's sensor state.
#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    set_point: f64,
    temperature: f64,
    humidity: f64,
    battery: f64,
    relay: bool,
    seq: u64,
}

impl Sensor {
    /// A sensor with a set point between 18 and 26 °C, some humidity, a partly used battery
    /// and the relay off.
    pub fn new(rng: &mut impl Rng) -> Sensor {
        let set_point = rng.random_range(18.0..26.0);
        Sensor {
            set_point,
            temperature: set_point + rng.random_range(-1.0..1.0),
            humidity: rng.random_range(35.0..65.0),
            battery: rng.random_range(60.0..100.0),
            relay: false,
            seq: 0,
        }
    }

    /// Lets `elapsed` pass: the values move by an amount that grows with the time that
    /// passed, so the rate of telemetry does not change how fast the room warms up.
    pub fn step(&mut self, elapsed: Duration, rng: &mut impl Rng) {
        let seconds = elapsed.as_secs_f64();
        // A random walk's spread grows with the square root of time.
        let spread = seconds.sqrt().min(10.0);
        let pull = (0.02 * seconds).min(1.0);
        self.temperature += rng.random_range(-0.15..=0.15) * spread;
        self.temperature += (self.set_point - self.temperature) * pull;
        self.temperature = self.temperature.clamp(
            self.set_point - TEMPERATURE_SPAN,
            self.set_point + TEMPERATURE_SPAN,
        );
        let warmth = self.temperature - self.set_point;
        self.humidity += rng.random_range(-0.3..=0.3) * spread - warmth * 0.01 * spread;
        self.humidity = self.humidity.clamp(HUMIDITY_BOUNDS.0, HUMIDITY_BOUNDS.1);
        let per_hour = DRAIN_PER_HOUR
            + if self.relay {
                RELAY_DRAIN_PER_HOUR
            } else {
                0.0
            };
        self.battery = (self.battery - per_hour * seconds / 3_600.0).max(0.0);
    }

    /// Switches the relay, as a `set_relay` command does.
    pub fn set_relay(&mut self, on: bool) {
        self.relay = on;
    }

    /// Whether the relay is on.
    pub fn relay(&self) -> bool {
        self.relay
    }

    /// The sequence number the next reading will carry.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// The next telemetry payload, `{"ts", "values"}`, stamped `ts_ms`.
    pub fn reading(&mut self, ts_ms: i64) -> Value {
        let seq = self.seq;
        self.seq += 1;
        json!({
            "ts": ts_ms,
            "values": {
                "seq": seq,
                "temperature": round(self.temperature, 2),
                "humidity": round(self.humidity, 1),
                "battery": round(self.battery, 3),
                "relay": self.relay,
            }
        })
    }
}

/// Rounds to `places` decimals, so payloads read like a sensor's and not like float noise.
fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn readings(seed: u64, count: usize) -> Vec<Value> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut sensor = Sensor::new(&mut rng);
        (0..count)
            .map(|i| {
                sensor.step(Duration::from_secs(1), &mut rng);
                sensor.reading(1_700_000_000_000 + i as i64 * 1000)
            })
            .collect()
    }

    fn value(reading: &Value, name: &str) -> f64 {
        reading["values"][name].as_f64().unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_values() {
        assert_eq!(readings(42, 100), readings(42, 100));
        assert_ne!(readings(42, 100), readings(43, 100));
    }

    #[test]
    fn temperature_and_humidity_wander_within_their_bounds() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut sensor = Sensor::new(&mut rng);
        let set_point = sensor.set_point;
        let mut temperatures = Vec::new();
        for i in 0..20_000 {
            sensor.step(Duration::from_secs(10), &mut rng);
            let reading = sensor.reading(i);
            let t = value(&reading, "temperature");
            let h = value(&reading, "humidity");
            assert!((t - set_point).abs() <= TEMPERATURE_SPAN + 0.01, "{t}");
            assert!((HUMIDITY_BOUNDS.0..=HUMIDITY_BOUNDS.1).contains(&h), "{h}");
            temperatures.push(t);
        }
        let distinct: std::collections::HashSet<i64> =
            temperatures.iter().map(|t| (t * 100.0) as i64).collect();
        assert!(distinct.len() > 100, "temperature barely moves");
    }

    #[test]
    fn consecutive_temperatures_move_by_small_steps() {
        let all = readings(5, 1_000);
        for pair in all.windows(2) {
            let jump = (value(&pair[1], "temperature") - value(&pair[0], "temperature")).abs();
            assert!(jump < 0.5, "a jump of {jump} °C in one second");
        }
    }

    #[test]
    fn the_battery_only_drains_and_drains_faster_with_the_relay_on() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut off = Sensor::new(&mut rng);
        let mut on = off.clone();
        on.set_relay(true);
        let start = off.battery;
        let mut last = start;
        for _ in 0..60 {
            off.step(Duration::from_secs(60), &mut rng);
            on.step(Duration::from_secs(60), &mut rng);
            assert!(off.battery <= last);
            last = off.battery;
        }
        assert!((start - off.battery - DRAIN_PER_HOUR).abs() < 1e-9);
        assert!(start - on.battery > start - off.battery);
    }

    #[test]
    fn a_reading_reports_the_relay_and_numbers_itself() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut sensor = Sensor::new(&mut rng);
        let first = sensor.reading(10);
        sensor.set_relay(true);
        let second = sensor.reading(20);
        assert_eq!(first["ts"], 10);
        assert_eq!(first["values"]["seq"], 0);
        assert_eq!(first["values"]["relay"], false);
        assert_eq!(second["values"]["seq"], 1);
        assert_eq!(second["values"]["relay"], true);
        assert_eq!(sensor.next_seq(), 2);
        let mut names: Vec<&String> = second["values"].as_object().unwrap().keys().collect();
        names.sort();
        assert_eq!(
            names,
            ["battery", "humidity", "relay", "seq", "temperature"],
            "the values telemetry carries: numbers and booleans"
        );
    }
}
