//! [`AgentView`]: an agent's state as borrowed references, so a sweep can compare an
//! observation with the snapshot without allocating; an owned `AgentState` is built
//! only when something changed.

use std::collections::BTreeMap;

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
    pub ip: &'a str,
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
            ip: self.ip.to_owned(),
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
            ip: &self.ip,
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
