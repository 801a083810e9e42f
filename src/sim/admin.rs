//! GSE data-link administration (stream_to / route, bk-api.md B §1.5) kept in memory, and
//! `cluster/dispatch_message` (§1.3) recorded for tests.
//!
//! Served at both API generations: GSE 2.0 gateway `{GSE_V2_BASE}data/{op}_{streamto,route}`
//! and the ESB `{ESB_BASE}gse/config_{op}_{streamto,route}/` (app credentials also accepted
//! in the body there). Requests go through the gateway's order (count, latency, app auth) but
//! get no random faults: those target the polling endpoints. GSE 2.0 paths disappear with
//! [`Simulator::set_gse_v2_enabled`] like the others.
//!
//! Request and answer shapes follow bk-monitor's serializers: `add_streamto` answers
//! `{"stream_to_id": n}`, `add_route` `{"channel_id": n}`, queries a list of
//! `{"metadata": {...}, "stream_to": {...}}` / `{"metadata": {...}, "route": [...],
//! "stream_filters": [...]}`, update and delete `null`. Error codes marked "chosen" are the
//! simulator's own (GSE publishes none).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::gateway::{self, pause};
use super::reply::{self, codes};
use super::{auth, Simulator};

/// Chosen: no stream_to / route with that id (on that platform).
pub(crate) const GSE_DATA_NOT_FOUND: i64 = 1_012_404;
/// Chosen: the id or name is already taken.
pub(crate) const GSE_DATA_CONFLICT: i64 = 1_012_409;
/// Chosen: `dispatch_message` with a slot id / token other than the registered ones.
pub(crate) const GSE_SLOT_DENIED: i64 = 1_013_401;

/// Ids GSE hands out; channel ids look like data ids.
const FIRST_STREAM_TO_ID: i64 = 1;
const FIRST_CHANNEL_ID: i64 = 1_500_000;

/// A data receiver as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimStreamTo {
    pub stream_to_id: i64,
    pub plat_name: String,
    pub label: Option<Value>,
    /// `{name, report_mode, kafka|redis|pulsar|data_log_path}` as sent.
    pub stream_to: Value,
}

/// A route (channel) as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimRoute {
    pub channel_id: i64,
    pub plat_name: String,
    pub label: Option<Value>,
    /// `[{name, stream_to: {stream_to_id, kafka|redis|pulsar}, filter_name_and, ...}]`.
    pub route: Vec<Value>,
    /// `[{name, field_index, field_data_type, field_data_value, ...}]`.
    pub stream_filters: Vec<Value>,
}

/// One accepted `cluster/dispatch_message` call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchedMessage {
    pub message_id: String,
    pub agent_id_list: Vec<String>,
    pub content: String,
    pub slot_id: i64,
    pub token: String,
    /// Unix ms when the simulator received it.
    pub received_at_ms: i64,
}

#[derive(Default)]
pub(crate) struct AdminState {
    data: Mutex<AdminData>,
    requests: AtomicU64,
    auth_failures: AtomicU64,
}

struct AdminData {
    stream_tos: BTreeMap<i64, SimStreamTo>,
    routes: BTreeMap<i64, SimRoute>,
    next_stream_to_id: i64,
    next_channel_id: i64,
    dispatched: Vec<DispatchedMessage>,
    /// When set, `dispatch_message` must carry exactly this slot id and token.
    slot: Option<(i64, String)>,
    /// `dispatch_message` calls still to fail with a GSE internal error.
    fail_dispatch: u32,
}

impl Default for AdminData {
    fn default() -> Self {
        AdminData {
            stream_tos: BTreeMap::new(),
            routes: BTreeMap::new(),
            next_stream_to_id: FIRST_STREAM_TO_ID,
            next_channel_id: FIRST_CHANNEL_ID,
            dispatched: Vec::new(),
            slot: None,
            fail_dispatch: 0,
        }
    }
}

impl AdminState {
    // As for the inventory: a poisoned lock means a panic mid-update of plain data.
    fn lock(&self) -> MutexGuard<'_, AdminData> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Simulator {
    /// Every accepted `dispatch_message` call, oldest first.
    pub fn dispatched(&self) -> Vec<DispatchedMessage> {
        self.admin.lock().dispatched.clone()
    }

    pub fn clear_dispatched(&self) {
        self.admin.lock().dispatched.clear();
    }

    /// Stream_to configs by id.
    pub fn stream_tos(&self) -> Vec<SimStreamTo> {
        self.admin.lock().stream_tos.values().cloned().collect()
    }

    /// Route configs by channel id.
    pub fn data_routes(&self) -> Vec<SimRoute> {
        self.admin.lock().routes.values().cloned().collect()
    }

    /// Registers the message slot: `dispatch_message` then needs this slot id and token
    /// (without one, any are accepted).
    pub fn set_slot_credentials(&self, slot: Option<(i64, String)>) {
        self.admin.lock().slot = slot;
    }

    /// Makes the next `times` `dispatch_message` calls fail with a GSE internal error
    /// (HTTP 200, `result: false`, not retried by clients).
    pub fn fail_dispatch(&self, times: u32) {
        self.admin.lock().fail_dispatch = times;
    }

    /// Requests received by the admin and dispatch endpoints, and how many of them were
    /// rejected by app auth.
    pub fn admin_request_counts(&self) -> (u64, u64) {
        (
            self.admin.requests.load(Ordering::Relaxed),
            self.admin.auth_failures.load(Ordering::Relaxed),
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Add,
    Update,
    Delete,
    Query,
}

#[derive(Debug, Clone, Copy)]
enum Object {
    StreamTo,
    Route,
}

pub(crate) fn routes() -> Router<Arc<Simulator>> {
    let mut router = Router::new();
    for (op, op_name) in [
        (Op::Add, "add"),
        (Op::Update, "update"),
        (Op::Delete, "delete"),
        (Op::Query, "query"),
    ] {
        for (object, object_name) in [(Object::StreamTo, "streamto"), (Object::Route, "route")] {
            let v2 = format!("{}data/{op_name}_{object_name}", super::paths::GSE_V2_BASE);
            let esb = format!(
                "{}gse/config_{op_name}_{object_name}/",
                super::paths::ESB_BASE
            );
            router = router
                .route(&format!("{v2}/"), data_route(op, object, false))
                .route(&v2, data_route(op, object, false))
                .route(esb.trim_end_matches('/'), data_route(op, object, true))
                .route(&esb, data_route(op, object, true));
        }
    }
    let dispatch = format!("{}cluster/dispatch_message", super::paths::GSE_V2_BASE);
    router
        .route(&dispatch, post(dispatch_message))
        .route(&format!("{dispatch}/"), post(dispatch_message))
        .route(
            "/_sim/dispatched",
            get(list_dispatched).delete(clear_dispatched),
        )
        .route("/_sim/stream_to", get(list_stream_tos))
        .route("/_sim/routes", get(list_routes))
}

fn data_route(op: Op, object: Object, esb: bool) -> MethodRouter<Arc<Simulator>> {
    post(
        move |State(sim): State<Arc<Simulator>>, headers: HeaderMap, body: Bytes| async move {
            through_gateway(&sim, &headers, &body, !esb, esb, |sim, body, rid| {
                data_api(sim, op, object, body, rid)
            })
            .await
        },
    )
}

async fn dispatch_message(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    through_gateway(&sim, &headers, &body, true, false, dispatch_api).await
}

/// Count, GSE 2.0 switch, latency, app auth, then the backend's answer.
async fn through_gateway(
    sim: &Arc<Simulator>,
    headers: &HeaderMap,
    body: &[u8],
    v2: bool,
    body_credentials: bool,
    respond: impl FnOnce(&Simulator, &[u8], &str) -> (StatusCode, Vec<u8>),
) -> Response {
    sim.admin.requests.fetch_add(1, Ordering::Relaxed);
    if v2 && !sim.gse_v2_enabled() {
        return gateway::not_found(State(Arc::clone(sim))).await;
    }
    let request_id = sim.next_request_id();
    pause(&sim.shutdown_token(), sim.cfg.latency).await;
    if let Err(message) = auth::check(&sim.cfg, headers, body, body_credentials) {
        sim.admin.auth_failures.fetch_add(1, Ordering::Relaxed);
        return reply::gateway_error(
            StatusCode::BAD_REQUEST,
            codes::GW_INVALID_ARGS,
            "INVALID_ARGS",
            message,
            &request_id,
        );
    }
    let (status, body) = respond(sim, body, &request_id);
    reply::json(status, body, &request_id)
}

type ApiResult = Result<Value, (i64, String)>;

fn invalid(message: impl Into<String>) -> (i64, String) {
    (codes::GSE_INVALID_PARAMS, message.into())
}

fn answer(result: ApiResult, request_id: &str) -> (StatusCode, Vec<u8>) {
    match result {
        Ok(data) => (StatusCode::OK, reply::success(data, request_id)),
        Err((code, message)) => (
            StatusCode::OK,
            reply::business_error(code, &message, request_id),
        ),
    }
}

fn data_api(
    sim: &Simulator,
    op: Op,
    object: Object,
    body: &[u8],
    request_id: &str,
) -> (StatusCode, Vec<u8>) {
    let result = reply::parse_object::<Value>(body)
        .map_err(invalid)
        .and_then(|body| {
            str_field(&body, &["operation", "operator_name"])?;
            let mut data = sim.admin.lock();
            match (object, op) {
                (Object::StreamTo, Op::Add) => data.add_stream_to(&body),
                (Object::StreamTo, Op::Update) => data.update_stream_to(&body),
                (Object::StreamTo, Op::Delete) => data.delete_stream_to(&body),
                (Object::StreamTo, Op::Query) => data.query_stream_to(&body),
                (Object::Route, Op::Add) => data.add_route(&body),
                (Object::Route, Op::Update) => data.update_route(&body),
                (Object::Route, Op::Delete) => data.delete_route(&body),
                (Object::Route, Op::Query) => data.query_route(&body),
            }
        });
    answer(result, request_id)
}

fn field<'a>(body: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(body, |v, k| v.get(k))
}

fn str_field(body: &Value, path: &[&str]) -> Result<String, (i64, String)> {
    match field(body, path).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(invalid(format!(
            "{} is required (a string)",
            path.join(".")
        ))),
    }
}

/// Django's IntegerField also takes numeric strings.
fn opt_int_field(body: &Value, path: &[&str]) -> Result<Option<i64>, (i64, String)> {
    let bad = || invalid(format!("{} must be an integer", path.join(".")));
    match field(body, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(bad),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

fn int_field(body: &Value, path: &[&str]) -> Result<i64, (i64, String)> {
    opt_int_field(body, path)?
        .ok_or_else(|| invalid(format!("{} is required (an integer)", path.join("."))))
}

fn not_found(what: &str, id: i64, plat: &str) -> (i64, String) {
    (
        GSE_DATA_NOT_FOUND,
        format!("{what} {id} not found on platform {plat}"),
    )
}

const REPORT_MODES: [&str; 4] = ["kafka", "redis", "pulsar", "file"];

fn check_stream_to(stream_to: Option<&Value>, path: &str) -> Result<Value, (i64, String)> {
    let Some(v @ Value::Object(_)) = stream_to else {
        return Err(invalid(format!("{path} is required (an object)")));
    };
    str_field(v, &["name"]).map_err(|_| invalid(format!("{path}.name is required")))?;
    let mode = v.get("report_mode").and_then(Value::as_str).unwrap_or("");
    if !REPORT_MODES.contains(&mode) {
        return Err(invalid(format!(
            "{path}.report_mode must be one of {}",
            REPORT_MODES.join(", ")
        )));
    }
    Ok(v.clone())
}

fn list_field(body: &Value, path: &[&str]) -> Result<Option<Vec<Value>>, (i64, String)> {
    match field(body, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items.clone())),
        Some(_) => Err(invalid(format!("{} must be a list", path.join(".")))),
    }
}

impl AdminData {
    fn add_stream_to(&mut self, body: &Value) -> ApiResult {
        let plat = str_field(body, &["metadata", "plat_name"])?;
        let stream_to = check_stream_to(body.get("stream_to"), "stream_to")?;
        let name = &stream_to["name"];
        if self
            .stream_tos
            .values()
            .any(|s| s.plat_name == plat && &s.stream_to["name"] == name)
        {
            return Err((
                GSE_DATA_CONFLICT,
                format!("stream_to named {name} already exists on platform {plat}"),
            ));
        }
        let id = self.next_stream_to_id;
        self.next_stream_to_id += 1;
        self.stream_tos.insert(
            id,
            SimStreamTo {
                stream_to_id: id,
                plat_name: plat,
                label: field(body, &["metadata", "label"]).cloned(),
                stream_to,
            },
        );
        Ok(json!({ "stream_to_id": id }))
    }

    fn stream_to_mut(&mut self, body: &Value) -> Result<&mut SimStreamTo, (i64, String)> {
        let id = int_field(body, &["condition", "stream_to_id"])?;
        let plat = str_field(body, &["condition", "plat_name"])?;
        self.stream_tos
            .get_mut(&id)
            .filter(|s| s.plat_name == plat)
            .ok_or_else(|| not_found("stream_to", id, &plat))
    }

    fn update_stream_to(&mut self, body: &Value) -> ApiResult {
        let new = check_stream_to(
            field(body, &["specification", "stream_to"]),
            "specification.stream_to",
        )?;
        self.stream_to_mut(body)?.stream_to = new;
        Ok(Value::Null)
    }

    fn delete_stream_to(&mut self, body: &Value) -> ApiResult {
        let id = self.stream_to_mut(body)?.stream_to_id;
        self.stream_tos.remove(&id);
        Ok(Value::Null)
    }

    fn query_stream_to(&self, body: &Value) -> ApiResult {
        let plat = str_field(body, &["condition", "plat_name"])?;
        let id = opt_int_field(body, &["condition", "stream_to_id"])?;
        let found: Vec<Value> = self
            .stream_tos
            .values()
            .filter(|s| s.plat_name == plat && id.is_none_or(|id| s.stream_to_id == id))
            .map(|s| {
                json!({
                    "metadata": {"stream_to_id": s.stream_to_id, "plat_name": s.plat_name,
                                 "label": s.label},
                    "stream_to": s.stream_to,
                })
            })
            .collect();
        Ok(Value::Array(found))
    }

    /// Every route needs a name and an existing `stream_to.stream_to_id`.
    fn check_routes(&self, routes: &[Value], path: &str) -> Result<(), (i64, String)> {
        for (i, r) in routes.iter().enumerate() {
            let at = format!("{path}[{i}]");
            str_field(r, &["name"]).map_err(|_| invalid(format!("{at}.name is required")))?;
            let id = int_field(r, &["stream_to", "stream_to_id"])
                .map_err(|_| invalid(format!("{at}.stream_to.stream_to_id is required")))?;
            if !self.stream_tos.contains_key(&id) {
                return Err((
                    GSE_DATA_NOT_FOUND,
                    format!("{at}.stream_to.stream_to_id {id} does not exist"),
                ));
            }
        }
        Ok(())
    }

    fn add_route(&mut self, body: &Value) -> ApiResult {
        let plat = str_field(body, &["metadata", "plat_name"])?;
        let route = list_field(body, &["route"])?.unwrap_or_default();
        let filters = list_field(body, &["stream_filters"])?.unwrap_or_default();
        self.check_routes(&route, "route")?;
        let id = match opt_int_field(body, &["metadata", "channel_id"])? {
            Some(id) if self.routes.contains_key(&id) => {
                return Err((GSE_DATA_CONFLICT, format!("channel_id {id} already exists")))
            }
            Some(id) => id,
            None => {
                while self.routes.contains_key(&self.next_channel_id) {
                    self.next_channel_id += 1;
                }
                self.next_channel_id
            }
        };
        self.routes.insert(
            id,
            SimRoute {
                channel_id: id,
                plat_name: plat,
                label: field(body, &["metadata", "label"]).cloned(),
                route,
                stream_filters: filters,
            },
        );
        Ok(json!({ "channel_id": id }))
    }

    fn route_key(&self, body: &Value) -> Result<i64, (i64, String)> {
        let id = int_field(body, &["condition", "channel_id"])?;
        let plat = str_field(body, &["condition", "plat_name"])?;
        match self.routes.get(&id) {
            Some(r) if r.plat_name == plat => Ok(id),
            _ => Err(not_found("channel", id, &plat)),
        }
    }

    fn update_route(&mut self, body: &Value) -> ApiResult {
        let id = self.route_key(body)?;
        if !matches!(body.get("specification"), Some(Value::Object(_))) {
            return Err(invalid("specification is required (an object)"));
        }
        let route = list_field(body, &["specification", "route"])?;
        let filters = list_field(body, &["specification", "stream_filters"])?;
        if let Some(route) = &route {
            self.check_routes(route, "specification.route")?;
        }
        let entry = self.routes.get_mut(&id).expect("route_key checked it");
        if let Some(route) = route {
            entry.route = route;
        }
        if let Some(filters) = filters {
            entry.stream_filters = filters;
        }
        Ok(Value::Null)
    }

    fn delete_route(&mut self, body: &Value) -> ApiResult {
        let id = self.route_key(body)?;
        match field(body, &["operation", "method"]).and_then(Value::as_str) {
            Some("all") => {
                self.routes.remove(&id);
            }
            Some("specification") => {
                let names = |path: &[&str]| -> Vec<Value> {
                    list_field(body, path).ok().flatten().unwrap_or_default()
                };
                let (routes, filters) = (
                    names(&["specification", "route"]),
                    names(&["specification", "stream_filters"]),
                );
                let entry = self.routes.get_mut(&id).expect("route_key checked it");
                entry
                    .route
                    .retain(|r| !routes.contains(r.get("name").unwrap_or(&Value::Null)));
                entry
                    .stream_filters
                    .retain(|f| !filters.contains(f.get("name").unwrap_or(&Value::Null)));
            }
            _ => {
                return Err(invalid(
                    "operation.method is required: \"all\" or \"specification\"",
                ))
            }
        }
        Ok(Value::Null)
    }

    fn query_route(&self, body: &Value) -> ApiResult {
        let id = int_field(body, &["condition", "channel_id"])?;
        let plat = field(body, &["condition", "plat_name"]).and_then(Value::as_str);
        let found: Vec<Value> = self
            .routes
            .get(&id)
            .filter(|r| plat.is_none_or(|p| r.plat_name == p))
            .map(|r| {
                json!({
                    "metadata": {"channel_id": r.channel_id, "plat_name": r.plat_name,
                                 "label": r.label},
                    "route": r.route,
                    "stream_filters": r.stream_filters,
                })
            })
            .into_iter()
            .collect();
        Ok(Value::Array(found))
    }
}

/// `cluster/dispatch_message`: validated as bk-monitor's serializer does, then recorded.
fn dispatch_api(sim: &Simulator, body: &[u8], request_id: &str) -> (StatusCode, Vec<u8>) {
    let result = reply::parse_object::<Value>(body)
        .map_err(invalid)
        .and_then(|body| {
            let message_id = str_field(&body, &["message_id"])?;
            if message_id.len() > 64 {
                return Err(invalid("message_id is longer than 64 characters"));
            }
            let agents: Vec<String> = match body.get("agent_id_list") {
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .ok_or_else(|| invalid("agent_id_list must hold strings"))?,
                _ => return Err(invalid("agent_id_list is required (a list)")),
            };
            if agents.is_empty() {
                return Err(invalid("agent_id_list must not be empty"));
            }
            let content = match body.get("content") {
                Some(Value::String(s)) => s.clone(),
                _ => return Err(invalid("content is required (a string)")),
            };
            let slot_id = int_field(&body, &["slot_id"])?;
            let token = match body.get("token") {
                Some(Value::String(s)) => s.clone(),
                _ => return Err(invalid("token is required (a string)")),
            };
            let mut data = sim.admin.lock();
            if data.fail_dispatch > 0 {
                data.fail_dispatch -= 1;
                return Err((codes::GSE_INTERNAL, "dispatch failed".to_owned()));
            }
            if let Some((want_id, want_token)) = &data.slot {
                if *want_id != slot_id || *want_token != token {
                    return Err((
                        GSE_SLOT_DENIED,
                        "slot_id or token is not registered".to_owned(),
                    ));
                }
            }
            data.dispatched.push(DispatchedMessage {
                message_id,
                agent_id_list: agents,
                content,
                slot_id,
                token,
                received_at_ms: now_ms(),
            });
            Ok(Value::Null)
        });
    answer(result, request_id)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

async fn list_dispatched(State(sim): State<Arc<Simulator>>) -> Response {
    Json(sim.dispatched()).into_response()
}

async fn clear_dispatched(State(sim): State<Arc<Simulator>>) -> StatusCode {
    sim.clear_dispatched();
    StatusCode::NO_CONTENT
}

async fn list_stream_tos(State(sim): State<Arc<Simulator>>) -> Response {
    Json(sim.stream_tos()).into_response()
}

async fn list_routes(State(sim): State<Arc<Simulator>>) -> Response {
    Json(sim.data_routes()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> Value {
        json!({"operator_name": "admin"})
    }

    fn add_kafka(data: &mut AdminData, name: &str) -> i64 {
        let body = json!({"metadata": {"plat_name": "bkmonitor"}, "operation": op(),
            "stream_to": {"name": name, "report_mode": "kafka"}});
        data.add_stream_to(&body).unwrap()["stream_to_id"]
            .as_i64()
            .unwrap()
    }

    #[test]
    fn stream_tos_are_numbered_and_a_name_is_unique_per_platform() {
        let mut data = AdminData::default();
        assert_eq!(add_kafka(&mut data, "a"), FIRST_STREAM_TO_ID);
        assert_eq!(add_kafka(&mut data, "b"), FIRST_STREAM_TO_ID + 1);
        let again = json!({"metadata": {"plat_name": "bkmonitor"}, "operation": op(),
            "stream_to": {"name": "a", "report_mode": "kafka"}});
        assert_eq!(data.add_stream_to(&again).unwrap_err().0, GSE_DATA_CONFLICT);
        let bad_mode = json!({"metadata": {"plat_name": "p"}, "operation": op(),
            "stream_to": {"name": "c", "report_mode": "ftp"}});
        let (code, message) = data.add_stream_to(&bad_mode).unwrap_err();
        assert_eq!(code, codes::GSE_INVALID_PARAMS);
        assert!(message.contains("stream_to.report_mode"), "{message}");
    }

    #[test]
    fn another_platform_cannot_touch_a_stream_to() {
        let mut data = AdminData::default();
        let id = add_kafka(&mut data, "a");
        let delete = json!({"condition": {"stream_to_id": id, "plat_name": "other"},
            "operation": op()});
        assert_eq!(
            data.delete_stream_to(&delete).unwrap_err().0,
            GSE_DATA_NOT_FOUND
        );
        let query = json!({"condition": {"plat_name": "bkmonitor", "stream_to_id": id.to_string()},
            "operation": op()});
        assert_eq!(
            data.query_stream_to(&query)
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_route_must_point_at_an_existing_stream_to_and_can_lose_parts() {
        let mut data = AdminData::default();
        let dangling = json!({"metadata": {"plat_name": "p"}, "operation": op(),
            "route": [{"name": "r", "stream_to": {"stream_to_id": 77}}]});
        assert_eq!(data.add_route(&dangling).unwrap_err().0, GSE_DATA_NOT_FOUND);
        let st = add_kafka(&mut data, "a");
        let body = json!({"metadata": {"plat_name": "p"}, "operation": op(),
            "route": [{"name": "r1", "stream_to": {"stream_to_id": st}},
                      {"name": "r2", "stream_to": {"stream_to_id": st}}]});
        let id = data.add_route(&body).unwrap()["channel_id"]
            .as_i64()
            .unwrap();
        assert_eq!(id, FIRST_CHANNEL_ID);
        let partial = json!({"condition": {"channel_id": id, "plat_name": "p"},
            "operation": {"operator_name": "admin", "method": "specification"},
            "specification": {"route": ["r1"]}});
        data.delete_route(&partial).unwrap();
        assert_eq!(data.routes[&id].route.len(), 1);
        assert_eq!(data.routes[&id].route[0]["name"], "r2");
        let no_method = json!({"condition": {"channel_id": id, "plat_name": "p"},
            "operation": op()});
        assert_eq!(
            data.delete_route(&no_method).unwrap_err().0,
            codes::GSE_INVALID_PARAMS
        );
    }
}
