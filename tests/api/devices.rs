//! Provisioning, claiming and the device API: who may see and change which
//! device, and what a device looks like.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::history;
use crate::support::send_command;
use crate::support::{ProvisionedDevice, TestApp, assert_error, spawn_app};
use crate::support::{TestDevice, eventually};
use crate::support::{claim, get_device, list_devices, millis, owner_with_devices, try_claim};

async fn provision_as(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.authed_json(Method::POST, "/api/v1/admin/devices", token, body)
        .await
}

#[tokio::test]
async fn provisioning_returns_each_device_once_with_distinct_secrets() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;

    let response = provision_as(&app, &admin, &json!({ "count": 3, "model": "thermo-2" })).await;

    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let devices: Vec<ProvisionedDevice> = serde_json::from_value(body["items"].clone())
        .expect("every item has device_id, serial, claim_code, mqtt_username, mqtt_password");
    assert_eq!(devices.len(), 3);
    for device in &devices {
        assert!(
            uuid::Uuid::parse_str(&device.device_id).is_ok(),
            "{device:?}"
        );
        assert_eq!(device.mqtt_username, device.device_id);
        assert!(!device.serial.is_empty(), "{device:?}");
        assert!(
            device.claim_code.len() >= 8,
            "a guessable claim code: {device:?}"
        );
        assert!(
            device.mqtt_password.len() >= 16,
            "a guessable password: {device:?}"
        );
        assert_ne!(device.claim_code, device.mqtt_password);
    }
    let distinct = |field: fn(&ProvisionedDevice) -> &String| {
        devices.iter().map(field).collect::<HashSet<_>>().len()
    };
    assert_eq!(distinct(|d| &d.device_id), 3);
    assert_eq!(distinct(|d| &d.serial), 3);
    assert_eq!(distinct(|d| &d.claim_code), 3);
    assert_eq!(distinct(|d| &d.mqtt_password), 3);
}

#[tokio::test]
async fn the_claim_uri_for_the_label_claims_the_device_it_was_printed_for() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let user = app.user_token().await;
    let response = provision_as(&app, &admin, &json!({ "count": 2 })).await;
    let body: Value = response.json().await.unwrap();

    for item in body["items"].as_array().unwrap() {
        let uri = item["claim_uri"].as_str().expect("a claim_uri");
        assert_eq!(
            uri,
            format!(
                "iotbind:claim?serial={}&code={}",
                item["serial"].as_str().unwrap(),
                item["claim_code"].as_str().unwrap()
            )
        );
        // What the mini program's scanner does with it: split the query, claim with its parts.
        let query = uri.strip_prefix("iotbind:claim?").unwrap();
        let part = |name: &str| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
                .unwrap()
                .to_owned()
        };
        let claimed = app
            .authed_json(
                Method::POST,
                "/api/v1/devices/claim",
                &user,
                &json!({ "serial": part("serial"), "claim_code": part("code") }),
            )
            .await;
        assert_eq!(claimed.status(), 201);
        let device: Value = claimed.json().await.unwrap();
        assert_eq!(device["id"], item["device_id"]);
    }
}

#[tokio::test]
async fn only_an_admin_may_provision_devices() {
    let app = spawn_app().await;
    let user = app.user_token().await;

    let response = provision_as(&app, &user, &json!({ "count": 1 })).await;
    assert_error(response, 403, "forbidden").await;

    let response = app
        .post_json("/api/v1/admin/devices", &json!({ "count": 1 }))
        .await;
    assert_error(response, 401, "invalid_token").await;
}

#[tokio::test]
async fn provisioning_takes_a_count_from_1_to_1000() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;

    for body in [
        json!({ "count": 0 }),
        json!({ "count": 1001 }),
        json!({ "count": -1 }),
        json!({ "count": "three" }),
        json!({}),
    ] {
        let response = provision_as(&app, &admin, &body).await;
        assert_error(response, 400, "invalid_request").await;
    }

    let response = provision_as(&app, &admin, &json!({ "count": 1000 })).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1000));
}

#[tokio::test]
async fn a_claimed_device_is_described_with_every_field_and_no_secret() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let response = provision_as(&app, &admin, &json!({ "count": 1, "model": "thermo-2" })).await;
    let body: Value = response.json().await.unwrap();
    let device: ProvisionedDevice = serde_json::from_value(body["items"][0].clone()).unwrap();
    let user = app.user_token().await;

    let before = chrono::Utc::now().timestamp_millis();
    let response = app
        .authed_json(
            Method::POST,
            "/api/v1/devices/claim",
            &user,
            &json!({ "serial": device.serial, "claim_code": device.claim_code, "name": "Kitchen" }),
        )
        .await;
    let after = chrono::Utc::now().timestamp_millis();

    assert_eq!(response.status(), 201);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains(&device.claim_code),
        "the claim code leaks: {text}"
    );
    assert!(
        !text.contains(&device.mqtt_password),
        "the password leaks: {text}"
    );
    let claimed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(claimed["id"], device.device_id.as_str());
    assert_eq!(claimed["serial"], device.serial.as_str());
    assert_eq!(claimed["name"], "Kitchen");
    assert_eq!(claimed["model"], "thermo-2");
    assert_eq!(claimed["online"], false, "never connected: {claimed}");
    assert!(claimed["last_seen_at"].is_null(), "never seen: {claimed}");
    assert!(claimed["latest"].is_null(), "no telemetry yet: {claimed}");
    // Times in a response may be rounded to the millisecond in either direction.
    let claimed_at = millis(&claimed["claimed_at"]);
    assert!(
        (before - 1..=after + 1).contains(&claimed_at),
        "claimed_at {claimed_at} within [{before}, {after}]"
    );

    assert_eq!(get_device(&app, &user, &device.device_id).await, claimed);
}

#[tokio::test]
async fn a_wrong_serial_and_a_wrong_code_get_the_same_answer() {
    let app = spawn_app().await;
    let device = &app.provision(1).await[0];
    let user = app.user_token().await;

    let wrong_serial = try_claim(&app, &user, "no-such-serial", &device.claim_code).await;
    let wrong_serial = assert_error(wrong_serial, 404, "claim_failed").await;
    let wrong_code = try_claim(&app, &user, &device.serial, "not-the-code").await;
    let wrong_code = assert_error(wrong_code, 404, "claim_failed").await;

    assert_eq!(
        wrong_serial, wrong_code,
        "nothing tells a guesser which half was right"
    );
    claim(&app, &user, device).await;
}

#[tokio::test]
async fn a_claim_without_serial_or_code_is_invalid_request() {
    let app = spawn_app().await;
    let user = app.user_token().await;

    for body in [
        json!({ "serial": "s" }),
        json!({ "claim_code": "c" }),
        json!({ "serial": 1, "claim_code": "c" }),
    ] {
        let response = app
            .authed_json(Method::POST, "/api/v1/devices/claim", &user, &body)
            .await;
        assert_error(response, 400, "invalid_request").await;
    }
}

#[tokio::test]
async fn a_device_owned_by_someone_else_is_already_claimed() {
    let app = spawn_app().await;
    let (_, devices) = owner_with_devices(&app, 1).await;
    let device = &devices[0];
    let other = app.user_token().await;

    let response = try_claim(&app, &other, &device.serial, &device.claim_code).await;

    assert_error(response, 409, "already_claimed").await;
}

#[tokio::test]
async fn after_ten_failed_claims_in_an_hour_every_claim_is_429_with_retry_after() {
    let app = spawn_app().await;
    let device = &app.provision(1).await[0];
    let guesser = app.user_token().await;

    for attempt in 1..=10 {
        let response = try_claim(&app, &guesser, &device.serial, &format!("guess-{attempt}")).await;
        assert_error(response, 404, "claim_failed").await;
    }
    let response = try_claim(&app, &guesser, &device.serial, "guess-11").await;
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!(
        (1..=3600).contains(&retry_after),
        "retry within the hour, not {retry_after} s"
    );
    assert_error(response, 429, "too_many_attempts").await;

    let right = try_claim(&app, &guesser, &device.serial, &device.claim_code).await;
    assert_error(right, 429, "too_many_attempts").await;

    let someone_else = app.user_token().await;
    claim(&app, &someone_else, device).await;
}

#[tokio::test]
async fn a_user_lists_only_their_own_devices() {
    let app = spawn_app().await;
    let (alice, alices) = owner_with_devices(&app, 2).await;
    let (bob, bobs) = owner_with_devices(&app, 1).await;

    let ids = |items: Vec<Value>| -> HashSet<String> {
        items
            .iter()
            .map(|device| device["id"].as_str().expect("an id").to_owned())
            .collect()
    };
    let expected = |devices: &[ProvisionedDevice]| -> HashSet<String> {
        devices.iter().map(|d| d.device_id.clone()).collect()
    };
    assert_eq!(ids(list_devices(&app, &alice).await), expected(&alices));
    assert_eq!(ids(list_devices(&app, &bob).await), expected(&bobs));
    let fresh = app.user_token().await;
    assert!(list_devices(&app, &fresh).await.is_empty());
}

#[tokio::test]
async fn a_device_can_be_renamed_by_its_owner() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    let path = format!("/api/v1/devices/{}", devices[0].device_id);

    let response = app
        .authed_json(Method::PATCH, &path, &token, &json!({ "name": "Garage" }))
        .await;

    assert_eq!(response.status(), 200);
    let renamed: Value = response.json().await.unwrap();
    assert_eq!(renamed["name"], "Garage");
    assert_eq!(
        get_device(&app, &token, &devices[0].device_id).await["name"],
        "Garage"
    );
    let listed = list_devices(&app, &token).await;
    assert_eq!(listed[0]["name"], "Garage");

    let response = app
        .authed_json(Method::PATCH, &path, &token, &json!({ "name": 5 }))
        .await;
    assert_error(response, 400, "invalid_request").await;
}

#[tokio::test]
async fn a_device_name_is_at_most_64_characters_as_sent_even_when_white_space_would_be_trimmed() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    let path = format!("/api/v1/devices/{}", devices[0].device_id);
    for name in [
        format!("{} ", "n".repeat(64)),
        format!(" {}", "名".repeat(64)),
    ] {
        let response = app
            .authed_json(Method::PATCH, &path, &token, &json!({ "name": name }))
            .await;
        assert_error(response, 422, "invalid_device_name").await;
    }
    let response = app
        .authed_json(
            Method::PATCH,
            &path,
            &token,
            &json!({ "name": format!(" {} ", "n".repeat(62)) }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let renamed: Value = response.json().await.unwrap();
    assert_eq!(renamed["name"], "n".repeat(62));
}

#[tokio::test]
async fn a_device_clock_set_in_the_future_cannot_carry_a_reading_to_the_next_owner() {
    let app = spawn_app().await;
    let (first, devices) = owner_with_devices(&app, 1).await;
    let provisioned = &devices[0];
    let id = provisioned.device_id.as_str();
    let device = TestDevice::connect(&app, provisioned).await;
    let now = chrono::Utc::now().timestamp_millis();
    let tomorrow = now + 24 * 3600 * 1000;
    device
        .send_telemetry(&json!({ "ts": tomorrow, "values": { "owner": "first" } }))
        .await;
    device
        .send_telemetry(
            &json!({ "ts": now + 5_000, "values": { "owner": "first, a clock 5 s fast" } }),
        )
        .await;
    let rows = eventually("the first owner's readings", async || {
        let rows = history(&app, &first, id).await;
        (rows.len() == 2).then_some(rows)
    })
    .await;
    // A reading from a clock far ahead is stored under its arrival; a few seconds ahead stays.
    let stamps: Vec<i64> = rows.iter().map(|row| millis(&row["ts"])).collect();
    assert!(stamps.contains(&(now + 5_000)), "{rows:?}");
    assert!(
        stamps.iter().all(|ts| *ts < now + 60_000),
        "a far-future ts was kept: {rows:?}"
    );

    let response = app
        .authed(Method::DELETE, &format!("/api/v1/devices/{id}"), &first)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let second = app.user_token().await;
    let claimed = claim(&app, &second, provisioned).await;
    assert!(
        claimed["latest"].is_null(),
        "the last owner's reading shows: {claimed}"
    );
    assert!(history(&app, &second, id).await.is_empty());
}

#[tokio::test]
async fn an_unclaimed_device_can_be_claimed_by_someone_who_sees_none_of_the_old_data() {
    let app = spawn_app().await;
    let (first, devices) = owner_with_devices(&app, 1).await;
    let provisioned = &devices[0];
    let id = provisioned.device_id.as_str();
    let device = TestDevice::connect(&app, provisioned).await;
    device
        .send_telemetry(&json!({ "values": { "owner": "first" } }))
        .await;
    eventually("the first owner's telemetry", async || {
        (history(&app, &first, id).await.len() == 1).then_some(())
    })
    .await;
    let (response, ()) = tokio::join!(
        send_command(&app, &first, id, json!({ "name": "blink", "wait": true })),
        async {
            let command = device.next_command().await;
            device.succeed(&command, json!({})).await;
        }
    );
    assert_eq!(response.status(), 200);

    let response = app
        .authed(Method::DELETE, &format!("/api/v1/devices/{id}"), &first)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = app
        .authed(Method::GET, &format!("/api/v1/devices/{id}"), &first)
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "device_not_found").await;
    assert!(list_devices(&app, &first).await.is_empty());

    let second = app.user_token().await;
    let claimed = claim(&app, &second, provisioned).await;
    assert!(
        claimed["latest"].is_null(),
        "the old owner's latest shows: {claimed}"
    );
    assert!(history(&app, &second, id).await.is_empty());
    let response = app
        .authed(
            Method::GET,
            &format!("/api/v1/devices/{id}/commands"),
            &second,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let commands: Value = response.json().await.unwrap();
    assert_eq!(
        commands["items"],
        json!([]),
        "the old owner's commands show"
    );

    device
        .send_telemetry(&json!({ "values": { "owner": "second" } }))
        .await;
    let rows = eventually("the second owner's telemetry", async || {
        let rows = history(&app, &second, id).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["values"], json!({ "owner": "second" }));
}

#[tokio::test]
async fn someone_elses_device_is_device_not_found_for_every_operation() {
    let app = spawn_app().await;
    let (owner, devices) = owner_with_devices(&app, 1).await;
    let id = devices[0].device_id.as_str();
    let response = send_command(&app, &owner, id, json!({ "name": "blink" })).await;
    assert_eq!(response.status(), 202);
    let command: Value = response.json().await.unwrap();
    let command_id = command["id"].as_str().unwrap();
    let never_claimed = &app.provision(1).await[0].device_id;
    let stranger = app.user_token().await;

    for device_id in [
        id,
        never_claimed.as_str(),
        &uuid::Uuid::new_v4().to_string(),
    ] {
        let base = format!("/api/v1/devices/{device_id}");
        let requests = [
            app.authed(Method::GET, &base, &stranger),
            app.authed(Method::PATCH, &base, &stranger)
                .json(&json!({ "name": "mine now" })),
            app.authed(Method::DELETE, &base, &stranger),
            app.authed(Method::GET, &format!("{base}/telemetry"), &stranger),
            app.authed(Method::POST, &format!("{base}/commands"), &stranger)
                .json(&json!({ "name": "unlock" })),
            app.authed(Method::GET, &format!("{base}/commands"), &stranger),
            app.authed(
                Method::GET,
                &format!("{base}/commands/{command_id}"),
                &stranger,
            ),
        ];
        for request in requests {
            let response = request.send().await.expect("request sent");
            assert_error(response, 404, "device_not_found").await;
        }
    }

    let still = get_device(&app, &owner, id).await;
    assert!(!still["claimed_at"].is_null(), "still owned: {still}");
    assert!(
        still["name"] != "mine now",
        "renamed by a stranger: {still}"
    );
}

#[tokio::test]
async fn a_device_id_that_is_not_a_uuid_is_device_not_found() {
    let app = spawn_app().await;
    let token = app.user_token().await;

    for device_id in ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"] {
        let base = format!("/api/v1/devices/{device_id}");
        let requests = [
            app.authed(Method::GET, &base, &token),
            app.authed(Method::PATCH, &base, &token)
                .json(&json!({ "name": "x" })),
            app.authed(Method::DELETE, &base, &token),
            app.authed(Method::GET, &format!("{base}/telemetry"), &token),
            app.authed(Method::POST, &format!("{base}/commands"), &token)
                .json(&json!({ "name": "blink" })),
            app.authed(Method::GET, &format!("{base}/commands"), &token),
        ];
        for request in requests {
            let response = request.send().await.expect("request sent");
            assert_error(response, 404, "device_not_found").await;
        }
    }
}

#[tokio::test]
async fn device_endpoints_need_a_valid_bearer_token() {
    let app = spawn_app().await;
    let (_, devices) = owner_with_devices(&app, 1).await;
    let id = &devices[0].device_id;

    for token in [None, Some("not.a.jwt")] {
        let requests = [
            app.client.get(app.url("/api/v1/devices")),
            app.client
                .post(app.url("/api/v1/devices/claim"))
                .json(&json!({ "serial": devices[0].serial, "claim_code": devices[0].claim_code })),
            app.client.get(app.url(&format!("/api/v1/devices/{id}"))),
            app.client
                .get(app.url(&format!("/api/v1/devices/{id}/telemetry"))),
            app.client
                .post(app.url(&format!("/api/v1/devices/{id}/commands")))
                .json(&json!({ "name": "blink" })),
        ];
        for request in requests {
            let request = match token {
                Some(token) => request.bearer_auth(token),
                None => request,
            };
            let response = request.send().await.expect("request sent");
            assert_error(response, 401, "invalid_token").await;
        }
    }
}
