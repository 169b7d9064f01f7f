//! Cases 4 and 5, the MQTT ones: the command relay against a raw MQTT round trip through the
//! same broker, and telemetry ingestion from simulated devices against the harness's own
//! batched inserts into the same database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use device_sim::{Broker, Fleet, FleetConfig, Qos};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sea_orm::{ActiveValue::Set, EntityTrait, PaginatorTrait, TransactionTrait};
use serde_json::json;
use tokio::sync::oneshot;

use crate::Options;
use crate::load::{Outcome, Stats, clients, measure};
use crate::report::{Row, Side, Table, failures, thousands};
use crate::server::{self, BACKEND_USERNAME, InProcess};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A backend-credentialed MQTT client that sends commands itself and waits for the device's
/// result: the relay's work minus HTTP, the database and the waiter bookkeeping.
struct RawCommander {
    client: AsyncClient,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawCommander {
    async fn connect(app: &InProcess) -> RawCommander {
        let mut options = MqttOptions::new(
            format!("bench-raw-{}", uuid::Uuid::new_v4().simple()),
            app.mqtt_host.clone(),
            app.mqtt_port,
        );
        options.set_credentials(BACKEND_USERNAME, app.backend_password.clone());
        options.set_keep_alive(Duration::from_secs(30));
        options.set_inflight(1_000);
        let (client, mut eventloop) = AsyncClient::new(options, 10_000);
        // The same socket settings as the backend's own client.
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let pending: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>> = Arc::default();
        let (subscribed, is_subscribed) = oneshot::channel();
        let task = {
            let pending = pending.clone();
            tokio::spawn(async move {
                let mut subscribed = Some(subscribed);
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(tx) = subscribed.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            let id = serde_json::from_slice::<serde_json::Value>(&publish.payload)
                                .ok()
                                .and_then(|v| v["id"].as_str().map(str::to_owned));
                            let waiter = id.and_then(|id| {
                                pending.lock().expect("the pending lock").remove(&id)
                            });
                            if let Some(waiter) = waiter {
                                let _ = waiter.send(());
                            }
                        }
                        Ok(_) => {}
                        Err(err) => {
                            eprintln!("raw MQTT client: {err}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            })
        };
        client
            .subscribe("devices/+/commands/result", QoS::AtLeastOnce)
            .await
            .expect("the raw client subscribes");
        tokio::time::timeout(Duration::from_secs(10), is_subscribed)
            .await
            .expect("the broker acknowledges the subscription in time")
            .expect("the raw client's event loop runs");
        RawCommander {
            client,
            pending,
            task,
        }
    }

    /// Publishes a `ping` to the device and waits for its result.
    async fn round_trip(&self, device_id: &str) -> Outcome {
        let id = uuid::Uuid::now_v7().to_string();
        let payload = json!({
            "id": id, "name": "ping", "params": {}, "expires_at": now_ms() + 5_000,
        });
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("the pending lock")
            .insert(id.clone(), tx);
        if let Err(err) = self
            .client
            .publish(
                format!("devices/{device_id}/commands"),
                QoS::AtLeastOnce,
                false,
                payload.to_string().into_bytes(),
            )
            .await
        {
            self.pending.lock().expect("the pending lock").remove(&id);
            return Outcome::Failed(format!("publish: {err}"));
        }
        match tokio::time::timeout(Duration::from_secs(5), rx).await {
            Ok(Ok(())) => Outcome::Ok,
            _ => {
                self.pending.lock().expect("the pending lock").remove(&id);
                Outcome::Failed("no result within 5 s".to_owned())
            }
        }
    }
}

fn fleet_config(host: &str, port: u16) -> FleetConfig {
    FleetConfig::new(Broker {
        host: host.to_owned(),
        port,
    })
}

/// Case 4: `POST …/commands` with `wait=true` answered by simulated devices vs a raw MQTT
/// request/response through the same broker, at one connection (latency) and at many
/// (throughput).
pub async fn command_round_trip(options: &Options, table: &mut Table) {
    let app = InProcess::start(&options.database).await;
    let setup = server::client();
    let (_, token) = server::wechat_user(&setup, &app.base, "commander").await;
    let devices = server::provision(&app.state.db, options.command_devices).await;
    for device in &devices {
        server::claim(&setup, &app.base, &token, device).await;
    }
    let mut config = fleet_config(&app.mqtt_host, app.mqtt_port);
    // Telemetry would only be noise here: one message an hour.
    config.rate = "1/h".parse().expect("a rate");
    let fleet = Fleet::start(&config, &devices).expect("the fleet starts");
    let online = server::wait_online(&fleet, devices.len() as u64, Duration::from_secs(30)).await;
    assert_eq!(
        online,
        devices.len() as u64,
        "every command device is online"
    );

    let ids: Arc<Vec<String>> = Arc::new(devices.iter().map(|d| d.device_id.clone()).collect());
    let raw = Arc::new(RawCommander::connect(&app).await);
    let raw_client = raw.clone();
    let raw_op = {
        let ids = ids.clone();
        move |w: usize| {
            let raw = raw.clone();
            let ids = ids.clone();
            async move { raw.round_trip(&ids[w % ids.len()]).await }
        }
    };
    let pool = clients(options.connections);
    let urls: Arc<Vec<String>> = Arc::new(
        ids.iter()
            .map(|id| app.url(&format!("/api/v1/devices/{id}/commands")))
            .collect(),
    );
    let token = Arc::new(token);
    let http_op = move |w: usize| {
        let request = pool[w]
            .post(urls[w % urls.len()].as_str())
            .bearer_auth(token.as_str())
            .json(&json!({ "name": "ping", "wait": true, "timeout_ms": 5_000 }));
        async move {
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match response.text().await {
                        Ok(body) if status == 200 && body.contains("\"succeeded\"") => Outcome::Ok,
                        Ok(body) => Outcome::Failed(format!("status {status}: {body}")),
                        Err(err) => Outcome::Failed(err.to_string()),
                    }
                }
                Err(err) => Outcome::Failed(err.to_string()),
            }
        }
    };

    let raw_one = measure(options, 1, raw_op.clone()).await;
    let http_one = measure(options, 1, http_op.clone()).await;
    let added = match (http_one.p50(), raw_one.p50()) {
        (Some(http), Some(raw)) => http.as_secs_f64() * 1000.0 - raw.as_secs_f64() * 1000.0,
        _ => f64::INFINITY,
    };
    table.push(Row {
        case: "4a command round trip (1 conn.)".to_owned(),
        measured: Side::from_stats("POST …/commands wait=true", &http_one, "cmd/s"),
        baseline: Side::from_stats("raw MQTT request/response", &raw_one, "cmd/s"),
        ratio: format!("+{added:.2} ms p50"),
        goal: "relay adds < 1 ms p50".to_owned(),
        met: added < 1.0 && http_one.failed == 0,
        notes: [
            failures("4a relay", &http_one),
            failures("4a raw", &raw_one),
        ]
        .into_iter()
        .flatten()
        .collect(),
    });

    let connections = options.connections;
    let raw_many = measure(options, connections, raw_op).await;
    let http_many = measure(options, connections, http_op).await;
    let ratio = http_many.rate() / raw_many.rate();
    table.push(Row {
        case: format!(
            "4b command throughput ({connections} conn., {} devices)",
            devices.len()
        ),
        measured: Side::from_stats("POST …/commands wait=true", &http_many, "cmd/s"),
        baseline: Side::from_stats("raw MQTT request/response", &raw_many, "cmd/s"),
        ratio: format!("{ratio:.2}"),
        goal: "≥ 2,000 cmd/s".to_owned(),
        met: http_many.rate() >= 2_000.0 && http_many.failed == 0,
        notes: [
            failures("4b relay", &http_many),
            failures("4b raw", &raw_many),
        ]
        .into_iter()
        .flatten()
        .collect(),
    });

    raw_client.task.abort();
    fleet.stop().await;
    app.stop().await;
}

/// Stored telemetry rows right now.
async fn stored_rows(db: &sea_orm::DatabaseConnection) -> u64 {
    iotbind::entity::telemetry::Entity::find()
        .count(db)
        .await
        .expect("the telemetry rows can be counted")
}

/// Case 5: rows/s stored from simulated devices vs the harness inserting the same kind of
/// rows itself, in transactions of 1,000 through sea-orm's `insert_many`, as the writer does.
/// The devices offer the raw rate between them (unless `--telemetry-rate` says otherwise), so
/// the stored rate is what the path sustains, not what was asked of it.
pub async fn telemetry_ingestion(options: &Options, table: &mut Table) {
    let app = InProcess::start(&options.database).await;
    let devices = server::provision(&app.state.db, options.telemetry_devices).await;
    let device_ids: Vec<uuid::Uuid> = devices
        .iter()
        .map(|d| d.device_id.parse().expect("device ids are UUIDs"))
        .collect();

    // The baseline, on a connection pool of the harness's own to the same database.
    let db = iotbind::db::connect(
        &iotbind::config::DatabaseUrl::parse(&app.database_url).expect("a database URL"),
    )
    .await
    .expect("the harness opens the database");
    let raw_rate = {
        let mut seq = 0u64;
        let batch = |seq: &mut u64| -> Vec<iotbind::entity::telemetry::ActiveModel> {
            let now = now_ms();
            (0..1_000)
                .map(|i| {
                    *seq += 1;
                    iotbind::entity::telemetry::ActiveModel {
                        device_id: Set(device_ids[i % device_ids.len()]),
                        ts: Set(now),
                        values_json: Set(format!(
                            r#"{{"seq":{seq},"temperature":21.53,"humidity":44.1,"battery":3.912,"relay":false}}"#
                        )),
                        received_at: Set(now),
                        ..Default::default()
                    }
                })
                .collect()
        };
        let mut rows = 0u64;
        let warm_until = Instant::now() + options.warmup;
        let mut started = Instant::now();
        let mut measuring = false;
        loop {
            let now = Instant::now();
            if !measuring && now >= warm_until {
                measuring = true;
                started = now;
                rows = 0;
            }
            if measuring && now >= started + options.duration {
                break;
            }
            let rows_now = batch(&mut seq);
            let txn = db.begin().await.expect("a transaction");
            iotbind::entity::telemetry::Entity::insert_many(rows_now)
                .exec_without_returning(&txn)
                .await
                .expect("the raw insert");
            txn.commit().await.expect("the raw commit");
            rows += 1_000;
        }
        Stats::from_rate(rows, started.elapsed())
    };
    db.close().await.ok();

    // Unless told otherwise, the devices together offer as much as the raw insert reached:
    // the case then measures the rate the whole path sustains, and a database that falls
    // behind makes the devices wait for their acknowledgements.
    let rate = options.telemetry_rate.unwrap_or_else(|| {
        let per_device = (raw_rate.rate() / devices.len() as f64).clamp(0.1, 1_000.0);
        format!("{per_device:.1}/s")
            .parse()
            .expect("a rate within the simulator's bounds")
    });
    let before = stored_rows(&app.state.db).await;
    let mut config = fleet_config(&app.mqtt_host, app.mqtt_port);
    config.rate = rate;
    config.qos = Qos::AtLeastOnce;
    config.ramp_up = Duration::from_secs(1);
    let fleet = Fleet::start(&config, &devices).expect("the fleet starts");
    let online = server::wait_online(&fleet, devices.len() as u64, Duration::from_secs(60)).await;
    tokio::time::sleep(options.warmup).await;
    let rows_0 = stored_rows(&app.state.db).await;
    let sent_0 = fleet.totals().telemetry_sent;
    let t0 = Instant::now();
    tokio::time::sleep(options.duration).await;
    let rows_1 = stored_rows(&app.state.db).await;
    let sent_1 = fleet.totals().telemetry_sent;
    let window = t0.elapsed();
    let summary = fleet.stop().await;
    let sent = summary.totals.telemetry_sent;

    // Everything acknowledged must arrive: wait until the writer has caught up (or stops
    // moving).
    let mut stored = stored_rows(&app.state.db).await - before;
    let mut last_change = Instant::now();
    while stored < sent && last_change.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = stored_rows(&app.state.db).await - before;
        if now != stored {
            last_change = Instant::now();
            stored = now;
        }
    }
    let server_side = app
        .metrics(&[
            "iotbind_mqtt_broker_dropped_total",
            "iotbind_telemetry_dropped_total",
            "iotbind_telemetry_queue_full_total",
            "iotbind_telemetry_write_errors_total",
            "iotbind_telemetry_flush_duration_seconds_count",
            "iotbind_telemetry_flush_duration_seconds_sum",
        ])
        .await;
    let stored_rate = Stats::from_rate(rows_1 - rows_0, window);
    let acknowledged = (sent_1 - sent_0) as f64 / window.as_secs_f64();
    // A message the broker took while its device was stopping is stored, but the device
    // had already given up on its acknowledgement and counts it as not sent.
    let lost = sent.saturating_sub(stored);
    let unacknowledged_but_stored = stored.saturating_sub(sent);
    let ratio = stored_rate.rate() / raw_rate.rate();
    let floor = 20_000.0;
    table.push(Row {
        case: format!(
            "5 telemetry ingestion ({} devices × {rate}, QoS 1, {})",
            devices.len(),
            options.database.label()
        ),
        measured: Side::from_stats("rows/s stored via MQTT", &stored_rate, "rows/s"),
        baseline: Side::from_stats("insert_many, 1,000/txn", &raw_rate, "rows/s"),
        ratio: format!("{ratio:.2}"),
        goal: "≥ 0.5, ≥ 20,000 rows/s, 0 lost".to_owned(),
        met: ratio >= 0.5 && stored_rate.rate() >= floor && lost == 0,
        notes: vec![format!(
            "5: devices online {online}/{}; offered {} msg/s, acknowledged {} msg/s during the \
             window; acknowledged {sent}, stored {stored}, lost {lost} (stored but not \
             acknowledged, in flight as the devices stopped: {unacknowledged_but_stored}); \
             readings the devices could not send (outbox full while the server held them \
             back) {}; server: {}",
            devices.len(),
            thousands(rate.per_second() * devices.len() as f64),
            thousands(acknowledged),
            summary.totals.telemetry_unsent,
            server_side.join(", ")
        )],
    });
    app.stop().await;
}
