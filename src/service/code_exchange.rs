//! Trading a `wx.login()` code for the WeChat session, once per code.
//!
//! A mini program often sends the same code twice (a double tap, a retry after a lost
//! response). WeChat answers a code only once; the second call would be `code_used`. So the
//! first successful answer is remembered for 60 s under the code's SHA-256, and concurrent
//! requests for one code wait for the single call in flight. Failures are not remembered: after
//! a timeout or a rate limit the same code may be tried again.

use std::time::Duration;

use moka::future::Cache;
use sha2::{Digest, Sha256};

use super::text::TextRule;
use crate::wechat::client::{WechatClient, WechatError, WechatSession};

/// What a `wx.login()` code may be: WeChat's are 32 characters; anything outside these bounds
/// is not one, and is refused as WeChat would refuse it, without asking.
pub const WECHAT_CODE_RULE: TextRule = TextRule {
    min_chars: 1,
    max_chars: 256,
    pattern: None,
    description: "The one-time code from `wx.login()`: 1–256 characters.",
};

/// How long a code's answer is remembered.
pub const REMEMBER_FOR: Duration = Duration::from_secs(60);

/// How many answers are remembered at most: 60 s of logins at over 3,000 a second. Past it,
/// the least used are forgotten first; a repeat of a forgotten code gets WeChat's `code_used`,
/// as it would without this cache.
const MAX_REMEMBERED: u64 = 200_000;

/// Single-flight, remembering front of the WeChat client.
///
/// moka expires entries on its own, so a login costs the same however many answers are
/// remembered; a map swept on every call would scan every code of the last minute per login.
pub struct CodeExchange {
    client: WechatClient,
    answers: Cache<[u8; 32], WechatSession>,
}

impl CodeExchange {
    pub fn new(client: WechatClient) -> Self {
        CodeExchange {
            client,
            answers: Cache::builder()
                .max_capacity(MAX_REMEMBERED)
                .time_to_live(REMEMBER_FOR)
                .build(),
        }
    }

    /// WeChat's session for `code`: remembered, joined in flight, or asked for now.
    ///
    /// Requests that join a call in flight share its outcome, failure included; a failure is
    /// not kept, so the next request for the code asks WeChat again.
    pub async fn exchange(&self, code: &str) -> Result<WechatSession, WechatError> {
        let length = code.chars().count();
        if !(WECHAT_CODE_RULE.min_chars..=WECHAT_CODE_RULE.max_chars).contains(&length) {
            return Err(WechatError::InvalidCode);
        }
        let key: [u8; 32] = Sha256::digest(code.as_bytes()).into();
        self.answers
            .try_get_with(key, self.client.code_to_session(code))
            .await
            .map_err(|shared| WechatError::clone(&shared))
    }
}
