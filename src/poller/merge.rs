//! Merging an inventory host with what GSE (and NodeMan plugins, agent info) said into
//! one agent state (a borrowed [`AgentView`] until something changed).

use std::collections::BTreeMap;

use crate::{
    proto::v1::{AgentInfo, PluginState},
    snapshot::{
        view::{AgentView, IpRef, NO_PLUGINS},
        StatusNames,
    },
    sources::{
        gse::{GseAgentState, GseApi, STATUS_NOT_FOUND, STATUS_RUNNING},
        inventory::{HostIp, HostRef},
    },
};

/// Everything known about one agent in this sweep besides its host record.
pub struct Observed<'a> {
    /// `None` when a *successful* GSE answer did not mention the agent (or GSE said
    /// 1011003): the agent is not found (-2). Failed queries never get here.
    pub gse: Option<&'a GseAgentState>,
    /// Which API answered.
    pub api: GseApi,
    pub plugins: Option<&'a BTreeMap<String, PluginState>>,
    pub info: Option<&'a AgentInfo>,
    /// Version from agent info, used when the status API has none (GSE 1.x).
    pub info_version: Option<&'a str>,
}

/// Borrows everything it can: the sweep compares the result with the snapshot and
/// allocates an owned state only when something changed.
pub fn merge<'a>(
    agent_id: &'a str,
    host: HostRef<'a>,
    seen: &Observed<'a>,
    names: &'a StatusNames,
    now_ms: i64,
) -> AgentView<'a> {
    let (status_code, mut version, run_mode, v1_agent_alive) = match seen.gse {
        Some(g) => (g.status_code, g.version.as_str(), g.run_mode, g.v1_alive),
        None => (STATUS_NOT_FOUND, "", 0, None),
    };
    if version.is_empty() && seen.gse.is_some() {
        if let Some(v) = seen.info_version {
            version = v;
        }
    }
    AgentView {
        agent_id,
        host_id: host.host_id,
        cloud_id: host.cloud_id,
        biz_id: host.biz_id,
        // An IPv4 address goes to the snapshot as 4 bytes, not text to parse again.
        ip: match host.ip {
            HostIp::V4(a) => IpRef::V4(a),
            HostIp::Text(s) => IpRef::Text(s),
        },
        status_code,
        status: names.name(status_code),
        alive: status_code == STATUS_RUNNING,
        version,
        run_mode,
        nodeman_status: host.nodeman_status,
        os_type: host.os_type,
        observed_at_ms: now_ms,
        status_api: seen.api.label(),
        v1_agent_alive,
        info: seen.info,
        plugins: seen.plugins.unwrap_or(&NO_PLUGINS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(gse: Option<&GseAgentState>) -> Observed<'_> {
        Observed {
            gse,
            api: GseApi::V2,
            plugins: None,
            info: None,
            info_version: None,
        }
    }

    fn gse(code: i32) -> GseAgentState {
        GseAgentState {
            agent_id: "a".into(),
            cloud_id: 0,
            version: "2.1.5".into(),
            run_mode: 1,
            status_code: code,
            v1_alive: None,
        }
    }

    #[test]
    fn an_agent_gse_does_not_mention_is_not_found_and_not_alive() {
        let (host, names) = (HostRef::default(), StatusNames::default());
        let s = merge("a", host, &seen(None), &names, 5);
        assert_eq!((s.status_code, s.status, s.alive), (-2, "not_found", false));
        assert_eq!(s.status_api, "v2");
    }

    #[test]
    fn only_status_code_2_is_alive_and_the_raw_code_is_kept() {
        let (host, names) = (HostRef::default(), StatusNames::default());
        for code in -2..=8 {
            let g = gse(code);
            let s = merge("a", host, &seen(Some(&g)), &names, 5);
            assert_eq!(s.alive, code == 2);
            assert_eq!(s.status_code, code);
        }
        let g = gse(42);
        assert_eq!(
            merge("a", host, &seen(Some(&g)), &names, 5).status,
            "unknown"
        );
    }

    #[test]
    fn gse_v1_offline_is_minus_3_named_offline_with_the_raw_value_kept() {
        let g = GseAgentState {
            status_code: crate::sources::gse::STATUS_V1_OFFLINE,
            v1_alive: Some(0),
            version: String::new(),
            ..gse(0)
        };
        let mut o = seen(Some(&g));
        o.api = GseApi::V1;
        o.info_version = Some("1.7.17");
        let (host, names) = (HostRef::default(), StatusNames::default());
        let s = merge("a", host, &o, &names, 5);
        assert_eq!((s.status_code, s.status, s.alive), (-3, "offline", false));
        assert_eq!(s.v1_agent_alive, Some(0));
        assert_eq!(s.status_api, "v1");
        assert_eq!(s.version, "1.7.17", "v1 version comes from agent info");
    }
}
