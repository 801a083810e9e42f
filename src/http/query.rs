//! The status query API: answers from the in-memory snapshot, never from an upstream.
//!
//! - `GET  /api/v1/agents/{agent_id}` — one agent (404 when unknown).
//! - `POST /api/v1/agents/status` — a batch by agent ids, `{ip, bk_cloud_id}` or host
//!   ids; one result per entry in request order, `status: "unknown"` when not known.
//! - `GET  /api/v1/agents` — a page in agent-id order with filters and a cursor.
//! - `GET  /api/v1/summary` — counts by status, business and cloud area.
//!
//! Shapes are documented in `docs/openapi.yaml`. The batch and the listing are
//! streamed: their JSON is written a few hundred agents at a time as the client reads,
//! so a 10,000-entry answer never sits whole in memory. Every body names the shard
//! that answered and whether the answer covers only that shard.
//!
//! Host-id and address lookups and the listing use the store's lookup index, rebuilt
//! here (off the async workers, one rebuild at a time) when the store says it is out
//! of date; see `snapshot::query` for the design and its memory cost.

mod error;
mod render;
mod request;

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::{Body, Bytes},
    extract::{
        rejection::{BytesRejection, PathRejection, QueryRejection},
        DefaultBodyLimit, Path, Query, State,
    },
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use futures::{stream, Stream, StreamExt};

use self::{
    error::{ErrorBody, ErrorDetail, QueryError},
    render::{
        to_json, write_json, write_record, write_result, AgentBody, RecordView, ShardView,
        SummaryBody,
    },
    request::{encode_cursor, ListParams, Lookup},
};
use super::HttpConfig;
use crate::{
    metrics::Metrics,
    snapshot::{AgentIndex, PageWalk, Store},
};

/// Entries rendered per streamed chunk (~0.5 KB each).
const CHUNK: usize = 256;
/// Ids one listing page looks at before it returns (possibly short, with a cursor):
/// bounds the work of a page whose filter matches few agents.
const MAX_SCAN_PER_PAGE: usize = 100_000;

/// Which shard this replica is; every response carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardInfo {
    pub index: u32,
    pub total: u32,
}

impl Default for ShardInfo {
    fn default() -> Self {
        ShardInfo { index: 0, total: 1 }
    }
}

impl From<crate::shard::Shard> for ShardInfo {
    fn from(s: crate::shard::Shard) -> Self {
        ShardInfo {
            index: s.index,
            total: s.total,
        }
    }
}

/// Writes the result of batch entry `i`.
type RenderEntry = Box<dyn Fn(usize, &mut Vec<u8>) + Send>;

/// Settings of the query routes.
#[derive(Debug, Clone, Copy)]
pub struct QueryOptions {
    pub shard: ShardInfo,
    /// `http.max_query_ids`.
    pub max_query_ids: usize,
    /// `http.max_body_bytes`.
    pub max_body_bytes: usize,
}

impl QueryOptions {
    /// The limits from `[http]`; the shard defaults to 0 of 1.
    pub fn from_config(c: &HttpConfig) -> Self {
        QueryOptions {
            shard: ShardInfo::default(),
            max_query_ids: c.max_query_ids,
            max_body_bytes: c.max_body_bytes,
        }
    }
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions::from_config(&HttpConfig::default())
    }
}

struct QueryState {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    opts: QueryOptions,
    index: IndexCache,
}

/// The query routes, to merge into the service's router.
pub fn routes(store: Arc<Store>, metrics: Arc<Metrics>, opts: QueryOptions) -> Router {
    let state = Arc::new(QueryState {
        store,
        metrics,
        opts,
        index: IndexCache::default(),
    });
    Router::new()
        // `GET` on the batch path is the agent whose id is "status": a static segment
        // wins over `{agent_id}` in the router.
        .route(
            "/api/v1/agents/status",
            get(|s| agent(s, Ok(Path("status".to_owned())))).post(status),
        )
        .route("/api/v1/agents/{agent_id}", get(agent))
        .route("/api/v1/agents", get(list))
        .route("/api/v1/summary", get(summary))
        .layer(DefaultBodyLimit::max(opts.max_body_bytes))
        .with_state(state)
}

impl QueryState {
    /// Turns a result into the response and counts it.
    fn finish(&self, route: &'static str, r: Result<Response, QueryError>) -> Response {
        let resp = match r {
            Ok(resp) => resp,
            Err(e) => {
                if matches!(e, QueryError::Internal(_)) {
                    tracing::warn!(route, error = %e, "query failed");
                } else {
                    tracing::debug!(route, code = e.code(), "query rejected: {e}");
                }
                let body = ErrorBody {
                    shard: self.opts.shard.into(),
                    error: ErrorDetail::of(&e),
                };
                json(e.status(), to_json(&body))
            }
        };
        self.metrics
            .query_requests_total
            .with_label_values(&[route, resp.status().as_str()])
            .inc();
        resp
    }
}

async fn agent(
    State(s): State<Arc<QueryState>>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let r = match id {
        Ok(Path(id)) => match s.store.agent(&id) {
            Some(rec) => Ok(json(
                StatusCode::OK,
                to_json(&AgentBody {
                    shard: s.opts.shard.into(),
                    record: RecordView::of(&rec, now_ms()),
                }),
            )),
            None => Err(QueryError::AgentNotFound(id)),
        },
        Err(e) => Err(QueryError::BadRequest(e.body_text())),
    };
    s.finish("agent", r)
}

async fn status(State(s): State<Arc<QueryState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let r = status_inner(&s, body).await;
    s.finish("status", r)
}

async fn status_inner(
    s: &QueryState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, QueryError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            QueryError::BodyTooLarge {
                limit: s.opts.max_body_bytes,
            }
        } else {
            QueryError::Body(e.body_text())
        }
    })?;
    let lookup = Lookup::parse(&body, s.opts.max_query_ids)?;
    drop(body);
    let n = lookup.len();
    let (store, now) = (s.store.clone(), now_ms());
    // Renders entry `i`; address and host-id lookups hold the index they use.
    let entry: RenderEntry = match lookup {
        Lookup::AgentIds(v) => {
            Box::new(move |i, out| write_result(out, &v[i], store.agent(&v[i]).as_ref(), now))
        }
        Lookup::Hosts(v) => {
            let idx = s.index.get(&s.store).await?;
            Box::new(move |i, out| {
                let rec = store.agent_by_addr(&idx, v[i].bk_cloud_id, &v[i].ip);
                write_result(out, &v[i], rec.as_ref(), now)
            })
        }
        Lookup::HostIds(v) => {
            let idx = s.index.get(&s.store).await?;
            Box::new(move |i, out| {
                write_result(out, &v[i], store.agent_by_host(&idx, v[i]).as_ref(), now)
            })
        }
    };
    let mut head = br#"{"shard":"#.to_vec();
    write_json(&mut head, &ShardView::from(s.opts.shard));
    head.extend_from_slice(format!(r#","count":{n},"results":["#).as_bytes());
    let chunks = stream::iter((0..n).step_by(CHUNK)).map(move |start| {
        let mut out = Vec::with_capacity(CHUNK * 512);
        for i in start..(start + CHUNK).min(n) {
            if i > 0 {
                out.push(b',');
            }
            entry(i, &mut out);
        }
        out
    });
    Ok(streamed(head, chunks, b"]}".to_vec()))
}

async fn list(
    State(s): State<Arc<QueryState>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let r = list_inner(&s, params).await;
    s.finish("list", r)
}

async fn list_inner(
    s: &QueryState,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, QueryError> {
    let Query(params) = params.map_err(|e| QueryError::BadRequest(e.body_text()))?;
    let req = params.validate()?;
    let index = s.index.get(&s.store).await?;
    let walk = PageWalk::new(
        index,
        req.after.as_deref(),
        req.filter,
        req.limit,
        MAX_SCAN_PER_PAGE,
    );
    let mut head = br#"{"shard":"#.to_vec();
    write_json(&mut head, &ShardView::from(s.opts.shard));
    head.extend_from_slice(br#","agents":["#);
    let (store, now) = (s.store.clone(), now_ms());
    let pages = stream::unfold(Some((walk, true)), move |st| {
        let store = store.clone();
        async move {
            let (mut walk, first) = st?;
            let chunk = walk.next_chunk(&store, CHUNK);
            let mut out = Vec::with_capacity(chunk.len() * 512 + 64);
            if chunk.is_empty() {
                // The cursor is known only once the page is complete, so it comes last.
                out.extend_from_slice(br#"],"next_cursor":"#);
                write_json(&mut out, &walk.next_after().map(encode_cursor));
                out.push(b'}');
                return Some((out, None));
            }
            for (i, r) in chunk.iter().enumerate() {
                if !first || i > 0 {
                    out.push(b',');
                }
                write_record(&mut out, r, now);
            }
            Some((out, Some((walk, false))))
        }
    });
    Ok(streamed(head, pages, Vec::new()))
}

async fn summary(State(s): State<Arc<QueryState>>) -> Response {
    let store = s.store.clone();
    // One pass over every agent: off the async workers.
    let r = match tokio::task::spawn_blocking(move || store.summary()).await {
        Ok(sum) => Ok(json(
            StatusCode::OK,
            to_json(&SummaryBody::of(s.opts.shard, &sum)),
        )),
        Err(e) => Err(QueryError::Internal(e.to_string())),
    };
    s.finish("summary", r)
}

/// The lookup index, rebuilt when the store's generation moved.
#[derive(Default)]
struct IndexCache {
    current: Mutex<Option<Arc<AgentIndex>>>,
    /// One rebuild at a time; requests that waited for it use its result.
    rebuild: tokio::sync::Mutex<()>,
}

impl IndexCache {
    fn cached(&self) -> Option<Arc<AgentIndex>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn get(&self, store: &Arc<Store>) -> Result<Arc<AgentIndex>, QueryError> {
        let before = self.cached();
        if let Some(i) = before
            .as_ref()
            .filter(|i| i.generation() == store.generation())
        {
            return Ok(i.clone());
        }
        let _one = self.rebuild.lock().await;
        // Rebuilt while this request waited: good enough even if the store moved on
        // since, so that a burst of requests during churn costs one rebuild, not one
        // each. Agents that appeared since are found by the next request.
        if let Some(i) = self.cached() {
            let fresh = i.generation() == store.generation();
            let rebuilt = !before.as_ref().is_some_and(|b| Arc::ptr_eq(b, &i));
            if fresh || rebuilt {
                return Ok(i);
            }
        }
        let started = Instant::now();
        let s = store.clone();
        let index = tokio::task::spawn_blocking(move || s.build_index())
            .await
            .map_err(|e| QueryError::Internal(format!("index rebuild failed: {e}")))?;
        let index = Arc::new(index);
        tracing::debug!(agents = index.len(), elapsed = ?started.elapsed(), "query index rebuilt");
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(index.clone());
        Ok(index)
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A 200 JSON response written chunk by chunk as the client reads.
fn streamed(
    head: Vec<u8>,
    middle: impl Stream<Item = Vec<u8>> + Send + 'static,
    tail: Vec<u8>,
) -> Response {
    let chunks = stream::once(async move { head })
        .chain(middle)
        .chain(stream::once(async move { tail }))
        .filter(|c| std::future::ready(!c.is_empty()))
        .map(|c| Ok::<_, std::convert::Infallible>(Bytes::from(c)));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(chunks),
    )
        .into_response()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
