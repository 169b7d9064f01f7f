//! The server under test: in-process on its own tokio runtime (cases 1–5), or the release
//! binary as a child process (case 6), each with a fresh database, plus the set-up every case
//! needs (users, tokens, devices) done through the public API or the server's own services.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iotbind::config::{ConfigArgs, Settings};
use iotbind::startup::Application;
use iotbind::state::AppState;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The backend credential the harness gives the embedded broker, so that its raw MQTT
/// baseline client gets the same full access as the server's own connection.
pub const BACKEND_USERNAME: &str = "iotbind-bench-backend";

/// Where each case's database lives: a fresh SQLite file, or a fresh PostgreSQL database.
#[derive(Clone)]
pub enum DatabaseChoice {
    Sqlite,
    /// `postgres://user@host/db`: a new database is created next to `db` for every server.
    Postgres(String),
}

impl DatabaseChoice {
    pub fn label(&self) -> &'static str {
        match self {
            DatabaseChoice::Sqlite => "SQLite",
            DatabaseChoice::Postgres(_) => "PostgreSQL",
        }
    }

    /// A URL of a database nobody has used yet.
    pub async fn fresh_url(&self, dir: &Path) -> String {
        match self {
            DatabaseChoice::Sqlite => {
                format!("sqlite://{}?mode=rwc", dir.join("iotbind.db").display())
            }
            DatabaseChoice::Postgres(base) => {
                let name = format!("iotbind_bench_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(base.as_str())
                    .await
                    .expect("the --postgres URL answers");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create a benchmark database");
                admin.close().await.ok();
                let (server, _) = base
                    .rsplit_once('/')
                    .expect("the --postgres URL ends in /<database>");
                format!("{server}/{name}")
            }
        }
    }
}

/// The server running in this process, on a runtime of its own.
///
/// Its own runtime (two workers, as `#[tokio::main]` gives the binary on this machine) keeps
/// the load generator's tasks off the server's worker threads, as if they were two processes,
/// while the harness can still reach into its state (the password hasher, the database).
pub struct InProcess {
    pub base: String,
    pub state: AppState,
    pub mqtt_host: String,
    pub mqtt_port: u16,
    pub backend_password: String,
    pub database_url: String,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// Starts the server with the embedded defaults on port 0 and a fresh database.
    pub async fn start(database: &DatabaseChoice) -> InProcess {
        Self::start_with(database, |_| {}).await
    }

    /// Like [`InProcess::start`], with some settings changed by `adjust` (which may also
    /// name an existing database to share).
    pub async fn start_with(
        database: &DatabaseChoice,
        adjust: impl FnOnce(&mut ConfigArgs),
    ) -> InProcess {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let backend_password = iotbind::service::secrets::random_token();
        let mut args = ConfigArgs {
            http_addr: Some("127.0.0.1:0".to_owned()),
            mqtt_listen: Some("127.0.0.1:0".to_owned()),
            mqtt_username: Some(BACKEND_USERNAME.to_owned()),
            mqtt_password: Some(backend_password.clone()),
            ..ConfigArgs::default()
        };
        adjust(&mut args);
        let database_url = match args.database_url.clone() {
            Some(url) => url,
            None => database.fresh_url(dir.path()).await,
        };
        args.database_url = Some(database_url.clone());
        let settings = Settings::from_args(&args).expect("benchmark settings are valid");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name("server")
            .enable_all()
            .build()
            .expect("the server's runtime");
        let (shutdown, stopped) = oneshot::channel::<()>();
        let (app_info, server) = runtime
            .spawn(async move {
                let app = Application::build(settings).await.expect("the app builds");
                let info = (
                    format!("http://{}", app.http_addr()),
                    app.device_broker_addr(),
                    app.state().clone(),
                );
                let server = tokio::spawn(app.run_until_stopped(async {
                    let _ = stopped.await;
                }));
                (info, server)
            })
            .await
            .expect("the server starts");
        let (base, (mqtt_host, mqtt_port), state) = app_info;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !state.mqtt.is_ready() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        InProcess {
            base,
            state,
            mqtt_host,
            mqtt_port,
            backend_password,
            database_url,
            runtime: Some(runtime),
            shutdown: Some(shutdown),
            server: Some(server),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The server's own account of a run: the `/metrics` samples whose names start with one
    /// of `prefixes`, one per line, to put beside the harness's numbers.
    pub async fn metrics(&self, prefixes: &[&str]) -> Vec<String> {
        let Ok(response) = reqwest::get(self.url("/metrics")).await else {
            return vec!["(metrics unavailable)".to_owned()];
        };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| prefixes.iter().any(|prefix| line.starts_with(prefix)))
            .map(str::to_owned)
            .collect()
    }

    /// The runtime the server runs on, for work that must share its threads.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("the server's runtime runs until stop")
            .handle()
            .clone()
    }

    /// Stops the server, lets it flush, and drops its runtime off the async context.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
        }
        if let Some(runtime) = self.runtime.take() {
            // A runtime may not be dropped inside another one's async context.
            tokio::task::spawn_blocking(move || runtime.shutdown_timeout(Duration::from_secs(5)))
                .await
                .ok();
        }
    }
}

/// A plain HTTP client for set-up calls (not the measured ones).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
}

/// The one password every benchmark user has: long enough, not all digits.
pub const PASSWORD: &str = "bench password 1234";

/// `POST /dev/wechat/codes`: what `wx.login()` gives this WeChat user.
pub async fn mint_code(
    client: &reqwest::Client,
    base: &str,
    openid: Option<&str>,
) -> (String, String) {
    let body = match openid {
        Some(openid) => json!({ "openid": openid }),
        None => json!({}),
    };
    let answer: Value = client
        .post(format!("{base}/dev/wechat/codes"))
        .json(&body)
        .send()
        .await
        .expect("the fake WeChat API mints a code")
        .json()
        .await
        .expect("a minted code is JSON");
    (
        answer["code"].as_str().expect("a code").to_owned(),
        answer["openid"].as_str().expect("an openid").to_owned(),
    )
}

/// A new WeChat user registered through the mini program flow (login → bind_required →
/// register); returns its openid and access token.
pub async fn wechat_user(client: &reqwest::Client, base: &str, username: &str) -> (String, String) {
    let (code, openid) = mint_code(client, base, None).await;
    let login: Value = client
        .post(format!("{base}/api/v1/auth/wechat/login"))
        .json(&json!({ "code": code }))
        .send()
        .await
        .expect("WeChat login answers")
        .json()
        .await
        .expect("WeChat login is JSON");
    let ticket = login["bind_ticket"]
        .as_str()
        .expect("a new WeChat user gets a bind ticket");
    let response = client
        .post(format!("{base}/api/v1/auth/wechat/register"))
        .json(&json!({ "bind_ticket": ticket, "username": username, "password": PASSWORD }))
        .send()
        .await
        .expect("register answers");
    assert_eq!(response.status(), 201, "register succeeds");
    let body: Value = response.json().await.expect("register is JSON");
    let token = body["access_token"].as_str().expect("an access token");
    (openid, token.to_owned())
}

/// `POST /auth/login` with the benchmark password; returns the access token.
pub async fn login(client: &reqwest::Client, base: &str, username: &str) -> String {
    let response = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({ "username": username, "password": PASSWORD }))
        .send()
        .await
        .expect("login answers");
    assert_eq!(response.status(), 200, "login succeeds");
    let body: Value = response.json().await.expect("login is JSON");
    body["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

/// A password account made as `iotbind user create` makes it; its stored PHC string.
pub async fn password_user(state: &AppState, username: &str) -> String {
    use iotbind::service::users;
    let name = users::Username::parse(username).expect("a valid username");
    let password = users::Password::parse(PASSWORD.to_owned().into(), &name)
        .expect("the benchmark password is strong enough");
    let password_hash = users::hash_password(state.logins.credentials.hasher(), password)
        .await
        .expect("hashing works");
    users::create_user(
        &state.db,
        users::NewUser {
            username: name,
            password_hash: password_hash.clone(),
            nickname: None,
            role: iotbind::entity::users::Role::User,
        },
    )
    .await
    .expect("the user is created");
    password_hash
}

/// Provisions `count` devices directly through the service (as `iotbind device provision`
/// does), in the simulator's credential type.
pub async fn provision(
    db: &sea_orm::DatabaseConnection,
    count: usize,
) -> Vec<device_sim::DeviceCredentials> {
    let mut devices = Vec::with_capacity(count);
    while devices.len() < count {
        let batch =
            (count - devices.len()).min(iotbind::service::devices::MAX_PROVISION_COUNT as usize);
        let made = iotbind::service::devices::provision(db, None, batch as u32, None)
            .await
            .expect("devices are provisioned");
        devices.extend(made.into_iter().map(|d| device_sim::DeviceCredentials {
            device_id: d.device_id.to_string(),
            serial: Some(d.serial),
            claim_code: Some(d.claim_code),
            mqtt_username: d.mqtt_username,
            mqtt_password: d.mqtt_password,
        }));
    }
    devices
}

/// Claims `device` for the token's user through `POST /devices/claim`.
pub async fn claim(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    device: &device_sim::DeviceCredentials,
) {
    let response = client
        .post(format!("{base}/api/v1/devices/claim"))
        .bearer_auth(token)
        .json(&json!({
            "serial": device.serial.as_deref().expect("a provisioned serial"),
            "claim_code": device.claim_code.as_deref().expect("a provisioned claim code"),
        }))
        .send()
        .await
        .expect("claim answers");
    assert_eq!(response.status(), 201, "the claim succeeds");
}

/// Waits until `fleet` has every device online, or `limit` passes; returns how many are.
pub async fn wait_online(fleet: &device_sim::Fleet, want: u64, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    loop {
        let online = fleet.totals().online;
        if online >= want || Instant::now() >= deadline {
            return online;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The release server binary as a child process of its own (case 6), so that its resident
/// memory is its own and not the harness's.
pub struct ChildServer {
    child: Child,
    pub mqtt_port: u16,
    /// Its HTTP address (`http://127.0.0.1:port`).
    pub base: String,
    _dir: tempfile::TempDir,
}

/// The release `iotbind` binary next to this bench binary (`target/release/deps/iotbind-…`),
/// built first so that it has the current source.
pub fn release_binary(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(path) = explicit {
        return path;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("building the release server binary (cargo build --release --bin iotbind) …");
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "iotbind"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the release server binary builds");
    let exe = std::env::current_exe().expect("the bench binary's path");
    let release = exe
        .parent()
        .and_then(Path::parent)
        .expect("the bench binary lives in target/release/deps");
    release.join("iotbind")
}

impl ChildServer {
    /// Starts `binary serve` with env configuration (`env` on top), port 0, a fresh database
    /// holding `devices` (provisioned before the server starts), and waits for readiness.
    pub async fn start(
        binary: &Path,
        database: &DatabaseChoice,
        devices: usize,
        env: &[(&str, String)],
    ) -> (ChildServer, Vec<device_sim::DeviceCredentials>) {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let database_url = database.fresh_url(dir.path()).await;
        let credentials = {
            let db = iotbind::db::connect(
                &iotbind::config::DatabaseUrl::parse(&database_url).expect("a database URL"),
            )
            .await
            .expect("the database opens");
            iotbind::db::migrate(&db).await.expect("migrations apply");
            let credentials = provision(&db, devices).await;
            db.close().await.ok();
            credentials
        };
        let (child, base, mqtt_port) = Self::spawn(binary, &dir, &database_url, env).await;
        (
            ChildServer {
                child,
                mqtt_port: mqtt_port.unwrap_or_default(),
                base,
                _dir: dir,
            },
            credentials,
        )
    }

    /// Starts `binary serve` on `database_url` with `env` on top of port 0 for HTTP and the
    /// embedded broker, in `dir`, and waits for readiness; returns the process, its HTTP
    /// base and the embedded broker's port (`None` with an external broker).
    async fn spawn(
        binary: &Path,
        dir: &tempfile::TempDir,
        database_url: &str,
        env: &[(&str, String)],
    ) -> (Child, String, Option<u16>) {
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).expect("a log file");
        let external = env.iter().any(|(name, _)| *name == "IOTBIND_MQTT_URL");
        let child = Command::new(binary)
            .arg("serve")
            .env("IOTBIND_HTTP_ADDR", "127.0.0.1:0")
            .env("IOTBIND_MQTT_LISTEN", "127.0.0.1:0")
            .env("IOTBIND_DATABASE_URL", database_url)
            .env("IOTBIND_LOG_FORMAT", "json")
            // The two "listening on" lines say which ports port 0 became; per-connection lines
            // of the broker would only grow the log.
            .env("RUST_LOG", "warn,iotbind=info")
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file, twice"))
            .stderr(log)
            .spawn()
            .expect("the server binary starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (base, mqtt_port) = loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let http = port_after(&text, "listening on http://127.0.0.1:");
            let mqtt = port_after(&text, "listening on mqtt://127.0.0.1:");
            match (http, mqtt) {
                (Some(http), mqtt) if external || mqtt.is_some() => {
                    break (format!("http://127.0.0.1:{http}"), mqtt);
                }
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "the server did not start; its log:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let client = client();
        loop {
            let ready = client.get(format!("{base}/health/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "the server never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (child, base, mqtt_port)
    }

    /// A replica on an existing database with an external broker (`mqtt_url`).
    pub async fn replica(binary: &Path, database_url: &str, mqtt_url: &str) -> ChildServer {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let (child, base, _) = Self::spawn(
            binary,
            &dir,
            database_url,
            &[("IOTBIND_MQTT_URL", mqtt_url.to_owned())],
        )
        .await;
        ChildServer {
            child,
            mqtt_port: 0,
            base,
            _dir: dir,
        }
    }

    /// Telemetry rows this server has written, from its `/metrics`.
    pub async fn rows_written(&self) -> f64 {
        let Ok(response) = client().get(format!("{}/metrics", self.base)).send().await else {
            return 0.0;
        };
        response
            .text()
            .await
            .unwrap_or_default()
            .lines()
            .filter(|line| line.starts_with("iotbind_telemetry_rows_written_total"))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// `(VmRSS, VmHWM)` of the server process in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status of the server");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map_or(0, |kb| kb * 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Ends the server process (ours, by its id).
    pub fn stop(mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// The port number right after `marker` in the server's log.
fn port_after(text: &str, marker: &str) -> Option<u16> {
    let start = text.find(marker)? + marker.len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
