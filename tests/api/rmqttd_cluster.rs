//! iotbind beside an MQTT broker cluster that asks it about every device: rmqttd as two nodes
//! (`rmqtt-cluster-broadcast`) with `rmqtt-auth-http` pointed at the broker hooks and
//! `rmqtt-acl` denying the rest, configured from `tests/brokers/rmqttd/`. The backend is
//! connected to node 1 only; devices log in on either node.

use iotbind::config::ConfigArgs;
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::{Value, json};

use crate::support::mosquitto::free_port;
use crate::support::rmqttd::RmqttdCluster;
use crate::support::{
    ProvisionedDevice, TestApp, TestDevice, claim, eventually, get_device, history, round_trip,
    spawn_app_with, topic, try_connect_raw,
};

const HOOK_SECRET: &str = "the secret the cluster presents, 32+ bytes";
const BACKEND_USER: &str = "iotbind-backend";
const BACKEND_PASSWORD: &str = "the backend's broker password, 32+ bytes";
const HOST: &str = "127.0.0.1";

/// The cluster, and the app whose hooks it calls, connected to node 1. The app's HTTP port is
/// chosen first: the nodes' configuration names it.
async fn app_beside_a_cluster() -> Option<(TestApp, RmqttdCluster)> {
    let http_port = free_port();
    let cluster = RmqttdCluster::start(&format!("http://{HOST}:{http_port}"), HOOK_SECRET)?;
    let app = spawn_app_with(ConfigArgs {
        http_addr: Some(format!("{HOST}:{http_port}")),
        mqtt_url: Some(format!("mqtt://{HOST}:{}", cluster.mqtt_ports[0])),
        mqtt_username: Some(BACKEND_USER.to_owned()),
        mqtt_password: Some(BACKEND_PASSWORD.to_owned()),
        broker_hook_secret: Some(HOOK_SECRET.to_owned()),
        ..ConfigArgs::default()
    })
    .await;
    eventually("the backend to be subscribed at node 1", async || {
        app.state.mqtt.is_ready().then_some(())
    })
    .await;
    Some((app, cluster))
}

/// Two devices provisioned by an admin and claimed by one owner, and the owner's token.
async fn two_claimed_devices(app: &TestApp) -> (String, ProvisionedDevice, ProvisionedDevice) {
    let mut devices = app.provision(2).await;
    let owner = app.user_token().await;
    for device in &devices {
        claim(app, &owner, device).await;
    }
    let other = devices.remove(1);
    (owner, devices.remove(0), other)
}

#[tokio::test]
async fn devices_log_in_on_either_node_through_the_hooks_and_commands_cross_the_cluster() {
    let Some((app, cluster)) = app_beside_a_cluster().await else {
        return;
    };
    let [node1, node2] = cluster.mqtt_ports;
    let (owner, near, far) = two_claimed_devices(&app).await;

    // Each node asks iotbind: a wrong password or another client id is refused on either.
    for port in [node1, node2] {
        let id = far.device_id.as_str();
        assert!(try_connect_raw(HOST, port, id, id, "wrong").await.is_err());
        assert!(
            try_connect_raw(HOST, port, "not-its-id", id, &far.mqtt_password)
                .await
                .is_err()
        );
    }
    let near = TestDevice::connect_to(HOST, node1, &near).await;
    let far_device = TestDevice::connect_to(HOST, node2, &far).await;

    // The device on node 2 is seen online and its telemetry stored, through node 1.
    eventually("the device on node 2 to be online", async || {
        (get_device(&app, &owner, &far.device_id).await["online"] == true).then_some(())
    })
    .await;
    far_device
        .send_telemetry(&json!({ "values": { "temperature": 21.5 } }))
        .await;
    eventually("the reading from node 2", async || {
        (history(&app, &owner, &far.device_id).await.len() == 1).then_some(())
    })
    .await;

    // A command sent through the backend on node 1 reaches the device on node 2, and its
    // result comes back; the device on node 1 answers as well.
    round_trip(&app, &owner, &far_device).await;
    round_trip(&app, &owner, &near).await;
}

#[tokio::test]
async fn the_cluster_refuses_what_a_device_may_not_do_on_either_node() {
    let Some((app, cluster)) = app_beside_a_cluster().await else {
        return;
    };
    let [node1, node2] = cluster.mqtt_ports;
    let (owner, intruder, victim) = two_claimed_devices(&app).await;
    let intruder = TestDevice::connect_to(HOST, node2, &intruder).await;

    let granted = intruder.subscribe("#", QoS::AtLeastOnce).await;
    assert!(
        matches!(granted.as_slice(), [SubscribeReasonCode::Failure]),
        "{granted:?}"
    );
    // Speaking for another device: the node refuses the publish and drops the connection
    // (`disconnect_if_pub_rejected`).
    intruder
        .publish_unacked(
            &topic(&victim.device_id, "telemetry"),
            json!({ "values": { "forged": 1 } }).to_string(),
        )
        .await;
    eventually("the intruder's connection to be dropped", async || {
        intruder.ended()
    })
    .await;

    // The victim, on the other node, finds only its own reading in its history.
    let victim_device = TestDevice::connect_to(HOST, node1, &victim).await;
    victim_device
        .send_telemetry(&json!({ "values": { "temperature": 19.0 } }))
        .await;
    round_trip(&app, &owner, &victim_device).await;
    let readings: Vec<Value> = history(&app, &owner, &victim.device_id).await;
    assert_eq!(readings.len(), 1, "{readings:?}");
    assert_eq!(readings[0]["values"], json!({ "temperature": 19.0 }));
}
