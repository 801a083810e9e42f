//! The `/_sim/*` control API: tests and demos change the truth and the faults over HTTP.
//! No auth and no faults here; errors are plain `{"error": "..."}` bodies.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::faults::{Endpoint, FaultConfig, FaultKind, GatewayError};
use super::model::{AddHostError, NewHost};
use super::plugins::PluginError;
use super::Simulator;

pub(crate) fn routes() -> Router<Arc<Simulator>> {
    Router::new()
        .route("/_sim/agents", get(list_agents))
        .route(
            "/_sim/agents/{agent_id}",
            get(get_agent).put(update_agent).delete(remove_agent),
        )
        .route("/_sim/agents/{agent_id}/forget", post(forget_agent))
        .route("/_sim/agents/{agent_id}/remember", post(remember_agent))
        .route("/_sim/agents/{agent_id}/restart", post(restart_agent))
        .route(
            "/_sim/agents/{agent_id}/plugins/{plugin}",
            axum::routing::put(update_plugin).delete(remove_plugin),
        )
        .route("/_sim/gse_v2", get(get_gse_v2).put(put_gse_v2))
        .route("/_sim/hosts", post(add_host))
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route(
            "/_sim/gateway_errors",
            get(get_gateway_errors).put(put_gateway_error),
        )
        .route("/_sim/inventory/fail_page", post(fail_page))
        .route("/_sim/flap", post(flap))
        .route("/_sim/stats", get(stats))
}

enum ControlError {
    BadRequest(String),
    NotFound(String),
    Conflict(String),
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ControlError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ControlError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ControlError::Conflict(m) => (StatusCode::CONFLICT, m),
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

type Result<T> = std::result::Result<T, ControlError>;

/// Axum's `Path` already percent-decodes, so `0%3A10.0.0.1` and `0:10.0.0.1` both work.
fn agent_id(path: std::result::Result<Path<String>, PathRejection>) -> Result<String> {
    path.map(|Path(id)| id)
        .map_err(|e| ControlError::BadRequest(e.body_text()))
}

fn unknown(id: &str) -> ControlError {
    ControlError::NotFound(format!("unknown agent id {id:?}"))
}

// Parsed by hand rather than with `Json` so a bad body gets our error shape, with or without
// a content-type header.
/// Parses a JSON body; an error names the field it is about (`rate: invalid type ...`).
fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ControlError::BadRequest(match path.as_str() {
            "." | "" => format!("invalid body: {inner}"),
            _ => format!("invalid body: {path}: {inner}"),
        })
    })
}

async fn list_agents(State(sim): State<Arc<Simulator>>) -> Response {
    Json(sim.truth()).into_response()
}

async fn get_agent(
    State(sim): State<Arc<Simulator>>,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let id = agent_id(path)?;
    let agent = sim.agent(&id).ok_or_else(|| unknown(&id))?;
    Ok(Json(agent).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentUpdate {
    #[serde(default)]
    status_code: Option<i32>,
    #[serde(default)]
    version: Option<String>,
    /// The agent's proxy / GSE server (agent info `parent_ip`).
    #[serde(default)]
    parent_ip: Option<String>,
}

async fn update_agent(
    State(sim): State<Arc<Simulator>>,
    path: std::result::Result<Path<String>, PathRejection>,
    bytes: Bytes,
) -> Result<Response> {
    let id = agent_id(path)?;
    let update: AgentUpdate = body(&bytes)?;
    if let Some(parent) = &update.parent_ip {
        if !sim.set_parent_ip(&id, parent) {
            return Err(unknown(&id));
        }
    }
    let agent = sim
        .update_agent(&id, update.status_code, update.version.as_deref())
        .ok_or_else(|| unknown(&id))?;
    Ok(Json(agent).into_response())
}

async fn remove_agent(
    State(sim): State<Arc<Simulator>>,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Result<StatusCode> {
    let id = agent_id(path)?;
    if sim.remove_host(&id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(unknown(&id))
    }
}

async fn forget_agent(
    State(sim): State<Arc<Simulator>>,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    set_in_gse(&sim, agent_id(path)?, false)
}

async fn remember_agent(
    State(sim): State<Arc<Simulator>>,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    set_in_gse(&sim, agent_id(path)?, true)
}

fn set_in_gse(sim: &Simulator, id: String, in_gse: bool) -> Result<Response> {
    let changed = if in_gse {
        sim.remember_in_gse(&id)
    } else {
        sim.forget_in_gse(&id)
    };
    if !changed {
        return Err(unknown(&id));
    }
    let agent = sim.agent(&id).ok_or_else(|| unknown(&id))?;
    Ok(Json(agent).into_response())
}

async fn add_host(State(sim): State<Arc<Simulator>>, bytes: Bytes) -> Result<Response> {
    // An empty body adds a host with every default.
    let spec: NewHost = if bytes.iter().all(u8::is_ascii_whitespace) {
        NewHost::default()
    } else {
        body(&bytes)?
    };
    let id = sim.try_add_host(spec).map_err(|e| match e {
        AddHostError::InvalidAgentId(_) | AddHostError::Ipv6OnlyConflict => {
            ControlError::BadRequest(e.to_string())
        }
        AddHostError::AddressInUse { .. } | AddHostError::AgentIdInUse(_) => {
            ControlError::Conflict(e.to_string())
        }
    })?;
    let agent = sim.agent(&id).ok_or_else(|| unknown(&id))?;
    Ok((StatusCode::CREATED, Json(agent)).into_response())
}

async fn restart_agent(
    State(sim): State<Arc<Simulator>>,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let id = agent_id(path)?;
    if !sim.restart_agent(&id) {
        return Err(unknown(&id));
    }
    let agent = sim.agent(&id).ok_or_else(|| unknown(&id))?;
    Ok(Json(agent).into_response())
}

type PluginPath = std::result::Result<Path<(String, String)>, PathRejection>;

fn plugin_path(path: PluginPath) -> Result<(String, String)> {
    path.map(|Path(p)| p)
        .map_err(|e| ControlError::BadRequest(e.body_text()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginUpdate {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    version: Option<String>,
}

/// Sets a plugin's status and/or version, installing the plugin if the host lacks it.
async fn update_plugin(
    State(sim): State<Arc<Simulator>>,
    path: PluginPath,
    bytes: Bytes,
) -> Result<Response> {
    let (id, plugin) = plugin_path(path)?;
    let update: PluginUpdate = body(&bytes)?;
    let agent = sim
        .update_plugin(
            &id,
            &plugin,
            update.status.as_deref(),
            update.version.as_deref(),
        )
        .map_err(|e| match e {
            PluginError::UnknownAgent(_) => unknown(&id),
            PluginError::InvalidStatus(_) | PluginError::EmptyName => {
                ControlError::BadRequest(e.to_string())
            }
        })?;
    Ok(Json(agent).into_response())
}

async fn remove_plugin(State(sim): State<Arc<Simulator>>, path: PluginPath) -> Result<StatusCode> {
    let (id, plugin) = plugin_path(path)?;
    if sim.remove_plugin(&id, &plugin) {
        Ok(StatusCode::NO_CONTENT)
    } else if sim.agent(&id).is_none() {
        Err(unknown(&id))
    } else {
        Err(ControlError::NotFound(format!(
            "agent {id:?} has no plugin {plugin:?}"
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GseV2Switch {
    enabled: bool,
}

async fn get_gse_v2(State(sim): State<Arc<Simulator>>) -> Response {
    Json(json!({ "enabled": sim.gse_v2_enabled() })).into_response()
}

/// `{"enabled": false}` makes every GSE 2.0 path the gateway's 404 (for `gse.api = "auto"`).
async fn put_gse_v2(State(sim): State<Arc<Simulator>>, bytes: Bytes) -> Result<Response> {
    let switch: GseV2Switch = body(&bytes)?;
    sim.set_gse_v2_enabled(switch.enabled);
    Ok(Json(json!({ "enabled": sim.gse_v2_enabled() })).into_response())
}

async fn get_faults(State(sim): State<Arc<Simulator>>) -> Response {
    Json(sim.faults()).into_response()
}

async fn put_faults(State(sim): State<Arc<Simulator>>, bytes: Bytes) -> Result<Response> {
    let config: FaultConfig = body(&bytes)?;
    if !(0.0..=1.0).contains(&config.rate) {
        return Err(ControlError::BadRequest(format!(
            "rate must be in 0..=1, got {}",
            config.rate
        )));
    }
    sim.set_faults(config);
    Ok(Json(sim.faults()).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayErrorSetting {
    endpoint: Endpoint,
    /// `null` clears the endpoint's error.
    error: Option<GatewayError>,
}

fn gateway_errors_json(sim: &Simulator) -> Response {
    let all: serde_json::Map<String, serde_json::Value> = sim
        .gateway_errors()
        .into_iter()
        .map(|(endpoint, error)| {
            (
                json!(endpoint).as_str().unwrap_or_default().to_owned(),
                json!(error),
            )
        })
        .collect();
    Json(all).into_response()
}

async fn get_gateway_errors(State(sim): State<Arc<Simulator>>) -> Response {
    gateway_errors_json(&sim)
}

/// `{"endpoint": "gse_list_agent_state", "error": "ip_not_allowed"}` makes the gateway refuse
/// that endpoint (see [`GatewayError`]); `"error": null` clears it. Answers the errors in force.
async fn put_gateway_error(State(sim): State<Arc<Simulator>>, bytes: Bytes) -> Result<Response> {
    let setting: GatewayErrorSetting = body(&bytes)?;
    sim.set_gateway_error(setting.endpoint, setting.error);
    Ok(gateway_errors_json(&sim))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageFailure {
    page: u32,
    times: u32,
    #[serde(default = "default_page_fault")]
    kind: FaultKind,
}

fn default_page_fault() -> FaultKind {
    FaultKind::BackendError
}

async fn fail_page(State(sim): State<Arc<Simulator>>, bytes: Bytes) -> Result<Response> {
    let req: PageFailure = body(&bytes)?;
    if req.page == 0 {
        return Err(ControlError::BadRequest("page is 1-based".to_owned()));
    }
    sim.fail_inventory_page_with(req.page, req.times, req.kind);
    Ok(Json(json!({ "page": req.page, "times": req.times, "kind": req.kind })).into_response())
}

/// An optional body of `POST /_sim/flap`: toggle this share of the agents instead of
/// the configured `flap_rate` (the benchmark's 100% change storm).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlapRequest {
    rate: f64,
}

async fn flap(State(sim): State<Arc<Simulator>>, bytes: Bytes) -> Result<Response> {
    let toggled = if bytes.is_empty() {
        sim.flap_once()
    } else {
        let req: FlapRequest = body(&bytes)?;
        if !(0.0..=1.0).contains(&req.rate) {
            return Err(ControlError::BadRequest(format!(
                "rate: {} is not within 0..=1",
                req.rate
            )));
        }
        sim.flap_share(req.rate)
    };
    Ok(Json(json!({ "toggled": toggled })).into_response())
}

async fn stats(State(sim): State<Arc<Simulator>>) -> Response {
    Json(sim.stats()).into_response()
}
