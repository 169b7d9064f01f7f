//! `/api/v1/me…`: the signed-in user's account, password and WeChat link.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::{Example, MaybeUndefined};
use poem_openapi::{ApiResponse, Object, OpenApi};
use secrecy::SecretString;

use super::ApiTags;
use super::attempts::ClientAttempts;
use super::error::{ApiFailure, DATABASE_UNAVAILABLE, TOO_MANY_PASSWORD_ATTEMPTS};
use super::models::User;
use super::security::BearerAuth;
use super::text::{NicknameRule, PasswordRule, RuledText, Text};
use crate::error_docs;
use crate::service::me::ProfileChange;
use crate::service::users::UserError;
use crate::state::AppState;

/// The signed-in user.
#[derive(Default)]
pub struct MeApi;

/// Fields to change; a field left out stays as it is.
#[derive(Object)]
#[oai(example)]
struct UpdateMeRequest {
    nickname: MaybeUndefined<RuledText<NicknameRule>>,
    /// An https:// URL of at most 512 characters, or null to clear it.
    #[oai(nullable)]
    avatar_url: MaybeUndefined<Text>,
}

impl Example for UpdateMeRequest {
    fn example() -> Self {
        UpdateMeRequest {
            nickname: MaybeUndefined::Value(RuledText::from("Alice")),
            avatar_url: MaybeUndefined::Value(Text::from("https://thirdwx.qlogo.cn/mmopen/a/132")),
        }
    }
}

/// The current password and the new one.
#[derive(Object)]
#[oai(example)]
struct ChangePasswordRequest {
    current_password: Text,
    new_password: RuledText<PasswordRule>,
}

impl Example for ChangePasswordRequest {
    fn example() -> Self {
        ChangePasswordRequest {
            current_password: Text::from("correct horse battery"),
            new_password: RuledText::from("a new long passphrase"),
        }
    }
}

/// The account's password, proving it is the owner and not just their phone.
#[derive(Object)]
#[oai(example)]
struct UnbindRequest {
    password: Text,
}

impl Example for UnbindRequest {
    fn example() -> Self {
        UnbindRequest {
            password: Text::from("correct horse battery"),
        }
    }
}

/// What `wx.getUserProfile()` / `wx.getUserInfo()` returned to the mini program.
#[derive(Object)]
#[oai(example)]
struct WechatProfileRequest {
    /// Base64 AES-128-CBC ciphertext.
    encrypted_data: Text,
    /// Base64 16-byte IV.
    iv: Text,
}

impl Example for WechatProfileRequest {
    fn example() -> Self {
        WechatProfileRequest {
            encrypted_data: Text::from(
                "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==",
            ),
            iv: Text::from("r7BXXKkLb8qrSNn05n0qiA=="),
        }
    }
}

#[derive(ApiResponse)]
enum Done {
    /// Done.
    #[oai(status = 204)]
    NoContent,
}

error_docs!(MeErrors {
    401: "`invalid_token`: missing, malformed, expired or foreign access token",
    503: DATABASE_UNAVAILABLE,
});

error_docs!(UpdateMeErrors {
    400: "`invalid_request`: malformed body",
    401: "`invalid_token`",
    413: "`payload_too_large`",
    422: "`invalid_nickname` or `invalid_avatar_url`",
    503: DATABASE_UNAVAILABLE,
});

error_docs!(ChangePasswordErrors {
    400: "`invalid_request`: malformed body",
    401: "`invalid_token` or `invalid_credentials` (wrong current password)",
    413: "`payload_too_large`",
    422: "`weak_password`",
    429: TOO_MANY_PASSWORD_ATTEMPTS,
    503: DATABASE_UNAVAILABLE,
});

error_docs!(UnbindErrors {
    400: "`invalid_request`: malformed body",
    401: "`invalid_token` or `invalid_credentials`",
    404: "`not_bound`: no WeChat identity is linked",
    413: "`payload_too_large`",
    429: TOO_MANY_PASSWORD_ATTEMPTS,
    503: DATABASE_UNAVAILABLE,
});

error_docs!(WechatProfileErrors {
    400: "`invalid_request` or `invalid_encrypted_data` (bad base64, wrong lengths, another app's data, older than 24 h)",
    401: "`invalid_token`",
    404: "`not_bound`: no WeChat identity is linked",
    409: "`session_key_stale`: the data does not decrypt with the latest login's session; log in again",
    413: "`payload_too_large`",
    503: DATABASE_UNAVAILABLE,
});

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Me")]
impl MeApi {
    /// Get the signed-in user
    #[oai(path = "/me", method = "get", operation_id = "me_get")]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
    ) -> Result<Json<User>, ApiFailure<MeErrors>> {
        Ok(Json(state.accounts.profile(auth.0.sub).await?.into()))
    }

    /// Change nickname or avatar
    #[oai(path = "/me", method = "patch", operation_id = "me_update")]
    async fn update(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        body: Json<UpdateMeRequest>,
    ) -> Result<Json<User>, ApiFailure<UpdateMeErrors>> {
        let Json(body) = body;
        let nickname = match body.nickname {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Value(nickname) => Some(nickname.into_inner()),
            MaybeUndefined::Null => {
                return Err(UserError::InvalidNickname("cannot be null").into());
            }
        };
        let avatar_url = match body.avatar_url {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(url) => Some(Some(url.into_inner())),
        };
        let profile = state
            .accounts
            .update_profile(
                auth.0.sub,
                ProfileChange {
                    nickname,
                    avatar_url,
                },
            )
            .await?;
        Ok(Json(profile.into()))
    }

    /// Change the password
    ///
    /// Signs out every other session: all refresh tokens are revoked.
    #[oai(
        path = "/me/password",
        method = "put",
        operation_id = "me_change_password"
    )]
    async fn change_password(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        attempts: ClientAttempts<'_>,
        body: Json<ChangePasswordRequest>,
    ) -> Result<Done, ApiFailure<ChangePasswordErrors>> {
        let Json(body) = body;
        state
            .accounts
            .change_password(
                auth.0.sub,
                SecretString::from(body.current_password),
                SecretString::from(body.new_password),
                &attempts,
            )
            .await?;
        Ok(Done::NoContent)
    }

    /// Unlink the WeChat identity
    ///
    /// Needs the account's password, so a stolen phone alone cannot move the account.
    #[oai(
        path = "/me/wechat/unbind",
        method = "post",
        operation_id = "me_wechat_unbind"
    )]
    async fn unbind(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        attempts: ClientAttempts<'_>,
        body: Json<UnbindRequest>,
    ) -> Result<Done, ApiFailure<UnbindErrors>> {
        let Json(body) = body;
        state
            .accounts
            .unbind(auth.0.sub, SecretString::from(body.password), &attempts)
            .await?;
        Ok(Done::NoContent)
    }

    /// Update the profile from WeChat's encrypted user info
    ///
    /// Decrypted with the session of the latest WeChat login; `nickName`, `avatarUrl` and
    /// `unionId` are taken over.
    #[oai(
        path = "/me/wechat/profile",
        method = "post",
        operation_id = "me_wechat_profile"
    )]
    async fn wechat_profile(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        body: Json<WechatProfileRequest>,
    ) -> Result<Json<User>, ApiFailure<WechatProfileErrors>> {
        let profile = state
            .accounts
            .update_from_wechat(
                auth.0.sub,
                &body.encrypted_data,
                &body.iv,
                chrono::Utc::now(),
            )
            .await?;
        Ok(Json(profile.into()))
    }
}
