//! Telemetry from real MQTT devices to `latest` and history, bad payloads, a burst from many
//! devices, and online status from the status topic and the last will.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error, spawn_app};
use crate::support::{TestDevice, eventually};
use crate::support::{get_device, list_devices, millis, owner_with_devices};
use crate::support::{history, history_paged, metric, telemetry_page};

/// `ms` as an RFC 3339 query value with milliseconds.
fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .expect("a representable time")
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The `seq` value of each row.
fn seqs(rows: &[Value]) -> Vec<i64> {
    rows.iter()
        .map(|row| row["values"]["seq"].as_i64().expect("a seq value"))
        .collect()
}

/// A claimed, connected device that has sent `count` rows `{"seq": i}` stamped
/// `first_ts + 10 * i` ms, all stored; returns the owner's token, the device and `first_ts`.
async fn device_with_rows(app: &TestApp, count: i64) -> (String, TestDevice, i64) {
    let (token, devices) = owner_with_devices(app, 1).await;
    let device = TestDevice::connect(app, &devices[0]).await;
    // One millisecond on, so that no row can sort before the claim and be hidden from the
    // owner, whatever the precision of `claimed_at`.
    let first_ts = Utc::now().timestamp_millis() + 1;
    for seq in 0..count {
        device
            .send_telemetry(&json!({ "ts": first_ts + 10 * seq, "values": { "seq": seq } }))
            .await;
    }
    let id = device.id.clone();
    eventually(&format!("{count} rows stored"), async || {
        (history(app, &token, &id).await.len() as i64 >= count).then_some(())
    })
    .await;
    (token, device, first_ts)
}

#[tokio::test]
async fn a_devices_telemetry_shows_in_latest_and_in_history() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    let device = TestDevice::connect(&app, &devices[0]).await;
    let ts = Utc::now().timestamp_millis() + 1;
    let values = json!({ "temp": 21.5, "on": true, "mode": "eco", "count": 3 });

    device
        .send_telemetry(&json!({ "ts": ts, "values": values }))
        .await;

    let latest = eventually("latest telemetry", async || {
        let described = get_device(&app, &token, &device.id).await;
        (!described["latest"].is_null()).then(|| described["latest"].clone())
    })
    .await;
    assert_eq!(latest["values"], values);
    assert_eq!(millis(&latest["ts"]), ts);
    let text = latest["ts"].as_str().unwrap();
    let fraction = text
        .split_once('.')
        .map(|(_, rest)| rest.chars().take_while(char::is_ascii_digit).count());
    assert_eq!(fraction, Some(3), "ts {text} has milliseconds");
    assert_eq!(history(&app, &token, &device.id).await, vec![latest]);
}

#[tokio::test]
async fn a_message_without_ts_is_stamped_with_the_time_it_arrived() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    let device = TestDevice::connect(&app, &devices[0]).await;

    let before = Utc::now().timestamp_millis();
    device
        .send_telemetry(&json!({ "values": { "temp": 19 } }))
        .await;
    let rows = eventually("the unstamped row", async || {
        let rows = history(&app, &token, &device.id).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    let after = Utc::now().timestamp_millis();

    let ts = millis(&rows[0]["ts"]);
    assert!(
        (before..=after).contains(&ts),
        "stamped {ts}, sent within [{before}, {after}]"
    );
    assert_eq!(rows[0]["values"], json!({ "temp": 19 }));
}

#[tokio::test]
async fn paging_returns_every_row_once_newest_first() {
    let app = spawn_app().await;
    let (token, device, _) = device_with_rows(&app, 25).await;

    let rows = history_paged(&app, &token, &device.id, &[], 10).await;

    assert_eq!(seqs(&rows), (0..25).rev().collect::<Vec<_>>());
    let stamps: Vec<i64> = rows.iter().map(|row| millis(&row["ts"])).collect();
    assert!(
        stamps.windows(2).all(|pair| pair[0] > pair[1]),
        "{stamps:?}"
    );
}

#[tokio::test]
async fn rows_sharing_a_timestamp_are_paged_without_loss_or_repeats() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    let device = TestDevice::connect(&app, &devices[0]).await;
    let ts = Utc::now().timestamp_millis() + 1;
    for seq in 0..7 {
        device
            .send_telemetry(&json!({ "ts": ts, "values": { "seq": seq } }))
            .await;
    }
    eventually("7 rows stored", async || {
        (history(&app, &token, &device.id).await.len() >= 7).then_some(())
    })
    .await;

    let rows = history_paged(&app, &token, &device.id, &[], 3).await;

    let mut found = seqs(&rows);
    found.sort_unstable();
    assert_eq!(found, (0..7).collect::<Vec<_>>());
}

#[tokio::test]
async fn from_is_inclusive_and_to_is_exclusive() {
    let app = spawn_app().await;
    let (token, device, first_ts) = device_with_rows(&app, 25).await;
    let from = rfc3339(first_ts + 10 * 5);
    let to = rfc3339(first_ts + 10 * 15);

    let window = history_paged(&app, &token, &device.id, &[("from", &from), ("to", &to)], 4).await;
    assert_eq!(seqs(&window), (5..15).rev().collect::<Vec<_>>());

    let since = history_paged(&app, &token, &device.id, &[("from", &from)], 100).await;
    assert_eq!(seqs(&since), (5..25).rev().collect::<Vec<_>>());

    let until = history_paged(&app, &token, &device.id, &[("to", &to)], 100).await;
    assert_eq!(seqs(&until), (0..15).rev().collect::<Vec<_>>());
}

#[tokio::test]
async fn out_of_range_history_queries_are_invalid_request() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    let path = format!("/api/v1/devices/{}/telemetry", devices[0].device_id);

    for query in [
        [("limit", "0")],
        [("limit", "1001")],
        [("limit", "many")],
        [("from", "garbage")],
        [("to", "yesterday")],
        [("cursor", "garbage")],
    ] {
        let response = app
            .authed(Method::GET, &path, &token)
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid_request").await;
    }
    for limit in ["1", "1000"] {
        let (items, cursor) =
            telemetry_page(&app, &token, &devices[0].device_id, &[("limit", limit)]).await;
        assert!(items.is_empty() && cursor.is_none());
    }
}

#[tokio::test]
async fn bad_payloads_are_dropped_and_counted_and_the_next_good_one_is_stored() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    let device = TestDevice::connect(&app, &devices[0]).await;
    let reasons = [
        "invalid_json",
        "invalid_payload",
        "too_many_values",
        "too_large",
    ];
    let mut dropped_before = Vec::new();
    for reason in reasons {
        let labels = [("reason", reason)];
        dropped_before.push(metric(&app, "iotbind_telemetry_dropped_total", &labels).await);
    }
    let too_many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("v{i}"), json!(i))).collect();
    let invalid_json: Vec<Vec<u8>> = vec![b"not json {".to_vec(), vec![0xff, 0xfe, 0x00]];
    let invalid_payload: Vec<Vec<u8>> = [
        json!([1, 2, 3]),
        json!({ "ts": 1 }),
        json!({ "values": [1, 2] }),
        json!({ "values": { "nested": { "a": 1 } } }),
        json!({ "values": { "nothing": null } }),
        json!({ "ts": "yesterday", "values": { "a": 1 } }),
    ]
    .iter()
    .map(|payload| payload.to_string().into_bytes())
    .collect();
    let too_many_values = vec![json!({ "values": too_many }).to_string().into_bytes()];
    let too_large = vec![
        json!({ "values": { "blob": "x".repeat(20 * 1024) } })
            .to_string()
            .into_bytes(),
    ];
    let bad_payloads = [invalid_json, invalid_payload, too_many_values, too_large];

    for payload in bad_payloads.iter().flatten() {
        device.send_raw_telemetry(payload.clone()).await;
    }
    device
        .send_telemetry(&json!({ "values": { "ok": 1 } }))
        .await;

    let rows = eventually("the good payload stored", async || {
        let rows = history(&app, &token, &device.id).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 1, "only the good payload is stored: {rows:?}");
    assert_eq!(rows[0]["values"], json!({ "ok": 1 }));
    for ((reason, before), payloads) in reasons.iter().zip(dropped_before).zip(&bad_payloads) {
        let sent = payloads.len() as f64;
        eventually(
            &format!("{sent} payloads counted as {reason}"),
            async || {
                let labels = [("reason", *reason)];
                let dropped = metric(&app, "iotbind_telemetry_dropped_total", &labels).await;
                (dropped >= before + sent).then_some(())
            },
        )
        .await;
    }
    assert!(device.ended().is_none(), "the device was disconnected");
}

#[tokio::test]
async fn a_message_of_exactly_64_values_is_stored() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    let device = TestDevice::connect(&app, &devices[0]).await;
    let values: serde_json::Map<String, Value> =
        (0..64).map(|i| (format!("v{i}"), json!(i))).collect();

    device.send_telemetry(&json!({ "values": values })).await;

    let rows = eventually("the 64-value row", async || {
        let rows = history(&app, &token, &device.id).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(rows[0]["values"], Value::Object(values));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_from_ten_devices_are_all_stored_exactly_once() {
    let app = spawn_app().await;
    let (token, provisioned) = owner_with_devices(&app, 10).await;
    let devices =
        futures_util::future::join_all(provisioned.iter().map(|d| TestDevice::connect(&app, d)))
            .await;

    futures_util::future::join_all(devices.iter().map(|device| async move {
        for seq in 0..100 {
            device
                .send_telemetry(&json!({ "values": { "seq": seq } }))
                .await;
        }
    }))
    .await;

    for device in &devices {
        eventually(&format!("100 rows of {}", device.id), async || {
            (history(&app, &token, &device.id).await.len() >= 100).then_some(())
        })
        .await;
        // Small pages, so that rows sharing a millisecond must be split across pages too.
        let rows = history_paged(&app, &token, &device.id, &[], 37).await;
        let distinct: HashSet<i64> = seqs(&rows).into_iter().collect();
        assert_eq!(rows.len(), 100, "{} stored {} rows", device.id, rows.len());
        assert_eq!(
            distinct,
            (0..100).collect(),
            "{} lost or repeated rows",
            device.id
        );
    }
}

#[tokio::test]
async fn a_connected_device_is_online_and_one_that_vanished_is_offline() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    let id = devices[0].device_id.clone();

    let device = TestDevice::connect(&app, &devices[0]).await;
    let online = eventually("the device listed online", async || {
        let listed = list_devices(&app, &token).await;
        (listed[0]["online"] == true).then(|| listed[0].clone())
    })
    .await;
    let seen = millis(&online["last_seen_at"]);

    device.vanish().await;
    let offline = eventually("the device offline after its last will", async || {
        let described = get_device(&app, &token, &id).await;
        (described["online"] == false).then_some(described)
    })
    .await;
    assert!(
        millis(&offline["last_seen_at"]) >= seen,
        "last_seen_at went back: {offline}"
    );
}

#[tokio::test]
async fn a_device_that_says_goodbye_is_offline() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    let id = devices[0].device_id.clone();
    let device = TestDevice::connect(&app, &devices[0]).await;
    eventually("the device online", async || {
        (get_device(&app, &token, &id).await["online"] == true).then_some(())
    })
    .await;

    device.disconnect().await;

    eventually("the device offline after its goodbye", async || {
        (get_device(&app, &token, &id).await["online"] == false).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_writer_flushes_what_is_pending_when_its_queue_closes() {
    use iotbind::service::telemetry::{DeviceEvent, EventKind, start_writer};
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

    let app = spawn_app().await;
    let device = app.provision(1).await.remove(0);
    let device_id: uuid::Uuid = device.device_id.parse().unwrap();
    // A writer of our own, so nothing else flushes for it: closing its queue right after the
    // pushes is what shutdown does, with the events still waiting for their batch.
    let (queue, writer) = start_writer(
        app.state.db.clone(),
        iotbind::service::telemetry::QUEUE_CAPACITY,
    );
    let now = Utc::now().timestamp_millis();
    for n in 0..3 {
        queue
            .push(DeviceEvent {
                device_id,
                received_at: now,
                kind: EventKind::Telemetry {
                    ts: now + n,
                    values_json: json!({ "n": n }).to_string(),
                },
            })
            .await;
    }
    drop(queue);
    writer.await.expect("the writer ends cleanly");

    let stored = iotbind::entity::telemetry::Entity::find()
        .filter(iotbind::entity::telemetry::Column::DeviceId.eq(device_id))
        .count(&app.state.db)
        .await
        .unwrap();
    assert_eq!(stored, 3);
}

/// A device publishing `count` numbered QoS 1 telemetry messages with up to 100 in flight,
/// as fast as the broker takes them; the returned counter says how many were acknowledged.
fn flood(
    app: &TestApp,
    device: &crate::support::ProvisionedDevice,
    count: u64,
) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new(&device.device_id, &app.mqtt_host, app.mqtt_port);
    options
        .set_credentials(&device.mqtt_username, &device.mqtt_password)
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let acked = Arc::new(AtomicU64::new(0));
    let counter = acked.clone();
    let topic = format!("devices/{}/telemetry", device.device_id);
    let task = tokio::spawn(async move {
        let publisher = tokio::spawn(async move {
            for seq in 0..count {
                let payload = json!({ "values": { "seq": seq } }).to_string();
                if client
                    .publish(&topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    if counter.fetch_add(1, Ordering::SeqCst) + 1 == count {
                        break;
                    }
                }
                Ok(_) => {}
                Err(err) => panic!("the flooding device lost its connection: {err}"),
            }
        }
        publisher.await.expect("the publisher ends");
    });
    (acked, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_cannot_keep_up_the_broker_holds_back_acknowledgements_and_loses_nothing()
 {
    use iotbind::entity::telemetry as rows;
    use sea_orm::{
        ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, TransactionTrait,
    };

    // The embedded broker (an external one acknowledges on its own terms), and a small queue in
    // front of the writer so that it fills after a few messages.
    let app = crate::support::spawn_app_with(iotbind::config::ConfigArgs {
        mqtt_url: Some("embedded".to_owned()),
        telemetry_queue: Some("20".to_owned()),
        ..Default::default()
    })
    .await;
    let device = app.provision(1).await.remove(0);
    let device_id: uuid::Uuid = device.device_id.parse().unwrap();

    // Another transaction holds the telemetry table, so the writer's next batch waits.
    let blocker = app.state.db.begin().await.unwrap();
    let hold = match blocker.get_database_backend() {
        DbBackend::Postgres => "LOCK TABLE telemetry IN EXCLUSIVE MODE",
        _ => "UPDATE telemetry SET ts = ts WHERE 0 = 1",
    };
    blocker.execute_unprepared(hold).await.unwrap();

    let sent = 2_000;
    let (acked, flooding) = flood(&app, &device, sent);
    // Acknowledgements come while the queue has room, then stop well short of what was sent.
    let mut last = u64::MAX;
    let held_at = eventually("acknowledgements to stop", async || {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = acked.load(Ordering::SeqCst);
        let settled = now == last;
        last = now;
        settled.then_some(now)
    })
    .await;
    assert!(
        held_at < sent,
        "the broker acknowledged all {sent} messages although the database took none"
    );
    assert!(
        metric(&app, "iotbind_telemetry_queue_full_total", &[]).await >= 1.0,
        "intake waited for the writer"
    );

    blocker.rollback().await.unwrap();
    tokio::time::timeout(crate::support::DEADLINE, flooding)
        .await
        .expect("every message is acknowledged once the database is back")
        .unwrap();
    let seqs: HashSet<i64> = eventually("every acknowledged message to be stored", async || {
        let stored = rows::Entity::find()
            .filter(rows::Column::DeviceId.eq(device_id))
            .all(&app.state.db)
            .await
            .unwrap();
        (stored.len() as u64 == sent).then(|| {
            stored
                .iter()
                .map(|row| {
                    let values: Value = serde_json::from_str(&row.values_json).unwrap();
                    values["seq"].as_i64().unwrap()
                })
                .collect()
        })
    })
    .await;
    assert_eq!(
        seqs,
        (0..sent as i64).collect(),
        "each message exactly once"
    );
}
