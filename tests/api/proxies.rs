//! The client address behind a reverse proxy, and the per-address brake on password attempts
//! that counts it: logins, binds, registers.

use std::net::Ipv4Addr;

use iotbind::config::ConfigArgs;
use serde_json::json;

use crate::support::{TestApp, assert_error, client_from, spawn_app, spawn_app_with};

const PASSWORD: &str = "a long passphrase";

/// A login through the proxy at 127.0.0.1 for the client it names in `header`.
async fn login_via_proxy(
    app: &TestApp,
    header: (&str, &str),
    username: &str,
    password: &str,
) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/auth/login"))
        .header(header.0, header.1)
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .unwrap()
}

/// Sends wrong passwords until the address is refused; panics if it never is.
async fn spend_allowance(app: &TestApp, header: (&str, &str)) {
    for _ in 0..40 {
        let response = login_via_proxy(app, header, "nobody_here", "a wrong guess").await;
        if response.status() == 429 {
            assert_error(response, 429, "too_many_attempts").await;
            return;
        }
        assert_error(response, 401, "invalid_credentials").await;
    }
    panic!("the address behind the proxy was never limited");
}

fn behind_proxy() -> ConfigArgs {
    ConfigArgs {
        trusted_proxies: Some("127.0.0.1".to_owned()),
        ..ConfigArgs::default()
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_it_forwards_has_its_own_allowance() {
    let app = spawn_app_with(behind_proxy()).await;
    app.create_user("bob", PASSWORD).await;

    // An attacker behind the proxy spends their address's allowance; a forged address to the
    // left of the one the proxy appended changes nothing.
    spend_allowance(&app, ("x-forwarded-for", "10.9.9.9, 198.51.100.66")).await;
    let response = login_via_proxy(
        &app,
        ("x-forwarded-for", "198.51.100.1, 198.51.100.66"),
        "bob",
        PASSWORD,
    )
    .await;
    assert_error(response, 429, "too_many_attempts").await;

    // Bob, another client of the same proxy, logs in; so does one named by RFC 7239.
    let response =
        login_via_proxy(&app, ("x-forwarded-for", "198.51.100.7"), "bob", PASSWORD).await;
    assert_eq!(response.status(), 200, "another client behind the proxy");
    let response = login_via_proxy(
        &app,
        ("forwarded", r#"for="[2001:db8:cafe::17]:4711";proto=https"#),
        "bob",
        PASSWORD,
    )
    .await;
    assert_eq!(response.status(), 200, "a client named by Forwarded");
}

#[tokio::test]
async fn forwarding_headers_from_a_peer_that_is_not_a_trusted_proxy_are_ignored() {
    let app = spawn_app_with(ConfigArgs {
        trusted_proxies: Some("10.0.0.0/8, 2001:db8::/32".to_owned()),
        ..ConfigArgs::default()
    })
    .await;
    app.create_user("bob", PASSWORD).await;
    // A new forged address on every request: they are all the peer's own.
    let mut refused = false;
    for n in 0..40 {
        let header = ("x-forwarded-for", format!("198.51.100.{n}"));
        let response =
            login_via_proxy(&app, (header.0, &header.1), "nobody_here", "a wrong guess").await;
        if response.status() == 429 {
            refused = true;
            break;
        }
    }
    assert!(refused, "rotating forged addresses escaped the limit");
}

#[tokio::test]
async fn with_the_address_limit_off_hundreds_of_attempts_meet_only_the_account_rules() {
    let app = spawn_app_with(ConfigArgs {
        password_attempts_per_minute: Some("0".to_owned()),
        ..ConfigArgs::default()
    })
    .await;
    app.create_user("dave", PASSWORD).await;
    for n in 0..200 {
        let response = app.login(&format!("sprayed{n}"), "a common password").await;
        assert_error(response, 401, "invalid_credentials").await;
    }
    // The account's own lockout still applies: five wrong, then refused from this address.
    for _ in 0..5 {
        assert_error(
            app.login("dave", "a wrong guess").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    assert_error(app.login("dave", PASSWORD).await, 429, "too_many_attempts").await;
}

#[tokio::test]
async fn registering_takes_an_attempt_and_a_taken_name_costs_no_password_hash() {
    let app = spawn_app().await;
    app.create_user("taken", PASSWORD).await;
    let (ticket, _) = app.bind_ticket().await;
    let prober = client_from(Ipv4Addr::new(127, 0, 0, 30));
    let hashes_before = app.state.logins.credentials.hasher().runs();

    let mut statuses = Vec::new();
    for _ in 0..25 {
        let response = prober
            .post(app.url("/api/v1/auth/wechat/register"))
            .json(&json!({ "bind_ticket": ticket, "username": "taken", "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert!(
        statuses.iter().all(|s| *s == 409 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(statuses[0], 409, "a taken name is username_taken");
    assert!(
        statuses.contains(&429),
        "probing names uses up the address's allowance: {statuses:?}"
    );
    assert_eq!(
        app.state.logins.credentials.hasher().runs(),
        hashes_before,
        "no password was hashed for a name that was taken"
    );

    // None of that spent the ticket; from another address it registers a free name.
    let response = client_from(Ipv4Addr::new(127, 0, 0, 31))
        .post(app.url("/api/v1/auth/wechat/register"))
        .json(&json!({ "bind_ticket": ticket, "username": "free_name", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn an_address_out_of_attempts_cannot_register_either() {
    let app = spawn_app().await;
    let client = client_from(Ipv4Addr::new(127, 0, 0, 32));
    for _ in 0..40 {
        let response = client
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({ "username": "nobody_here", "password": "a wrong guess" }))
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            break;
        }
    }
    let (ticket, _) = app.bind_ticket().await;
    let response = client
        .post(app.url("/api/v1/auth/wechat/register"))
        .json(&json!({ "bind_ticket": ticket, "username": "newcomer", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, 429, "too_many_attempts").await;
    // Another address registers with the same ticket: the refusal did not spend it.
    let response = client_from(Ipv4Addr::new(127, 0, 0, 33))
        .post(app.url("/api/v1/auth/wechat/register"))
        .json(&json!({ "bind_ticket": ticket, "username": "newcomer", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}
