//! NodeMan plugin processes per host and `api/plugin/search/` (bk-api.md §5.3): the host
//! search items plus `plugin_status: [{name, status, version, host_id}]`, paged the same way.

use std::sync::Arc;

use axum::http::StatusCode;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::faults::Endpoint;
use super::gateway::Api;
use super::model::SimAgent;
use super::nodeman::{self, HostItem};
use super::reply::{self, codes};
use super::Simulator;

/// NodeMan's process state strings (`ProcStateType`) a plugin may be in.
pub const PLUGIN_STATUSES: [&str; 8] = [
    "RUNNING",
    "UNKNOWN",
    "TERMINATED",
    "NOT_INSTALLED",
    "UNREGISTER",
    "REMOVED",
    "MANUAL_STOP",
    "AGENT_NO_ALIVE",
];

/// Plugins hosts get, each with the share of hosts that have it and its versions in the field.
const CATALOG: [(&str, f64, &[&str]); 3] = [
    ("bkmonitorbeat", 0.85, &["3.42.1502", "3.38.1000"]),
    ("bkunifylogbeat", 0.55, &["7.8.17", "7.3.2"]),
    ("processbeat", 0.35, &["1.17.45"]),
];
/// What a generated plugin is in, when not RUNNING.
const GENERATED_TROUBLE: [(&str, f64); 2] = [("TERMINATED", 0.04), ("UNREGISTER", 0.02)];
/// Version given to a plugin a test adds without naming one.
const DEFAULT_VERSION: &str = "1.0.0";

/// One plugin process on a host, as the control API and [`SimAgent`] show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimPlugin {
    pub name: String,
    /// A NodeMan state string, one of [`PLUGIN_STATUSES`].
    pub status: String,
    pub version: String,
}

/// The stored form: strings interned, so a million hosts share a handful of them.
#[derive(Debug, Clone)]
pub(crate) struct Plugin {
    pub name: Arc<str>,
    pub status: Arc<str>,
    pub version: Arc<str>,
}

impl From<&Plugin> for SimPlugin {
    fn from(p: &Plugin) -> Self {
        SimPlugin {
            name: p.name.to_string(),
            status: p.status.to_string(),
            version: p.version.to_string(),
        }
    }
}

/// Why a plugin could not be changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    #[error("unknown agent id {0:?}")]
    UnknownAgent(String),
    #[error("unknown plugin status {0:?}; NodeMan uses {PLUGIN_STATUSES:?}")]
    InvalidStatus(String),
    #[error("plugin name must not be empty")]
    EmptyName,
}

pub(crate) fn is_valid_status(status: &str) -> bool {
    PLUGIN_STATUSES.contains(&status)
}

/// The interned strings of [`CATALOG`], built once per generation run.
pub(crate) struct Catalog {
    plugins: Vec<(Arc<str>, f64, Vec<Arc<str>>)>,
    running: Arc<str>,
    trouble: Vec<(Arc<str>, f64)>,
}

impl Catalog {
    pub fn new() -> Self {
        Catalog {
            plugins: CATALOG
                .iter()
                .map(|(name, share, versions)| {
                    let versions = versions.iter().map(|v| Arc::from(*v)).collect();
                    (Arc::from(*name), *share, versions)
                })
                .collect(),
            running: Arc::from("RUNNING"),
            trouble: GENERATED_TROUBLE
                .iter()
                .map(|(s, p)| (Arc::from(*s), *p))
                .collect(),
        }
    }

    /// A host's plugins, sorted by name; some hosts get none.
    pub fn draw(&self, rng: &mut impl Rng) -> Vec<Plugin> {
        let mut out = Vec::new();
        for (name, share, versions) in &self.plugins {
            if !rng.random_bool(*share) {
                continue;
            }
            let mut x: f64 = rng.random();
            let mut status = &self.running;
            for (s, p) in &self.trouble {
                if x < *p {
                    status = s;
                    break;
                }
                x -= p;
            }
            out.push(Plugin {
                name: Arc::clone(name),
                status: Arc::clone(status),
                version: Arc::clone(&versions[rng.random_range(0..versions.len())]),
            });
        }
        // CATALOG is sorted by name, so `out` is too.
        out
    }
}

/// Plugins for a host added at run time without a list: drawn like the initial population's.
pub(crate) fn generated_for(host_id: u64) -> Vec<Plugin> {
    Catalog::new().draw(&mut SmallRng::seed_from_u64(host_id ^ 0x706c_7567))
}

/// A caller's list, sorted by name; a later entry for the same name wins.
pub(crate) fn from_spec(list: Vec<SimPlugin>) -> Vec<Plugin> {
    let mut out: Vec<Plugin> = Vec::with_capacity(list.len());
    for p in list {
        out.retain(|q| *q.name != *p.name);
        out.push(Plugin {
            name: p.name.into(),
            status: p.status.into(),
            version: p.version.into(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

impl Simulator {
    /// Sets a plugin's NodeMan status on one host, adding the plugin (version "1.0.0") if the
    /// host lacks it. False if the agent id is unknown or `status` is not one of
    /// [`PLUGIN_STATUSES`].
    pub fn set_plugin_status(&self, agent_id: &str, plugin: &str, status: &str) -> bool {
        self.update_plugin(agent_id, plugin, Some(status), None)
            .is_ok()
    }

    /// Sets a plugin's version on one host, adding the plugin (status RUNNING) if the host
    /// lacks it. False if the agent id is unknown.
    pub fn set_plugin_version(&self, agent_id: &str, plugin: &str, version: &str) -> bool {
        self.update_plugin(agent_id, plugin, None, Some(version))
            .is_ok()
    }

    /// Uninstalls a plugin from one host; false if the agent or the plugin is unknown.
    pub fn remove_plugin(&self, agent_id: &str, plugin: &str) -> bool {
        let mut inventory = self.write();
        let Some(host) = inventory.find_mut(agent_id) else {
            return false;
        };
        let before = host.plugins.len();
        host.plugins.retain(|p| &*p.name != plugin);
        host.plugins.len() != before
    }

    pub(crate) fn update_plugin(
        &self,
        agent_id: &str,
        plugin: &str,
        status: Option<&str>,
        version: Option<&str>,
    ) -> Result<SimAgent, PluginError> {
        if plugin.is_empty() {
            return Err(PluginError::EmptyName);
        }
        if let Some(status) = status.filter(|s| !is_valid_status(s)) {
            return Err(PluginError::InvalidStatus(status.to_owned()));
        }
        let mut inventory = self.write();
        let host = inventory
            .find_mut(agent_id)
            .ok_or_else(|| PluginError::UnknownAgent(agent_id.to_owned()))?;
        let pos = match host.plugins.binary_search_by(|p| (*p.name).cmp(plugin)) {
            Ok(pos) => pos,
            Err(pos) => {
                let added = Plugin {
                    name: plugin.into(),
                    status: "RUNNING".into(),
                    version: DEFAULT_VERSION.into(),
                };
                host.plugins.insert(pos, added);
                pos
            }
        };
        let p = &mut host.plugins[pos];
        if let Some(status) = status {
            p.status = status.into();
        }
        if let Some(version) = version {
            p.version = version.into();
        }
        Ok(host.to_sim_agent())
    }
}

pub(crate) struct PluginSearch;

#[derive(Serialize)]
struct SearchData<'a> {
    total: usize,
    list: Vec<PluginItem<'a>>,
}

#[derive(Serialize)]
struct PluginItem<'a> {
    #[serde(flatten)]
    host: HostItem<'a>,
    cpu_arch: &'static str,
    node_type: &'static str,
    node_from: &'static str,
    plugin_status: Vec<PluginStatus<'a>>,
}

#[derive(Serialize)]
struct PluginStatus<'a> {
    name: &'a str,
    status: &'a str,
    version: &'a str,
    host_id: u64,
}

/// Filters (`bk_biz_id`, `conditions`, `detail`, …) are accepted and ignored, as for host
/// search: every host is listed, with all its plugins.
impl Api for PluginSearch {
    const ENDPOINT: Endpoint = Endpoint::NodemanPluginSearch;

    fn respond(sim: &Simulator, body: &[u8], request_id: &str) -> (StatusCode, Vec<u8>) {
        let paging = match nodeman::parse(body) {
            Ok(p) => p,
            Err(message) => {
                let body =
                    reply::business_error(codes::NODEMAN_INVALID_PARAMS, &message, request_id);
                return (StatusCode::OK, body);
            }
        };
        let inventory = sim.read();
        let hosts = inventory.hosts();
        let list = paging
            .slice(hosts)
            .iter()
            .map(|host| PluginItem {
                host: HostItem::from(host),
                cpu_arch: "x86_64",
                node_type: "AGENT",
                node_from: "NODE_MAN",
                plugin_status: host
                    .plugins
                    .iter()
                    .map(|p| PluginStatus {
                        name: &p.name,
                        status: &p.status,
                        version: &p.version,
                        host_id: host.host_id,
                    })
                    .collect(),
            })
            .collect();
        let data = SearchData {
            total: hosts.len(),
            list,
        };
        (StatusCode::OK, reply::success(data, request_id))
    }
}
