//! Random secrets (tokens, tickets, device passwords) and the digest they are stored as.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::text::TextRule;

/// What [`random_token`] makes, as the spec states it for the tokens clients send back (bind
/// tickets): anything else is no token of ours, and is answered as an unknown one.
pub const TOKEN_RULE: TextRule = TextRule {
    min_chars: 43,
    max_chars: 43,
    pattern: Some("^[A-Za-z0-9_-]*$"),
    description: "43 characters of URL-safe base64, as issued.",
};

/// 256 random bits from the OS, URL-safe base64 (43 characters).
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// SHA-256 (hex) of a high-entropy secret: enough to store it, since nobody can guess 256
/// random bits (or a 100-bit claim code), and fast to look up; a slow password hash would make
/// every device login cost what a user login costs.
pub fn digest(secret: impl AsRef<[u8]>) -> String {
    hex::encode(Sha256::digest(secret.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_url_safe_characters_and_never_repeat() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(a, random_token());
        assert!(crate::service::text::rule_admits(&TOKEN_RULE, &a));
    }

    #[test]
    fn the_digest_is_sha256_in_hex() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
