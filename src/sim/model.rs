//! The simulator's truth: which hosts exist, what NodeMan lists and what GSE reports.
//!
//! One [`Inventory`] behind one lock is the single source for every endpoint, so a control
//! change is visible to NodeMan, GSE 2.0 and GSE 1.x at the same instant.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::generate;
use super::info;
use super::plugins::{self, Plugin, SimPlugin};

/// GSE 2.0 `status_code` for a running agent; the only code that means alive.
pub const STATUS_RUNNING: i32 = 2;

/// Operating system family as NodeMan spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OsType {
    Linux,
    Windows,
}

impl OsType {
    pub fn as_str(self) -> &'static str {
        match self {
            OsType::Linux => "LINUX",
            OsType::Windows => "WINDOWS",
        }
    }
}

/// One host and its agent as the simulator believes them to be (the test oracle).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimAgent {
    /// Agent id per the id rule: `bk_agent_id`, or `"{cloud_id}:{ip}"` for legacy hosts.
    pub agent_id: String,
    pub host_id: u64,
    pub cloud_id: i64,
    pub biz_id: i64,
    /// Inner IPv4 address; empty for an IPv6-only host.
    pub ip: String,
    /// Inner IPv6 address; empty unless the host has one.
    pub ipv6: String,
    /// GSE 2.0 status code (2 = running); kept even while GSE does not know the agent.
    pub status_code: i32,
    pub version: String,
    pub run_mode: i32,
    /// What NodeMan's host search reports: `RUNNING`, `TERMINATED` or `NOT_INSTALLED`.
    pub nodeman_status: String,
    pub os_type: OsType,
    /// False when the host is in the NodeMan inventory but GSE omits it.
    pub in_gse: bool,
    /// True when the host has an empty `bk_agent_id` (a GSE 1.x style agent).
    pub legacy: bool,
    /// NodeMan plugin processes (`api/plugin/search/` `plugin_status`), sorted by name.
    pub plugins: Vec<SimPlugin>,
    /// The proxy or GSE server the agent reports to (agent info `parent_ip`).
    pub parent_ip: String,
    /// Agent info `parent_port`.
    pub parent_port: i32,
    /// When the agent process started, Unix seconds (agent info `start_time`).
    pub start_time: i64,
}

/// A host to add through [`super::Simulator::add_host`]; every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewHost {
    /// Defaults to business 2.
    pub biz_id: Option<i64>,
    /// Defaults to cloud area 0.
    pub cloud_id: Option<i64>,
    /// Defaults to the next free generated address (none when `ipv6_only`).
    pub ip: Option<Ipv4Addr>,
    /// Gives the host an IPv6 address too; generated when `ipv6_only` and absent.
    pub ipv6: Option<Ipv6Addr>,
    /// A host without IPv4 (empty `inner_ip`), invisible to GSE 1.x. Defaults to false.
    pub ipv6_only: Option<bool>,
    /// Defaults to a generated set of plugins, like the initial population's.
    pub plugins: Option<Vec<SimPlugin>>,
    /// Defaults to a GSE server (cloud 0) or a proxy of the cloud area.
    pub parent_ip: Option<String>,
    /// `None` generates an opaque id; `Some("")` makes a legacy host (id `cloud:ip`).
    pub bk_agent_id: Option<String>,
    /// Defaults to 2 (running).
    pub status_code: Option<i32>,
    /// Defaults to "2.1.6".
    pub version: Option<String>,
    /// Defaults to 0.
    pub run_mode: Option<i32>,
    /// Defaults to LINUX.
    pub os_type: Option<OsType>,
    /// Defaults to true.
    pub in_gse: Option<bool>,
}

/// Why a host could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddHostError {
    #[error("address {cloud_id}:{ip} is already used by another host")]
    AddressInUse { cloud_id: i64, ip: Ipv4Addr },
    #[error("agent id {0:?} is already used by another host")]
    AgentIdInUse(String),
    // A ':' would make the id indistinguishable from a legacy `cloud:ip` id.
    #[error("agent id {0:?} must be at most 64 bytes and must not contain ':'")]
    InvalidAgentId(String),
    /// `ipv6_only` with an `ip`, or with an empty `bk_agent_id` (the `cloud:ip` id of a legacy
    /// agent needs IPv4).
    #[error("an IPv6-only host can have neither an IPv4 ip nor an empty bk_agent_id")]
    Ipv6OnlyConflict,
}

#[derive(Debug, Clone)]
pub(crate) struct Host {
    pub host_id: u64,
    pub biz_id: i64,
    pub cloud_id: i64,
    /// None for an IPv6-only host, which is then never legacy.
    pub ip: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Empty for legacy hosts. Shared with the id index to store each id once.
    pub bk_agent_id: Arc<str>,
    pub os_type: OsType,
    pub status_code: i32,
    pub run_mode: i32,
    /// Interned: a million hosts share a handful of version strings.
    pub version: Arc<str>,
    pub in_gse: bool,
    /// Sorted by name.
    pub plugins: Vec<Plugin>,
    /// Interned like `version`.
    pub parent_ip: Arc<str>,
    /// Unix seconds.
    pub start_time: i64,
}

impl Host {
    pub fn is_legacy(&self) -> bool {
        self.bk_agent_id.is_empty()
    }

    pub fn agent_id(&self) -> Cow<'_, str> {
        match self.ip {
            // Insertion and generation keep legacy hosts on IPv4.
            Some(ip) if self.is_legacy() => Cow::Owned(legacy_agent_id(self.cloud_id, ip)),
            _ => Cow::Borrowed(&self.bk_agent_id),
        }
    }

    /// `inner_ip` as NodeMan and CMDB list it: empty for an IPv6-only host.
    pub fn inner_ip(&self) -> String {
        self.ip.map(|ip| ip.to_string()).unwrap_or_default()
    }

    /// `inner_ipv6` as NodeMan and CMDB list it: empty when the host has none.
    pub fn inner_ipv6(&self) -> String {
        self.ipv6.map(|ip| ip.to_string()).unwrap_or_default()
    }

    /// NodeMan derives its status string from the last GSE poll; the simulator's NodeMan is
    /// always in sync with its GSE.
    pub fn nodeman_status(&self) -> &'static str {
        if !self.in_gse {
            "NOT_INSTALLED"
        } else if self.status_code == STATUS_RUNNING {
            "RUNNING"
        } else {
            "TERMINATED"
        }
    }

    pub fn to_sim_agent(&self) -> SimAgent {
        SimAgent {
            agent_id: self.agent_id().into_owned(),
            host_id: self.host_id,
            cloud_id: self.cloud_id,
            biz_id: self.biz_id,
            ip: self.inner_ip(),
            ipv6: self.inner_ipv6(),
            status_code: self.status_code,
            version: self.version.to_string(),
            run_mode: self.run_mode,
            nodeman_status: self.nodeman_status().to_owned(),
            os_type: self.os_type,
            in_gse: self.in_gse,
            legacy: self.is_legacy(),
            plugins: self.plugins.iter().map(SimPlugin::from).collect(),
            parent_ip: self.parent_ip.to_string(),
            parent_port: info::PARENT_PORT,
            start_time: self.start_time,
        }
    }
}

pub(crate) fn legacy_agent_id(cloud_id: i64, ip: Ipv4Addr) -> String {
    format!("{cloud_id}:{ip}")
}

/// Hosts sorted by host id (so a page is a slice) plus the two lookup indexes the GSE
/// endpoints need; every request is O(batch), never O(hosts).
#[derive(Debug, Default)]
pub(crate) struct Inventory {
    hosts: Vec<Host>,
    /// Non-empty `bk_agent_id` → host id.
    // aHash: the simulator looks up every requested id per sweep and must stay well
    // below the service's own cost (issue 7).
    by_agent: HashMap<Arc<str>, u64, ahash::RandomState>,
    /// `(cloud, ipv4)` → host id, for every host with IPv4: GSE 1.x and legacy ids look hosts
    /// up this way.
    by_addr: HashMap<(i64, u32), u64, ahash::RandomState>,
    next_host_id: u64,
    next_ip_index: u64,
}

impl Inventory {
    pub fn generate(
        count: usize,
        seed: u64,
        legacy_ratio: f64,
        gse_unknown_ratio: f64,
        ipv6_only_ratio: f64,
    ) -> Self {
        let mut inv = Inventory {
            hosts: Vec::with_capacity(count),
            by_agent: HashMap::with_capacity_and_hasher(count, ahash::RandomState::new()),
            by_addr: HashMap::with_capacity_and_hasher(count, ahash::RandomState::new()),
            next_host_id: 1,
            next_ip_index: 0,
        };
        let hosts = generate::hosts(count, seed, legacy_ratio, gse_unknown_ratio);
        for host in generate::with_details(hosts, seed, ipv6_only_ratio) {
            inv.next_host_id = host.host_id + 1;
            inv.next_ip_index += 1;
            inv.index(&host);
            inv.hosts.push(host);
        }
        inv
    }

    fn index(&mut self, host: &Host) {
        if !host.is_legacy() {
            self.by_agent
                .insert(Arc::clone(&host.bk_agent_id), host.host_id);
        }
        if let Some(ip) = host.ip {
            self.by_addr
                .insert((host.cloud_id, u32::from(ip)), host.host_id);
        }
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    fn position(&self, host_id: u64) -> Option<usize> {
        self.hosts
            .binary_search_by_key(&host_id, |h| h.host_id)
            .ok()
    }

    fn host_id_of(&self, agent_id: &str) -> Option<u64> {
        if let Some(id) = self.by_agent.get(agent_id) {
            return Some(*id);
        }
        let (cloud, ip) = parse_legacy_id(agent_id)?;
        let host_id = *self.by_addr.get(&(cloud, u32::from(ip)))?;
        // A GSE 2.0 agent is known only by its real id, never by its address.
        let host = &self.hosts[self.position(host_id)?];
        host.is_legacy().then_some(host_id)
    }

    /// Finds a host by agent id (either form of the id rule), whether or not GSE knows it.
    pub fn find(&self, agent_id: &str) -> Option<&Host> {
        let pos = self.position(self.host_id_of(agent_id)?)?;
        self.hosts.get(pos)
    }

    pub fn find_mut(&mut self, agent_id: &str) -> Option<&mut Host> {
        let pos = self.position(self.host_id_of(agent_id)?)?;
        self.hosts.get_mut(pos)
    }

    pub fn find_by_addr(&self, cloud_id: i64, ip: Ipv4Addr) -> Option<&Host> {
        let host_id = *self.by_addr.get(&(cloud_id, u32::from(ip)))?;
        self.hosts.get(self.position(host_id)?)
    }

    pub fn host_at_mut(&mut self, pos: usize) -> Option<&mut Host> {
        self.hosts.get_mut(pos)
    }

    /// O(hosts) because of the shift, which is fine for a control operation.
    pub fn remove(&mut self, agent_id: &str) -> bool {
        let Some(pos) = self.host_id_of(agent_id).and_then(|id| self.position(id)) else {
            return false;
        };
        let host = self.hosts.remove(pos);
        if !host.is_legacy() {
            self.by_agent.remove(&*host.bk_agent_id);
        }
        if let Some(ip) = host.ip {
            self.by_addr.remove(&(host.cloud_id, u32::from(ip)));
        }
        true
    }

    pub fn insert(&mut self, spec: NewHost) -> Result<String, AddHostError> {
        let cloud_id = spec.cloud_id.unwrap_or(0);
        let ipv6_only = spec.ipv6_only.unwrap_or(false);
        if ipv6_only && (spec.ip.is_some() || spec.bk_agent_id.as_deref() == Some("")) {
            return Err(AddHostError::Ipv6OnlyConflict);
        }
        let ip = match spec.ip {
            Some(ip) if self.by_addr.contains_key(&(cloud_id, u32::from(ip))) => {
                return Err(AddHostError::AddressInUse { cloud_id, ip });
            }
            Some(ip) => Some(ip),
            None if ipv6_only => None,
            None => Some(self.next_free_ip(cloud_id)),
        };
        let ipv6 = match spec.ipv6 {
            Some(v6) => Some(v6),
            None if ipv6_only => {
                self.next_ip_index += 1;
                Some(generate::ipv6_for_index(self.next_ip_index - 1))
            }
            None => None,
        };
        let host_id = self.next_host_id;
        let bk_agent_id: Arc<str> = match spec.bk_agent_id {
            Some(id) if id.len() > 64 || id.contains(':') => {
                return Err(AddHostError::InvalidAgentId(id));
            }
            Some(id) if self.by_agent.contains_key(id.as_str()) => {
                return Err(AddHostError::AgentIdInUse(id));
            }
            Some(id) => id.into(),
            None => self.unused_generated_id(host_id).into(),
        };
        let host = Host {
            host_id,
            biz_id: spec.biz_id.unwrap_or(2),
            cloud_id,
            ip,
            ipv6,
            bk_agent_id,
            os_type: spec.os_type.unwrap_or(OsType::Linux),
            status_code: spec.status_code.unwrap_or(STATUS_RUNNING),
            run_mode: spec.run_mode.unwrap_or(0),
            version: spec.version.as_deref().unwrap_or("2.1.6").into(),
            in_gse: spec.in_gse.unwrap_or(true),
            plugins: match spec.plugins {
                Some(list) => plugins::from_spec(list),
                None => plugins::generated_for(host_id),
            },
            parent_ip: match spec.parent_ip {
                Some(parent) => parent.into(),
                None => info::default_parent_ip(cloud_id, host_id).into(),
            },
            // Installed just now.
            start_time: info::now_secs(),
        };
        self.next_host_id += 1;
        self.index(&host);
        let agent_id = host.agent_id().into_owned();
        // Host ids only grow, so pushing keeps the vector sorted.
        self.hosts.push(host);
        Ok(agent_id)
    }

    fn next_free_ip(&mut self, cloud_id: i64) -> Ipv4Addr {
        loop {
            let ip = generate::ip_for_index(self.next_ip_index);
            self.next_ip_index += 1;
            if !self.by_addr.contains_key(&(cloud_id, u32::from(ip))) {
                return ip;
            }
        }
    }

    // Generated ids embed the host id so they are unique, but a caller may have claimed one
    // explicitly; the salt makes a retry differ.
    fn unused_generated_id(&self, host_id: u64) -> String {
        let mut salt = 0u64;
        loop {
            let id = generate::agent_id_for(host_id ^ (salt << 48), host_id.wrapping_add(salt));
            if !self.by_agent.contains_key(id.as_str()) {
                return id;
            }
            salt += 1;
        }
    }
}

/// Parses a legacy `"{cloud}:{ipv4}"` agent id.
pub(crate) fn parse_legacy_id(id: &str) -> Option<(i64, Ipv4Addr)> {
    let (cloud, ip) = id.split_once(':')?;
    Some((cloud.parse().ok()?, ip.parse().ok()?))
}
