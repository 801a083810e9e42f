//! The diff: a pure comparison of two observations of one agent.
//!
//! Every `AgentState` field is tracked except `observed_at_ms`, which changes on every
//! sweep and would otherwise turn each sweep into an event per agent.

use crate::proto::v1::AgentState;

/// Names of the tracked fields that differ between `before` and `after`, in .proto
/// order. Empty means "no change". Allocates only when something changed.
pub fn changed_fields(before: &AgentState, after: &AgentState) -> Vec<&'static str> {
    let mut out = Vec::new();
    macro_rules! cmp {
        ($($f:ident),*) => {
            $( if before.$f != after.$f { out.push(stringify!($f)); } )*
        };
    }
    cmp!(
        agent_id,
        host_id,
        cloud_id,
        biz_id,
        ip,
        status_code,
        status,
        alive,
        version,
        run_mode,
        nodeman_status,
        os_type
    );
    out
}

/// True when any tracked field differs. Allocation-free: this runs once per agent per
/// sweep.
pub fn differs(before: &AgentState, after: &AgentState) -> bool {
    before.agent_id != after.agent_id
        || before.host_id != after.host_id
        || before.cloud_id != after.cloud_id
        || before.biz_id != after.biz_id
        || before.ip != after.ip
        || before.status_code != after.status_code
        || before.status != after.status
        || before.alive != after.alive
        || before.version != after.version
        || before.run_mode != after.run_mode
        || before.nodeman_status != after.nodeman_status
        || before.os_type != after.os_type
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AgentState {
        AgentState {
            agent_id: "a1".into(),
            host_id: 7,
            cloud_id: 0,
            biz_id: 2,
            ip: "10.0.0.1".into(),
            status_code: 2,
            status: "running".into(),
            alive: true,
            version: "2.1.5".into(),
            run_mode: 0,
            nodeman_status: "RUNNING".into(),
            os_type: "LINUX".into(),
            observed_at_ms: 1,
        }
    }

    #[test]
    fn identical_states_do_not_differ() {
        assert!(!differs(&state(), &state()));
        assert!(changed_fields(&state(), &state()).is_empty());
    }

    #[test]
    fn a_new_observation_time_alone_is_not_a_change() {
        let mut b = state();
        b.observed_at_ms = 99;
        assert!(!differs(&state(), &b));
    }

    #[test]
    fn a_status_change_names_every_field_that_moved() {
        let mut b = state();
        b.status_code = 3;
        b.status = "lossy".into();
        b.alive = false;
        assert!(differs(&state(), &b));
        assert_eq!(
            changed_fields(&state(), &b),
            vec!["status_code", "status", "alive"]
        );
    }

    #[test]
    fn inventory_fields_are_tracked_too() {
        let mut b = state();
        b.biz_id = 3;
        b.version = "2.1.6".into();
        assert_eq!(changed_fields(&state(), &b), vec!["biz_id", "version"]);
    }
}
