//! Merging an inventory host with its GSE answer into one `AgentState`.

use crate::{
    proto::v1::AgentState,
    snapshot::StatusNames,
    sources::{
        gse::{GseAgentState, STATUS_NOT_FOUND, STATUS_RUNNING},
        inventory::Host,
    },
};

/// `gse` is `None` when a *successful* GSE answer did not mention the agent (or GSE
/// said 1011003): the agent is not found (-2). Failed queries never get here.
pub fn merge(
    agent_id: &str,
    host: &Host,
    gse: Option<&GseAgentState>,
    names: &StatusNames,
    now_ms: i64,
) -> AgentState {
    let (status_code, version, run_mode) = match gse {
        Some(g) => (g.status_code, g.version.clone(), g.run_mode),
        None => (STATUS_NOT_FOUND, String::new(), 0),
    };
    AgentState {
        agent_id: agent_id.to_owned(),
        host_id: host.host_id,
        cloud_id: host.cloud_id,
        biz_id: host.biz_id,
        ip: host.ip.clone(),
        status_code,
        status: names.name(status_code).to_owned(),
        alive: status_code == STATUS_RUNNING,
        version,
        run_mode,
        nodeman_status: host.nodeman_status.clone(),
        os_type: host.os_type.clone(),
        observed_at_ms: now_ms,
        ..AgentState::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_gse_does_not_mention_is_not_found_and_not_alive() {
        let s = merge("a", &Host::default(), None, &StatusNames::default(), 5);
        assert_eq!(
            (s.status_code, s.status.as_str(), s.alive),
            (-2, "not_found", false)
        );
    }

    #[test]
    fn only_status_code_2_is_alive() {
        let names = StatusNames::default();
        for code in -2..=8 {
            let g = GseAgentState {
                agent_id: "a".into(),
                cloud_id: 0,
                version: "2.1.5".into(),
                run_mode: 1,
                status_code: code,
            };
            let s = merge("a", &Host::default(), Some(&g), &names, 5);
            assert_eq!(s.alive, code == 2);
            assert_eq!(s.status_code, code, "raw code is kept");
        }
        let g = GseAgentState {
            agent_id: "a".into(),
            cloud_id: 0,
            version: String::new(),
            run_mode: 0,
            status_code: 42,
        };
        assert_eq!(
            merge("a", &Host::default(), Some(&g), &names, 5).status,
            "unknown"
        );
    }
}
