//! The one error shape of the HTTP API (`{"error", "message"}` with a real status), and how
//! each operation documents which of those errors it can answer.
//!
//! Handlers build an [`ApiError`] (usually from a service error); the request middleware turns
//! every other failure (poem-openapi's parse errors, unknown paths, wrong methods) into the same
//! shape, so no client ever sees a plain-text body.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::registry::{
    MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry,
};
use poem_openapi::types::{Example, ToJSON, Type};
use poem_openapi::{ApiResponse, Object};

/// Seconds a client should wait after the database was unreachable: about one pool acquire
/// timeout, so the retry meets a reconnected pool rather than the same outage.
const DATABASE_RETRY_AFTER_SECS: u64 = 5;

/// The body of every error answer.
#[derive(Object, Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[oai(example)]
pub struct ErrorBody {
    /// Stable snake_case code a client can branch on.
    pub error: String,
    /// Explanation for humans; never contains internal detail.
    pub message: String,
}

impl Example for ErrorBody {
    fn example() -> Self {
        ErrorBody {
            error: "invalid_request".to_owned(),
            message: "the body is not valid JSON".to_owned(),
        }
    }
}

/// One error answer: status, code and message, plus the cause of an internal error (logged,
/// never sent).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    retry_after_secs: Option<u64>,
    cause: Option<anyhow::Error>,
}

impl ApiError {
    /// An error answer with its own code; `status` should be 4xx.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            cause: None,
        }
    }

    /// 400 `invalid_request`: the request's shape is wrong.
    pub fn invalid_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 503 `unavailable`: a part we depend on is down; retrying later can work.
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500 `internal`: the cause is logged with the request id and never sent to the client.
    ///
    /// A database that cannot be reached is not a bug of ours: that cause is answered 503
    /// `unavailable` with `Retry-After` instead (still logged), so every service error that
    /// wraps a database error gets it without each knowing about outages.
    pub fn internal(cause: anyhow::Error) -> Self {
        if crate::db::is_unavailable(&cause) {
            let mut error = Self::unavailable("the database is not reachable; try again shortly")
                .retry_after(DATABASE_RETRY_AFTER_SECS);
            error.cause = Some(cause);
            return error;
        }
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: Cow::Borrowed(
                "internal error; the request id in x-request-id helps us find it",
            ),
            retry_after_secs: None,
            cause: Some(cause),
        }
    }

    /// Adds a `Retry-After` header (429 and 503 answers).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The internal cause, for the one log line that records it.
    pub fn cause(&self) -> Option<&anyhow::Error> {
        self.cause.as_ref()
    }

    /// The JSON answer: status, code and message, never the cause.
    pub fn to_response(&self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message.to_string(),
        };
        let mut response = Response::builder()
            .status(self.status)
            .content_type("application/json; charset=utf-8")
            .body(body.to_json_string());
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // RFC 6750: a 401 names the scheme that would be accepted, and says when the token
        // itself was the problem.
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.code == "invalid_token" {
                r#"Bearer error="invalid_token""#
            } else {
                "Bearer"
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_ref().map(|cause| cause.as_ref() as _)
    }
}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        self.to_response()
    }
}

/// Turns a service layer error into its HTTP answer; implemented once per service error enum.
pub trait IntoApiError {
    fn into_api_error(self) -> ApiError;
}

impl IntoApiError for ApiError {
    fn into_api_error(self) -> ApiError {
        self
    }
}

/// The errors one operation can answer, for its OpenAPI description. Declared with
/// [`error_docs!`](crate::error_docs).
pub trait ErrorDocs: Send + Sync + 'static {
    /// `(status, when)` pairs, in status order.
    const RESPONSES: &'static [(u16, &'static str)];
}

/// An [`ApiError`] answered by an operation whose possible errors `D` lists.
///
/// The marker only feeds the OpenAPI spec: any `ApiError` converts into any `ApiFailure<D>`,
/// and a test that the served spec equals the committed one keeps the lists honest in review.
pub struct ApiFailure<D> {
    error: ApiError,
    docs: PhantomData<fn() -> D>,
}

impl<D, E: IntoApiError> From<E> for ApiFailure<D> {
    fn from(error: E) -> Self {
        ApiFailure {
            error: error.into_api_error(),
            docs: PhantomData,
        }
    }
}

impl<D> ApiFailure<D> {
    /// The stable error code, e.g. for counting outcomes.
    pub fn code(&self) -> &'static str {
        self.error.code()
    }
}

impl<D> From<ApiFailure<D>> for poem::Error {
    fn from(failure: ApiFailure<D>) -> poem::Error {
        poem::Error::from(failure.error)
    }
}

impl<D> IntoResponse for ApiFailure<D> {
    fn into_response(self) -> Response {
        self.error.to_response()
    }
}

impl<D: ErrorDocs> ApiResponse for ApiFailure<D> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: D::RESPONSES
                .iter()
                .map(|&(status, description)| MetaResponse {
                    description,
                    status: Some(status),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: "application/json; charset=utf-8",
                        schema: ErrorBody::schema_ref(),
                    }],
                    headers: if status == 429 || status == 503 {
                        vec![retry_after_header()]
                    } else {
                        vec![]
                    },
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        ErrorBody::register(registry);
    }
}

fn retry_after_header() -> MetaHeader {
    MetaHeader {
        name: "Retry-After".to_owned(),
        description: Some("Seconds to wait before trying again".to_owned()),
        required: false,
        deprecated: false,
        schema: MetaSchemaRef::Inline(Box::new(u64::schema_ref().unwrap_inline().clone())),
    }
}

/// The 503 of every operation that needs the database: [`ApiError::internal`] answers a
/// database that cannot be reached this way, whatever the operation.
pub const DATABASE_UNAVAILABLE: &str =
    "`unavailable`: the database cannot be reached; try again after `Retry-After` seconds";

/// The 429 of every operation that checks an account's password (login, bind, password
/// change, unbind): the lockouts and the per-address allowance answer alike.
pub const TOO_MANY_PASSWORD_ATTEMPTS: &str = "`too_many_attempts`: the account is locked for this \
     address after 5 wrong passwords from it (or for everyone after 50 from all addresses), or \
     this address made more password attempts in a minute than the server allows (20 by default)";

/// Declares an [`ErrorDocs`] marker: `error_docs!(pub ReadyErrors { 503: "…" });`
#[macro_export]
macro_rules! error_docs {
    ($vis:vis $name:ident { $($status:literal : $when:expr),+ $(,)? }) => {
        #[doc = concat!("Errors answered by the operations that use `", stringify!($name), "`.")]
        $vis struct $name;
        impl $crate::api::error::ErrorDocs for $name {
            const RESPONSES: &'static [(u16, &'static str)] = &[$(($status, $when)),+];
        }
    };
}

/// Maps any failure that reached the edge of the app to its JSON answer.
///
/// `ApiError`s and responses built by handlers pass through unchanged; poem and poem-openapi's
/// own errors (bad JSON, missing parameters, unknown paths) get a code from their status.
pub fn error_to_api_error(err: &poem::Error) -> Option<ApiError> {
    if err.is::<ApiError>() || err.is_from_response() {
        return None;
    }
    let status = err.status();
    let message = err.to_string();
    Some(match status {
        StatusCode::BAD_REQUEST => ApiError::invalid_request(message),
        // poem-openapi answers 415 for a missing or foreign Content-Type: for our clients that
        // is just another malformed request.
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::invalid_request(
            "the body must be JSON, sent with Content-Type: application/json",
        ),
        StatusCode::UNAUTHORIZED => ApiError::new(
            status,
            "invalid_token",
            "a valid bearer access token is required",
        ),
        StatusCode::NOT_FOUND => ApiError::new(status, "not_found", "no such path"),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "method_not_allowed",
            "this path does not accept that method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => payload_too_large(),
        status if status.is_client_error() => ApiError::new(status, "invalid_request", message),
        _ => ApiError::internal(anyhow::anyhow!("{message}")),
    })
}

/// The largest request body accepted, in bytes (64 KiB, as `openapi/openapi.json` says).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// 413 `payload_too_large`.
pub fn payload_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the body is larger than 64 KiB",
    )
}

/// The answer to a body that did not arrive in time; the connection is closed after it, since
/// the rest of that body may still be on its way.
pub fn request_timeout() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the request body did not arrive in time",
    )
}
