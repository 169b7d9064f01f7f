//! Requests most tests make: claiming devices, reading them, their telemetry and commands, and
//! the server's own counters.

use reqwest::Method;
use serde_json::{Value, json};

use super::app::{ProvisionedDevice, TestApp};
use super::device::TestDevice;

/// Tries to claim a device by serial and claim code for the user of `token`.
pub async fn try_claim(
    app: &TestApp,
    token: &str,
    serial: &str,
    claim_code: &str,
) -> reqwest::Response {
    app.authed_json(
        Method::POST,
        "/api/v1/devices/claim",
        token,
        &json!({ "serial": serial, "claim_code": claim_code }),
    )
    .await
}

/// Claims `device` for the user of `token`, which must succeed; returns the device.
pub async fn claim(app: &TestApp, token: &str, device: &ProvisionedDevice) -> Value {
    let response = try_claim(app, token, &device.serial, &device.claim_code).await;
    assert_eq!(
        response.status(),
        201,
        "the owner claims {}",
        device.device_id
    );
    response.json().await.expect("a device as JSON")
}

/// A new user who owns `count` newly provisioned devices: where most device tests start.
/// Returns the user's access token and the devices.
pub async fn owner_with_devices(app: &TestApp, count: usize) -> (String, Vec<ProvisionedDevice>) {
    let token = app.user_token().await;
    let devices = app.provision(count).await;
    for device in &devices {
        claim(app, &token, device).await;
    }
    (token, devices)
}

/// `GET /devices/{id}`, which must succeed.
pub async fn get_device(app: &TestApp, token: &str, device_id: &str) -> Value {
    let response = app
        .authed(Method::GET, &format!("/api/v1/devices/{device_id}"), token)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200, "the owner gets {device_id}");
    response.json().await.expect("a device as JSON")
}

/// The devices of `GET /devices`, which must succeed.
pub async fn list_devices(app: &TestApp, token: &str) -> Vec<Value> {
    let response = app
        .authed(Method::GET, "/api/v1/devices", token)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["items"].as_array().expect("items").clone()
}

/// An RFC 3339 time from a response, in unix milliseconds.
pub fn millis(time: &Value) -> i64 {
    let text = time
        .as_str()
        .unwrap_or_else(|| panic!("{time} is an RFC 3339 string"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|error| panic!("{text} is RFC 3339: {error}"))
        .timestamp_millis()
}

/// `POST /devices/{id}/commands` with `body`.
pub async fn send_command(
    app: &TestApp,
    token: &str,
    device_id: &str,
    body: Value,
) -> reqwest::Response {
    app.authed_json(
        Method::POST,
        &format!("/api/v1/devices/{device_id}/commands"),
        token,
        &body,
    )
    .await
}

/// `GET /devices/{id}/telemetry` with `query`, which must succeed; returns the rows and
/// `next_cursor`.
pub async fn telemetry_page(
    app: &TestApp,
    token: &str,
    device_id: &str,
    query: &[(&str, &str)],
) -> (Vec<Value>, Option<String>) {
    let response = app
        .authed(
            Method::GET,
            &format!("/api/v1/devices/{device_id}/telemetry"),
            token,
        )
        .query(query)
        .send()
        .await
        .expect("request sent");
    assert_eq!(
        response.status(),
        200,
        "history of {device_id} with {query:?}"
    );
    let body: Value = response.json().await.expect("JSON");
    let items = body["items"].as_array().expect("items").clone();
    let cursor = match &body["next_cursor"] {
        Value::Null => None,
        Value::String(cursor) => Some(cursor.clone()),
        other => panic!("next_cursor is a string or null, not {other}"),
    };
    (items, cursor)
}

/// Every row of a device's history within `query`, following `next_cursor` page by page
/// of `limit`, in the order served. Fails if a page is larger than asked or if a page
/// before the last is not full, since a client stops at the first short page.
pub async fn history_paged(
    app: &TestApp,
    token: &str,
    device_id: &str,
    query: &[(&str, &str)],
    limit: usize,
) -> Vec<Value> {
    let limit_text = limit.to_string();
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..=10_000 / limit + 2 {
        let mut page_query = query.to_vec();
        page_query.push(("limit", &limit_text));
        if let Some(cursor) = &cursor {
            page_query.push(("cursor", cursor));
        }
        let (items, next) = telemetry_page(app, token, device_id, &page_query).await;
        assert!(
            items.len() <= limit,
            "a page of {} rows for limit {limit}",
            items.len()
        );
        let full = items.len() == limit;
        rows.extend(items);
        match next {
            Some(next) => {
                assert!(full, "a short page before the last, at row {}", rows.len());
                cursor = Some(next);
            }
            None => return rows,
        }
    }
    panic!("next_cursor never ran out for {device_id}");
}

/// A device's whole history as its owner sees it, newest first.
pub async fn history(app: &TestApp, token: &str, device_id: &str) -> Vec<Value> {
    history_paged(app, token, device_id, &[], 1000).await
}

/// The sum of a Prometheus counter's series whose labels include `labels`, from `/metrics`
/// (0 when absent). Counters are process-wide and tests run in parallel, so tests compare
/// before and after, and ask for at least their own increments.
pub async fn metric(app: &TestApp, name: &str, labels: &[(&str, &str)]) -> f64 {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let mut total = 0.0;
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((series_name, rest)) => (series_name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let wanted = labels.iter().all(|(key, value)| {
            series_labels
                .split(',')
                .any(|pair| pair == format!("{key}=\"{value}\""))
        });
        if series_name == name && wanted {
            total += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    total
}

/// Sends a `wait=true` command that `device` answers `succeeded`, and checks the answer
/// comes back. A device's messages reach the backend in the order it sent them, so once
/// this returns, whatever the device published before has reached the backend too: the way
/// to give a stray result its chance to do harm before looking, without guessing a sleep.
pub async fn round_trip(app: &TestApp, token: &str, device: &TestDevice) -> Value {
    let (response, ()) = tokio::join!(
        send_command(
            app,
            token,
            &device.id,
            json!({ "name": "ping", "wait": true })
        ),
        async {
            let command = device.next_command().await;
            device.succeed(&command, json!({ "pong": true })).await;
        }
    );
    assert_eq!(response.status(), 200);
    let command: Value = response.json().await.unwrap();
    assert_eq!(command["status"], "succeeded", "{command}");
    assert_eq!(command["result"], json!({ "pong": true }));
    command
}

/// Asks for a new MQTT password for `device_id` with `token`: the rotation an admin makes.
pub async fn rotate_mqtt_password(
    app: &TestApp,
    token: &str,
    device_id: &str,
) -> reqwest::Response {
    app.authed(
        Method::POST,
        &format!("/api/v1/admin/devices/{device_id}/mqtt-password"),
        token,
    )
    .send()
    .await
    .expect("request sent")
}
