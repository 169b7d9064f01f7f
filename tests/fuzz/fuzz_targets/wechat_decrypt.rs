//! Fuzzes the decryption of WeChat's encrypted user info (`POST /me/wechat/profile`).
//!
//! The first byte picks the mode:
//! - even: raw. The rest is `session_key \n encrypted_data \n iv`, as a client could send
//!   them (the key is ours in reality, but fuzzing it too costs nothing). Only "never panics"
//!   and "a success carries our appid" can be checked.
//! - odd: plaintext. The rest is what WeChat would have encrypted; we encrypt it with a known
//!   key, so the fuzzer reaches the JSON and watermark checks behind the padding, which random
//!   ciphertext almost never gets past. Well-formed input is never `Malformed`; a success is
//!   exactly the plaintext's JSON with our appid; the same data under another key never
//!   decrypts.
#![no_main]

use aes::Aes128;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockEncryptMut, KeyIvInit};
use chrono::{DateTime, Utc};
use iotbind::wechat::crypto::{DecryptError, decrypt_user_info};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The appid of WeChat's official test vector, whose watermark the seeds carry.
const APPID: &str = "wx4f4bc4dec97d474b";
/// The official vector's watermark time: the seeds decrypt as fresh at this clock.
const NOW_UNIX: i64 = 1_477_314_187;
const KEY: [u8; 16] = *b"fuzz-session-key";
const OTHER_KEY: [u8; 16] = *b"another-sess-key";
const IV: [u8; 16] = *b"fuzz-iv-16-bytes";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let now = DateTime::<Utc>::from_timestamp(NOW_UNIX, 0).expect("a valid time");
    if mode % 2 == 0 {
        raw(rest, now);
    } else {
        plaintext(rest, now);
    }
});

fn raw(input: &[u8], now: DateTime<Utc>) {
    let text = String::from_utf8_lossy(input);
    let mut parts = text.splitn(3, '\n');
    let key = parts.next().unwrap_or_default();
    let encrypted = parts.next().unwrap_or_default();
    let iv = parts.next().unwrap_or_default();
    if let Ok(data) = decrypt_user_info(key, encrypted, iv, APPID, now) {
        assert_eq!(data["watermark"]["appid"], APPID);
    }
}

fn plaintext(plain: &[u8], now: DateTime<Utc>) {
    let encrypt = |key: &[u8; 16]| {
        let ciphertext = cbc::Encryptor::<Aes128>::new(key.into(), &IV.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plain);
        STANDARD.encode(ciphertext)
    };
    let (key_b64, iv_b64) = (STANDARD.encode(KEY), STANDARD.encode(IV));
    let result = decrypt_user_info(&key_b64, &encrypt(&KEY), &iv_b64, APPID, now);
    match &result {
        Ok(data) => {
            let expected: Value = serde_json::from_slice(plain).expect("a success was JSON");
            assert_eq!(data, &expected);
            assert_eq!(data["watermark"]["appid"], APPID);
        }
        Err(DecryptError::Malformed(why)) => panic!("well-formed input called malformed: {why}"),
        Err(DecryptError::Undecryptable) => {
            // Only bytes that are not JSON, or JSON without a usable watermark, get here.
            if let Ok(value) = serde_json::from_slice::<Value>(plain) {
                let watermark = &value["watermark"];
                assert!(
                    !watermark["appid"].is_string() || watermark["timestamp"].as_i64().is_none(),
                    "a usable watermark called undecryptable: {value}"
                );
            }
        }
        Err(DecryptError::WrongAppid | DecryptError::Stale) => {}
    }
    // The session_key a newer wx.login() replaced: whatever the data, it must not decrypt.
    let stale = decrypt_user_info(
        &STANDARD.encode(OTHER_KEY),
        &encrypt(&KEY),
        &iv_b64,
        APPID,
        now,
    );
    assert!(stale.is_err(), "data decrypted under the wrong session_key");
}
