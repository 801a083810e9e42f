//! GSE agent status: 2.0 `cluster/list_agent_state` (bk-api.md §1.1) and the 1.x ESB
//! `gse/get_agent_status/` (§2.1).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde::{Deserialize, Serialize};

use super::faults::Endpoint;
use super::gateway::{self, handle, Api};
use super::info::ListAgentInfo;
use super::model::STATUS_RUNNING;
use super::reply::{self, codes, LenientInt};
use super::Simulator;

/// Server-side cap on ids per call. BlueKing documents none (bk-cli stops at 1000, NodeMan
/// sends 2000); agentwatch allows batches up to 5000, so the simulator accepts exactly that.
pub const MAX_IDS_PER_CALL: usize = 5000;

pub(crate) struct ListAgentState;

/// Every GSE 2.0 route, behind the switch that makes GSE 2.0 not exist
/// ([`Simulator::set_gse_v2_enabled`]).
pub(crate) fn v2_routes(sim: &Arc<Simulator>) -> Router<Arc<Simulator>> {
    let list_state = || post(handle::<ListAgentState>);
    let list_info = || post(handle::<ListAgentInfo>);
    Router::new()
        .route(super::paths::GSE_LIST_AGENT_STATE, list_state())
        // NodeMan calls them with a trailing slash.
        .route(
            "/api/bk-gse/prod/api/v2/cluster/list_agent_state/",
            list_state(),
        )
        .route(super::paths::GSE_LIST_AGENT_INFO, list_info())
        .route(
            "/api/bk-gse/prod/api/v2/cluster/list_agent_info/",
            list_info(),
        )
        .route_layer(middleware::from_fn_with_state(Arc::clone(sim), v2_switch))
}

/// With GSE 2.0 switched off the gateway has no such resource: its 404, before auth, faults
/// or counting, exactly like an unknown path.
async fn v2_switch(State(sim): State<Arc<Simulator>>, request: Request, next: Next) -> Response {
    if sim.gse_v2.load(Ordering::Relaxed) {
        next.run(request).await
    } else {
        gateway::not_found(State(sim)).await
    }
}

impl Simulator {
    /// Makes GSE 2.0 exist (the default) or not: while disabled every
    /// `/api/bk-gse/prod/api/v2/...` path answers HTTP 404 with gateway code 1640401
    /// (`API_NOT_FOUND`), as on a deployment that only has GSE 1.x.
    pub fn set_gse_v2_enabled(&self, enabled: bool) {
        self.gse_v2.store(enabled, Ordering::Relaxed);
    }

    pub fn gse_v2_enabled(&self) -> bool {
        self.gse_v2.load(Ordering::Relaxed)
    }
}

#[derive(Deserialize)]
pub(crate) struct ListAgentStateRequest<'a> {
    #[serde(borrow, default)]
    pub agent_id_list: Option<Vec<Cow<'a, str>>>,
}

#[derive(Serialize)]
struct AgentState<'a> {
    bk_agent_id: &'a str,
    bk_cloud_id: i64,
    version: &'a str,
    run_mode: i32,
    status_code: i32,
}

pub(crate) fn invalid(message: &str, request_id: &str) -> (StatusCode, Vec<u8>) {
    (
        StatusCode::OK,
        reply::business_error(codes::GSE_INVALID_PARAMS, message, request_id),
    )
}

impl Api for ListAgentState {
    const ENDPOINT: Endpoint = Endpoint::GseListAgentState;

    fn respond(sim: &Simulator, body: &[u8], request_id: &str) -> (StatusCode, Vec<u8>) {
        let ids = match reply::parse_object::<ListAgentStateRequest>(body) {
            Ok(ListAgentStateRequest {
                agent_id_list: Some(ids),
            }) => ids,
            Ok(_) => return invalid("agent_id_list is required", request_id),
            Err(message) => return invalid(&message, request_id),
        };
        sim.stats.ids(ids.len());
        if ids.len() > MAX_IDS_PER_CALL {
            let message = format!(
                "agent_id_list has {} ids, more than the limit of {MAX_IDS_PER_CALL}",
                ids.len()
            );
            return invalid(&message, request_id);
        }
        let inventory = sim.read();
        // Unknown ids are simply absent, like GSE; duplicates are answered once per mention.
        let states: Vec<AgentState> = ids
            .iter()
            .filter_map(|id| {
                let host = inventory.find(id).filter(|h| h.in_gse)?;
                Some(AgentState {
                    bk_agent_id: id,
                    bk_cloud_id: host.cloud_id,
                    version: &host.version,
                    run_mode: host.run_mode,
                    status_code: host.status_code,
                })
            })
            .collect();
        if states.is_empty() && !ids.is_empty() {
            let body =
                reply::business_error(codes::GSE_AGENT_NOT_FOUND, "agent not found", request_id);
            return (StatusCode::OK, body);
        }
        (StatusCode::OK, reply::success(states, request_id))
    }
}

pub(crate) struct GetAgentStatus;

#[derive(Deserialize)]
pub(crate) struct GetAgentStatusRequest {
    #[serde(default)]
    pub hosts: Option<Vec<HostAddress>>,
}

impl GetAgentStatusRequest {
    /// The `hosts` of a GSE 1.x ESB body (`get_agent_status/`, `get_agent_info/`), or
    /// the ESB error reply naming what is wrong.
    pub fn hosts(body: &[u8], request_id: &str) -> Result<Vec<HostAddress>, (StatusCode, Vec<u8>)> {
        let esb_error = |message: &str| {
            (
                StatusCode::OK,
                reply::business_error(codes::ESB_COMPONENT_ERROR, message, request_id),
            )
        };
        match reply::parse_object::<GetAgentStatusRequest>(body) {
            Ok(GetAgentStatusRequest { hosts: Some(hosts) }) => Ok(hosts),
            Ok(_) => Err(esb_error("hosts is required")),
            Err(message) => Err(esb_error(&message)),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct HostAddress {
    pub ip: String,
    pub bk_cloud_id: LenientInt,
}

impl HostAddress {
    /// The `(cloud, IPv4)` this entry names; None for anything GSE 1.x cannot know
    /// (IPv6, garbage), which it treats as an unknown host.
    pub fn v4(&self) -> Option<(i64, Ipv4Addr)> {
        Some((self.bk_cloud_id.get()?, self.ip.parse().ok()?))
    }
}

#[derive(Serialize)]
struct AgentAlive {
    ip: String,
    bk_cloud_id: i64,
    /// 1 online, 0 offline; GSE 1.x has nothing finer.
    bk_agent_alive: u8,
}

impl Api for GetAgentStatus {
    const ENDPOINT: Endpoint = Endpoint::GseGetAgentStatus;
    const BODY_CREDENTIALS: bool = true;

    fn respond(sim: &Simulator, body: &[u8], request_id: &str) -> (StatusCode, Vec<u8>) {
        let hosts = match GetAgentStatusRequest::hosts(body, request_id) {
            Ok(hosts) => hosts,
            Err(reply) => return reply,
        };
        sim.stats.ids(hosts.len());
        let inventory = sim.read();
        // Keyed "cloud:ip"; a BTreeMap also folds duplicate hosts into one key, as a JSON
        // object must.
        let mut data = BTreeMap::new();
        for addr in &hosts {
            // GSE 1.x is IPv4-only; anything else is an unknown host.
            let Some((cloud_id, ip)) = addr.v4() else {
                continue;
            };
            let Some(host) = inventory.find_by_addr(cloud_id, ip).filter(|h| h.in_gse) else {
                continue;
            };
            let alive = u8::from(host.status_code == STATUS_RUNNING);
            data.insert(
                format!("{cloud_id}:{ip}"),
                AgentAlive {
                    ip: ip.to_string(),
                    bk_cloud_id: cloud_id,
                    bk_agent_alive: alive,
                },
            );
        }
        drop(inventory);
        (StatusCode::OK, reply::success(data, request_id))
    }
}
