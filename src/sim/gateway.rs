//! The path every polling request takes, in the gateway's order: count, latency, a gateway
//! error set for the endpoint, app auth, fault injection, then the backend's answer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tokio_util::sync::CancellationToken;

use super::faults::{self, Endpoint, FaultKind};
use super::reply::{self, codes};
use super::{auth, Simulator};

/// One simulated BlueKing API: how to answer, and whether a scheduled fault applies.
pub(crate) trait Api {
    const ENDPOINT: Endpoint;
    /// ESB routes also accept app credentials in the body.
    const BODY_CREDENTIALS: bool = false;

    /// A deterministic fault scheduled through the control API, which wins over random ones.
    fn scheduled_fault(_sim: &Simulator, _body: &[u8]) -> Option<FaultKind> {
        None
    }

    /// The backend's answer: HTTP status and body, built under a read lock of the truth.
    fn respond(sim: &Simulator, body: &[u8], request_id: &str) -> (StatusCode, Vec<u8>);
}

pub(crate) async fn handle<A: Api>(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.stats.request(A::ENDPOINT);
    let request_id = sim.next_request_id();
    let shutdown = sim.shutdown_token();
    pause(&shutdown, sim.cfg.latency).await;

    // A refusing gateway never looks at the credentials or reaches the backend.
    if let Some(error) = sim.faults.gateway_error(A::ENDPOINT) {
        return error.response(&request_id);
    }

    if let Err(message) = auth::check(&sim.cfg, &headers, &body, A::BODY_CREDENTIALS) {
        sim.stats.auth_failure(A::ENDPOINT);
        return reply::gateway_error(
            StatusCode::BAD_REQUEST,
            codes::GW_INVALID_ARGS,
            "INVALID_ARGS",
            message,
            &request_id,
        );
    }

    let fault = A::scheduled_fault(&sim, &body).or_else(|| sim.faults.pick(A::ENDPOINT));
    if let Some(kind) = fault {
        sim.stats.fault(A::ENDPOINT, kind);
    }
    match fault {
        None => answer::<A>(&sim, &body, &request_id),
        Some(FaultKind::Slow) => {
            pause(&shutdown, sim.faults.slow_delay()).await;
            answer::<A>(&sim, &body, &request_id)
        }
        Some(FaultKind::Truncated) => {
            let (status, full) = A::respond(&sim, &body, &request_id);
            reply::json(status, faults::truncate(full), &request_id)
        }
        Some(kind) => faults::canned(kind, A::ENDPOINT, &request_id),
    }
}

fn answer<A: Api>(sim: &Simulator, body: &[u8], request_id: &str) -> Response {
    let (status, body) = A::respond(sim, body, request_id);
    reply::json(status, body, request_id)
}

/// Sleeps unless shutdown comes first, so graceful shutdown never waits out a slow fault.
pub(crate) async fn pause(shutdown: &CancellationToken, duration: Duration) {
    if duration.is_zero() {
        return;
    }
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        () = shutdown.cancelled() => {}
    }
}

/// Unknown path or method: the gateway's 404 (bk-api.md §0.3).
pub(crate) async fn not_found(State(sim): State<Arc<Simulator>>) -> Response {
    reply::gateway_error(
        StatusCode::NOT_FOUND,
        codes::GW_API_NOT_FOUND,
        "API_NOT_FOUND",
        "API not found: wrong method or path, or the resource is not published",
        &sim.next_request_id(),
    )
}
