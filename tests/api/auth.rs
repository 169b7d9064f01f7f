//! WeChat login, the bind and register pages, password login and the lockout.

use serde_json::{Value, json};

use crate::support::{assert_error, spawn_app};

const PASSWORD: &str = "correct horse battery";

#[tokio::test]
async fn a_new_wechat_user_gets_a_bind_ticket() {
    let app = spawn_app().await;
    let (code, _) = app.mint_code(None).await;
    let response = app.wechat_login(&code).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "bind_required");
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["bind_ticket"].as_str().unwrap().len(), 43);
    assert!(body.get("session_key").is_none() && !body.to_string().contains("session"));
}

#[tokio::test]
async fn register_creates_a_linked_account_and_logs_in() {
    let app = spawn_app().await;
    let (ticket, _) = app.bind_ticket().await;
    let response = app.register(&ticket, "Alice", PASSWORD).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "authenticated");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["refresh_expires_in"], 2_592_000);
    let user = &body["user"];
    assert_eq!(user["username"], "alice");
    assert_eq!(
        user["nickname"], "alice",
        "the nickname defaults to the username"
    );
    assert_eq!(user["avatar_url"], Value::Null);
    assert_eq!(user["role"], "user");
    assert_eq!(user["wechat_bound"], true);
    assert!(chrono::DateTime::parse_from_rfc3339(user["created_at"].as_str().unwrap()).is_ok());
    assert!(uuid::Uuid::parse_str(user["id"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn a_bound_wechat_user_logs_straight_in() {
    let app = spawn_app().await;
    let (registered, openid) = app.wechat_user("bob", PASSWORD).await;
    let (code, _) = app.mint_code(Some(&openid)).await;
    let body: Value = app.wechat_login(&code).await.json().await.unwrap();
    assert_eq!(body["status"], "authenticated");
    assert_eq!(body["user"]["id"], registered["user"]["id"]);
    let me = app
        .authed(
            reqwest::Method::GET,
            "/api/v1/me",
            body["access_token"].as_str().unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
}

#[tokio::test]
async fn the_same_code_twice_gives_two_tickets_not_code_used() {
    let app = spawn_app().await;
    let (code, _) = app.mint_code(None).await;
    let first = app.ticket_for_code(&code).await;
    let second = app.ticket_for_code(&code).await;
    assert_ne!(first, second);
    // Both tickets work: the first registers, the second then finds the openid linked.
    assert_eq!(app.register(&first, "carol", PASSWORD).await.status(), 201);
    assert_error(
        app.register(&second, "carol2", PASSWORD).await,
        409,
        "wechat_already_bound",
    )
    .await;
}

#[tokio::test]
async fn the_same_code_sent_concurrently_is_exchanged_once() {
    let app = spawn_app().await;
    let (code, _) = app.mint_code(None).await;
    let logins = (0..8).map(|_| app.wechat_login(&code));
    let mut tickets = Vec::new();
    for response in futures_util::future::join_all(logins).await {
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "bind_required", "{body}");
        tickets.push(body["bind_ticket"].as_str().unwrap().to_owned());
    }
    tickets.sort();
    tickets.dedup();
    assert_eq!(tickets.len(), 8, "each request got its own ticket");
}

#[tokio::test]
async fn the_same_code_twice_for_a_bound_user_gives_two_token_pairs() {
    let app = spawn_app().await;
    let (_, openid) = app.wechat_user("dave", PASSWORD).await;
    let (code, _) = app.mint_code(Some(&openid)).await;
    let a: Value = app.wechat_login(&code).await.json().await.unwrap();
    let b: Value = app.wechat_login(&code).await.json().await.unwrap();
    assert_eq!(a["status"], "authenticated");
    assert_eq!(b["status"], "authenticated");
    assert_ne!(a["refresh_token"], b["refresh_token"]);
}

#[tokio::test]
async fn wechat_errcodes_map_to_their_answers() {
    let app = spawn_app().await;
    let cases = [
        (40029, 400, "invalid_code"),
        (40163, 409, "code_used"),
        (45011, 429, "wechat_rate_limited"),
        (40226, 403, "wechat_denied"),
    ];
    for (errcode, status, code) in cases {
        let (minted, _) = app.mint_code(None).await;
        app.wechat_faults(json!({"errcode": errcode, "count": 1}))
            .await;
        let response = app.wechat_login(&minted).await;
        if status == 429 {
            assert!(response.headers().contains_key("retry-after"));
        }
        assert_error(response, status, code).await;
    }
}

#[tokio::test]
async fn wechat_failing_twice_is_502_and_the_code_can_be_tried_again() {
    let app = spawn_app().await;
    let (code, _) = app.mint_code(None).await;
    app.wechat_faults(json!({"errcode": -1, "count": 2})).await;
    assert_error(app.wechat_login(&code).await, 502, "wechat_unavailable").await;
    // A failure is not remembered, and the faulty answers did not use the code up.
    let body: Value = app.wechat_login(&code).await.json().await.unwrap();
    assert_eq!(body["status"], "bind_required");
}

#[tokio::test]
async fn a_rate_limited_code_can_be_tried_again() {
    let app = spawn_app().await;
    let (code, _) = app.mint_code(None).await;
    app.wechat_faults(json!({"errcode": 45011, "count": 1}))
        .await;
    assert_error(app.wechat_login(&code).await, 429, "wechat_rate_limited").await;
    assert_eq!(app.wechat_login(&code).await.status(), 200);
}

#[tokio::test]
async fn an_unknown_code_is_400_invalid_code() {
    let app = spawn_app().await;
    assert_error(app.wechat_login("never-minted").await, 400, "invalid_code").await;
}

#[tokio::test]
async fn a_code_outside_1_to_256_characters_is_400_invalid_code_as_the_spec_states() {
    let app = spawn_app().await;
    for code in [String::new(), "c".repeat(257), "码".repeat(257)] {
        assert_error(app.wechat_login(&code).await, 400, "invalid_code").await;
    }
    // Counted in characters: 256 three-byte characters are a code WeChat is asked about.
    assert_error(
        app.wechat_login(&"码".repeat(256)).await,
        400,
        "invalid_code",
    )
    .await;
}

#[tokio::test]
async fn malformed_login_bodies_are_400_invalid_request() {
    let app = spawn_app().await;
    let path = "/api/v1/auth/wechat/login";
    for body in ["{", "[]", "{\"code\": 42}", "{}", "null"] {
        let response = app.post_raw(path, "application/json", body).await;
        assert_error(response, 400, "invalid_request").await;
    }
    let response = app.post_raw(path, "text/plain", "{\"code\":\"x\"}").await;
    assert_error(response, 400, "invalid_request").await;
    let response = app.client.post(app.url(path)).send().await.unwrap();
    assert_error(response, 400, "invalid_request").await;
}

#[tokio::test]
async fn bind_links_an_existing_account() {
    let app = spawn_app().await;
    app.create_user("erin", PASSWORD).await;
    let (ticket, openid) = app.bind_ticket().await;
    let response = app.bind(&ticket, "ERIN", PASSWORD).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["username"], "erin");
    assert_eq!(body["user"]["wechat_bound"], true);
    // The ticket is spent, and the openid now logs straight in.
    assert_error(
        app.bind(&ticket, "erin", PASSWORD).await,
        401,
        "invalid_bind_ticket",
    )
    .await;
    let (code, _) = app.mint_code(Some(&openid)).await;
    let login: Value = app.wechat_login(&code).await.json().await.unwrap();
    assert_eq!(login["user"]["username"], "erin");
}

#[tokio::test]
async fn an_unknown_user_and_a_wrong_password_get_the_same_answer() {
    let app = spawn_app().await;
    app.create_user("frank", PASSWORD).await;
    let (ticket, _) = app.bind_ticket().await;
    let wrong = assert_error(
        app.bind(&ticket, "frank", "not the password").await,
        401,
        "invalid_credentials",
    )
    .await;
    let unknown = assert_error(
        app.bind(&ticket, "nobody", PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(wrong, unknown);
    let wrong = assert_error(
        app.login("frank", "not the password").await,
        401,
        "invalid_credentials",
    )
    .await;
    let unknown = assert_error(
        app.login("nobody", PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(wrong, unknown);
    // Refused attempts left the ticket usable.
    assert_eq!(app.bind(&ticket, "frank", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn an_account_with_wechat_cannot_be_bound_again() {
    let app = spawn_app().await;
    app.wechat_user("grace", PASSWORD).await;
    let (ticket, _) = app.bind_ticket().await;
    assert_error(
        app.bind(&ticket, "grace", PASSWORD).await,
        409,
        "account_already_bound",
    )
    .await;
    // The ticket survives a refusal: this WeChat user can still register.
    assert_eq!(
        app.register(&ticket, "grace2", PASSWORD).await.status(),
        201
    );
}

#[tokio::test]
async fn an_openid_linked_meanwhile_cannot_be_bound_again() {
    let app = spawn_app().await;
    app.create_user("heidi", PASSWORD).await;
    let (code, openid) = app.mint_code(None).await;
    let first = app.ticket_for_code(&code).await;
    let (code2, _) = app.mint_code(Some(&openid)).await;
    let second = app.ticket_for_code(&code2).await;
    assert_eq!(app.register(&first, "ivan", PASSWORD).await.status(), 201);
    assert_error(
        app.bind(&second, "heidi", PASSWORD).await,
        409,
        "wechat_already_bound",
    )
    .await;
}

#[tokio::test]
async fn register_enforces_the_username_and_password_rules() {
    let app = spawn_app().await;
    app.create_user("judy", PASSWORD).await;
    let (ticket, _) = app.bind_ticket().await;
    assert_error(
        app.register(&ticket, "JUDY", PASSWORD).await,
        409,
        "username_taken",
    )
    .await;
    assert_error(
        app.register(&ticket, "ju", PASSWORD).await,
        422,
        "invalid_username",
    )
    .await;
    assert_error(
        app.register(&ticket, "ju dy", PASSWORD).await,
        422,
        "invalid_username",
    )
    .await;
    assert_error(
        app.register(&ticket, "kim", "12345678").await,
        422,
        "weak_password",
    )
    .await;
    assert_error(
        app.register(&ticket, "kim", "short").await,
        422,
        "weak_password",
    )
    .await;
    assert_error(
        app.register(&ticket, "kimberly", "KIMBERLY").await,
        422,
        "weak_password",
    )
    .await;
    let response = app
        .post_json(
            "/api/v1/auth/wechat/register",
            &json!({"bind_ticket": ticket, "username": "kim", "password": PASSWORD, "nickname": ""}),
        )
        .await;
    assert_error(response, 422, "invalid_nickname").await;
    // None of the refusals spent the ticket.
    let response = app
        .post_json(
            "/api/v1/auth/wechat/register",
            &json!({"bind_ticket": ticket, "username": "kim", "password": PASSWORD, "nickname": "Kim 金"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["nickname"], "Kim 金");
}

#[tokio::test]
async fn the_ticket_is_checked_before_the_fields() {
    let app = spawn_app().await;
    assert_error(
        app.register("no-such-ticket", "x", "1").await,
        401,
        "invalid_bind_ticket",
    )
    .await;
    assert_error(
        app.bind("no-such-ticket", "x", "1").await,
        401,
        "invalid_bind_ticket",
    )
    .await;
}

#[tokio::test]
async fn a_ticket_dies_after_5_failed_binds() {
    let app = spawn_app().await;
    app.create_user("leo", PASSWORD).await;
    let (ticket, _) = app.bind_ticket().await;
    for i in 0..5 {
        let name = format!("nobody{i}");
        assert_error(
            app.bind(&ticket, &name, PASSWORD).await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    assert_error(
        app.bind(&ticket, "leo", PASSWORD).await,
        401,
        "invalid_bind_ticket",
    )
    .await;
}

#[tokio::test]
async fn an_expired_ticket_is_refused() {
    let app = spawn_app().await;
    let (ticket, _) = app.bind_ticket().await;
    // Past the default ten minutes.
    app.state.clock.advance(std::time::Duration::from_secs(601));
    assert_error(
        app.register(&ticket, "mallory", PASSWORD).await,
        401,
        "invalid_bind_ticket",
    )
    .await;
}

#[tokio::test]
async fn password_login_answers_authenticated() {
    let app = spawn_app().await;
    app.create_user("nina", PASSWORD).await;
    let response = app.login("Nina", PASSWORD).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "authenticated");
    assert_eq!(body["user"]["wechat_bound"], false);
}

#[tokio::test]
async fn the_fifth_wrong_password_locks_the_account_for_that_address() {
    let app = spawn_app().await;
    app.create_user("oscar", PASSWORD).await;
    app.create_user("peggy", PASSWORD).await;
    for _ in 0..5 {
        assert_error(
            app.login("oscar", "wrong password").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    let locked = app.login("oscar", PASSWORD).await;
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
    // The lock holds on the bind page too, and other accounts are untouched.
    let (ticket, _) = app.bind_ticket().await;
    assert_error(
        app.bind(&ticket, "oscar", PASSWORD).await,
        429,
        "too_many_attempts",
    )
    .await;
    assert_eq!(app.login("peggy", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn a_successful_login_resets_the_count() {
    let app = spawn_app().await;
    app.create_user("quinn", PASSWORD).await;
    for _ in 0..4 {
        app.login("quinn", "wrong password").await;
    }
    assert_eq!(app.login("quinn", PASSWORD).await.status(), 200);
    for _ in 0..4 {
        assert_error(
            app.login("quinn", "wrong password").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    assert_eq!(app.login("quinn", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn health_answers_while_20_logins_hash_at_once() {
    let app = spawn_app().await;
    app.create_user("rita", PASSWORD).await;
    let logins = futures_util::future::join_all((0..20).map(|_| app.login("rita", PASSWORD)));
    let probe = async {
        // Probes sent while the logins are hashing must all be answered.
        let mut answered = 0;
        for _ in 0..10 {
            if app.get("/health/live").await.status() == 200 {
                answered += 1;
            }
        }
        answered
    };
    let (results, answered) = tokio::join!(logins, probe);
    assert_eq!(answered, 10);
    assert!(results.iter().all(|r| r.status() == 200));
}
