//! The `iotbind` binary as an operator runs it: configuration errors, commands, signals.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::fresh_database_url;
use crate::support::{create_user, iotbind};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_bad_value_fails_with_one_line_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let output = iotbind(&dir)
        .env("IOTBIND_ACCESS_TTL", "soon")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("IOTBIND_ACCESS_TTL"), "{err}");

    let output = iotbind(&dir)
        .args(["--http-addr", "nowhere"])
        .output()
        .unwrap();
    assert!(stderr(&output).contains("IOTBIND_HTTP_ADDR"));
}

#[test]
fn production_refuses_to_start_without_a_wechat_secret() {
    let dir = tempfile::tempdir().unwrap();
    let output = iotbind(&dir)
        .env("IOTBIND_ENV", "production")
        .env("IOTBIND_JWT_SECRET", "p".repeat(40))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("IOTBIND_WECHAT_SECRET"));
}

#[test]
fn production_refuses_to_start_without_a_jwt_secret() {
    let dir = tempfile::tempdir().unwrap();
    let output = iotbind(&dir)
        .env("IOTBIND_ENV", "production")
        .env("IOTBIND_WECHAT_APPID", "wx0123")
        .env("IOTBIND_WECHAT_SECRET", "secret")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("IOTBIND_JWT_SECRET"));
}

#[tokio::test]
async fn a_port_in_use_names_the_port_and_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let output = iotbind(&dir)
        .env("IOTBIND_DATABASE_URL", fresh_database_url(&dir).await)
        .env("IOTBIND_HTTP_ADDR", addr.to_string())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(last.contains(&addr.port().to_string()), "{err}");
    assert!(last.contains("IOTBIND_HTTP_ADDR"), "{err}");
}

#[tokio::test]
async fn a_taken_mqtt_port_names_the_port_and_both_ways_out() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let output = iotbind(&dir)
        .env("IOTBIND_DATABASE_URL", fresh_database_url(&dir).await)
        .env("IOTBIND_HTTP_ADDR", "127.0.0.1:0")
        .env("IOTBIND_MQTT_LISTEN", addr.to_string())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(last.contains(&addr.port().to_string()), "{err}");
    assert!(last.contains("IOTBIND_MQTT_LISTEN"), "{err}");
    assert!(last.contains("IOTBIND_MQTT_URL"), "{err}");
}

#[tokio::test]
async fn device_provision_prints_one_json_line_per_device_with_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(&dir).await;
    let output = iotbind(&dir)
        .env("IOTBIND_DATABASE_URL", &url)
        .args(["device", "provision", "--count", "3", "--model", "thermo-2"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let devices: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(devices.len(), 3);
    for device in &devices {
        for field in [
            "device_id",
            "serial",
            "claim_code",
            "mqtt_username",
            "mqtt_password",
        ] {
            assert!(
                device[field].as_str().is_some_and(|v| !v.is_empty()),
                "{field} in {device}"
            );
        }
        assert_eq!(device["mqtt_username"], device["device_id"]);
        assert_eq!(
            device["claim_uri"],
            format!(
                "iotbind:claim?serial={}&code={}",
                device["serial"].as_str().unwrap(),
                device["claim_code"].as_str().unwrap()
            )
        );
    }
    let mut passwords: Vec<_> = devices.iter().map(|d| d["mqtt_password"].clone()).collect();
    passwords.dedup();
    assert_eq!(passwords.len(), 3, "every device has its own password");

    // The secrets are stored only as hashes.
    let db = sea_orm::Database::connect(url.as_str()).await.unwrap();
    use sea_orm::EntityTrait;
    let stored = iotbind::entity::devices::Entity::find()
        .all(&db)
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);
    for row in stored {
        let printed = devices
            .iter()
            .find(|d| d["device_id"] == row.id.to_string())
            .expect("every stored device was printed");
        assert_ne!(
            row.mqtt_password_hash,
            printed["mqtt_password"].as_str().unwrap()
        );
        assert_ne!(row.claim_code_hash, printed["claim_code"].as_str().unwrap());
        assert_eq!(row.model.as_deref(), Some("thermo-2"));
    }
}

#[tokio::test]
async fn device_provision_refuses_a_count_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let output = iotbind(&dir)
        .env("IOTBIND_DATABASE_URL", fresh_database_url(&dir).await)
        .args(["device", "provision", "--count", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--count"), "{}", stderr(&output));
}

#[tokio::test]
async fn migrate_applies_the_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let output = iotbind(&dir)
        .env("IOTBIND_DATABASE_URL", fresh_database_url(&dir).await)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("migrations applied"));
}

#[tokio::test]
async fn user_create_reads_the_password_from_stdin_and_refuses_a_taken_name() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(&dir).await;

    let output = create_user(&dir, &url, "Operator", "a long passphrase");
    assert!(output.status.success(), "{}", stderr(&output));
    let user: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(user["username"], "operator");
    assert_eq!(user["role"], "admin");
    assert!(uuid::Uuid::parse_str(user["id"].as_str().unwrap()).is_ok());
    assert!(!String::from_utf8_lossy(&output.stdout).contains("a long passphrase"));

    let again = create_user(&dir, &url, "OPERATOR", "another passphrase");
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("taken"), "{}", stderr(&again));
}

#[tokio::test]
async fn user_create_refuses_a_weak_password() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(&dir).await;
    let output = create_user(&dir, &url, "someone", "12345678");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("weak password"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_openapi_command_prints_the_committed_spec() {
    let dir = tempfile::tempdir().unwrap();
    let output = iotbind(&dir).arg("openapi").output().unwrap();
    assert!(output.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(printed == committed, "openapi/openapi.json is stale");
}

#[tokio::test]
async fn sigterm_stops_the_server_with_exit_code_0() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = iotbind(&dir)
        .env("IOTBIND_DATABASE_URL", fresh_database_url(&dir).await)
        .env("IOTBIND_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("IOTBIND_MQTT_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let started = Instant::now();
    let live = format!("http://127.0.0.1:{port}/health/live");
    while reqwest::get(&live).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn help_says_what_iotbind_is_and_shows_each_default() {
    let dir = tempfile::tempdir().unwrap();
    let output = iotbind(&dir).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let first = help.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("The backend of a WeChat mini program IoT platform"),
        "{first}"
    );
    assert!(!help.contains("Settings::from_args"), "{help}");
    for default in [
        "[default: 127.0.0.1:8080]",
        "[default: sqlite://iotbind.db?mode=rwc]",
        "[default: embedded]",
        "[default: 127.0.0.1:1883]",
        "[default: development]",
        "[default: 15m]",
    ] {
        assert!(help.contains(default), "{default} missing from\n{help}");
    }
}

/// Starts the server with `env` and its log going to `log`, waits until it answers, makes one
/// request with `headers` and stops it.
async fn serve_one_request_logging_to(
    dir: &tempfile::TempDir,
    log: &std::path::Path,
    env: &[(&str, &str)],
    headers: &[(&str, &str)],
) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = iotbind(dir)
        .env("IOTBIND_DATABASE_URL", fresh_database_url(dir).await)
        .env("IOTBIND_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("IOTBIND_MQTT_LISTEN", "127.0.0.1:0")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let live = format!("http://127.0.0.1:{port}/health/live");
    while reqwest::get(&live).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut request = reqwest::Client::new().get(&live);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_log_written_to_a_file_has_no_colour_codes_and_durations_to_the_hundredth() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("iotbind.log");
    serve_one_request_logging_to(&dir, &log, &[], &[]).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("request served"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in\n{text}");
    let elapsed: Vec<&str> = text
        .split("elapsed_ms=")
        .skip(1)
        .map(|rest| rest.split_whitespace().next().unwrap_or_default())
        .collect();
    assert!(!elapsed.is_empty(), "{text}");
    for value in elapsed {
        let decimals = value.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 2, "elapsed_ms={value}");
    }
}

#[tokio::test]
async fn the_log_names_each_requests_client_and_the_start_states_proxies_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("iotbind.log");
    serve_one_request_logging_to(
        &dir,
        &log,
        &[("IOTBIND_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")],
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("trusted_proxies=127.0.0.1/32, 10.0.0.0/8"),
        "{text}"
    );
    assert!(
        text.contains("password_attempts_per_minute=20 per client address"),
        "{text}"
    );
    let served = text
        .lines()
        .filter(|line| line.contains("request served"))
        .collect::<Vec<_>>();
    assert!(
        served
            .iter()
            .any(|line| line.contains("client=198.51.100.7")),
        "{text}"
    );
}

#[test]
fn a_bad_trusted_proxy_or_attempt_limit_stops_the_server_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (variable, value) in [
        ("IOTBIND_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("IOTBIND_TRUSTED_PROXIES", "proxy.internal"),
        ("IOTBIND_PASSWORD_ATTEMPTS_PER_MINUTE", "-1"),
        ("IOTBIND_HTTP_IDLE_TIMEOUT", "0"),
        ("IOTBIND_MQTT_HANDSHAKES_PER_ADDRESS", "0"),
    ] {
        let output = iotbind(&dir).env(variable, value).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{variable}={value}");
        let err = stderr(&output);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(variable), "{err}");
    }
}

#[test]
fn production_refuses_a_short_backend_broker_password() {
    let dir = tempfile::tempdir().unwrap();
    let output = iotbind(&dir)
        .env("IOTBIND_ENV", "production")
        .env("IOTBIND_WECHAT_APPID", "wx0123")
        .env("IOTBIND_WECHAT_SECRET", "secret")
        .env("IOTBIND_JWT_SECRET", "j".repeat(48))
        .env("IOTBIND_MQTT_USERNAME", "iotbind-backend")
        .env("IOTBIND_MQTT_PASSWORD", "hunter2")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("IOTBIND_MQTT_PASSWORD"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the password itself is never shown"
    );
}

#[tokio::test]
async fn device_rotate_password_prints_a_new_password_and_the_old_one_stops_working() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(&dir).await;
    let output = iotbind(&dir)
        .env("IOTBIND_DATABASE_URL", &url)
        .args(["device", "provision"])
        .output()
        .unwrap();
    let device: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let id = device["device_id"].as_str().unwrap();

    let output = iotbind(&dir)
        .env("IOTBIND_DATABASE_URL", &url)
        .args(["device", "rotate-password", id])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let rotated: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rotated["device_id"], id);
    let new_password = rotated["mqtt_password"].as_str().unwrap();
    assert_ne!(new_password, device["mqtt_password"].as_str().unwrap());

    use sea_orm::EntityTrait;
    let db = sea_orm::Database::connect(url.as_str()).await.unwrap();
    let stored = iotbind::entity::devices::Entity::find_by_id(id.parse::<uuid::Uuid>().unwrap())
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.mqtt_password_hash,
        iotbind::service::secrets::digest(new_password)
    );

    let output = iotbind(&dir)
        .env("IOTBIND_DATABASE_URL", &url)
        .args([
            "device",
            "rotate-password",
            &uuid::Uuid::new_v4().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no such device"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_short_hook_secret_or_dynamic_security_without_mosquitto_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let output = iotbind(&dir)
        .env("IOTBIND_BROKER_HOOK_SECRET", "too short")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("IOTBIND_BROKER_HOOK_SECRET"));
    assert!(
        !stderr(&output).contains("too short"),
        "the secret is not shown"
    );
    let output = iotbind(&dir)
        .env("IOTBIND_MQTT_DYNSEC", "true")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("IOTBIND_MQTT_DYNSEC"));
}
