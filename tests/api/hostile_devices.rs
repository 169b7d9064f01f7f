//! Hostile devices: payloads too big or too many values, topics with wildcards or control
//! characters; each dropped and counted while ingestion goes on.
//!
//! Covered elsewhere and not repeated: 65 telemetry values and a 20 KiB payload
//! (`telemetry::bad_payloads_are_dropped_and_counted_and_the_next_good_one_is_stored`);
//! subscribing to wildcards (`broker::a_device_cannot_subscribe_to_wildcards_or_other_topics`).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    TestApp, TestDevice, eventually, history, metric, mqtt_packet, mqtt_string, owner_with_devices,
    raw_connect, spawn_app, spawn_app_with_embedded_broker,
};

// --- MQTT -----------------------------------------------------------------------------------

#[tokio::test]
async fn ten_thousand_telemetry_values_are_dropped_and_counted_and_the_next_message_is_stored() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    let device = TestDevice::connect(&app, &devices[0]).await;
    let dropped = async || {
        metric(
            &app,
            "iotbind_telemetry_dropped_total",
            &[("reason", "too_large")],
        )
        .await
            + metric(
                &app,
                "iotbind_telemetry_dropped_total",
                &[("reason", "too_many_values")],
            )
            .await
    };
    let before = dropped().await;
    let flood: serde_json::Map<String, Value> =
        (0..10_000).map(|i| (format!("v{i}"), json!(i))).collect();

    device.send_telemetry(&json!({ "values": flood })).await;
    device
        .send_telemetry(&json!({ "values": { "ok": true } }))
        .await;

    let rows = eventually("the good message stored", async || {
        let rows = history(&app, &token, &device.id).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 1, "only the good message is stored: {rows:?}");
    assert_eq!(rows[0]["values"], json!({ "ok": true }));
    eventually("the flood counted as dropped", async || {
        (dropped().await > before).then_some(())
    })
    .await;
    assert!(device.ended().is_none(), "the device stays connected");
}

/// What became of one raw connection after a publish on a hostile topic.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The broker closed the connection (allowed: the topic breaks the protocol).
    Closed,
    /// The broker kept the connection and answered a PINGREQ (allowed: publish dropped).
    Open,
}

/// Connects as `device` with a hand-made client (rumqttc refuses to send such topics), sends a
/// QoS 1 PUBLISH on `topic`, then a PINGREQ, and reports whether the connection survived.
async fn publish_raw(app: &TestApp, id: &str, password: &str, topic: &[u8]) -> Outcome {
    let mut stream = TcpStream::connect((app.mqtt_host.as_str(), app.mqtt_port))
        .await
        .unwrap();
    stream
        .write_all(&raw_connect(id, id, password))
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "the device connects");

    let mut publish = mqtt_string(topic);
    publish.extend_from_slice(&[0, 1]);
    publish.extend_from_slice(br#"{"values":{"evil":1}}"#);
    let sent = async {
        stream.write_all(&mqtt_packet(0x32, &publish)).await?;
        stream.write_all(&[0xC0, 0]).await
    };
    if sent.await.is_err() {
        return Outcome::Closed;
    }
    // Read until PINGRESP (open) or end of stream (closed); a PUBACK may come before.
    let mut seen = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Outcome::Closed,
            Ok(Ok(n)) => {
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(2).any(|w| w == [0xD0, 0]) {
                    return Outcome::Open;
                }
            }
            Err(_) => panic!("the broker neither answered nor closed after {topic:?}"),
        }
    }
}

#[tokio::test]
async fn topics_with_wildcards_or_control_characters_are_dropped_and_nothing_breaks() {
    let app = spawn_app_with_embedded_broker().await;
    let (token, devices) = owner_with_devices(&app, 2).await;
    let (device, other) = (&devices[0], &devices[1]);
    let id = device.device_id.as_str();
    let hostile: Vec<Vec<u8>> = vec![
        format!("devices/{id}/+").into_bytes(),
        format!("devices/{id}/#").into_bytes(),
        b"devices/+/telemetry".to_vec(),
        b"devices/#".to_vec(),
        format!("devices/{id}/telemetry\u{0}").into_bytes(),
        format!("devices/{id}/tele\nmetry").into_bytes(),
        format!("devices/{id}\u{7}/telemetry").into_bytes(),
        format!("devices/{id}/telemetry/\u{1b}[2J").into_bytes(),
        b"".to_vec(),
    ];
    let mut outcomes = Vec::new();
    for topic in &hostile {
        outcomes.push(publish_raw(&app, id, &device.mqtt_password, topic).await);
    }
    println!("hostile topics → {outcomes:?}");

    // Nothing of it was stored for anyone, and both devices work as before.
    let honest = TestDevice::connect(&app, device).await;
    let neighbour = TestDevice::connect(&app, other).await;
    honest
        .send_telemetry(&json!({ "values": { "good": 1 } }))
        .await;
    neighbour
        .send_telemetry(&json!({ "values": { "good": 2 } }))
        .await;
    for (device_id, value) in [(id, 1), (other.device_id.as_str(), 2)] {
        let rows = eventually("the good message stored", async || {
            let rows = history(&app, &token, device_id).await;
            (!rows.is_empty()).then_some(rows)
        })
        .await;
        assert_eq!(rows.len(), 1, "only the good message: {rows:?}");
        assert_eq!(rows[0]["values"], json!({ "good": value }));
    }
    assert!(honest.ended().is_none() && neighbour.ended().is_none());
}
