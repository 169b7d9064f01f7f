//! WeChat's encrypted user info (`wx.getUserInfo`'s `encryptedData` and `iv`): AES-128-CBC
//! with PKCS#7 padding, keyed by the user's session_key, and checked by its watermark.
//!
//! The errors separate what a client sent wrongly ([`DecryptError::Malformed`], a foreign
//! appid, a stale watermark) from data that does not decrypt, whose likely cause is a
//! session_key that a newer `wx.login()` replaced: the two call for different answers
//! (400 `invalid_encrypted_data` and 409 `session_key_stale`).

use aes::Aes128;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use chrono::{DateTime, Utc};
use serde_json::Value;

type Aes128CbcDec = cbc::Decryptor<Aes128>;
type Aes128CbcEnc = cbc::Encryptor<Aes128>;

/// How far a watermark's timestamp may be from now, either way.
pub const WATERMARK_MAX_AGE_SECS: i64 = 24 * 3600;

/// Standard base64, with or without its trailing `=`: some clients strip the padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why encrypted user info was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecryptError {
    /// The input is wrong before any decryption: bad base64, or a key, iv or ciphertext of
    /// the wrong length.
    #[error("malformed encrypted data: {0}")]
    Malformed(&'static str),
    /// The data was encrypted for another mini program.
    #[error("the data's watermark names another appid")]
    WrongAppid,
    /// The watermark is more than 24 h away from now: old data replayed.
    #[error("the data's watermark is older than 24 hours")]
    Stale,
    /// Decryption gave bad padding, or something other than JSON with a watermark: usually
    /// the session_key is not the one the data was encrypted with.
    #[error("the data does not decrypt with this session_key")]
    Undecryptable,
}

/// Decrypts user info and checks its watermark against our `appid` and the clock `now`.
///
/// Returns the whole decrypted object (`openId`, `nickName`, `avatarUrl`, `unionId`,
/// `watermark`, …). `now` is a parameter so tests can use WeChat's 2016 test vectors.
pub fn decrypt_user_info(
    session_key_b64: &str,
    encrypted_data_b64: &str,
    iv_b64: &str,
    appid: &str,
    now: DateTime<Utc>,
) -> Result<Value, DecryptError> {
    let key = decode_16(
        session_key_b64,
        "session_key is not base64",
        "session_key is not 16 bytes",
    )?;
    let iv = decode_16(iv_b64, "iv is not base64", "iv is not 16 bytes")?;
    let ciphertext = BASE64
        .decode(encrypted_data_b64.trim())
        .map_err(|_| DecryptError::Malformed("encrypted_data is not base64"))?;
    if ciphertext.is_empty() {
        return Err(DecryptError::Malformed("encrypted_data is empty"));
    }
    if ciphertext.len() % 16 != 0 {
        return Err(DecryptError::Malformed(
            "encrypted_data is not a whole number of 16-byte blocks",
        ));
    }

    let plaintext = Aes128CbcDec::new(&key.into(), &iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(&ciphertext)
        .map_err(|_| DecryptError::Undecryptable)?;
    let data: Value =
        serde_json::from_slice(&plaintext).map_err(|_| DecryptError::Undecryptable)?;

    let watermark = data.get("watermark").ok_or(DecryptError::Undecryptable)?;
    let watermark_appid = watermark
        .get("appid")
        .and_then(Value::as_str)
        .ok_or(DecryptError::Undecryptable)?;
    let timestamp = watermark
        .get("timestamp")
        .and_then(Value::as_i64)
        .ok_or(DecryptError::Undecryptable)?;
    if watermark_appid != appid {
        return Err(DecryptError::WrongAppid);
    }
    if (now.timestamp() - timestamp).abs() > WATERMARK_MAX_AGE_SECS {
        return Err(DecryptError::Stale);
    }
    Ok(data)
}

/// Encrypts `data` as WeChat does, with a fresh random iv; returns `(encrypted_data, iv)` in
/// base64. The fake WeChat API uses it; `data` should already carry its watermark.
pub fn encrypt_user_info(session_key: &[u8; 16], data: &Value) -> (String, String) {
    encrypt_bytes(session_key, data.to_string().as_bytes())
}

fn encrypt_bytes(session_key: &[u8; 16], plaintext: &[u8]) -> (String, String) {
    let iv: [u8; 16] = rand::random();
    let ciphertext = Aes128CbcEnc::new(session_key.into(), &iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    (BASE64_OUT.encode(ciphertext), BASE64_OUT.encode(iv))
}

/// WeChat sends padded standard base64, so that is what we produce.
const BASE64_OUT: GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn decode_16(
    value: &str,
    not_base64: &'static str,
    wrong_length: &'static str,
) -> Result<[u8; 16], DecryptError> {
    let bytes = BASE64
        .decode(value.trim())
        .map_err(|_| DecryptError::Malformed(not_base64))?;
    bytes
        .try_into()
        .map_err(|_| DecryptError::Malformed(wrong_length))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    struct Vector {
        appid: String,
        session_key: String,
        iv: String,
        encrypted_data: String,
        plaintext: Value,
        timestamp: i64,
    }

    fn official_vector() -> Vector {
        // Compiled in, so the tests need nothing beside the source tree at run time.
        let file: Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/wechat_vectors.json"
        )))
        .expect("the vectors are JSON");
        let v = &file["decrypt_user_info"];
        let text = |field: &str| v[field].as_str().expect("a string field").to_owned();
        Vector {
            appid: text("appid"),
            session_key: text("session_key"),
            iv: text("iv"),
            encrypted_data: text("encrypted_data"),
            plaintext: v["plaintext"].clone(),
            timestamp: v["plaintext"]["watermark"]["timestamp"]
                .as_i64()
                .expect("a timestamp"),
        }
    }

    fn at(unix: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(unix, 0).single().expect("a valid time")
    }

    fn decrypt(v: &Vector, now: DateTime<Utc>) -> Result<Value, DecryptError> {
        decrypt_user_info(&v.session_key, &v.encrypted_data, &v.iv, &v.appid, now)
    }

    #[test]
    fn the_official_vector_decrypts_with_a_clock_at_its_watermark() {
        let v = official_vector();
        let data = decrypt(&v, at(v.timestamp)).unwrap();
        assert_eq!(data, v.plaintext);
        assert_eq!(data["nickName"], "Band");
    }

    #[test]
    fn the_official_vector_is_accepted_until_24_hours_after_its_watermark() {
        let v = official_vector();
        assert!(decrypt(&v, at(v.timestamp + WATERMARK_MAX_AGE_SECS)).is_ok());
        assert_eq!(
            decrypt(&v, at(v.timestamp + WATERMARK_MAX_AGE_SECS + 1)),
            Err(DecryptError::Stale)
        );
    }

    #[test]
    fn the_official_vector_is_stale_with_todays_clock() {
        let v = official_vector();
        assert_eq!(decrypt(&v, Utc::now()), Err(DecryptError::Stale));
    }

    #[test]
    fn the_official_vector_is_refused_for_another_appid() {
        let v = official_vector();
        let result = decrypt_user_info(
            &v.session_key,
            &v.encrypted_data,
            &v.iv,
            "wx0000000000000000",
            at(v.timestamp),
        );
        assert_eq!(result, Err(DecryptError::WrongAppid));
    }

    #[test]
    fn a_wrong_session_key_is_undecryptable() {
        let v = official_vector();
        let other_key = BASE64_OUT.encode([7u8; 16]);
        let result = decrypt_user_info(
            &other_key,
            &v.encrypted_data,
            &v.iv,
            &v.appid,
            at(v.timestamp),
        );
        assert_eq!(result, Err(DecryptError::Undecryptable));
    }

    #[test]
    fn bad_base64_is_malformed() {
        let v = official_vector();
        let now = at(v.timestamp);
        let bad = "not base64 at all!";
        assert!(matches!(
            decrypt_user_info(bad, &v.encrypted_data, &v.iv, &v.appid, now),
            Err(DecryptError::Malformed(_))
        ));
        assert!(matches!(
            decrypt_user_info(&v.session_key, bad, &v.iv, &v.appid, now),
            Err(DecryptError::Malformed(_))
        ));
        assert!(matches!(
            decrypt_user_info(&v.session_key, &v.encrypted_data, bad, &v.appid, now),
            Err(DecryptError::Malformed(_))
        ));
    }

    #[test]
    fn an_iv_of_15_bytes_is_malformed() {
        let v = official_vector();
        let iv = BASE64_OUT.encode([0u8; 15]);
        assert_eq!(
            decrypt_user_info(
                &v.session_key,
                &v.encrypted_data,
                &iv,
                &v.appid,
                at(v.timestamp)
            ),
            Err(DecryptError::Malformed("iv is not 16 bytes"))
        );
    }

    #[test]
    fn a_session_key_of_15_bytes_is_malformed() {
        let v = official_vector();
        let key = BASE64_OUT.encode([0u8; 15]);
        assert_eq!(
            decrypt_user_info(&key, &v.encrypted_data, &v.iv, &v.appid, at(v.timestamp)),
            Err(DecryptError::Malformed("session_key is not 16 bytes"))
        );
    }

    #[test]
    fn a_ciphertext_of_17_bytes_is_malformed() {
        let v = official_vector();
        let ciphertext = BASE64_OUT.encode([0u8; 17]);
        assert!(matches!(
            decrypt_user_info(
                &v.session_key,
                &ciphertext,
                &v.iv,
                &v.appid,
                at(v.timestamp)
            ),
            Err(DecryptError::Malformed(_))
        ));
    }

    #[test]
    fn an_empty_ciphertext_is_malformed() {
        let v = official_vector();
        assert!(matches!(
            decrypt_user_info(&v.session_key, "", &v.iv, &v.appid, at(v.timestamp)),
            Err(DecryptError::Malformed(_))
        ));
    }

    #[test]
    fn base64_without_its_padding_is_accepted() {
        let v = official_vector();
        let result = decrypt_user_info(
            v.session_key.trim_end_matches('='),
            v.encrypted_data.trim_end_matches('='),
            v.iv.trim_end_matches('='),
            &v.appid,
            at(v.timestamp),
        );
        assert!(result.is_ok());
    }

    #[test]
    fn what_encrypt_produces_decrypts_to_the_same_data() {
        let key = [42u8; 16];
        let now = Utc::now();
        let data = json!({
            "nickName": "Ada",
            "watermark": {"appid": "wxapp", "timestamp": now.timestamp()}
        });
        let (encrypted, iv) = encrypt_user_info(&key, &data);
        let decrypted =
            decrypt_user_info(&BASE64_OUT.encode(key), &encrypted, &iv, "wxapp", now).unwrap();
        assert_eq!(decrypted, data);
    }

    #[test]
    fn two_encryptions_of_the_same_data_use_different_ivs() {
        let data = json!({"a": 1});
        let (first, first_iv) = encrypt_user_info(&[1u8; 16], &data);
        let (second, second_iv) = encrypt_user_info(&[1u8; 16], &data);
        assert_ne!(first_iv, second_iv);
        assert_ne!(first, second);
    }

    /// Decrypts what was encrypted with the raw `key` for the app `wxapp`, as of now.
    fn decrypt_for_wxapp_now(
        key: &[u8; 16],
        encrypted: &str,
        iv: &str,
    ) -> Result<serde_json::Value, DecryptError> {
        decrypt_user_info(&BASE64_OUT.encode(key), encrypted, iv, "wxapp", Utc::now())
    }

    #[test]
    fn data_without_a_watermark_is_undecryptable() {
        let key = [3u8; 16];
        let (encrypted, iv) = encrypt_user_info(&key, &json!({"nickName": "Ada"}));
        assert_eq!(
            decrypt_for_wxapp_now(&key, &encrypted, &iv),
            Err(DecryptError::Undecryptable)
        );
    }

    #[test]
    fn a_plaintext_that_is_not_json_is_undecryptable() {
        let key = [5u8; 16];
        let (encrypted, iv) = encrypt_bytes(&key, b"\xff\xfe not JSON");
        assert_eq!(
            decrypt_for_wxapp_now(&key, &encrypted, &iv),
            Err(DecryptError::Undecryptable)
        );
    }

    #[test]
    fn a_watermark_from_more_than_a_day_ahead_is_stale() {
        let key = [9u8; 16];
        let now = Utc::now();
        let data =
            json!({"watermark": {"appid": "wxapp", "timestamp": now.timestamp() + 2 * 86400}});
        let (encrypted, iv) = encrypt_user_info(&key, &data);
        assert_eq!(
            decrypt_user_info(&BASE64_OUT.encode(key), &encrypted, &iv, "wxapp", now),
            Err(DecryptError::Stale)
        );
    }
}
