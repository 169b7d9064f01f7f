//! Trading a `wx.login()` code for the WeChat session, once per code.
//!
//! A mini program often sends the same code twice (a double tap, a retry after a lost
//! response). WeChat answers a code only once; the second call would be `code_used`. So the
//! first successful answer is remembered for 60 s under the code's SHA-256, and concurrent
//! requests for one code wait for the single call in flight. Failures are not remembered: after
//! a timeout or a rate limit the same code may be tried again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::wechat::client::{WechatClient, WechatError, WechatSession};

/// How long a code's answer is remembered.
pub const REMEMBER_FOR: Duration = Duration::from_secs(60);

type Slot = Arc<OnceCell<WechatSession>>;

/// Single-flight, remembering front of the WeChat client.
pub struct CodeExchange {
    client: WechatClient,
    slots: Mutex<HashMap<[u8; 32], (Instant, Slot)>>,
}

impl CodeExchange {
    pub fn new(client: WechatClient) -> Self {
        CodeExchange {
            client,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// WeChat's session for `code`: remembered, joined in flight, or asked for now.
    pub async fn exchange(&self, code: &str) -> Result<WechatSession, WechatError> {
        let key: [u8; 32] = Sha256::digest(code.as_bytes()).into();
        let slot = {
            let mut slots = self
                .slots
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = Instant::now();
            slots.retain(|_, (created, _)| now.duration_since(*created) < REMEMBER_FOR);
            slots
                .entry(key)
                .or_insert_with(|| (now, Arc::new(OnceCell::new())))
                .1
                .clone()
        };
        slot.get_or_try_init(|| self.client.code_to_session(code))
            .await
            .cloned()
    }
}
