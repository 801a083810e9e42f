use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use axum::{
    extract::{Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::query::{self, QueryOptions};
use crate::{metrics::Metrics, snapshot::Store};

/// Liveness and readiness latches, shared with the tasks that set them.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
    /// The first critical task that died before shutdown (`crate::tasks`); once set,
    /// the service is never ready again.
    failed: Arc<Mutex<Option<&'static str>>>,
}

impl Health {
    /// Ready once the snapshot is restored and the first sweep is done; stays ready
    /// unless a critical task dies.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.failed_task().is_none()
    }

    /// Records that critical task `task` died; the first one recorded is kept.
    pub fn set_failed(&self, task: &'static str) {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        failed.get_or_insert(task);
    }

    /// The critical task whose death made the service unready, if any.
    pub fn failed_task(&self) -> Option<&'static str> {
        *self.failed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Health,
}

/// Health and metrics endpoints plus the status query API (`/api/v1/...`).
pub fn router(
    metrics: Arc<Metrics>,
    health: Health,
    store: Arc<Store>,
    query: QueryOptions,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            metrics: metrics.clone(),
            health,
        })
        .merge(query::routes(store, metrics, query))
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if let Some(task) = s.health.failed_task() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: task {task} died (see agentwatch_task_up)\n"),
        )
    } else if s.health.is_ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: restoring state or first sweep not done\n".to_owned(),
        )
    }
}

/// The connection-level limits of the endpoint (from `[http]`).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// `http.header_read_timeout`.
    pub header_read_timeout: Duration,
    /// `http.request_timeout`.
    pub request_timeout: Duration,
    /// `http.max_connections`.
    pub max_connections: usize,
}

impl ServerLimits {
    pub fn from_config(c: &super::HttpConfig) -> Self {
        ServerLimits {
            header_read_timeout: c.header_read_timeout,
            request_timeout: c.request_timeout,
            max_connections: c.max_connections,
        }
    }
}

/// How long the drain waits for open connections after `shutdown` before it drops them
/// (a client that never reads its answer must not hold the exit).
const DRAIN: Duration = Duration::from_secs(5);

/// Serves HTTP/1 until `shutdown`, then lets the open requests finish (up to 5s):
/// plain HTTP, or HTTPS when `tls` is set (`[http.tls]`).
///
/// Not `axum::serve`: it sets no timer, so hyper's header read timeout never fires and
/// a client sending its headers a byte a minute would hold a connection forever; nor
/// does it bound the number of connections.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = router.layer(middleware::from_fn_with_state(
        limits.request_timeout,
        request_timeout,
    ));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let conns = TaskTracker::new();
    loop {
        // Waiting for a permit *before* accepting leaves further clients in the listen
        // backlog rather than accepting connections we will not serve.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let stop = shutdown.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            let _permit = permit;
            // The handshake runs in the connection's own task (and holds its permit):
            // a slow or silent client cannot hold up everybody else's accept.
            match tls {
                None => serve_connection(stream, service, limits, stop).await,
                Some(config) => {
                    if let Some(stream) = crate::tls::handshake(stream, config).await {
                        serve_connection(stream, service, limits, stop).await;
                    }
                }
            }
        });
    }
    conns.close();
    if tokio::time::timeout(DRAIN, conns.wait()).await.is_err() {
        tracing::warn!("HTTP connections still open {DRAIN:?} after shutdown; dropping them");
    }
    Ok(())
}

/// One HTTP/1 connection, with the header read timeout, until it ends or `stop`.
async fn serve_connection<I>(
    io: I,
    service: TowerToHyperService<Router>,
    limits: ServerLimits,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Answers 408 when a request (its body upload included) has no answer head within
/// `http.request_timeout`; the connection is then closed.
async fn request_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(?limit, "HTTP request timed out");
            let message = format!(
                "the request was not complete within {} (http.request_timeout)",
                humantime::format_duration(limit)
            );
            let body = serde_json::json!({
                "error": {"code": "request_timeout", "message": message}
            });
            let mut resp = (StatusCode::REQUEST_TIMEOUT, Json(body)).into_response();
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Store;

    async fn readyz_of(health: Health) -> (u16, String) {
        let (store, _work) = Store::new();
        let app = router(Metrics::new(), health, store, QueryOptions::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            None,
            app,
            ServerLimits::from_config(&Default::default()),
            stop.clone(),
        ));
        let resp = reqwest::get(format!("http://{addr}/readyz"))
            .await
            .expect("readyz answers");
        let out = (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        );
        stop.cancel();
        let _ = server.await;
        out
    }

    #[tokio::test]
    async fn readyz_is_503_naming_the_task_once_a_critical_task_died_even_after_ready() {
        let health = Health::default();
        health.set_ready();
        assert_eq!(readyz_of(health.clone()).await.0, 200);
        health.set_failed("kafka_sink");
        health.set_failed("poller");
        let (code, body) = readyz_of(health).await;
        assert_eq!(code, 503);
        assert!(body.contains("task kafka_sink died"), "{body}");
    }
}
