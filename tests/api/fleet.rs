//! device-sim against the real server: 50 simulated devices (the `device_sim` library, in
//! process, over real MQTT) send telemetry and answer commands; every message they got to the
//! broker is stored exactly once, and every command ends as the device's behaviour says.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use device_sim::{Behaviour, Broker, DeviceCredentials, DeviceStats, Fleet, FleetConfig, Qos};
use serde_json::{Value, json};

use crate::support::eventually;
use crate::support::send_command;
use crate::support::{ProvisionedDevice, TestApp, spawn_app};
use crate::support::{history, history_paged};
use crate::support::{list_devices, millis, owner_with_devices};

const DEVICES: usize = 50;
/// Telemetry messages every device must have had acknowledged before the fleet stops: a few
/// seconds at 5/s.
const MESSAGES_EACH: u64 = 15;

fn credentials(device: &ProvisionedDevice) -> DeviceCredentials {
    DeviceCredentials {
        device_id: device.device_id.clone(),
        serial: Some(device.serial.clone()),
        claim_code: Some(device.claim_code.clone()),
        mqtt_username: device.mqtt_username.clone(),
        mqtt_password: device.mqtt_password.clone(),
    }
}

/// Sends a `wait=true` command and returns the final command.
async fn command(app: &TestApp, token: &str, device_id: &str, body: Value) -> Value {
    let response = send_command(app, token, device_id, body).await;
    assert_eq!(response.status(), 200, "a command with wait to {device_id}");
    response.json().await.expect("a command as JSON")
}

/// The ids of the fleet's devices of one behaviour.
fn ids_of(fleet: &Fleet, behaviour: Behaviour) -> Vec<String> {
    fleet
        .devices()
        .iter()
        .filter(|device| device.behaviour() == behaviour)
        .map(|device| device.id().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_fleet_is_stored_exactly_once_and_answers_commands_as_configured() {
    let app = spawn_app().await;
    let (token, provisioned) = owner_with_devices(&app, DEVICES).await;
    let devices: Vec<DeviceCredentials> = provisioned.iter().map(credentials).collect();

    let mut config = FleetConfig::new(Broker {
        host: app.mqtt_host.clone(),
        port: app.mqtt_port,
    });
    config.rate = "5/s".parse().unwrap();
    config.qos = Qos::AtLeastOnce;
    config.seed = 2024;
    config.fail_rate = 0.1;
    config.silent_rate = 0.1;
    config.reboot_pause = std::time::Duration::from_millis(300);
    let fleet = Fleet::start(&config, &devices).expect("a valid fleet configuration");
    let stats: Vec<(String, Arc<DeviceStats>)> = fleet
        .devices()
        .iter()
        .map(|device| (device.id().to_owned(), device.stats().clone()))
        .collect();

    eventually("every simulated device online and subscribed", async || {
        (fleet.totals().online == DEVICES as u64).then_some(())
    })
    .await;

    let normal = ids_of(&fleet, Behaviour::Normal);
    let failing = ids_of(&fleet, Behaviour::Failing);
    let silent = ids_of(&fleet, Behaviour::Silent);
    assert_eq!(
        (failing.len(), silent.len()),
        (5, 5),
        "10 % fail, 10 % silent"
    );

    let before = Utc::now().timestamp_millis();
    let (relay, ping, unknown, bad_params, stuck, unanswered, reboot) = tokio::join!(
        command(
            &app,
            &token,
            &normal[0],
            json!({ "name": "set_relay", "params": { "on": true }, "wait": true }),
        ),
        command(
            &app,
            &token,
            &normal[1],
            json!({ "name": "ping", "wait": true })
        ),
        command(
            &app,
            &token,
            &normal[2],
            json!({ "name": "self_destruct", "wait": true }),
        ),
        command(
            &app,
            &token,
            &normal[3],
            json!({ "name": "set_relay", "params": { "on": "yes" }, "wait": true }),
        ),
        command(
            &app,
            &token,
            &failing[0],
            json!({ "name": "set_relay", "params": { "on": true }, "wait": true }),
        ),
        command(
            &app,
            &token,
            &silent[0],
            json!({ "name": "ping", "wait": true, "timeout_ms": 1000 }),
        ),
        command(
            &app,
            &token,
            &normal[4],
            json!({ "name": "reboot", "wait": true })
        ),
    );
    let after = Utc::now().timestamp_millis();

    assert_eq!(relay["status"], "succeeded", "{relay}");
    assert_eq!(relay["result"], json!({ "on": true }));
    assert_eq!(ping["status"], "succeeded", "{ping}");
    let device_time = ping["result"]["device_time"].as_i64().expect("device_time");
    assert!(
        (before..=after).contains(&device_time),
        "device time {device_time} within [{before}, {after}]"
    );
    assert_eq!(unknown["status"], "rejected", "{unknown}");
    assert!(
        unknown["error"]
            .as_str()
            .is_some_and(|e| e.contains("self_destruct")),
        "{unknown}"
    );
    assert_eq!(bad_params["status"], "rejected", "{bad_params}");
    assert!(bad_params["error"].as_str().is_some(), "{bad_params}");
    assert_eq!(stuck["status"], "failed", "{stuck}");
    assert!(stuck["error"].as_str().is_some(), "{stuck}");
    assert_eq!(unanswered["status"], "timed_out", "{unanswered}");
    assert_eq!(reboot["status"], "succeeded", "{reboot}");

    // Every reading the device stamped after the command succeeded shows the relay on, and
    // one such reading arrives.
    let switched_at = millis(&relay["completed_at"]);
    let after_switch = eventually("a reading after the relay switched", async || {
        let rows: Vec<Value> = history(&app, &token, &normal[0])
            .await
            .into_iter()
            .filter(|row| millis(&row["ts"]) > switched_at)
            .collect();
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    for row in &after_switch {
        assert_eq!(row["values"]["relay"], true, "after set_relay: {row}");
    }

    let rebooted = fleet.device(&normal[4]).expect("the rebooted device");
    eventually("the rebooted device back online", async || {
        let counts = rebooted.stats().snapshot();
        (counts.connects == 2 && rebooted.is_online()).then_some(())
    })
    .await;
    eventually("a few seconds of telemetry from every device", async || {
        stats
            .iter()
            .all(|(_, stats)| stats.snapshot().telemetry_sent >= MESSAGES_EACH)
            .then_some(())
    })
    .await;

    let summary = fleet.stop().await;
    let totals = summary.totals;
    assert_eq!(totals.telemetry_unsent, 0, "{summary}");
    assert_eq!(totals.answers_unsent, 0, "{summary}");
    assert_eq!(
        (
            totals.answered_succeeded,
            totals.answered_failed,
            totals.answered_rejected
        ),
        (3, 1, 2),
        "{summary}"
    );
    assert_eq!(totals.commands_ignored, 1, "{summary}");
    assert_eq!(totals.commands_expired + totals.commands_duplicate, 0);
    assert_eq!(summary.reconnects(), 1, "only the reboot: {summary}");

    for (id, stats) in &stats {
        let sent = stats.snapshot().telemetry_sent;
        eventually(&format!("{sent} rows of {id}"), async || {
            (history(&app, &token, id).await.len() as u64 >= sent).then_some(())
        })
        .await;
        // Small pages, so that following next_cursor is part of what is checked.
        let rows = history_paged(&app, &token, id, &[], 7).await;
        let seqs: Vec<u64> = rows
            .iter()
            .map(|row| row["values"]["seq"].as_u64().expect("a seq value"))
            .collect();
        let distinct: HashSet<u64> = seqs.iter().copied().collect();
        assert_eq!(
            rows.len() as u64,
            sent,
            "{id} sent {sent}, stored {}",
            rows.len()
        );
        assert_eq!(
            distinct,
            (0..sent).collect(),
            "{id} lost or repeated a reading"
        );
    }

    eventually("every device offline after its goodbye", async || {
        list_devices(&app, &token)
            .await
            .iter()
            .all(|device| device["online"] == false)
            .then_some(())
    })
    .await;
}
