//! The HTTP API: one `#[OpenApi]` struct per resource, assembled into one service with its
//! spec and Swagger UI. Handlers parse, call a service, and map the result; nothing here
//! touches the database directly.

pub mod admin;
pub mod attempts;
pub mod auth;
pub mod client_address;
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
}

/// Every resource's operations, in the order Swagger UI lists them.
type Apis = (
    auth::AuthApi,
    me::MeApi,
    devices::DevicesApi,
    admin::AdminApi,
    operations::OperationsApi,
);

/// The OpenAPI service of every operation; used by the server and by `iotbind openapi`.
pub fn openapi_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            auth::AuthApi,
            me::MeApi,
            devices::DevicesApi,
            admin::AdminApi,
            operations::OperationsApi,
        ),
        "iotbind",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Account binding for WeChat mini program users and command relay to their IoT devices. \
         Every error is `{\"error\": \"<code>\", \"message\": \"…\"}` with a real HTTP status.",
    )
}

/// The spec as served at `/openapi.json` and committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    openapi_service().spec()
}

/// The whole HTTP app: API, spec, Swagger UI, wrapped in the request envelope; in development
/// mode also the fake WeChat API, outside the spec.
pub fn app(state: AppState) -> impl Endpoint {
    let api = openapi_service();
    let docs = api.swagger_ui();
    let spec = api.spec_endpoint();
    let mut route = Route::new().at("/openapi.json", spec).nest("/docs", docs);
    if state.settings.wechat_is_fake() {
        route = route.nest(
            wechat::fake::MOUNT_PATH,
            wechat::fake::routes(
                state.settings.wechat_appid.clone(),
                wechat::fake::FAKE_APP_SECRET.to_owned(),
            ),
        );
    }
    let proxies = client_address::TrustedProxies::new(state.settings.trusted_proxies.clone());
    let body_timeout = state.settings.http_timeouts.body;
    route
        .nest("/", api)
        .data(state)
        .with(middleware::RequestEnvelope::new(proxies, body_timeout))
}
