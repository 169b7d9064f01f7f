//! Password hashing with argon2id, kept off the async runtime.
//!
//! One hash costs ~19 MiB and tens of milliseconds of a core. Run inline, twenty concurrent
//! logins would stall every other request on the runtime's few threads; so each hash runs on
//! the blocking pool, and a semaphore sized to the cores keeps a login burst from also
//! exhausting memory and the pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

/// argon2id parameters: m = 19 MiB, t = 2, p = 1 (OWASP's first recommendation).
fn argon2() -> anyhow::Result<Argon2<'static>> {
    let params = Params::new(19 * 1024, 2, 1, None)
        .map_err(|e| anyhow::anyhow!("argon2 parameters rejected: {e}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes and verifies passwords on the blocking pool, a bounded number at a time.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// argon2 runs so far (hashes and verifications): the work the attempt limits exist to
    /// save, so an operator (`/metrics`) and a test can see what a request cost.
    runs: Arc<AtomicU64>,
}

impl PasswordHasher {
    /// `concurrency` is how many hashes may run at once; the number of cores is right.
    pub fn new(concurrency: usize) -> Self {
        PasswordHasher {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            runs: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many hashes and verifications this hasher has run.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Sized to the machine's cores.
    pub fn for_this_machine() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) with a fresh random salt.
    pub async fn hash(&self, password: SecretString) -> anyhow::Result<String> {
        self.run("hash", move || {
            let salt_bytes: [u8; 16] = rand::random();
            let salt = SaltString::encode_b64(&salt_bytes)
                .map_err(|e| anyhow::anyhow!("cannot encode salt: {e}"))?;
            let hash = argon2()?
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))?;
            Ok(hash.to_string())
        })
        .await
    }

    /// True when `password` matches `phc`; an unparsable stored hash is an error, not a "no".
    pub async fn verify(&self, password: SecretString, phc: String) -> anyhow::Result<bool> {
        self.run("verify", move || {
            let parsed = PasswordHash::new(&phc)
                .map_err(|e| anyhow::anyhow!("stored password hash is not a PHC string: {e}"))?;
            Ok(argon2()?
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok())
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .context("password hasher is shut down")?;
        self.runs.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::PASSWORD_HASHES, "operation" => operation).increment(1);
        tokio::task::spawn_blocking(work)
            .await
            .context("password hashing task panicked")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_own_password_and_no_other() {
        let hasher = PasswordHasher::new(2);
        let phc = hasher
            .hash(SecretString::from("correct horse"))
            .await
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            hasher
                .verify(SecretString::from("correct horse"), phc.clone())
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(SecretString::from("Correct horse"), phc)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn the_same_password_gets_a_different_salt_each_time() {
        let hasher = PasswordHasher::new(1);
        let a = hasher
            .hash(SecretString::from("same password"))
            .await
            .unwrap();
        let b = hasher
            .hash(SecretString::from("same password"))
            .await
            .unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn a_corrupt_stored_hash_is_an_error() {
        let hasher = PasswordHasher::new(1);
        assert!(
            hasher
                .verify(SecretString::from("x"), "not-a-hash".into())
                .await
                .is_err()
        );
    }
}
