//! The fake WeChat API under `/dev/wechat`, and the WeChat client against it and
//! against stub servers that misbehave in ways the fake cannot (HTML, garbage, hangs).

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use iotbind::config::ConfigArgs;
use iotbind::wechat::crypto::decrypt_user_info;
use iotbind::wechat::fake::FAKE_APP_SECRET;
use iotbind::wechat::{WechatClient, WechatError, WechatSession};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error, spawn_app, spawn_app_with};

impl TestApp {
    fn appid(&self) -> String {
        self.state.settings.wechat.appid.clone()
    }

    /// jscode2session as our server would call it, answer parsed.
    async fn exchange(&self, code: &str) -> Value {
        self.exchange_with(&self.appid(), FAKE_APP_SECRET, code)
            .await
    }

    async fn exchange_with(&self, appid: &str, secret: &str, code: &str) -> Value {
        let response = self
            .client
            .get(self.url("/dev/wechat/sns/jscode2session"))
            .query(&[
                ("appid", appid),
                ("secret", secret),
                ("js_code", code),
                ("grant_type", "authorization_code"),
            ])
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status().as_u16(), 200, "WeChat answers 200");
        response.json().await.expect("JSON")
    }

    fn wechat_client(&self) -> WechatClient {
        self.wechat_client_with_secret(FAKE_APP_SECRET)
    }

    fn wechat_client_with_secret(&self, secret: &str) -> WechatClient {
        WechatClient::new(
            &self.url("/dev/wechat"),
            &self.appid(),
            SecretString::from(secret.to_owned()),
        )
        .expect("a client")
    }
}

fn errcode(answer: &Value) -> i64 {
    answer["errcode"]
        .as_i64()
        .unwrap_or_else(|| panic!("an errcode in {answer}"))
}

fn assert_no_secret(err: &WechatError, secret: &str) {
    assert!(!err.to_string().contains(secret), "secret in {err}");
    assert!(!format!("{err:?}").contains(secret), "secret in {err:?}");
}

// --- The fake ---------------------------------------------------------------------------

#[tokio::test]
async fn the_fake_trades_a_minted_code_for_openid_and_session_key() {
    let app = spawn_app().await;
    let (code, openid) = app.mint_code_with(json!({})).await;
    assert_eq!(openid.len(), 28, "a WeChat-like openid: {openid}");

    let answer = app.exchange(&code).await;
    assert_eq!(answer["openid"], openid.as_str());
    let session_key = answer["session_key"].as_str().expect("a session_key");
    assert_eq!(BASE64.decode(session_key).expect("base64").len(), 16);
    assert!(answer.get("unionid").is_none(), "no unionid unless given");
    assert!(answer.get("errcode").is_none());
}

#[tokio::test]
async fn the_fake_keeps_a_chosen_openid_and_unionid() {
    let app = spawn_app().await;
    let (code, openid) = app
        .mint_code_with(json!({"openid": "oChosenOpenid", "unionid": "oChosenUnionid"}))
        .await;
    assert_eq!(openid, "oChosenOpenid");
    let answer = app.exchange(&code).await;
    assert_eq!(answer["openid"], "oChosenOpenid");
    assert_eq!(answer["unionid"], "oChosenUnionid");
}

#[tokio::test]
async fn minting_needs_no_body_at_all() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/dev/wechat/codes"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().await.unwrap();
    assert!(answer["code"].is_string() && answer["openid"].is_string());
}

#[tokio::test]
async fn a_code_traded_twice_gets_40163_the_second_time() {
    let app = spawn_app().await;
    let (code, _) = app.mint_code_with(json!({})).await;
    assert!(app.exchange(&code).await["openid"].is_string());
    let second = app.exchange(&code).await;
    assert_eq!(errcode(&second), 40163);
    assert!(second["errmsg"].is_string());
}

#[tokio::test]
async fn an_unknown_code_gets_40029() {
    let app = spawn_app().await;
    assert_eq!(errcode(&app.exchange("never-minted").await), 40029);
}

#[tokio::test]
async fn the_wrong_appid_or_secret_gets_wechats_errcodes_and_keeps_the_code() {
    let app = spawn_app().await;
    let (code, _) = app.mint_code_with(json!({})).await;
    let appid = app.appid();
    assert_eq!(
        errcode(
            &app.exchange_with("wxsomeoneelse", FAKE_APP_SECRET, &code)
                .await
        ),
        40013
    );
    assert_eq!(
        errcode(&app.exchange_with(&appid, "wrong-secret", &code).await),
        40125
    );
    assert!(app.exchange(&code).await["openid"].is_string());
}

#[tokio::test]
async fn each_minted_code_gives_a_fresh_session_key() {
    let app = spawn_app().await;
    let (first, openid) = app.mint_code_with(json!({})).await;
    let (second, same) = app.mint_code_with(json!({"openid": openid})).await;
    assert_eq!(same, openid);
    let first_key = app.exchange(&first).await["session_key"].clone();
    let second_key = app.exchange(&second).await["session_key"].clone();
    assert!(first_key.is_string() && second_key.is_string());
    assert_ne!(first_key, second_key);
}

#[tokio::test]
async fn encrypted_data_from_the_fake_decrypts_with_the_users_session_key() {
    let app = spawn_app().await;
    let (code, openid) = app.mint_code_with(json!({})).await;
    let session_key = app.exchange(&code).await["session_key"]
        .as_str()
        .unwrap()
        .to_owned();

    let data =
        json!({"nickName": "Ada", "avatarUrl": "https://example.com/a.png", "unionId": "oU1"});
    let response = app
        .post_json(
            "/dev/wechat/encrypt",
            &json!({"openid": openid, "data": data}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().await.unwrap();
    let decrypted = decrypt_user_info(
        &session_key,
        answer["encrypted_data"].as_str().unwrap(),
        answer["iv"].as_str().unwrap(),
        &app.appid(),
        chrono::Utc::now(),
    )
    .expect("decrypts");
    assert_eq!(decrypted["nickName"], "Ada");
    assert_eq!(decrypted["unionId"], "oU1");
    assert_eq!(decrypted["watermark"]["appid"], app.appid().as_str());
    assert!(decrypted["watermark"]["timestamp"].is_i64());
}

#[tokio::test]
async fn encrypting_for_an_unknown_openid_is_a_clear_error() {
    let app = spawn_app().await;
    let response = app
        .post_json(
            "/dev/wechat/encrypt",
            &json!({"openid": "oNobody", "data": {}}),
        )
        .await;
    assert_error(response, 404, "unknown_openid").await;
}

#[tokio::test]
async fn malformed_json_to_the_fake_is_400_invalid_request() {
    let app = spawn_app().await;
    for path in [
        "/dev/wechat/codes",
        "/dev/wechat/encrypt",
        "/dev/wechat/faults",
    ] {
        let response = app.post_raw(path, "application/json", "{not json").await;
        assert_error(response, 400, "invalid_request").await;
    }
    let missing_count = app
        .post_json("/dev/wechat/faults", &json!({"errcode": -1}))
        .await;
    assert_error(missing_count, 400, "invalid_request").await;
    let wrong_type = app
        .post_json("/dev/wechat/encrypt", &json!({"openid": 7, "data": {}}))
        .await;
    assert_error(wrong_type, 400, "invalid_request").await;
    let data_not_object = app
        .post_json("/dev/wechat/encrypt", &json!({"openid": "o1", "data": [1]}))
        .await;
    assert_error(data_not_object, 400, "invalid_request").await;
}

#[tokio::test]
async fn a_body_the_fakes_schema_refuses_is_400_even_where_serde_would_read_it() {
    let app = spawn_app().await;
    // A JSON array reads as a struct's fields in order; the schema asks for an object.
    for body in [json!([null, null]), json!(["o-array", "u-array"]), json!(5)] {
        let response = app.post_json("/dev/wechat/codes", &body).await;
        assert_error(response, 400, "invalid_request").await;
    }
    let response = app
        .post_raw("/dev/wechat/codes", "application/json", "null")
        .await;
    assert_error(response, 400, "invalid_request").await;
    let null_fields = app
        .post_json(
            "/dev/wechat/codes",
            &json!({"openid": null, "unionid": null}),
        )
        .await;
    assert_eq!(null_fields.status().as_u16(), 200);
}

#[tokio::test]
async fn an_errcode_fault_does_not_use_up_the_code() {
    let app = spawn_app().await;
    let (code, openid) = app.mint_code_with(json!({})).await;
    app.wechat_faults(json!({"errcode": 45011, "count": 1}))
        .await;
    assert_eq!(errcode(&app.exchange(&code).await), 45011);
    assert_eq!(app.exchange(&code).await["openid"], openid.as_str());
}

#[tokio::test]
async fn a_fault_answers_exactly_its_count_of_calls() {
    let app = spawn_app().await;
    let (code, _) = app.mint_code_with(json!({})).await;
    app.wechat_faults(json!({"errcode": -1, "count": 2})).await;
    assert_eq!(errcode(&app.exchange(&code).await), -1);
    assert_eq!(errcode(&app.exchange(&code).await), -1);
    assert!(app.exchange(&code).await["openid"].is_string());
}

#[tokio::test]
async fn a_fault_with_count_0_clears_what_is_pending() {
    let app = spawn_app().await;
    let (code, _) = app.mint_code_with(json!({})).await;
    app.wechat_faults(json!({"errcode": -1, "count": 5})).await;
    app.wechat_faults(json!({"count": 0})).await;
    assert!(app.exchange(&code).await["openid"].is_string());
}

#[tokio::test]
async fn a_new_fault_replaces_the_pending_one() {
    let app = spawn_app().await;
    let (code, _) = app.mint_code_with(json!({})).await;
    app.wechat_faults(json!({"errcode": -1, "count": 5})).await;
    app.wechat_faults(json!({"errcode": 40226, "count": 1}))
        .await;
    assert_eq!(errcode(&app.exchange(&code).await), 40226);
    assert!(app.exchange(&code).await["openid"].is_string());
}

#[tokio::test]
async fn a_delay_only_fault_answers_normally_after_the_delay() {
    let app = spawn_app().await;
    let (code, openid) = app.mint_code_with(json!({})).await;
    app.wechat_faults(json!({"delay_ms": 300, "count": 1}))
        .await;
    let started = Instant::now();
    let answer = app.exchange(&code).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(answer["openid"], openid.as_str());
}

#[tokio::test]
async fn the_fake_is_not_served_when_a_real_secret_is_configured() {
    let app = spawn_app_with(ConfigArgs {
        wechat_appid: Some("wxreal".into()),
        wechat_secret: Some("a-real-secret".into()),
        ..ConfigArgs::default()
    })
    .await;
    let response = app.post_json("/dev/wechat/codes", &json!({})).await;
    assert_error(response, 404, "not_found").await;
}

#[tokio::test]
async fn the_fake_is_described_in_the_development_spec_only() {
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let codes = &spec["paths"]["/dev/wechat/codes"]["post"];
    assert_eq!(codes["tags"], json!(["Development"]), "{codes}");
    assert_eq!(codes["operationId"], "dev_wechat_codes");

    let production = spawn_app_with(ConfigArgs {
        wechat_appid: Some("wxreal".into()),
        wechat_secret: Some("a-real-secret".into()),
        ..ConfigArgs::default()
    })
    .await;
    let spec: Value = production.get("/openapi.json").await.json().await.unwrap();
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.keys().all(|path| !path.starts_with("/dev")));
    assert!(
        spec["tags"]
            .as_array()
            .unwrap()
            .iter()
            .all(|tag| tag["name"] != "Development")
    );
}

#[tokio::test]
async fn the_fake_takes_a_body_without_a_content_type_and_no_body_at_all_for_a_code() {
    let app = spawn_app().await;
    let bare = app
        .client
        .post(app.url("/dev/wechat/codes"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 200);
    let minted: Value = bare.json().await.unwrap();
    assert_eq!(minted["openid"].as_str().map(str::len), Some(28));

    let plain_text = app
        .client
        .post(app.url("/dev/wechat/codes"))
        .header("content-type", "text/plain")
        .body(r#"{"openid": "o-plain"}"#)
        .send()
        .await
        .unwrap();
    let minted: Value = plain_text.json().await.unwrap();
    assert_eq!(minted["openid"], "o-plain");

    let empty_faults = app
        .client
        .post(app.url("/dev/wechat/faults"))
        .send()
        .await
        .unwrap();
    assert_error(empty_faults, 400, "invalid_request").await;
}

// --- The client against the fake ----------------------------------------------------------

#[tokio::test]
async fn the_client_trades_a_code_for_a_session() {
    let app = spawn_app().await;
    let (code, openid) = app.mint_code_with(json!({"unionid": "oUnion"})).await;
    let session: WechatSession = app.wechat_client().code_to_session(&code).await.unwrap();
    assert_eq!(session.openid, openid);
    assert_eq!(session.unionid.as_deref(), Some("oUnion"));

    let answer: Value = app
        .post_json(
            "/dev/wechat/encrypt",
            &json!({"openid": openid, "data": {"nickName": "Ada"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let decrypted = decrypt_user_info(
        session.session_key.expose_secret(),
        answer["encrypted_data"].as_str().unwrap(),
        answer["iv"].as_str().unwrap(),
        &app.appid(),
        chrono::Utc::now(),
    );
    assert!(
        decrypted.is_ok(),
        "the session_key is the user's current one"
    );
}

#[tokio::test]
async fn the_client_maps_unknown_and_used_codes() {
    let app = spawn_app().await;
    let client = app.wechat_client();
    assert!(matches!(
        client.code_to_session("never-minted").await,
        Err(WechatError::InvalidCode)
    ));
    let (code, _) = app.mint_code_with(json!({})).await;
    assert!(client.code_to_session(&code).await.is_ok());
    assert!(matches!(
        client.code_to_session(&code).await,
        Err(WechatError::CodeUsed)
    ));
}

#[tokio::test]
async fn the_client_maps_each_refusal_and_never_retries_it() {
    let app = spawn_app().await;
    let client = app.wechat_client();
    let (code, _) = app.mint_code_with(json!({})).await;
    for refusal in [40029, 40163, 45011, 40226] {
        app.wechat_faults(json!({"errcode": refusal, "count": 2}))
            .await;
        let result = client.code_to_session(&code).await;
        let mapped = matches!(
            (refusal, &result),
            (40029, Err(WechatError::InvalidCode))
                | (40163, Err(WechatError::CodeUsed))
                | (45011, Err(WechatError::RateLimited))
                | (40226, Err(WechatError::Denied))
        );
        assert!(mapped, "{refusal} mapped, got {result:?}");
        // One call spent one fault: the second is still pending.
        assert_eq!(errcode(&app.exchange(&code).await), refusal);
    }
    assert!(client.code_to_session(&code).await.is_ok());
}

#[tokio::test]
async fn errcode_minus_one_twice_is_unavailable_after_exactly_one_retry() {
    let app = spawn_app().await;
    let (code, openid) = app.mint_code_with(json!({})).await;
    app.wechat_faults(json!({"errcode": -1, "count": 2})).await;
    let result = app.wechat_client().code_to_session(&code).await;
    assert!(
        matches!(result, Err(WechatError::Unavailable(_))),
        "{result:?}"
    );
    // Both faults were spent (a client that did not retry would leave one), and a client
    // that retried twice would have succeeded above: exactly one retry. The code is unused.
    assert_eq!(app.exchange(&code).await["openid"], openid.as_str());
}

#[tokio::test]
async fn errcode_minus_one_once_is_retried_into_a_success() {
    let app = spawn_app().await;
    let (code, openid) = app.mint_code_with(json!({})).await;
    app.wechat_faults(json!({"errcode": -1, "count": 1})).await;
    let session = app.wechat_client().code_to_session(&code).await.unwrap();
    assert_eq!(session.openid, openid);
    assert_eq!(errcode(&app.exchange(&code).await), 40163);
}

#[tokio::test]
async fn an_unexpected_errcode_is_unavailable_without_a_retry() {
    let app = spawn_app().await;
    let (code, _) = app.mint_code_with(json!({})).await;
    app.wechat_faults(json!({"errcode": 40001, "count": 2}))
        .await;
    let result = app.wechat_client().code_to_session(&code).await;
    assert!(
        matches!(&result, Err(WechatError::Unavailable(reason)) if reason.contains("40001")),
        "{result:?}"
    );
    assert_eq!(errcode(&app.exchange(&code).await), 40001);
}

#[tokio::test]
async fn a_fake_stalling_past_the_budget_makes_the_client_unavailable() {
    let app = spawn_app().await;
    let (code, _) = app.mint_code_with(json!({})).await;
    app.wechat_faults(json!({"delay_ms": 6000, "count": 2}))
        .await;
    let started = Instant::now();
    let result = app.wechat_client().code_to_session(&code).await;
    assert!(
        matches!(result, Err(WechatError::Unavailable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn one_stalled_attempt_is_retried_into_a_success() {
    let app = spawn_app().await;
    let (code, openid) = app.mint_code_with(json!({})).await;
    app.wechat_faults(json!({"delay_ms": 6000, "count": 1}))
        .await;
    let session = app.wechat_client().code_to_session(&code).await.unwrap();
    assert_eq!(session.openid, openid);
}

#[tokio::test]
async fn a_wrong_secret_is_unavailable_and_the_error_never_shows_it() {
    let app = spawn_app().await;
    let (code, _) = app.mint_code_with(json!({})).await;
    let secret = "not-the-development-secret-4711";
    let err = app
        .wechat_client_with_secret(secret)
        .code_to_session(&code)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WechatError::Unavailable(reason) if reason.contains("40125")),
        "{err:?}"
    );
    assert_no_secret(&err, secret);
}

#[tokio::test]
async fn a_connection_failure_never_shows_the_secret() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let secret = "connection-failure-secret-0815";
    let client = WechatClient::new(
        &format!("http://{address}"),
        "wxappid",
        SecretString::from(secret),
    )
    .unwrap();
    let err = client.code_to_session("some-code").await.unwrap_err();
    assert!(matches!(err, WechatError::Unavailable(_)), "{err:?}");
    assert_no_secret(&err, secret);
    assert!(!err.to_string().contains("some-code"), "{err}");
}

// --- The client against stub servers -----------------------------------------------------

/// A server that answers its `n`th request (from 0) with `answer(n)`: a delay, a status and a
/// body. Returns its base URL and the number of requests it got.
async fn stub_wechat<F>(answer: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(usize) -> (Duration, u16, &'static str) + Send + Sync + 'static,
{
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let endpoint = poem::endpoint::make(move |_request| {
        let (delay, status, body) = answer(counter.fetch_add(1, Ordering::SeqCst));
        async move {
            tokio::time::sleep(delay).await;
            poem::Response::builder()
                .status(poem::http::StatusCode::from_u16(status).unwrap())
                .body(body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(endpoint));
    (format!("http://{address}"), hits)
}

fn stub_client(base: &str) -> WechatClient {
    WechatClient::new(base, "wxstub", SecretString::from("stub-secret")).unwrap()
}

const SUCCESS: &str = r#"{"openid":"oStub","session_key":"AAAAAAAAAAAAAAAAAAAAAA=="}"#;

#[tokio::test]
async fn an_html_5xx_is_retried_once_then_unavailable() {
    let (base, hits) =
        stub_wechat(|_| (Duration::ZERO, 502, "<html><body>Bad Gateway</body></html>")).await;
    let result = stub_client(&base).code_to_session("c").await;
    assert!(
        matches!(result, Err(WechatError::Unavailable(_))),
        "{result:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_garbage_answer_is_retried_once_into_a_success() {
    let (base, hits) = stub_wechat(|n| match n {
        0 => (Duration::ZERO, 200, "<html>oops</html>"),
        _ => (Duration::ZERO, 200, SUCCESS),
    })
    .await;
    let session = stub_client(&base).code_to_session("c").await.unwrap();
    assert_eq!(session.openid, "oStub");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn code_used_after_an_unanswered_attempt_is_unavailable_not_code_used() {
    let (base, hits) = stub_wechat(|n| match n {
        0 => (Duration::from_secs(8), 200, SUCCESS),
        _ => (
            Duration::ZERO,
            200,
            r#"{"errcode":40163,"errmsg":"code been used"}"#,
        ),
    })
    .await;
    let result = stub_client(&base).code_to_session("c").await;
    assert!(
        matches!(result, Err(WechatError::Unavailable(_))),
        "{result:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

// --- What the client logs ----------------------------------------------------------------

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// On a current-thread runtime the server's tasks run on this thread too, so the buffer gets
/// both the client's and the fake's log lines.
#[tokio::test(flavor = "current_thread")]
async fn the_client_logs_failures_without_secrets_codes_or_session_keys() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = spawn_app().await;
    let client = app.wechat_client();

    let (code, _) = app.mint_code_with(json!({})).await;
    let session = client.code_to_session(&code).await.unwrap();

    let (failing_code, _) = app.mint_code_with(json!({})).await;
    app.wechat_faults(json!({"errcode": -1, "count": 2})).await;
    assert!(client.code_to_session(&failing_code).await.is_err());

    let wrong_secret = "wrong-secret-for-the-log-test-31337";
    assert!(
        app.wechat_client_with_secret(wrong_secret)
            .code_to_session(&failing_code)
            .await
            .is_err()
    );
    assert!(client.code_to_session("never-minted").await.is_err());

    let text = logs.text();
    assert!(
        text.contains("WeChat code exchange failed"),
        "the failures were logged:\n{text}"
    );
    assert!(
        text.contains("retrying once"),
        "the retry was logged:\n{text}"
    );
    for secret in [
        FAKE_APP_SECRET,
        wrong_secret,
        session.session_key.expose_secret(),
        code.as_str(),
        failing_code.as_str(),
    ] {
        assert!(!text.contains(secret), "{secret:?} was logged:\n{text}");
    }
}
