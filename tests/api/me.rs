//! The signed-in user's account: profile, password, unbind, WeChat profile.

use reqwest::Method;
use serde_json::{Value, json};

use iotbind::service::me;

use crate::support::{TestApp, assert_error, spawn_app};

const PASSWORD: &str = "correct horse battery";

fn token(session: &Value) -> String {
    session["access_token"].as_str().unwrap().to_owned()
}

async fn patch_me(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.authed_json(Method::PATCH, "/api/v1/me", token, &body)
        .await
}

#[tokio::test]
async fn patch_me_changes_only_the_given_fields() {
    let app = spawn_app().await;
    let (session, _) = app.wechat_user("alice", PASSWORD).await;
    let token = token(&session);
    let avatar = "https://thirdwx.qlogo.cn/mmopen/alice/132";
    let response = patch_me(
        &app,
        &token,
        json!({"nickname": "爱丽丝", "avatar_url": avatar}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["nickname"], "爱丽丝");
    assert_eq!(me["avatar_url"], avatar);

    let me: Value = patch_me(&app, &token, json!({"nickname": "Alice"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["avatar_url"], avatar, "a field left out stays");
    let me: Value = patch_me(&app, &token, json!({"avatar_url": null}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["avatar_url"], Value::Null, "null clears the avatar");
    assert_eq!(me["nickname"], "Alice");
}

#[tokio::test]
async fn patch_me_refuses_bad_values_and_changes_nothing() {
    let app = spawn_app().await;
    let (session, _) = app.wechat_user("bob", PASSWORD).await;
    let token = token(&session);
    for (body, code) in [
        (json!({"nickname": ""}), "invalid_nickname"),
        (json!({"nickname": "n".repeat(33)}), "invalid_nickname"),
        (json!({"nickname": null}), "invalid_nickname"),
        (
            json!({"avatar_url": "http://insecure.example/a.png"}),
            "invalid_avatar_url",
        ),
        (
            json!({"nickname": "Fine", "avatar_url": format!("https://x.cn/{}", "a".repeat(600))}),
            "invalid_avatar_url",
        ),
    ] {
        assert_error(patch_me(&app, &token, body).await, 422, code).await;
    }
    let me = app.me(&token).await;
    assert_eq!(me["nickname"], "bob");
    assert_error(
        patch_me(&app, &token, json!({"nickname": 5})).await,
        400,
        "invalid_request",
    )
    .await;
}

async fn change_password(
    app: &TestApp,
    token: &str,
    current: &str,
    new: &str,
) -> reqwest::Response {
    app.authed_json(
        Method::PUT,
        "/api/v1/me/password",
        token,
        &json!({"current_password": current, "new_password": new}),
    )
    .await
}

#[tokio::test]
async fn changing_the_password_revokes_every_login() {
    let app = spawn_app().await;
    app.create_user("carol", PASSWORD).await;
    let first: Value = app.login("carol", PASSWORD).await.json().await.unwrap();
    let second: Value = app.login("carol", PASSWORD).await.json().await.unwrap();
    let token = token(&first);
    assert_error(
        change_password(&app, &token, "wrong one", "a new passphrase").await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_error(
        change_password(&app, &token, PASSWORD, "1234567890").await,
        422,
        "weak_password",
    )
    .await;
    assert_eq!(
        change_password(&app, &token, PASSWORD, "a new passphrase")
            .await
            .status(),
        204
    );
    for session in [first, second] {
        let refreshed = app
            .post_json(
                "/api/v1/auth/refresh",
                &json!({"refresh_token": session["refresh_token"]}),
            )
            .await;
        assert_error(refreshed, 401, "invalid_refresh_token").await;
    }
    assert_error(
        app.login("carol", PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(app.login("carol", "a new passphrase").await.status(), 200);
}

#[tokio::test]
async fn the_new_password_rules_are_checked_before_the_current_password() {
    let app = spawn_app().await;
    app.create_user("dave", PASSWORD).await;
    let session: Value = app.login("dave", PASSWORD).await.json().await.unwrap();
    let response = change_password(&app, &token(&session), "wrong", "short").await;
    assert_error(response, 422, "weak_password").await;
}

async fn unbind(app: &TestApp, token: &str, password: &str) -> reqwest::Response {
    app.authed_json(
        Method::POST,
        "/api/v1/me/wechat/unbind",
        token,
        &json!({"password": password}),
    )
    .await
}

#[tokio::test]
async fn unbind_needs_the_password_and_frees_the_openid() {
    let app = spawn_app().await;
    let (session, openid) = app.wechat_user("erin", PASSWORD).await;
    let token = token(&session);
    assert_error(
        unbind(&app, &token, "not it").await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(unbind(&app, &token, PASSWORD).await.status(), 204);
    assert_error(unbind(&app, &token, PASSWORD).await, 404, "not_bound").await;
    let me = app.me(&token).await;
    assert_eq!(me["wechat_bound"], false);
    let (code, _) = app.mint_code(Some(&openid)).await;
    let login: Value = app.wechat_login(&code).await.json().await.unwrap();
    assert_eq!(login["status"], "bind_required");
}

async fn encrypt_for(app: &TestApp, openid: &str, data: Value) -> Value {
    app.post_json(
        "/dev/wechat/encrypt",
        &json!({"openid": openid, "data": data}),
    )
    .await
    .json()
    .await
    .unwrap()
}

async fn send_profile(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.authed_json(Method::POST, "/api/v1/me/wechat/profile", token, body)
        .await
}

#[tokio::test]
async fn the_wechat_profile_updates_nickname_and_avatar() {
    let app = spawn_app().await;
    let (session, openid) = app.wechat_user("frank", PASSWORD).await;
    let avatar = "https://thirdwx.qlogo.cn/mmopen/frank/132";
    let sealed = encrypt_for(
        &app,
        &openid,
        json!({"openId": openid, "nickName": "弗兰克", "avatarUrl": avatar, "unionId": "union-frank"}),
    )
    .await;
    let response = send_profile(&app, &token(&session), &sealed).await;
    assert_eq!(response.status(), 200);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["nickname"], "弗兰克");
    assert_eq!(me["avatar_url"], avatar);
}

#[tokio::test]
async fn data_sealed_with_an_older_session_is_409_session_key_stale() {
    let app = spawn_app().await;
    let (session, openid) = app.wechat_user("grace", PASSWORD).await;
    let sealed = encrypt_for(&app, &openid, json!({"nickName": "old"})).await;
    // A newer wx.login() gives WeChat (and us) a new session_key.
    let (code, _) = app.mint_code(Some(&openid)).await;
    let newer: Value = app.wechat_login(&code).await.json().await.unwrap();
    assert_eq!(newer["status"], "authenticated");
    assert_error(
        send_profile(&app, &token(&session), &sealed).await,
        409,
        "session_key_stale",
    )
    .await;
}

#[tokio::test]
async fn malformed_encrypted_data_is_400() {
    let app = spawn_app().await;
    let (session, _) = app.wechat_user("heidi", PASSWORD).await;
    let token = token(&session);
    for body in [
        json!({"encrypted_data": "not base64!", "iv": "r7BXXKkLb8qrSNn05n0qiA=="}),
        json!({"encrypted_data": "AAAAAAAAAAAAAAAAAAAAAA==", "iv": "AAAA"}),
        json!({"encrypted_data": "AAAAAAAAAAAAAAAAAAAAAAA=", "iv": "r7BXXKkLb8qrSNn05n0qiA=="}),
    ] {
        assert_error(
            send_profile(&app, &token, &body).await,
            400,
            "invalid_encrypted_data",
        )
        .await;
    }
}

#[tokio::test]
async fn an_account_without_wechat_has_no_profile_to_update() {
    let app = spawn_app().await;
    app.create_user("ivan", PASSWORD).await;
    let session: Value = app.login("ivan", PASSWORD).await.json().await.unwrap();
    let body =
        json!({"encrypted_data": "AAAAAAAAAAAAAAAAAAAAAA==", "iv": "r7BXXKkLb8qrSNn05n0qiA=="});
    assert_error(
        send_profile(&app, &token(&session), &body).await,
        404,
        "not_bound",
    )
    .await;
}

#[tokio::test]
async fn the_profile_read_on_the_request_thread_matches_the_pooled_read() {
    let app = spawn_app().await;
    let (session, _) = app.wechat_user("ivy", PASSWORD).await;
    let bound_id: uuid::Uuid = session["user"]["id"].as_str().unwrap().parse().unwrap();
    patch_me(
        &app,
        &token(&session),
        json!({"avatar_url": "https://thirdwx.qlogo.cn/mmopen/ivy/132"}),
    )
    .await;
    app.create_user("jay", PASSWORD).await;
    let session: Value = app.login("jay", PASSWORD).await.json().await.unwrap();
    let unbound_id: uuid::Uuid = session["user"]["id"].as_str().unwrap().parse().unwrap();

    let mut pooled = app.state.accounts.clone();
    let inline_reads = pooled.inline_reads.take();
    if !app.database_url.starts_with("sqlite:") {
        assert!(inline_reads.is_none(), "PostgreSQL has no inline reader");
        return;
    }
    assert!(
        inline_reads.is_some(),
        "a SQLite file gets an inline reader"
    );
    for (id, bound) in [(bound_id, true), (unbound_id, false)] {
        let inline = app.state.accounts.profile(id).await.unwrap();
        assert_eq!(inline.wechat_bound, bound);
        assert_eq!(inline, pooled.profile(id).await.unwrap());
    }
    let unknown = uuid::Uuid::new_v4();
    assert!(matches!(
        app.state.accounts.profile(unknown).await,
        Err(me::MeError::AccountGone)
    ));
}
