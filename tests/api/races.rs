//! Uniqueness races end with exactly one winner, decided by the database's unique constraints.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::spawn_app;

const PASSWORD: &str = "correct horse battery";

async fn statuses_and_codes(responses: Vec<reqwest::Response>) -> Vec<(StatusCode, String)> {
    let mut out = Vec::new();
    for response in responses {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        out.push((
            status,
            body["error"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    out
}

#[tokio::test]
async fn twenty_registers_of_one_username_make_one_account() {
    let app = spawn_app().await;
    let mut tickets = Vec::new();
    for _ in 0..20 {
        tickets.push(app.bind_ticket().await.0);
    }
    let attempts = tickets
        .iter()
        .map(|t| app.register(t, "contested", PASSWORD));
    let results = statuses_and_codes(futures_util::future::join_all(attempts).await).await;
    let created = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{results:?}");
    for (status, code) in results.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_eq!(
            (*status, code.as_str()),
            (StatusCode::CONFLICT, "username_taken")
        );
    }
}

#[tokio::test]
async fn twenty_binds_of_one_openid_link_it_once() {
    let app = spawn_app().await;
    let (code, openid) = app.mint_code(None).await;
    let first = app.ticket_for_code(&code).await;
    let (code2, _) = app.mint_code(Some(&openid)).await;
    let second = app.ticket_for_code(&code2).await;
    for i in 0..20 {
        app.create_user(&format!("account{i}"), PASSWORD).await;
    }
    let names: Vec<String> = (0..20).map(|i| format!("account{i}")).collect();
    let attempts = names.iter().enumerate().map(|(i, name)| {
        let ticket = if i % 2 == 0 { &first } else { &second };
        app.bind(ticket, name, PASSWORD)
    });
    let results = statuses_and_codes(futures_util::future::join_all(attempts).await).await;
    let bound = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(bound, 1, "{results:?}");
    for (status, code) in results.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert!(
            matches!(
                (status.as_u16(), code.as_str()),
                (401, "invalid_bind_ticket") | (409, "wechat_already_bound")
            ),
            "{status} {code}"
        );
    }
}

#[tokio::test]
async fn twenty_refreshes_of_one_token_have_one_winner() {
    let app = spawn_app().await;
    app.create_user("racer", PASSWORD).await;
    let session: Value = app.login("racer", PASSWORD).await.json().await.unwrap();
    let body = json!({"refresh_token": session["refresh_token"]});
    let attempts = (0..20).map(|_| app.post_json("/api/v1/auth/refresh", &body));
    let responses = futures_util::future::join_all(attempts).await;
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for response in responses {
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        if status == StatusCode::OK {
            winners.push(body);
        } else {
            losers.push((status, body["error"].clone()));
        }
    }
    assert_eq!(winners.len(), 1, "{losers:?}");
    assert!(
        losers
            .iter()
            .all(|(s, e)| *s == StatusCode::CONFLICT && e == "refresh_token_rotated"),
        "{losers:?}"
    );
    let next = app
        .post_json(
            "/api/v1/auth/refresh",
            &json!({"refresh_token": winners[0]["refresh_token"]}),
        )
        .await;
    assert_eq!(next.status(), 200, "the winner's new pair still works");
}
