//! `POST /api/v4/bk_gse_slot/`: authenticate, bound, validate, write to Kafka, and only
//! then answer `data: true`.
//!
//! Answers use the BlueKing envelope. Errors carry the HTTP status as `code`:
//! 401 token missing or wrong, 413 body too large, 400 invalid body (the message names
//! the field), 503 the broker did not acknowledge (retry; `data: false`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{header::CONTENT_LENGTH, HeaderMap, HeaderName, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use futures::StreamExt;
use rdkafka::{
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{SlotConfig, SlotError, SlotRequest, SlotResult};
use crate::{
    metrics::Metrics,
    sinks::kafka::{client_config, KafkaConfig},
};

/// The path bk-monitor serves (`BkGseSlotViewSet`); GSE is configured with it.
pub const SLOT_PATH: &str = "/api/v4/bk_gse_slot/";

/// Extra wait on top of `slot.ack_timeout` (which is also librdkafka's
/// `message.timeout.ms`) so librdkafka's own verdict normally arrives first.
const ACK_MARGIN: Duration = Duration::from_millis(500);

struct Receiver {
    /// `slot.token_header` as configured (`HeaderName` is lower-case), for messages.
    header_shown: String,
    producer: FutureProducer,
    topic: String,
    ack_timeout: Duration,
    token: SecretString,
    token_header: HeaderName,
    max_body: usize,
    metrics: Arc<Metrics>,
}

/// The slot routes (with and without the trailing slash), ready to merge into the
/// service's router. Needs a validated, enabled `cfg`.
pub fn router(
    cfg: &SlotConfig,
    kafka: &KafkaConfig,
    metrics: Arc<Metrics>,
) -> Result<Router, SlotError> {
    let token = cfg
        .token
        .clone()
        .ok_or(SlotError::NotConfigured("slot.token"))?;
    let token_header = HeaderName::from_bytes(cfg.token_header.as_bytes())
        .map_err(|_| SlotError::NotConfigured("a valid slot.token_header"))?;
    let producer = slot_producer(kafka, cfg.ack_timeout).map_err(SlotError::Kafka)?;
    let receiver = Arc::new(Receiver {
        producer,
        topic: kafka.slot_topic.clone(),
        ack_timeout: cfg.ack_timeout,
        token,
        token_header,
        header_shown: cfg.token_header.clone(),
        max_body: cfg.max_body_bytes,
        metrics,
    });
    Ok(Router::new()
        .route(SLOT_PATH, post(receive))
        .route(SLOT_PATH.trim_end_matches('/'), post(receive))
        .with_state(receiver))
}

/// An `acks=all` producer whose records are each their own batch (see the module docs
/// of [`crate::slot`] for why) and whose delivery timeout is the ack timeout, so
/// librdkafka gives up when the caller is told to retry.
///
/// Deliberately not idempotent: duplicates are part of this path anyway (the caller
/// retries after a timeout whose first attempt may have landed) and the worker drops
/// them by `message_id`; an idempotent producer id, on the other hand, can be fenced for
/// good after messages time out during an outage (tansu does this), which would need
/// the producer replaced.
fn slot_producer(kafka: &KafkaConfig, ack_timeout: Duration) -> Result<FutureProducer, KafkaError> {
    let mut c = client_config(kafka);
    c.set("client.id", "agentwatch-slot")
        .set("enable.idempotence", "false")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .set("message.timeout.ms", ack_timeout.as_millis().to_string());
    c.create()
}

fn envelope(status: StatusCode, message: &str, data: bool) -> Response {
    let ok = status.is_success();
    let code = if ok { 0 } else { i64::from(status.as_u16()) };
    let body = json!({"result": ok, "code": code, "message": message, "data": data});
    (status, Json(body)).into_response()
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    if !r.authorized(&headers) {
        SlotResult::Unauthorized.count(&r.metrics);
        let present = headers.contains_key(&r.token_header);
        tracing::warn!(header = %r.header_shown, present, "slot request rejected: bad token");
        let message = format!("missing or wrong token in header {}", r.header_shown);
        return envelope(StatusCode::UNAUTHORIZED, &message, false);
    }
    let bytes = match read_limited(body, &headers, r.max_body).await {
        Ok(b) => b,
        Err(ReadError::TooLarge) => {
            SlotResult::TooLarge.count(&r.metrics);
            tracing::warn!(limit = r.max_body, "slot request rejected: body too large");
            let message = format!(
                "body larger than {} bytes (slot.max_body_bytes)",
                r.max_body
            );
            return envelope(StatusCode::PAYLOAD_TOO_LARGE, &message, false);
        }
        Err(ReadError::Broken(e)) => {
            SlotResult::Invalid.count(&r.metrics);
            let message = format!("body: cannot be read: {e}");
            return envelope(StatusCode::BAD_REQUEST, &message, false);
        }
    };
    let req = match SlotRequest::parse(&bytes) {
        Ok(req) => req,
        Err(message) => {
            SlotResult::Invalid.count(&r.metrics);
            tracing::warn!(error = %message, "slot request rejected: invalid body");
            return envelope(StatusCode::BAD_REQUEST, &message, false);
        }
    };
    match r.produce(&req.message_id, &bytes).await {
        Ok(elapsed) => {
            SlotResult::Accepted.count(&r.metrics);
            r.metrics
                .slot_produce_duration_seconds
                .observe(elapsed.as_secs_f64());
            tracing::debug!(message_id = %req.message_id, agent_id = %req.bk_agent_id,
                "slot message accepted");
            envelope(StatusCode::OK, "OK", true)
        }
        Err(error) => {
            SlotResult::KafkaUnavailable.count(&r.metrics);
            tracing::warn!(message_id = %req.message_id, %error,
                "slot message not acknowledged by Kafka; answering 503 so the caller retries");
            let message = format!("not stored, retry later: {error}");
            envelope(StatusCode::SERVICE_UNAVAILABLE, &message, false)
        }
    }
}

enum ReadError {
    TooLarge,
    Broken(axum::Error),
}

/// Reads at most `limit` bytes; a declared `Content-Length` over it is refused before
/// reading anything.
async fn read_limited(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ReadError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut stream = body.into_data_stream();
    let mut buf = Vec::with_capacity(declared.map_or(4096, |n| n as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Broken)?;
        if buf.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

impl Receiver {
    /// Constant-time comparison of the header with the token. Only the length can leak
    /// through timing, and tokens are long random strings of a fixed length.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers.get(&self.token_header) else {
            return false;
        };
        bool::from(
            given
                .as_bytes()
                .ct_eq(self.token.expose_secret().as_bytes()),
        )
    }

    /// Produces the original body keyed by `message_id` and waits for the broker's
    /// acknowledgement; returns how long that took.
    async fn produce(&self, message_id: &str, body: &[u8]) -> Result<Duration, KafkaError> {
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/json"),
        });
        let record = FutureRecord::to(&self.topic)
            .key(message_id)
            .payload(body)
            .headers(headers);
        let started = Instant::now();
        let wait = self.ack_timeout + ACK_MARGIN;
        let delivery = self.producer.send(record, Timeout::After(wait));
        match tokio::time::timeout(wait, delivery).await {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err((e, _))) => Err(e),
            Err(_) => Err(KafkaError::MessageProduction(
                rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
            )),
        }
    }
}
