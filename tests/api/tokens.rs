//! Access tokens on `/me`, refresh rotation with its reuse grace, and logout.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error, spawn_app};

const PASSWORD: &str = "correct horse battery";

async fn logged_in(app: &TestApp, username: &str) -> Value {
    app.create_user(username, PASSWORD).await;
    app.login(username, PASSWORD).await.json().await.unwrap()
}

async fn refresh(app: &TestApp, token: &Value) -> reqwest::Response {
    app.post_json("/api/v1/auth/refresh", &json!({ "refresh_token": token }))
        .await
}

/// The signing key, as the server keeps it in development.
async fn signing_key(app: &TestApp) -> String {
    use sea_orm::EntityTrait;
    iotbind::entity::server_secrets::Entity::find_by_id("jwt_secret".to_owned())
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap()
        .value
}

fn sign(key: &str, alg: jsonwebtoken::Algorithm, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn the_access_token_authorizes_me() {
    let app = spawn_app().await;
    let session = logged_in(&app, "alice").await;
    let token = session["access_token"].as_str().unwrap();
    let response = app
        .authed(Method::GET, "/api/v1/me", token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me, session["user"]);
}

#[tokio::test]
async fn tokens_not_valid_yet_or_issued_in_the_future_are_refused() {
    let app = spawn_app().await;
    let session = logged_in(&app, "nora").await;
    let user_id = session["user"]["id"].as_str().unwrap().to_owned();
    let key = signing_key(&app).await;
    let now = chrono::Utc::now().timestamp();
    let token = |iat: i64, nbf: Option<i64>| {
        let mut claims = json!({"sub": user_id, "role": "user", "iat": iat, "exp": now + 3600,
                                "jti": uuid::Uuid::new_v4(), "iss": "iotbind", "aud": "iotbind-api"});
        if let Some(nbf) = nbf {
            claims["nbf"] = json!(nbf);
        }
        sign(&key, jsonwebtoken::Algorithm::HS256, claims)
    };
    let status = |token: String| {
        let app = &app;
        async move {
            app.authed(Method::GET, "/api/v1/me", &token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        status(token(now + 600, None)).await,
        401,
        "iat in the future"
    );
    assert_eq!(
        status(token(now, Some(now + 600))).await,
        401,
        "nbf in the future"
    );
    // Within the 5 s leeway, and with a past nbf, they pass.
    assert_eq!(status(token(now + 2, None)).await, 200);
    assert_eq!(status(token(now, Some(now - 60))).await, 200);
}

#[tokio::test]
async fn missing_malformed_or_forged_tokens_are_401_invalid_token() {
    let app = spawn_app().await;
    let session = logged_in(&app, "bob").await;
    let good = session["access_token"].as_str().unwrap().to_owned();
    let user_id = session["user"]["id"].as_str().unwrap().to_owned();
    let key = signing_key(&app).await;
    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64, aud: &str| {
        json!({"sub": user_id, "role": "user", "iat": now, "exp": exp, "jti": uuid::Uuid::new_v4(),
               "iss": "iotbind", "aud": aud})
    };
    let expired = sign(
        &key,
        jsonwebtoken::Algorithm::HS256,
        claims(now - 120, "iotbind-api"),
    );
    let wrong_aud = sign(
        &key,
        jsonwebtoken::Algorithm::HS256,
        claims(now + 600, "elsewhere"),
    );
    let hs384 = sign(
        &key,
        jsonwebtoken::Algorithm::HS384,
        claims(now + 600, "iotbind-api"),
    );
    let other_key = sign(
        "x".repeat(40).as_str(),
        jsonwebtoken::Algorithm::HS256,
        claims(now + 600, "iotbind-api"),
    );
    let none = {
        use base64::Engine;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(json!({"alg": "none"})),
            b64(claims(now + 600, "iotbind-api"))
        )
    };
    let mut tampered = good.clone();
    tampered.pop();
    tampered.push(if good.ends_with('A') { 'B' } else { 'A' });

    let no_header = app.client.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_error(no_header, 401, "invalid_token").await;
    let not_bearer = app
        .client
        .get(app.url("/api/v1/me"))
        .header("authorization", format!("Basic {good}"))
        .send()
        .await
        .unwrap();
    assert_error(not_bearer, 401, "invalid_token").await;
    for bad in [
        expired,
        wrong_aud,
        hs384,
        other_key,
        none,
        tampered,
        "garbage".to_owned(),
    ] {
        let response = app
            .authed(Method::GET, "/api/v1/me", &bad)
            .send()
            .await
            .unwrap();
        assert_error(response, 401, "invalid_token").await;
    }
    // The same claims, rightly signed, pass: the refusals above were for the reasons named.
    let fine = sign(
        &key,
        jsonwebtoken::Algorithm::HS256,
        claims(now + 600, "iotbind-api"),
    );
    let response = app
        .authed(Method::GET, "/api/v1/me", &fine)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_bearer_token_is_checked_before_the_body() {
    let app = spawn_app().await;
    let response = app
        .client
        .patch(app.url("/api/v1/me"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "invalid_token").await;
}

#[tokio::test]
async fn refresh_rotates_the_pair() {
    let app = spawn_app().await;
    let session = logged_in(&app, "carol").await;
    let response = refresh(&app, &session["refresh_token"]).await;
    assert_eq!(response.status(), 200);
    let next: Value = response.json().await.unwrap();
    assert_eq!(next["status"], "authenticated");
    assert_ne!(next["refresh_token"], session["refresh_token"]);
    assert_eq!(next["user"]["username"], "carol");
    let again = refresh(&app, &next["refresh_token"]).await;
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn a_spent_token_within_the_grace_is_409_and_revokes_nothing() {
    let app = spawn_app().await;
    let session = logged_in(&app, "dave").await;
    let next: Value = refresh(&app, &session["refresh_token"])
        .await
        .json()
        .await
        .unwrap();
    assert_error(
        refresh(&app, &session["refresh_token"]).await,
        409,
        "refresh_token_rotated",
    )
    .await;
    assert_eq!(refresh(&app, &next["refresh_token"]).await.status(), 200);
}

#[tokio::test]
async fn a_spent_token_after_the_grace_revokes_its_family() {
    let app = spawn_app().await;
    let session = logged_in(&app, "erin").await;
    let other_login: Value = app.login("erin", PASSWORD).await.json().await.unwrap();
    let next: Value = refresh(&app, &session["refresh_token"])
        .await
        .json()
        .await
        .unwrap();
    // Past the default 10 s grace.
    app.state.clock.advance(std::time::Duration::from_secs(11));
    assert_error(
        refresh(&app, &session["refresh_token"]).await,
        401,
        "refresh_token_reused",
    )
    .await;
    assert_error(
        refresh(&app, &next["refresh_token"]).await,
        401,
        "invalid_refresh_token",
    )
    .await;
    // Another login of the same account is another family, untouched.
    assert_eq!(
        refresh(&app, &other_login["refresh_token"]).await.status(),
        200
    );
}

#[tokio::test]
async fn unknown_refresh_tokens_are_401() {
    let app = spawn_app().await;
    assert_error(
        refresh(&app, &json!("not-a-token")).await,
        401,
        "invalid_refresh_token",
    )
    .await;
    let response = app.post_json("/api/v1/auth/refresh", &json!({})).await;
    assert_error(response, 400, "invalid_request").await;
}

#[tokio::test]
async fn an_expired_refresh_token_is_401() {
    let app = spawn_app().await;
    let session = logged_in(&app, "frank").await;
    // Past the default 30 days.
    app.state
        .clock
        .advance(std::time::Duration::from_secs(30 * 24 * 3600 + 1));
    assert_error(
        refresh(&app, &session["refresh_token"]).await,
        401,
        "invalid_refresh_token",
    )
    .await;
}

#[tokio::test]
async fn logout_revokes_the_login() {
    let app = spawn_app().await;
    let session = logged_in(&app, "grace").await;
    let next: Value = refresh(&app, &session["refresh_token"])
        .await
        .json()
        .await
        .unwrap();
    let response = app
        .post_json(
            "/api/v1/auth/logout",
            &json!({"refresh_token": next["refresh_token"]}),
        )
        .await;
    assert_eq!(response.status(), 204);
    assert_error(
        refresh(&app, &next["refresh_token"]).await,
        401,
        "invalid_refresh_token",
    )
    .await;
    let unknown = app
        .post_json("/api/v1/auth/logout", &json!({"refresh_token": "whatever"}))
        .await;
    assert_eq!(unknown.status(), 204);
}

#[tokio::test]
async fn tokens_survive_a_restart_in_development() {
    let app = spawn_app().await;
    let session = logged_in(&app, "heidi").await;
    let key_before = signing_key(&app).await;
    // A second server on the same database signs with the same generated key.
    let settings = iotbind::config::Settings::from_args(&iotbind::config::ConfigArgs {
        http_addr: Some("127.0.0.1:0".into()),
        mqtt_listen: Some("127.0.0.1:0".into()),
        database_url: Some(app.database_url.clone()),
        ..Default::default()
    })
    .unwrap();
    let second = iotbind::startup::Application::build(settings)
        .await
        .unwrap();
    let claims = second
        .state()
        .tokens
        .verify_access(session["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        claims.sub.to_string(),
        session["user"]["id"].as_str().unwrap()
    );
    assert_eq!(key_before.len(), 64);
}

#[tokio::test]
async fn expired_tickets_and_logins_are_purged() {
    use iotbind::entity::{bind_tickets, refresh_families, refresh_tokens};
    use sea_orm::{EntityTrait, PaginatorTrait};

    let app = spawn_app().await;
    logged_in(&app, "ivan").await;
    app.bind_ticket().await;
    // Past the refresh lifetime (30 days), and so past the ticket's (10 minutes) too.
    app.state
        .clock
        .advance(std::time::Duration::from_secs(30 * 24 * 3600 + 1));
    // A live login made after the others expired must survive the purge.
    app.login("ivan", PASSWORD).await;

    let db = &app.state.db;
    iotbind::startup::purge_expired(&app.state).await;
    assert_eq!(bind_tickets::Entity::find().count(db).await.unwrap(), 0);
    assert_eq!(refresh_families::Entity::find().count(db).await.unwrap(), 1);
    assert_eq!(refresh_tokens::Entity::find().count(db).await.unwrap(), 1);
}
