//! The inventory: which hosts exist, and the agent id each is watched under.
//!
//! Three sources (`inventory.source`): NodeMan host search (default), CMDB host
//! listing, or a static YAML/CSV file; [`InventorySource`] hides which.

mod config;
pub mod file;
mod source;

use std::sync::Arc;

pub use config::{InventoryConfig, SourceKind};
pub use source::InventorySource;

/// One host as the inventory (NodeMan `api/host/search/`) describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// `bk_host_id`; 0 when absent.
    pub host_id: i64,
    pub cloud_id: i64,
    pub biz_id: i64,
    /// `inner_ip` (IPv4); may be empty.
    pub ip: String,
    /// `inner_ipv6`; may be empty.
    pub ipv6: String,
    /// `bk_agent_id`; empty for legacy (GSE 1.x-era) agents. Empty too in
    /// [`Inventory::hosts`] when it is the agent id: that lives in [`Inventory::ids`].
    pub bk_agent_id: String,
    /// Shared between hosts (a handful of values for a whole inventory).
    pub os_type: Arc<str>,
    /// NodeMan's status string (RUNNING, TERMINATED, NOT_INSTALLED, ...); empty for
    /// other sources. Shared between hosts like `os_type`.
    pub nodeman_status: Arc<str>,
}

/// Why a host is not watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// No `bk_agent_id` and no IPv4 address: no agent id can be formed.
    NoAgentId,
    /// The agent id is longer than GSE's 64-byte limit.
    AgentIdTooLong,
    /// Another host already claimed the same agent id; the first one (lowest host id)
    /// is kept.
    DuplicateAgentId,
    /// GSE 1.x is in use and knows only IPv4 hosts; this one has no IPv4 address.
    Ipv6OnlyGseV1,
}

impl Rejected {
    pub fn metric_label(self) -> &'static str {
        match self {
            Rejected::NoAgentId => "no_agent_id",
            Rejected::AgentIdTooLong => "agent_id_too_long",
            Rejected::DuplicateAgentId => "duplicate_agent_id",
            Rejected::Ipv6OnlyGseV1 => "ipv6_only_gse_v1",
        }
    }

    pub const ALL: [Rejected; 4] = [
        Rejected::NoAgentId,
        Rejected::AgentIdTooLong,
        Rejected::DuplicateAgentId,
        Rejected::Ipv6OnlyGseV1,
    ];
}

/// An agent id as the inventory, the snapshot's key and the sink's work items hold it:
/// one shared, immutable string, one pointer wide (`Arc<str>` is two: at a million
/// agents each copy of the pointer costs 8 MB more). Derefs to `&str`, and hashes and
/// compares like `str`, so maps keyed by it are looked up with a plain `&str`.
pub type AgentId = arcstr::ArcStr;

/// Longest agent id GSE accepts.
pub const MAX_AGENT_ID_LEN: usize = 64;

impl Host {
    /// The agent id rule (bk-api.md part A): `bk_agent_id` if non-empty, else
    /// `"{bk_cloud_id}:{ip}"`.
    pub fn agent_id(&self) -> Result<String, Rejected> {
        let id = if !self.bk_agent_id.trim().is_empty() {
            self.bk_agent_id.trim().to_owned()
        } else if !self.ip.is_empty() {
            format!("{}:{}", self.cloud_id, self.ip)
        } else {
            return Err(Rejected::NoAgentId);
        };
        if id.len() > MAX_AGENT_ID_LEN {
            return Err(Rejected::AgentIdTooLong);
        }
        Ok(id)
    }
}

/// A complete inventory: every page was fetched and the count matched.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Agent ids of the watched hosts, unique, in host-id order; `ids[i]` belongs to
    /// `hosts[i]`. Kept as its own contiguous list so GSE batches are plain slices.
    /// Shared strings: the snapshot keys each agent by the same allocation (see
    /// `Store::share_ids`), so an id is held once however many hold it.
    pub ids: Vec<AgentId>,
    pub hosts: Vec<Host>,
    /// Hosts not watched, with the reason (reported in a metric and the log).
    pub rejected: Vec<(Host, Rejected)>,
}

impl Inventory {
    /// Applies the agent id rule to every host and drops duplicates deterministically.
    ///
    /// Kept lean for a million hosts: a watched host's `bk_agent_id` moves into `ids`
    /// (its `Host` keeps an empty one), and the repeated `os_type` / `nodeman_status`
    /// strings are shared between hosts.
    pub fn from_hosts(mut hosts: Vec<Host>) -> Inventory {
        hosts.sort_by_key(|h| h.host_id);
        let ids: Vec<Result<String, Rejected>> = hosts.iter().map(Host::agent_id).collect();
        // First host (lowest host id) wins an agent id; the set borrows from `ids`.
        let keep: Vec<bool> = {
            let mut seen = std::collections::HashSet::with_capacity(hosts.len());
            ids.iter()
                .map(|id| id.as_ref().is_ok_and(|id| seen.insert(id.as_str())))
                .collect()
        };
        let mut shared: std::collections::HashSet<Arc<str>> = std::collections::HashSet::new();
        let mut share = |s: &mut Arc<str>| match shared.get(s) {
            Some(x) => *s = x.clone(),
            None => {
                shared.insert(s.clone());
            }
        };
        let mut inv = Inventory {
            ids: Vec::with_capacity(hosts.len()),
            hosts: Vec::with_capacity(hosts.len()),
            rejected: Vec::new(),
        };
        for ((mut h, id), keep) in hosts.into_iter().zip(ids).zip(keep) {
            share(&mut h.os_type);
            share(&mut h.nodeman_status);
            match id {
                Ok(id) if keep => {
                    if h.bk_agent_id == id {
                        h.bk_agent_id = String::new();
                    }
                    inv.ids.push(AgentId::from(id));
                    inv.hosts.push(h);
                }
                Ok(_) => inv.rejected.push((h, Rejected::DuplicateAgentId)),
                Err(r) => inv.rejected.push((h, r)),
            }
        }
        inv
    }

    /// Keeps only the agents `keep` accepts (by agent id); returns how many were
    /// dropped. Used for sharding: other shards' agents are not rejections.
    pub fn retain_ids(&mut self, keep: impl Fn(&str) -> bool) -> usize {
        let before = self.ids.len();
        let mut ids = Vec::with_capacity(before);
        let mut hosts = Vec::with_capacity(before);
        for (id, h) in std::mem::take(&mut self.ids)
            .into_iter()
            .zip(std::mem::take(&mut self.hosts))
        {
            if keep(&id) {
                ids.push(id);
                hosts.push(h);
            }
        }
        self.ids = ids;
        self.hosts = hosts;
        before - self.ids.len()
    }

    /// Moves the hosts matching `reject` to `rejected` with `reason`.
    pub fn reject_where(&mut self, reason: Rejected, reject: impl Fn(&Host) -> bool) {
        let mut ids = Vec::with_capacity(self.ids.len());
        let mut hosts = Vec::with_capacity(self.hosts.len());
        for (id, h) in std::mem::take(&mut self.ids)
            .into_iter()
            .zip(std::mem::take(&mut self.hosts))
        {
            if reject(&h) {
                self.rejected.push((h, reason));
            } else {
                ids.push(id);
                hosts.push(h);
            }
        }
        self.ids = ids;
        self.hosts = hosts;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: i64, agent: &str, cloud: i64, ip: &str) -> Host {
        Host {
            host_id: id,
            cloud_id: cloud,
            ip: ip.to_owned(),
            bk_agent_id: agent.to_owned(),
            ..Host::default()
        }
    }

    #[test]
    fn agent_id_is_bk_agent_id_when_present() {
        let h = host(1, "0200000000000000000000000000000001", 0, "10.0.0.1");
        assert_eq!(
            h.agent_id().as_deref(),
            Ok("0200000000000000000000000000000001")
        );
    }

    #[test]
    fn agent_id_falls_back_to_cloud_and_ip() {
        assert_eq!(
            host(1, "", 3, "10.0.0.1").agent_id().as_deref(),
            Ok("3:10.0.0.1")
        );
        assert_eq!(
            host(1, "  ", 0, "10.0.0.2").agent_id().as_deref(),
            Ok("0:10.0.0.2")
        );
    }

    #[test]
    fn host_without_agent_id_or_ip_is_rejected() {
        assert_eq!(host(1, "", 0, "").agent_id(), Err(Rejected::NoAgentId));
    }

    #[test]
    fn agent_ids_of_any_length_up_to_64_bytes_are_kept() {
        let id36 = "02000000005254003dd2ea1700473962076n";
        assert_eq!(host(1, id36, 0, "").agent_id().as_deref(), Ok(id36));
        let id64 = "x".repeat(64);
        assert!(host(1, &id64, 0, "").agent_id().is_ok());
        let id65 = "x".repeat(65);
        assert_eq!(
            host(1, &id65, 0, "").agent_id(),
            Err(Rejected::AgentIdTooLong)
        );
    }

    #[test]
    fn duplicate_agent_ids_keep_the_lowest_host_id() {
        let inv = Inventory::from_hosts(vec![
            host(2, "abc", 0, "10.0.0.2"),
            host(1, "abc", 0, "10.0.0.1"),
            host(3, "", 0, ""),
        ]);
        assert_eq!(inv.ids, vec![AgentId::from("abc")]);
        assert_eq!(inv.hosts[0].host_id, 1);
        assert_eq!(inv.rejected.len(), 2);
    }
}
