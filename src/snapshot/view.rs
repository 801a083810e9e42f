//! [`AgentView`]: an agent's state as borrowed references, so a sweep can compare an
//! observation with the snapshot without allocating; an owned `AgentState` is built
//! only when something changed.

use std::{collections::BTreeMap, fmt, net::Ipv4Addr};

use crate::proto::v1::{AgentInfo, AgentState, PluginState};

/// No plugins (shared, so a view never needs an owned empty map).
pub static NO_PLUGINS: BTreeMap<String, PluginState> = BTreeMap::new();

/// The fields of `AgentState`, borrowed. Field meanings: see the .proto.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AgentView<'a> {
    pub agent_id: &'a str,
    pub host_id: i64,
    pub cloud_id: i64,
    pub biz_id: i64,
    pub ip: IpRef<'a>,
    pub status_code: i32,
    pub status: &'a str,
    pub alive: bool,
    pub version: &'a str,
    pub run_mode: i32,
    pub nodeman_status: &'a str,
    pub os_type: &'a str,
    pub observed_at_ms: i64,
    pub status_api: &'a str,
    pub v1_agent_alive: Option<i32>,
    pub info: Option<&'a AgentInfo>,
    pub plugins: &'a BTreeMap<String, PluginState>,
}

impl AgentView<'_> {
    /// The owned state (allocates: only for changes).
    pub fn to_state(&self) -> AgentState {
        AgentState {
            agent_id: self.agent_id.to_owned(),
            host_id: self.host_id,
            cloud_id: self.cloud_id,
            biz_id: self.biz_id,
            ip: self.ip.to_string(),
            status_code: self.status_code,
            status: self.status.to_owned(),
            alive: self.alive,
            version: self.version.to_owned(),
            run_mode: self.run_mode,
            nodeman_status: self.nodeman_status.to_owned(),
            os_type: self.os_type.to_owned(),
            observed_at_ms: self.observed_at_ms,
            status_api: self.status_api.to_owned(),
            v1_agent_alive: self.v1_agent_alive,
            info: self.info.cloned(),
            plugins: self.plugins.clone(),
        }
    }
}

/// An agent's IP as text, or as the IPv4 address the snapshot keeps inline (no heap
/// block, no pointer to follow when comparing).
///
/// Equality is that of the text: Rust's IPv4 parser accepts only the canonical
/// dotted-decimal form (no leading zeros, four parts), so `"10.0.0.1"` equals
/// `V4(10.0.0.1)` and nothing else does.
#[derive(Debug, Clone, Copy)]
pub enum IpRef<'a> {
    Text(&'a str),
    V4(Ipv4Addr),
}

impl PartialEq for IpRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (IpRef::Text(a), IpRef::Text(b)) => a == b,
            (IpRef::V4(a), IpRef::V4(b)) => a == b,
            (IpRef::Text(s), IpRef::V4(a)) | (IpRef::V4(a), IpRef::Text(s)) => {
                s.parse::<Ipv4Addr>().is_ok_and(|p| p == *a)
            }
        }
    }
}

impl fmt::Display for IpRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpRef::Text(s) => f.write_str(s),
            IpRef::V4(a) => a.fmt(f),
        }
    }
}

/// Borrowing an owned state.
pub trait View {
    fn view(&self) -> AgentView<'_>;
}

impl View for AgentState {
    fn view(&self) -> AgentView<'_> {
        AgentView {
            agent_id: &self.agent_id,
            host_id: self.host_id,
            cloud_id: self.cloud_id,
            biz_id: self.biz_id,
            ip: IpRef::Text(&self.ip),
            status_code: self.status_code,
            status: &self.status,
            alive: self.alive,
            version: &self.version,
            run_mode: self.run_mode,
            nodeman_status: &self.nodeman_status,
            os_type: &self.os_type,
            observed_at_ms: self.observed_at_ms,
            status_api: &self.status_api,
            v1_agent_alive: self.v1_agent_alive,
            info: self.info.as_ref(),
            plugins: &self.plugins,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_address_equals_exactly_its_canonical_text() {
        let a = IpRef::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(a, IpRef::Text("10.0.0.1"));
        assert_eq!(IpRef::Text("10.0.0.1"), a);
        for other in [
            "010.0.0.1",
            "10.0.0.01",
            "10.0.0.1 ",
            " 10.0.0.1",
            "10.0.1",
            "",
            "::1",
        ] {
            assert_ne!(a, IpRef::Text(other), "{other:?}");
            assert_ne!(IpRef::Text(other), a, "{other:?}");
        }
        assert_eq!(a.to_string(), "10.0.0.1");
    }
}
