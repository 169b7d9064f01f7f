//! `/api/v1/mqtt/…`: the hooks an external MQTT broker calls to authenticate a client and to
//! check a publish or subscribe: EMQX 5's `http` authenticator and authorizer, rmqtt's
//! `rmqtt-auth-http` plugin, or any broker that can call HTTP.
//!
//! Served only when `IOTBIND_BROKER_HOOK_SECRET` is set (otherwise 404, see [`super::app`]),
//! and only to callers that present it as a bearer token, compared in constant time. Bodies
//! come as JSON or as a form, with the fields each broker's placeholders fill in. Every
//! decision is answered 200 with `{"result": "allow" | "deny", …}`, never `ignore`: a broker
//! that asks here must not fall through to a more permissive source.

use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::payload::{Form, Json};
use poem_openapi::types::Example;
use poem_openapi::{ApiRequest, Enum, Object, OpenApi, SecurityScheme};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::ApiTags;
use super::error::ApiFailure;
use super::text::Text;
use crate::error_docs;
use crate::mqtt::broker::LoginOutcome;
use crate::mqtt::topics;
use crate::service::broker_logins::TopicAccess;
use crate::state::AppState;

/// The broker hooks.
#[derive(Default)]
pub struct BrokerHooksApi;

/// The broker's own credential for calling the hooks: `Authorization: Bearer
/// <IOTBIND_BROKER_HOOK_SECRET>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "verify_hook_secret")]
pub struct BrokerHookAuth(());

async fn verify_hook_secret(req: &Request, bearer: Bearer) -> Option<()> {
    let state = req.data::<AppState>()?;
    let secret = state.settings.http.broker_hook_secret.as_ref()?;
    bool::from(
        bearer
            .token
            .as_bytes()
            .ct_eq(secret.expose_secret().as_bytes()),
    )
    .then_some(())
}

/// A client logging in, as the broker describes it; a field left out or null is a deny.
#[derive(Object, Deserialize, Debug, Clone)]
#[oai(example)]
struct AuthRequest {
    #[oai(nullable)]
    clientid: Option<Text>,
    #[oai(nullable)]
    username: Option<Text>,
    #[oai(nullable)]
    password: Option<Text>,
}

impl Example for AuthRequest {
    fn example() -> Self {
        AuthRequest {
            clientid: Some(Text::from("0b6e7a52-3c1f-4d1e-9b7a-2f4a1c9d8e01")),
            username: Some(Text::from("0b6e7a52-3c1f-4d1e-9b7a-2f4a1c9d8e01")),
            password: Some(Text::from("the device's MQTT password")),
        }
    }
}

/// A logged-in client asking to publish or subscribe; a field left out or null is a deny.
#[derive(Object, Deserialize, Debug, Clone)]
#[oai(example)]
struct AclRequest {
    #[oai(nullable)]
    clientid: Option<Text>,
    #[oai(nullable)]
    username: Option<Text>,
    /// The topic to publish to, or the filter to subscribe to.
    #[oai(nullable)]
    topic: Option<Text>,
    /// EMQX: `publish` or `subscribe`.
    #[oai(nullable)]
    action: Option<Text>,
    /// rmqtt: `2` (publish) or `1` (subscribe), as a number or a string.
    #[oai(nullable)]
    access: Option<Value>,
}

impl Example for AclRequest {
    fn example() -> Self {
        AclRequest {
            clientid: Some(Text::from("0b6e7a52-3c1f-4d1e-9b7a-2f4a1c9d8e01")),
            username: Some(Text::from("0b6e7a52-3c1f-4d1e-9b7a-2f4a1c9d8e01")),
            topic: Some(Text::from(
                "devices/0b6e7a52-3c1f-4d1e-9b7a-2f4a1c9d8e01/telemetry",
            )),
            action: Some(Text::from("publish")),
            access: None,
        }
    }
}

#[derive(ApiRequest)]
enum AuthBody {
    Json(Json<AuthRequest>),
    Form(Form<AuthRequest>),
}

#[derive(ApiRequest)]
enum AclBody {
    Json(Json<AclRequest>),
    Form(Form<AclRequest>),
}

/// Allowed or not.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
enum Verdict {
    Allow,
    Deny,
}

/// What a rule applies to.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
enum RuleAction {
    Publish,
    Subscribe,
    All,
}

/// One rule of a device's access list, in EMQX 5.8's format; the broker applies the first
/// that matches.
#[derive(Object, Debug, Clone)]
struct AclRule {
    permission: Verdict,
    action: RuleAction,
    topic: String,
}

/// The answer to a login.
#[derive(Object, Debug, Clone)]
struct AuthAnswer {
    result: Verdict,
    /// Present when allowed: only the backend's own login is a superuser. EMQX reads
    /// `is_superuser`, rmqtt-auth-http `superuser`; each ignores the other's.
    #[oai(skip_serializing_if_is_none)]
    is_superuser: Option<bool>,
    #[oai(skip_serializing_if_is_none)]
    superuser: Option<bool>,
    /// For a device: exactly its own topics, then a rule that denies everything else.
    #[oai(skip_serializing_if_is_none)]
    acl: Option<Vec<AclRule>>,
}

/// The answer to a publish or subscribe check.
#[derive(Object, Debug, Clone)]
struct AclAnswer {
    result: Verdict,
}

error_docs!(HookErrors {
    400: "`invalid_request`: a body that is neither a JSON object nor a form, or a field \
          other than `access` that is not a string",
    401: "`invalid_token`: the caller did not present the hook secret",
    404: "`not_found`: the hooks are not served (no `IOTBIND_BROKER_HOOK_SECRET`)",
    413: "`payload_too_large`",
});

fn counted(endpoint: &'static str, verdict: Verdict) -> Verdict {
    let result = match verdict {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
    };
    metrics::counter!(crate::metrics::BROKER_HOOK_REQUESTS, "endpoint" => endpoint, "result" => result)
        .increment(1);
    verdict
}

/// A device's access list: allow its own topics, deny the rest.
fn device_rules(device_id: uuid::Uuid) -> Vec<AclRule> {
    let allow = |action, topic| AclRule {
        permission: Verdict::Allow,
        action,
        topic,
    };
    let mut rules: Vec<AclRule> = topics::device_publish_topics(device_id)
        .into_iter()
        .map(|topic| allow(RuleAction::Publish, topic))
        .collect();
    rules.push(allow(RuleAction::Subscribe, topics::commands(device_id)));
    rules.push(AclRule {
        permission: Verdict::Deny,
        action: RuleAction::All,
        topic: "#".to_owned(),
    });
    rules
}

/// rmqtt's `access` (1 subscribe, 2 publish) or EMQX's `action`.
fn requested_access(request: &AclRequest) -> Option<TopicAccess> {
    let access = match &request.access {
        Some(Value::Number(n)) => n.as_u64().map(|n| n.to_string()),
        Some(Value::String(s)) => Some(s.trim().to_owned()),
        _ => None,
    };
    match (request.action.as_deref(), access.as_deref()) {
        (Some("publish"), _) | (None, Some("2")) => Some(TopicAccess::Publish),
        (Some("subscribe"), _) | (None, Some("1")) => Some(TopicAccess::Subscribe),
        _ => None,
    }
}

#[OpenApi(prefix_path = "/api/v1/mqtt", tag = "ApiTags::Broker")]
impl BrokerHooksApi {
    /// Authenticate a client (broker hook)
    ///
    /// A device whose client id is its username and whose password matches is allowed, with
    /// its access list (EMQX 5.8 format); the backend's own login is allowed as superuser;
    /// anything else is denied.
    #[oai(path = "/auth", method = "post", operation_id = "broker_hook_auth")]
    async fn auth(
        &self,
        _auth: BrokerHookAuth,
        state: poem::web::Data<&AppState>,
        body: AuthBody,
    ) -> Result<Json<AuthAnswer>, ApiFailure<HookErrors>> {
        let request = match body {
            AuthBody::Json(Json(request)) | AuthBody::Form(Form(request)) => request,
        };
        let (Some(clientid), Some(username), Some(password)) =
            (request.clientid, request.username, request.password)
        else {
            counted("auth", Verdict::Deny);
            return Ok(Json(deny()));
        };
        let outcome = state
            .broker_logins
            .login(&clientid, &username, password.as_bytes())
            .await;
        let answer = match outcome {
            LoginOutcome::Backend => AuthAnswer {
                result: Verdict::Allow,
                is_superuser: Some(true),
                superuser: Some(true),
                acl: None,
            },
            LoginOutcome::Device(device_id) => AuthAnswer {
                result: Verdict::Allow,
                is_superuser: Some(false),
                superuser: Some(false),
                acl: Some(device_rules(device_id)),
            },
            LoginOutcome::BadCredentials
            | LoginOutcome::NotAuthorized
            | LoginOutcome::Unavailable => deny(),
        };
        counted("auth", answer.result);
        Ok(Json(answer))
    }

    /// Check a publish or subscribe (broker hook)
    ///
    /// A device may publish to its own telemetry, status and command result topics and
    /// subscribe to its own commands; the backend's login may do anything; anything else is
    /// denied.
    #[oai(path = "/acl", method = "post", operation_id = "broker_hook_acl")]
    async fn acl(
        &self,
        _auth: BrokerHookAuth,
        state: poem::web::Data<&AppState>,
        body: AclBody,
    ) -> Result<Json<AclAnswer>, ApiFailure<HookErrors>> {
        let request = match body {
            AclBody::Json(Json(request)) | AclBody::Form(Form(request)) => request,
        };
        let allowed = match (
            &request.clientid,
            &request.username,
            &request.topic,
            requested_access(&request),
        ) {
            (Some(clientid), Some(username), Some(topic), Some(access)) => {
                state.broker_logins.may(clientid, username, access, topic)
            }
            _ => false,
        };
        let result = counted(
            "acl",
            if allowed {
                Verdict::Allow
            } else {
                Verdict::Deny
            },
        );
        Ok(Json(AclAnswer { result }))
    }
}

fn deny() -> AuthAnswer {
    AuthAnswer {
        result: Verdict::Deny,
        is_superuser: None,
        superuser: None,
        acl: None,
    }
}
