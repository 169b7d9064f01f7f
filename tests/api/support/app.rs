//! `spawn_app()`: the real server on port 0 with a fresh database, and a client for it.
//!
//! The database is a new SQLite file in a temporary folder, or, when
//! `IOTBIND_TEST_DATABASE_URL` names a PostgreSQL server, a new database created on it for
//! this test alone, so tests never see each other's rows.
//!
//! The MQTT broker is the embedded one on port 0, or, when `IOTBIND_TEST_MQTT_URL` names an
//! external broker (`mqtt://127.0.0.1:1883`), that broker, with a share group of this test's
//! own so that parallel tests do not split each other's telemetry.

use std::sync::LazyLock;

use iotbind::config::{ConfigArgs, Settings};
use iotbind::startup::Application;
use iotbind::state::AppState;
use sea_orm::{ConnectionTrait, Database};
use tokio::sync::oneshot;

/// Set `TEST_LOG=1` to see the server's logs while tests run.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        iotbind::logging::init(iotbind::config::LogFormat::Human);
    }
});

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub database_url: String,
    /// Where devices connect: the embedded broker's real port, or the external broker.
    pub mqtt_host: String,
    pub mqtt_port: u16,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// Starts the server with development defaults, port 0 and a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(ConfigArgs::default()).await
}

/// Like [`spawn_app`], with some configuration changed.
pub async fn spawn_app_with(mut args: ConfigArgs) -> TestApp {
    LazyLock::force(&TRACING);
    let dir = tempfile::tempdir().expect("temporary folder");
    // A test may hand in a database to share it between two servers (two replicas).
    let database_url = match args.database_url.clone() {
        Some(url) => url,
        None => fresh_database_url(&dir).await,
    };
    args.http_addr
        .get_or_insert_with(|| "127.0.0.1:0".to_owned());
    args.mqtt_listen
        .get_or_insert_with(|| "127.0.0.1:0".to_owned());
    args.database_url = Some(database_url.clone());
    if args.mqtt_url.is_none() {
        args.mqtt_url = external_test_broker();
    }
    args.mqtt_share_group
        .get_or_insert_with(|| format!("test-{}", uuid::Uuid::new_v4().simple()));
    let settings = Settings::from_args(&args).expect("test settings are valid");

    let app = Application::build(settings).await.expect("the app builds");
    let address = format!("http://{}", app.http_addr());
    let (mqtt_host, mqtt_port) = app.device_broker_addr();
    let state = app.state().clone();
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    // The backend's MQTT connection comes up in the background; tests start once it is up
    // (or give up waiting and let a test about an unreachable broker see it down).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !state.mqtt.is_ready() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    TestApp {
        address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client"),
        state,
        database_url,
        mqtt_host,
        mqtt_port,
        shutdown: Some(shutdown),
        server: Some(server),
        _dir: dir,
    }
}

/// Starts the server with the embedded broker even when `IOTBIND_TEST_MQTT_URL` is set: for
/// tests of the broker's own authentication and topic rules.
pub async fn spawn_app_with_embedded_broker() -> TestApp {
    spawn_app_with(ConfigArgs {
        mqtt_url: Some("embedded".to_owned()),
        ..ConfigArgs::default()
    })
    .await
}

/// The external broker the device tests should use, if `IOTBIND_TEST_MQTT_URL` names one.
pub fn external_test_broker() -> Option<String> {
    std::env::var("IOTBIND_TEST_MQTT_URL")
        .ok()
        .filter(|url| !url.is_empty() && url != "embedded")
}

/// What provisioning returns for one device, once.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ProvisionedDevice {
    pub device_id: String,
    pub serial: String,
    pub claim_code: String,
    pub mqtt_username: String,
    pub mqtt_password: String,
}

/// A new SQLite file, or a new database on the PostgreSQL server of
/// `IOTBIND_TEST_DATABASE_URL`.
pub async fn fresh_database_url(dir: &tempfile::TempDir) -> String {
    match std::env::var("IOTBIND_TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            let name = format!("iotbind_test_{}", uuid::Uuid::new_v4().simple());
            let admin = Database::connect(base.as_str())
                .await
                .expect("IOTBIND_TEST_DATABASE_URL answers");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create a test database");
            admin.close().await.ok();
            let (server, _) = base
                .rsplit_once('/')
                .expect("IOTBIND_TEST_DATABASE_URL ends in /<database>");
            format!("{server}/{name}")
        }
        _ => format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("iotbind.db").display()
        ),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// A request with `Authorization: Bearer <token>`.
    pub fn authed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    /// `GET /api/v1/me` with `token`, which must succeed: the account as the user sees it.
    pub async fn me(&self, token: &str) -> serde_json::Value {
        let response = self
            .authed(reqwest::Method::GET, "/api/v1/me", token)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 200, "GET /me");
        response.json().await.expect("the account as JSON")
    }

    /// Sends `body` as JSON with a bearer token.
    pub async fn authed_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.authed(method, path, token)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// What `wx.login()` would give: a fresh code for `openid` (a new WeChat user if `None`).
    pub async fn mint_code(&self, openid: Option<&str>) -> (String, String) {
        let body = match openid {
            Some(openid) => serde_json::json!({ "openid": openid }),
            None => serde_json::json!({}),
        };
        self.mint_code_with(body).await
    }

    /// `POST /dev/wechat/codes` with `body`; returns `(code, openid)`.
    pub async fn mint_code_with(&self, body: serde_json::Value) -> (String, String) {
        let response = self.post_json("/dev/wechat/codes", &body).await;
        assert_eq!(response.status().as_u16(), 200, "the fake mints a code");
        let minted: serde_json::Value = response.json().await.expect("JSON");
        (
            minted["code"].as_str().expect("code").to_owned(),
            minted["openid"].as_str().expect("openid").to_owned(),
        )
    }

    /// Makes the fake WeChat API misbehave for the next `count` code exchanges.
    pub async fn wechat_faults(&self, faults: serde_json::Value) {
        let response = self.post_json("/dev/wechat/faults", &faults).await;
        assert_eq!(response.status(), 204, "faults accepted");
    }

    pub async fn wechat_login(&self, code: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/wechat/login",
            &serde_json::json!({ "code": code }),
        )
        .await
    }

    /// A bind ticket for a new WeChat user; returns the ticket and the openid.
    pub async fn bind_ticket(&self) -> (String, String) {
        let (code, openid) = self.mint_code(None).await;
        (self.ticket_for_code(&code).await, openid)
    }

    /// Logs in with `code`, expecting `bind_required`.
    pub async fn ticket_for_code(&self, code: &str) -> String {
        let body: serde_json::Value = self.wechat_login(code).await.json().await.unwrap();
        assert_eq!(body["status"], "bind_required", "{body}");
        body["bind_ticket"].as_str().unwrap().to_owned()
    }

    pub async fn register(
        &self,
        ticket: &str,
        username: &str,
        password: &str,
    ) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/wechat/register",
            &serde_json::json!({ "bind_ticket": ticket, "username": username, "password": password }),
        )
        .await
    }

    pub async fn bind(&self, ticket: &str, username: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/wechat/bind",
            &serde_json::json!({ "bind_ticket": ticket, "username": username, "password": password }),
        )
        .await
    }

    pub async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/login",
            &serde_json::json!({ "username": username, "password": password }),
        )
        .await
    }

    /// A new WeChat user registered as `username`; returns the `authenticated` body and openid.
    pub async fn wechat_user(&self, username: &str, password: &str) -> (serde_json::Value, String) {
        let (ticket, openid) = self.bind_ticket().await;
        let response = self.register(&ticket, username, password).await;
        assert_eq!(response.status(), 201);
        (response.json().await.unwrap(), openid)
    }

    /// An account without WeChat, made as `iotbind user create` makes it.
    pub async fn create_user(&self, username: &str, password: &str) {
        self.create_user_with_role(username, password, iotbind::entity::users::Role::User)
            .await;
    }

    async fn create_user_with_role(
        &self,
        username: &str,
        password: &str,
        role: iotbind::entity::users::Role,
    ) {
        use iotbind::service::users;
        let username = users::Username::parse(username).unwrap();
        let password = users::Password::parse(password.to_owned().into(), &username).unwrap();
        let password_hash = users::hash_password(self.state.logins.credentials.hasher(), password)
            .await
            .unwrap();
        users::create_user(
            &self.state.db,
            users::NewUser {
                username,
                password_hash,
                nickname: None,
                role,
            },
        )
        .await
        .unwrap();
    }

    /// An access token of a new user with the given role, made as `iotbind user create` makes
    /// it and logged in with its password.
    pub async fn token_for_new_user(&self, role: iotbind::entity::users::Role) -> String {
        let name = format!("u{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let password = "a long enough password";
        self.create_user_with_role(&name, password, role).await;
        let response = self.login(&name, password).await;
        assert_eq!(response.status(), 200, "the new user logs in");
        let body: serde_json::Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// An access token of a new admin.
    pub async fn admin_token(&self) -> String {
        self.token_for_new_user(iotbind::entity::users::Role::Admin)
            .await
    }

    /// An access token of a new ordinary user.
    pub async fn user_token(&self) -> String {
        self.token_for_new_user(iotbind::entity::users::Role::User)
            .await
    }

    /// Provisions `count` devices through `POST /api/v1/admin/devices`.
    pub async fn provision(&self, count: usize) -> Vec<ProvisionedDevice> {
        let admin = self.admin_token().await;
        let response = self
            .authed_json(
                reqwest::Method::POST,
                "/api/v1/admin/devices",
                &admin,
                &serde_json::json!({ "count": count }),
            )
            .await;
        assert_eq!(response.status(), 201, "provisioning succeeds");
        let body: serde_json::Value = response.json().await.unwrap();
        serde_json::from_value(body["items"].clone()).expect("provisioned devices")
    }

    /// Sends `body` as is, with the given content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Signals shutdown and waits for the server to finish its in-flight requests.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.server.take() {
            Some(server) => server.await.expect("server task finished"),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A client whose requests come from `source` (any 127.0.0.0/8 address works on Linux), so a
/// test can be several clients of the per-address limits.
pub fn client_from(source: std::net::Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::V4(source))
        .build()
        .expect("HTTP client")
}

/// `POST /api/v1/auth/login` through `client`.
pub async fn login_from(
    app: &TestApp,
    client: &reqwest::Client,
    username: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(app.url("/api/v1/auth/login"))
        .json(&serde_json::json!({ "username": username, "password": password }))
        .send()
        .await
        .expect("request sent")
}

/// Asserts the error shape `{"error", "message"}` and returns the parsed body.
pub async fn assert_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> serde_json::Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of {}",
        response.url()
    );
    let body = error_body(response).await;
    assert_eq!(body["error"], code, "error code in {body}");
    body
}

/// Checks that `response` carries the error JSON (`{"error", "message"}` and
/// nothing else, as `application/json`) and returns it, whatever its status.
pub async fn error_body(response: reqwest::Response) -> serde_json::Value {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "error answered as {content_type:?}"
    );
    let body: serde_json::Value = response.json().await.expect("error body is JSON");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "an error code in {body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a human message in {body}"
    );
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(2),
        "only error and message in {body}"
    );
    body
}
