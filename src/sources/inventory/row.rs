//! A watched host as the inventory stores it: 40 bytes inline and, for nearly every
//! host, no heap block of its own. (The parsers' [`Host`] is 128 bytes plus a heap
//! block for the IPv4 text; at a million hosts that was ~140 MB, now ~40.)
//!
//! What almost every host has is inline: the three ids, the IPv4 address as 4 bytes and
//! a 4-byte index into the inventory's (OS type, NodeMan status) table. What few hosts
//! have shares one optional box: an `ip` that is not an IPv4 address (empty, IPv6, or
//! whatever else the source sent), an `inner_ipv6`, a `bk_agent_id` other than the agent
//! id. A `bk_agent_id` equal to the agent id is not kept here at all: the id is in
//! `Inventory::ids`, shared with the snapshot.

use std::{fmt, net::Ipv4Addr};

use super::{
    profiles::{Interner, Profile},
    Host,
};

#[derive(Debug, Clone)]
pub struct HostRow {
    host_id: i64,
    cloud_id: i64,
    biz_id: i64,
    /// The `ip` text parsed, unless `rare` holds the text (then unused, 0.0.0.0).
    ipv4: Ipv4Addr,
    /// Index into the inventory's profile table; `u32::MAX` when `rare` holds the
    /// profile instead.
    profile: u32,
    rare: Option<Box<Rare>>,
}

// Every byte here is a megabyte at a million hosts. 40 = three i64 ids, the IPv4
// address and the profile index sharing a word, and the box (a null pointer when
// absent). A new field belongs in `Rare` unless most hosts have it.
const _: () = assert!(std::mem::size_of::<HostRow>() == 40);

/// What few hosts have. All `Box<str>`: an empty one allocates nothing.
#[derive(Debug, Clone)]
struct Rare {
    /// `ip` as the source sent it when it is not an IPv4 address; `None` when it is
    /// (then [`HostRow::ipv4`] holds it).
    ip: Option<Box<str>>,
    ipv6: Box<str>,
    /// Non-empty and not the agent id (a whitespace-padded one, for instance: the
    /// agent id is trimmed).
    bk_agent_id: Box<str>,
    /// Only when the profile table was full (see `Interner::intern`).
    profile: Option<Profile>,
}

/// A host's `ip` field: an IPv4 address, or the text the source sent when it is not one.
/// (The poller turns it into the snapshot's `IpRef`: sources do not depend on the
/// snapshot.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostIp<'a> {
    V4(Ipv4Addr),
    Text(&'a str),
}

impl Default for HostIp<'_> {
    fn default() -> Self {
        HostIp::Text("")
    }
}

impl fmt::Display for HostIp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostIp::V4(a) => a.fmt(f),
            HostIp::Text(s) => f.write_str(s),
        }
    }
}

/// A watched host with the fields of a [`Host`], borrowed from an
/// [`Inventory`](super::Inventory) (see `Inventory::host`).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostRef<'a> {
    pub host_id: i64,
    pub cloud_id: i64,
    pub biz_id: i64,
    pub ip: HostIp<'a>,
    pub ipv6: &'a str,
    /// Empty when absent or when it is the agent id.
    pub bk_agent_id: &'a str,
    pub os_type: &'a str,
    pub nodeman_status: &'a str,
}

impl HostRow {
    /// Packs a host watched under `agent_id`, moving its strings out: the common host
    /// (IPv4, no IPv6, `bk_agent_id` absent or equal to `agent_id`) allocates nothing.
    pub(super) fn pack(h: Host, agent_id: &str, profiles: &mut Interner) -> HostRow {
        let (profile, own_profile) = match profiles.intern(Profile {
            os_type: h.os_type,
            nodeman_status: h.nodeman_status,
        }) {
            Ok(i) => (i, None),
            Err(p) => (u32::MAX, Some(p)),
        };
        // Rust's parser takes only the canonical dotted-decimal form (no leading zeros,
        // no spaces), so printing the address gives back the text the source sent.
        let ipv4 = h.ip.parse::<Ipv4Addr>().ok();
        let bk_agent_id = if h.bk_agent_id == agent_id {
            String::new()
        } else {
            h.bk_agent_id
        };
        let rare = (ipv4.is_none()
            || !h.ipv6.is_empty()
            || !bk_agent_id.is_empty()
            || own_profile.is_some())
        .then(|| {
            Box::new(Rare {
                ip: ipv4.is_none().then(|| h.ip.into_boxed_str()),
                ipv6: h.ipv6.into_boxed_str(),
                bk_agent_id: bk_agent_id.into_boxed_str(),
                profile: own_profile,
            })
        });
        HostRow {
            host_id: h.host_id,
            cloud_id: h.cloud_id,
            biz_id: h.biz_id,
            ipv4: ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED),
            profile,
            rare,
        }
    }

    pub fn host_id(&self) -> i64 {
        self.host_id
    }

    pub fn cloud_id(&self) -> i64 {
        self.cloud_id
    }

    pub fn biz_id(&self) -> i64 {
        self.biz_id
    }

    /// The IPv4 address, when `ip` is one (GSE 1.x knows hosts only by it).
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        match self.ip() {
            HostIp::V4(a) => Some(a),
            HostIp::Text(_) => None,
        }
    }

    pub fn ip(&self) -> HostIp<'_> {
        match self.rare.as_deref().and_then(|r| r.ip.as_deref()) {
            Some(text) => HostIp::Text(text),
            None => HostIp::V4(self.ipv4),
        }
    }

    pub fn ipv6(&self) -> &str {
        self.rare.as_deref().map_or("", |r| &r.ipv6)
    }

    /// Empty when absent or when it is the agent id (that is in `Inventory::ids`).
    pub fn bk_agent_id(&self) -> &str {
        self.rare.as_deref().map_or("", |r| &r.bk_agent_id)
    }

    fn profile<'a>(&'a self, table: &'a [Profile]) -> Option<&'a Profile> {
        table
            .get(self.profile as usize)
            .or_else(|| self.rare.as_deref()?.profile.as_ref())
    }

    /// The row read with its inventory's profile `table`.
    pub(super) fn view<'a>(&'a self, table: &'a [Profile]) -> HostRef<'a> {
        let p = self.profile(table);
        HostRef {
            host_id: self.host_id,
            cloud_id: self.cloud_id,
            biz_id: self.biz_id,
            ip: self.ip(),
            ipv6: self.ipv6(),
            bk_agent_id: self.bk_agent_id(),
            os_type: p.map_or("", |p| &p.os_type),
            nodeman_status: p.map_or("", |p| &p.nodeman_status),
        }
    }

    /// The host back as the parsers gave it (but an empty `bk_agent_id` when it was the
    /// agent id); for the rare host that leaves the watched list.
    pub(super) fn to_host(&self, table: &[Profile]) -> Host {
        let p = self.profile(table).cloned().unwrap_or_default();
        Host {
            host_id: self.host_id,
            cloud_id: self.cloud_id,
            biz_id: self.biz_id,
            ip: self.ip().to_string(),
            ipv6: self.ipv6().to_owned(),
            bk_agent_id: self.bk_agent_id().to_owned(),
            os_type: p.os_type,
            nodeman_status: p.nodeman_status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(ip: &str, ipv6: &str, bk_agent_id: &str) -> Host {
        Host {
            host_id: 7,
            cloud_id: 2,
            biz_id: 3,
            ip: ip.to_owned(),
            ipv6: ipv6.to_owned(),
            bk_agent_id: bk_agent_id.to_owned(),
            os_type: "LINUX".into(),
            nodeman_status: "RUNNING".into(),
        }
    }

    fn pack(h: &Host, agent_id: &str) -> (HostRow, Vec<Profile>) {
        let mut profiles = Interner::default();
        let row = HostRow::pack(h.clone(), agent_id, &mut profiles);
        (row, profiles.finish())
    }

    #[test]
    fn an_ipv4_host_watched_under_its_bk_agent_id_has_no_box() {
        let h = host("10.0.0.1", "", "agent-1");
        let (row, table) = pack(&h, "agent-1");
        assert!(row.rare.is_none());
        assert_eq!(row.ipv4(), Some(Ipv4Addr::new(10, 0, 0, 1)));
        let v = row.view(&table);
        assert_eq!((v.host_id, v.cloud_id, v.biz_id), (7, 2, 3));
        assert_eq!(
            (v.ip.to_string().as_str(), v.ipv6, v.bk_agent_id),
            ("10.0.0.1", "", "")
        );
        assert_eq!((v.os_type, v.nodeman_status), ("LINUX", "RUNNING"));
    }

    #[test]
    fn a_legacy_host_without_bk_agent_id_has_no_box() {
        let (row, _) = pack(&host("10.0.0.1", "", ""), "2:10.0.0.1");
        assert!(row.rare.is_none());
    }

    #[test]
    fn a_host_unpacks_as_it_was_packed_but_for_a_bk_agent_id_equal_to_the_agent_id() {
        for (h, id) in [
            (host("10.0.0.1", "", "agent-1"), "agent-1"),
            (host("10.0.0.1", "fe80::1", ""), "2:10.0.0.1"),
            (host("", "fe80::1", "agent-1"), "agent-1"),
            (host("fe80::2", "", "agent-1"), "agent-1"),
            // Not canonical IPv4: kept as text, never rewritten to "1.2.3.4".
            (host("01.2.3.4", "", "agent-1"), "agent-1"),
            (host("10.0.0.1 ", "", "agent-1"), "agent-1"),
            (host("10.0.0.1", "", " agent-1 "), "agent-1"),
            (host("0.0.0.0", "", "agent-1"), "agent-1"),
        ] {
            let (row, table) = pack(&h, id);
            let mut want = h.clone();
            if want.bk_agent_id == id {
                want.bk_agent_id.clear();
            }
            assert_eq!(row.to_host(&table), want, "{h:?}");
            assert_eq!(
                row.ipv4(),
                h.ip.parse::<Ipv4Addr>().ok(),
                "{h:?}: ipv4 only when ip is one"
            );
            assert_eq!(row.ip().to_string(), h.ip);
        }
    }

    #[test]
    fn a_profile_the_table_could_not_take_stays_with_the_host() {
        let h = host("10.0.0.1", "", "agent-1");
        let mut row = pack(&h, "agent-1").0;
        row.profile = u32::MAX;
        row.rare = Some(Box::new(Rare {
            ip: None,
            ipv6: "".into(),
            bk_agent_id: "".into(),
            profile: Some(Profile {
                os_type: "AIX".into(),
                nodeman_status: "".into(),
            }),
        }));
        assert_eq!(row.view(&[]).os_type, "AIX");
        assert_eq!(row.ipv4(), Some(Ipv4Addr::new(10, 0, 0, 1)));
    }
}
