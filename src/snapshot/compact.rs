//! [`Stored`]: how the snapshot keeps one agent's state in memory.
//!
//! The protobuf `AgentState` holds seven separately allocated strings (~310 bytes
//! inline plus the heap blocks); at a million agents that is most of the process's
//! memory, and comparing an agent touches a cache line per string. Most of those
//! strings repeat across agents — status names, versions, OS types, NodeMan statuses —
//! so they live in one shared, interned [`Profile`] per distinct combination, with the
//! small status fields that go with them (status code, alive, run mode); the agent id
//! is the map's key and is not stored again. What stays per agent is the host, cloud
//! and business ids (32-bit inline), the IP (IPv4 inline), the observation time and two
//! pointers: 40 bytes and no heap block of its own. What few agents have — agent info
//! and plugins (only with those features on), a non-IPv4 IP, an id beyond 32 bits —
//! sits behind one optional box.
//!
//! The protobuf `AgentState` is rebuilt ([`Stored::to_state`]) only when an event or a
//! state record is produced.

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
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

/// What few agents need, kept out of line so that the rest do not pay for it: agent
/// info and plugins (only with those features on), and the odd values that do not fit
/// the inline fields.
#[derive(Debug, Clone, PartialEq)]
struct Extra {
    info: Option<AgentInfo>,
    plugins: BTreeMap<String, PluginState>,
    /// The IP when it is not an IPv4 address: IPv6, empty, or text that is not
    /// canonical dotted-decimal (kept as given, so it round-trips exactly).
    ip_text: Option<Box<str>>,
    /// Host, cloud and business ids, when one of them does not fit in 32 bits.
    wide_ids: Option<[i64; 3]>,
}

/// One agent's state as the snapshot holds it. Field meanings: see the .proto.
///
/// The ids are 64-bit in the contract but 32-bit in every BlueKing deployment seen
/// (auto-increment keys, small cloud area numbers), so they are kept in 32 bits inline
/// and all three move to the extra box when one does not fit; likewise the IP is an
/// inline IPv4 address unless the extra box has its text. Reading a field checks
/// `extra`, which is `None` for most agents: a null test, not a pointer to follow.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    observed_at_ms: i64,
    profile: Arc<Profile>,
    extra: Option<Box<Extra>>,
    host_id: i32,
    cloud_id: i32,
    biz_id: i32,
    /// Meaningless when `extra` has `ip_text`.
    ipv4: Ipv4Addr,
}

// Every agent holds one, two while a change is pending (a protobuf AgentState is ~310
// bytes): at a million agents 8 bytes here are ~17 MB (the table is 48-88% full), so a
// change of layout that grows it should be a decision.
const _: () = assert!(std::mem::size_of::<Stored>() <= 40);

impl Stored {
    /// The state as borrowed fields; `agent_id` is the snapshot key it is stored under.
    pub(crate) fn view<'a>(&'a self, agent_id: &'a str) -> AgentView<'a> {
        let p = &*self.profile;
        let extra = self.extra.as_deref();
        let [host_id, cloud_id, biz_id] = extra.and_then(|x| x.wide_ids).unwrap_or([
            i64::from(self.host_id),
            i64::from(self.cloud_id),
            i64::from(self.biz_id),
        ]);
        AgentView {
            agent_id,
            host_id,
            cloud_id,
            biz_id,
            ip: match extra.and_then(|x| x.ip_text.as_deref()) {
                Some(s) => IpRef::Text(s),
                None => IpRef::V4(self.ipv4),
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
            info: extra.and_then(|x| x.info.as_ref()),
            plugins: extra.map_or(&NO_PLUGINS, |x| &x.plugins),
        }
    }

    /// The protobuf state, for producing (allocates).
    pub(crate) fn to_state(&self, agent_id: &str) -> AgentState {
        self.view(agent_id).to_state()
    }

    pub(crate) fn from_view(v: &AgentView<'_>, interner: &Interner) -> Stored {
        let (ipv4, ip_text) = match v.ip {
            IpRef::V4(a) => (a, None),
            IpRef::Text(s) => match s.parse() {
                Ok(a) => (a, None),
                Err(_) => (Ipv4Addr::UNSPECIFIED, Some(Box::from(s))),
            },
        };
        let narrow = (
            i32::try_from(v.host_id),
            i32::try_from(v.cloud_id),
            i32::try_from(v.biz_id),
        );
        let (ids, wide_ids) = match narrow {
            (Ok(h), Ok(c), Ok(b)) => ((h, c, b), None),
            _ => ((0, 0, 0), Some([v.host_id, v.cloud_id, v.biz_id])),
        };
        let extra =
            (v.info.is_some() || !v.plugins.is_empty() || ip_text.is_some() || wide_ids.is_some())
                .then(|| {
                    Box::new(Extra {
                        info: v.info.cloned(),
                        plugins: v.plugins.clone(),
                        ip_text,
                        wide_ids,
                    })
                });
        Stored {
            observed_at_ms: v.observed_at_ms,
            profile: interner.profile(v),
            extra,
            host_id: ids.0,
            cloud_id: ids.1,
            biz_id: ids.2,
            ipv4,
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
    fn ids_beyond_32_bits_and_ips_that_are_not_ipv4_round_trip_through_the_extra_box() {
        let interner = Interner::default();
        let bare = |host_id: i64, cloud_id: i64, biz_id: i64, ip: &str| AgentState {
            host_id,
            cloud_id,
            biz_id,
            ip: ip.into(),
            info: None,
            plugins: BTreeMap::new(),
            ..state("2.1.5")
        };
        for s in [
            bare(i64::from(i32::MAX) + 1, 0, 2, "10.0.0.1"),
            bare(7, i64::from(i32::MIN) - 1, 2, "10.0.0.1"),
            bare(7, 0, i64::MAX, "10.0.0.1"),
            bare(7, 0, 2, "fe80::1"),
            bare(7, 0, 2, ""),
            bare(7, 0, 2, "010.0.0.1"),
        ] {
            let stored = Stored::from_view(&s.view(), &interner);
            assert!(stored.extra.is_some(), "{s:?}");
            assert_eq!(stored.to_state("a-1"), s);
        }
        // The usual agent: 32-bit ids, an IPv4 address (also 0.0.0.0 and negative
        // ids), nothing out of line.
        for s in [
            bare(i64::from(i32::MAX), i64::from(i32::MIN), 0, "0.0.0.0"),
            bare(-1, 0, 2, "255.255.255.255"),
        ] {
            let stored = Stored::from_view(&s.view(), &interner);
            assert!(stored.extra.is_none(), "{s:?}");
            assert_eq!(stored.to_state("a-1"), s);
        }
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
