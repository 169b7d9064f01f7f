//! The hooks an external broker calls (`/api/v1/mqtt/auth`, `/api/v1/mqtt/acl`), in the exact
//! request shapes of EMQX 5's `http` authenticator and authorizer and of rmqtt's
//! `rmqtt-auth-http` plugin; and rotating a device's MQTT password.

use iotbind::config::ConfigArgs;
use serde_json::{Value, json};

use crate::support::metric;
use crate::support::rotate_mqtt_password;
use crate::support::try_connect_raw;
use crate::support::{TestApp, assert_error, spawn_app, spawn_app_with};

const SECRET: &str = "a hook secret of at least thirty-two bytes";
const BACKEND_USER: &str = "iotbind-backend";
const BACKEND_PASSWORD: &str = "a backend broker password of 32+ bytes";

async fn hooks_app() -> TestApp {
    spawn_app_with(ConfigArgs {
        mqtt_url: Some("embedded".to_owned()),
        broker_hook_secret: Some(SECRET.to_owned()),
        mqtt_username: Some(BACKEND_USER.to_owned()),
        mqtt_password: Some(BACKEND_PASSWORD.to_owned()),
        ..ConfigArgs::default()
    })
    .await
}

/// What EMQX 5 sends with `body = {clientid = "${clientid}", …}` and the secret in `headers`.
async fn emqx(app: &TestApp, path: &str, secret: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("authorization", format!("Bearer {secret}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// What rmqtt-auth-http sends as a form post.
async fn rmqtt_form(app: &TestApp, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("authorization", format!("Bearer {SECRET}"))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn answer(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn auth(app: &TestApp, clientid: &str, username: &str, password: &str) -> Value {
    answer(
        emqx(
            app,
            "/api/v1/mqtt/auth",
            SECRET,
            json!({ "clientid": clientid, "username": username, "password": password }),
        )
        .await,
    )
    .await
}

async fn acl(app: &TestApp, username: &str, topic: &str, action: &str) -> Value {
    answer(
        emqx(
            app,
            "/api/v1/mqtt/acl",
            SECRET,
            json!({ "clientid": username, "username": username, "topic": topic, "action": action }),
        )
        .await,
    )
    .await
}

#[tokio::test]
async fn a_device_is_allowed_with_exactly_its_own_topics_and_a_deny_all_rule() {
    let app = hooks_app().await;
    let device = app.provision(1).await.remove(0);
    let id = &device.device_id;
    let allowed_before = metric(
        &app,
        "iotbind_broker_hook_requests_total",
        &[("endpoint", "auth"), ("result", "allow")],
    )
    .await;

    let body = auth(&app, id, id, &device.mqtt_password).await;
    assert_eq!(
        body,
        json!({
            "result": "allow",
            "is_superuser": false,
            "superuser": false,
            "acl": [
                {"permission": "allow", "action": "publish", "topic": format!("devices/{id}/telemetry")},
                {"permission": "allow", "action": "publish", "topic": format!("devices/{id}/status")},
                {"permission": "allow", "action": "publish", "topic": format!("devices/{id}/commands/result")},
                {"permission": "allow", "action": "subscribe", "topic": format!("devices/{id}/commands")},
                {"permission": "deny", "action": "all", "topic": "#"},
            ],
        })
    );
    assert!(
        metric(
            &app,
            "iotbind_broker_hook_requests_total",
            &[("endpoint", "auth"), ("result", "allow")]
        )
        .await
            > allowed_before
    );
}

#[tokio::test]
async fn wrong_passwords_other_client_ids_and_unknown_devices_are_denied() {
    let app = hooks_app().await;
    let device = app.provision(1).await.remove(0);
    let id = &device.device_id;
    let unknown = uuid::Uuid::new_v4().to_string();
    for (clientid, username, password) in [
        (id.as_str(), id.as_str(), "not its password"),
        ("someone-else", id.as_str(), device.mqtt_password.as_str()),
        (
            unknown.as_str(),
            unknown.as_str(),
            device.mqtt_password.as_str(),
        ),
        (BACKEND_USER, BACKEND_USER, "not the backend's password"),
        ("", "", ""),
    ] {
        assert_eq!(
            auth(&app, clientid, username, password).await,
            json!({ "result": "deny" }),
            "{clientid} / {username}"
        );
    }
    // A body without the fields is denied too, never ignored.
    let response = emqx(&app, "/api/v1/mqtt/auth", SECRET, json!({})).await;
    assert_eq!(answer(response).await, json!({ "result": "deny" }));
}

#[tokio::test]
async fn the_backends_own_login_is_a_superuser() {
    let app = hooks_app().await;
    assert_eq!(
        auth(&app, "iotbind-replica-1", BACKEND_USER, BACKEND_PASSWORD).await,
        json!({ "result": "allow", "is_superuser": true, "superuser": true })
    );
    assert_eq!(
        acl(&app, BACKEND_USER, "devices/+/commands", "publish").await["result"],
        "allow"
    );
}

#[tokio::test]
async fn every_topic_rule_of_a_device_is_decided_for_emqx_and_rmqtt_alike() {
    let app = hooks_app().await;
    let devices = app.provision(2).await;
    let (id, other) = (&devices[0].device_id, &devices[1].device_id);
    let cases = [
        (format!("devices/{id}/telemetry"), "publish", "allow"),
        (format!("devices/{id}/status"), "publish", "allow"),
        (format!("devices/{id}/commands/result"), "publish", "allow"),
        (format!("devices/{id}/commands"), "subscribe", "allow"),
        (format!("devices/{id}/commands"), "publish", "deny"),
        (format!("devices/{id}/telemetry"), "subscribe", "deny"),
        (format!("devices/{other}/telemetry"), "publish", "deny"),
        (format!("devices/{other}/commands"), "subscribe", "deny"),
        ("devices/+/commands".to_owned(), "subscribe", "deny"),
        ("#".to_owned(), "subscribe", "deny"),
        (format!("devices/{id}/#"), "subscribe", "deny"),
        ("$SYS/broker/uptime".to_owned(), "subscribe", "deny"),
    ];
    for (topic, action, expected) in &cases {
        assert_eq!(
            acl(&app, id, topic, action).await["result"],
            *expected,
            "EMQX: {action} {topic}"
        );
        let access = if *action == "publish" { "2" } else { "1" };
        let body = answer(
            rmqtt_form(
                &app,
                "/api/v1/mqtt/acl",
                &[
                    ("clientid", id),
                    ("username", id),
                    ("access", access),
                    ("topic", topic),
                ],
            )
            .await,
        )
        .await;
        assert_eq!(body["result"], *expected, "rmqtt: access {access} {topic}");
    }
    // A device checked under another client id, or an action nobody asked for, is denied.
    let response = emqx(
        &app,
        "/api/v1/mqtt/acl",
        SECRET,
        json!({ "clientid": "x", "username": id, "topic": format!("devices/{id}/telemetry"), "action": "publish" }),
    )
    .await;
    assert_eq!(answer(response).await["result"], "deny");
    let response = emqx(
        &app,
        "/api/v1/mqtt/acl",
        SECRET,
        json!({ "clientid": id, "username": id, "topic": format!("devices/{id}/telemetry"), "action": "retain" }),
    )
    .await;
    assert_eq!(answer(response).await["result"], "deny");
}

#[tokio::test]
async fn rmqtt_form_posts_authenticate_too() {
    let app = hooks_app().await;
    let device = app.provision(1).await.remove(0);
    let id = device.device_id.as_str();
    let body = answer(
        rmqtt_form(
            &app,
            "/api/v1/mqtt/auth",
            &[
                ("clientid", id),
                ("username", id),
                ("password", &device.mqtt_password),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(body["result"], "allow");
    let body = answer(
        rmqtt_form(
            &app,
            "/api/v1/mqtt/auth",
            &[("clientid", id), ("username", id), ("password", "wrong")],
        )
        .await,
    )
    .await;
    assert_eq!(body["result"], "deny");
}

#[tokio::test]
async fn without_the_secret_a_caller_gets_401_and_without_a_configured_secret_the_hooks_are_404() {
    let app = hooks_app().await;
    let body = json!({ "clientid": "a", "username": "a", "password": "a" });
    for secret in ["not the secret", "", &SECRET[..SECRET.len() - 1]] {
        let response = emqx(&app, "/api/v1/mqtt/auth", secret, body.clone()).await;
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer error="invalid_token""#
        );
        assert_error(response, 401, "invalid_token").await;
    }
    let response = app.post_json("/api/v1/mqtt/acl", &body).await;
    assert_error(response, 401, "invalid_token").await;

    let plain = spawn_app().await;
    for path in ["/api/v1/mqtt/auth", "/api/v1/mqtt/acl"] {
        let response = emqx(&plain, path, SECRET, body.clone()).await;
        assert_error(response, 404, "not_found").await;
        // The paths are in the spec all the same: a method they never take is 405.
        let url = format!("{}{path}", plain.address);
        let response = plain
            .client
            .request(reqwest::Method::TRACE, &url)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["allow"], "POST");
        assert_error(response, 405, "method_not_allowed").await;
    }
}

#[tokio::test]
async fn a_rotated_password_is_refused_at_once_and_the_new_one_accepted() {
    let app = hooks_app().await;
    let admin = app.admin_token().await;
    let device = app.provision(1).await.remove(0);
    let id = device.device_id.as_str();
    // The old password is cached by a first use.
    assert_eq!(
        auth(&app, id, id, &device.mqtt_password).await["result"],
        "allow"
    );

    let response = rotate_mqtt_password(&app, &admin, id).await;
    assert_eq!(response.status(), 200);
    let rotated: Value = response.json().await.unwrap();
    assert_eq!(rotated["device_id"], id);
    let new_password = rotated["mqtt_password"].as_str().unwrap();
    assert_ne!(new_password, device.mqtt_password);

    assert_eq!(
        auth(&app, id, id, &device.mqtt_password).await["result"],
        "deny"
    );
    assert_eq!(auth(&app, id, id, new_password).await["result"], "allow");
    // The embedded broker asks the same logins.
    assert!(
        try_connect_raw(&app.mqtt_host, app.mqtt_port, id, id, &device.mqtt_password)
            .await
            .is_err()
    );
    assert!(
        try_connect_raw(&app.mqtt_host, app.mqtt_port, id, id, new_password)
            .await
            .is_ok()
    );

    // Only admins rotate, and only devices that exist.
    let user = app.user_token().await;
    let response = rotate_mqtt_password(&app, &user, id).await;
    assert_error(response, 403, "forbidden").await;
    let response = rotate_mqtt_password(&app, &admin, &uuid::Uuid::new_v4().to_string()).await;
    assert_error(response, 404, "device_not_found").await;
    // A path id that is not a UUID names no device here either, as on every device path.
    let response = rotate_mqtt_password(&app, &admin, "null,null").await;
    assert_error(response, 404, "device_not_found").await;
}

#[tokio::test]
async fn a_hook_field_that_is_not_a_string_is_400_invalid_request_not_a_deny() {
    let app = hooks_app().await;
    let device = "0b6e7a52-3c1f-4d1e-9b7a-2f4a1c9d8e01";
    for (path, body) in [
        (
            "/api/v1/mqtt/auth",
            json!({"clientid": device, "username": device, "password": 12345678}),
        ),
        (
            "/api/v1/mqtt/acl",
            json!({
                "clientid": device,
                "username": device,
                "topic": format!("devices/{device}/telemetry"),
                "action": false,
            }),
        ),
    ] {
        let response = emqx(&app, path, SECRET, body).await;
        assert_error(response, 400, "invalid_request").await;
    }
}
