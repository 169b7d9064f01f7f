//! `/dev/wechat/…`: the fake WeChat API's operations, served and described only in
//! development mode, so an explorer can start a login from Swagger UI alone.
//!
//! The answers are the fake's own (`wechat::fake`): `jscode2session` answers 200 with WeChat's
//! `{"errcode", "errmsg"}` on every refusal, as WeChat does, and `faults` answers 204. Bodies
//! are read as leniently as before they were documented: any content type, and an empty body
//! for `codes` (a new WeChat user).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use poem::{Request, RequestBody};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::{Example, ParseFromJSON, Type};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions, Object, OpenApi, Tags,
};
use serde_json::Value;

use super::error::{ApiError, ApiFailure, IntoApiError};
use super::text::{FieldRule, RuledText, Text};
use crate::error_docs;
use crate::service::text::TextRule;
use crate::wechat::fake::{
    EncryptRequest, ExchangeQuery, Fake, FakeError, FaultRequest, MintRequest, WECHAT_ID_RULE,
    answer_exchange,
};

/// The development spec's own tag, apart from [`super::ApiTags`]: poem-openapi lists every
/// variant of a tags enum in the spec, and the production spec must not name this one.
#[derive(Tags)]
enum DevelopmentTags {
    /// Development mode only: the fake WeChat API, which plays WeChat and the phone. Start a
    /// login here: `POST /dev/wechat/codes` gives the code `wx.login()` would, for
    /// `POST /api/v1/auth/wechat/login`; register with the bind ticket it answers, then
    /// Authorize with the access token. A server with a real WeChat secret has none of these.
    Development,
}

/// The fake WeChat API; one per app, holding the fake's memory.
pub struct DevelopmentApi {
    fake: Arc<Fake>,
}

impl DevelopmentApi {
    /// A fake that accepts `appid` and `secret` in `jscode2session`.
    pub fn new(appid: String, secret: String) -> Self {
        DevelopmentApi {
            fake: Arc::new(Fake::new(appid, secret)),
        }
    }
}

impl IntoApiError for FakeError {
    fn into_api_error(self) -> ApiError {
        ApiError::new(self.status, self.code, self.message)
    }
}

/// A JSON body read the way the fake always read it: whatever the content type says, and
/// an empty body as no body (which `Option<T>` takes). Documented as `application/json` with
/// `T`'s schema, required unless `T` is an `Option`, and parsed by that schema's rules, so
/// what the spec refuses the fake refuses: a JSON `null` too, which is no object.
pub struct LenientJson<T>(pub T);

impl<'a, T> ApiExtractor<'a> for LenientJson<T>
where
    T: Type + ParseFromJSON,
{
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: T::schema_ref(),
            }],
            required: T::IS_REQUIRED,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let bytes = <Vec<u8> as poem::FromRequest>::from_request(request, body).await?;
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Ok(Value::Null)
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(Value::Null) => Err("a body of `null`; send no body instead".to_owned()),
                parsed => parsed.map_err(|err| err.to_string()),
            }
        };
        value
            .and_then(|value| T::parse_from_json(Some(value)).map_err(|err| err.into_message()))
            .map(LenientJson)
            .map_err(|err| {
                let error =
                    FakeError::invalid_request(format!("the body is not valid here: {err}"));
                poem::Error::from(error.into_api_error())
            })
    }
}

/// What `jscode2session` answers: the session, or WeChat's error. Fields that do not apply
/// are left out, as WeChat leaves them out.
#[derive(Object)]
#[oai(example)]
struct DevWechatSession {
    /// The WeChat user's id in this app.
    #[oai(skip_serializing_if_is_none)]
    openid: Option<String>,
    /// The key that seals this user's encrypted data; a fresh one for each code.
    #[oai(skip_serializing_if_is_none)]
    session_key: Option<String>,
    /// The user's id across the developer's apps, when known.
    #[oai(skip_serializing_if_is_none)]
    unionid: Option<String>,
    /// WeChat's error: 40029 invalid code, 40163 code used, 45011 rate limited, 40226 risky
    /// user, -1 system error, or whatever a fault injected.
    #[oai(skip_serializing_if_is_none)]
    errcode: Option<i64>,
    /// WeChat's explanation of `errcode`.
    #[oai(skip_serializing_if_is_none)]
    errmsg: Option<String>,
}

impl Example for DevWechatSession {
    fn example() -> Self {
        DevWechatSession {
            openid: Some("oBT3x5DkcW0e9z5sCqH0rHt0yZ4Q".to_owned()),
            session_key: Some("tiihtNczf5v6AKRyjwEUhQ==".to_owned()),
            unionid: None,
            errcode: None,
            errmsg: None,
        }
    }
}

impl From<Value> for DevWechatSession {
    fn from(answer: Value) -> Self {
        let text = |field: &str| answer[field].as_str().map(str::to_owned);
        DevWechatSession {
            openid: text("openid"),
            session_key: text("session_key"),
            unionid: text("unionid"),
            errcode: answer["errcode"].as_i64(),
            errmsg: text("errmsg"),
        }
    }
}

/// An openid or unionid the caller chooses.
pub struct WechatIdRule;

impl FieldRule for WechatIdRule {
    const RULE: TextRule = WECHAT_ID_RULE;
}

/// Whose `wx.login()` to play: the WeChat user (`openid`; a new random one when left out, and
/// the same one again logs the same user in again) and their `unionid` (once given, it stays
/// with the openid).
#[derive(Object)]
#[oai(example)]
struct DevWechatCodeRequest {
    #[oai(nullable)]
    openid: Option<RuledText<WechatIdRule>>,
    #[oai(nullable)]
    unionid: Option<RuledText<WechatIdRule>>,
}

impl Example for DevWechatCodeRequest {
    fn example() -> Self {
        DevWechatCodeRequest {
            openid: Some(RuledText::from("o-swagger-explorer")),
            unionid: None,
        }
    }
}

/// What `wx.login()` would have given that WeChat user.
#[derive(Object)]
#[oai(example)]
struct DevWechatCode {
    /// Send it to `POST /api/v1/auth/wechat/login` within 5 minutes; it works once.
    code: String,
    /// The WeChat user the code belongs to.
    openid: String,
}

impl Example for DevWechatCode {
    fn example() -> Self {
        DevWechatCode {
            code: "0a3Xb7ll2nQfLf4xJ3ml2bMUvQ4Xb7ll".to_owned(),
            openid: "o-swagger-explorer".to_owned(),
        }
    }
}

/// User info to seal as WeChat would.
#[derive(Object)]
#[oai(example)]
struct DevWechatEncryptRequest {
    /// A WeChat user that has had a code minted.
    openid: Text,
    /// The user info, e.g. `{"nickName": "Ada", "avatarUrl": "https://…"}`; a watermark
    /// with our appid and the current time is added.
    data: BTreeMap<String, Value>,
}

impl Example for DevWechatEncryptRequest {
    fn example() -> Self {
        DevWechatEncryptRequest {
            openid: Text::from("o-swagger-explorer"),
            data: BTreeMap::from([
                ("nickName".to_owned(), Value::from("Ada")),
                (
                    "avatarUrl".to_owned(),
                    Value::from("https://example.com/a.png"),
                ),
            ]),
        }
    }
}

/// The sealed user info, for `POST /api/v1/me/wechat/profile`.
#[derive(Object)]
struct DevWechatEncrypted {
    /// AES-128-CBC ciphertext, base64.
    encrypted_data: String,
    /// The 16-byte IV, base64.
    iv: String,
}

/// What the next `count` exchanges do.
#[derive(Object)]
#[oai(example)]
struct DevWechatFaultRequest {
    /// The errcode to answer instead of exchanging the code (the code stays unused).
    #[oai(nullable)]
    errcode: Option<i64>,
    /// Wait this long (at most 60000 ms) before answering.
    #[oai(nullable)]
    delay_ms: Option<u64>,
    /// How many exchanges; 0 clears a pending fault.
    count: u32,
}

impl Example for DevWechatFaultRequest {
    fn example() -> Self {
        DevWechatFaultRequest {
            errcode: Some(-1),
            delay_ms: None,
            count: 1,
        }
    }
}

#[derive(ApiResponse)]
enum FaultsSet {
    /// The fault is pending (or cleared).
    #[oai(status = 204)]
    Done,
}

error_docs!(DevBodyErrors {
    400: "`invalid_request`: the body is not valid here",
    413: "`payload_too_large`",
});

error_docs!(DevEncryptErrors {
    400: "`invalid_request`: the body is not valid here, or `data` is not an object",
    404: "`unknown_openid`: no code was minted for this openid",
    413: "`payload_too_large`",
});

#[OpenApi(prefix_path = "/dev/wechat", tag = "DevelopmentTags::Development")]
impl DevelopmentApi {
    /// Trade a code for a session, as WeChat's jscode2session
    ///
    /// What iotbind itself calls during `POST /api/v1/auth/wechat/login`. Like WeChat, it
    /// answers 200 with `errcode` and `errmsg` for every refusal. A code works once and for
    /// 5 minutes.
    #[oai(
        path = "/sns/jscode2session",
        method = "get",
        operation_id = "dev_wechat_jscode2session"
    )]
    async fn jscode2session(
        &self,
        /// The app's id.
        appid: Query<Option<String>>,
        /// The app's secret (the fake's is `development-only-secret`).
        secret: Query<Option<String>>,
        /// The code from `wx.login()` (or `POST /dev/wechat/codes`).
        js_code: Query<Option<String>>,
        /// Always `authorization_code`.
        grant_type: Query<Option<String>>,
    ) -> Json<DevWechatSession> {
        let query = ExchangeQuery {
            appid: appid.0,
            secret: secret.0,
            js_code: js_code.0,
            grant_type: grant_type.0,
        };
        Json(answer_exchange(&self.fake, &query).await.into())
    }

    /// Get a wx.login() code for a WeChat user
    ///
    /// Start here: the code this answers is what `wx.login()` would give the mini program.
    /// Send it to `POST /api/v1/auth/wechat/login`. Each code gives the user a fresh
    /// session_key.
    #[oai(path = "/codes", method = "post", operation_id = "dev_wechat_codes")]
    async fn codes(
        &self,
        body: LenientJson<Option<DevWechatCodeRequest>>,
    ) -> Result<Json<DevWechatCode>, ApiFailure<DevBodyErrors>> {
        let request = body
            .0
            .map_or_else(MintRequest::default, |body| MintRequest {
                openid: body.openid.map(RuledText::into_inner),
                unionid: body.unionid.map(RuledText::into_inner),
            });
        let (code, openid) = self.fake.mint(request, Instant::now())?;
        Ok(Json(DevWechatCode { code, openid }))
    }

    /// Seal user info as WeChat does
    ///
    /// Encrypts `data` with the user's current session_key and WeChat's watermark, for
    /// trying `POST /api/v1/me/wechat/profile`.
    #[oai(
        path = "/encrypt",
        method = "post",
        operation_id = "dev_wechat_encrypt"
    )]
    async fn encrypt(
        &self,
        body: LenientJson<DevWechatEncryptRequest>,
    ) -> Result<Json<DevWechatEncrypted>, ApiFailure<DevEncryptErrors>> {
        let LenientJson(body) = body;
        let (encrypted_data, iv) = self.fake.encrypt(EncryptRequest {
            openid: body.openid.into_inner(),
            data: Value::Object(body.data.into_iter().collect()),
        })?;
        Ok(Json(DevWechatEncrypted { encrypted_data, iv }))
    }

    /// Make the next code exchanges fail or stall
    ///
    /// The next `count` jscode2session calls answer `errcode` and/or wait `delay_ms` first.
    /// A new call replaces what is pending.
    #[oai(path = "/faults", method = "post", operation_id = "dev_wechat_faults")]
    async fn faults(
        &self,
        body: LenientJson<DevWechatFaultRequest>,
    ) -> Result<FaultsSet, ApiFailure<DevBodyErrors>> {
        let LenientJson(body) = body;
        self.fake.set_fault(FaultRequest {
            errcode: body.errcode,
            delay_ms: body.delay_ms,
            count: body.count,
        })?;
        Ok(FaultsSet::Done)
    }
}

/// The schema names of the development operations, which the production spec never has.
pub const SCHEMA_PREFIX: &str = "DevWechat";
