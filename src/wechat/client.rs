//! The client of WeChat's `sns/jscode2session`: trades a `wx.login()` code for the user's
//! openid, unionid and session_key.
//!
//! WeChat answers HTTP 200 for its own errors and puts an `errcode` in the body; the four that
//! say something about the user or the code become their own [`WechatError`] variants, and
//! everything else is [`WechatError::Unavailable`]. Transient failures (errcode -1, no answer
//! in time, a 5xx, an answer that is not WeChat's JSON) get one quick retry, all within a 5 s
//! budget, so a login never hangs on WeChat for longer than that.
//!
//! The app secret has to travel in the query string (that is WeChat's API), and reqwest puts
//! the URL in its errors; so no reqwest error is shown without stripping its URL, and every
//! reason is scrubbed of the secret once more before it leaves this module.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use crate::config::{Settings, WechatMode};

/// The whole exchange, retry included, ends within this.
pub const TOTAL_BUDGET: Duration = Duration::from_secs(5);

/// How long the first attempt may take before it counts as a timeout: a healthy WeChat answers
/// in well under a second, and a stuck connection should leave time for the retry.
const FIRST_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// The pause before the one retry.
const RETRY_DELAY: Duration = Duration::from_millis(100);

/// A retry with less time left than this could not get an answer anyway.
const MIN_RETRY_TIME: Duration = Duration::from_millis(200);

/// How many characters of WeChat's `errmsg` are kept in an error.
const ERRMSG_MAX_CHARS: usize = 120;

/// What WeChat says about the user behind a valid code.
#[derive(Debug, Clone)]
pub struct WechatSession {
    /// The user's id within our mini program.
    pub openid: String,
    /// The user's id across the WeChat open platform account, when the app is linked to one.
    pub unionid: Option<String>,
    /// The key of the user's encrypted data; it never leaves the server.
    pub session_key: SecretString,
}

/// Why a code did not give a session. The messages never contain the app secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WechatError {
    /// 40029: the code is unknown or expired.
    #[error("WeChat says the code is invalid or expired (40029)")]
    InvalidCode,
    /// 40163: the code was already traded.
    #[error("WeChat says the code was already used (40163)")]
    CodeUsed,
    /// 45011: our app hit WeChat's rate limit.
    #[error("WeChat's rate limit was reached (45011)")]
    RateLimited,
    /// 40226: WeChat flags the user as risky and refuses the login.
    #[error("WeChat refuses this user (40226)")]
    Denied,
    /// Anything else: -1, timeouts, 5xx, unparsable answers, unexpected errcodes. The reason
    /// is for logs and never contains a secret.
    #[error("WeChat is unavailable: {0}")]
    Unavailable(String),
}

/// A client for one mini program (appid and secret). Cheap to clone: the connection pool is
/// shared.
#[derive(Clone)]
pub struct WechatClient {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    appid: String,
    secret: SecretString,
}

impl std::fmt::Debug for WechatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

/// One try's result: final, or worth the one retry.
enum Attempt {
    Final(Result<WechatSession, WechatError>),
    Transient {
        reason: String,
        /// False when WeChat may have received the code without us seeing its answer.
        answered: bool,
    },
}

impl WechatClient {
    /// A client for the API at `api_base` (`https://api.weixin.qq.com`, or the fake's
    /// `http://…/dev/wechat`).
    pub fn new(api_base: &str, appid: &str, secret: SecretString) -> anyhow::Result<Self> {
        let endpoint = format!("{}/sns/jscode2session", api_base.trim_end_matches('/'));
        let endpoint = reqwest::Url::parse(&endpoint)
            .with_context(|| format!("the WeChat API base {api_base:?} is not a URL"))?;
        if !matches!(endpoint.scheme(), "https" | "http") {
            anyhow::bail!("the WeChat API base {api_base:?} is not an http(s) URL");
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("iotbind/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(2))
            .timeout(TOTAL_BUDGET)
            // A redirect would carry the secret in our query to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the WeChat HTTP client")?;
        Ok(WechatClient {
            http,
            endpoint,
            appid: appid.to_owned(),
            secret,
        })
    }

    /// The client the settings call for: the real API with the configured secret, or in
    /// development the fake this same process serves at `http_addr`.
    pub fn from_settings(settings: &Settings, http_addr: SocketAddr) -> anyhow::Result<Self> {
        match &settings.wechat.mode {
            WechatMode::Real { secret } => Self::new(
                &settings.wechat.api_base,
                &settings.wechat.appid,
                secret.clone(),
            ),
            WechatMode::Fake => {
                let ip = match http_addr.ip() {
                    IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                    ip => ip,
                };
                let base = format!(
                    "http://{}{}",
                    SocketAddr::new(ip, http_addr.port()),
                    super::fake::MOUNT_PATH
                );
                Self::new(
                    &base,
                    &settings.wechat.appid,
                    SecretString::from(super::fake::FAKE_APP_SECRET),
                )
            }
        }
    }

    /// The appid this client speaks for (and the appid encrypted data must carry).
    pub fn appid(&self) -> &str {
        &self.appid
    }

    /// GET {base}/sns/jscode2session?appid=&secret=&js_code=&grant_type=authorization_code
    ///
    /// At most two requests (one quick retry for transient failures), and never longer than
    /// [`TOTAL_BUDGET`]. The code itself is never logged: for the 60 s that its answer is
    /// remembered, it is as good as a credential.
    pub async fn code_to_session(&self, code: &str) -> Result<WechatSession, WechatError> {
        let started = Instant::now();
        let deadline = started + TOTAL_BUDGET;

        let first = self
            .attempt_until(code, started + FIRST_ATTEMPT_TIMEOUT)
            .await;
        let (first_reason, first_answered) = match first {
            Attempt::Final(result) => return self.finish(result, 1),
            Attempt::Transient { reason, answered } => (reason, answered),
        };

        let left = deadline.saturating_duration_since(Instant::now());
        if left < RETRY_DELAY + MIN_RETRY_TIME {
            return self.finish(Err(WechatError::Unavailable(first_reason)), 1);
        }
        tracing::debug!(
            reason = %self.scrub(&first_reason),
            "WeChat code exchange failed; retrying once"
        );
        tokio::time::sleep(RETRY_DELAY).await;

        let result = match self.attempt_until(code, deadline).await {
            Attempt::Final(Err(WechatError::CodeUsed)) if !first_answered => {
                Err(WechatError::Unavailable(format!(
                    "the first attempt got no answer ({first_reason}) and may have used the \
                     code: the retry was told it is used"
                )))
            }
            Attempt::Final(result) => result,
            Attempt::Transient { reason, .. } if reason == first_reason => Err(
                WechatError::Unavailable(format!("{reason} (on both attempts)")),
            ),
            Attempt::Transient { reason, .. } => Err(WechatError::Unavailable(format!(
                "{reason} (after a retry; first attempt: {first_reason})"
            ))),
        };
        self.finish(result, 2)
    }

    async fn attempt_until(&self, code: &str, until: Instant) -> Attempt {
        match tokio::time::timeout_at(until, self.attempt(code)).await {
            Ok(attempt) => attempt,
            Err(_) => Attempt::Transient {
                reason: "no answer in time".to_owned(),
                answered: false,
            },
        }
    }

    async fn attempt(&self, code: &str) -> Attempt {
        let request = self.http.get(self.endpoint.clone()).query(&[
            ("appid", self.appid.as_str()),
            ("secret", self.secret.expose_secret()),
            ("js_code", code),
            ("grant_type", "authorization_code"),
        ]);
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                return Attempt::Transient {
                    reason: describe(err),
                    answered: false,
                };
            }
        };
        let status = response.status();
        if status.is_server_error() {
            return Attempt::Transient {
                reason: format!("HTTP {status}"),
                answered: true,
            };
        }
        if !status.is_success() {
            return Attempt::Final(Err(WechatError::Unavailable(format!(
                "unexpected HTTP {status}"
            ))));
        }
        match response.bytes().await {
            Ok(body) => parse_answer(&body),
            Err(err) => Attempt::Transient {
                reason: describe(err),
                answered: false,
            },
        }
    }

    /// Scrubs, logs, and returns the final result.
    fn finish(
        &self,
        result: Result<WechatSession, WechatError>,
        attempts: u32,
    ) -> Result<WechatSession, WechatError> {
        match result {
            Ok(session) => {
                tracing::debug!(attempts, "WeChat code exchanged");
                Ok(session)
            }
            Err(WechatError::Unavailable(reason)) => {
                let reason = self.scrub(&reason);
                tracing::warn!(attempts, reason = %reason, "WeChat code exchange failed");
                Err(WechatError::Unavailable(reason))
            }
            Err(err) => {
                tracing::debug!(attempts, error = %err, "WeChat refused the code");
                Err(err)
            }
        }
    }

    /// The secret has no business in a reason; this makes sure of it whatever produced it.
    fn scrub(&self, reason: &str) -> String {
        let secret = self.secret.expose_secret();
        if secret.is_empty() {
            reason.to_owned()
        } else {
            reason.replace(secret, "[redacted]")
        }
    }
}

/// What WeChat's body says. Every field is optional: success and error share one shape.
#[derive(serde::Deserialize)]
struct Answer {
    openid: Option<String>,
    session_key: Option<String>,
    unionid: Option<String>,
    errcode: Option<i64>,
    errmsg: Option<String>,
}

fn parse_answer(body: &[u8]) -> Attempt {
    let Ok(answer) = serde_json::from_slice::<Answer>(body) else {
        return Attempt::Transient {
            reason: "the answer is not WeChat's JSON".to_owned(),
            answered: true,
        };
    };
    let error = match answer.errcode {
        None | Some(0) => None,
        Some(40029) => Some(WechatError::InvalidCode),
        Some(40163) => Some(WechatError::CodeUsed),
        Some(45011) => Some(WechatError::RateLimited),
        Some(40226) => Some(WechatError::Denied),
        Some(-1) => {
            return Attempt::Transient {
                reason: "WeChat system error (errcode -1)".to_owned(),
                answered: true,
            };
        }
        Some(errcode) => {
            let errmsg: String = answer
                .errmsg
                .unwrap_or_default()
                .chars()
                .take(ERRMSG_MAX_CHARS)
                .collect();
            Some(WechatError::Unavailable(format!(
                "WeChat answered errcode {errcode}: {errmsg}"
            )))
        }
    };
    if let Some(error) = error {
        return Attempt::Final(Err(error));
    }
    // Identifiers are stored as text: empty ones, or ones with a control character (a NUL,
    // which PostgreSQL refuses), are not WeChat's.
    let usable = |id: &String| !id.is_empty() && !id.chars().any(char::is_control);
    match (answer.openid, answer.session_key) {
        (Some(openid), Some(session_key)) if usable(&openid) && usable(&session_key) => {
            Attempt::Final(Ok(WechatSession {
                openid,
                unionid: answer.unionid.filter(usable),
                session_key: SecretString::from(session_key),
            }))
        }
        _ => Attempt::Transient {
            reason: "the answer has neither an openid and session_key nor an errcode".to_owned(),
            answered: true,
        },
    }
}

/// A reqwest error without its URL (which carries the secret), with its causes.
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    if err.is_timeout() {
        return "no answer in time".to_owned();
    }
    let mut text = if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        err.to_string()
    };
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigArgs;

    fn final_error(attempt: Attempt) -> WechatError {
        match attempt {
            Attempt::Final(Err(err)) => err,
            Attempt::Final(Ok(_)) => panic!("expected an error, got a session"),
            Attempt::Transient { reason, .. } => panic!("expected a final error, got {reason}"),
        }
    }

    fn is_transient(attempt: &Attempt) -> bool {
        matches!(attempt, Attempt::Transient { .. })
    }

    #[test]
    fn a_success_answer_gives_openid_unionid_and_session_key() {
        let body = br#"{"openid":"o1","session_key":"a2V5","unionid":"u1"}"#;
        let Attempt::Final(Ok(session)) = parse_answer(body) else {
            panic!("expected a session");
        };
        assert_eq!(session.openid, "o1");
        assert_eq!(session.unionid.as_deref(), Some("u1"));
        assert_eq!(session.session_key.expose_secret(), "a2V5");
    }

    #[test]
    fn the_four_user_errcodes_are_final_and_mapped() {
        for (errcode, expected) in [
            (40029, "InvalidCode"),
            (40163, "CodeUsed"),
            (45011, "RateLimited"),
            (40226, "Denied"),
        ] {
            let body = format!(r#"{{"errcode":{errcode},"errmsg":"x"}}"#);
            let err = final_error(parse_answer(body.as_bytes()));
            assert_eq!(format!("{err:?}"), expected);
        }
    }

    #[test]
    fn errcode_minus_one_is_worth_a_retry() {
        assert!(is_transient(&parse_answer(
            br#"{"errcode":-1,"errmsg":"system error"}"#
        )));
    }

    #[test]
    fn html_garbage_and_empty_objects_are_worth_a_retry() {
        assert!(is_transient(&parse_answer(b"<html>502 Bad Gateway</html>")));
        assert!(is_transient(&parse_answer(b"\x00\x01garbage")));
        assert!(is_transient(&parse_answer(b"{}")));
        assert!(is_transient(&parse_answer(br#"{"errcode":"40029"}"#)));
    }

    #[test]
    fn an_openid_with_a_control_character_is_garbage_and_such_a_unionid_is_left_out() {
        assert!(is_transient(&parse_answer(
            br#"{"openid":"o\u00001","session_key":"a2V5"}"#
        )));
        let Attempt::Final(Ok(session)) =
            parse_answer(br#"{"openid":"o1","session_key":"a2V5","unionid":"u\u00001"}"#)
        else {
            panic!("expected a session");
        };
        assert_eq!(session.unionid, None);
    }

    #[test]
    fn an_unknown_errcode_is_unavailable_with_its_message() {
        let err = final_error(parse_answer(
            br#"{"errcode":40013,"errmsg":"invalid appid"}"#,
        ));
        assert!(matches!(&err, WechatError::Unavailable(reason) if reason.contains("40013")));
    }

    #[test]
    fn a_secret_in_a_reason_is_scrubbed() {
        let client = WechatClient::new(
            "https://api.weixin.qq.com",
            "wx1",
            SecretString::from("topsecret"),
        )
        .unwrap();
        assert_eq!(
            client.scrub("url ?secret=topsecret&x=1"),
            "url ?secret=[redacted]&x=1"
        );
    }

    #[test]
    fn the_debug_output_shows_no_secret() {
        let client = WechatClient::new(
            "https://api.weixin.qq.com/",
            "wx1",
            SecretString::from("topsecret"),
        )
        .unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains("topsecret"));
        assert!(debug.contains("https://api.weixin.qq.com/sns/jscode2session"));
    }

    #[test]
    fn an_api_base_that_is_not_http_is_refused() {
        assert!(WechatClient::new("ftp://x", "wx1", SecretString::from("s")).is_err());
        assert!(WechatClient::new("not a url", "wx1", SecretString::from("s")).is_err());
    }

    #[test]
    fn development_mode_talks_to_the_fake_on_this_process() {
        let settings = Settings::from_args(&ConfigArgs::default()).unwrap();
        let client =
            WechatClient::from_settings(&settings, "0.0.0.0:8080".parse().unwrap()).unwrap();
        assert_eq!(
            client.endpoint.as_str(),
            "http://127.0.0.1:8080/dev/wechat/sns/jscode2session"
        );
        assert_eq!(
            client.secret.expose_secret(),
            super::super::fake::FAKE_APP_SECRET
        );
    }

    #[test]
    fn a_configured_secret_talks_to_the_configured_api() {
        let settings = Settings::from_args(&ConfigArgs {
            wechat_appid: Some("wx123".into()),
            wechat_secret: Some("s3cret".into()),
            ..ConfigArgs::default()
        })
        .unwrap();
        let client =
            WechatClient::from_settings(&settings, "127.0.0.1:8080".parse().unwrap()).unwrap();
        assert_eq!(
            client.endpoint.as_str(),
            "https://api.weixin.qq.com/sns/jscode2session"
        );
        assert_eq!(client.appid(), "wx123");
    }
}
