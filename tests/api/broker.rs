//! The embedded broker's device authentication and per-device topic rules of
//! `openapi/asyncapi.yaml`, seen from real MQTT connections: who may connect, subscribe and publish
//! where.

use rumqttc::{ConnectReturnCode, ConnectionError, QoS, SubscribeReasonCode};
use serde_json::{Value, json};

use crate::support::{TestApp, spawn_app_with_embedded_broker};
use crate::support::{TestDevice, eventually, topic, try_connect_raw, try_connect_with_will};
use crate::support::{get_device, owner_with_devices};
use crate::support::{history, metric};
use crate::support::{round_trip, send_command};

/// Fails unless `outcome` is a CONNACK refusal for bad credentials or authorization.
fn assert_refused(outcome: Result<(), ConnectionError>, who: &str) {
    match outcome {
        Err(ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword
            | ConnectReturnCode::NotAuthorized
            | ConnectReturnCode::BadClientId,
        )) => {}
        other => panic!("{who} should be refused with a CONNACK code, got {other:?}"),
    }
}

/// The broker's count of refused `action`s (publish or subscribe) so far.
async fn forbidden(app: &TestApp, action: &str) -> f64 {
    metric(app, "iotbind_mqtt_forbidden_total", &[("action", action)]).await
}

/// Waits until the forbidden-action counter has grown by `by` since `before`.
async fn wait_for_forbidden(app: &TestApp, action: &str, before: f64, by: f64) {
    eventually(&format!("{by} forbidden {action}s counted"), async || {
        let now = forbidden(app, action).await;
        (now >= before + by).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_device_with_a_wrong_password_is_refused() {
    let app = spawn_app_with_embedded_broker().await;
    let device = &app.provision(1).await[0];
    let id = device.device_id.as_str();

    let wrong = try_connect_raw(&app.mqtt_host, app.mqtt_port, id, id, "not-the-password").await;
    assert_refused(wrong, "a wrong password");

    let right = try_connect_raw(&app.mqtt_host, app.mqtt_port, id, id, &device.mqtt_password).await;
    assert!(right.is_ok(), "the right password connects: {right:?}");
}

#[tokio::test]
async fn an_unknown_device_is_refused() {
    let app = spawn_app_with_embedded_broker().await;
    let device = &app.provision(1).await[0];
    let stranger = uuid::Uuid::new_v4().to_string();

    let outcome = try_connect_raw(
        &app.mqtt_host,
        app.mqtt_port,
        &stranger,
        &stranger,
        &device.mqtt_password,
    )
    .await;
    assert_refused(outcome, "an unknown device id");

    let outcome = try_connect_raw(&app.mqtt_host, app.mqtt_port, "admin", "admin", "admin").await;
    assert_refused(outcome, "a made-up username");
}

#[tokio::test]
async fn a_client_id_other_than_the_username_is_refused() {
    let app = spawn_app_with_embedded_broker().await;
    let devices = app.provision(2).await;
    let (a, b) = (&devices[0], &devices[1]);

    for client_id in ["someone-else", b.device_id.as_str()] {
        let outcome = try_connect_raw(
            &app.mqtt_host,
            app.mqtt_port,
            client_id,
            &a.mqtt_username,
            &a.mqtt_password,
        )
        .await;
        assert_refused(
            outcome,
            &format!("client id {client_id} with A's credentials"),
        );
    }
}

#[tokio::test]
async fn a_device_cannot_leave_its_last_will_on_another_devices_topics() {
    let app = spawn_app_with_embedded_broker().await;
    let (token, devices) = owner_with_devices(&app, 2).await;
    let (a, b) = (&devices[0], &devices[1]);
    let before = forbidden(&app, "publish").await;

    // The broker publishes a will with nobody's check after the fact: were it accepted, A
    // could vanish and speak for B.
    let forged = [
        ("status", "online".to_owned()),
        (
            "telemetry",
            json!({ "values": { "forged": 1 } }).to_string(),
        ),
        (
            "commands/result",
            json!({ "id": uuid::Uuid::new_v4(), "status": "succeeded" }).to_string(),
        ),
        ("commands", json!({ "name": "unlock" }).to_string()),
    ];
    for (kind, payload) in &forged {
        let outcome = try_connect_with_will(
            &app.mqtt_host,
            app.mqtt_port,
            a,
            &topic(&b.device_id, kind),
            payload,
        )
        .await;
        assert_refused(outcome, &format!("a last will on B's {kind} topic"));
    }
    let own = try_connect_with_will(
        &app.mqtt_host,
        app.mqtt_port,
        a,
        &topic(&a.device_id, "status"),
        "offline",
    )
    .await;
    assert!(
        own.is_ok(),
        "a last will on A's own status connects: {own:?}"
    );

    wait_for_forbidden(&app, "publish", before, forged.len() as f64).await;
    let b = get_device(&app, &token, &b.device_id).await;
    assert_eq!(b["online"], false, "B: {b}");
}

#[tokio::test]
async fn a_device_cannot_subscribe_to_another_devices_commands_and_stays_connected() {
    let app = spawn_app_with_embedded_broker().await;
    let (token, devices) = owner_with_devices(&app, 2).await;
    let a = TestDevice::connect(&app, &devices[0]).await;
    let b = TestDevice::connect(&app, &devices[1]).await;
    let before = forbidden(&app, "subscribe").await;

    let granted = a
        .subscribe(&topic(&b.id, "commands"), QoS::AtLeastOnce)
        .await;
    assert_eq!(granted, [SubscribeReasonCode::Failure]);

    let response = send_command(&app, &token, &b.id, json!({ "name": "for_b" })).await;
    assert_eq!(response.status(), 202);
    let for_b: Value = response.json().await.unwrap();
    // A's next message is its own command, not B's, which was sent first.
    round_trip(&app, &token, &a).await;
    assert_eq!(b.next_command().await.id, for_b["id"].as_str().unwrap());
    assert!(a.ended().is_none(), "A was disconnected");
    wait_for_forbidden(&app, "subscribe", before, 1.0).await;
}

#[tokio::test]
async fn a_device_cannot_subscribe_to_wildcards_or_other_topics() {
    let app = spawn_app_with_embedded_broker().await;
    let (token, devices) = owner_with_devices(&app, 2).await;
    let a = TestDevice::connect(&app, &devices[0]).await;
    let b = TestDevice::connect(&app, &devices[1]).await;
    let before = forbidden(&app, "subscribe").await;
    let filters = [
        "#".to_owned(),
        "devices/#".to_owned(),
        "devices/+/commands".to_owned(),
        "+/+/+".to_owned(),
        // The backend's shared telemetry subscription, which would hand a device other
        // devices' telemetry meant for the backend.
        "$share/iotbind/devices/+/telemetry".to_owned(),
        format!("$share/mine/{}", topic(&a.id, "commands")),
        topic(&b.id, "telemetry"),
        topic(&b.id, "#"),
        topic(&a.id, "telemetry"),
    ];

    for filter in &filters {
        let granted = a.subscribe(filter, QoS::AtLeastOnce).await;
        assert_eq!(
            granted,
            [SubscribeReasonCode::Failure],
            "subscribing to {filter}"
        );
    }

    let response = send_command(&app, &token, &b.id, json!({ "name": "for_b" })).await;
    assert_eq!(response.status(), 202);
    b.send_telemetry(&json!({ "values": { "b": 1 } })).await;
    round_trip(&app, &token, &a).await;
    assert!(a.ended().is_none(), "A was disconnected");
    wait_for_forbidden(&app, "subscribe", before, filters.len() as f64).await;
}

#[tokio::test]
async fn a_device_cannot_publish_telemetry_or_status_as_another_device() {
    let app = spawn_app_with_embedded_broker().await;
    let (token, devices) = owner_with_devices(&app, 2).await;
    let a = TestDevice::connect(&app, &devices[0]).await;
    let b_id = devices[1].device_id.clone();
    let before = forbidden(&app, "publish").await;

    a.publish_unacked(
        &topic(&b_id, "telemetry"),
        json!({ "values": { "forged": 1 } }).to_string(),
    )
    .await;
    a.publish_unacked(&topic(&b_id, "status"), "online").await;
    a.send_telemetry(&json!({ "values": { "mine": 1 } })).await;

    // A's own row comes after its forged messages on the same connection, so once it is
    // stored, the forged ones have been dealt with.
    let mine = eventually("A's own telemetry stored", async || {
        let rows = history(&app, &token, &a.id).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(mine[0]["values"], json!({ "mine": 1 }));
    assert!(
        history(&app, &token, &b_id).await.is_empty(),
        "forged telemetry stored"
    );
    let b = get_device(&app, &token, &b_id).await;
    assert_eq!(b["online"], false, "forged status taken: {b}");
    assert!(
        b["last_seen_at"].is_null(),
        "forged messages count as B's: {b}"
    );
    assert!(a.ended().is_none(), "A was disconnected");
    wait_for_forbidden(&app, "publish", before, 2.0).await;
}

#[tokio::test]
async fn a_device_cannot_answer_another_devices_command_on_its_topic() {
    let app = spawn_app_with_embedded_broker().await;
    let (token, devices) = owner_with_devices(&app, 2).await;
    let a = TestDevice::connect(&app, &devices[0]).await;
    let b = TestDevice::connect(&app, &devices[1]).await;
    let before = forbidden(&app, "publish").await;

    let (response, ()) = tokio::join!(
        send_command(
            &app,
            &token,
            &b.id,
            json!({ "name": "unlock", "timeout_ms": 1000, "wait": true }),
        ),
        async {
            let command = b.next_command().await;
            a.publish_unacked(
                &topic(&b.id, "commands/result"),
                json!({ "id": command.id, "status": "succeeded", "result": { "forged": true } })
                    .to_string(),
            )
            .await;
        }
    );

    assert_eq!(response.status(), 200);
    let command: Value = response.json().await.unwrap();
    assert_eq!(
        command["status"], "timed_out",
        "A's forged result was taken: {command}"
    );
    round_trip(&app, &token, &a).await;
    wait_for_forbidden(&app, "publish", before, 1.0).await;
}

#[tokio::test]
async fn a_device_cannot_send_commands_to_another_device() {
    let app = spawn_app_with_embedded_broker().await;
    let (token, devices) = owner_with_devices(&app, 2).await;
    let a = TestDevice::connect(&app, &devices[0]).await;
    let b = TestDevice::connect(&app, &devices[1]).await;
    let before = forbidden(&app, "publish").await;
    let expires_at = chrono::Utc::now().timestamp_millis() + 60_000;

    a.publish_unacked(
        &topic(&b.id, "commands"),
        json!({ "id": uuid::Uuid::new_v4(), "name": "unlock", "params": {}, "expires_at": expires_at })
            .to_string(),
    )
    .await;
    round_trip(&app, &token, &a).await;
    let response = send_command(&app, &token, &b.id, json!({ "name": "real" })).await;
    assert_eq!(response.status(), 202);

    // B's first command is the backend's, so A's forgery never reached it.
    assert_eq!(b.next_command().await.name, "real");
    wait_for_forbidden(&app, "publish", before, 1.0).await;
}
