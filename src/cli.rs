//! The `iotbind` command line: `serve` (the default), `migrate`, `openapi`, `user create`,
//! `device provision`.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sea_orm::ActiveEnum;
use secrecy::SecretString;

use crate::config::{ConfigArgs, Settings};
use crate::entity::users::Role;
use crate::service::broker_logins::BrokerLogins;
use crate::service::devices;
use crate::service::passwords::PasswordHasher;
use crate::service::users::{self, NewUser, Password, Username};
use crate::startup::{self, Application, shutdown_signal};
use crate::{api, db, logging};

#[derive(Parser, Debug)]
#[command(
    name = "iotbind",
    version,
    about = "The backend of a WeChat mini program IoT platform: WeChat login, account binding, \
             and commands and telemetry between users and their devices over MQTT",
    long_about = "The backend of a WeChat mini program IoT platform: it trades a mini program's \
                  wx.login() code for the user's WeChat identity, links it to an account, issues \
                  the tokens, and relays each user's commands to their own devices over MQTT, \
                  storing the telemetry they send.\n\n\
                  With nothing set it runs everything embedded: a SQLite file, an MQTT broker in \
                  the same process, and a fake WeChat API for development. Every setting below \
                  is an IOTBIND_* environment variable or the flag of the same name (the flag \
                  wins)."
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the OpenAPI spec (JSON) to stdout.
    Openapi,
    /// Manage accounts.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
    /// Manage devices.
    Device {
        #[command(subcommand)]
        action: DeviceCommand,
    },
}

#[derive(Subcommand, Debug)]
enum DeviceCommand {
    /// Create devices; prints one JSON line per device with its one-time secrets.
    Provision {
        /// How many (1–1000).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        count: u32,
        /// Model name, e.g. `thermo-2`.
        #[arg(long)]
        model: Option<String>,
    },
    /// Give a device a new MQTT password; prints it once, as JSON. The old one stops working.
    RotatePassword {
        /// The device's id.
        device_id: uuid::Uuid,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create an account. The password is prompted for, or read from stdin when piped.
    Create {
        #[arg(long)]
        username: String,
        /// Discouraged: a password on the command line lands in shell history.
        #[arg(long)]
        password: Option<String>,
        #[arg(long)]
        nickname: Option<String>,
        /// Make the account an administrator.
        #[arg(long)]
        admin: bool,
    },
}

/// Parses the command line, runs the command, and reports a failure as one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        println!("{}", api::openapi_json());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::from_args(&cli.config) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("iotbind: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    logging::init(settings.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("iotbind: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("iotbind: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Device {
            action: DeviceCommand::Provision { count, model },
        } => {
            let model = model
                .as_deref()
                .map(devices::ModelName::parse)
                .transpose()?;
            let connection = db::connect(&settings.database).await?;
            db::migrate(&connection).await?;
            let broker = startup::dynamic_security(&settings).await?;
            let created = devices::provision(&connection, broker.as_ref(), count, model).await?;
            for device in created {
                println!("{}", serde_json::to_string(&device)?);
            }
            Ok(())
        }
        Command::Device {
            action: DeviceCommand::RotatePassword { device_id },
        } => {
            let connection = db::connect(&settings.database).await?;
            db::migrate(&connection).await?;
            let broker = startup::dynamic_security(&settings).await?;
            // This process's cache only; servers forget theirs within its time to live.
            let logins = BrokerLogins::new(connection.clone(), None);
            let rotated =
                devices::rotate_mqtt_password(&connection, broker.as_ref(), &logins, device_id)
                    .await?;
            println!("{}", serde_json::to_string(&rotated)?);
            Ok(())
        }
        Command::Serve => {
            let shutdown = shutdown_signal();
            let app = Application::build(settings).await?;
            app.run_until_stopped(shutdown).await
        }
        Command::Migrate => {
            let connection = db::connect(&settings.database).await?;
            db::migrate(&connection).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Openapi => {
            println!("{}", api::openapi_json());
            Ok(())
        }
        Command::User {
            action:
                UserCommand::Create {
                    username,
                    password,
                    nickname,
                    admin,
                },
        } => {
            let username = Username::parse(&username)?;
            let raw = match password {
                Some(password) => SecretString::from(password),
                None => read_password()?,
            };
            let password = Password::parse(raw, &username)?;
            let connection = db::connect(&settings.database).await?;
            db::migrate(&connection).await?;
            let password_hash =
                users::hash_password(&PasswordHasher::for_this_machine(), password).await?;
            let user = users::create_user(
                &connection,
                NewUser {
                    username,
                    password_hash,
                    nickname,
                    role: if admin { Role::Admin } else { Role::User },
                },
            )
            .await?;
            println!(
                "{}",
                serde_json::json!({
                    "id": user.id,
                    "username": user.username,
                    "nickname": user.nickname,
                    "role": user.role.to_value(),
                })
            );
            Ok(())
        }
    }
}

/// Prompts twice on a terminal; otherwise reads the first line of stdin.
fn read_password() -> anyhow::Result<SecretString> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        let again = rpassword::prompt_password("Again: ").context("cannot read the password")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        Ok(SecretString::from(first))
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        let password = line.trim_end_matches(['\r', '\n']).to_owned();
        anyhow::ensure!(!password.is_empty(), "no password on stdin");
        Ok(SecretString::from(password))
    }
}
