//! The lockout counts wrong passwords per account and client address, with an account-wide
//! backstop: someone else's failures do not lock the owner out from their own address, and
//! guessing from many addresses still ends.

use std::net::Ipv4Addr;

use crate::support::{TestApp, assert_error, client_from, login_from, spawn_app};

const PASSWORD: &str = "the owners passphrase";

fn address(last: u8) -> reqwest::Client {
    client_from(Ipv4Addr::new(127, 0, 0, last))
}

/// Five wrong passwords for `username` through `client`: four are 401, the fifth is still
/// 401 and locks the account for that address.
async fn five_wrong_from(app: &TestApp, client: &reqwest::Client, username: &str) {
    for n in 0..5 {
        let response = login_from(app, client, username, &format!("wrong guess {n}")).await;
        assert_error(response, 401, "invalid_credentials").await;
    }
}

#[tokio::test]
async fn someone_elses_wrong_passwords_lock_the_account_only_for_their_address() {
    let app = spawn_app().await;
    app.create_user("owner", PASSWORD).await;
    let stranger = address(2);
    let owner = address(3);

    five_wrong_from(&app, &stranger, "owner").await;

    // From the stranger's address every attempt is refused now, right password or not.
    let locked = login_from(&app, &stranger, "owner", PASSWORD).await;
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=900).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_error(locked, 429, "too_many_attempts").await;

    // The owner, from their own address, logs in and binds as usual.
    let response = login_from(&app, &owner, "owner", PASSWORD).await;
    assert_eq!(response.status(), 200, "the owner from their own address");
    let (ticket, _) = app.bind_ticket().await;
    let response = owner
        .post(app.url("/api/v1/auth/wechat/bind"))
        .json(&serde_json::json!({ "bind_ticket": ticket, "username": "owner", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "the owner binds from their own address"
    );
}

#[tokio::test]
async fn fifty_wrong_passwords_from_many_addresses_lock_the_account_for_every_address() {
    let app = spawn_app().await;
    app.create_user("target", PASSWORD).await;

    // Nine addresses, five failures each: each is locked out, the account is not.
    for last in 10..19 {
        five_wrong_from(&app, &address(last), "target").await;
    }
    let response = login_from(&app, &address(99), "target", PASSWORD).await;
    assert_eq!(
        response.status(),
        200,
        "45 failures do not lock the account"
    );

    // The owner's success does not forgive the others' failures: five more make fifty.
    five_wrong_from(&app, &address(19), "target").await;
    let response = login_from(&app, &address(98), "target", PASSWORD).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, 429, "too_many_attempts").await;
    let response = login_from(&app, &address(99), "target", PASSWORD).await;
    assert_error(response, 429, "too_many_attempts").await;
}

#[tokio::test]
async fn a_success_from_an_address_clears_only_that_addresses_count() {
    let app = spawn_app().await;
    app.create_user("carol", PASSWORD).await;
    let (first, second) = (address(20), address(21));
    for client in [&first, &second] {
        for _ in 0..4 {
            let response = login_from(&app, client, "carol", "a wrong guess").await;
            assert_error(response, 401, "invalid_credentials").await;
        }
    }

    let response = login_from(&app, &first, "carol", PASSWORD).await;
    assert_eq!(response.status(), 200);

    // The first address starts again from nothing: four more wrong passwords are still 401 …
    for _ in 0..4 {
        let response = login_from(&app, &first, "carol", "a wrong guess").await;
        assert_error(response, 401, "invalid_credentials").await;
    }
    assert_eq!(
        login_from(&app, &first, "carol", PASSWORD).await.status(),
        200
    );
    // … while the second address's fifth locks it.
    let response = login_from(&app, &second, "carol", "a wrong guess").await;
    assert_error(response, 401, "invalid_credentials").await;
    let response = login_from(&app, &second, "carol", PASSWORD).await;
    assert_error(response, 429, "too_many_attempts").await;
}

#[tokio::test]
async fn a_lock_ends_after_fifteen_minutes() {
    let app = spawn_app().await;
    app.create_user("patient", PASSWORD).await;
    let client = address(50);
    five_wrong_from(&app, &client, "patient").await;
    let response = login_from(&app, &client, "patient", PASSWORD).await;
    assert_error(response, 429, "too_many_attempts").await;

    app.state
        .clock
        .advance(std::time::Duration::from_secs(14 * 60));
    let response = login_from(&app, &client, "patient", PASSWORD).await;
    assert_error(response, 429, "too_many_attempts").await;
    app.state.clock.advance(std::time::Duration::from_secs(60));
    let response = login_from(&app, &client, "patient", PASSWORD).await;
    assert_eq!(response.status(), 200, "the lock is over");
}
