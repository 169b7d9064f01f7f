//! `/health/live`, `/health/ready`, `/metrics`, request ids and graceful shutdown.

use futures_util::StreamExt;

use crate::support::spawn_app;

#[tokio::test]
async fn liveness_answers_live() {
    let app = spawn_app().await;
    let response = app.get("/health/live").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "live");
}

#[tokio::test]
async fn readiness_reports_the_database_and_the_broker_up() {
    let app = spawn_app().await;
    let response = app.get("/health/ready").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"][0]["name"], "database");
    assert_eq!(body["checks"][0]["state"], "up");
    assert_eq!(body["checks"][1]["name"], "broker");
    assert_eq!(body["checks"][1]["state"], "up");
}

#[tokio::test]
async fn readiness_is_503_unavailable_when_the_database_is_gone() {
    let app = spawn_app().await;
    app.state.db.clone().close().await.unwrap();
    let response = app.get("/health/ready").await;
    let body = crate::support::assert_error(response, 503, "unavailable").await;
    assert!(body["message"].as_str().unwrap().contains("database"));
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app().await;
    app.get("/health/live").await;
    app.get("/no/such/path").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#"http_requests_total{route="/health/live",method="GET",status="200"}"#)
    );
    assert!(text.contains(r#"http_requests_total{route="unmatched",method="GET",status="404"}"#));
    assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
    assert!(text.contains(
        r#"http_request_duration_seconds_bucket{route="/health/live",method="GET",le="0.001"}"#
    ));
}

#[tokio::test]
async fn every_response_carries_a_generated_request_id() {
    let app = spawn_app().await;
    let first = app.get("/health/live").await;
    let second = app.get("/nothing-here").await;
    let a = first.headers()["x-request-id"].to_str().unwrap().to_owned();
    let b = second.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&a).is_ok(), "{a} is a UUID");
    assert_ne!(a, b);
}

#[tokio::test]
async fn a_callers_request_id_is_echoed_back() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-abc-123");
}

#[tokio::test]
async fn an_unprintable_request_id_is_replaced() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "a b\tc")
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
}

#[tokio::test]
async fn swagger_ui_is_served_at_docs() {
    let app = spawn_app().await;
    let response = app.get("/docs/").await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("swagger"));
}

#[tokio::test]
async fn shutdown_stops_the_server_cleanly() {
    let app = spawn_app().await;
    let address = app.address.clone();
    app.stop().await.expect("server exits without error");
    let after = reqwest::get(format!("{address}/health/live")).await;
    assert!(after.is_err(), "nothing listens after shutdown");
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let app = spawn_app().await;
    // A body that arrives slowly keeps the request in flight while shutdown begins.
    let chunks = futures_util::stream::iter(vec![
        r#"{"username": "nobody", "#.to_owned(),
        r#""password": "long enough password"}"#.to_owned(),
    ])
    .then(|chunk| async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        Ok::<_, std::io::Error>(chunk)
    });
    let request = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send();
    let in_flight = tokio::spawn(request);
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    app.stop().await.expect("server exits without error");
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    crate::support::assert_error(response, 401, "invalid_credentials").await;
}

#[tokio::test]
async fn logins_are_counted_by_method_and_outcome() {
    let app = spawn_app().await;
    let refused = app.login("nobody-here", "wrong password 1").await;
    assert_eq!(refused.status(), 401);
    let (code, _) = app.mint_code(None).await;
    app.ticket_for_code(&code).await;

    let metrics = app.get("/metrics").await.text().await.unwrap();
    for series in [
        r#"iotbind_logins_total{method="password",outcome="invalid_credentials"}"#,
        r#"iotbind_logins_total{method="wechat",outcome="bind_required"}"#,
    ] {
        let count = metrics
            .lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|value| value.trim().parse::<f64>().ok());
        assert!(count.is_some_and(|c| c >= 1.0), "{series} in:\n{metrics}");
    }
}
