use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex, PoisonError,
};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use tokio_util::sync::CancellationToken;

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

/// Serves until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
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
        let server = tokio::spawn(serve(listener, app, stop.clone()));
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
