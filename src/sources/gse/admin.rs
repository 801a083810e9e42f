//! GSE data-link administration (stream_to / route CRUD, bk-api.md B §1.5) and
//! `cluster/dispatch_message` (§1.3), through the shared [`BkClient`] layer.
//!
//! Paths: GSE 2.0 gateway `{gse.base_url}data/{op}_{streamto,route}` and
//! `{gse.base_url}cluster/dispatch_message`; GSE 1.x ESB
//! `{gse.esb_base_url}config_{op}_{streamto,route}/`. Request bodies and `data` are
//! passed through as JSON: their schema belongs to GSE, not to agentwatch.

use std::{fmt, sync::Arc};

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;

use super::{GseApi, GseConfig};
use crate::{
    metrics::Metrics,
    sources::bk::{ApiError, BkClient, BkConfig, RetryConfig, Upstream},
};

/// What a data-link call operates on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataObject {
    StreamTo,
    Route,
}

impl DataObject {
    /// The name in GSE's paths (`add_streamto`, `config_query_route/`).
    fn path_name(self) -> &'static str {
        match self {
            DataObject::StreamTo => "streamto",
            DataObject::Route => "route",
        }
    }
}

/// The operation of a data-link call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataOp {
    Add,
    Update,
    Delete,
    Query,
}

impl DataOp {
    fn path_name(self) -> &'static str {
        match self {
            DataOp::Add => "add",
            DataOp::Update => "update",
            DataOp::Delete => "delete",
            DataOp::Query => "query",
        }
    }
}

/// The path of a data-link call relative to the API's base URL.
pub fn data_path(api: GseApi, op: DataOp, object: DataObject) -> String {
    let (op, object) = (op.path_name(), object.path_name());
    match api {
        GseApi::V1 => format!("config_{op}_{object}/"),
        GseApi::V2 | GseApi::Auto => format!("data/{op}_{object}"),
    }
}

/// One `cluster/dispatch_message` request. `slot_id` and `token` identify agentwatch's
/// message slot to GSE (bk-monitor's `GSE_SLOT_ID` / `GSE_SLOT_TOKEN`).
pub struct DispatchMessage {
    /// At most 64 characters; a reply reuses the id of the message it answers.
    pub message_id: String,
    pub agent_id_list: Vec<String>,
    /// Opaque to GSE; bk-monitor sends a JSON string.
    pub content: String,
    pub slot_id: i64,
    pub token: SecretString,
}

impl fmt::Debug for DispatchMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatchMessage")
            .field("message_id", &self.message_id)
            .field("agent_id_list", &self.agent_id_list)
            .field("content", &self.content)
            .field("slot_id", &self.slot_id)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct DispatchBody<'a> {
    message_id: &'a str,
    agent_id_list: &'a [String],
    content: &'a str,
    slot_id: i64,
    token: &'a str,
}

/// Client of the GSE admin APIs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GseAdminClient {
    /// Retries per `gse.retry`: queries, updates, deletes and dispatches may repeat.
    client: BkClient,
    /// Never retries: a retried `add` whose first attempt did land would create a
    /// second stream_to / route.
    once: BkClient,
    api: GseApi,
    v2_base: String,
    esb_base: String,
    /// Put into ESB bodies as bk-monitor does (`bk_username`).
    username: String,
}

impl GseAdminClient {
    /// `api` picks the data-link paths: v1 → ESB `config_*`, v2 or auto → gateway
    /// `data/*`. `dispatch_message` exists only on GSE 2.0 and always uses
    /// `gse.base_url`.
    pub fn new(
        cfg: &GseConfig,
        bk: &BkConfig,
        api: GseApi,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ApiError> {
        let client = |retry: RetryConfig| {
            BkClient::new(
                Upstream::Gse,
                bk,
                cfg.timeout,
                retry,
                cfg.concurrency,
                cfg.max_response_bytes,
                metrics.clone(),
            )
        };
        Ok(GseAdminClient {
            client: client(cfg.retry.clone())?,
            once: client(RetryConfig {
                max_retries: 0,
                ..cfg.retry.clone()
            })?,
            api,
            v2_base: with_slash(&cfg.base_url),
            esb_base: with_slash(&cfg.esb_base_url),
            username: bk.username.clone(),
        })
    }

    /// The URL a data-link call goes to.
    pub fn data_url(&self, op: DataOp, object: DataObject) -> String {
        let base = match self.api {
            GseApi::V1 => &self.esb_base,
            GseApi::V2 | GseApi::Auto => &self.v2_base,
        };
        format!("{base}{}", data_path(self.api, op, object))
    }

    /// Runs one stream_to / route call with `body` as given and returns `data` (JSON
    /// null when GSE sent none). Only `add` is never retried.
    pub async fn data_call(
        &self,
        op: DataOp,
        object: DataObject,
        mut body: Value,
    ) -> Result<Value, ApiError> {
        if self.api == GseApi::V1 {
            // ESB components expect the user in the body too (bk-api.md B §0.1).
            if let Value::Object(map) = &mut body {
                map.entry("bk_username")
                    .or_insert_with(|| Value::String(self.username.clone()));
            }
        }
        let client = if op == DataOp::Add {
            &self.once
        } else {
            &self.client
        };
        let data: Option<Value> = client.post(&self.data_url(op, object), &body).await?;
        Ok(data.unwrap_or(Value::Null))
    }

    /// Sends `msg` through `cluster/dispatch_message`; GSE's `data` is not inspected
    /// (bk-monitor only checks the envelope).
    pub async fn dispatch_message(&self, msg: &DispatchMessage) -> Result<(), ApiError> {
        let body = DispatchBody {
            message_id: &msg.message_id,
            agent_id_list: &msg.agent_id_list,
            content: &msg.content,
            slot_id: msg.slot_id,
            token: msg.token.expose_secret(),
        };
        let url = format!("{}cluster/dispatch_message", self.v2_base);
        let _: Option<serde::de::IgnoredAny> = self.client.post(&url, &body).await?;
        Ok(())
    }
}

fn with_slash(base: &str) -> String {
    if base.is_empty() || base.ends_with('/') {
        base.to_owned()
    } else {
        format!("{base}/")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::{routing::post, Json, Router};
    use serde_json::json;

    use super::*;
    use crate::sources::bk::tests::{bk_config, fast_retry, serve};

    #[test]
    fn paths_follow_the_api_generation() {
        assert_eq!(
            data_path(GseApi::V2, DataOp::Add, DataObject::StreamTo),
            "data/add_streamto"
        );
        assert_eq!(
            data_path(GseApi::V1, DataOp::Query, DataObject::Route),
            "config_query_route/"
        );
        assert_eq!(
            data_path(GseApi::Auto, DataOp::Delete, DataObject::Route),
            "data/delete_route"
        );
    }

    #[tokio::test]
    async fn dispatch_sends_slot_id_and_token_and_v1_bodies_get_the_user() {
        let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let record = |path: &'static str, seen: Arc<Mutex<Vec<(String, Value)>>>| {
            post(move |Json(body): Json<Value>| async move {
                seen.lock().unwrap().push((path.to_owned(), body));
                Json(json!({"result": true, "code": 0, "data": {"stream_to_id": 5}}))
            })
        };
        let app = Router::new()
            .route(
                "/v2/cluster/dispatch_message",
                record("dispatch", seen.clone()),
            )
            .route("/esb/config_add_streamto/", record("esb_add", seen.clone()));
        let base = serve(app).await;
        let cfg = GseConfig {
            base_url: format!("{base}v2"),
            esb_base_url: format!("{base}esb/"),
            retry: fast_retry(),
            ..GseConfig::default()
        };
        let c = GseAdminClient::new(&cfg, &bk_config(), GseApi::V1, Metrics::new()).unwrap();
        c.dispatch_message(&DispatchMessage {
            message_id: "m1".into(),
            agent_id_list: vec!["a1".into()],
            content: "{}".into(),
            slot_id: 9,
            token: SecretString::from("tok"),
        })
        .await
        .unwrap();
        let data = c
            .data_call(DataOp::Add, DataObject::StreamTo, json!({"x": 1}))
            .await
            .unwrap();
        assert_eq!(data, json!({"stream_to_id": 5}));
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].0, "dispatch");
        assert_eq!(
            seen[0].1,
            json!({"message_id": "m1", "agent_id_list": ["a1"], "content": "{}",
                   "slot_id": 9, "token": "tok"})
        );
        assert_eq!(seen[1].1, json!({"x": 1, "bk_username": "admin"}));
    }

    #[tokio::test]
    async fn add_is_never_retried_but_query_is() {
        let calls: Arc<Mutex<u32>> = Arc::default();
        let counter = calls.clone();
        let app = Router::new().fallback(move || {
            let counter = counter.clone();
            async move {
                *counter.lock().unwrap() += 1;
                (axum::http::StatusCode::BAD_GATEWAY, "down")
            }
        });
        let base = serve(app).await;
        let cfg = GseConfig {
            base_url: base,
            retry: fast_retry(),
            ..GseConfig::default()
        };
        let c = GseAdminClient::new(&cfg, &bk_config(), GseApi::V2, Metrics::new()).unwrap();
        assert!(c
            .data_call(DataOp::Add, DataObject::Route, json!({}))
            .await
            .is_err());
        assert_eq!(*calls.lock().unwrap(), 1);
        assert!(c
            .data_call(DataOp::Query, DataObject::Route, json!({}))
            .await
            .is_err());
        assert_eq!(*calls.lock().unwrap(), 1 + 1 + fast_retry().max_retries);
    }
}
