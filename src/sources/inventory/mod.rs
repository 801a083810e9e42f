//! The inventory: which hosts exist, and the agent id each is watched under.
//!
//! Three sources (`inventory.source`): NodeMan host search (default), CMDB host
//! listing, or a static YAML/CSV file; [`InventorySource`] hides which.

mod config;
pub mod file;
mod profiles;
mod row;
mod source;

use std::sync::Arc;

pub use config::{InventoryConfig, SourceKind};
pub use profiles::Profile;
pub use row::{HostIp, HostRef, HostRow};
pub use source::InventorySource;

use profiles::Interner;

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
    /// `bk_agent_id`; empty for legacy (GSE 1.x-era) agents. A watched host's
    /// [`HostRow`] keeps it only when it is not the agent id (in [`Inventory::ids`]).
    pub bk_agent_id: String,
    /// A handful of values for a whole inventory: [`Inventory`] keeps one copy of each
    /// (see [`Profile`]).
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
    /// The watched hosts, compact (see [`HostRow`]); [`Inventory::host`] reads one
    /// with all its fields.
    pub hosts: Vec<HostRow>,
    /// The distinct (OS type, NodeMan status) pairs the rows point into.
    profiles: Vec<Profile>,
    /// Hosts not watched, with the reason (reported in a metric and the log).
    pub rejected: Vec<(Host, Rejected)>,
}

impl Inventory {
    /// Applies the agent id rule to every host and drops duplicates deterministically.
    ///
    /// Kept lean for a million hosts: each watched host becomes a 40-byte [`HostRow`]
    /// with no heap block of its own in the common case; its agent id moves into `ids`
    /// and its OS type and NodeMan status into the shared profile table.
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
        let mut profiles = Interner::default();
        let mut inv = Inventory {
            ids: Vec::with_capacity(hosts.len()),
            hosts: Vec::with_capacity(hosts.len()),
            profiles: Vec::new(),
            rejected: Vec::new(),
        };
        for ((h, id), keep) in hosts.into_iter().zip(ids).zip(keep) {
            match id {
                Ok(id) if keep => {
                    inv.hosts.push(HostRow::pack(h, &id, &mut profiles));
                    inv.ids.push(AgentId::from(id));
                }
                Ok(_) => inv.rejected.push((h, Rejected::DuplicateAgentId)),
                Err(r) => inv.rejected.push((h, r)),
            }
        }
        inv.profiles = profiles.finish();
        inv.shrink_to_fit();
        inv
    }

    /// Host `i` (of `hosts`, the agent `ids[i]`) with all its fields.
    ///
    /// # Panics
    /// When `i` is out of range, like indexing `hosts`.
    pub fn host(&self, i: usize) -> HostRef<'_> {
        self.hosts[i].view(&self.profiles)
    }

    /// Keeps only the agents `keep` accepts (by agent id); returns how many were
    /// dropped. Used for sharding: other shards' agents are not rejections.
    pub fn retain_ids(&mut self, keep: impl Fn(&str) -> bool) -> usize {
        let before = self.ids.len();
        let kept: Vec<bool> = self.ids.iter().map(|id| keep(id)).collect();
        self.retain_by(&kept);
        before - self.ids.len()
    }

    /// Moves the hosts matching `reject` to `rejected` with `reason`.
    pub fn reject_where(&mut self, reason: Rejected, reject: impl Fn(&HostRow) -> bool) {
        let kept: Vec<bool> = self.hosts.iter().map(|h| !reject(h)).collect();
        for (h, _) in self.hosts.iter().zip(&kept).filter(|(_, k)| !**k) {
            self.rejected.push((h.to_host(&self.profiles), reason));
        }
        self.retain_by(&kept);
    }

    /// Keeps `ids[i]` and `hosts[i]` where `kept[i]`, in order. `kept` has one entry per
    /// host (the `true` past its end is never used).
    fn retain_by(&mut self, kept: &[bool]) {
        let mut k = kept.iter();
        self.ids.retain(|_| k.next().copied().unwrap_or(true));
        let mut k = kept.iter();
        self.hosts.retain(|_| k.next().copied().unwrap_or(true));
        self.shrink_to_fit();
    }

    /// Gives back the room of dropped hosts: a shard keeps a fraction of the inventory,
    /// and the rows were allocated for all of it.
    fn shrink_to_fit(&mut self) {
        self.ids.shrink_to_fit();
        self.hosts.shrink_to_fit();
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
        assert_eq!(inv.host(0).host_id, 1);
        assert_eq!(inv.rejected.len(), 2);
    }

    #[test]
    fn sharding_keeps_ids_and_hosts_side_by_side() {
        let mut inv = Inventory::from_hosts(vec![
            host(1, "a", 0, "10.0.0.1"),
            host(2, "b", 0, "10.0.0.2"),
            host(3, "c", 0, "10.0.0.3"),
        ]);
        assert_eq!(inv.retain_ids(|id| id != "b"), 1);
        assert_eq!(inv.ids, vec![AgentId::from("a"), AgentId::from("c")]);
        assert_eq!((inv.host(0).host_id, inv.host(1).host_id), (1, 3));
        assert_eq!(
            inv.host(1).ip,
            HostIp::V4(std::net::Ipv4Addr::new(10, 0, 0, 3))
        );
        assert!(inv.rejected.is_empty());
    }

    #[test]
    fn a_rejected_watched_host_is_reported_with_its_fields() {
        let mut v6 = host(2, "b", 0, "");
        v6.ipv6 = "fe80::1".into();
        v6.os_type = "LINUX".into();
        let mut inv = Inventory::from_hosts(vec![host(1, "a", 0, "10.0.0.1"), v6.clone()]);
        inv.reject_where(Rejected::Ipv6OnlyGseV1, |h| h.ipv4().is_none());
        assert_eq!(inv.ids, vec![AgentId::from("a")]);
        assert_eq!(inv.hosts.len(), 1);
        // The agent id is in `ids`, not repeated in the host (as before rows existed).
        v6.bk_agent_id.clear();
        assert_eq!(inv.rejected, vec![(v6, Rejected::Ipv6OnlyGseV1)]);
    }

    #[test]
    fn hosts_share_one_copy_of_each_os_type_and_status() {
        let mut hosts: Vec<Host> = (1..=4)
            .map(|i| host(i, &format!("agent-{i}"), 0, "10.0.0.1"))
            .collect();
        for (i, h) in hosts.iter_mut().enumerate() {
            h.os_type = if i % 2 == 0 { "LINUX" } else { "WINDOWS" }.into();
            h.nodeman_status = "RUNNING".into();
        }
        let inv = Inventory::from_hosts(hosts);
        assert_eq!(inv.profiles.len(), 2);
        let os: Vec<&str> = (0..4).map(|i| inv.host(i).os_type).collect();
        assert_eq!(os, ["LINUX", "WINDOWS", "LINUX", "WINDOWS"]);
        assert_eq!(inv.host(3).nodeman_status, "RUNNING");
    }
}
