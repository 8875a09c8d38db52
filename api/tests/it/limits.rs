//! What bounds a request, through the whole router: a body over the limit
//! is refused in the one error shape before anything reads it, whether or
//! not its length is announced.

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use prometheus_client::registry::Registry;
use syncfleet_api::auth::create_token;
use syncfleet_common::ops::Health;
use syncfleet_testkit::TestEnv;
use tower::ServiceExt;

/// The largest body the api reads: 2 MiB.
const LIMIT: usize = 2 * 1024 * 1024;

/// A new organization of exactly `size` bytes, most of them its name.
fn organization_of(size: usize) -> String {
    let head = r#"{"external_id": "limits", "access_type": "office365", "name": ""#;
    format!(r#"{head}{}"}}"#, "x".repeat(size - head.len() - 2))
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_naming_the_body_with_or_without_its_length() {
    let env = TestEnv::new().await;
    let token = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let router = syncfleet_api::router(
        crate::state(&env, env.pool.clone()),
        Health::new(false),
        Registry::default(),
    );
    let post = |body: Body, length: Option<usize>| {
        let mut request = Request::post("/v1/organizations")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(length) = length {
            request = request.header(header::CONTENT_LENGTH, length);
        }
        let router = router.clone();
        async move {
            let response = router.oneshot(request.body(body).unwrap()).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap())
        }
    };
    let refused = (
        StatusCode::PAYLOAD_TOO_LARGE,
        serde_json::json!({"error": {
            "code": "too_large",
            "message": format!("the body is larger than {LIMIT} bytes"),
            "field": "body",
        }}),
    );

    let over = organization_of(LIMIT + 1);
    assert_eq!(post(Body::from(over.clone()), Some(over.len())).await, refused);
    let chunks: Vec<Result<_, std::io::Error>> = over
        .into_bytes()
        .chunks(64 * 1024)
        .map(|chunk| Ok(axum::body::Bytes::copy_from_slice(chunk)))
        .collect();
    assert_eq!(
        post(Body::from_stream(futures_util::stream::iter(chunks)), None).await,
        refused
    );

    // At the limit, the route reads it (and finds the name too long).
    let at = organization_of(LIMIT);
    let (status, answer) = post(Body::from(at.clone()), Some(at.len())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["field"], "name", "{answer}");
    env.cleanup().await;
}
