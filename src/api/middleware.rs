//! The envelope around every request: request id, client address, tracing span, body size
//! and time limits, JSON errors, metrics and the access log line.
//!
//! One middleware rather than five because they share the same facts (the id, the route, the
//! final status) and their order matters: the error must be mapped to JSON before its status
//! is counted, and logged inside the span that carries the request id.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Response};
use tracing::Instrument;
use uuid::Uuid;

use super::client_address::TrustedProxies;
use super::error::{
    ApiError, MAX_BODY_BYTES, error_to_api_error, payload_too_large, request_timeout,
};
use crate::metrics as app_metrics;

/// Header that carries the request id in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the request being served, for handlers that log or pass it on.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// See the module documentation.
pub struct RequestEnvelope {
    proxies: Arc<TrustedProxies>,
    body_timeout: Duration,
}

impl RequestEnvelope {
    /// `proxies` name the client behind them; a body must arrive within `body_timeout`.
    pub fn new(proxies: TrustedProxies, body_timeout: Duration) -> RequestEnvelope {
        RequestEnvelope {
            proxies: Arc::new(proxies),
            body_timeout,
        }
    }
}

impl<E: Endpoint> Middleware<E> for RequestEnvelope {
    type Output = RequestEnvelopeEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestEnvelopeEndpoint {
            inner,
            proxies: self.proxies.clone(),
            body_timeout: self.body_timeout,
        }
    }
}

/// The endpoint [`RequestEnvelope`] wraps around the app.
pub struct RequestEnvelopeEndpoint<E> {
    inner: E,
    proxies: Arc<TrustedProxies>,
    body_timeout: Duration,
}

impl<E: Endpoint> Endpoint for RequestEnvelopeEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let started = Instant::now();
        let request_id = incoming_request_id(&req).unwrap_or_else(|| Uuid::new_v4().to_string());
        req.extensions_mut().insert(RequestId(request_id.clone()));
        // Every listener of ours is TCP, so the peer is an IP address.
        let peer = req
            .remote_addr()
            .as_socket_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip());
        let client = self.proxies.client(peer, req.headers());
        req.extensions_mut().insert(client);
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let span = tracing::info_span!(
            "request",
            id = %request_id,
            client = %client.0,
            %method,
            %path
        );

        async move {
            let result = match limit_body(&mut req, self.body_timeout).await {
                Ok(()) => self.inner.call(req).await.map(IntoResponse::into_response),
                Err(error) => Err(poem::Error::from(error)),
            };
            let mut response = match result {
                Ok(response) => response,
                Err(err) => error_answer(err),
            };
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            // The rest of a body that timed out may still be on its way: the connection
            // cannot carry another request.
            if response.status() == StatusCode::REQUEST_TIMEOUT {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // HTTP requires a 405 to say which methods the path does accept.
            if response.status() == StatusCode::METHOD_NOT_ALLOWED {
                let allowed = allowed_methods(&path);
                if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
                    response.headers_mut().insert(header::ALLOW, value);
                }
            }

            let route = response
                .data::<poem::PathPattern>()
                .map(|pattern| pattern.0.to_string())
                .filter(|pattern| !pattern.is_empty())
                .unwrap_or_else(|| "unmatched".to_owned());
            let status = response.status().as_u16();
            let elapsed = started.elapsed();
            app_metrics::record_http_request(&route, method.as_str(), status, elapsed);
            tracing::info!(
                status,
                route,
                elapsed_ms = round_to_hundredths(elapsed.as_secs_f64() * 1000.0),
                "request served"
            );
            Ok(response)
        }
        .instrument(span)
        .await
    }
}

/// A duration in milliseconds to two decimals: 0.52, not 0.5191110000000001.
fn round_to_hundredths(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

/// Every path template of the spec with its methods, e.g. `/api/v1/devices/{device_id}` →
/// GET, PATCH, DELETE; read from the spec itself so it cannot drift from the routes. The
/// development spec holds every path either mode serves; a production server never routes a
/// `/dev/…` request this far (it is 404 before it can be 405).
fn operation_table() -> &'static [(Vec<String>, Vec<String>)] {
    static TABLE: OnceLock<Vec<(Vec<String>, Vec<String>)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let spec: serde_json::Value =
            serde_json::from_str(&super::development_openapi_json()).unwrap_or_default();
        let Some(paths) = spec.get("paths").and_then(|p| p.as_object()) else {
            return Vec::new();
        };
        paths
            .iter()
            .map(|(template, operations)| {
                let segments = template.split('/').map(str::to_owned).collect();
                let methods = operations
                    .as_object()
                    .map(|ops| ops.keys().map(|m| m.to_ascii_uppercase()).collect())
                    .unwrap_or_default();
                (segments, methods)
            })
            .collect()
    })
}

/// The methods the spec's operations accept on `path`: those of the template the router picks
/// for it. Like the router, a literal segment wins over a parameter, segment by segment from
/// the left, so `/api/v1/devices/claim` is the claim operation's path and not a device's.
fn allowed_methods(path: &str) -> Vec<String> {
    let segments: Vec<&str> = path.split('/').collect();
    let routed = operation_table()
        .iter()
        .filter(|(template, _)| {
            template.len() == segments.len()
                && template.iter().zip(&segments).all(|(expected, actual)| {
                    (expected.starts_with('{') && !actual.is_empty()) || expected == actual
                })
        })
        .max_by_key(|(template, _)| {
            template
                .iter()
                .map(|segment| !segment.starts_with('{'))
                .collect::<Vec<bool>>()
        });
    let mut allowed = routed
        .map(|(_, methods)| methods.clone())
        .unwrap_or_default();
    allowed.sort();
    allowed.dedup();
    allowed
}

/// Accepts a caller's id when it is short and printable, so it can be logged safely.
fn incoming_request_id(req: &Request) -> Option<String> {
    let value = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let valid =
        !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic());
    valid.then(|| value.to_owned())
}

/// Reads at most [`MAX_BODY_BYTES`] of the body, so a huge or endless upload costs us 64 KiB of
/// memory and gets a 413, whether or not it announced its length; and at most for `timeout`, so
/// a client that sends half a body and stalls gets a 408 and its connection back is closed.
async fn limit_body(req: &mut Request, timeout: Duration) -> Result<(), ApiError> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(payload_too_large());
    }
    let body = req.take_body();
    let Ok(read) = tokio::time::timeout(timeout, body.into_bytes_limit(MAX_BODY_BYTES)).await
    else {
        return Err(request_timeout());
    };
    match read {
        Ok(bytes) => {
            req.set_body(Body::from(bytes));
            Ok(())
        }
        Err(poem::error::ReadBodyError::PayloadTooLarge) => Err(payload_too_large()),
        Err(err) => Err(ApiError::invalid_request(format!(
            "the body could not be read: {err}"
        ))),
    }
}

/// The JSON answer for a failure, logging internal errors once with their cause chain.
fn error_answer(err: poem::Error) -> Response {
    let path_pattern = err.data::<poem::PathPattern>().cloned();
    let mut response = match error_to_api_error(&err) {
        Some(mapped) => log_and_answer(&mapped),
        None => match err.downcast_ref::<ApiError>() {
            Some(api_error) => log_and_answer(api_error),
            None => err.into_response(),
        },
    };
    if let Some(pattern) = path_pattern {
        response.set_data(pattern);
    }
    response
}

fn log_and_answer(error: &ApiError) -> Response {
    if error.status().is_server_error() {
        match error.cause() {
            Some(cause) => tracing::error!(error = format!("{cause:#}"), "request failed"),
            None => tracing::error!(error = %error, "request failed"),
        }
    }
    error.to_response()
}
