//! The `device-sim` command: runs a fleet of simulated devices from a devices file (or from
//! devices it provisions through the admin API), shows a live status, and ends with a summary
//! on `--duration`, Ctrl-C or SIGTERM.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use device_sim::report::Status;
use device_sim::{Broker, DelayRange, DeviceCredentials, Fleet, FleetConfig, Qos, Rate};

#[derive(Parser)]
#[command(
    name = "device-sim",
    version,
    about = "Simulated iotbind devices speaking the MQTT contract: telemetry, commands, status"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connects a fleet of devices and runs it until --duration has passed or Ctrl-C.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The MQTT broker: mqtt://host[:port].
    #[arg(
        long,
        env = "DEVICE_SIM_BROKER",
        default_value = "mqtt://127.0.0.1:1883"
    )]
    broker: Broker,
    /// The devices: JSON lines as `iotbind device provision` prints them.
    #[arg(
        long,
        required_unless_present = "provision",
        conflicts_with = "provision"
    )]
    devices: Option<PathBuf>,
    /// Provision this many new devices through the admin API instead of reading a file.
    #[arg(long, requires = "admin_token")]
    provision: Option<usize>,
    /// The iotbind HTTP API, for --provision.
    #[arg(long, env = "DEVICE_SIM_API", default_value = "http://127.0.0.1:8080")]
    api: String,
    /// An admin's access token, for --provision.
    #[arg(long, env = "DEVICE_SIM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The model of provisioned devices.
    #[arg(long, requires = "provision")]
    model: Option<String>,
    /// Also write the provisioned devices (with their secrets) to this file, readable by you
    /// only; without it nothing is written to disk.
    #[arg(long, requires = "provision")]
    save: Option<PathBuf>,
    /// Telemetry per device: 1/s, 10/s, 1/min, 2/h …
    #[arg(long, default_value = "1/s")]
    rate: Rate,
    /// How much each telemetry interval may vary, as a fraction of the period.
    #[arg(long, default_value_t = 0.1)]
    jitter: f64,
    /// QoS of telemetry: 0 or 1 (status and command results always use 1).
    #[arg(long, default_value = "1")]
    qos: Qos,
    /// Seed for values, schedules and which devices misbehave; random when left out, and
    /// printed in the summary so a run can be repeated.
    #[arg(long)]
    seed: Option<u64>,
    /// Fraction of devices that answer every known command `failed`.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Fraction of devices that never answer commands.
    #[arg(long, default_value_t = 0.0)]
    silent_rate: f64,
    /// How long each answer takes: a duration (500ms) or a range (100ms..6s).
    #[arg(long, default_value = "0s")]
    reply_delay: DelayRange,
    /// How long a device stays off after a `reboot` command.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    reboot_pause: Duration,
    /// Spread the devices' first connections over this long.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    ramp_up: Duration,
    /// Stop after this long (60s, 10m); without it, run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let devices = load_devices(&args).await?;
    let mut config = FleetConfig::new(args.broker.clone());
    config.rate = args.rate;
    config.jitter = args.jitter;
    config.qos = args.qos;
    config.seed = args.seed.unwrap_or_else(rand::random);
    config.fail_rate = args.fail_rate;
    config.silent_rate = args.silent_rate;
    config.reply_delay = args.reply_delay;
    config.reboot_pause = args.reboot_pause;
    config.ramp_up = args.ramp_up;
    config.validate()?;

    println!(
        "device-sim: {} devices → {} at {} each (QoS {}, seed {}); {}",
        devices.len(),
        config.broker,
        config.rate,
        match config.qos {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        },
        config.seed,
        match args.duration {
            Some(duration) => format!("for {}", humantime::format_duration(duration)),
            None => "Ctrl-C to stop".to_owned(),
        }
    );
    let fleet = Fleet::start(&config, &devices)?;
    let mut status = Status::new(std::io::stdout().is_terminal());
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let deadline = async {
        match args.duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let stop_signal = shutdown_signal();
    tokio::pin!(stop_signal);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = &mut stop_signal => break,
            _ = ticker.tick() => {
                let totals = fleet.totals();
                let note = (totals.online < totals.devices).then(|| fleet.last_error()).flatten();
                status.update(&totals, note.as_deref());
            }
        }
    }
    status.finish();
    println!("device-sim: stopping; every device says offline and disconnects");
    let last_error = fleet.last_error();
    let summary = fleet.stop().await;
    println!("{summary}");
    if summary.devices_connected_once == 0 && summary.totals.devices > 0 {
        anyhow::bail!(
            "no device could connect to {}: {}",
            config.broker,
            last_error.unwrap_or_else(|| "no answer".to_owned())
        );
    }
    Ok(())
}

/// The devices from --devices, or newly provisioned with --provision (and saved with --save).
async fn load_devices(args: &RunArgs) -> anyhow::Result<Vec<DeviceCredentials>> {
    if let Some(path) = &args.devices {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the devices file {}", path.display()))?;
        return device_sim::parse_jsonl(&text)
            .with_context(|| format!("in the devices file {}", path.display()));
    }
    let count = args.provision.unwrap_or(0);
    let token = args.admin_token.as_deref().unwrap_or_default();
    let devices = device_sim::provision(&args.api, token, count, args.model.as_deref())
        .await
        .context("cannot provision devices through the admin API")?;
    println!(
        "device-sim: provisioned {} devices through {}",
        devices.len(),
        args.api
    );
    if let Some(path) = &args.save {
        save_devices(path, &devices)?;
        println!("device-sim: saved them to {}", path.display());
    }
    Ok(devices)
}

/// Writes the credentials readable by the owner only: they hold MQTT passwords and claim codes.
fn save_devices(path: &Path, devices: &[DeviceCredentials]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(device_sim::to_jsonl(devices).as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Ctrl-C, or SIGTERM from a process manager.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
