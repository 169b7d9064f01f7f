//! Two iotbind server processes side by side, as a scaled deployment runs them: one database
//! (PostgreSQL when `IOTBIND_TEST_DATABASE_URL` names one), one external Mosquitto with
//! dynamic security, 50 simulated devices. They split the telemetry through the shared
//! subscription, relay commands whichever replica a request reaches, share the lockout and the
//! refresh tokens, and one carries on when the other is killed.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Stdio};
use std::sync::Arc;

use device_sim::{Broker, DeviceCredentials, DeviceStats, Fleet, FleetConfig, Qos};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

use crate::support::eventually;
use crate::support::mosquitto::{DYNSEC_ADMIN, DYNSEC_ADMIN_PASSWORD, PrivateMosquitto, free_port};
use crate::support::{ProvisionedDevice, fresh_database_url};
use crate::support::{create_user, iotbind};

const DEVICES: usize = 50;
const JWT_SECRET: &str = "a signing key both replicas share, 32+ bytes";
/// Readings every device sends at 5/s: 2 s either side of the kill that the test does not
/// expect to be whole.
const KILL_WINDOW: u64 = 10;

/// One replica: its process and its HTTP address.
struct Replica {
    process: Child,
    base: String,
}

impl Replica {
    async fn start(dir: &tempfile::TempDir, database: &str, broker: &PrivateMosquitto) -> Replica {
        let port = free_port();
        let process = iotbind(dir)
            .env("IOTBIND_DATABASE_URL", database)
            .env("IOTBIND_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("IOTBIND_MQTT_URL", broker.url())
            .env("IOTBIND_MQTT_USERNAME", DYNSEC_ADMIN)
            .env("IOTBIND_MQTT_PASSWORD", DYNSEC_ADMIN_PASSWORD)
            .env("IOTBIND_MQTT_DYNSEC", "true")
            .env("IOTBIND_JWT_SECRET", JWT_SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let ready = format!("{base}/health/ready");
        eventually("a replica to be ready", async || {
            let response = reqwest::get(&ready).await.ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
        Replica { process, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> reqwest::Response {
        let mut request = reqwest::Client::new().post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.post(
            "/api/v1/auth/login",
            None,
            json!({ "username": username, "password": password }),
        )
        .await
    }

    async fn token(&self, username: &str, password: &str) -> Value {
        let response = self.login(username, password).await;
        assert_eq!(response.status(), 200, "{username} logs in");
        response.json().await.unwrap()
    }

    /// Telemetry rows this replica has written, from its own `/metrics`.
    async fn rows_written(&self) -> f64 {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|line| line.starts_with("iotbind_telemetry_rows_written_total"))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    async fn set_relay(&self, token: &str, device_id: &str) -> Value {
        let response = self
            .post(
                &format!("/api/v1/devices/{device_id}/commands"),
                Some(token),
                json!({ "name": "set_relay", "params": { "on": true }, "wait": true }),
            )
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every stored reading's `seq`, by device.
async fn stored_seqs(database: &str) -> HashMap<String, Vec<u64>> {
    let db = Database::connect(database).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT device_id, values_json FROM telemetry".to_owned(),
        ))
        .await
        .unwrap();
    let mut seqs: HashMap<String, Vec<u64>> = HashMap::new();
    for row in rows {
        let device: uuid::Uuid = row.try_get_by_index(0).unwrap();
        let values: String = row.try_get_by_index(1).unwrap();
        let values: Value = serde_json::from_str(&values).unwrap();
        if let Some(seq) = values["seq"].as_u64() {
            seqs.entry(device.to_string()).or_default().push(seq);
        }
    }
    db.close().await.ok();
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_split_the_work_share_the_state_and_survive_each_other() {
    let Some(broker) = PrivateMosquitto::start_with_dynsec() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database_url(&dir).await;
    // The schema and an admin exist before either replica starts.
    let created = create_user(&dir, &database, "ops", "the operators passphrase");
    assert!(created.status.success());
    let mut a = Replica::start(&dir, &database, &broker).await;
    let b = Replica::start(&dir, &database, &broker).await;

    // 50 devices provisioned through A (and so created in the broker), claimed by a user.
    let admin = a.token("ops", "the operators passphrase").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = a
        .post(
            "/api/v1/admin/devices",
            Some(&admin),
            json!({ "count": DEVICES }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let provisioned: Vec<ProvisionedDevice> =
        serde_json::from_value(body["items"].clone()).unwrap();
    let owner = a.token("ops", "the operators passphrase").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for device in &provisioned {
        let response = b
            .post(
                "/api/v1/devices/claim",
                Some(&owner),
                json!({ "serial": device.serial, "claim_code": device.claim_code }),
            )
            .await;
        assert_eq!(response.status(), 201);
    }

    let credentials: Vec<DeviceCredentials> = provisioned
        .iter()
        .map(|device| DeviceCredentials {
            device_id: device.device_id.clone(),
            serial: None,
            claim_code: None,
            mqtt_username: device.mqtt_username.clone(),
            mqtt_password: device.mqtt_password.clone(),
        })
        .collect();
    let mut config = FleetConfig::new(Broker {
        host: "127.0.0.1".to_owned(),
        port: broker.port,
    });
    config.rate = "5/s".parse().unwrap();
    config.qos = Qos::AtLeastOnce;
    config.seed = 19;
    let fleet = Fleet::start(&config, &credentials).expect("a valid fleet");
    let stats: Vec<(String, Arc<DeviceStats>)> = fleet
        .devices()
        .iter()
        .map(|device| (device.id().to_owned(), device.stats().clone()))
        .collect();
    eventually("every device online", async || {
        (fleet.totals().online == DEVICES as u64).then_some(())
    })
    .await;

    // Commands work through either replica, whichever holds the device's results.
    let first = &provisioned[0].device_id;
    let second = &provisioned[1].device_id;
    assert_eq!(b.set_relay(&owner, first).await["status"], "succeeded");
    assert_eq!(a.set_relay(&owner, second).await["status"], "succeeded");

    // A lockout earned through A holds on B; a refresh token issued by A rotates on B.
    let created = create_user(&dir, &database, "locked", "the right passphrase");
    assert!(created.status.success());
    for _ in 0..5 {
        assert_eq!(a.login("locked", "a wrong guess").await.status(), 401);
    }
    assert_eq!(
        b.login("locked", "the right passphrase").await.status(),
        429
    );
    let session = a.token("ops", "the operators passphrase").await;
    let refresh = json!({ "refresh_token": session["refresh_token"] });
    assert_eq!(
        b.post("/api/v1/auth/refresh", None, refresh.clone())
            .await
            .status(),
        200
    );
    assert_eq!(
        a.post("/api/v1/auth/refresh", None, refresh).await.status(),
        409
    );

    // Both replicas store telemetry; four seconds of it before A dies.
    eventually("four seconds of telemetry from every device", async || {
        stats
            .iter()
            .all(|(_, stats)| stats.snapshot().telemetry_sent >= 2 * KILL_WINDOW)
            .then_some(())
    })
    .await;
    let split = (a.rows_written().await, b.rows_written().await);
    assert!(
        split.0 > 0.0 && split.1 > 0.0,
        "one replica stored nothing: {split:?}"
    );

    // A dies mid-run; B carries on storing and relaying.
    let sent_at_kill: HashMap<String, u64> = fleet
        .devices()
        .iter()
        .map(|device| {
            (
                device.id().to_owned(),
                device.stats().snapshot().telemetry_sent,
            )
        })
        .collect();
    a.kill();
    let b_before = b.rows_written().await;
    eventually("B storing after A died", async || {
        (b.rows_written().await > b_before + 100.0).then_some(())
    })
    .await;
    assert_eq!(b.set_relay(&owner, second).await["status"], "succeeded");
    eventually("2 more seconds of telemetry after the kill", async || {
        fleet
            .devices()
            .iter()
            .all(|device| {
                device.stats().snapshot().telemetry_sent
                    >= sent_at_kill[device.id()] + 2 * KILL_WINDOW
            })
            .then_some(())
    })
    .await;
    fleet.stop().await;
    let sent: HashMap<String, u64> = stats
        .iter()
        .map(|(id, stats)| (id.clone(), stats.snapshot().telemetry_sent))
        .collect();

    // Every reading outside the window around the kill is stored, and nothing twice.
    let stored = eventually("B to store what was sent", async || {
        let stored = stored_seqs(&database).await;
        // Each device's last acknowledged reading, well after the kill, is in.
        let settled = sent.iter().all(|(id, sent)| {
            stored
                .get(id)
                .is_some_and(|seqs| seqs.contains(&(sent - 1)))
        });
        settled.then_some(stored)
    })
    .await;
    let mut lost = 0;
    for (id, sent) in &sent {
        let seqs = &stored[id];
        let distinct: HashSet<u64> = seqs.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            seqs.len(),
            "{id} has a reading stored twice"
        );
        let kill = sent_at_kill[id];
        for seq in 0..*sent {
            if !distinct.contains(&seq) {
                assert!(
                    seq + KILL_WINDOW >= kill && seq < kill + KILL_WINDOW,
                    "{id} lost reading {seq}, outside the kill window around {kill}"
                );
                lost += 1;
            }
        }
    }
    let total: u64 = sent.values().sum();
    println!(
        "two replicas: {total} readings acknowledged by the broker, {lost} lost in the window \
         of the kill; before it A wrote {} rows and B {}",
        split.0, split.1
    );
}
