//! The iotbind benchmark harness: `cargo bench --bench iotbind [-- FLAGS]`.
//!
//! Every number is a ratio against a baseline measured in the same run on the same machine,
//! because absolute numbers drift on shared machines. The harness starts the server itself
//! (embedded broker, port 0, a fresh SQLite file or with `--postgres` a fresh PostgreSQL
//! database per case), warms up, runs each case for a fixed time and prints one Markdown
//! table: throughput, p50 and p99 of the case and of its baseline, the ratio, and the goal.
//!
//! The load comes from a closed loop in this process (tokio + reqwest, one connection per
//! worker, HDR histograms) rather than from oha or wrk: the same driver measures a case and
//! its baseline; WeChat logins need a fresh pre-minted code per request, which a fixed-request
//! tool cannot send; and the argon2 and MQTT baselines are not HTTP at all.
//!
//! Layout:
//! - `load`: the closed-loop driver and its statistics.
//! - `server`: the server in-process or as a child process, and the set-up calls.
//! - `http_cases`: cases 1–3 (authorized read, WeChat login, password work).
//! - `mqtt_cases`: cases 4–5 (command round trip, telemetry ingestion).
//! - `memory`: case 6 (peak RSS idle and with 10,000 devices).
//! - `broker_cases`: cases 7–8 (the broker auth hook, two replicas behind one Mosquitto).
//! - `report`: the table.

// Test code fails by panicking; the workspace's ban on unwrap and expect is for the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod broker_cases;
mod http_cases;
mod load;
mod memory;
mod mqtt_cases;
mod report;
mod server;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::server::DatabaseChoice;

/// What can be chosen with `--only`.
const CASES: [&str; 8] = [
    "read",
    "wechat",
    "password",
    "commands",
    "telemetry",
    "memory",
    "hook",
    "replicas",
];

#[derive(Parser)]
#[command(
    name = "iotbind-bench",
    about = "iotbind benchmarks: each case against a baseline measured in the same run"
)]
struct Cli {
    /// Measured time of each run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured time before each run.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Run only these cases (comma separated): read, wechat, password, commands,
    /// telemetry, memory, hook, replicas.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Leave these cases out (comma separated).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Use PostgreSQL: a fresh database is created on this server for every case.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// HTTP connections of cases 1, 2 and 4.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Connections sending password logins (case 3), and tasks verifying in its baseline.
    #[arg(long, default_value_t = 16)]
    login_connections: usize,
    /// Connections reading `/me` while logins run (case 3).
    #[arg(long, default_value_t = 8)]
    read_connections: usize,
    /// Devices answering commands (case 4).
    #[arg(long, default_value_t = 16)]
    command_devices: usize,
    /// Simulated devices sending telemetry (case 5).
    #[arg(long, default_value_t = 1_000)]
    telemetry_devices: usize,
    /// Telemetry rate of each of them (case 5); by default the raw insert rate measured just
    /// before, spread over the devices, so that they offer as much as the database can take.
    #[arg(long)]
    telemetry_rate: Option<device_sim::Rate>,
    /// Connected devices of the memory case (case 6).
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Time over which case 6's devices make their first connection.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    ramp_up: Duration,
    /// How long case 6 keeps every device connected before reading the memory.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// The server binary of case 6; built with `cargo build --release` when left out.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Passed by `cargo bench` to every bench target; nothing to do with it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The settings every case reads.
pub struct Options {
    pub duration: Duration,
    pub warmup: Duration,
    pub database: DatabaseChoice,
    pub connections: usize,
    pub login_connections: usize,
    pub read_connections: usize,
    pub command_devices: usize,
    pub telemetry_devices: usize,
    pub telemetry_rate: Option<device_sim::Rate>,
    pub devices: usize,
    pub ramp_up: Duration,
    pub hold: Duration,
    pub server_bin: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    for name in cli.only.iter().chain(&cli.skip) {
        if !CASES.contains(&name.as_str()) {
            eprintln!("unknown case {name:?}; the cases are {}", CASES.join(", "));
            std::process::exit(2);
        }
    }
    let selected: Vec<&str> = CASES
        .into_iter()
        .filter(|case| cli.only.is_empty() || cli.only.iter().any(|c| c == case))
        .filter(|case| !cli.skip.iter().any(|c| c == case))
        .collect();
    let options = Options {
        duration: cli.duration,
        warmup: cli.warmup,
        database: match cli.postgres {
            Some(url) => DatabaseChoice::Postgres(url),
            None => DatabaseChoice::Sqlite,
        },
        connections: cli.connections,
        login_connections: cli.login_connections,
        read_connections: cli.read_connections,
        command_devices: cli.command_devices,
        telemetry_devices: cli.telemetry_devices,
        telemetry_rate: cli.telemetry_rate,
        devices: cli.devices,
        ramp_up: cli.ramp_up,
        hold: cli.hold,
        server_bin: cli.server_bin,
    };

    // The load generator's runtime; the in-process server gets a runtime of its own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("load")
        .enable_all()
        .build()
        .expect("the harness's runtime");
    let table = runtime.block_on(async {
        let mut table = report::Table::default();
        for case in &selected {
            eprintln!("== case {case} ==");
            match *case {
                "read" => http_cases::authorized_read(&options, &mut table).await,
                "wechat" => http_cases::wechat_login(&options, &mut table).await,
                "password" => http_cases::password_work(&options, &mut table).await,
                "commands" => mqtt_cases::command_round_trip(&options, &mut table).await,
                "telemetry" => mqtt_cases::telemetry_ingestion(&options, &mut table).await,
                "memory" => memory::connections_and_memory(&options, &mut table).await,
                "hook" => broker_cases::broker_hook(&options, &mut table).await,
                "replicas" => broker_cases::replicas(&options, &mut table).await,
                _ => unreachable!("case names are checked above"),
            }
        }
        table
    });

    println!("\n{}", machine());
    println!(
        "database: {}; measured {:?} per run after {:?} of warm-up\n",
        options.database.label(),
        options.duration,
        options.warmup
    );
    println!("{}", table.render());
}

/// The machine, as `nproc`, `/proc/cpuinfo` and `/proc/meminfo` describe it.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("machine: {cores} cores ({model}), {memory_gib:.1} GiB memory")
}
