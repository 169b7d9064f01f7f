//! The HTTP API: one `#[OpenApi]` struct per resource, assembled into one service with its
//! spec and Swagger UI. Handlers parse, call a service, and map the result; nothing here
//! touches the database directly.

pub mod admin;
pub mod attempts;
pub mod auth;
pub mod broker_hooks;
pub mod client_address;
pub mod development;
pub mod devices;
pub mod error;
pub mod me;
pub mod middleware;
pub mod models;
pub mod operations;
pub mod security;
pub mod server;
mod service_errors;
pub mod text;

use std::sync::Arc;

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApiService, Tags};

use crate::state::AppState;
use crate::wechat;

/// Groups of operations in the spec and in Swagger UI.
#[derive(Tags)]
pub enum ApiTags {
    /// WeChat login, the bind and register pages, password login and tokens.
    Auth,
    /// The signed-in user's account.
    Me,
    /// The user's devices: claiming, telemetry and commands.
    Devices,
    /// Operator actions, for admins.
    Admin,
    /// Health and metrics, for load balancers and Prometheus.
    Operations,
    /// Hooks an external MQTT broker calls to authenticate devices and check their topics;
    /// served only with `IOTBIND_BROKER_HOOK_SECRET`.
    Broker,
}

/// Every resource's operations, in the order Swagger UI lists them.
type Apis = (
    auth::AuthApi,
    me::MeApi,
    devices::DevicesApi,
    admin::AdminApi,
    operations::OperationsApi,
    broker_hooks::BrokerHooksApi,
);

fn with_info<T>(service: OpenApiService<T, ()>) -> OpenApiService<T, ()> {
    service.description(
        "Account binding for WeChat mini program users and command relay to their IoT devices. \
         Every error is `{\"error\": \"<code>\", \"message\": \"…\"}` with a real HTTP status.",
    )
}

/// The production spec's operations; used by a server with a real WeChat secret and by
/// `iotbind openapi`.
pub fn openapi_service() -> OpenApiService<Apis, ()> {
    with_info(OpenApiService::new(
        Apis::default(),
        "iotbind",
        env!("CARGO_PKG_VERSION"),
    ))
}

/// Development mode's operations: the production ones and the fake WeChat API, so the whole
/// login can be tried from Swagger UI alone.
pub fn development_openapi_service(
    fake: development::DevelopmentApi,
) -> OpenApiService<(Apis, development::DevelopmentApi), ()> {
    with_info(OpenApiService::new(
        (Apis::default(), fake),
        "iotbind",
        env!("CARGO_PKG_VERSION"),
    ))
}

/// The production spec: served with a real WeChat secret, committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    openapi_service().spec()
}

/// The spec a development server serves: the production one plus the `Development` tag.
pub fn development_openapi_json() -> String {
    development_openapi_service(development::DevelopmentApi::new(
        String::new(),
        String::new(),
    ))
    .spec()
}

/// The whole HTTP app: API, spec, Swagger UI, wrapped in the request envelope. In development
/// mode the fake WeChat API is served too, and described in the served spec.
pub fn app(state: AppState, password_attempts: Arc<attempts::PasswordAttempts>) -> impl Endpoint {
    let route = if state.settings.wechat_is_fake() {
        let api = development_openapi_service(development::DevelopmentApi::new(
            state.settings.wechat.appid.clone(),
            wechat::fake::FAKE_APP_SECRET.to_owned(),
        ));
        Route::new()
            .at("/openapi.json", api.spec_endpoint())
            .nest("/docs", api.swagger_ui())
            .nest("/", api)
    } else {
        let api = openapi_service();
        Route::new()
            .at("/openapi.json", api.spec_endpoint())
            .nest("/docs", api.swagger_ui())
            .nest("/", api)
    };
    let proxies = client_address::TrustedProxies::new(state.settings.http.trusted_proxies.clone());
    let body_timeout = state.settings.http.timeouts.body;
    let hooks_served = state.settings.http.broker_hook_secret.is_some();
    route
        .at("/favicon.ico", poem::get(no_favicon))
        .around(move |endpoint, request| async move {
            // Without a hook secret the broker hooks answer nothing but 404; a method they never
            // take still gets the router's 405, as on every other path in the spec.
            if !hooks_served
                && request.method() == poem::http::Method::POST
                && request.uri().path().starts_with(HOOKS_PREFIX)
            {
                return Err(poem::Error::from_status(poem::http::StatusCode::NOT_FOUND));
            }
            endpoint
                .call(request)
                .await
                .map(poem::IntoResponse::into_response)
        })
        .data(state)
        .data(password_attempts)
        .with(middleware::RequestEnvelope::new(proxies, body_timeout))
}

/// Where the broker hooks live.
const HOOKS_PREFIX: &str = "/api/v1/mqtt/";

/// Browsers ask every site for `/favicon.ico`; a 404 there shows as a failed resource in the
/// console of `/docs`. "No icon", cached for a day, asks nothing of the API's error shape.
#[poem::handler]
fn no_favicon() -> poem::Response {
    poem::Response::builder()
        .status(poem::http::StatusCode::NO_CONTENT)
        .header(poem::http::header::CACHE_CONTROL, "public, max-age=86400")
        .finish()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::service::{commands, devices};

    fn schema_property(spec: &Value, schema: &str, property: &str) -> Value {
        spec["components"]["schemas"][schema]["properties"][property].clone()
    }

    #[test]
    fn the_ranges_the_spec_declares_are_the_services() {
        let spec: Value = serde_json::from_str(&super::openapi_json()).unwrap();
        let count = schema_property(&spec, "ProvisionRequest", "count");
        assert_eq!(count["minimum"], 1.0);
        assert_eq!(count["maximum"], f64::from(devices::MAX_PROVISION_COUNT));
        let timeout = schema_property(&spec, "CommandRequest", "timeout_ms");
        assert_eq!(timeout["minimum"], f64::from(commands::MIN_TIMEOUT_MS));
        assert_eq!(timeout["maximum"], f64::from(commands::MAX_TIMEOUT_MS));
    }
}
