//! Sessions end when they should: unbinding signs out, a deleted account's tokens stop
//! working, admin rights follow the database, and every 401 says how to authenticate.

use reqwest::Method;
use sea_orm::EntityTrait;
use serde_json::{Value, json};

use crate::support::claim;
use crate::support::{TestApp, assert_error, spawn_app};

const PASSWORD: &str = "a long passphrase";

fn user_id(session: &Value) -> uuid::Uuid {
    session["user"]["id"].as_str().unwrap().parse().unwrap()
}

async fn delete_account(app: &TestApp, id: uuid::Uuid) {
    iotbind::entity::users::Entity::delete_by_id(id)
        .exec(&app.state.db)
        .await
        .unwrap();
}

#[tokio::test]
async fn unbinding_wechat_signs_out_every_session_of_the_account() {
    let app = spawn_app().await;
    let (session, _) = app.wechat_user("erin", PASSWORD).await;
    let other_login: Value = app.login("erin", PASSWORD).await.json().await.unwrap();
    let token = session["access_token"].as_str().unwrap();

    let response = app
        .authed_json(
            Method::POST,
            "/api/v1/me/wechat/unbind",
            token,
            &json!({ "password": PASSWORD }),
        )
        .await;
    assert_eq!(response.status(), 204);

    for refresh in [&session["refresh_token"], &other_login["refresh_token"]] {
        let response = app
            .post_json("/api/v1/auth/refresh", &json!({ "refresh_token": refresh }))
            .await;
        assert_error(response, 401, "invalid_refresh_token").await;
    }
}

#[tokio::test]
async fn a_token_of_an_account_that_no_longer_exists_is_401_invalid_token() {
    let app = spawn_app().await;
    let (session, _) = app.wechat_user("gone", PASSWORD).await;
    let token = session["access_token"].as_str().unwrap().to_owned();
    let device = app.provision(1).await.remove(0);
    delete_account(&app, user_id(&session)).await;

    let response = app
        .authed(Method::GET, "/api/v1/devices", &token)
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "invalid_token").await;
    let response = app
        .authed_json(
            Method::POST,
            "/api/v1/devices/claim",
            &token,
            &json!({ "serial": device.serial, "claim_code": device.claim_code }),
        )
        .await;
    assert_error(response, 401, "invalid_token").await;
    let response = app
        .authed_json(
            Method::POST,
            "/api/v1/devices/claim",
            &token,
            &json!({ "serial": device.serial, "claim_code": "WRONGCODE" }),
        )
        .await;
    assert_error(response, 401, "invalid_token").await;
    let response = app
        .authed(Method::GET, "/api/v1/me", &token)
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "invalid_token").await;

    // The device was not claimed by the ghost: a real user claims it.
    let owner = app.user_token().await;
    claim(&app, &owner, &device).await;
}

#[tokio::test]
async fn a_demoted_or_deleted_admin_loses_the_admin_routes_at_once() {
    use sea_orm::{ActiveModelTrait, Set};
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let me = app.me(&admin).await;
    let id: uuid::Uuid = me["id"].as_str().unwrap().parse().unwrap();
    let provision = |token: String| {
        let app = &app;
        async move {
            app.authed_json(
                Method::POST,
                "/api/v1/admin/devices",
                &token,
                &json!({ "count": 1 }),
            )
            .await
        }
    };
    assert_eq!(provision(admin.clone()).await.status(), 201);

    iotbind::entity::users::ActiveModel {
        id: Set(id),
        role: Set(iotbind::entity::users::Role::User),
        ..Default::default()
    }
    .update(&app.state.db)
    .await
    .unwrap();
    assert_error(provision(admin.clone()).await, 403, "forbidden").await;

    delete_account(&app, id).await;
    assert_error(provision(admin).await, 401, "invalid_token").await;
}

#[tokio::test]
async fn every_401_carries_a_bearer_challenge() {
    let app = spawn_app().await;
    app.create_user("frank", PASSWORD).await;
    let challenge = |response: &reqwest::Response| {
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
    };

    let response = app.get("/api/v1/me").await;
    assert_eq!(
        challenge(&response).as_deref(),
        Some(r#"Bearer error="invalid_token""#)
    );
    assert_error(response, 401, "invalid_token").await;

    let response = app
        .authed(Method::GET, "/api/v1/devices", "not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(
        challenge(&response).as_deref(),
        Some(r#"Bearer error="invalid_token""#)
    );
    assert_error(response, 401, "invalid_token").await;

    let response = app.login("frank", "a wrong guess").await;
    assert_eq!(challenge(&response).as_deref(), Some("Bearer"));
    assert_error(response, 401, "invalid_credentials").await;

    let response = app
        .post_json(
            "/api/v1/auth/refresh",
            &json!({ "refresh_token": "no-such-token" }),
        )
        .await;
    assert_eq!(challenge(&response).as_deref(), Some("Bearer"));
    assert_error(response, 401, "invalid_refresh_token").await;

    // Other statuses carry no challenge.
    let response = app.get("/api/v1/nothing").await;
    assert_eq!(challenge(&response), None);
}

#[tokio::test]
async fn names_with_bidirectional_overrides_or_zero_width_characters_are_refused() {
    let app = spawn_app().await;
    let token = app.user_token().await;
    let device = app.provision(1).await.remove(0);
    claim(&app, &token, &device).await;
    for name in [
        "Living\u{202E}moor",
        "Li\u{200B}ving",
        "\u{2066}Kitchen\u{2069}",
        "a\u{FEFF}b",
    ] {
        let response = app
            .authed_json(
                Method::PATCH,
                "/api/v1/me",
                &token,
                &json!({ "nickname": name }),
            )
            .await;
        assert_error(response, 422, "invalid_nickname").await;
        let response = app
            .authed_json(
                Method::PATCH,
                &format!("/api/v1/devices/{}", device.device_id),
                &token,
                &json!({ "name": name }),
            )
            .await;
        assert_error(response, 422, "invalid_device_name").await;
    }
    // Emoji and CJK stay welcome.
    let response = app
        .authed_json(
            Method::PATCH,
            "/api/v1/me",
            &token,
            &json!({ "nickname": "小明 😀" }),
        )
        .await;
    assert_eq!(response.status(), 200);
}
