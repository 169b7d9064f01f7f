//! `Fleet`: many simulated devices started together, with some of them failing or silent,
//! their counters added up, and one stop for all.

use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tokio_util::sync::CancellationToken;

use crate::config::{Behaviour, ConfigError, FleetConfig};
use crate::credentials::DeviceCredentials;
use crate::device::SimDevice;
use crate::stats::{Counts, Summary};

/// A running fleet of simulated devices.
pub struct Fleet {
    devices: Vec<SimDevice>,
    stop: CancellationToken,
    started: Instant,
    seed: u64,
}

impl Fleet {
    /// Starts one [`SimDevice`] per credential in the current tokio runtime. Exactly
    /// `round(fail_rate × n)` devices fail and `round(silent_rate × n)` stay silent, picked by
    /// the seed; see [`Fleet::devices`] for which.
    pub fn start(
        config: &FleetConfig,
        credentials: &[DeviceCredentials],
    ) -> Result<Fleet, ConfigError> {
        config.validate()?;
        let behaviours = assign_behaviours(credentials.len(), config);
        let stop = CancellationToken::new();
        let devices = credentials
            .iter()
            .zip(behaviours)
            .enumerate()
            .map(|(index, (device, behaviour))| {
                SimDevice::start(
                    device,
                    behaviour,
                    device_seed(config.seed, index as u64),
                    config,
                    stop.child_token(),
                )
            })
            .collect();
        Ok(Fleet {
            devices,
            stop,
            started: Instant::now(),
            seed: config.seed,
        })
    }

    /// The devices, in the order of their credentials.
    pub fn devices(&self) -> &[SimDevice] {
        &self.devices
    }

    /// The device with this id.
    pub fn device(&self, id: &str) -> Option<&SimDevice> {
        self.devices.iter().find(|device| device.id() == id)
    }

    /// The counters of every device added up, as they are now.
    pub fn totals(&self) -> Counts {
        self.devices
            .iter()
            .map(|device| device.stats().snapshot())
            .sum()
    }

    /// Devices that have connected at least once.
    pub fn connected_once(&self) -> u64 {
        self.devices
            .iter()
            .filter(|device| device.stats().snapshot().connects > 0)
            .count() as u64
    }

    /// The last connection error any device saw, to explain devices that never get in.
    pub fn last_error(&self) -> Option<String> {
        self.devices
            .iter()
            .find_map(|device| device.stats().last_error())
    }

    /// Stops every device at once (each says `offline` and disconnects cleanly) and returns
    /// the totals.
    pub async fn stop(self) -> Summary {
        self.stop.cancel();
        let devices_connected_once = self.connected_once();
        let stats: Vec<_> = self
            .devices
            .iter()
            .map(|device| device.stats().clone())
            .collect();
        futures_join_all(self.devices).await;
        Summary {
            totals: stats.iter().map(|stats| stats.snapshot()).sum(),
            devices_connected_once,
            elapsed: self.started.elapsed(),
            seed: self.seed,
        }
    }
}

/// Waits for every device; they end concurrently, since each was told to stop already.
async fn futures_join_all(devices: Vec<SimDevice>) {
    let mut tasks = tokio::task::JoinSet::new();
    for device in devices {
        tasks.spawn(device.join());
    }
    while tasks.join_next().await.is_some() {}
}

/// Which devices fail and which stay silent: exact counts, positions picked by the seed.
fn assign_behaviours(count: usize, config: &FleetConfig) -> Vec<Behaviour> {
    let failing = (config.fail_rate * count as f64).round() as usize;
    let silent =
        ((config.silent_rate * count as f64).round() as usize).min(count - failing.min(count));
    let mut behaviours = vec![Behaviour::Normal; count];
    let mut order: Vec<usize> = (0..count).collect();
    order.shuffle(&mut StdRng::seed_from_u64(config.seed));
    for (rank, index) in order.into_iter().enumerate() {
        if rank < failing {
            behaviours[index] = Behaviour::Failing;
        } else if rank < failing + silent {
            behaviours[index] = Behaviour::Silent;
        }
    }
    behaviours
}

/// The seed of device number `index`: SplitMix64 of the fleet's seed and the index, so
/// neighbouring devices get unrelated streams and a device keeps its values whatever the
/// fail and silent rates.
fn device_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(fail_rate: f64, silent_rate: f64, seed: u64) -> FleetConfig {
        let mut config = FleetConfig::new("mqtt://127.0.0.1:1".parse().unwrap());
        config.fail_rate = fail_rate;
        config.silent_rate = silent_rate;
        config.seed = seed;
        config
    }

    #[test]
    fn exact_shares_of_devices_fail_and_stay_silent() {
        let behaviours = assign_behaviours(50, &config(0.1, 0.2, 7));
        let count = |b| behaviours.iter().filter(|x| **x == b).count();
        assert_eq!(count(Behaviour::Failing), 5);
        assert_eq!(count(Behaviour::Silent), 10);
        assert_eq!(count(Behaviour::Normal), 35);
    }

    #[test]
    fn the_seed_picks_which_devices_misbehave() {
        let a = assign_behaviours(50, &config(0.1, 0.1, 1));
        assert_eq!(a, assign_behaviours(50, &config(0.1, 0.1, 1)));
        assert_ne!(a, assign_behaviours(50, &config(0.1, 0.1, 2)));
    }

    #[test]
    fn neighbouring_devices_get_different_seeds() {
        let seeds: std::collections::HashSet<u64> = (0..1000).map(|i| device_seed(0, i)).collect();
        assert_eq!(seeds.len(), 1000);
        assert_eq!(device_seed(42, 3), device_seed(42, 3));
    }

    #[tokio::test]
    async fn a_fleet_without_a_broker_counts_errors_and_stops_cleanly() {
        // Port 1 on localhost refuses connections at once: the devices keep trying.
        let credentials: Vec<DeviceCredentials> = (0..3)
            .map(|i| DeviceCredentials {
                device_id: format!("d{i}"),
                serial: None,
                claim_code: None,
                mqtt_username: format!("d{i}"),
                mqtt_password: "p".to_owned(),
            })
            .collect();
        let mut config = config(0.0, 0.0, 0);
        config.min_backoff = std::time::Duration::from_millis(10);
        let fleet = Fleet::start(&config, &credentials).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while fleet.totals().connection_errors < 6 {
            assert!(Instant::now() < deadline, "no connection errors counted");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(fleet.last_error().is_some());
        let summary = fleet.stop().await;
        assert_eq!(summary.devices_connected_once, 0);
        assert_eq!(summary.totals.telemetry_sent, 0);
        assert_eq!(summary.totals.online, 0);
    }
}
