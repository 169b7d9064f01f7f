//! Case 6: the server's peak resident memory, idle and with thousands of connected devices.
//!
//! The server runs as the release binary in a process of its own so that `/proc/<pid>/status`
//! (VmHWM: the peak resident set; VmRSS: now) counts its memory alone, not the harness's or
//! the simulated devices'.

use std::time::{Duration, Instant};

use device_sim::{Broker, Fleet, FleetConfig, Qos};

use crate::Options;
use crate::report::{Row, Side, Table, megabytes};
use crate::server::ChildServer;

const MB: u64 = 1_000_000;

pub async fn connections_and_memory(options: &Options, table: &mut Table) {
    let binary = crate::server::release_binary(options.server_bin.clone());
    // The simulated fleet connects from one address, where real devices come from many: under
    // the ramp-up the per-address cap on open handshakes (64 by default) could refuse some.
    let handshakes = [(
        "IOTBIND_MQTT_HANDSHAKES_PER_ADDRESS",
        options.devices.to_string(),
    )];
    let (server, devices) =
        ChildServer::start(&binary, &options.database, options.devices, &handshakes).await;
    // Let start-up work (migrations, first allocations) settle before reading "idle".
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle_rss, idle_peak) = server.memory();
    table.push(Row {
        case: format!("6a server memory, idle ({})", options.database.label()),
        measured: Side::value("peak RSS (VmHWM)", megabytes(idle_peak)),
        baseline: Side::value("RSS now (VmRSS)", megabytes(idle_rss)),
        ratio: "–".to_owned(),
        goal: "< 50 MB".to_owned(),
        met: idle_peak < 50 * MB,
        notes: Vec::new(),
    });

    let mut config = FleetConfig::new(Broker {
        host: "127.0.0.1".to_owned(),
        port: server.mqtt_port,
    });
    config.rate = "6/min".parse().expect("a rate");
    config.qos = Qos::AtLeastOnce;
    config.ramp_up = options.ramp_up;
    // Under a connection storm a failed attempt should come back soon, not after 10 s.
    config.max_backoff = Duration::from_secs(2);
    let started = Instant::now();
    let fleet = Fleet::start(&config, &devices).expect("the fleet starts");
    let want = devices.len() as u64;
    let deadline = started + options.ramp_up + Duration::from_secs(90);
    while fleet.connected_once() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let connected_after = started.elapsed();
    // Every device sends a few messages at its rate of 1 per 10 s while all are connected.
    tokio::time::sleep(options.hold).await;
    let totals = fleet.totals();
    let (busy_rss, busy_peak) = server.memory();
    let per_device = busy_peak.saturating_sub(idle_peak) as f64 / totals.online.max(1) as f64;
    table.push(Row {
        case: format!("6b server memory, {} devices × 1 msg/10 s", devices.len()),
        measured: Side::value("peak RSS (VmHWM)", megabytes(busy_peak)),
        baseline: Side::value("idle peak RSS", megabytes(idle_peak)),
        ratio: format!("{:.1} KB/device", per_device / 1e3),
        goal: "< 500 MB".to_owned(),
        met: busy_peak < 500 * MB && totals.online == want,
        notes: vec![format!(
            "6b: {} of {want} devices online ({} connected once within {:.0} s, ramp-up {:?}); \
             {} telemetry messages sent over the {:?} hold; RSS at the end {}{}",
            totals.online,
            fleet.connected_once(),
            connected_after.as_secs_f64(),
            options.ramp_up,
            totals.telemetry_sent,
            options.hold,
            megabytes(busy_rss),
            fleet
                .last_error()
                .map(|e| format!("; last device error: {e}"))
                .unwrap_or_default(),
        )],
    });
    fleet.stop().await;
    server.stop();
}
