//! GSE 2.0 `cluster/list_agent_state` (bk-api.md B §1.1): realtime state of up to
//! `batch_size` agents per call.

use crate::sources::inventory::AgentId;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{GseAgentState, GseConfig};
use crate::{
    metrics::Metrics,
    sources::bk::{null_as_default, ApiError, BkClient, BkConfig, Upstream},
};

/// GSE's business code for "none of these agent ids are known".
pub const CODE_NONE_FOUND: i64 = 1011003;

#[derive(Clone, Debug)]
pub struct GseClient {
    pub(super) client: BkClient,
    url: String,
    /// Base URL (ends with '/'), for the other v2 endpoints.
    pub(super) base_url: String,
}

#[derive(Serialize)]
struct Request<'a> {
    agent_id_list: &'a [AgentId],
}

/// One `data` item as sent; unknown fields are skipped without being stored.
#[derive(Deserialize)]
struct WireState {
    bk_agent_id: String,
    status_code: i32,
    #[serde(default, deserialize_with = "null_as_default")]
    bk_cloud_id: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    version: String,
    #[serde(default, deserialize_with = "null_as_default")]
    run_mode: i32,
}

impl From<WireState> for GseAgentState {
    fn from(w: WireState) -> Self {
        GseAgentState {
            agent_id: w.bk_agent_id,
            cloud_id: w.bk_cloud_id,
            version: w.version,
            run_mode: w.run_mode,
            status_code: w.status_code,
            v1_alive: None,
        }
    }
}

impl GseClient {
    pub fn new(cfg: &GseConfig, bk: &BkConfig, metrics: Arc<Metrics>) -> Result<Self, ApiError> {
        let client = BkClient::new(
            Upstream::Gse,
            bk,
            cfg.timeout,
            cfg.retry.clone(),
            cfg.concurrency,
            cfg.max_response_bytes,
            metrics,
        )?;
        Ok(GseClient {
            client,
            url: format!("{}cluster/list_agent_state", cfg.base_url),
            base_url: cfg.base_url.clone(),
        })
    }

    /// The state of one batch of agents.
    ///
    /// Ids GSE does not know are absent from the result (the caller treats them as
    /// not found); business code 1011003 ("none of these ids are known") is that same
    /// answer for the whole batch, so it is `Ok(vec![])`, not an error. An empty `ids`
    /// makes no call.
    pub async fn list_agent_state(&self, ids: &[AgentId]) -> Result<Vec<GseAgentState>, ApiError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let request = Request { agent_id_list: ids };
        interpret(
            self.client
                .post::<_, Option<Vec<WireState>>>(&self.url, &request)
                .await,
        )
    }
}

/// Decodes a complete `list_agent_state` response body (envelope included) the way
/// [`GseClient::list_agent_state`] does; public for benchmarks and fuzzing.
pub fn decode_list_agent_state(body: &[u8]) -> Result<Vec<GseAgentState>, ApiError> {
    interpret(
        crate::sources::bk::envelope::decode::<Option<Vec<WireState>>>(
            "gse cluster/list_agent_state",
            body,
        ),
    )
}

/// What a decoded answer means: `data: null` with success and business code 1011003
/// both say "none of these agents is known".
fn interpret(
    answer: Result<Option<Vec<WireState>>, ApiError>,
) -> Result<Vec<GseAgentState>, ApiError> {
    match answer {
        Ok(states) => Ok(states
            .unwrap_or_default()
            .into_iter()
            .map(GseAgentState::from)
            .collect()),
        Err(ApiError::Business {
            code: CODE_NONE_FOUND,
            ..
        }) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use axum::{routing::post, Json, Router};
    use serde_json::{json, Value};

    use super::*;
    use crate::sources::bk::tests::{bk_config, fast_retry, serve};

    fn client(base: &str, metrics: Arc<Metrics>) -> GseClient {
        let cfg = GseConfig {
            base_url: base.to_owned(),
            retry: fast_retry(),
            ..GseConfig::default()
        };
        GseClient::new(&cfg, &bk_config(), metrics).unwrap()
    }

    /// A GSE that knows the given agents and answers like the real one.
    fn gse(known: HashMap<&'static str, i32>) -> Router {
        let known = Arc::new(known);
        Router::new().route(
            "/cluster/list_agent_state",
            post(move |Json(req): Json<Value>| {
                let known = known.clone();
                async move {
                    let data: Vec<Value> = req["agent_id_list"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(|id| {
                            let id = id.as_str().unwrap();
                            let code = known.get(id)?;
                            Some(json!({"bk_agent_id": id, "bk_cloud_id": 0,
                                "version": "2.1.0", "run_mode": 1, "status_code": code,
                                "extra": {"ignored": true}}))
                        })
                        .collect();
                    if data.is_empty() {
                        Json(json!({"result": false, "code": 1011003,
                            "message": "agent not found", "data": null}))
                    } else {
                        Json(json!({"result": true, "code": 0, "message": "", "data": data}))
                    }
                }
            }),
        )
    }

    fn ids(list: &[&str]) -> Vec<AgentId> {
        list.iter().map(|s| AgentId::from(*s)).collect()
    }

    #[tokio::test]
    async fn known_agents_are_decoded_and_unknown_ids_are_absent() {
        let base = serve(gse(HashMap::from([("a1", 2), ("0:10.0.0.2", 3)]))).await;
        let c = client(&base, Metrics::new());
        let got = c
            .list_agent_state(&ids(&["a1", "missing", "0:10.0.0.2"]))
            .await
            .unwrap();
        assert_eq!(
            got,
            [
                GseAgentState {
                    agent_id: "a1".into(),
                    cloud_id: 0,
                    version: "2.1.0".into(),
                    run_mode: 1,
                    status_code: 2,
                    v1_alive: None,
                },
                GseAgentState {
                    agent_id: "0:10.0.0.2".into(),
                    cloud_id: 0,
                    version: "2.1.0".into(),
                    run_mode: 1,
                    status_code: 3,
                    v1_alive: None,
                },
            ]
        );
    }

    #[tokio::test]
    async fn code_1011003_means_no_agent_is_known_and_is_not_an_error() {
        let metrics = Metrics::new();
        let base = serve(gse(HashMap::new())).await;
        let c = client(&base, metrics.clone());
        assert!(c
            .list_agent_state(&ids(&["x", "y"]))
            .await
            .unwrap()
            .is_empty());
        // Still an "envelope" outcome on the wire, and not retried.
        let envelope = metrics
            .upstream_requests_total
            .with_label_values(&["gse", "envelope"])
            .get();
        assert_eq!(envelope, 1);
    }

    #[tokio::test]
    async fn empty_batch_makes_no_call() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = Router::new().route(
            "/cluster/list_agent_state",
            post(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { Json(json!({"result": true, "data": []})) }
            }),
        );
        let c = client(&serve(app).await, Metrics::new());
        assert!(c.list_agent_state(&[]).await.unwrap().is_empty());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn missing_optional_fields_and_nulls_take_defaults() {
        let app = Router::new().route(
            "/cluster/list_agent_state",
            post(|| async {
                Json(json!({"result": true, "code": 0, "data": [
                    {"bk_agent_id": "a", "status_code": -2},
                    {"bk_agent_id": "b", "status_code": 2, "version": null, "bk_cloud_id": null},
                ]}))
            }),
        );
        let c = client(&serve(app).await, Metrics::new());
        let got = c.list_agent_state(&ids(&["a", "b"])).await.unwrap();
        assert_eq!(got[0].status_code, -2);
        assert_eq!((got[1].version.as_str(), got[1].cloud_id), ("", 0));
    }

    #[tokio::test]
    async fn bad_item_fails_the_batch_and_names_the_field() {
        let app = Router::new().route(
            "/cluster/list_agent_state",
            post(|| async {
                Json(json!({"result": true, "code": 0, "data": [
                    {"bk_agent_id": "a", "status_code": 2},
                    {"bk_agent_id": "b", "status_code": "running"},
                ]}))
            }),
        );
        let c = client(&serve(app).await, Metrics::new());
        match c.list_agent_state(&ids(&["a", "b"])).await {
            Err(ApiError::Decode { detail, .. }) => assert!(
                detail.starts_with("data[1].status_code: invalid type: string \"running\""),
                "{detail}"
            ),
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn other_business_errors_fail_the_batch() {
        let app = Router::new().route(
            "/cluster/list_agent_state",
            post(|| async { Json(json!({"result": false, "code": 1011001, "message": "busy"})) }),
        );
        let c = client(&serve(app).await, Metrics::new());
        let err = c.list_agent_state(&ids(&["a"])).await.unwrap_err();
        assert_eq!(err.business_code(), Some(1011001));
    }
}
