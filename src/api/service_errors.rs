//! Every service error's HTTP answer, in one place: status and the stable code that
//! `openapi/openapi.json` documents.

use poem::http::StatusCode;

use super::error::{ApiError, IntoApiError};
use crate::service::auth::AuthError;
use crate::service::commands::CommandError;
use crate::service::credentials::CredentialError;
use crate::service::devices::DeviceError;
use crate::service::me::MeError;
use crate::service::tokens::TokenError;
use crate::service::users::{AdminError, UserError};
use crate::wechat::client::WechatError;

/// Seconds a client should wait after WeChat rate-limited us.
const WECHAT_RETRY_AFTER_SECS: u64 = 10;

impl IntoApiError for CredentialError {
    fn into_api_error(self) -> ApiError {
        match self {
            CredentialError::InvalidCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "wrong username or password",
            ),
            CredentialError::Locked { retry_after_secs } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "too many wrong passwords; the account is locked for a while",
            )
            .retry_after(retry_after_secs),
            // The only gate the API passes is the per-address limit (api::attempts).
            CredentialError::Throttled { retry_after_secs } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "too many password attempts from this address; try again later",
            )
            .retry_after(retry_after_secs),
            CredentialError::Internal(err) => ApiError::internal(err),
        }
    }
}

impl IntoApiError for UserError {
    fn into_api_error(self) -> ApiError {
        let rule = |code, message: &'static str| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
        };
        match self {
            UserError::InvalidUsername(why) => rule("invalid_username", why),
            UserError::WeakPassword(why) => rule("weak_password", why),
            UserError::InvalidNickname(why) => rule("invalid_nickname", why),
            UserError::InvalidAvatarUrl(why) => rule("invalid_avatar_url", why),
            UserError::UsernameTaken => ApiError::new(
                StatusCode::CONFLICT,
                "username_taken",
                "that username is taken",
            ),
            UserError::Internal(err) => ApiError::internal(err),
        }
    }
}

impl IntoApiError for WechatError {
    fn into_api_error(self) -> ApiError {
        match self {
            WechatError::InvalidCode => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_code",
                "WeChat does not know this code; call wx.login() again",
            ),
            WechatError::CodeUsed => ApiError::new(
                StatusCode::CONFLICT,
                "code_used",
                "this code was already used; call wx.login() again",
            ),
            WechatError::RateLimited => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "wechat_rate_limited",
                "WeChat is rate limiting logins; try again shortly",
            )
            .retry_after(WECHAT_RETRY_AFTER_SECS),
            WechatError::Denied => ApiError::new(
                StatusCode::FORBIDDEN,
                "wechat_denied",
                "WeChat refused this user",
            ),
            WechatError::Unavailable(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "wechat_unavailable",
                "WeChat did not answer usably; try again",
            ),
        }
    }
}

impl IntoApiError for TokenError {
    fn into_api_error(self) -> ApiError {
        match self {
            TokenError::InvalidAccessToken => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "a valid bearer access token is required",
            ),
            TokenError::InvalidRefreshToken => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_refresh_token",
                "unknown, expired or revoked refresh token; log in again",
            ),
            TokenError::RefreshTokenRotated => ApiError::new(
                StatusCode::CONFLICT,
                "refresh_token_rotated",
                "this refresh token was just exchanged by another request; use the new pair",
            ),
            TokenError::RefreshTokenReused => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "refresh_token_reused",
                "this refresh token was already used; every session of this login is revoked",
            ),
            TokenError::Internal(err) => ApiError::internal(err),
        }
    }
}

impl IntoApiError for AuthError {
    fn into_api_error(self) -> ApiError {
        match self {
            AuthError::Credentials(err) => err.into_api_error(),
            AuthError::User(err) => err.into_api_error(),
            AuthError::Wechat(err) => err.into_api_error(),
            AuthError::Token(err) => err.into_api_error(),
            AuthError::Internal(err) => ApiError::internal(err),
            AuthError::InvalidBindTicket => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_bind_ticket",
                "unknown, used or expired bind ticket; log in with WeChat again",
            ),
            AuthError::AccountAlreadyBound => ApiError::new(
                StatusCode::CONFLICT,
                "account_already_bound",
                "this account is already linked to a WeChat user",
            ),
            AuthError::WechatAlreadyBound => ApiError::new(
                StatusCode::CONFLICT,
                "wechat_already_bound",
                "this WeChat user is already linked to an account; log in again",
            ),
        }
    }
}

impl IntoApiError for MeError {
    fn into_api_error(self) -> ApiError {
        match self {
            MeError::AccountGone => TokenError::InvalidAccessToken.into_api_error(),
            MeError::Credentials(err) => err.into_api_error(),
            MeError::User(err) => err.into_api_error(),
            MeError::NotBound => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_bound",
                "this account has no WeChat identity",
            ),
            MeError::InvalidEncryptedData(why) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_encrypted_data",
                format!("the encrypted data cannot be used: {why}"),
            ),
            MeError::SessionKeyStale => ApiError::new(
                StatusCode::CONFLICT,
                "session_key_stale",
                "the data cannot be decrypted with the latest session; log in with WeChat again",
            ),
            MeError::Internal(err) => ApiError::internal(err),
        }
    }
}

impl IntoApiError for DeviceError {
    fn into_api_error(self) -> ApiError {
        match self {
            DeviceError::AccountGone => TokenError::InvalidAccessToken.into_api_error(),
            DeviceError::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "device_not_found",
                "no such device among yours",
            ),
            DeviceError::ClaimFailed => ApiError::new(
                StatusCode::NOT_FOUND,
                "claim_failed",
                "no device has this serial and claim code",
            ),
            DeviceError::AlreadyClaimed => ApiError::new(
                StatusCode::CONFLICT,
                "already_claimed",
                "this device already has an owner; they must unclaim it first",
            ),
            DeviceError::TooManyClaims { retry_after_secs } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "too many failed claims; try again later",
            )
            .retry_after(retry_after_secs),
            DeviceError::InvalidName(why) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_device_name", why)
            }
            DeviceError::InvalidModel(why) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_model", why)
            }
            DeviceError::BrokerUnavailable(why) => {
                tracing::warn!(error = %why, "the MQTT broker did not take a device");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "broker_unavailable",
                    "the MQTT broker refused or did not answer; nothing was changed",
                )
            }
            DeviceError::Internal(err) => ApiError::internal(err),
        }
    }
}

impl IntoApiError for CommandError {
    fn into_api_error(self) -> ApiError {
        match self {
            CommandError::Device(err) => err.into_api_error(),
            CommandError::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "command_not_found",
                "no such command for this device",
            ),
            CommandError::InvalidName(why) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_command_name",
                why,
            ),
            CommandError::Internal(err) => ApiError::internal(err),
        }
    }
}

impl IntoApiError for AdminError {
    fn into_api_error(self) -> ApiError {
        match self {
            AdminError::AccountGone => TokenError::InvalidAccessToken.into_api_error(),
            AdminError::NotAdmin => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only admins may do this",
            ),
            AdminError::Internal(err) => ApiError::internal(err),
        }
    }
}
