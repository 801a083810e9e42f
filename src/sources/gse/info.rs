//! GSE 2.0 `cluster/list_agent_info` (bk-api.md B §1.2): heartbeat details per agent —
//! parent (proxy/server), heartbeat and start time, CPU and memory usage.
//!
//! The field list comes from NodeMan's mock, not from a GSE document, so everything but
//! `bk_agent_id` is optional and null is read as absent. Each item carries its own `code`:
//! an item with `code != 0` is GSE saying it has nothing for that agent.

use crate::sources::inventory::AgentId;

use serde::{Deserialize, Serialize};

use super::{v2::CODE_NONE_FOUND, GseClient};
use crate::sources::bk::{null_as_default, ApiError};

/// One agent's details from `list_agent_info`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GseAgentInfo {
    pub agent_id: String,
    pub parent_ip: String,
    pub parent_port: i32,
    /// Unix milliseconds.
    pub report_time_ms: i64,
    /// Unix milliseconds (GSE sends seconds).
    pub start_time_ms: i64,
    pub cpu_rate: f64,
    pub mem_rate: f64,
    pub version: String,
}

#[derive(Serialize)]
struct Request<'a> {
    agent_id_list: &'a [AgentId],
}

/// One `data` item; the other fields GSE sends (`status_code`, `bk_host_ip`, ...) are
/// skipped.
#[derive(Deserialize)]
struct WireInfo {
    bk_agent_id: String,
    /// Per-agent result: 0, or why this agent has no details.
    #[serde(default, deserialize_with = "null_as_default")]
    code: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    parent_ip: String,
    #[serde(default, deserialize_with = "null_as_default")]
    parent_port: i32,
    /// Unix milliseconds.
    #[serde(default, deserialize_with = "null_as_default")]
    report_time: i64,
    /// Unix seconds, unlike `report_time`.
    #[serde(default, deserialize_with = "null_as_default")]
    start_time: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    cpu_rate: f64,
    #[serde(default, deserialize_with = "null_as_default")]
    mem_rate: f64,
    #[serde(default, deserialize_with = "null_as_default")]
    version: String,
}

impl From<WireInfo> for GseAgentInfo {
    fn from(w: WireInfo) -> Self {
        GseAgentInfo {
            agent_id: w.bk_agent_id,
            parent_ip: w.parent_ip,
            parent_port: w.parent_port,
            report_time_ms: w.report_time,
            start_time_ms: w.start_time.saturating_mul(1000),
            cpu_rate: w.cpu_rate,
            mem_rate: w.mem_rate,
            version: w.version,
        }
    }
}

impl GseClient {
    /// Details of one batch of agents. Agents GSE has nothing for are absent: missing
    /// from `data`, answered with a per-agent error item (`code != 0`, counted in a debug
    /// log), or the whole batch answered with business code 1011003 (`Ok(vec![])`). An
    /// empty `ids` makes no call.
    pub async fn list_agent_info(&self, ids: &[AgentId]) -> Result<Vec<GseAgentInfo>, ApiError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let url = format!("{}cluster/list_agent_info", self.base_url);
        let request = Request { agent_id_list: ids };
        let answer = self
            .client
            .post::<_, Option<Vec<WireInfo>>>(&url, &request)
            .await;
        let (infos, skipped) = interpret(answer)?;
        if skipped > 0 {
            tracing::debug!(
                upstream = "gse",
                requested = ids.len(),
                skipped,
                "list_agent_info answered some agents with a per-agent error; they have no details this round"
            );
        }
        Ok(infos)
    }
}

/// Decodes a complete `list_agent_info` response body (envelope included) the way
/// [`GseClient::list_agent_info`] does: the details and how many items were skipped for
/// a per-agent error. For fuzzing.
pub(crate) fn decode_list_agent_info(body: &[u8]) -> Result<(Vec<GseAgentInfo>, usize), ApiError> {
    interpret(
        crate::sources::bk::envelope::decode::<Option<Vec<WireInfo>>>(
            "gse cluster/list_agent_info",
            body,
        ),
    )
}

/// The details of the items answered with `code == 0`, and how many were not; business
/// code 1011003 means no agent has details.
fn interpret(
    answer: Result<Option<Vec<WireInfo>>, ApiError>,
) -> Result<(Vec<GseAgentInfo>, usize), ApiError> {
    let items = match answer {
        Ok(items) => items.unwrap_or_default(),
        Err(ApiError::Business {
            code: CODE_NONE_FOUND,
            ..
        }) => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let total = items.len();
    let infos: Vec<GseAgentInfo> = items
        .into_iter()
        .filter(|w| w.code == 0)
        .map(GseAgentInfo::from)
        .collect();
    let skipped = total - infos.len();
    Ok((infos, skipped))
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use axum::{routing::post, Json, Router};
    use serde_json::{json, Value};

    use super::*;
    use crate::{
        metrics::Metrics,
        sources::{
            bk::tests::{bk_config, fast_retry, serve},
            gse::GseConfig,
        },
    };

    const PATH: &str = "/cluster/list_agent_info";

    fn client(base: &str) -> GseClient {
        let cfg = GseConfig {
            base_url: base.to_owned(),
            retry: fast_retry(),
            ..GseConfig::default()
        };
        GseClient::new(&cfg, &bk_config(), Metrics::new()).unwrap()
    }

    fn answering(body: Value) -> Router {
        Router::new().route(
            PATH,
            post(move || {
                let body = body.clone();
                async move { Json(body) }
            }),
        )
    }

    fn ids(list: &[&str]) -> Vec<AgentId> {
        list.iter().map(|s| AgentId::from(*s)).collect()
    }

    /// An item shaped like NodeMan's mock (bk-api.md B §1.2).
    fn mock_item(id: &str) -> Value {
        json!({
            "code": 0, "message": "", "bk_agent_id": id, "bk_cloud_id": 0,
            "bk_host_ip": "10.0.0.1", "bk_os_type": "linux", "report_time": 1_700_000_123_456_i64,
            "parent_ip": "10.0.255.1", "parent_port": 28668, "version": "2.1.6",
            "cpu_rate": 12.5, "mem_rate": 40.25, "start_time": 1_690_000_000,
            "run_mode": 0, "status_code": 2, "status": "running", "last_status_code": 2,
            "last_status": "running", "remark": "",
        })
    }

    #[tokio::test]
    async fn start_time_in_seconds_becomes_milliseconds_and_fields_are_kept() {
        let base = serve(answering(
            json!({"result": true, "code": 0, "data": [mock_item("a1")]}),
        ))
        .await;
        let got = client(&base).list_agent_info(&ids(&["a1"])).await.unwrap();
        assert_eq!(
            got,
            [GseAgentInfo {
                agent_id: "a1".into(),
                parent_ip: "10.0.255.1".into(),
                parent_port: 28668,
                report_time_ms: 1_700_000_123_456,
                start_time_ms: 1_690_000_000_000,
                cpu_rate: 12.5,
                mem_rate: 40.25,
                version: "2.1.6".into(),
            }]
        );
    }

    #[tokio::test]
    async fn code_1011003_means_no_agent_has_details_and_is_not_an_error() {
        let base = serve(answering(
            json!({"result": false, "code": 1011003, "message": "agent not found", "data": null}),
        ))
        .await;
        let got = client(&base).list_agent_info(&ids(&["x"])).await.unwrap();
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn per_agent_error_items_are_skipped() {
        let data = json!([
            mock_item("a1"),
            {"code": 1011003, "message": "agent not found", "bk_agent_id": "ghost"},
        ]);
        let base = serve(answering(json!({"result": true, "code": 0, "data": data}))).await;
        let got = client(&base)
            .list_agent_info(&ids(&["a1", "ghost"]))
            .await
            .unwrap();
        let got: Vec<&str> = got.iter().map(|i| i.agent_id.as_str()).collect();
        assert_eq!(got, ["a1"]);
    }

    #[tokio::test]
    async fn null_and_missing_optional_fields_take_defaults() {
        let data = json!([
            {"bk_agent_id": "a"},
            {"bk_agent_id": "b", "parent_ip": null, "cpu_rate": null, "start_time": null,
                "code": null},
        ]);
        let base = serve(answering(json!({"result": true, "code": 0, "data": data}))).await;
        let got = client(&base)
            .list_agent_info(&ids(&["a", "b"]))
            .await
            .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1],
            GseAgentInfo {
                agent_id: "b".into(),
                ..GseAgentInfo::default()
            }
        );
    }

    #[tokio::test]
    async fn an_item_without_agent_id_fails_the_batch_naming_the_field() {
        let data = json!([mock_item("a"), {"parent_ip": "10.0.0.1"}]);
        let base = serve(answering(json!({"result": true, "code": 0, "data": data}))).await;
        match client(&base).list_agent_info(&ids(&["a", "b"])).await {
            Err(ApiError::Decode { detail, .. }) => assert!(
                detail.starts_with("data[1]: missing field `bk_agent_id`"),
                "{detail}"
            ),
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn empty_batch_makes_no_call() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = Router::new().route(
            PATH,
            post(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { Json(json!({"result": true, "data": []})) }
            }),
        );
        let c = client(&serve(app).await);
        assert!(c.list_agent_info(&[]).await.unwrap().is_empty());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}
