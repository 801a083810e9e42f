//! [`Stored`]: how the snapshot keeps one agent's state in memory.
//!
//! The protobuf `AgentState` holds seven separately allocated strings (~310 bytes
//! inline plus the heap blocks); at a million agents that is most of the process's
//! memory, and comparing an agent touches a cache line per string. Most of those
//! strings repeat across agents — status names, versions, OS types, NodeMan statuses —
//! so they live in one shared, interned [`Profile`] per distinct combination, with the
//! small status fields that go with them (status code, alive, run mode); the agent id
//! is the map's key and is not stored again. What stays per agent is the host, cloud
//! and business ids, the IP (inline when IPv4), the observation time and two pointers:
//! 64 bytes and no heap block of its own. Agent info and plugins (only with those
//! features on) sit behind one optional box.
//!
//! The protobuf `AgentState` is rebuilt ([`Stored::to_state`]) only when an event or a
//! state record is produced.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use super::view::{AgentView, IpRef, NO_PLUGINS};
use crate::proto::v1::{AgentInfo, AgentState, PluginState};

/// The fields most agents share, interned: one allocation per distinct combination,
/// shared by every agent that has it. The strings, and the small status fields that go
/// with them (a status code and its name, whether the agent is alive, its run mode).
#[derive(Debug)]
pub(crate) struct Profile {
    status: Box<str>,
    version: Box<str>,
    nodeman_status: Box<str>,
    os_type: Box<str>,
    status_api: Box<str>,
    status_code: i32,
    run_mode: i32,
    v1_agent_alive: Option<i32>,
    alive: bool,
}

/// A profile's fields, borrowed: what the interner hashes and compares.
#[derive(PartialEq, Eq, Hash)]
struct ProfileKey<'a> {
    status: &'a str,
    version: &'a str,
    nodeman_status: &'a str,
    os_type: &'a str,
    status_api: &'a str,
    status_code: i32,
    run_mode: i32,
    v1_agent_alive: Option<i32>,
    alive: bool,
}

impl<'a> ProfileKey<'a> {
    fn of(v: &AgentView<'a>) -> ProfileKey<'a> {
        ProfileKey {
            status: v.status,
            version: v.version,
            nodeman_status: v.nodeman_status,
            os_type: v.os_type,
            status_api: v.status_api,
            status_code: v.status_code,
            run_mode: v.run_mode,
            v1_agent_alive: v.v1_agent_alive,
            alive: v.alive,
        }
    }

    fn to_profile(&self) -> Profile {
        Profile {
            status: self.status.into(),
            version: self.version.into(),
            nodeman_status: self.nodeman_status.into(),
            os_type: self.os_type.into(),
            status_api: self.status_api.into(),
            status_code: self.status_code,
            run_mode: self.run_mode,
            v1_agent_alive: self.v1_agent_alive,
            alive: self.alive,
        }
    }
}

impl Profile {
    fn key(&self) -> ProfileKey<'_> {
        ProfileKey {
            status: &self.status,
            version: &self.version,
            nodeman_status: &self.nodeman_status,
            os_type: &self.os_type,
            status_api: &self.status_api,
            status_code: self.status_code,
            run_mode: self.run_mode,
            v1_agent_alive: self.v1_agent_alive,
            alive: self.alive,
        }
    }
}

/// The IP: an IPv4 address inline (most agents), anything else (IPv6, empty, odd
/// text) as it was given.
#[derive(Debug, Clone)]
enum StoredIp {
    V4(std::net::Ipv4Addr),
    Text(Box<str>),
}

/// Agent info and plugins: absent for most deployments, so kept out of line.
#[derive(Debug, Clone, PartialEq)]
struct Extra {
    info: Option<AgentInfo>,
    plugins: BTreeMap<String, PluginState>,
}

/// One agent's state as the snapshot holds it. Field meanings: see the .proto.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    host_id: i64,
    cloud_id: i64,
    biz_id: i64,
    observed_at_ms: i64,
    ip: StoredIp,
    profile: Arc<Profile>,
    extra: Option<Box<Extra>>,
}

// Every agent holds one, two while a change is pending (a protobuf AgentState is ~310
// bytes): a change of layout that grows it should be a decision.
const _: () = assert!(std::mem::size_of::<Stored>() <= 64);

impl Stored {
    /// The state as borrowed fields; `agent_id` is the snapshot key it is stored under.
    pub(crate) fn view<'a>(&'a self, agent_id: &'a str) -> AgentView<'a> {
        let p = &*self.profile;
        AgentView {
            agent_id,
            host_id: self.host_id,
            cloud_id: self.cloud_id,
            biz_id: self.biz_id,
            ip: match &self.ip {
                StoredIp::V4(a) => IpRef::V4(*a),
                StoredIp::Text(s) => IpRef::Text(s),
            },
            status_code: p.status_code,
            status: &p.status,
            alive: p.alive,
            version: &p.version,
            run_mode: p.run_mode,
            nodeman_status: &p.nodeman_status,
            os_type: &p.os_type,
            observed_at_ms: self.observed_at_ms,
            status_api: &p.status_api,
            v1_agent_alive: p.v1_agent_alive,
            info: self.extra.as_ref().and_then(|x| x.info.as_ref()),
            plugins: self.extra.as_ref().map_or(&NO_PLUGINS, |x| &x.plugins),
        }
    }

    /// The protobuf state, for producing (allocates).
    pub(crate) fn to_state(&self, agent_id: &str) -> AgentState {
        self.view(agent_id).to_state()
    }

    pub(crate) fn from_view(v: &AgentView<'_>, interner: &Interner) -> Stored {
        let extra = (v.info.is_some() || !v.plugins.is_empty()).then(|| {
            Box::new(Extra {
                info: v.info.cloned(),
                plugins: v.plugins.clone(),
            })
        });
        Stored {
            host_id: v.host_id,
            cloud_id: v.cloud_id,
            biz_id: v.biz_id,
            observed_at_ms: v.observed_at_ms,
            ip: match v.ip {
                IpRef::V4(a) => StoredIp::V4(a),
                IpRef::Text(s) => match s.parse() {
                    Ok(a) => StoredIp::V4(a),
                    Err(_) => StoredIp::Text(s.into()),
                },
            },
            profile: interner.profile(v),
            extra,
        }
    }

    pub(crate) fn status_code(&self) -> i32 {
        self.profile.status_code
    }

    pub(crate) fn observed_at_ms(&self) -> i64 {
        self.observed_at_ms
    }
}

/// Most distinct profiles kept for sharing. Beyond it (an upstream inventing a new
/// version string per agent, say) new profiles are still correct, just not shared, so
/// memory stays bounded by the agents rather than by what upstream sends.
const MAX_PROFILES: usize = 65_536;

/// The shared profiles. Touched only when an agent's state changes (never for an
/// unchanged agent), so one mutex is enough.
#[derive(Default)]
pub(crate) struct Interner {
    hasher: ahash::RandomState,
    profiles: Mutex<HashMap<u64, Vec<Arc<Profile>>>>,
}

impl Interner {
    fn profile(&self, v: &AgentView<'_>) -> Arc<Profile> {
        let key = ProfileKey::of(v);
        let hash = self.hasher.hash_one(&key);
        // A poisoned lock only means another thread panicked mid-insert; the map is
        // still a valid cache.
        let mut map = self.profiles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map
            .get(&hash)
            .and_then(|b| b.iter().find(|p| p.key() == key))
        {
            return p.clone();
        }
        let p = Arc::new(key.to_profile());
        if map.len() < MAX_PROFILES {
            map.entry(hash).or_default().push(p.clone());
        }
        p
    }

    /// Drops profiles no agent uses any more. Returns how many are left.
    pub(crate) fn prune(&self) -> usize {
        let mut map = self.profiles.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, bucket| {
            bucket.retain(|p| Arc::strong_count(p) > 1);
            !bucket.is_empty()
        });
        map.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::view::View;

    fn state(version: &str) -> AgentState {
        AgentState {
            agent_id: "a-1".into(),
            host_id: 7,
            cloud_id: 3,
            biz_id: 2,
            ip: "10.0.0.1".into(),
            status_code: 2,
            status: "running".into(),
            alive: true,
            version: version.into(),
            run_mode: 1,
            nodeman_status: "RUNNING".into(),
            os_type: "LINUX".into(),
            observed_at_ms: 99,
            status_api: "v2".into(),
            v1_agent_alive: Some(1),
            info: Some(AgentInfo {
                parent_ip: "10.0.0.9".into(),
                start_time_ms: 5,
                ..AgentInfo::default()
            }),
            plugins: [(
                "bkmonitorbeat".to_owned(),
                PluginState {
                    status: "RUNNING".into(),
                    version: "3.1".into(),
                },
            )]
            .into(),
        }
    }

    #[test]
    fn a_stored_state_gives_back_the_same_protobuf_state() {
        let interner = Interner::default();
        let s = state("2.1.5");
        let stored = Stored::from_view(&s.view(), &interner);
        assert_eq!(stored.to_state("a-1"), s);
        let bare = AgentState {
            info: None,
            plugins: BTreeMap::new(),
            ..s
        };
        let stored = Stored::from_view(&bare.view(), &interner);
        assert!(stored.extra.is_none());
        assert_eq!(stored.to_state("a-1"), bare);
    }

    #[test]
    fn agents_with_the_same_strings_share_one_profile_until_none_uses_it() {
        let interner = Interner::default();
        let a = Stored::from_view(&state("2.1.5").view(), &interner);
        let b = Stored::from_view(&state("2.1.5").view(), &interner);
        let c = Stored::from_view(&state("2.1.6").view(), &interner);
        assert!(Arc::ptr_eq(&a.profile, &b.profile));
        assert!(!Arc::ptr_eq(&a.profile, &c.profile));
        assert_eq!(interner.prune(), 2);
        drop(c);
        assert_eq!(interner.prune(), 1);
    }

    #[test]
    fn agents_differing_only_in_a_status_field_get_their_own_profile() {
        let interner = Interner::default();
        let running = state("2.1.5");
        let mut dead = state("2.1.5");
        dead.alive = false;
        let a = Stored::from_view(&running.view(), &interner);
        let b = Stored::from_view(&dead.view(), &interner);
        assert!(!Arc::ptr_eq(&a.profile, &b.profile));
        assert_eq!(b.to_state("a-1"), dead);
    }

    #[test]
    fn past_the_profile_cap_states_are_kept_exactly_but_not_shared() {
        let interner = Interner::default();
        let all: Vec<Stored> = (0..MAX_PROFILES + 2)
            .map(|i| Stored::from_view(&state(&format!("v{i}")).view(), &interner))
            .collect();
        assert_eq!(interner.prune(), MAX_PROFILES);
        let last = state(&format!("v{}", MAX_PROFILES + 1));
        let again = Stored::from_view(&last.view(), &interner);
        assert_eq!(again.to_state("a-1"), last);
        assert!(!Arc::ptr_eq(&again.profile, &all[MAX_PROFILES + 1].profile));
    }
}
