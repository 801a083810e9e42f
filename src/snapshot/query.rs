//! Read-only views of the store for the query API (`http::query`): one agent, lookups
//! by host id and by `(cloud, ip)`, a paged walk in agent-id order, and summary counts.
//!
//! # The lookup index
//! Host-id and address lookups, and the ordered listing, use an [`AgentIndex`] built
//! from the store in one pass and kept until the store's *generation* moves. The
//! generation is bumped by the single writer only when an agent appears or the host
//! id / cloud / IP of its latest state changes — a status change (the common case at
//! every sweep) does not invalidate the index, so at steady state it is built once and
//! reused. Removals do not bump it either: every lookup re-reads the entry the index
//! points at and checks that it still has the asked-for identity, so a stale index can
//! only miss an agent that appeared after it was built, and that is exactly what the
//! generation check rules out.
//!
//! We chose a lazily rebuilt index over secondary maps maintained on every write so
//! the write path (one `observe` per agent per sweep) stays as it was, and memory is
//! spent only when the API is used. Memory: a sorted `Vec<AgentId>` of ids (16 B per
//! agent; the strings are shared with the store's keys) and two hash maps from a key
//! to a `u32` position (16 B slots plus hashbrown's control byte and power-of-two
//! headroom): 50–90 B per agent, about 90 MB at 1M agents, twice that for a moment
//! while a rebuild replaces an index still used by a request, plus ~56 B per agent of
//! scratch during a rebuild. A rebuild is one pass plus a sort of the ids.

use crate::sources::inventory::AgentId;
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{atomic::Ordering, Arc},
};

use super::{entry::Entry, store::Store, view::AgentView};
use crate::proto::v1::AgentState;

/// What the index keys an agent by: host id, cloud area and IP of its latest state.
/// Compared before and after each observation to decide whether the index is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Identity {
    host_id: i64,
    cloud_id: i64,
    /// `None` for an empty or unparsable `ip` (such agents cannot be looked up by
    /// address).
    ip: Option<IpAddr>,
}

impl Identity {
    pub(super) fn of(s: &AgentView<'_>) -> Identity {
        Identity {
            host_id: s.host_id,
            cloud_id: s.cloud_id,
            ip: match s.ip {
                super::view::IpRef::V4(a) => Some(IpAddr::V4(a)),
                super::view::IpRef::Text(t) => t.parse().ok(),
            },
        }
    }
}

/// A copy of one agent's entry as the API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    /// The newest known state: the change not yet acknowledged by Kafka if there is
    /// one, else what consumers were told.
    pub state: AgentState,
    /// `seq` of the last event Kafka acknowledged for this agent (0 before the first).
    pub seq: u64,
    /// The incarnation that `seq` counts in (events are ordered by the pair).
    pub incarnation_ms: i64,
    /// The last GSE query for this agent failed; `state` is from an earlier sweep.
    pub stale: bool,
    /// Unix ms of the last successful GSE observation; 0 when never observed.
    pub observed_at_ms: i64,
    /// `state` is not yet acknowledged by Kafka.
    pub pending: bool,
}

impl AgentRecord {
    fn of(agent_id: &str, e: &Entry) -> Option<AgentRecord> {
        let state = e.latest()?.to_state(agent_id);
        Some(AgentRecord {
            observed_at_ms: if e.observed_ms > 0 {
                e.observed_ms
            } else {
                state.observed_at_ms
            },
            state,
            seq: e.seq,
            incarnation_ms: e.incarnation_ms,
            stale: e.stale,
            pending: e.is_unacked(),
        })
    }
}

/// Counts over every agent with a known state (agents being deleted are left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub total: u64,
    /// Agents whose last GSE query failed.
    pub stale: u64,
    /// Agents whose latest change is not yet acknowledged by Kafka.
    pub pending: u64,
    pub by_status: BTreeMap<String, u64>,
    pub by_biz: BTreeMap<i64, u64>,
    pub by_cloud: BTreeMap<i64, u64>,
}

/// Index keys; an agent without a host id (0) or a parsable IP is not indexed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Host(i64),
    Addr(i64, IpAddr),
}

/// Sorted ids plus host-id and address maps; see the module doc.
#[derive(Debug, Default)]
pub struct AgentIndex {
    generation: u64,
    ids: Vec<AgentId>,
    by_host: HashMap<i64, u32>,
    /// IPv4 addresses, the common case: the cloud id as bytes keeps the key's
    /// alignment at 4, so a slot is 16 bytes instead of 24.
    by_v4: HashMap<([u8; 8], u32), u32>,
    by_other_ip: HashMap<(i64, IpAddr), u32>,
    /// Further agents sharing a key (e.g. a host whose agent id changed, while the
    /// old id is still being removed). Rare, so kept out of the main maps.
    shared: HashMap<Key, Vec<u32>>,
}

impl AgentIndex {
    /// The store generation this index reflects.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of agent ids in the index.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn insert(&mut self, key: Key, pos: u32) {
        let first = match key {
            Key::Host(h) => self.by_host.try_insert_pos(h, pos),
            Key::Addr(c, IpAddr::V4(ip)) => self.by_v4.try_insert_pos(v4_key(c, ip), pos),
            Key::Addr(c, ip) => self.by_other_ip.try_insert_pos((c, ip), pos),
        };
        if !first {
            self.shared.entry(key).or_default().push(pos);
        }
    }

    fn candidates(&self, key: Key) -> impl Iterator<Item = &AgentId> {
        let first = match key {
            Key::Host(h) => self.by_host.get(&h),
            Key::Addr(c, IpAddr::V4(ip)) => self.by_v4.get(&v4_key(c, ip)),
            Key::Addr(c, ip) => self.by_other_ip.get(&(c, ip)),
        };
        let more = self.shared.get(&key).map(Vec::as_slice).unwrap_or_default();
        first
            .into_iter()
            .chain(more)
            .filter_map(|&p| self.ids.get(p as usize))
    }
}

fn v4_key(cloud_id: i64, ip: std::net::Ipv4Addr) -> ([u8; 8], u32) {
    (cloud_id.to_ne_bytes(), u32::from(ip))
}

trait TryInsertPos<K> {
    /// Inserts unless the key is present; true when inserted.
    fn try_insert_pos(&mut self, k: K, pos: u32) -> bool;
}

impl<K: std::hash::Hash + Eq> TryInsertPos<K> for HashMap<K, u32> {
    fn try_insert_pos(&mut self, k: K, pos: u32) -> bool {
        match self.entry(k) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(pos);
                true
            }
        }
    }
}

/// Which agents a listing returns. Empty `statuses` means any status.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub statuses: Vec<String>,
    pub biz_id: Option<i64>,
    pub cloud_id: Option<i64>,
}

impl ListFilter {
    pub fn matches(&self, s: &AgentState) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&s.status))
            && self.biz_id.is_none_or(|b| b == s.biz_id)
            && self.cloud_id.is_none_or(|c| c == s.cloud_id)
    }
}

/// One page of a listing in agent-id order, produced a few agents at a time so the
/// HTTP layer can stream it.
#[derive(Debug)]
pub struct PageWalk {
    index: Arc<AgentIndex>,
    filter: ListFilter,
    /// Next position in `index.ids`.
    pos: usize,
    /// Agents still to return.
    remaining: usize,
    /// Ids still to look at: bounds the work of one page when a filter matches few.
    scan_left: usize,
    last_scanned: Option<AgentId>,
}

impl PageWalk {
    /// A page of up to `limit` agents with ids strictly after `after`, looking at no
    /// more than `max_scan` ids (a page may then be short, even empty, and still have a
    /// next cursor).
    pub fn new(
        index: Arc<AgentIndex>,
        after: Option<&str>,
        filter: ListFilter,
        limit: usize,
        max_scan: usize,
    ) -> PageWalk {
        let pos = match after {
            Some(a) => index.ids.partition_point(|id| &**id <= a),
            None => 0,
        };
        PageWalk {
            index,
            filter,
            pos,
            remaining: limit,
            scan_left: max_scan.max(limit),
            last_scanned: None,
        }
    }

    /// Up to `n` more agents of the page; empty when the page is complete.
    pub fn next_chunk(&mut self, store: &Store, n: usize) -> Vec<AgentRecord> {
        let mut out = Vec::new();
        while out.len() < n && self.remaining > 0 && self.scan_left > 0 {
            let Some(id) = self.index.ids.get(self.pos) else {
                break;
            };
            self.pos += 1;
            self.scan_left -= 1;
            self.last_scanned = Some(id.clone());
            if let Some(v) = store.agent(id) {
                if self.filter.matches(&v.state) {
                    self.remaining -= 1;
                    out.push(v);
                }
            }
        }
        out
    }

    /// After the last chunk: the id to continue after, or `None` when the walk reached
    /// the end of the ids.
    pub fn next_after(&self) -> Option<&str> {
        if self.pos >= self.index.ids.len() {
            None
        } else {
            self.last_scanned.as_deref()
        }
    }
}

impl Store {
    /// Changes whenever the lookup index must be rebuilt (see the module doc).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The agent's latest known state; `None` for an unknown agent or one being deleted.
    pub fn agent(&self, agent_id: &str) -> Option<AgentRecord> {
        let e = self.map.get(agent_id)?;
        AgentRecord::of(e.key(), &e)
    }

    /// The agent whose latest state has this host id. When several do (a host whose
    /// agent id changed), the most recently observed one.
    pub fn agent_by_host(&self, index: &AgentIndex, host_id: i64) -> Option<AgentRecord> {
        if host_id == 0 {
            return None;
        }
        self.best(index, Key::Host(host_id), |s| s.host_id == host_id)
    }

    /// The agent whose latest state has this cloud area and IP (compared as addresses,
    /// so `"10.0.0.1"` matches however it is written in a request).
    pub fn agent_by_addr(
        &self,
        index: &AgentIndex,
        cloud_id: i64,
        ip: &str,
    ) -> Option<AgentRecord> {
        let ip: IpAddr = ip.trim().parse().ok()?;
        self.best(index, Key::Addr(cloud_id, ip), |s| {
            s.cloud_id == cloud_id && s.ip.parse::<IpAddr>() == Ok(ip)
        })
    }

    fn best(
        &self,
        index: &AgentIndex,
        key: Key,
        still: impl Fn(&AgentState) -> bool,
    ) -> Option<AgentRecord> {
        index
            .candidates(key)
            .filter_map(|id| self.agent(id))
            .filter(|v| still(&v.state))
            .reduce(|a, b| {
                if b.observed_at_ms > a.observed_at_ms {
                    b
                } else {
                    a
                }
            })
    }

    /// Builds the lookup index from one pass over the store.
    pub fn build_index(&self) -> AgentIndex {
        // Read first: a change during the pass leaves the index one generation behind,
        // so the next request rebuilds it again rather than missing the change.
        let generation = self.generation();
        let mut rows: Vec<(AgentId, Identity)> = Vec::with_capacity(self.map.len());
        for e in self.map.iter() {
            if let Some(s) = e.latest() {
                rows.push((e.key().clone(), Identity::of(&s.view(e.key()))));
            }
        }
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut index = AgentIndex {
            generation,
            ids: Vec::with_capacity(rows.len()),
            ..AgentIndex::default()
        };
        index.by_host.reserve(rows.len());
        index.by_v4.reserve(rows.len());
        for (pos, (id, ident)) in rows.into_iter().enumerate() {
            // More than u32::MAX agents in one process is far beyond what one store holds.
            let pos = u32::try_from(pos).expect("fewer than 2^32 agents");
            if ident.host_id != 0 {
                index.insert(Key::Host(ident.host_id), pos);
            }
            if let Some(ip) = ident.ip {
                index.insert(Key::Addr(ident.cloud_id, ip), pos);
            }
            index.ids.push(id);
        }
        index
    }

    /// Counts by status, business and cloud area, from one pass.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for e in self.map.iter() {
            let Some(latest) = e.latest() else { continue };
            s.total += 1;
            if e.stale {
                s.stale += 1;
            }
            if e.is_unacked() {
                s.pending += 1;
            }
            let latest = latest.view(e.key());
            if let Some(n) = s.by_status.get_mut(latest.status) {
                *n += 1;
            } else {
                s.by_status.insert(latest.status.to_owned(), 1);
            }
            *s.by_biz.entry(latest.biz_id).or_default() += 1;
            *s.by_cloud.entry(latest.cloud_id).or_default() += 1;
        }
        s
    }
}

#[cfg(test)]
#[path = "query_tests.rs"]
mod tests;
