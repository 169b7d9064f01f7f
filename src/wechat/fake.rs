//! The fake WeChat API, served under `/dev/wechat` in development mode only.
//!
//! It answers `sns/jscode2session` the way WeChat does (HTTP 200 with an `errcode` for every
//! refusal), and adds three endpoints that play the parts WeChat and the phone would: mint the
//! code `wx.login()` would give (`POST /codes`), encrypt user info as `wx.getUserInfo` would
//! (`POST /encrypt`), and make the next exchanges fail or stall (`POST /faults`).
//!
//! This module is the fake's memory and rules; its HTTP operations live in
//! [`crate::api::development`], which the development spec describes under the `Development`
//! tag (the production spec never has them). Its state lives in memory and dies with the
//! process; expired codes are purged as new ones are minted, so a long-running development
//! server does not grow without bound.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use poem::http::StatusCode;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};

use super::crypto::encrypt_user_info;
use crate::service::text::TextRule;

/// The app secret the fake accepts; the client uses it in development mode. It guards
/// nothing: the fake only runs where there are no real users.
pub const FAKE_APP_SECRET: &str = "development-only-secret";

/// Where the app serves the fake WeChat API (see `api::development`).
pub const MOUNT_PATH: &str = "/dev/wechat";

/// How long a minted code can be traded, as with WeChat.
pub const CODE_TTL: Duration = Duration::from_secs(5 * 60);

/// Users whose last code is older than this are forgotten (their session_key with them).
const USER_TTL: Duration = Duration::from_secs(24 * 3600);

/// Purging walks every code, so it runs at most this often, however fast codes are minted.
const PURGE_INTERVAL: Duration = Duration::from_secs(1);

/// The longest `delay_ms` a fault may ask for.
const MAX_FAULT_DELAY_MS: u64 = 60_000;

/// The longest openid or unionid a caller may choose.
const MAX_ID_CHARS: usize = 128;

/// An openid or unionid a caller chooses, as the development spec states it.
pub const WECHAT_ID_RULE: TextRule = TextRule {
    min_chars: 1,
    max_chars: MAX_ID_CHARS,
    pattern: Some(r"^[\u0021-\u007E]*$"),
    description: "1–128 printable ASCII characters (no spaces).",
};

/// The fake's memory: one per app.
pub struct Fake {
    appid: String,
    secret: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    codes: HashMap<String, MintedCode>,
    users: HashMap<String, User>,
    fault: Option<Fault>,
    last_purge: Option<Instant>,
}

struct MintedCode {
    openid: String,
    unionid: Option<String>,
    session_key: [u8; 16],
    minted_at: Instant,
    used: bool,
}

struct User {
    unionid: Option<String>,
    session_key: [u8; 16],
    last_minted: Instant,
}

/// What the next `remaining` exchanges do instead of (or before) answering normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub errcode: Option<i64>,
    pub delay: Option<Duration>,
    remaining: u32,
}

/// The query of `jscode2session`, each parameter as sent (WeChat names a missing one).
pub struct ExchangeQuery {
    pub appid: Option<String>,
    pub secret: Option<String>,
    pub js_code: Option<String>,
    pub grant_type: Option<String>,
}

/// Whose `wx.login()` to play: a new random user when `openid` is left out.
#[derive(Default)]
pub struct MintRequest {
    pub openid: Option<String>,
    pub unionid: Option<String>,
}

/// User info to seal with `openid`'s current session_key.
pub struct EncryptRequest {
    pub openid: String,
    pub data: Value,
}

/// What the next `count` exchanges do instead of answering normally.
pub struct FaultRequest {
    pub errcode: Option<i64>,
    pub delay_ms: Option<u64>,
    pub count: u32,
}

/// A refusal of one of the fake's own endpoints (never of `jscode2session`, which answers
/// like WeChat).
#[derive(Debug, PartialEq, Eq)]
pub struct FakeError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl FakeError {
    /// 400 `invalid_request`, the answer to a body the fake cannot use.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        FakeError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: message.into(),
        }
    }
}

impl Fake {
    /// A fake that accepts `appid` and `secret` in `jscode2session`.
    pub fn new(appid: String, secret: String) -> Self {
        Fake {
            appid,
            secret,
            state: Mutex::new(State::default()),
        }
    }

    /// A panic elsewhere cannot leave this state half-written in a way that matters: every
    /// update is a single map operation.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spends one call of the pending fault, if any.
    pub fn take_fault(&self) -> Option<Fault> {
        let mut state = self.state();
        let fault = state.fault?;
        state.fault = (fault.remaining > 1).then_some(Fault {
            remaining: fault.remaining - 1,
            ..fault
        });
        Some(fault)
    }

    /// Replaces the pending fault; `count: 0` clears it.
    pub fn set_fault(&self, request: FaultRequest) -> Result<(), FakeError> {
        if request.count == 0 {
            self.state().fault = None;
            return Ok(());
        }
        if request.errcode.is_none() && request.delay_ms.is_none() {
            return Err(FakeError::invalid_request(
                "a fault needs an errcode, a delay_ms or both (count 0 clears)",
            ));
        }
        if request.delay_ms.is_some_and(|ms| ms > MAX_FAULT_DELAY_MS) {
            return Err(FakeError::invalid_request(format!(
                "delay_ms is at most {MAX_FAULT_DELAY_MS}"
            )));
        }
        self.state().fault = Some(Fault {
            errcode: request.errcode,
            delay: request.delay_ms.map(Duration::from_millis),
            remaining: request.count,
        });
        Ok(())
    }

    /// `jscode2session` without faults: WeChat's checks in WeChat's order.
    pub fn exchange(&self, query: &ExchangeQuery, now: Instant) -> Value {
        let Some(appid) = given(&query.appid) else {
            return wechat_error(41002);
        };
        let Some(secret) = given(&query.secret) else {
            return wechat_error(41004);
        };
        let Some(code) = given(&query.js_code) else {
            return wechat_error(41008);
        };
        if query.grant_type.as_deref() != Some("authorization_code") {
            return wechat_error(40002);
        }
        if appid != self.appid {
            return wechat_error(40013);
        }
        if secret != self.secret {
            return wechat_error(40125);
        }

        let mut state = self.state();
        let Some(minted) = state.codes.get_mut(code) else {
            return wechat_error(40029);
        };
        if now.saturating_duration_since(minted.minted_at) > CODE_TTL {
            return wechat_error(40029);
        }
        if minted.used {
            return wechat_error(40163);
        }
        minted.used = true;
        let mut answer = json!({
            "session_key": BASE64.encode(minted.session_key),
            "openid": minted.openid,
        });
        if let Some(unionid) = &minted.unionid {
            answer["unionid"] = json!(unionid);
        }
        answer
    }

    /// What `wx.login()` gives: a new code, and a fresh session_key for the user.
    pub fn mint(&self, request: MintRequest, now: Instant) -> Result<(String, String), FakeError> {
        let openid = match request.openid {
            Some(openid) => checked_id("openid", openid)?,
            None => random_wechat_id(),
        };
        let requested_unionid = request
            .unionid
            .map(|unionid| checked_id("unionid", unionid))
            .transpose()?;

        let mut state = self.state();
        state.purge(now);
        let unionid = requested_unionid.or_else(|| {
            state
                .users
                .get(&openid)
                .and_then(|user| user.unionid.clone())
        });
        let session_key: [u8; 16] = rand::random();
        state.users.insert(
            openid.clone(),
            User {
                unionid: unionid.clone(),
                session_key,
                last_minted: now,
            },
        );
        let code = loop {
            let candidate = random_code();
            if !state.codes.contains_key(&candidate) {
                break candidate;
            }
        };
        state.codes.insert(
            code.clone(),
            MintedCode {
                openid: openid.clone(),
                unionid,
                session_key,
                minted_at: now,
                used: false,
            },
        );
        Ok((code, openid))
    }

    /// Encrypts `data` with the user's current session_key, watermarked as WeChat does.
    pub fn encrypt(&self, request: EncryptRequest) -> Result<(String, String), FakeError> {
        let Value::Object(mut data) = request.data else {
            return Err(FakeError::invalid_request("data must be a JSON object"));
        };
        let session_key = self
            .state()
            .users
            .get(&request.openid)
            .map(|user| user.session_key)
            .ok_or_else(|| FakeError {
                status: StatusCode::NOT_FOUND,
                code: "unknown_openid",
                message: "no WeChat user has this openid here; mint a code for it first \
                          (POST /dev/wechat/codes)"
                    .to_owned(),
            })?;
        data.insert(
            "watermark".to_owned(),
            json!({"appid": self.appid, "timestamp": chrono::Utc::now().timestamp()}),
        );
        Ok(encrypt_user_info(&session_key, &Value::Object(data)))
    }
}

impl State {
    fn purge(&mut self, now: Instant) {
        if self
            .last_purge
            .is_some_and(|last| now.saturating_duration_since(last) < PURGE_INTERVAL)
        {
            return;
        }
        self.last_purge = Some(now);
        self.codes
            .retain(|_, code| now.saturating_duration_since(code.minted_at) <= CODE_TTL);
        self.users
            .retain(|_, user| now.saturating_duration_since(user.last_minted) <= USER_TTL);
    }
}

/// `jscode2session` as WeChat answers it, pending fault included: its delay first, then its
/// errcode instead of the exchange.
pub async fn answer_exchange(fake: &Fake, query: &ExchangeQuery) -> Value {
    let fault = fake.take_fault();
    if let Some(delay) = fault.and_then(|fault| fault.delay) {
        tokio::time::sleep(delay).await;
    }
    match fault.and_then(|fault| fault.errcode) {
        Some(errcode) => wechat_error(errcode),
        None => fake.exchange(query, Instant::now()),
    }
}

/// A query parameter that is present and not empty.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// WeChat's error answer, with its message for the codes it documents.
fn wechat_error(errcode: i64) -> Value {
    let message = match errcode {
        -1 => "system error",
        40002 => "invalid grant_type",
        40013 => "invalid appid",
        40029 => "invalid code",
        40125 => "invalid appsecret",
        40163 => "code been used",
        40226 => "high risk user",
        41002 => "appid missing",
        41004 => "appsecret missing",
        41008 => "missing code",
        45011 => "api minute-quota reach limit  mustslower  retry next minute",
        _ => "fault injected by the fake WeChat API",
    };
    let rid: [u32; 3] = rand::random();
    json!({
        "errcode": errcode,
        "errmsg": format!("{message}, rid: {:08x}-{:08x}-{:08x}", rid[0], rid[1], rid[2]),
    })
}

fn checked_id(field: &str, value: String) -> Result<String, FakeError> {
    let fits = (WECHAT_ID_RULE.min_chars..=WECHAT_ID_RULE.max_chars)
        .contains(&value.chars().count())
        && value.chars().all(|c| c.is_ascii_graphic());
    if fits {
        Ok(value)
    } else {
        Err(FakeError::invalid_request(format!(
            "{field} must be 1–{MAX_ID_CHARS} printable ASCII characters"
        )))
    }
}

/// An id shaped like WeChat's: `o` and 27 URL-safe base64 characters.
fn random_wechat_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    let rest: String = (0..27)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("o{rest}")
}

/// A code shaped like `wx.login()`'s: 32 letters and digits.
fn random_code() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPID: &str = "wxtest";

    fn fake() -> Fake {
        Fake::new(APPID.to_owned(), FAKE_APP_SECRET.to_owned())
    }

    fn query(code: &str) -> ExchangeQuery {
        ExchangeQuery {
            appid: Some(APPID.to_owned()),
            secret: Some(FAKE_APP_SECRET.to_owned()),
            js_code: Some(code.to_owned()),
            grant_type: Some("authorization_code".to_owned()),
        }
    }

    fn mint(fake: &Fake, now: Instant) -> (String, String) {
        fake.mint(MintRequest::default(), now).unwrap()
    }

    #[test]
    fn a_minted_code_trades_once_for_the_openid() {
        let fake = fake();
        let now = Instant::now();
        let (code, openid) = mint(&fake, now);
        let answer = fake.exchange(&query(&code), now);
        assert_eq!(answer["openid"], openid.as_str());
        assert!(answer.get("unionid").is_none());
        assert_eq!(fake.exchange(&query(&code), now)["errcode"], 40163);
    }

    #[test]
    fn a_code_older_than_five_minutes_is_40029() {
        let fake = fake();
        let minted_at = Instant::now();
        let (code, _) = mint(&fake, minted_at);
        let later = minted_at + CODE_TTL + Duration::from_secs(1);
        assert_eq!(fake.exchange(&query(&code), later)["errcode"], 40029);
    }

    #[test]
    fn a_code_is_still_good_at_five_minutes() {
        let fake = fake();
        let minted_at = Instant::now();
        let (code, _) = mint(&fake, minted_at);
        let answer = fake.exchange(&query(&code), minted_at + CODE_TTL);
        assert!(answer["openid"].is_string(), "{answer}");
    }

    #[test]
    fn minting_purges_expired_codes() {
        let fake = fake();
        let start = Instant::now();
        let (old, _) = mint(&fake, start);
        let later = start + CODE_TTL + Duration::from_secs(1);
        let (fresh, _) = mint(&fake, later);
        let state = fake.state();
        assert!(!state.codes.contains_key(&old));
        assert!(state.codes.contains_key(&fresh));
    }

    #[test]
    fn generated_openids_look_like_wechat_ones() {
        let fake = fake();
        let (code, openid) = mint(&fake, Instant::now());
        assert_eq!(openid.len(), 28);
        assert!(openid.starts_with('o'));
        assert_eq!(code.len(), 32);
    }

    #[test]
    fn each_code_gives_the_user_a_fresh_session_key() {
        let fake = fake();
        let now = Instant::now();
        let (first, openid) = mint(&fake, now);
        let again = MintRequest {
            openid: Some(openid),
            unionid: None,
        };
        let (second, _) = fake.mint(again, now).unwrap();
        let first_key = fake.exchange(&query(&first), now)["session_key"].clone();
        let second_key = fake.exchange(&query(&second), now)["session_key"].clone();
        assert_ne!(first_key, second_key);
    }

    #[test]
    fn a_unionid_given_once_stays_with_the_user() {
        let fake = fake();
        let now = Instant::now();
        let request = MintRequest {
            openid: Some("o-user".to_owned()),
            unionid: Some("u-user".to_owned()),
        };
        fake.mint(request, now).unwrap();
        let again = MintRequest {
            openid: Some("o-user".to_owned()),
            unionid: None,
        };
        let (code, _) = fake.mint(again, now).unwrap();
        assert_eq!(fake.exchange(&query(&code), now)["unionid"], "u-user");
    }

    #[test]
    fn the_wrong_appid_or_secret_gets_wechats_errcodes() {
        let fake = fake();
        let now = Instant::now();
        let (code, _) = mint(&fake, now);
        let wrong_appid = ExchangeQuery {
            appid: Some("wxother".to_owned()),
            ..query(&code)
        };
        assert_eq!(fake.exchange(&wrong_appid, now)["errcode"], 40013);
        let wrong_secret = ExchangeQuery {
            secret: Some("nope".to_owned()),
            ..query(&code)
        };
        assert_eq!(fake.exchange(&wrong_secret, now)["errcode"], 40125);
        let no_code = ExchangeQuery {
            js_code: None,
            ..query(&code)
        };
        assert_eq!(fake.exchange(&no_code, now)["errcode"], 41008);
        assert!(fake.exchange(&query(&code), now)["openid"].is_string());
    }

    #[test]
    fn a_fault_lasts_for_its_count_of_calls() {
        let fake = fake();
        fake.set_fault(FaultRequest {
            errcode: Some(-1),
            delay_ms: None,
            count: 2,
        })
        .unwrap();
        assert_eq!(fake.take_fault().and_then(|f| f.errcode), Some(-1));
        assert_eq!(fake.take_fault().and_then(|f| f.errcode), Some(-1));
        assert_eq!(fake.take_fault(), None);
    }

    #[test]
    fn a_fault_with_neither_errcode_nor_delay_is_refused() {
        let err = fake()
            .set_fault(FaultRequest {
                errcode: None,
                delay_ms: None,
                count: 1,
            })
            .unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn encrypting_for_an_unknown_openid_is_a_clear_404() {
        let err = fake()
            .encrypt(EncryptRequest {
                openid: "o-nobody".to_owned(),
                data: json!({}),
            })
            .unwrap_err();
        assert_eq!(err.status, StatusCode::NOT_FOUND);
        assert_eq!(err.code, "unknown_openid");
    }

    #[test]
    fn the_id_rule_the_development_spec_states_agrees_with_the_fake() {
        for sample in [
            "o-swagger-explorer",
            "",
            "a b",
            "é",
            &"o".repeat(128),
            &"o".repeat(129),
            "o\u{0}",
        ] {
            assert_eq!(
                crate::service::text::rule_admits(&WECHAT_ID_RULE, sample),
                checked_id("openid", sample.to_owned()).is_ok(),
                "{sample:?}"
            );
        }
    }
}
