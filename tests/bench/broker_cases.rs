//! Cases 7 and 8, for an external broker: the authentication hook a broker cluster calls on
//! every connect (against liveness, and its p99 in a reconnect storm), and telemetry stored by
//! two replicas behind one Mosquitto against one replica.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use device_sim::{Broker, Fleet, FleetConfig, Qos};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::json;

use crate::Options;
use crate::load::{Stats, clients, expect_status, measure, new_histogram};
use crate::report::{Row, Side, Table, failures, ms, thousands};
use crate::server::{self, ChildServer, InProcess};

const HOOK_SECRET: &str = "the benchmark's broker hook secret, 32+ bytes";
/// Devices whose logins the hook case checks, round robin; each reconnects in the storm.
const HOOK_DEVICES: usize = 1_000;

/// Case 7: `POST /api/v1/mqtt/auth` for known devices (EMQX's JSON body, right passwords) vs
/// `GET /health/live`, same server and connections; then a reconnect storm: every device's
/// login asked at once, on a fresh server whose credential cache is cold.
pub async fn broker_hook(options: &Options, table: &mut Table) {
    let with_hooks = |args: &mut iotbind::config::ConfigArgs| {
        args.broker_hook_secret = Some(HOOK_SECRET.to_owned());
    };
    let app = InProcess::start_with(&options.database, with_hooks).await;
    let devices = Arc::new(server::provision(&app.state.db, HOOK_DEVICES).await);
    let connections = options.connections;
    let pool = clients(connections);

    let live_url = Arc::new(app.url("/health/live"));
    let live = {
        let pool = pool.clone();
        measure(options, connections, move |w| {
            expect_status(pool[w].get(live_url.as_str()), 200)
        })
        .await
    };
    let auth_url = Arc::new(app.url("/api/v1/mqtt/auth"));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let auth = {
        let pool = pool.clone();
        let devices = devices.clone();
        measure(options, connections, move |w| {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let device = &devices[n % devices.len()];
            let request = pool[w]
                .post(auth_url.as_str())
                .bearer_auth(HOOK_SECRET)
                .json(&json!({
                    "clientid": device.device_id,
                    "username": device.mqtt_username,
                    "password": device.mqtt_password,
                }));
            expect_status(request, 200)
        })
        .await
    };
    app.stop().await;

    let storm = reconnect_storm(options).await;
    let ratio = auth.rate() / live.rate();
    table.push(Row {
        case: format!("7 broker auth hook ({connections} conn.)"),
        measured: Side::from_stats("POST /api/v1/mqtt/auth", &auth, "req/s"),
        baseline: Side::from_stats("GET /health/live", &live, "req/s"),
        ratio: format!("{ratio:.2}"),
        goal: "≥ 0.5".to_owned(),
        met: ratio >= 0.5 && auth.failed == 0,
        notes: [
            failures("auth hook", &auth),
            failures("/health/live", &live),
            Some(format!(
                "reconnect storm: {HOOK_DEVICES} logins at once on a cold cache in {:.0} ms, \
                 p50 {}, p99 {}",
                storm.elapsed.as_secs_f64() * 1000.0,
                ms(storm.p50()),
                ms(storm.p99())
            )),
            failures("storm", &storm),
        ]
        .into_iter()
        .flatten()
        .collect(),
    });
}

/// Every device's login asked at once (through 256 connections, as a broker cluster's pool
/// would), on a fresh server: each first read goes to the database.
async fn reconnect_storm(options: &Options) -> Stats {
    let app = InProcess::start_with(&options.database, |args| {
        args.broker_hook_secret = Some(HOOK_SECRET.to_owned());
    })
    .await;
    let devices = server::provision(&app.state.db, HOOK_DEVICES).await;
    let pool = clients(256);
    let url = app.url("/api/v1/mqtt/auth");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, device) in devices.into_iter().enumerate() {
        let client = pool[n % pool.len()].clone();
        let url = url.clone();
        tasks.spawn(async move {
            let begun = Instant::now();
            let response = client
                .post(&url)
                .bearer_auth(HOOK_SECRET)
                .json(&json!({
                    "clientid": device.device_id,
                    "username": device.mqtt_username,
                    "password": device.mqtt_password,
                }))
                .send()
                .await;
            let allowed = match response {
                Ok(response) => response
                    .json::<serde_json::Value>()
                    .await
                    .is_ok_and(|body| body["result"] == "allow"),
                Err(_) => false,
            };
            (allowed, begun.elapsed())
        });
    }
    let mut stats = Stats::from_rate(0, Duration::ZERO);
    stats.histogram = new_histogram();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((true, took)) => {
                stats.ok += 1;
                let _ = stats.histogram.record(took.as_micros() as u64);
            }
            _ => {
                stats.failed += 1;
                stats
                    .first_error
                    .get_or_insert_with(|| "a storm login was not allowed".to_owned());
            }
        }
    }
    stats.elapsed = started.elapsed();
    app.stop().await;
    stats
}

/// A Mosquitto of the harness's own on a free port, anonymous, with room for a fleet's
/// telemetry in flight towards the replicas.
struct Mosquitto {
    process: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Option<Mosquitto> {
        let dir = tempfile::tempdir().ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n\
             max_inflight_messages 1000\nmax_queued_messages 1000000\n"
        );
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, config).ok()?;
        let process = Command::new("mosquitto")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Mosquitto {
            process,
            port,
            _dir: dir,
        })
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// What one run of case 8 stored.
struct Ingestion {
    rows_per_second: f64,
    /// Rows each replica wrote, from its own `/metrics`.
    per_replica: Vec<f64>,
}

/// Case 8: telemetry rows/s stored from simulated devices through an external Mosquitto by
/// two replicas on one database, against one replica, in the same run.
pub async fn replicas(options: &Options, table: &mut Table) {
    let Some(broker) = Mosquitto::start() else {
        eprintln!("case 8 needs mosquitto installed; skipped");
        return;
    };
    let one = ingest(options, &broker, 1).await;
    let two = ingest(options, &broker, 2).await;
    let ratio = two.rows_per_second / one.rows_per_second;
    let split = two
        .per_replica
        .iter()
        .map(|rows| thousands(*rows))
        .collect::<Vec<_>>()
        .join(" + ");
    table.push(Row {
        case: format!(
            "8 two replicas, external Mosquitto ({} devices)",
            options.telemetry_devices
        ),
        measured: Side::value(
            "rows/s stored by 2 replicas",
            format!("{} rows/s", thousands(two.rows_per_second)),
        ),
        baseline: Side::value(
            "rows/s stored by 1 replica",
            format!("{} rows/s", thousands(one.rows_per_second)),
        ),
        ratio: format!("{ratio:.2}"),
        goal: "report".to_owned(),
        met: true,
        notes: vec![format!(
            "rows written by each replica in the two-replica run: {split}"
        )],
    });
}

async fn ingest(options: &Options, broker: &Mosquitto, replicas: usize) -> Ingestion {
    let binary = server::release_binary(options.server_bin.clone());
    let dir = tempfile::tempdir().expect("a temporary folder");
    let database_url = options.database.fresh_url(dir.path()).await;
    let db = iotbind::db::connect(
        &iotbind::config::DatabaseUrl::parse(&database_url).expect("a database URL"),
    )
    .await
    .expect("the database opens");
    iotbind::db::migrate(&db).await.expect("migrations apply");
    let devices = server::provision(&db, options.telemetry_devices).await;
    let mqtt_url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut servers = Vec::new();
    for _ in 0..replicas {
        servers.push(ChildServer::replica(&binary, &database_url, &mqtt_url).await);
    }
    let mut config = FleetConfig::new(Broker {
        host: "127.0.0.1".to_owned(),
        port: broker.port,
    });
    config.rate = options
        .telemetry_rate
        .unwrap_or_else(|| "30/s".parse().expect("a rate"));
    config.qos = Qos::AtLeastOnce;
    config.ramp_up = Duration::from_secs(2);
    let fleet = Fleet::start(&config, &devices).expect("a valid fleet");
    server::wait_online(&fleet, devices.len() as u64, Duration::from_secs(30)).await;
    tokio::time::sleep(options.warmup).await;
    let before = stored(&db).await;
    let started = Instant::now();
    tokio::time::sleep(options.duration).await;
    let after = stored(&db).await;
    let elapsed = started.elapsed();
    fleet.stop().await;
    let mut per_replica = Vec::new();
    for server in servers {
        per_replica.push(server.rows_written().await);
        server.stop();
    }
    db.close().await.ok();
    Ingestion {
        rows_per_second: (after - before) as f64 / elapsed.as_secs_f64(),
        per_replica,
    }
}

async fn stored(db: &sea_orm::DatabaseConnection) -> u64 {
    iotbind::entity::telemetry::Entity::find()
        .count(db)
        .await
        .expect("the telemetry rows can be counted")
}
