//! Abuse: hostile input through every door, each answered cleanly and
//! without effect on other users.
//!
//! Covered elsewhere and not repeated: bodies of 64 KiB + 1 byte, with and without a length
//! (`errors::a_body_over_64_kib_with_a_length_is_413`,
//! `errors::a_streamed_body_over_64_kib_without_a_length_is_413`); 65 telemetry values and a
//! 20 KiB payload (`telemetry::bad_payloads_are_dropped_and_counted_and_the_next_good_one_is_stored`);
//! subscribing to wildcards (`broker::a_device_cannot_subscribe_to_wildcards_or_other_topics`).

use std::net::Ipv4Addr;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::device_client::{TestDevice, eventually, mqtt_packet, mqtt_string, raw_connect};
use crate::devices::owner_with_devices;
use crate::helpers::{
    TestApp, assert_error, client_from, login_from, spawn_app, spawn_app_with_embedded_broker,
};
use crate::telemetry::{history, metric};

// --- HTTP bodies ----------------------------------------------------------------------------

#[tokio::test]
async fn deeply_nested_json_is_400_invalid_request_and_the_server_carries_on() {
    let app = spawn_app().await;
    // 100,000 brackets are over the 64 KiB limit: refused for size before any parsing.
    let too_big = "[".repeat(100_000);
    let response = app
        .post_raw("/api/v1/auth/login", "application/json", too_big)
        .await;
    assert_error(response, 413, "payload_too_large").await;

    // Within the limit, nesting far past what a parser should recurse into: arrays, objects,
    // and a field that is itself deep. serde_json stops at depth 128 instead of overflowing.
    let arrays = "[".repeat(60_000);
    let objects = "{\"a\":".repeat(10_000);
    let deep_field = format!(
        "{{\"username\":{}1{},\"password\":\"x\"}}",
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    for body in [arrays, objects, deep_field] {
        let response = app
            .post_raw("/api/v1/auth/login", "application/json", body)
            .await;
        assert_error(response, 400, "invalid_request").await;
    }
    assert_eq!(app.get("/health/live").await.status(), 200);
    app.create_user("still_here", "a long enough password")
        .await;
    assert_eq!(
        app.login("still_here", "a long enough password")
            .await
            .status(),
        200
    );
}

// --- Usernames ------------------------------------------------------------------------------

#[tokio::test]
async fn confusable_and_nul_usernames_are_422_and_never_reach_another_account() {
    let app = spawn_app().await;
    let password = "kelvins own password";
    let (kelvin, _) = app.wechat_user("kelvin", password).await;
    app.create_user("alice", "alices own password").await;

    let hostile = [
        "\u{212A}elvin", // KELVIN SIGN, which Unicode lower-cases to 'k'
        "kelvin\u{0}",
        "kel\u{0}vin",
        "\u{0430}lice",  // CYRILLIC SMALL LETTER A
        "alice\u{200B}", // ZERO WIDTH SPACE
        "ａlice",        // FULLWIDTH LATIN SMALL LETTER A
    ];
    for name in hostile {
        let (ticket, _) = app.bind_ticket().await;
        let response = app.register(&ticket, name, "a long enough password").await;
        assert_error(response, 422, "invalid_username").await;
        // Signing in as the look-alike never gets into the real account.
        let response = app.login(name, password).await;
        assert_error(response, 401, "invalid_credentials").await;
        let response = app.bind(&ticket, name, password).await;
        assert_error(response, 401, "invalid_credentials").await;
    }
    // Kelvin's account kept its one WeChat identity, and the real names still work.
    let token = kelvin["access_token"].as_str().unwrap();
    let me = app.me(token).await;
    assert_eq!(me["username"], "kelvin");
    assert_eq!(me["wechat_bound"], true);
    assert_eq!(app.login("kelvin", password).await.status(), 200);
    assert_eq!(
        app.login("alice", "alices own password").await.status(),
        200
    );
}

// --- NUL characters -------------------------------------------------------------------------

/// One operation of the NUL test: a valid request, and for each text field spoiled with a NUL
/// the answer expected (a code of `""` is a success).
struct NulCase {
    method: Method,
    path: String,
    bearer: Option<String>,
    body: Value,
    fields: Vec<(&'static str, u16, &'static str)>,
}

/// The status and error code of `request`'s answer, after checking that it is not a 5xx and
/// that an error has the §3 shape.
async fn answer_of(what: &str, request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    assert!(status < 500, "{what} answered {status}");
    if status < 400 {
        return (status, String::new());
    }
    let body = crate::helpers::error_body(response).await;
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn a_nul_character_in_any_text_field_gets_the_fields_own_answer_never_a_500() {
    // PostgreSQL refuses a NUL in a text parameter outright: a value that reached a query
    // unchecked was a 500 there, while SQLite stored or matched it. Run on both.
    let app = spawn_app().await;
    let password = "the owners password";
    app.create_user("owner", password).await;
    let login: Value = app.login("owner", password).await.json().await.unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let admin = app.admin_token().await;
    let (device_owner, devices) = owner_with_devices(&app, 1).await;
    let device = &devices[0].device_id;
    let unclaimed = app.provision(1).await.remove(0);
    let (bind_ticket, _) = app.bind_ticket().await;
    let (register_ticket, _) = app.bind_ticket().await;

    let cases = [
        NulCase {
            method: Method::POST,
            path: "/api/v1/auth/wechat/login".into(),
            bearer: None,
            body: json!({ "code": "0a3Xb7ll2nQf" }),
            fields: vec![("code", 400, "invalid_code")],
        },
        NulCase {
            method: Method::POST,
            path: "/api/v1/auth/wechat/bind".into(),
            bearer: None,
            body: json!({ "bind_ticket": bind_ticket, "username": "owner", "password": password }),
            fields: vec![
                ("bind_ticket", 401, "invalid_bind_ticket"),
                ("username", 401, "invalid_credentials"),
                ("password", 401, "invalid_credentials"),
            ],
        },
        NulCase {
            method: Method::POST,
            path: "/api/v1/auth/wechat/register".into(),
            bearer: None,
            body: json!({
                "bind_ticket": register_ticket,
                "username": "newcomer",
                "password": "a long enough password",
                "nickname": "Newcomer",
            }),
            fields: vec![
                ("bind_ticket", 401, "invalid_bind_ticket"),
                ("username", 422, "invalid_username"),
                ("nickname", 422, "invalid_nickname"),
                // Passwords are only ever hashed: a NUL is one more character (last: this
                // one spends the ticket).
                ("password", 201, ""),
            ],
        },
        NulCase {
            method: Method::POST,
            path: "/api/v1/auth/login".into(),
            bearer: None,
            body: json!({ "username": "owner", "password": password }),
            fields: vec![
                ("username", 401, "invalid_credentials"),
                ("password", 401, "invalid_credentials"),
            ],
        },
        NulCase {
            method: Method::POST,
            path: "/api/v1/auth/refresh".into(),
            bearer: None,
            body: json!({ "refresh_token": refresh }),
            fields: vec![("refresh_token", 401, "invalid_refresh_token")],
        },
        NulCase {
            method: Method::POST,
            path: "/api/v1/auth/logout".into(),
            bearer: None,
            body: json!({ "refresh_token": refresh }),
            // An unknown token is logged out too (DESIGN §3.2).
            fields: vec![("refresh_token", 204, "")],
        },
        NulCase {
            method: Method::PATCH,
            path: "/api/v1/me".into(),
            bearer: Some(token.clone()),
            body: json!({ "nickname": "Owner", "avatar_url": "https://example.com/a.png" }),
            fields: vec![
                ("nickname", 422, "invalid_nickname"),
                ("avatar_url", 422, "invalid_avatar_url"),
            ],
        },
        NulCase {
            method: Method::POST,
            path: "/api/v1/me/wechat/unbind".into(),
            bearer: Some(token.clone()),
            body: json!({ "password": password }),
            fields: vec![("password", 401, "invalid_credentials")],
        },
        NulCase {
            method: Method::POST,
            path: "/api/v1/me/wechat/profile".into(),
            bearer: Some(token.clone()),
            body: json!({ "encrypted_data": "AAAAAAAAAAAAAAAAAAAAAA==", "iv": "r7BXXKkLb8qrSNn05n0qiA==" }),
            fields: vec![
                ("encrypted_data", 404, "not_bound"),
                ("iv", 404, "not_bound"),
            ],
        },
        NulCase {
            method: Method::PUT,
            path: "/api/v1/me/password".into(),
            bearer: Some(token.clone()),
            body: json!({ "current_password": password, "new_password": "a new long passphrase" }),
            fields: vec![
                ("current_password", 401, "invalid_credentials"),
                ("new_password", 204, ""),
            ],
        },
        NulCase {
            method: Method::POST,
            path: "/api/v1/devices/claim".into(),
            bearer: Some(device_owner.clone()),
            body: json!({
                "serial": unclaimed.serial,
                "claim_code": unclaimed.claim_code,
                "name": "Kitchen",
            }),
            fields: vec![
                ("serial", 404, "claim_failed"),
                ("claim_code", 404, "claim_failed"),
                ("name", 422, "invalid_device_name"),
            ],
        },
        NulCase {
            method: Method::PATCH,
            path: format!("/api/v1/devices/{device}"),
            bearer: Some(device_owner.clone()),
            body: json!({ "name": "Bedroom" }),
            fields: vec![("name", 422, "invalid_device_name")],
        },
        NulCase {
            method: Method::POST,
            path: format!("/api/v1/devices/{device}/commands"),
            bearer: Some(device_owner.clone()),
            body: json!({ "name": "set_relay", "params": {} }),
            fields: vec![("name", 422, "invalid_command_name")],
        },
        NulCase {
            method: Method::POST,
            path: "/api/v1/admin/devices".into(),
            bearer: Some(admin.clone()),
            body: json!({ "count": 1, "model": "thermo-2" }),
            fields: vec![("model", 422, "invalid_model")],
        },
    ];
    for case in cases {
        for (field, status, code) in case.fields {
            let mut spoiled = case.body.clone();
            let text = case.body[field].as_str().unwrap();
            // In the middle, where a check of only the start or the end would miss it.
            let (head, tail) = text.split_at(text.len() / 2);
            spoiled[field] = json!(format!("{head}\u{0}{tail}"));
            let mut request = app
                .client
                .request(case.method.clone(), app.url(&case.path))
                .json(&spoiled);
            if let Some(bearer) = &case.bearer {
                request = request.bearer_auth(bearer);
            }
            let what = format!("{} {} with a NUL in {field}", case.method, case.path);
            let answer = answer_of(&what, request).await;
            assert_eq!(answer, (status, code.to_owned()), "{what}");
        }
    }

    // Command params are free-form JSON, stored escaped: a NUL there is just data.
    let response = app
        .authed_json(
            Method::POST,
            &format!("/api/v1/devices/{device}/commands"),
            &device_owner,
            &json!({ "name": "set_relay", "params": { "k\u{0}": "v\u{0}" } }),
        )
        .await;
    assert_eq!(response.status(), 202, "params with a NUL are accepted");
    let command: Value = response.json().await.unwrap();
    assert_eq!(command["params"], json!({ "k\u{0}": "v\u{0}" }));

    // Path and query parameters.
    let unknown = uuid::Uuid::new_v4();
    for (method, path, status, code) in [
        (
            Method::GET,
            format!("/api/v1/devices/{device}%00"),
            404,
            "device_not_found",
        ),
        (
            Method::GET,
            "/api/v1/devices/%00".to_owned(),
            404,
            "device_not_found",
        ),
        (
            Method::DELETE,
            format!("/api/v1/devices/{device}%00"),
            404,
            "device_not_found",
        ),
        (
            Method::GET,
            format!("/api/v1/devices/{device}/telemetry?cursor=%00"),
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            format!("/api/v1/devices/{device}/telemetry?cursor=MTox%00"),
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            format!("/api/v1/devices/{device}/telemetry?from=%00"),
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            format!("/api/v1/devices/{device}/telemetry?to=2026-01-01T00:00:00Z%00"),
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            format!("/api/v1/devices/{device}/commands?limit=1%00"),
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            format!("/api/v1/devices/{device}/commands/%00"),
            404,
            "command_not_found",
        ),
        (
            Method::GET,
            format!("/api/v1/devices/{device}/commands/{unknown}%00"),
            404,
            "command_not_found",
        ),
    ] {
        let what = format!("{method} {path}");
        let request = app.authed(method, &path, &device_owner);
        let answer = answer_of(&what, request).await;
        assert_eq!(answer, (status, code.to_owned()), "{what}");
    }
    // The device is still there, and the server well.
    assert_eq!(
        app.authed(
            Method::GET,
            &format!("/api/v1/devices/{device}"),
            &device_owner
        )
        .send()
        .await
        .unwrap()
        .status(),
        200
    );
    assert_eq!(app.get("/health/ready").await.status(), 200);
}

#[tokio::test]
async fn a_unionid_with_a_nul_character_in_the_wechat_profile_is_left_out_never_a_500() {
    let app = spawn_app().await;
    let (session, openid) = app.wechat_user("nul_union", "a long enough password").await;
    let token = session["access_token"].as_str().unwrap();
    let sealed: Value = app
        .post_json(
            "/dev/wechat/encrypt",
            &json!({ "openid": openid, "data": { "nickName": "Nul", "unionId": "u\u{0}x" } }),
        )
        .await
        .json()
        .await
        .unwrap();
    let response = app
        .authed_json(Method::POST, "/api/v1/me/wechat/profile", token, &sealed)
        .await;
    assert_eq!(response.status(), 200);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["nickname"], "Nul");
}

// --- Password guessing ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_wrong_passwords_from_one_address_lock_the_account_for_that_address_only() {
    let app = spawn_app().await;
    app.create_user("victim", "the victims password").await;
    app.create_user("bystander", "the bystanders password")
        .await;
    let attacker = client_from(Ipv4Addr::new(127, 0, 0, 1));
    let elsewhere = client_from(Ipv4Addr::new(127, 0, 0, 2));

    let started = std::time::Instant::now();
    let answers: Vec<(u16, bool)> = futures_util::stream::iter(0..1000)
        .map(|n| {
            let (app, attacker) = (&app, &attacker);
            async move {
                let response = login_from(app, attacker, "victim", &format!("guess {n:04}")).await;
                let retry_after = response.headers().contains_key("retry-after");
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                let expected = match status {
                    401 => "invalid_credentials",
                    429 => "too_many_attempts",
                    other => panic!("a wrong password answered {other}: {body}"),
                };
                assert_eq!(body["error"], expected);
                (status, retry_after)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let wrong = answers.iter().filter(|(status, _)| *status == 401).count();
    let refused = answers.iter().filter(|(status, _)| *status == 429).count();
    assert_eq!(wrong + refused, 1000);
    // The address's allowance bounds how many guesses were even checked: a burst of 20, plus
    // one more for every 3 s the flood took (the allowance refills at 20 a minute).
    let allowance = 20 + started.elapsed().as_secs() as usize / 3 + 1;
    assert!(
        wrong <= allowance,
        "{wrong} guesses were checked; the address limit should stop them"
    );
    assert!(
        answers
            .iter()
            .all(|(status, retry_after)| *status != 429 || *retry_after),
        "every 429 carries Retry-After"
    );

    // The account is locked for the attacking address, right password or not …
    let response = login_from(&app, &attacker, "victim", "the victims password").await;
    assert_error(response, 429, "too_many_attempts").await;
    // … but its owner, from their own address, gets in.
    let response = login_from(&app, &elsewhere, "victim", "the victims password").await;
    assert_eq!(response.status(), 200, "the owner from another address");
    // The attacking address is limited for every account, not just the victim: of 25 quick
    // attempts on another account some are refused, whatever trickled back into the allowance
    // while the flood ran (a refusal is all this asserts, not when it comes).
    let mut limited = None;
    for _ in 0..25 {
        let response = login_from(&app, &attacker, "bystander", "the bystanders password").await;
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("the attacking address is limited for other accounts too");
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, 429, "too_many_attempts").await;
    // …while other users from other addresses are untouched.
    let response = login_from(&app, &elsewhere, "bystander", "the bystanders password").await;
    assert_eq!(response.status(), 200, "another user from another address");
}

/// One request of a test, sent as JSON with an optional bearer token.
struct Request<'a> {
    method: Method,
    path: &'a str,
    bearer: Option<&'a str>,
    body: Value,
}

impl Request<'_> {
    async fn send_from(&self, app: &TestApp, client: &reqwest::Client) -> reqwest::Response {
        let mut request = client
            .request(self.method.clone(), app.url(self.path))
            .json(&self.body);
        if let Some(token) = self.bearer {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }
}

/// Uses up the password attempts of `client`'s address (wrong passwords for a name no account
/// has) until a refusal says at least 2 s remain: then the next request, sent at once, still
/// finds the allowance empty, whatever trickles back at 20 a minute.
async fn exhaust_address(app: &TestApp, client: &reqwest::Client) {
    for _ in 0..200 {
        let response = login_from(app, client, "nobody_here", "a wrong password").await;
        if response.status() == 429 {
            let retry_after: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            if retry_after >= 2 {
                return;
            }
            tokio::time::sleep(Duration::from_secs(retry_after)).await;
        } else {
            assert_error(response, 401, "invalid_credentials").await;
        }
    }
    panic!("the address was never refused");
}

#[tokio::test]
async fn an_address_out_of_password_attempts_still_gets_ticket_shape_and_rule_errors_first() {
    let app = spawn_app().await;
    let password = "the owners password";
    app.create_user("owner", password).await;
    let (ticket, _) = app.bind_ticket().await;
    let login: Value = app.login("owner", password).await.json().await.unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let limited = client_from(Ipv4Addr::new(127, 0, 0, 9));
    let refused_first = [
        // DESIGN §3: the bearer token, the shape, the ticket and the fields' rules all come
        // before credentials, where the address limit belongs.
        (
            Request {
                method: Method::POST,
                path: "/api/v1/auth/wechat/bind",
                bearer: None,
                body: json!({ "bind_ticket": "no-such-ticket", "username": "owner", "password": password }),
            },
            401,
            "invalid_bind_ticket",
        ),
        (
            Request {
                method: Method::POST,
                path: "/api/v1/auth/wechat/bind",
                bearer: None,
                body: json!({ "bind_ticket": ticket, "username": "owner" }),
            },
            400,
            "invalid_request",
        ),
        (
            Request {
                method: Method::POST,
                path: "/api/v1/auth/login",
                bearer: None,
                body: json!({ "username": "owner", "password": 12345678 }),
            },
            400,
            "invalid_request",
        ),
        (
            Request {
                method: Method::POST,
                path: "/api/v1/auth/wechat/register",
                bearer: None,
                body: json!({ "bind_ticket": ticket, "username": "x", "password": "a long enough password" }),
            },
            422,
            "invalid_username",
        ),
        (
            Request {
                method: Method::PUT,
                path: "/api/v1/me/password",
                bearer: Some(token.as_str()),
                body: json!({ "current_password": password, "new_password": "short" }),
            },
            422,
            "weak_password",
        ),
        (
            Request {
                method: Method::PUT,
                path: "/api/v1/me/password",
                bearer: Some("not-a-token"),
                body: json!({ "current_password": password, "new_password": "a new long passphrase" }),
            },
            401,
            "invalid_token",
        ),
        (
            Request {
                method: Method::POST,
                path: "/api/v1/me/wechat/unbind",
                bearer: Some(token.as_str()),
                body: json!({}),
            },
            400,
            "invalid_request",
        ),
    ];
    for (request, status, code) in refused_first {
        exhaust_address(&app, &limited).await;
        let response = request.send_from(&app, &limited).await;
        assert!(response.headers().get("retry-after").is_none());
        assert_error(response, status, code).await;
    }

    // A request that would have its password checked is refused, right password or not.
    let password_checked = [
        Request {
            method: Method::POST,
            path: "/api/v1/auth/login",
            bearer: None,
            body: json!({ "username": "owner", "password": password }),
        },
        Request {
            method: Method::POST,
            path: "/api/v1/auth/wechat/bind",
            bearer: None,
            body: json!({ "bind_ticket": ticket, "username": "owner", "password": password }),
        },
        Request {
            method: Method::PUT,
            path: "/api/v1/me/password",
            bearer: Some(token.as_str()),
            body: json!({ "current_password": "a wrong password", "new_password": "a new long passphrase" }),
        },
        Request {
            method: Method::POST,
            path: "/api/v1/me/wechat/unbind",
            bearer: Some(token.as_str()),
            body: json!({ "password": password }),
        },
    ];
    for request in password_checked {
        exhaust_address(&app, &limited).await;
        let response = request.send_from(&app, &limited).await;
        assert!(
            response.headers().contains_key("retry-after"),
            "{}",
            request.path
        );
        assert_error(response, 429, "too_many_attempts").await;
    }

    // The refused bind did not wear the ticket out, and other addresses are not limited.
    let response = app.bind(&ticket, "owner", password).await;
    assert_eq!(response.status(), 200, "the ticket still binds");
}

#[tokio::test]
async fn requests_refused_before_their_password_is_checked_do_not_use_up_the_address_allowance() {
    let app = spawn_app().await;
    let password = "the owners password";
    app.create_user("owner", password).await;
    let token = app.user_token().await;
    let client = client_from(Ipv4Addr::new(127, 0, 0, 10));
    // Twice the default allowance of each: none of them gets as far as a password.
    for _ in 0..40 {
        let response = Request {
            method: Method::POST,
            path: "/api/v1/auth/wechat/bind",
            bearer: None,
            body: json!({ "bind_ticket": "no-such-ticket", "username": "owner", "password": "guess" }),
        }
        .send_from(&app, &client)
        .await;
        assert_error(response, 401, "invalid_bind_ticket").await;
        let response = Request {
            method: Method::PUT,
            path: "/api/v1/me/password",
            bearer: Some(&token),
            body: json!({ "current_password": "guess", "new_password": "12345678" }),
        }
        .send_from(&app, &client)
        .await;
        assert_error(response, 422, "weak_password").await;
    }
    let response = login_from(&app, &client, "owner", password).await;
    assert_eq!(
        response.status(),
        200,
        "the address has its whole allowance"
    );
}

// --- MQTT -----------------------------------------------------------------------------------

#[tokio::test]
async fn ten_thousand_telemetry_values_are_dropped_and_counted_and_the_next_message_is_stored() {
    let app = spawn_app().await;
    let (token, devices) = owner_with_devices(&app, 1).await;
    let device = TestDevice::connect(&app, &devices[0]).await;
    let dropped = async || {
        metric(
            &app,
            "iotbind_telemetry_dropped_total",
            &[("reason", "too_large")],
        )
        .await
            + metric(
                &app,
                "iotbind_telemetry_dropped_total",
                &[("reason", "too_many_values")],
            )
            .await
    };
    let before = dropped().await;
    let flood: serde_json::Map<String, Value> =
        (0..10_000).map(|i| (format!("v{i}"), json!(i))).collect();

    device.send_telemetry(&json!({ "values": flood })).await;
    device
        .send_telemetry(&json!({ "values": { "ok": true } }))
        .await;

    let rows = eventually("the good message stored", async || {
        let rows = history(&app, &token, &device.id).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 1, "only the good message is stored: {rows:?}");
    assert_eq!(rows[0]["values"], json!({ "ok": true }));
    eventually("the flood counted as dropped", async || {
        (dropped().await > before).then_some(())
    })
    .await;
    assert!(device.ended().is_none(), "the device stays connected");
}

/// What became of one raw connection after a publish on a hostile topic.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The broker closed the connection (allowed: the topic breaks the protocol).
    Closed,
    /// The broker kept the connection and answered a PINGREQ (allowed: publish dropped).
    Open,
}

/// Connects as `device` with a hand-made client (rumqttc refuses to send such topics), sends a
/// QoS 1 PUBLISH on `topic`, then a PINGREQ, and reports whether the connection survived.
async fn publish_raw(app: &TestApp, id: &str, password: &str, topic: &[u8]) -> Outcome {
    let mut stream = TcpStream::connect((app.mqtt_host.as_str(), app.mqtt_port))
        .await
        .unwrap();
    stream
        .write_all(&raw_connect(id, id, password))
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "the device connects");

    let mut publish = mqtt_string(topic);
    publish.extend_from_slice(&[0, 1]);
    publish.extend_from_slice(br#"{"values":{"evil":1}}"#);
    let sent = async {
        stream.write_all(&mqtt_packet(0x32, &publish)).await?;
        stream.write_all(&[0xC0, 0]).await
    };
    if sent.await.is_err() {
        return Outcome::Closed;
    }
    // Read until PINGRESP (open) or end of stream (closed); a PUBACK may come before.
    let mut seen = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Outcome::Closed,
            Ok(Ok(n)) => {
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(2).any(|w| w == [0xD0, 0]) {
                    return Outcome::Open;
                }
            }
            Err(_) => panic!("the broker neither answered nor closed after {topic:?}"),
        }
    }
}

#[tokio::test]
async fn topics_with_wildcards_or_control_characters_are_dropped_and_nothing_breaks() {
    let app = spawn_app_with_embedded_broker().await;
    let (token, devices) = owner_with_devices(&app, 2).await;
    let (device, other) = (&devices[0], &devices[1]);
    let id = device.device_id.as_str();
    let hostile: Vec<Vec<u8>> = vec![
        format!("devices/{id}/+").into_bytes(),
        format!("devices/{id}/#").into_bytes(),
        b"devices/+/telemetry".to_vec(),
        b"devices/#".to_vec(),
        format!("devices/{id}/telemetry\u{0}").into_bytes(),
        format!("devices/{id}/tele\nmetry").into_bytes(),
        format!("devices/{id}\u{7}/telemetry").into_bytes(),
        format!("devices/{id}/telemetry/\u{1b}[2J").into_bytes(),
        b"".to_vec(),
    ];
    let mut outcomes = Vec::new();
    for topic in &hostile {
        outcomes.push(publish_raw(&app, id, &device.mqtt_password, topic).await);
    }
    println!("hostile topics → {outcomes:?}");

    // Nothing of it was stored for anyone, and both devices work as before.
    let honest = TestDevice::connect(&app, device).await;
    let neighbour = TestDevice::connect(&app, other).await;
    honest
        .send_telemetry(&json!({ "values": { "good": 1 } }))
        .await;
    neighbour
        .send_telemetry(&json!({ "values": { "good": 2 } }))
        .await;
    for (device_id, value) in [(id, 1), (other.device_id.as_str(), 2)] {
        let rows = eventually("the good message stored", async || {
            let rows = history(&app, &token, device_id).await;
            (!rows.is_empty()).then_some(rows)
        })
        .await;
        assert_eq!(rows.len(), 1, "only the good message: {rows:?}");
        assert_eq!(rows[0]["values"], json!({ "good": value }));
    }
    assert!(honest.ended().is_none() && neighbour.ended().is_none());
}
