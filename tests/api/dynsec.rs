//! Devices authenticated by an external Mosquitto through its dynamic security plugin: the
//! broker itself, not iotbind, refuses unknown devices and foreign topics, from clients and
//! roles that provisioning and rotation keep in step with iotbind's records.

use iotbind::config::ConfigArgs;
use reqwest::Method;
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::{Value, json};

use crate::support::claim;
use crate::support::history;
use crate::support::mosquitto::{DYNSEC_ADMIN, DYNSEC_ADMIN_PASSWORD, PrivateMosquitto};
use crate::support::rotate_mqtt_password;
use crate::support::send_command;
use crate::support::{ProvisionedDevice, TestApp, assert_error, spawn_app_with};
use crate::support::{TestDevice, eventually, topic, try_connect_raw};

/// A server whose broker is `mosquitto`, with dynamic security on, once its own client holds
/// its role (its subscriptions then succeed: a device's status shows).
async fn app_on(mosquitto: &PrivateMosquitto) -> TestApp {
    spawn_app_with(ConfigArgs {
        mqtt_url: Some(mosquitto.url()),
        mqtt_username: Some(DYNSEC_ADMIN.to_owned()),
        mqtt_password: Some(DYNSEC_ADMIN_PASSWORD.to_owned()),
        mqtt_dynsec: Some("true".to_owned()),
        ..ConfigArgs::default()
    })
    .await
}

async fn provision(app: &TestApp, admin: &str, count: u32) -> reqwest::Response {
    app.authed_json(
        Method::POST,
        "/api/v1/admin/devices",
        admin,
        &json!({ "count": count }),
    )
    .await
}

async fn stored_devices(app: &TestApp) -> usize {
    use sea_orm::{EntityTrait, PaginatorTrait};
    iotbind::entity::devices::Entity::find()
        .count(&app.state.db)
        .await
        .unwrap() as usize
}

#[tokio::test]
async fn the_broker_admits_provisioned_devices_only_to_their_own_topics() {
    let Some(mosquitto) = PrivateMosquitto::start_with_dynsec() else {
        return;
    };
    let app = app_on(&mosquitto).await;
    let admin = app.admin_token().await;
    let response = provision(&app, &admin, 2).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let devices: Vec<ProvisionedDevice> = serde_json::from_value(body["items"].clone()).unwrap();
    let (one, other) = (&devices[0], &devices[1]);
    let owner = app.user_token().await;
    claim(&app, &owner, one).await;
    claim(&app, &owner, other).await;

    // The broker checks the password and the client id.
    let host = "127.0.0.1";
    assert!(
        try_connect_raw(
            host,
            mosquitto.port,
            &one.device_id,
            &one.device_id,
            "wrong"
        )
        .await
        .is_err()
    );
    assert!(
        try_connect_raw(
            host,
            mosquitto.port,
            "not-its-id",
            &one.device_id,
            &one.mqtt_password
        )
        .await
        .is_err()
    );
    let device = TestDevice::connect_to(host, mosquitto.port, one).await;

    // Its telemetry is stored, through the backend's subscription at the broker.
    device
        .send_telemetry(&json!({ "values": { "temperature": 20.5 } }))
        .await;
    eventually("the device's telemetry", async || {
        (history(&app, &owner, &one.device_id).await.len() == 1).then_some(())
    })
    .await;

    // The broker refuses what is not its own: subscribing to everything, and speaking for
    // another device (dropped at the broker, so nothing reaches the other device's history).
    let granted = device.subscribe("#", QoS::AtLeastOnce).await;
    assert!(
        matches!(granted.as_slice(), [SubscribeReasonCode::Failure]),
        "{granted:?}"
    );
    // MQTT 3.1.1 cannot say "refused": Mosquitto acknowledges the publish and drops it.
    device
        .publish_acked(
            &topic(&other.device_id, "telemetry"),
            json!({ "values": { "forged": 1 } }).to_string(),
            false,
        )
        .await;
    device
        .send_telemetry(&json!({ "values": { "temperature": 20.6 } }))
        .await;
    eventually("the device's second reading", async || {
        (history(&app, &owner, &one.device_id).await.len() == 2).then_some(())
    })
    .await;
    assert!(history(&app, &owner, &other.device_id).await.is_empty());

    // A command goes out and its result comes back through the broker.
    let (response, ()) = tokio::join!(
        send_command(
            &app,
            &owner,
            &one.device_id,
            json!({ "name": "set_relay", "params": { "on": true }, "wait": true })
        ),
        async {
            let command = device.next_command().await;
            device.succeed(&command, json!({ "relay": true })).await;
        }
    );
    assert_eq!(response.status(), 200);
    let command: Value = response.json().await.unwrap();
    assert_eq!(command["status"], "succeeded");
}

#[tokio::test]
async fn a_rotated_password_is_refused_by_the_broker_which_drops_the_session() {
    let Some(mosquitto) = PrivateMosquitto::start_with_dynsec() else {
        return;
    };
    let app = app_on(&mosquitto).await;
    let admin = app.admin_token().await;
    let response = provision(&app, &admin, 1).await;
    let body: Value = response.json().await.unwrap();
    let device: ProvisionedDevice = serde_json::from_value(body["items"][0].clone()).unwrap();
    let connected = TestDevice::connect_to("127.0.0.1", mosquitto.port, &device).await;

    let response = rotate_mqtt_password(&app, &admin, &device.device_id).await;
    assert_eq!(response.status(), 200);
    let rotated: Value = response.json().await.unwrap();
    let new_password = rotated["mqtt_password"].as_str().unwrap();

    eventually("the broker to drop the device's session", async || {
        connected.ended().map(|_| ())
    })
    .await;
    let id = device.device_id.as_str();
    assert!(
        try_connect_raw("127.0.0.1", mosquitto.port, id, id, &device.mqtt_password)
            .await
            .is_err(),
        "the old password still works"
    );
    assert!(
        try_connect_raw("127.0.0.1", mosquitto.port, id, id, new_password)
            .await
            .is_ok(),
        "the new password does not work"
    );
}

#[tokio::test]
async fn a_silent_broker_fails_the_provisioning_with_502_and_leaves_no_device() {
    let Some(mosquitto) = PrivateMosquitto::start_with_dynsec() else {
        return;
    };
    let app = app_on(&mosquitto).await;
    let admin = app.admin_token().await;
    assert_eq!(provision(&app, &admin, 1).await.status(), 201);
    let before = stored_devices(&app).await;

    // A broker that takes the connection's bytes but answers nothing.
    mosquitto.signal("STOP");
    let response = provision(&app, &admin, 3).await;
    mosquitto.signal("CONT");
    assert_error(response, 502, "broker_unavailable").await;
    assert_eq!(stored_devices(&app).await, before, "a device row was left");

    // Once it answers again, provisioning works.
    eventually("the broker to answer again", async || {
        (provision(&app, &admin, 1).await.status() == 201).then_some(())
    })
    .await;
}
