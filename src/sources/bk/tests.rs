//! [`BkClient`] against tiny local servers, plus helpers the API modules' tests share.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use secrecy::SecretString;
use serde_json::{json, Value};

use super::*;
use crate::metrics::{Metrics, UPSTREAM_OUTCOMES};

pub(crate) const SECRET: &str = "s3cr3t-never-logged";

/// Serves `app` on 127.0.0.1 (any port); returns the base URL ending in '/'.
pub(crate) async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}/")
}

pub(crate) fn bk_config() -> BkConfig {
    BkConfig {
        app_code: "agentwatch".into(),
        app_secret: Some(SecretString::from(SECRET)),
        username: "admin".into(),
        tenant_id: Some("system".into()),
        ..BkConfig::default()
    }
}

/// Millisecond back-off so retry tests stay fast.
pub(crate) fn fast_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

struct Setup {
    timeout: Duration,
    retry: RetryConfig,
    concurrency: usize,
    max_response_bytes: usize,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            timeout: Duration::from_secs(5),
            retry: fast_retry(),
            concurrency: 4,
            max_response_bytes: 1 << 20,
        }
    }
}

impl Setup {
    fn client(self, metrics: &Arc<Metrics>) -> BkClient {
        BkClient::new(
            Upstream::Gse,
            &bk_config(),
            self.timeout,
            self.retry,
            self.concurrency,
            self.max_response_bytes,
            metrics.clone(),
        )
        .unwrap()
    }
}

fn count(metrics: &Metrics, outcome: &str) -> u64 {
    metrics
        .upstream_requests_total
        .with_label_values(&["gse", outcome])
        .get()
}

fn ok_body() -> Json<Value> {
    Json(json!({"result": true, "code": 0, "message": "", "data": [1, 2, 3]}))
}

/// A route at `/x` answering the n-th call (0-based) with `answer(n)`.
async fn scripted(answer: fn(usize) -> Response) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = Router::new().route(
        "/x",
        post(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move { answer(n) }
        }),
    );
    (format!("{}x", serve(app).await), calls)
}

#[tokio::test]
async fn auth_header_is_json_with_app_code_secret_and_username() {
    let seen: Arc<Mutex<Option<HeaderMap>>> = Arc::default();
    let store = seen.clone();
    let app = Router::new().route(
        "/x",
        post(move |headers: HeaderMap, Json(body): Json<Value>| {
            *store.lock().unwrap() = Some(headers);
            async move {
                assert_eq!(body, json!({"agent_id_list": ["a"]}));
                ok_body()
            }
        }),
    );
    let url = format!("{}x", serve(app).await);
    let metrics = Metrics::new();
    let got: Vec<i32> = Setup::default()
        .client(&metrics)
        .post(&url, &json!({"agent_id_list": ["a"]}))
        .await
        .unwrap();
    assert_eq!(got, [1, 2, 3]);

    let headers = seen.lock().unwrap().take().unwrap();
    let auth: Value = serde_json::from_slice(headers["x-bkapi-authorization"].as_bytes()).unwrap();
    assert_eq!(
        auth,
        json!({"bk_app_code": "agentwatch", "bk_app_secret": SECRET, "bk_username": "admin"})
    );
    assert_eq!(headers["x-bk-tenant-id"], "system");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(count(&metrics, "ok"), 1);
}

#[tokio::test]
async fn the_secret_appears_in_no_debug_output_or_error() {
    let metrics = Metrics::new();
    let client = Setup::default().client(&metrics);
    assert!(!format!("{client:?}").contains(SECRET));
    let (url, _) = scripted(|_| {
        let body = json!({"result": false, "code": 1640001, "message": "bad secret"});
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    })
    .await;
    let err = client.post::<_, Value>(&url, &json!({})).await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains(SECRET));
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let (url, calls) = scripted(|n| {
        if n < 2 {
            let body = json!({"result": false, "code": 1650200, "message": "bad gateway"});
            (StatusCode::BAD_GATEWAY, Json(body)).into_response()
        } else {
            ok_body().into_response()
        }
    })
    .await;
    let metrics = Metrics::new();
    let got: Vec<i32> = Setup::default()
        .client(&metrics)
        .post(&url, &json!({}))
        .await
        .unwrap();
    assert_eq!(got, [1, 2, 3]);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!((count(&metrics, "http_5xx"), count(&metrics, "ok")), (2, 1));
}

#[tokio::test]
async fn retries_stop_after_max_retries() {
    let (url, calls) = scripted(|_| StatusCode::SERVICE_UNAVAILABLE.into_response()).await;
    let metrics = Metrics::new();
    let err = Setup::default()
        .client(&metrics)
        .post::<_, Value>(&url, &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Http { status: 503, .. }), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(count(&metrics, "http_5xx"), 3);
}

#[tokio::test]
async fn rate_limited_call_waits_for_the_reset_header_then_retries() {
    let (url, calls) = scripted(|n| {
        if n == 0 {
            let body = json!({"result": false, "code": 1642903, "message": "rate limited"});
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            resp.headers_mut()
                .insert("x-bkapi-ratelimit-reset", "0.3".parse().unwrap());
            resp
        } else {
            ok_body().into_response()
        }
    })
    .await;
    let metrics = Metrics::new();
    let setup = Setup {
        retry: RetryConfig {
            max_backoff: Duration::from_secs(2),
            ..fast_retry()
        },
        ..Setup::default()
    };
    let started = Instant::now();
    let got: Vec<i32> = setup.client(&metrics).post(&url, &json!({})).await.unwrap();
    assert_eq!(got, [1, 2, 3]);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        (count(&metrics, "rate_limited"), count(&metrics, "ok")),
        (1, 1)
    );
}

#[tokio::test]
async fn rate_limit_wait_is_capped_at_max_backoff() {
    let (url, _) = scripted(|n| {
        if n == 0 {
            let mut resp = StatusCode::TOO_MANY_REQUESTS.into_response();
            resp.headers_mut()
                .insert("retry-after", "3600".parse().unwrap());
            resp
        } else {
            ok_body().into_response()
        }
    })
    .await;
    let metrics = Metrics::new();
    let setup = Setup {
        retry: RetryConfig {
            max_backoff: Duration::from_millis(100),
            ..fast_retry()
        },
        ..Setup::default()
    };
    let started = Instant::now();
    let _: Vec<i32> = setup.client(&metrics).post(&url, &json!({})).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn bad_request_is_not_retried_and_keeps_the_gateway_code() {
    let (url, calls) = scripted(|_| {
        let body = json!({"result": false, "code": 1640001, "code_name": "INVALID_ARGS",
            "message": "app not found", "data": null});
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    })
    .await;
    let metrics = Metrics::new();
    let err = Setup::default()
        .client(&metrics)
        .post::<_, Value>(&url, &json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Http {
                status: 400,
                code: Some(1640001),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("/x: HTTP 400, code 1640001: app not found"),
        "{err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(count(&metrics, "http_4xx"), 1);
}

#[tokio::test]
async fn business_and_decode_errors_are_not_retried() {
    let (url, calls) =
        scripted(|_| Json(json!({"result": false, "code": 7, "message": "no"})).into_response())
            .await;
    let metrics = Metrics::new();
    let client = Setup::default().client(&metrics);
    let err = client.post::<_, Value>(&url, &json!({})).await.unwrap_err();
    assert_eq!(err.business_code(), Some(7));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let (url, calls) = scripted(|_| "<html>not json</html>".into_response()).await;
    let err = client.post::<_, Value>(&url, &json!({})).await.unwrap_err();
    assert!(matches!(err, ApiError::Decode { .. }), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        (count(&metrics, "envelope"), count(&metrics, "decode")),
        (1, 1)
    );
}

#[tokio::test]
async fn timeout_is_retried_then_fails_with_timeout() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = Router::new().route(
        "/x",
        post(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                ok_body()
            }
        }),
    );
    let url = format!("{}x", serve(app).await);
    let metrics = Metrics::new();
    let setup = Setup {
        timeout: Duration::from_millis(100),
        ..Setup::default()
    };
    let err = setup
        .client(&metrics)
        .post::<_, Value>(&url, &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Timeout { .. }), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(count(&metrics, "timeout"), 3);
}

#[tokio::test]
async fn refused_connection_is_retried_then_fails_with_connect() {
    // Bind then drop: nothing listens on the port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let metrics = Metrics::new();
    let err = Setup::default()
        .client(&metrics)
        .post::<_, Value>(&format!("http://127.0.0.1:{port}/x"), &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Connect { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(count(&metrics, "connect"), 3);
}

#[tokio::test]
async fn oversized_body_is_too_large_whether_declared_or_streamed() {
    let (declared, _) = scripted(|_| {
        let body = json!({"result": true, "data": "x".repeat(5000)});
        Json(body).into_response()
    })
    .await;
    let (streamed, _) = scripted(|_| {
        let chunks = (0..10).map(|i| {
            let s = if i == 0 { "{\"result\":true,\"data\":\"" } else { "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" };
            Ok::<_, std::io::Error>(s)
        });
        Response::new(Body::from_stream(futures::stream::iter(chunks)))
    })
    .await;
    let metrics = Metrics::new();
    let setup = Setup {
        max_response_bytes: 1024,
        ..Setup::default()
    };
    let client = setup.client(&metrics);
    for url in [declared, streamed] {
        let err = client.post::<_, Value>(&url, &json!({})).await.unwrap_err();
        assert!(
            matches!(err, ApiError::TooLarge { limit: 1024, .. }),
            "{err:?}"
        );
        assert!(!err.is_retryable());
    }
    assert_eq!(count(&metrics, "too_large"), 2);
}

/// An envelope padded with trailing spaces (still valid JSON) to exactly `len` bytes.
fn padded_envelope(len: usize) -> String {
    let mut s = r#"{"result":true,"code":0,"data":"ok"}"#.to_owned();
    assert!(s.len() <= len);
    s.extend(std::iter::repeat_n(' ', len - s.len()));
    s
}

#[tokio::test]
async fn a_response_of_exactly_max_response_bytes_is_read_and_one_byte_more_is_too_large() {
    const LIMIT: usize = 1024;
    // `/d/{len}`: Content-Length set. `/s/{len}`: 100-byte chunks, no Content-Length.
    let app = Router::new()
        .route(
            "/d/{len}",
            post(
                |axum::extract::Path(len): axum::extract::Path<usize>| async move {
                    Response::new(Body::from(padded_envelope(len)))
                },
            ),
        )
        .route(
            "/s/{len}",
            post(
                |axum::extract::Path(len): axum::extract::Path<usize>| async move {
                    let body = padded_envelope(len).into_bytes();
                    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                        body.chunks(100).map(|c| Ok(c.to_vec())).collect();
                    Response::new(Body::from_stream(futures::stream::iter(chunks)))
                },
            ),
        );
    let base = serve(app).await;
    let urls = [
        (format!("{base}d/{LIMIT}"), true),
        (format!("{base}s/{LIMIT}"), true),
        (format!("{base}d/{}", LIMIT + 1), false),
        (format!("{base}s/{}", LIMIT + 1), false),
    ];
    let metrics = Metrics::new();
    let setup = Setup {
        max_response_bytes: LIMIT,
        ..Setup::default()
    };
    let client = setup.client(&metrics);
    for (url, fits) in &urls {
        let r = client.post::<_, Value>(url, &json!({})).await;
        if *fits {
            assert_eq!(r.unwrap(), json!("ok"), "{url}");
            continue;
        }
        let err = r.unwrap_err();
        assert!(
            matches!(err, ApiError::TooLarge { limit: LIMIT, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .ends_with("response body larger than 1024 bytes (gse.max_response_bytes)"),
            "{err}"
        );
    }
    // Not retried: one call each, two counted as too large, the two others as ok.
    assert_eq!(count(&metrics, "too_large"), 2);
    assert_eq!(count(&metrics, "ok"), 2);
    // The client still works after the rejections.
    let r = client.post::<_, Value>(&urls[0].0, &json!({})).await;
    assert_eq!(r.unwrap(), json!("ok"));
}

#[tokio::test]
async fn calls_in_flight_never_exceed_the_concurrency_limit() {
    static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);
    let app = Router::new().route(
        "/x",
        post(|| async {
            let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
            PEAK.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
            ok_body()
        }),
    );
    let url = format!("{}x", serve(app).await);
    let metrics = Metrics::new();
    let client = Setup {
        concurrency: 2,
        ..Setup::default()
    }
    .client(&metrics);
    let body = json!({});
    let calls = (0..8).map(|_| client.post::<_, Vec<i32>>(&url, &body));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(PEAK.load(Ordering::SeqCst), 2);
    assert_eq!(count(&metrics, "ok"), 8);
}

#[tokio::test]
async fn every_outcome_is_precreated_and_durations_are_observed() {
    let metrics = Metrics::new();
    let (url, _) = scripted(|_| ok_body().into_response()).await;
    let client = Setup::default().client(&metrics);
    let text = metrics.render();
    for outcome in UPSTREAM_OUTCOMES {
        let line = format!(
            "agentwatch_upstream_requests_total{{outcome=\"{outcome}\",upstream=\"gse\"}} 0"
        );
        assert!(text.contains(&line), "missing {line}");
    }
    let _: Vec<i32> = client.post(&url, &json!({})).await.unwrap();
    let hist = metrics
        .upstream_request_duration_seconds
        .with_label_values(&["gse"]);
    assert_eq!(hist.get_sample_count(), 1);
}

#[test]
fn every_error_label_is_a_declared_outcome() {
    let endpoint = String::new;
    let errors = [
        ApiError::Build {
            upstream: "gse",
            detail: String::new(),
        },
        ApiError::Timeout {
            endpoint: endpoint(),
            after: Duration::ZERO,
        },
        ApiError::Http {
            endpoint: endpoint(),
            status: 404,
            code: None,
            message: String::new(),
        },
        ApiError::Http {
            endpoint: endpoint(),
            status: 500,
            code: None,
            message: String::new(),
        },
        ApiError::RateLimited {
            endpoint: endpoint(),
            retry_after: None,
            code: None,
            message: String::new(),
        },
        ApiError::Business {
            endpoint: endpoint(),
            code: 1,
            message: String::new(),
        },
        ApiError::Decode {
            endpoint: endpoint(),
            detail: String::new(),
        },
        ApiError::Inconsistent {
            endpoint: endpoint(),
            detail: String::new(),
        },
        ApiError::TooLarge {
            endpoint: endpoint(),
            limit: 1,
            field: "gse.max_response_bytes",
        },
        ApiError::OverLimit {
            endpoint: endpoint(),
            what: "hosts",
            value: 2,
            limit: 1,
            field: "nodeman.max_hosts",
        },
    ];
    for e in errors {
        assert!(UPSTREAM_OUTCOMES.contains(&e.metric_label()), "{e:?}");
    }
}

#[test]
fn missing_secret_is_a_build_error() {
    let bk = BkConfig {
        app_secret: None,
        ..bk_config()
    };
    let err = BkClient::new(
        Upstream::Nodeman,
        &bk,
        Duration::from_secs(1),
        fast_retry(),
        1,
        1024,
        Metrics::new(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot build nodeman request: bk.app_secret is not set"
    );
}
