//! The error model (`{"error", "message"}` with a real status) for failures every endpoint shares:
//! unknown paths, wrong methods and oversized bodies.

use crate::support::{assert_error, spawn_app};

#[tokio::test]
async fn an_unknown_path_is_404_not_found_json() {
    let app = spawn_app().await;
    assert_error(app.get("/api/v1/nothing").await, 404, "not_found").await;
    assert_error(app.get("/").await, 404, "not_found").await;
}

#[tokio::test]
async fn a_wrong_method_is_405_method_not_allowed_json() {
    let app = spawn_app().await;
    let response = app
        .client
        .delete(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["allow"],
        "GET",
        "HTTP requires Allow on a 405"
    );
    assert_error(response, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn a_405_lists_every_method_of_a_templated_path() {
    let app = spawn_app().await;
    let response = app
        .client
        .put(app.url(&format!("/api/v1/devices/{}", uuid::Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "DELETE, GET, PATCH");
    assert_error(response, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn a_literal_path_segment_wins_over_a_parameter_for_the_allow_header() {
    let app = spawn_app().await;
    for method in [
        reqwest::Method::OPTIONS,
        reqwest::Method::GET,
        reqwest::Method::PUT,
    ] {
        let response = app
            .client
            .request(method.clone(), app.url("/api/v1/devices/claim"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["allow"],
            "POST",
            "{method} /api/v1/devices/claim names the claim operation, not a device"
        );
        assert_error(response, 405, "method_not_allowed").await;
    }
}

#[tokio::test]
async fn a_body_over_64_kib_with_a_length_is_413() {
    let app = spawn_app().await;
    let body = vec![b'x'; 64 * 1024 + 1];
    let response = app.post_raw("/health/live", "application/json", body).await;
    assert_error(response, 413, "payload_too_large").await;
}

#[tokio::test]
async fn a_streamed_body_over_64_kib_without_a_length_is_413() {
    let app = spawn_app().await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..65).map(|_| Ok(vec![b' '; 1024])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = app.post_raw("/health/live", "application/json", body).await;
    assert_error(response, 413, "payload_too_large").await;
}

#[tokio::test]
async fn a_body_of_exactly_64_kib_is_not_refused_for_size() {
    let app = spawn_app().await;
    let body = vec![b' '; 64 * 1024];
    let response = app.post_raw("/health/live", "application/json", body).await;
    // The path takes no POST: the size passed, and the next check answered.
    assert_error(response, 405, "method_not_allowed").await;
}
