//! The committed spec in `openapi/openapi.json` is exactly what a production server serves
//! (and a development server serves it plus the fake WeChat API), and what the server answers
//! matches it.

use iotbind::config::ConfigArgs;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::owner_with_devices;
use crate::support::{TestApp, spawn_app, spawn_app_with};

fn committed_spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("openapi/openapi.json exists"))
        .expect("openapi/openapi.json is JSON")
}

/// A server with a real WeChat secret: no fake WeChat API, so the production spec.
async fn spawn_production_app() -> TestApp {
    spawn_app_with(ConfigArgs {
        wechat_appid: Some("wxreal".into()),
        wechat_secret: Some("a-real-secret".into()),
        ..ConfigArgs::default()
    })
    .await
}

#[tokio::test]
async fn the_committed_spec_matches_what_a_production_server_serves() {
    let app = spawn_production_app().await;
    let served: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(
        served == committed_spec(),
        "openapi/openapi.json is stale: regenerate it with \
         `cargo run -q -- openapi > openapi/openapi.json`"
    );
}

#[tokio::test]
async fn a_development_server_serves_the_committed_spec_plus_the_fake_wechat_api() {
    let app = spawn_app().await;
    let mut served: Value = app.get("/openapi.json").await.json().await.unwrap();

    let development: Vec<String> = served["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, operations)| {
            operations
                .as_object()
                .unwrap()
                .values()
                .all(|operation| operation["tags"] == json!(["Development"]))
        })
        .map(|(path, _)| path.clone())
        .collect();
    assert_eq!(
        development,
        [
            "/dev/wechat/codes",
            "/dev/wechat/encrypt",
            "/dev/wechat/faults",
            "/dev/wechat/sns/jscode2session",
        ]
    );
    let tag = served["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tag| tag["name"] == "Development")
        .expect("a Development tag")
        .clone();
    assert!(
        tag["description"]
            .as_str()
            .unwrap()
            .contains("Development mode only"),
        "{tag}"
    );

    // Take the development parts away: what is left is the production spec, exactly.
    let paths = served["paths"].as_object_mut().unwrap();
    for path in &development {
        paths.remove(path);
    }
    served["tags"]
        .as_array_mut()
        .unwrap()
        .retain(|tag| tag["name"] != "Development");
    served["components"]["schemas"]
        .as_object_mut()
        .unwrap()
        .retain(|name, _| !name.starts_with(iotbind::api::development::SCHEMA_PREFIX));
    assert!(
        served == committed_spec(),
        "the development spec is the production one plus the Development tag's operations \
         and their DevWechat* schemas, nothing else"
    );
}

#[tokio::test]
async fn every_operation_has_a_stable_id_a_summary_and_a_tag() {
    let app = spawn_app().await;
    let spec: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    let paths = spec["paths"].as_object().unwrap();
    assert!(!paths.is_empty());
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let what = format!("{method} {path}");
            assert!(
                operation["operationId"].is_string(),
                "{what} has an operationId"
            );
            assert!(operation["summary"].is_string(), "{what} has a summary");
            assert!(operation["tags"][0].is_string(), "{what} has a tag");
        }
    }
}

#[tokio::test]
async fn every_operation_that_needs_the_database_documents_503_with_retry_after() {
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut documented = 0;
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap();
            // Liveness and metrics answer from the process alone, and so does the fake
            // WeChat API of development mode. The broker hooks fail closed: without the
            // database they answer `deny`, which is what a broker needs, never 503.
            if matches!(id, "health_live" | "metrics")
                || id.starts_with("dev_wechat_")
                || id.starts_with("broker_hook_")
            {
                continue;
            }
            let unavailable = &operation["responses"]["503"];
            assert!(unavailable.is_object(), "{method} {path} documents 503");
            assert!(
                unavailable["headers"]["Retry-After"].is_object(),
                "{method} {path}: its 503 carries Retry-After"
            );
            documented += 1;
        }
    }
    assert_eq!(documented, 23);
}

/// The schema a `$ref` (or an `allOf` around one) points at, resolved in `spec`.
fn component<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    let reference = schema["$ref"]
        .as_str()
        .or_else(|| schema["allOf"][0]["$ref"].as_str());
    match reference {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/schemas/");
            &spec["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Every `null` in `answer`, at any depth, is allowed by the `schema` it was answered under.
fn assert_nulls_declared(spec: &Value, schema: &Value, answer: &Value, at: &str) {
    let schema = component(spec, schema);
    match answer {
        Value::Object(fields) => {
            for (name, value) in fields {
                let Some(property) = schema["properties"].get(name) else {
                    continue;
                };
                let here = format!("{at}.{name}");
                if value.is_null() {
                    assert_eq!(
                        property["nullable"],
                        json!(true),
                        "{here} is answered as null, so the spec must declare it nullable"
                    );
                } else {
                    assert_nulls_declared(spec, property, value, &here);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_nulls_declared(spec, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

/// Found by schemathesis (`.ci/schemathesis.sh`): `Option` fields were answered as `null` but
/// declared as plain strings and objects, so every client generated from the spec rejected a
/// fresh device, a pending command and a user without an avatar.
#[tokio::test]
async fn fields_answered_as_null_are_declared_nullable_in_the_spec() {
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let schemas = &spec["components"]["schemas"];
    let (token, devices) = owner_with_devices(&app, 1).await;
    let device_id = &devices[0].device_id;

    let command = app
        .authed_json(
            Method::POST,
            &format!("/api/v1/devices/{device_id}/commands"),
            &token,
            &json!({ "name": "set_relay" }),
        )
        .await;
    assert_eq!(command.status(), 202);
    let command: Value = command.json().await.unwrap();

    let mut answers = vec![("Command", command)];
    for (schema, path) in [
        ("User", "/api/v1/me".to_owned()),
        ("DeviceList", "/api/v1/devices".to_owned()),
        ("Device", format!("/api/v1/devices/{device_id}")),
        (
            "TelemetryPage",
            format!("/api/v1/devices/{device_id}/telemetry"),
        ),
        (
            "CommandList",
            format!("/api/v1/devices/{device_id}/commands"),
        ),
    ] {
        let response = app.authed(Method::GET, &path, &token).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        answers.push((schema, response.json().await.unwrap()));
    }

    let mut nulls_seen = 0;
    for (schema, answer) in &answers {
        nulls_seen += answer.to_string().matches("null").count();
        assert_nulls_declared(&spec, &schemas[*schema], answer, schema);
    }
    // A fresh device, a pending command and a user without avatar: plenty of nulls to check.
    assert!(
        nulls_seen >= 8,
        "the answers hold nulls to check: {answers:?}"
    );
}
