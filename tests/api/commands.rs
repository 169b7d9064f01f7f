//! The command relay: commands sent over HTTP, answered by real MQTT
//! devices (or not), stray results, and a backend that loses and regains its broker.

use chrono::Utc;
use iotbind::config::ConfigArgs;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::broker_proxy::{BrokerProxy, host_and_port};
use crate::support::{TestApp, assert_error, external_test_broker, spawn_app, spawn_app_with};
use crate::support::{TestDevice, eventually};
use crate::support::{millis, owner_with_devices};
use crate::support::{round_trip, send_command};

/// `GET /devices/{id}/commands/{command_id}`, which must succeed.
pub async fn get_command(app: &TestApp, token: &str, device_id: &str, command_id: &str) -> Value {
    let response = app
        .authed(
            Method::GET,
            &format!("/api/v1/devices/{device_id}/commands/{command_id}"),
            token,
        )
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200, "command {command_id}");
    response.json().await.expect("a command as JSON")
}

/// A claimed device connected to the app's broker, and its owner's token.
async fn connected_device(app: &TestApp) -> (String, TestDevice) {
    let (token, devices) = owner_with_devices(app, 1).await;
    let device = TestDevice::connect(app, &devices[0]).await;
    (token, device)
}

#[tokio::test]
async fn a_command_with_wait_is_answered_by_the_device_and_succeeds() {
    let app = spawn_app().await;
    let (token, device) = connected_device(&app).await;

    let (response, received) = tokio::join!(
        send_command(
            &app,
            &token,
            &device.id,
            json!({ "name": "set_level", "params": { "level": 3 }, "wait": true }),
        ),
        async {
            let command = device.next_command().await;
            device.succeed(&command, json!({ "applied": 3 })).await;
            command
        }
    );

    assert_eq!(response.status(), 200);
    let command: Value = response.json().await.unwrap();
    assert_eq!(command["id"], received.id.as_str());
    assert_eq!(command["device_id"], device.id.as_str());
    assert_eq!(command["name"], "set_level");
    assert_eq!(command["params"], json!({ "level": 3 }));
    assert_eq!(command["status"], "succeeded");
    assert_eq!(command["result"], json!({ "applied": 3 }));
    assert!(command["error"].is_null(), "{command}");
    assert!(millis(&command["completed_at"]) >= millis(&command["created_at"]));
    let id = command["id"].as_str().unwrap();
    assert_eq!(get_command(&app, &token, &device.id, id).await, command);
}

#[tokio::test]
async fn a_command_without_wait_is_202_sent_and_shows_the_answer_later() {
    let app = spawn_app().await;
    let (token, device) = connected_device(&app).await;

    let before = Utc::now().timestamp_millis();
    let response = send_command(
        &app,
        &token,
        &device.id,
        json!({ "name": "open_valve", "params": { "valve": "a", "percent": 40 }, "timeout_ms": 2000 }),
    )
    .await;
    let after = Utc::now().timestamp_millis();

    assert_eq!(response.status(), 202);
    let sent: Value = response.json().await.unwrap();
    assert_eq!(sent["status"], "sent");
    assert!(sent["completed_at"].is_null(), "{sent}");
    assert!(sent["result"].is_null(), "{sent}");
    let id = sent["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{sent}");

    let received = device.next_command().await;
    assert_eq!(received.id, id);
    assert_eq!(received.name, "open_valve");
    assert_eq!(received.params, json!({ "valve": "a", "percent": 40 }));
    assert!(
        (before + 2000 - 1..=after + 2000 + 1).contains(&received.expires_at),
        "expires_at {} is creation + 2000 ms, created within [{before}, {after}]",
        received.expires_at
    );

    device.succeed(&received, json!({ "opened": true })).await;
    let done = eventually("the command succeeded", async || {
        let command = get_command(&app, &token, &device.id, id).await;
        (command["status"] != "sent").then_some(command)
    })
    .await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["result"], json!({ "opened": true }));
    assert!(!done["completed_at"].is_null());
}

/// Sends a `wait=true` command named `name` to a newly claimed, connected device, which
/// answers it with `reply` (its `id` filled in); returns the command the request answered.
async fn command_answered_with(name: &str, reply: Value) -> Value {
    let app = spawn_app().await;
    let (token, device) = connected_device(&app).await;
    let (response, ()) = tokio::join!(
        send_command(
            &app,
            &token,
            &device.id,
            json!({ "name": name, "wait": true })
        ),
        async {
            let command = device.next_command().await;
            let mut reply = reply;
            reply["id"] = json!(command.id);
            device.answer(&reply).await;
        }
    );
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_device_that_rejects_a_command_makes_it_rejected() {
    let command = command_answered_with(
        "reboot",
        json!({ "status": "rejected", "error": "busy updating" }),
    )
    .await;
    assert_eq!(command["status"], "rejected");
    assert_eq!(command["error"], "busy updating");
    assert!(!command["completed_at"].is_null());
}

#[tokio::test]
async fn a_device_that_fails_a_command_makes_it_failed() {
    let command = command_answered_with(
        "calibrate",
        json!({ "status": "failed", "result": { "code": 7 }, "error": "sensor stuck" }),
    )
    .await;
    assert_eq!(command["status"], "failed");
    assert_eq!(command["error"], "sensor stuck");
    assert_eq!(command["result"], json!({ "code": 7 }));
}

#[tokio::test]
async fn an_error_text_with_a_nul_character_is_recorded_without_it() {
    // PostgreSQL cannot store a NUL in text; the device's words are kept, minus the NUL.
    let command = command_answered_with(
        "calibrate",
        json!({ "status": "failed", "error": "sensor\u{0} stuck" }),
    )
    .await;
    assert_eq!(command["status"], "failed");
    assert_eq!(command["error"], "sensor stuck");
}

#[tokio::test]
async fn a_silent_device_makes_the_command_time_out_and_a_late_answer_changes_nothing() {
    let app = spawn_app().await;
    let (token, device) = connected_device(&app).await;

    let (response, received) = tokio::join!(
        send_command(
            &app,
            &token,
            &device.id,
            json!({ "name": "slow", "timeout_ms": 300, "wait": true }),
        ),
        device.next_command()
    );

    assert_eq!(response.status(), 200);
    let command: Value = response.json().await.unwrap();
    assert_eq!(command["status"], "timed_out");
    assert!(command["result"].is_null(), "{command}");
    assert!(!command["completed_at"].is_null(), "{command}");

    device.succeed(&received, json!({ "too": "late" })).await;
    round_trip(&app, &token, &device).await;
    let id = command["id"].as_str().unwrap();
    assert_eq!(get_command(&app, &token, &device.id, id).await, command);
}

#[tokio::test]
async fn a_command_nobody_answers_reads_as_timed_out_once_it_expires() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    let id = &devices[0].device_id;
    let response = send_command(
        &app,
        &token,
        id,
        json!({ "name": "blink", "timeout_ms": 100 }),
    )
    .await;
    assert_eq!(response.status(), 202);
    let sent: Value = response.json().await.unwrap();
    let command_id = sent["id"].as_str().unwrap();

    let done = eventually("the command to time out", async || {
        let command = get_command(&app, &token, id, command_id).await;
        (command["status"] != "sent").then_some(command)
    })
    .await;

    assert_eq!(done["status"], "timed_out");
    assert!(
        millis(&done["completed_at"]) >= millis(&done["created_at"]) + 100,
        "finished before its timeout: {done}"
    );
}

#[tokio::test]
async fn a_command_to_a_device_that_never_connected_times_out() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;

    let response = send_command(
        &app,
        &token,
        &devices[0].device_id,
        json!({ "name": "blink", "timeout_ms": 300, "wait": true }),
    )
    .await;

    assert_eq!(response.status(), 200);
    let command: Value = response.json().await.unwrap();
    assert_eq!(command["status"], "timed_out");
}

#[tokio::test]
async fn duplicate_and_unknown_results_change_nothing() {
    let app = spawn_app().await;
    let (token, device) = connected_device(&app).await;
    let first = round_trip(&app, &token, &device).await;
    let first_id = first["id"].as_str().unwrap();

    device
        .answer(&json!({ "id": first_id, "status": "failed", "error": "changed my mind" }))
        .await;
    device
        .answer(&json!({ "id": uuid::Uuid::new_v4(), "status": "succeeded", "result": {} }))
        .await;
    device
        .answer(&json!({ "id": "not-a-uuid", "status": "succeeded" }))
        .await;
    device.answer(&json!({ "status": "succeeded" })).await;
    round_trip(&app, &token, &device).await;

    assert_eq!(get_command(&app, &token, &device.id, first_id).await, first);
    assert!(device.ended().is_none(), "the device was disconnected");
}

#[tokio::test]
async fn a_result_for_another_devices_command_is_ignored() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 2).await;
    let target = TestDevice::connect(&app, &devices[0]).await;
    let intruder = TestDevice::connect(&app, &devices[1]).await;

    // The intruder answers on its own result topic, which it may use, with the id of a
    // command meant for the other device.
    let (response, ()) = tokio::join!(
        send_command(
            &app,
            &token,
            &target.id,
            json!({ "name": "unlock", "timeout_ms": 1000, "wait": true }),
        ),
        async {
            let command = target.next_command().await;
            intruder.succeed(&command, json!({ "forged": true })).await;
        }
    );

    assert_eq!(response.status(), 200);
    let command: Value = response.json().await.unwrap();
    assert_eq!(command["status"], "timed_out", "{command}");
}

#[tokio::test]
async fn the_recent_commands_are_listed_newest_first() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    let id = &devices[0].device_id;
    let mut sent = Vec::new();
    for name in ["first", "second", "third"] {
        let response = send_command(&app, &token, id, json!({ "name": name })).await;
        assert_eq!(response.status(), 202);
        let command: Value = response.json().await.unwrap();
        sent.push(command["id"].as_str().unwrap().to_owned());
    }
    let list = async |query: &[(&str, &str)]| -> Vec<String> {
        let response = app
            .authed(
                Method::GET,
                &format!("/api/v1/devices/{id}/commands"),
                &token,
            )
            .query(query)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|command| command["id"].as_str().expect("an id").to_owned())
            .collect()
    };

    let newest_first: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(list(&[]).await, newest_first);
    assert_eq!(list(&[("limit", "2")]).await, newest_first[..2]);
}

#[tokio::test]
async fn a_malformed_command_is_invalid_request() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    let id = &devices[0].device_id;

    for body in [
        json!({ "name": "blink", "timeout_ms": 50 }),
        json!({ "name": "blink", "timeout_ms": 99 }),
        json!({ "name": "blink", "timeout_ms": 60001 }),
        json!({ "name": "blink", "timeout_ms": "soon" }),
        json!({ "name": "blink", "params": [1, 2] }),
        json!({ "name": "blink", "wait": "yes" }),
        json!({ "params": {} }),
    ] {
        let response = send_command(&app, &token, id, body).await;
        assert_error(response, 400, "invalid_request").await;
    }
    for timeout_ms in [100, 60000] {
        let response = send_command(
            &app,
            &token,
            id,
            json!({ "name": "blink", "timeout_ms": timeout_ms }),
        )
        .await;
        assert_eq!(response.status(), 202, "timeout_ms {timeout_ms} is allowed");
    }
}

#[tokio::test]
async fn an_unknown_command_is_404() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    let id = &devices[0].device_id;

    for command_id in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let response = app
            .authed(
                Method::GET,
                &format!("/api/v1/devices/{id}/commands/{command_id}"),
                &token,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "command {command_id}");
    }
}

/// Polls `/health/ready` until it answers `status`.
async fn wait_for_readiness(app: &TestApp, status: u16, what: &str) {
    eventually(what, async || {
        (app.get("/health/ready").await.status().as_u16() == status).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_losing_the_broker_the_backend_reconnects_and_commands_work_again() {
    // The broker: the external one CI names, or a first server's embedded broker that lets
    // a second server in with a backend credential.
    let username = "backend-under-test".to_owned();
    let password = uuid::Uuid::new_v4().simple().to_string();
    let (broker_server, broker_host, broker_port) = match external_test_broker() {
        Some(url) => {
            let (host, port) = host_and_port(&url);
            (None, host, port)
        }
        None => {
            let broker = spawn_app_with(ConfigArgs {
                mqtt_url: Some("embedded".to_owned()),
                mqtt_username: Some(username.clone()),
                mqtt_password: Some(password.clone()),
                ..ConfigArgs::default()
            })
            .await;
            let (host, port) = (broker.mqtt_host.clone(), broker.mqtt_port);
            (Some(broker), host, port)
        }
    };
    let proxy = BrokerProxy::start(&broker_host, broker_port).await;
    let embedded = broker_server.is_some();
    let app = spawn_app_with(ConfigArgs {
        database_url: broker_server.as_ref().map(|b| b.database_url.clone()),
        mqtt_url: Some(format!("mqtt://127.0.0.1:{}", proxy.port())),
        mqtt_username: embedded.then(|| username.clone()),
        mqtt_password: embedded.then(|| password.clone()),
        ..ConfigArgs::default()
    })
    .await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    // Straight to the broker: only the backend's connection goes through the proxy.
    let device = TestDevice::connect_to(&broker_host, broker_port, &devices[0]).await;
    wait_for_readiness(&app, 200, "the backend ready").await;
    round_trip(&app, &token, &device).await;

    proxy.pause();
    proxy.cut();
    wait_for_readiness(&app, 503, "readiness to report the broker down").await;
    proxy.resume();
    wait_for_readiness(&app, 200, "the backend to reconnect by itself").await;

    round_trip(&app, &token, &device).await;
    assert!(
        device.ended().is_none(),
        "the device lost its own connection"
    );
}
