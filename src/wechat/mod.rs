//! The WeChat adapter: trading a `wx.login()` code for an openid, decrypting the user info the
//! mini program forwards, and the fake WeChat API that development mode and tests talk to.
//!
//! - [`client`]: `sns/jscode2session` over HTTPS, with WeChat's errcodes mapped to
//!   [`client::WechatError`], one quick retry for transient failures, and a 5 s budget.
//! - [`crypto`]: AES-128-CBC decryption of `wx.getUserInfo` data, with the watermark checks.
//! - [`fake`]: the same API served by this process under `/dev/wechat`, plus the
//!   helpers a developer needs to play the mini program's part (mint codes, encrypt data,
//!   inject faults).
//!
//! Nothing here logs or returns the app secret or a session key: the secret travels only in
//! the request to WeChat, and session keys only inside [`secrecy::SecretString`].

pub mod client;
pub mod crypto;
pub mod fake;

pub use client::{WechatClient, WechatError, WechatSession};
pub use crypto::{DecryptError, decrypt_user_info};
