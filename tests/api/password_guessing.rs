//! Guessing passwords from one address: the per-address limit on password attempts, and
//! the order in which a request's other faults are answered before it.

use std::net::Ipv4Addr;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error, client_from, login_from, spawn_app};

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
        // The order of checks: the bearer token, the shape, the ticket and the fields' rules all come
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
