//! `/api/v1/auth/…`: WeChat login, the bind and register pages, password login, refresh and
//! logout.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use secrecy::SecretString;

use super::ApiTags;
use super::attempts::ClientAttempts;
use super::error::{ApiFailure, DATABASE_UNAVAILABLE, TOO_MANY_PASSWORD_ATTEMPTS};
use super::models::{Authenticated, BindRequired, WechatLoginResult};
use super::text::{
    NicknameRule, PasswordRule, RuledText, Text, TicketRule, UsernameRule, WechatCodeRule,
};
use crate::error_docs;
use crate::service::{auth, tokens};
use crate::state::AppState;

/// Login, bind, register and the token lifecycle.
#[derive(Default)]
pub struct AuthApi;

/// What `wx.login()` gave the mini program.
#[derive(Object)]
#[oai(example)]
struct WechatLoginRequest {
    code: RuledText<WechatCodeRule>,
}

impl Example for WechatLoginRequest {
    fn example() -> Self {
        WechatLoginRequest {
            code: RuledText::from("0a3Xb7ll2nQfLf4xJ3ml2bMUvQ4Xb7ll"),
        }
    }
}

/// The bind page: link the WeChat user to an existing account.
#[derive(Object)]
#[oai(example)]
struct BindRequest {
    bind_ticket: RuledText<TicketRule>,
    username: Text,
    password: Text,
}

impl Example for BindRequest {
    fn example() -> Self {
        BindRequest {
            bind_ticket: RuledText::from(BindRequired::example().bind_ticket.as_str()),
            username: Text::from("alice"),
            password: Text::from("correct horse battery"),
        }
    }
}

/// The register page: create an account for the WeChat user. Without a nickname, the
/// nickname is the username.
#[derive(Object)]
#[oai(example)]
struct RegisterRequest {
    bind_ticket: RuledText<TicketRule>,
    username: RuledText<UsernameRule>,
    password: RuledText<PasswordRule>,
    #[oai(nullable)]
    nickname: Option<RuledText<NicknameRule>>,
}

impl Example for RegisterRequest {
    fn example() -> Self {
        RegisterRequest {
            bind_ticket: RuledText::from(BindRequired::example().bind_ticket.as_str()),
            username: RuledText::from("alice"),
            password: RuledText::from("correct horse battery"),
            nickname: Some(RuledText::from("Alice")),
        }
    }
}

/// Username and password.
#[derive(Object)]
#[oai(example)]
struct LoginRequest {
    username: Text,
    password: Text,
}

impl Example for LoginRequest {
    fn example() -> Self {
        LoginRequest {
            username: Text::from("alice"),
            password: Text::from("correct horse battery"),
        }
    }
}

/// A refresh token from an earlier login or refresh.
#[derive(Object)]
#[oai(example)]
struct RefreshRequest {
    refresh_token: Text,
}

impl Example for RefreshRequest {
    fn example() -> Self {
        RefreshRequest {
            refresh_token: Text(Authenticated::example().refresh_token),
        }
    }
}

#[derive(ApiResponse)]
enum Registered {
    /// The account is created, linked to the WeChat user, and logged in.
    #[oai(status = 201)]
    Created(Json<Authenticated>),
}

#[derive(ApiResponse)]
enum LoggedOut {
    /// The login's refresh tokens are revoked (also answered for unknown tokens).
    #[oai(status = 204)]
    Done,
}

error_docs!(WechatLoginErrors {
    400: "`invalid_request` (malformed body) or `invalid_code` (WeChat does not know the code, \
          or it is not 1–256 characters)",
    403: "`wechat_denied`: WeChat flags this user as risky",
    409: "`code_used`: the code was used before and its answer is no longer remembered",
    413: "`payload_too_large`",
    429: "`wechat_rate_limited`: WeChat is rate limiting us",
    502: "`wechat_unavailable`: WeChat timed out, failed or answered garbage",
    503: DATABASE_UNAVAILABLE,
});

error_docs!(BindErrors {
    400: "`invalid_request`: malformed body",
    401: "`invalid_bind_ticket` (unknown, used, expired or worn out) or `invalid_credentials`",
    409: "`account_already_bound` or `wechat_already_bound`",
    413: "`payload_too_large`",
    429: TOO_MANY_PASSWORD_ATTEMPTS,
    503: DATABASE_UNAVAILABLE,
});

error_docs!(RegisterErrors {
    400: "`invalid_request`: malformed body",
    401: "`invalid_bind_ticket`",
    409: "`username_taken` or `wechat_already_bound`",
    413: "`payload_too_large`",
    422: "`invalid_username`, `weak_password` or `invalid_nickname`",
    429: "`too_many_attempts`: this address made more password attempts in a minute than the \
          server allows (20 by default)",
    503: DATABASE_UNAVAILABLE,
});

error_docs!(LoginErrors {
    400: "`invalid_request`: malformed body",
    401: "`invalid_credentials`: unknown username or wrong password (the same answer)",
    413: "`payload_too_large`",
    429: TOO_MANY_PASSWORD_ATTEMPTS,
    503: DATABASE_UNAVAILABLE,
});

error_docs!(RefreshErrors {
    400: "`invalid_request`: malformed body",
    401: "`invalid_refresh_token` or `refresh_token_reused` (the login is revoked)",
    409: "`refresh_token_rotated`: another request exchanged it moments ago",
    413: "`payload_too_large`",
    503: DATABASE_UNAVAILABLE,
});

error_docs!(LogoutErrors {
    400: "`invalid_request`: malformed body",
    413: "`payload_too_large`",
    503: DATABASE_UNAVAILABLE,
});

/// Counts a login attempt that ends in a session or an error, under `method`.
fn counted<T, E, D>(method: &'static str, result: Result<T, E>) -> Result<T, ApiFailure<D>>
where
    ApiFailure<D>: From<E>,
{
    let result = result.map_err(ApiFailure::from);
    let outcome = match &result {
        Ok(_) => "authenticated",
        Err(failure) => failure.code(),
    };
    crate::metrics::record_login(method, outcome);
    result
}

#[OpenApi(prefix_path = "/api/v1/auth", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Log in with a wx.login() code
    ///
    /// A WeChat user already linked to an account is logged in (`authenticated`). A new one
    /// gets a bind ticket (`bind_required`): the mini program then shows its bind page or its
    /// register page. Sending the same code again within 60 s is answered afresh from WeChat's
    /// remembered answer.
    #[oai(
        path = "/wechat/login",
        method = "post",
        operation_id = "auth_wechat_login"
    )]
    async fn wechat_login(
        &self,
        state: Data<&AppState>,
        body: Json<WechatLoginRequest>,
    ) -> Result<Json<WechatLoginResult>, ApiFailure<WechatLoginErrors>> {
        let result = state
            .logins
            .wechat_login(&body.code)
            .await
            .map_err(ApiFailure::from);
        let outcome = match &result {
            Ok(auth::WechatLogin::Authenticated(_)) => "authenticated",
            Ok(auth::WechatLogin::BindRequired { .. }) => "bind_required",
            Err(failure) => failure.code(),
        };
        crate::metrics::record_login("wechat", outcome);
        Ok(Json(match result? {
            auth::WechatLogin::Authenticated(session) => {
                WechatLoginResult::Authenticated((*session).into())
            }
            auth::WechatLogin::BindRequired {
                bind_ticket,
                expires_in,
            } => WechatLoginResult::BindRequired(BindRequired {
                status: super::models::BindRequiredStatus::BindRequired,
                bind_ticket,
                expires_in,
            }),
        }))
    }

    /// Bind the WeChat user to an existing account
    ///
    /// The bind page. A refused attempt leaves the ticket usable, up to 5 failed binds.
    #[oai(
        path = "/wechat/bind",
        method = "post",
        operation_id = "auth_wechat_bind"
    )]
    async fn wechat_bind(
        &self,
        state: Data<&AppState>,
        attempts: ClientAttempts<'_>,
        body: Json<BindRequest>,
    ) -> Result<Json<Authenticated>, ApiFailure<BindErrors>> {
        let Json(body) = body;
        let session = counted(
            "bind",
            state
                .logins
                .bind(
                    &body.bind_ticket,
                    &body.username,
                    SecretString::from(body.password),
                    &attempts,
                )
                .await,
        )?;
        Ok(Json(session.into()))
    }

    /// Register a new account for the WeChat user
    ///
    /// The register page. Without a nickname, the nickname is the username.
    #[oai(
        path = "/wechat/register",
        method = "post",
        operation_id = "auth_wechat_register"
    )]
    async fn wechat_register(
        &self,
        state: Data<&AppState>,
        attempts: ClientAttempts<'_>,
        body: Json<RegisterRequest>,
    ) -> Result<Registered, ApiFailure<RegisterErrors>> {
        let Json(body) = body;
        let session = counted(
            "register",
            state
                .logins
                .register(
                    &body.bind_ticket,
                    auth::Registration {
                        username: body.username.into_inner(),
                        password: SecretString::from(body.password),
                        nickname: body.nickname.map(RuledText::into_inner),
                    },
                    &attempts,
                )
                .await,
        )?;
        Ok(Registered::Created(Json(session.into())))
    }

    /// Log in with username and password
    ///
    /// For the web console, administrators and tests; the mini program logs in with WeChat.
    #[oai(path = "/login", method = "post", operation_id = "auth_login")]
    async fn login(
        &self,
        state: Data<&AppState>,
        attempts: ClientAttempts<'_>,
        body: Json<LoginRequest>,
    ) -> Result<Json<Authenticated>, ApiFailure<LoginErrors>> {
        let Json(body) = body;
        let session = counted(
            "password",
            state
                .logins
                .password_login(&body.username, SecretString::from(body.password), &attempts)
                .await,
        )?;
        Ok(Json(session.into()))
    }

    /// Exchange a refresh token for a new token pair
    ///
    /// The presented token is spent. Of concurrent refreshes of one token exactly one wins;
    /// the others get 409 `refresh_token_rotated` and should use the winner's pair.
    #[oai(path = "/refresh", method = "post", operation_id = "auth_refresh")]
    async fn refresh(
        &self,
        state: Data<&AppState>,
        body: Json<RefreshRequest>,
    ) -> Result<Json<Authenticated>, ApiFailure<RefreshErrors>> {
        let session = counted("refresh", state.logins.refresh(&body.refresh_token).await)?;
        Ok(Json(session.into()))
    }

    /// Log out
    ///
    /// Revokes every refresh token of this login. No bearer token needed.
    #[oai(path = "/logout", method = "post", operation_id = "auth_logout")]
    async fn logout(
        &self,
        state: Data<&AppState>,
        body: Json<RefreshRequest>,
    ) -> Result<LoggedOut, ApiFailure<LogoutErrors>> {
        tokens::logout(&state.db, &body.refresh_token).await?;
        Ok(LoggedOut::Done)
    }
}
