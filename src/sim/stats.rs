//! Request and fault counters, so tests can assert what a client actually sent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::faults::{Endpoint, FaultKind};

const ENDPOINTS: usize = Endpoint::ALL.len();

/// One counter per polling endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    pub nodeman_host_search: u64,
    pub gse_list_agent_state: u64,
    pub gse_get_agent_status: u64,
    pub nodeman_plugin_search: u64,
    pub gse_list_agent_info: u64,
    pub gse_get_agent_info: u64,
    pub cmdb_list_hosts: u64,
}

impl RequestCounts {
    pub fn get(&self, endpoint: Endpoint) -> u64 {
        match endpoint {
            Endpoint::NodemanHostSearch => self.nodeman_host_search,
            Endpoint::GseListAgentState => self.gse_list_agent_state,
            Endpoint::GseGetAgentStatus => self.gse_get_agent_status,
            Endpoint::NodemanPluginSearch => self.nodeman_plugin_search,
            Endpoint::GseListAgentInfo => self.gse_list_agent_info,
            Endpoint::GseGetAgentInfo => self.gse_get_agent_info,
            Endpoint::CmdbListHosts => self.cmdb_list_hosts,
        }
    }

    pub fn total(&self) -> u64 {
        Endpoint::ALL.iter().map(|e| self.get(*e)).sum()
    }

    fn from_counters(counters: &[AtomicU64; ENDPOINTS]) -> Self {
        let get = |e: Endpoint| counters[e.index()].load(Ordering::Relaxed);
        Self {
            nodeman_host_search: get(Endpoint::NodemanHostSearch),
            gse_list_agent_state: get(Endpoint::GseListAgentState),
            gse_get_agent_status: get(Endpoint::GseGetAgentStatus),
            nodeman_plugin_search: get(Endpoint::NodemanPluginSearch),
            gse_list_agent_info: get(Endpoint::GseListAgentInfo),
            gse_get_agent_info: get(Endpoint::GseGetAgentInfo),
            cmdb_list_hosts: get(Endpoint::CmdbListHosts),
        }
    }
}

/// Everything `GET /_sim/stats` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// Requests received, including rejected and faulted ones.
    pub requests: RequestCounts,
    /// Requests rejected with gateway code 1640001.
    pub auth_failures: RequestCounts,
    /// Requests that got a fault (random or a scheduled inventory page failure).
    pub faulted: RequestCounts,
    /// Faults injected, per kind; every kind is present.
    pub faults: BTreeMap<FaultKind, u64>,
    /// Scheduled inventory page failures served (also counted in `faults`).
    pub inventory_page_failures: u64,
    /// Agent ids received by `list_agent_state` plus hosts received by `get_agent_status`.
    pub ids_requested: u64,
    /// Hosts currently in the inventory.
    pub agents: usize,
}

#[derive(Default)]
pub(crate) struct Stats {
    requests: [AtomicU64; ENDPOINTS],
    auth_failures: [AtomicU64; ENDPOINTS],
    faulted: [AtomicU64; ENDPOINTS],
    faults: [AtomicU64; FaultKind::ALL.len()],
    inventory_page_failures: AtomicU64,
    ids_requested: AtomicU64,
}

impl Stats {
    pub fn request(&self, endpoint: Endpoint) {
        self.requests[endpoint.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn auth_failure(&self, endpoint: Endpoint) {
        self.auth_failures[endpoint.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn fault(&self, endpoint: Endpoint, kind: FaultKind) {
        self.faulted[endpoint.index()].fetch_add(1, Ordering::Relaxed);
        self.faults[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn inventory_page_failure(&self) {
        self.inventory_page_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn ids(&self, count: usize) {
        self.ids_requested
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    pub fn requests(&self) -> RequestCounts {
        RequestCounts::from_counters(&self.requests)
    }

    pub fn snapshot(&self, agents: usize) -> SimStats {
        SimStats {
            requests: self.requests(),
            auth_failures: RequestCounts::from_counters(&self.auth_failures),
            faulted: RequestCounts::from_counters(&self.faulted),
            faults: FaultKind::ALL
                .iter()
                .map(|k| (*k, self.faults[*k as usize].load(Ordering::Relaxed)))
                .collect(),
            inventory_page_failures: self.inventory_page_failures.load(Ordering::Relaxed),
            ids_requested: self.ids_requested.load(Ordering::Relaxed),
            agents,
        }
    }
}
