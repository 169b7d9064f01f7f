//! Access tokens (HS256 JWTs) and refresh tokens (random, single use, in families).
//!
//! A refresh token is exchanged for a new pair exactly once; the database's conditional
//! UPDATE picks the one winner among concurrent exchanges. A spent token seen again soon after
//! is a mini program whose parallel requests all noticed the expiry (answered 409, nothing
//! revoked); seen later, it is a stolen copy, and the whole family is revoked.

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveEnum, ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    QueryFilter, Set, TransactionTrait,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::clock::{Clock, system_ms};
use super::secrets::{digest, random_token};
use crate::entity::users::Role;
use crate::entity::{refresh_families, refresh_tokens, server_secrets, users};

/// `iss` of every access token.
pub const ISSUER: &str = "iotbind";
/// `aud` of every access token.
pub const AUDIENCE: &str = "iotbind-api";
/// Clock skew tolerated between replicas when checking `exp`.
const LEEWAY_SECS: u64 = 5;

/// Why a refresh or an access token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the access token is missing, malformed, expired or not ours")]
    InvalidAccessToken,
    #[error("unknown, expired or revoked refresh token")]
    InvalidRefreshToken,
    #[error("the refresh token was already exchanged moments ago")]
    RefreshTokenRotated,
    #[error("a spent refresh token was presented again; its family is revoked")]
    RefreshTokenReused,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sea_orm::DbErr> for TokenError {
    fn from(err: sea_orm::DbErr) -> Self {
        TokenError::Internal(anyhow::Error::new(err).context("database error on tokens"))
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: Uuid,
    pub role: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
    pub iss: String,
    pub aud: String,
}

/// A new access + refresh token pair.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
    pub refresh_expires_in: u64,
}

/// Signs and checks tokens; built once from the JWT secret and the configured lifetimes.
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_ttl: Duration,
    refresh_ttl: Duration,
    reuse_grace: Duration,
    /// What refresh lifetimes and the reuse grace are measured against.
    clock: Clock,
}

impl TokenService {
    pub fn new(
        secret: &SecretString,
        access_ttl: Duration,
        refresh_ttl: Duration,
        reuse_grace: Duration,
        clock: Clock,
    ) -> Self {
        let key = secret.expose_secret().as_bytes();
        // Only HS256: a token naming `none` or another algorithm fails before its signature
        // is even looked at.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.leeway = LEEWAY_SECS;
        // A token that says it is not valid yet is refused until it is (within the leeway).
        validation.validate_nbf = true;
        TokenService {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            access_ttl,
            refresh_ttl,
            reuse_grace,
            clock,
        }
    }

    /// Signs an access token for `user_id` with `role`, valid for the access TTL.
    pub fn issue_access(&self, user_id: Uuid, role: Role) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = AccessClaims {
            sub: user_id,
            role: role.to_value(),
            iat: now,
            exp: now + self.access_ttl.as_secs() as i64,
            jti: Uuid::new_v4(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .context("cannot sign an access token")
    }

    /// Checks signature, algorithm, expiry, not-before, issuer and audience, and that it was
    /// not issued in the future: we never sign such a token, so one is forged with our key or
    /// signed by a server whose clock is wrong, and neither should be believed.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| TokenError::InvalidAccessToken)?;
        let now = chrono::Utc::now().timestamp();
        if claims.iat > now + LEEWAY_SECS as i64 {
            return Err(TokenError::InvalidAccessToken);
        }
        Ok(claims)
    }

    /// Starts a new family (one per login) and returns its first pair.
    pub async fn start_family(
        &self,
        db: &impl ConnectionTrait,
        user: &users::Model,
    ) -> Result<TokenPair, TokenError> {
        let now = self.clock.now_ms();
        let family = refresh_families::ActiveModel {
            id: Set(Uuid::new_v4()),
            user_id: Set(user.id),
            revoked_at: Set(None),
            expires_at: Set(now + self.refresh_ttl.as_millis() as i64),
            created_at: Set(now),
        }
        .insert(db)
        .await?;
        self.next_pair(db, family.id, user, now).await
    }

    /// Exchanges a refresh token for a new pair; see the module documentation for the rules.
    pub async fn refresh(
        &self,
        db: &DatabaseConnection,
        presented: &str,
    ) -> Result<(TokenPair, users::Model), TokenError> {
        let now = self.clock.now_ms();
        let token = refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::TokenHash.eq(digest(presented)))
            .one(db)
            .await?
            .ok_or(TokenError::InvalidRefreshToken)?;
        let family = refresh_families::Entity::find_by_id(token.family_id)
            .one(db)
            .await?
            .ok_or(TokenError::InvalidRefreshToken)?;
        if family.revoked_at.is_some() || token.expires_at <= now {
            return Err(TokenError::InvalidRefreshToken);
        }
        if let Some(spent_at) = token.spent_at {
            return Err(self.spent_again(db, family.id, spent_at, now).await);
        }
        let user = users::Entity::find_by_id(family.user_id)
            .one(db)
            .await?
            .ok_or(TokenError::InvalidRefreshToken)?;

        // The spend is the transaction's first statement: on SQLite that takes the write lock
        // at once (waiting on busy_timeout) instead of failing a read-to-write upgrade.
        let txn = db.begin().await?;
        let spent = refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::SpentAt, Expr::value(now))
            .filter(refresh_tokens::Column::Id.eq(token.id))
            .filter(refresh_tokens::Column::SpentAt.is_null())
            .exec(&txn)
            .await?;
        if spent.rows_affected != 1 {
            txn.rollback().await?;
            return Err(TokenError::RefreshTokenRotated);
        }
        let still_valid = refresh_families::Entity::update_many()
            .col_expr(
                refresh_families::Column::ExpiresAt,
                Expr::value(now + self.refresh_ttl.as_millis() as i64),
            )
            .filter(refresh_families::Column::Id.eq(family.id))
            .filter(refresh_families::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        if still_valid.rows_affected != 1 {
            txn.rollback().await?;
            return Err(TokenError::InvalidRefreshToken);
        }
        let pair = self.next_pair(&txn, family.id, &user, now).await?;
        txn.commit().await?;
        Ok((pair, user))
    }

    /// A spent token again: within the grace it is a parallel request, after it a theft.
    async fn spent_again(
        &self,
        db: &DatabaseConnection,
        family_id: Uuid,
        spent_at: i64,
        now: i64,
    ) -> TokenError {
        if now - spent_at <= self.reuse_grace.as_millis() as i64 {
            return TokenError::RefreshTokenRotated;
        }
        match revoke_family(db, family_id, now).await {
            Ok(()) => {
                tracing::warn!(%family_id, "spent refresh token reused; family revoked");
                TokenError::RefreshTokenReused
            }
            Err(err) => err,
        }
    }

    async fn next_pair(
        &self,
        db: &impl ConnectionTrait,
        family_id: Uuid,
        user: &users::Model,
        now: i64,
    ) -> Result<TokenPair, TokenError> {
        let refresh_token = random_token();
        refresh_tokens::ActiveModel {
            id: Set(Uuid::new_v4()),
            family_id: Set(family_id),
            token_hash: Set(digest(&refresh_token)),
            expires_at: Set(now + self.refresh_ttl.as_millis() as i64),
            spent_at: Set(None),
            created_at: Set(now),
        }
        .insert(db)
        .await?;
        Ok(TokenPair {
            access_token: self.issue_access(user.id, user.role)?,
            expires_in: self.access_ttl.as_secs(),
            refresh_token,
            refresh_expires_in: self.refresh_ttl.as_secs(),
        })
    }
}

/// Revokes the family of `presented`, if it is one of ours (logout). Unknown tokens are fine.
pub async fn logout(db: &DatabaseConnection, presented: &str) -> Result<(), TokenError> {
    let token = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::TokenHash.eq(digest(presented)))
        .one(db)
        .await?;
    if let Some(token) = token {
        revoke_family(db, token.family_id, system_ms()).await?;
    }
    Ok(())
}

/// Revokes every family of a user (after a password change).
pub async fn revoke_all(db: &impl ConnectionTrait, user_id: Uuid) -> Result<(), TokenError> {
    refresh_families::Entity::update_many()
        .col_expr(
            refresh_families::Column::RevokedAt,
            Expr::value(system_ms()),
        )
        .filter(refresh_families::Column::UserId.eq(user_id))
        .filter(refresh_families::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

async fn revoke_family(
    db: &impl ConnectionTrait,
    family_id: Uuid,
    now: i64,
) -> Result<(), TokenError> {
    refresh_families::Entity::update_many()
        .col_expr(refresh_families::Column::RevokedAt, Expr::value(now))
        .filter(refresh_families::Column::Id.eq(family_id))
        .filter(refresh_families::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes families whose tokens have all expired by `now` (their tokens go with them).
pub async fn purge_expired(db: &DatabaseConnection, now: i64) -> Result<u64, TokenError> {
    let deleted = refresh_families::Entity::delete_many()
        .filter(refresh_families::Column::ExpiresAt.lt(now))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected)
}

/// The key that signs access tokens: the configured one, or in development one generated
/// once and kept in the database, so tokens survive a restart.
pub async fn signing_secret(
    db: &DatabaseConnection,
    configured: Option<&SecretString>,
) -> anyhow::Result<SecretString> {
    if let Some(secret) = configured {
        return Ok(secret.clone());
    }
    const NAME: &str = "jwt_secret";
    let generated = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 48]>());
    // Insert-if-absent, then read: two processes starting together agree on one secret.
    let _ = server_secrets::Entity::insert(server_secrets::ActiveModel {
        name: Set(NAME.to_owned()),
        value: Set(generated),
        created_at: Set(system_ms()),
    })
    .on_conflict_do_nothing()
    .exec(db)
    .await;
    let stored = server_secrets::Entity::find_by_id(NAME.to_owned())
        .one(db)
        .await
        .context("cannot read the generated JWT secret")?
        .context("the generated JWT secret was not stored")?;
    Ok(SecretString::from(stored.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> TokenService {
        TokenService::new(
            &SecretString::from("k".repeat(40)),
            Duration::from_secs(900),
            Duration::from_secs(3600),
            Duration::from_secs(10),
            Clock::default(),
        )
    }

    fn forge(claims: serde_json::Value, header: Header, key: &[u8]) -> String {
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(key)).unwrap()
    }

    fn claims(exp_offset: i64, iss: &str, aud: &str) -> serde_json::Value {
        let now = chrono::Utc::now().timestamp();
        serde_json::json!({"sub": Uuid::new_v4(), "role": "user", "iat": now, "exp": now + exp_offset,
                           "jti": Uuid::new_v4(), "iss": iss, "aud": aud})
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let tokens = service();
        let user = Uuid::new_v4();
        let token = tokens.issue_access(user, Role::Admin).unwrap();
        let claims = tokens.verify_access(&token).unwrap();
        assert_eq!(claims.sub, user);
        assert_eq!(claims.role, "admin");
        assert_eq!(claims.iss, "iotbind");
        assert_eq!(claims.aud, "iotbind-api");
        assert_eq!(claims.exp - claims.iat, 900);
    }

    #[test]
    fn expired_tampered_or_foreign_tokens_are_refused() {
        let tokens = service();
        let key = "k".repeat(40);
        let expired = forge(
            claims(-60, ISSUER, AUDIENCE),
            Header::default(),
            key.as_bytes(),
        );
        let wrong_iss = forge(
            claims(60, "other", AUDIENCE),
            Header::default(),
            key.as_bytes(),
        );
        let wrong_aud = forge(
            claims(60, ISSUER, "other"),
            Header::default(),
            key.as_bytes(),
        );
        let wrong_key = forge(
            claims(60, ISSUER, AUDIENCE),
            Header::default(),
            b"another-key-of-sufficient-length!!",
        );
        let hs512 = forge(
            claims(60, ISSUER, AUDIENCE),
            Header::new(Algorithm::HS512),
            key.as_bytes(),
        );
        let good = tokens.issue_access(Uuid::new_v4(), Role::User).unwrap();
        let mut tampered = good.clone();
        tampered.insert(good.find('.').unwrap() + 3, 'x');
        for bad in [
            expired,
            wrong_iss,
            wrong_aud,
            wrong_key,
            hs512,
            tampered,
            "garbage".into(),
        ] {
            assert!(tokens.verify_access(&bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn an_unsigned_none_token_is_refused() {
        let b64 = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let token = format!(
            "{}.{}.",
            b64(serde_json::json!({"alg": "none", "typ": "JWT"})),
            b64(claims(60, ISSUER, AUDIENCE))
        );
        assert!(service().verify_access(&token).is_err());
    }
}
