//! A faithful stand-in for the BlueKing endpoints agentwatch polls, for tests, demos and
//! benchmarks.
//!
//! It serves, at the real gateway URL shapes (see [`paths`]), so a config only needs its base
//! URLs pointed here:
//! - NodeMan `api/host/search/` — the paged inventory;
//! - NodeMan `api/plugin/search/` — the same pages, each host with its `plugin_status`;
//! - GSE 2.0 `cluster/list_agent_state` — status by agent id, with `1011003` when none of the
//!   ids is known;
//! - GSE 2.0 `cluster/list_agent_info` — parent, start time, and heartbeat time and CPU/memory
//!   usage that change on every request;
//! - GSE 1.x ESB `gse/get_agent_status/` and `gse/get_agent_info/` — keyed by `"cloud:ip"`,
//!   IPv4 only (IPv6-only hosts, see `SimConfig::ipv6_only_ratio`, are never in them);
//! - CMDB `list_hosts_without_biz` / `list_biz_hosts` (gateway and ESB) — the same hosts
//!   as NodeMan, paged by `start`/`limit` (see `cmdb`);
//! - GSE data-link admin (`data/*_streamto`, `data/*_route`, ESB `config_*`) kept in memory,
//!   and `cluster/dispatch_message` recorded for tests (see `admin`);
//! - `/_sim/*` — a control API (no auth) to change the truth, schedule faults, make the
//!   gateway refuse an endpoint (`/_sim/gateway_errors`) and read counters. The same
//!   operations are methods on [`Simulator`] for in-process tests.
//!
//! Layout: `model` holds the truth (hosts sorted by id plus id and address indexes) and
//! `generate` builds it from the seed; `gateway` runs every polling request through count →
//! latency → `auth` → `faults` → handler (`nodeman`, `plugins`, `gse`, `info`); GSE 2.0 can be
//! switched off as a whole (`SimConfig::gse_v2`); `reply` writes the envelopes;
//! `flapper` toggles agents in the background; `control` is the HTTP control API; `stats`
//! counts.
//!
//! Every request costs O(batch): ids and addresses are hash-indexed and a NodeMan page is a
//! slice, so the simulator stays cheap at a million agents.

mod admin;
mod auth;
mod cmdb;
mod config;
mod control;
mod faults;
mod flapper;
mod gateway;
mod generate;
mod gse;
mod info;
mod model;
mod nodeman;
mod plugins;
mod reply;
mod stats;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::routing::post;
use axum::Router;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use admin::{DispatchedMessage, SimRoute, SimStreamTo};
pub use config::SimConfig;
pub use faults::{Endpoint, FaultConfig, FaultKind, GatewayError};
pub use gse::MAX_IDS_PER_CALL;
pub use model::{AddHostError, NewHost, OsType, SimAgent, STATUS_RUNNING};
pub use plugins::{PluginError, SimPlugin, PLUGIN_STATUSES};
pub use stats::{RequestCounts, SimStats};

use faults::Faults;
use model::Inventory;
use stats::Stats;

/// Route paths, so tests can build base URLs (`http://{addr}{NODEMAN_BASE}` and so on).
pub mod paths {
    /// NodeMan API gateway base; the inventory is `{NODEMAN_BASE}api/host/search/`.
    pub const NODEMAN_BASE: &str = "/api/bk-nodeman/prod/";
    /// GSE 2.0 gateway base; status is `{GSE_V2_BASE}cluster/list_agent_state`.
    pub const GSE_V2_BASE: &str = "/api/bk-gse/prod/api/v2/";
    /// ESB base; GSE 1.x status is `{ESB_BASE}gse/get_agent_status/`.
    pub const ESB_BASE: &str = "/api/c/compapi/v2/";
    pub const NODEMAN_HOST_SEARCH: &str = "/api/bk-nodeman/prod/api/host/search/";
    pub const GSE_LIST_AGENT_STATE: &str = "/api/bk-gse/prod/api/v2/cluster/list_agent_state";
    pub const GSE_GET_AGENT_STATUS: &str = "/api/c/compapi/v2/gse/get_agent_status/";
    pub const NODEMAN_PLUGIN_SEARCH: &str = "/api/bk-nodeman/prod/api/plugin/search/";
    pub const GSE_LIST_AGENT_INFO: &str = "/api/bk-gse/prod/api/v2/cluster/list_agent_info";
    pub const GSE_GET_AGENT_INFO: &str = "/api/c/compapi/v2/gse/get_agent_info/";
    /// CMDB gateway base: `{CMDB_BASE}api/v3/hosts/list_hosts_without_app` and
    /// `{CMDB_BASE}api/v3/hosts/app/{bk_biz_id}/list_hosts`.
    pub const CMDB_BASE: &str = "/api/bk-cmdb/prod/";
    /// CMDB ESB base: `{CMDB_ESB_BASE}list_hosts_without_biz/`, `{CMDB_ESB_BASE}list_biz_hosts/`.
    pub const CMDB_ESB_BASE: &str = "/api/c/compapi/v2/cc/";
    pub const CMDB_LIST_HOSTS_WITHOUT_APP: &str =
        "/api/bk-cmdb/prod/api/v3/hosts/list_hosts_without_app";
    pub const CMDB_ESB_LIST_HOSTS_WITHOUT_BIZ: &str =
        "/api/c/compapi/v2/cc/list_hosts_without_biz/";
    pub const CMDB_ESB_LIST_BIZ_HOSTS: &str = "/api/c/compapi/v2/cc/list_biz_hosts/";
}

/// The simulated deployment. Create with [`Simulator::new`], share the `Arc`.
pub struct Simulator {
    cfg: SimConfig,
    inventory: RwLock<Inventory>,
    faults: Faults,
    stats: Stats,
    flap_rng: Mutex<StdRng>,
    /// Cancels slow faults and latency sleeps; replaced by each `serve` call.
    shutdown: Mutex<CancellationToken>,
    request_seq: AtomicU64,
    /// Whether GSE 2.0 exists (see [`Simulator::set_gse_v2_enabled`]).
    gse_v2: AtomicBool,
    /// Stream_to / route configs and recorded dispatches.
    admin: admin::AdminState,
}

impl Simulator {
    /// Builds the host population from `cfg` (deterministic for a given seed).
    pub fn new(cfg: SimConfig) -> Arc<Self> {
        let inventory = Inventory::generate(
            cfg.agents,
            cfg.seed,
            cfg.legacy_ratio,
            cfg.gse_unknown_ratio,
            cfg.ipv6_only_ratio,
        );
        Arc::new(Self {
            faults: Faults::new(cfg.fault_rate, cfg.seed),
            flap_rng: Mutex::new(StdRng::seed_from_u64(cfg.seed.wrapping_add(1))),
            inventory: RwLock::new(inventory),
            stats: Stats::default(),
            shutdown: Mutex::new(CancellationToken::new()),
            request_seq: AtomicU64::new(0),
            gse_v2: AtomicBool::new(cfg.gse_v2),
            admin: admin::AdminState::default(),
            cfg,
        })
    }

    /// All polling routes plus the `/_sim` control API. Served this way (rather than through
    /// [`Simulator::serve`]) slow faults run their full delay and the flapper does not run.
    pub fn router(self: &Arc<Self>) -> Router {
        use gateway::handle;
        let host_search = || post(handle::<nodeman::HostSearch>);
        let agent_status = || post(handle::<gse::GetAgentStatus>);
        let plugin_search = || post(handle::<plugins::PluginSearch>);
        let agent_info = || post(handle::<info::GetAgentInfo>);
        Router::new()
            .route(paths::NODEMAN_HOST_SEARCH, host_search())
            .route("/api/bk-nodeman/prod/api/host/search", host_search())
            // Multi-tenant gateway prefix and the ESB component (bk-api.md §5).
            .route(
                "/api/bk-nodeman/prod/system/api/host/search/",
                host_search(),
            )
            .route("/api/c/compapi/v2/nodeman/api/host/search/", host_search())
            .route(paths::NODEMAN_PLUGIN_SEARCH, plugin_search())
            .route("/api/bk-nodeman/prod/api/plugin/search", plugin_search())
            .route(
                "/api/bk-nodeman/prod/system/api/plugin/search/",
                plugin_search(),
            )
            .route(
                "/api/c/compapi/v2/nodeman/api/plugin/search/",
                plugin_search(),
            )
            .merge(gse::v2_routes(self))
            .route(paths::GSE_GET_AGENT_STATUS, agent_status())
            // monitor calls it without one.
            .route("/api/c/compapi/v2/gse/get_agent_status", agent_status())
            .route(paths::GSE_GET_AGENT_INFO, agent_info())
            .route("/api/c/compapi/v2/gse/get_agent_info", agent_info())
            .merge(cmdb::routes())
            .merge(admin::routes())
            .merge(control::routes())
            .fallback(gateway::not_found)
            .method_not_allowed_fallback(gateway::not_found)
            .with_state(Arc::clone(self))
    }

    /// Serves [`Simulator::router`] on `listener` and runs the flapper until `shutdown`.
    /// Slow faults and latency sleeps in flight are cut short so shutdown is prompt.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> io::Result<()> {
        // A child token also stops the flapper when serving fails on its own.
        let stop = shutdown.child_token();
        *self.shutdown.lock().unwrap_or_else(PoisonError::into_inner) = stop.clone();
        let flapper = tokio::spawn(Arc::clone(&self).run_flapper(stop.clone()));
        let app = self.router();
        let signal = stop.clone();
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { signal.cancelled().await })
            .await;
        stop.cancel();
        if let Err(e) = flapper.await {
            tracing::warn!(error = %e, "simulator flapper task failed");
        }
        result
    }

    /// The configuration the simulator was built with.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Sets an agent's GSE status code; false if the id is unknown.
    pub fn set_status(&self, agent_id: &str, status_code: i32) -> bool {
        self.update_agent(agent_id, Some(status_code), None)
            .is_some()
    }

    /// Sets an agent's version; false if the id is unknown.
    pub fn set_version(&self, agent_id: &str, version: &str) -> bool {
        self.update_agent(agent_id, None, Some(version)).is_some()
    }

    pub(crate) fn update_agent(
        &self,
        agent_id: &str,
        status_code: Option<i32>,
        version: Option<&str>,
    ) -> Option<SimAgent> {
        let mut inventory = self.write();
        let host = inventory.find_mut(agent_id)?;
        if let Some(code) = status_code {
            host.status_code = code;
        }
        if let Some(version) = version {
            host.version = version.into();
        }
        Some(host.to_sim_agent())
    }

    /// Changes only the fault probability, keeping kinds and endpoints.
    pub fn set_fault_rate(&self, rate: f64) {
        self.faults.set_rate(rate);
    }

    /// Replaces the whole fault configuration.
    pub fn set_faults(&self, faults: FaultConfig) {
        self.faults.set(faults);
    }

    pub fn faults(&self) -> FaultConfig {
        self.faults.config()
    }

    /// Makes the gateway answer every request on `endpoint` with `error` (HTTP 400/403/404/
    /// 429 and its 16xxxxx code), before auth, faults or the backend; `None` clears it.
    pub fn set_gateway_error(&self, endpoint: Endpoint, error: Option<GatewayError>) {
        self.faults.set_gateway_error(endpoint, error);
    }

    /// The gateway errors in force, by endpoint.
    pub fn gateway_errors(&self) -> Vec<(Endpoint, GatewayError)> {
        self.faults.gateway_errors()
    }

    /// Makes the next `times` requests for inventory page `page` (1-based; with
    /// `pagesize: -1` the whole list is page 1; for CMDB page `start / limit + 1`, never
    /// the `limit: 1` count call) fail with an HTTP 200 `result: false` envelope, which
    /// clients do not retry. `times == 0` cancels.
    pub fn fail_inventory_page(&self, page: u32, times: u32) {
        self.fail_inventory_page_with(page, times, FaultKind::BackendError);
    }

    /// Like [`Simulator::fail_inventory_page`] with a chosen failure, e.g.
    /// [`FaultKind::ServerError`] to exercise the client's retries.
    pub fn fail_inventory_page_with(&self, page: u32, times: u32, kind: FaultKind) {
        self.faults.fail_page(page, times, kind);
    }

    /// Every host and agent as the simulator believes them to be, by host id.
    pub fn truth(&self) -> Vec<SimAgent> {
        self.read()
            .hosts()
            .iter()
            .map(|h| h.to_sim_agent())
            .collect()
    }

    /// One agent's truth, by either form of agent id.
    pub fn agent(&self, agent_id: &str) -> Option<SimAgent> {
        self.read().find(agent_id).map(|h| h.to_sim_agent())
    }

    /// Number of hosts in the inventory.
    pub fn agent_count(&self) -> usize {
        self.read().len()
    }

    /// Removes the host from the inventory (and so from GSE); false if unknown.
    pub fn remove_host(&self, agent_id: &str) -> bool {
        self.write().remove(agent_id)
    }

    /// Adds a host and returns its agent id (per the id rule).
    ///
    /// # Panics
    /// If `spec` names an address or agent id already in use, or an invalid agent id; use
    /// [`Simulator::try_add_host`] when that can happen. A default `spec` never panics.
    pub fn add_host(&self, spec: NewHost) -> String {
        match self.try_add_host(spec) {
            Ok(id) => id,
            Err(e) => panic!("Simulator::add_host: {e}"),
        }
    }

    /// Adds a host and returns its agent id, or why it could not be added.
    pub fn try_add_host(&self, spec: NewHost) -> Result<String, AddHostError> {
        self.write().insert(spec)
    }

    /// Keeps the host in the NodeMan inventory (as `NOT_INSTALLED`) but GSE stops knowing it;
    /// false if the id is unknown.
    pub fn forget_in_gse(&self, agent_id: &str) -> bool {
        self.set_in_gse(agent_id, false)
    }

    /// Undoes [`Simulator::forget_in_gse`]; false if the id is unknown.
    pub fn remember_in_gse(&self, agent_id: &str) -> bool {
        self.set_in_gse(agent_id, true)
    }

    fn set_in_gse(&self, agent_id: &str, in_gse: bool) -> bool {
        match self.write().find_mut(agent_id) {
            Some(host) => {
                host.in_gse = in_gse;
                true
            }
            None => false,
        }
    }

    /// Requests received per polling endpoint.
    pub fn request_counts(&self) -> RequestCounts {
        self.stats.requests()
    }

    /// All counters, as `GET /_sim/stats` reports them.
    pub fn stats(&self) -> SimStats {
        self.stats.snapshot(self.agent_count())
    }

    // A poisoned lock only means a panic elsewhere mid-update of plain data; serving on beats
    // cascading the panic into every request.
    fn read(&self) -> RwLockReadGuard<'_, Inventory> {
        self.inventory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inventory> {
        self.inventory
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn shutdown_token(&self) -> CancellationToken {
        self.shutdown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Gateway-style request ids: 32 hex characters, unique per simulator.
    fn next_request_id(&self) -> String {
        let seq = self.request_seq.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{seq:016x}", self.cfg.seed)
    }
}
