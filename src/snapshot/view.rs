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
        let mut out = AgentState::default();
        self.write_to(&mut out);
        out
    }

    /// Overwrites `out` with this state, reusing its strings' buffers: the sink fills
    /// one message per record this way instead of allocating each string anew.
    pub fn write_to(&self, out: &mut AgentState) {
        fn set(s: &mut String, v: &str) {
            s.clear();
            s.push_str(v);
        }
        set(&mut out.agent_id, self.agent_id);
        out.host_id = self.host_id;
        out.cloud_id = self.cloud_id;
        out.biz_id = self.biz_id;
        out.ip.clear();
        // Writing to a String cannot fail.
        let _ = fmt::Write::write_fmt(&mut out.ip, format_args!("{}", self.ip));
        out.status_code = self.status_code;
        set(&mut out.status, self.status);
        out.alive = self.alive;
        set(&mut out.version, self.version);
        out.run_mode = self.run_mode;
        set(&mut out.nodeman_status, self.nodeman_status);
        set(&mut out.os_type, self.os_type);
        out.observed_at_ms = self.observed_at_ms;
        set(&mut out.status_api, self.status_api);
        out.v1_agent_alive = self.v1_agent_alive;
        out.info = self.info.cloned();
        out.plugins.clone_from(self.plugins);
        // Every field is set above: this stops compiling when the message gains one.
        let AgentState {
            agent_id: _,
            host_id: _,
            cloud_id: _,
            biz_id: _,
            ip: _,
            status_code: _,
            status: _,
            alive: _,
            version: _,
            run_mode: _,
            nodeman_status: _,
            os_type: _,
            observed_at_ms: _,
            status_api: _,
            v1_agent_alive: _,
            info: _,
            plugins: _,
        } = out;
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
    fn a_state_written_over_another_equals_the_state_itself() {
        let mut plugins = BTreeMap::new();
        plugins.insert("bkmonitorbeat".to_owned(), PluginState::default());
        let full = AgentState {
            agent_id: "a-much-longer-agent-id".into(),
            host_id: 9,
            ip: "fe80::1".into(),
            status: "running".into(),
            version: "2.1.5".into(),
            info: Some(AgentInfo::default()),
            plugins,
            v1_agent_alive: Some(1),
            ..AgentState::default()
        };
        let small = AgentState {
            agent_id: "b".into(),
            ip: "10.0.0.1".into(),
            ..AgentState::default()
        };
        let mut out = full.clone();
        small.view().write_to(&mut out);
        assert_eq!(out, small);
        full.view().write_to(&mut out);
        assert_eq!(out, full);
        assert_eq!(full.view().to_state(), full);
    }

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
