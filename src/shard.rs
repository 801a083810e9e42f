//! Horizontal sharding: several replicas split the agents between them, like
//! kube-state-metrics' sharding.
//!
//! A replica owns an agent when `xxh3_64(agent_id) % total == index`. XXH3-64 (seed 0)
//! over the agent id's UTF-8 bytes is a fixed, published algorithm: the same id maps to
//! the same shard on every version and architecture. A replica polls, diffs, produces
//! and restores only its own agents; the inventory is filtered after fetching.
//!
//! Rescaling (changing `total`) hands agents over without delete/create storms: the
//! new owner restores a moved agent from the compacted state topic (written by the old
//! owner, with its `seq`), and the old owner, which restores only what it owns, never
//! sees the agent again — so nobody emits a delete or a create for it. Caveat: while
//! replicas with different `total`s run side by side (during a rolling update), an
//! agent can have two owners for a moment; its events then may repeat a `seq`.
//! Scale by replacing all replicas (StatefulSet `podManagementPolicy: Parallel` and a
//! short overlap) to keep that window small.

use serde::{Deserialize, Serialize};

use crate::config::FieldErrors;

/// `[shard]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// This replica's shard, 0-based.
    #[serde(default)]
    pub index: u32,
    /// Number of shards (replicas); 1 = no sharding.
    #[serde(default = "default_total")]
    pub total: u32,
    /// Take `index` from the ordinal of a StatefulSet pod name (`agentwatch-3` → 3),
    /// read from `POD_NAME`, else `HOSTNAME`.
    #[serde(default)]
    pub from_pod_name: bool,
}

fn default_total() -> u32 {
    1
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            index: 0,
            total: default_total(),
            from_pod_name: false,
        }
    }
}

/// The resolved shard of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shard {
    pub index: u32,
    pub total: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, total: 1 }
    }
}

impl ShardConfig {
    pub(crate) fn validate(&mut self, errs: &mut FieldErrors) {
        if self.total == 0 {
            errs.push("shard.total", "must be at least 1");
            return;
        }
        if self.from_pod_name {
            let name = std::env::var("POD_NAME")
                .ok()
                .filter(|s| !s.is_empty())
                .or_else(|| std::env::var("HOSTNAME").ok());
            match name.as_deref().map(ordinal) {
                Some(Some(i)) => self.index = i,
                Some(None) => errs.push(
                    "shard.from_pod_name",
                    format!(
                        "pod name {:?} does not end in -<ordinal>",
                        name.unwrap_or_default()
                    ),
                ),
                None => errs.push(
                    "shard.from_pod_name",
                    "neither POD_NAME nor HOSTNAME is set",
                ),
            }
        }
        if self.index >= self.total {
            errs.push(
                "shard.index",
                format!("{} is not below shard.total ({})", self.index, self.total),
            );
        }
    }

    pub fn shard(&self) -> Shard {
        Shard {
            index: self.index,
            total: self.total.max(1),
        }
    }
}

/// `agentwatch-12` → 12.
fn ordinal(pod: &str) -> Option<u32> {
    pod.rsplit_once('-')?.1.parse().ok()
}

/// The stable shard hash of an agent id.
pub fn agent_hash(agent_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(agent_id.as_bytes())
}

impl Shard {
    pub fn owns(&self, agent_id: &str) -> bool {
        self.total <= 1 || agent_hash(agent_id) % u64::from(self.total) == u64::from(self.index)
    }

    pub fn is_sharded(&self) -> bool {
        self.total > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_the_published_xxh3_and_never_changes() {
        // Pinned values: a change here moves agents between shards on upgrade.
        assert_eq!(agent_hash(""), 0x2d06_8005_38d3_94c2);
        assert_eq!(agent_hash("0:10.0.0.1"), agent_hash("0:10.0.0.1"));
        let pinned = agent_hash("02000000000000000000000000000001");
        assert_eq!(
            pinned,
            xxhash_rust::xxh3::xxh3_64(b"02000000000000000000000000000001")
        );
    }

    #[test]
    fn every_agent_has_exactly_one_owner_and_shards_are_balanced() {
        let total = 4;
        let mut counts = [0u32; 4];
        for i in 0..10_000 {
            let id = format!("agent-{i}");
            let owners: Vec<u32> = (0..total)
                .filter(|&index| Shard { index, total }.owns(&id))
                .collect();
            assert_eq!(owners.len(), 1);
            counts[owners[0] as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (2200..2800).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn the_ordinal_comes_from_the_statefulset_pod_name() {
        assert_eq!(ordinal("agentwatch-0"), Some(0));
        assert_eq!(ordinal("my-release-agentwatch-12"), Some(12));
        assert_eq!(ordinal("agentwatch"), None);
    }

    #[test]
    fn an_index_outside_total_is_rejected() {
        let mut c = ShardConfig {
            index: 3,
            total: 3,
            from_pod_name: false,
        };
        let mut errs = FieldErrors::default();
        c.validate(&mut errs);
        assert_eq!(errs.paths(), vec!["shard.index"]);
    }
}
