//! The committed spec in `openapi/openapi.json` is exactly what the server serves.

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_committed_spec_matches_the_served_one() {
    let app = spawn_app().await;
    let served: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("openapi/openapi.json exists"))
            .expect("openapi/openapi.json is JSON");
    assert!(
        served == committed,
        "openapi/openapi.json is stale: regenerate it with \
         `cargo run -q -- openapi > openapi/openapi.json`"
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
