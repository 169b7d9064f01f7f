//! Clients that connect and then do nothing, or too little, lose their connection: HTTP's
//! header, body and idle timeouts, and the embedded broker's handshake limits and
//! failed-login allowance.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use iotbind::config::ConfigArgs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::metric;
use crate::support::{TestApp, spawn_app_with};
use crate::support::{TestDevice, raw_connect};

/// A TCP connection to `to` from the loopback address `source`.
async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the server closes the connection (or `limit` passes); returns what it sent
/// and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (received, true),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return (received, false),
        }
    }
}

fn http_addr(app: &TestApp) -> SocketAddr {
    app.address.trim_start_matches("http://").parse().unwrap()
}

async fn http_app() -> TestApp {
    spawn_app_with(ConfigArgs {
        http_header_timeout: Some("1s".to_owned()),
        http_body_timeout: Some("1s".to_owned()),
        http_idle_timeout: Some("3s".to_owned()),
        ..ConfigArgs::default()
    })
    .await
}

#[tokio::test]
async fn http_connections_that_send_nothing_or_half_a_request_are_closed() {
    let app = http_app().await;
    let addr = http_addr(&app);
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half_head = TcpStream::connect(addr).await.unwrap();
    half_head
        .write_all(b"POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut half_body = TcpStream::connect(addr).await.unwrap();
    half_body
        .write_all(
            b"POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 60000\r\n\r\n{\"username\": \"",
        )
        .await
        .unwrap();

    let (sent, closed) = read_until_closed(&mut silent, Duration::from_secs(20)).await;
    assert!(closed && sent.is_empty(), "a silent connection stays open");
    let (_, closed) = read_until_closed(&mut half_head, Duration::from_secs(20)).await;
    assert!(closed, "a half-sent head stays open");
    let (answer, closed) = read_until_closed(&mut half_body, Duration::from_secs(20)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
    assert!(
        closed,
        "a half-sent body's connection stays open after its 408"
    );

    // The server serves everyone else as before.
    assert_eq!(app.get("/health/live").await.status(), 200);
}

#[tokio::test]
async fn a_kept_alive_connection_waits_the_idle_timeout_for_its_next_request_then_closes() {
    let app = http_app().await;
    let mut stream = TcpStream::connect(http_addr(&app)).await.unwrap();
    let request = b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut buf = [0u8; 4096];

    stream.write_all(request).await.unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Longer than the header timeout, shorter than the idle one: still good for a request.
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    stream.write_all(request).await.unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(20)).await;
    assert!(closed, "an idle kept-alive connection stays open");
}

#[tokio::test]
async fn one_address_holding_handshakes_open_cannot_keep_a_device_out() {
    let app = spawn_app_with(ConfigArgs {
        mqtt_url: Some("embedded".to_owned()),
        mqtt_handshake_timeout: Some("2s".to_owned()),
        mqtt_handshakes_per_address: Some("5".to_owned()),
        ..ConfigArgs::default()
    })
    .await;
    let broker: SocketAddr = format!("{}:{}", app.mqtt_host, app.mqtt_port)
        .parse()
        .unwrap();
    let attacker = Ipv4Addr::new(127, 0, 0, 40);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect_from(attacker, broker).await);
    }

    // Past the cap, connections are closed at once …
    let mut closed_at_once = 0;
    for stream in &mut held[5..] {
        if read_until_closed(stream, Duration::from_millis(500))
            .await
            .1
        {
            closed_at_once += 1;
        }
    }
    assert_eq!(closed_at_once, 15, "connections beyond the cap were kept");

    // … while a device from another address connects and is heard.
    let (token, devices) = crate::support::owner_with_devices(&app, 1).await;
    let device = TestDevice::connect(&app, &devices[0]).await;
    device
        .send_telemetry(&serde_json::json!({ "values": { "t": 1 } }))
        .await;
    crate::support::eventually("the device's reading", async || {
        (!crate::support::history(&app, &token, &device.id)
            .await
            .is_empty())
        .then_some(())
    })
    .await;

    // The five within the cap never sent a CONNECT: the handshake timeout closes them.
    for stream in &mut held[..5] {
        let (_, closed) = read_until_closed(stream, Duration::from_secs(20)).await;
        assert!(closed, "a connection without CONNECT stays open");
    }
    assert!(
        metric(
            &app,
            "iotbind_mqtt_connections_refused_total",
            &[("reason", "handshake_timeout")]
        )
        .await
            >= 5.0
    );
}

/// One CONNECT from `source`: the CONNACK's return code (0 accepted, 4 bad username or
/// password, 5 not authorized).
async fn connack_from(source: Ipv4Addr, broker: SocketAddr, id: &str, password: &str) -> u8 {
    let mut stream = connect_from(source, broker).await;
    stream
        .write_all(&raw_connect(id, id, password))
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut connack))
        .await
        .expect("a CONNACK in time")
        .expect("a CONNACK");
    assert_eq!(connack[0], 0x20, "a CONNACK: {connack:?}");
    connack[3]
}

#[tokio::test]
async fn an_address_that_spends_its_failed_mqtt_logins_is_refused_unchecked_for_a_while() {
    let app = spawn_app_with(ConfigArgs {
        mqtt_url: Some("embedded".to_owned()),
        mqtt_failed_connects_per_minute: Some("3".to_owned()),
        ..ConfigArgs::default()
    })
    .await;
    let broker: SocketAddr = format!("{}:{}", app.mqtt_host, app.mqtt_port)
        .parse()
        .unwrap();
    let device = app.provision(1).await.remove(0);
    let id = device.device_id.as_str();
    let guesser = Ipv4Addr::new(127, 0, 0, 41);
    let throttled_before = metric(
        &app,
        "iotbind_mqtt_logins_refused_total",
        &[("reason", "throttled")],
    )
    .await;

    // Its allowance of wrong passwords, and one more, are each checked and refused …
    for n in 0..4 {
        assert_eq!(
            connack_from(guesser, broker, id, &format!("guess {n}")).await,
            4
        );
    }
    // … after which even the right password is refused from that address, unchecked …
    assert_eq!(
        connack_from(guesser, broker, id, &device.mqtt_password).await,
        5
    );
    assert!(
        metric(
            &app,
            "iotbind_mqtt_logins_refused_total",
            &[("reason", "throttled")]
        )
        .await
            > throttled_before
    );
    // … and the device, from its own address, connects.
    assert_eq!(
        connack_from(
            Ipv4Addr::new(127, 0, 0, 42),
            broker,
            id,
            &device.mqtt_password
        )
        .await,
        0
    );
}
