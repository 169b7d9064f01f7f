//! The WeChat adapter: trading a `wx.login()` code for an openid, decrypting the user info the
//! mini program forwards, and the fake WeChat API that development mode and tests talk to.
//!
//! - [`crypto`]: AES-128-CBC decryption of `wx.getUserInfo` data, with the watermark checks.
//!
//! Nothing here logs or returns the app secret or a session key: the secret travels only in
//! the request to WeChat, and session keys only inside [`secrecy::SecretString`].

pub mod crypto;

pub use crypto::{DecryptError, decrypt_user_info};
