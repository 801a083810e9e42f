//! The diff: a pure comparison of two observations of one agent.
//!
//! Tracked: every top-level `AgentState` field except `observed_at_ms` (it changes on
//! every sweep and would turn each sweep into an event per agent), every plugin's
//! status and version, and the agent-info fields chosen in `gse.tracked_info_fields`.
//! Info fields not chosen (by default report time, CPU and memory) are carried along
//! in events without producing any.

use std::collections::BTreeMap;

use super::view::{AgentView, View};
use crate::proto::v1::{AgentInfo, AgentState, PluginState};

/// Agent-info fields that can be tracked, by the name used in config and in
/// `changed_fields` (as `info.<name>`).
pub const INFO_FIELDS: &[&str] = &[
    "parent_ip",
    "parent_port",
    "report_time",
    "start_time",
    "cpu_rate",
    "mem_rate",
];

/// Which agent-info fields produce update events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackedInfo {
    pub parent_ip: bool,
    pub parent_port: bool,
    pub report_time: bool,
    pub start_time: bool,
    pub cpu_rate: bool,
    pub mem_rate: bool,
}

impl Default for TrackedInfo {
    /// Where the agent reports to and when it (re)started are worth an event; the
    /// heartbeat time and resource usage change constantly and are only carried.
    fn default() -> Self {
        TrackedInfo {
            parent_ip: true,
            parent_port: true,
            report_time: false,
            start_time: true,
            cpu_rate: false,
            mem_rate: false,
        }
    }
}

impl TrackedInfo {
    /// From config names (validated against [`INFO_FIELDS`] at load).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> TrackedInfo {
        let has = |n: &str| names.iter().any(|x| x.as_ref() == n);
        TrackedInfo {
            parent_ip: has("parent_ip"),
            parent_port: has("parent_port"),
            report_time: has("report_time"),
            start_time: has("start_time"),
            cpu_rate: has("cpu_rate"),
            mem_rate: has("mem_rate"),
        }
    }
}

/// The comparison, configured with the tracked info fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct Diff {
    pub info: TrackedInfo,
}

/// Calls `$on(name)` for each differing top-level field; the one list of tracked core
/// fields, shared by the allocation-free check and the naming pass.
macro_rules! core_fields {
    ($a:expr, $b:expr, $on:expr) => {{
        let (a, b) = ($a, $b);
        let mut on = $on;
        core_fields!(@each a, b, on; agent_id, host_id, cloud_id, biz_id, ip, status_code,
            status, alive, version, run_mode, nodeman_status, os_type, status_api,
            v1_agent_alive)
    }};
    (@each $a:ident, $b:ident, $on:ident; $($f:ident),*) => {{
        $( if $a.$f != $b.$f && $on(stringify!($f)) { return true; } )*
        false
    }};
}

impl Diff {
    /// True when any tracked field differs. Allocation-free: this runs once per agent
    /// per sweep.
    pub fn differs_view(&self, a: &AgentView<'_>, b: &AgentView<'_>) -> bool {
        self.visit(a, b, &mut |_| true)
    }

    pub fn differs(&self, a: &AgentState, b: &AgentState) -> bool {
        self.differs_view(&a.view(), &b.view())
    }

    /// Names of the tracked fields that differ, in .proto order; nested ones dotted
    /// (`info.parent_ip`, `plugins.<name>.status`). Empty means "no change".
    pub fn changed_fields(&self, a: &AgentState, b: &AgentState) -> Vec<String> {
        self.changed_fields_view(&a.view(), &b.view())
    }

    /// [`Diff::changed_fields`] of two borrowed states.
    pub fn changed_fields_view(&self, a: &AgentView<'_>, b: &AgentView<'_>) -> Vec<String> {
        let mut out = Vec::new();
        self.changed_fields_into(a, b, &mut out);
        out
    }

    /// [`Diff::changed_fields_view`] written over `out`, reusing its strings.
    pub fn changed_fields_into(&self, a: &AgentView<'_>, b: &AgentView<'_>, out: &mut Vec<String>) {
        use std::fmt::Write;
        let mut n = 0;
        self.visit(a, b, &mut |f: Field<'_>| {
            if n == out.len() {
                out.push(String::new());
            }
            out[n].clear();
            // Writing to a String cannot fail.
            let _ = write!(out[n], "{f}");
            n += 1;
            false
        });
        out.truncate(n);
    }

    /// Reports each differing field to `on`; stops early when `on` returns true.
    /// Returns whether it stopped early.
    fn visit(
        &self,
        a: &AgentView<'_>,
        b: &AgentView<'_>,
        on: &mut dyn FnMut(Field<'_>) -> bool,
    ) -> bool {
        if core_fields!(a, b, |n| on(Field::Core(n))) {
            return true;
        }
        if self.visit_info(a.info, b.info, on) {
            return true;
        }
        visit_plugins(a.plugins, b.plugins, on)
    }

    fn visit_info(
        &self,
        a: Option<&AgentInfo>,
        b: Option<&AgentInfo>,
        on: &mut dyn FnMut(Field<'_>) -> bool,
    ) -> bool {
        // Most deployments do not fetch agent info (both absent), and most agents' info
        // is unchanged: neither case needs the per-field walk. This runs for every
        // agent in every sweep.
        if a == b {
            return false;
        }
        let none = AgentInfo::default();
        let (a, b) = (a.unwrap_or(&none), b.unwrap_or(&none));
        let t = self.info;
        // Each comparison only for a tracked field, and in .proto order.
        (t.parent_ip && a.parent_ip != b.parent_ip && on(Field::Info("parent_ip")))
            || (t.parent_port && a.parent_port != b.parent_port && on(Field::Info("parent_port")))
            || (t.report_time
                && a.report_time_ms != b.report_time_ms
                && on(Field::Info("report_time")))
            || (t.start_time && a.start_time_ms != b.start_time_ms && on(Field::Info("start_time")))
            || (t.cpu_rate && a.cpu_rate != b.cpu_rate && on(Field::Info("cpu_rate")))
            || (t.mem_rate && a.mem_rate != b.mem_rate && on(Field::Info("mem_rate")))
    }
}

fn visit_plugins(
    a: &BTreeMap<String, PluginState>,
    b: &BTreeMap<String, PluginState>,
    on: &mut dyn FnMut(Field<'_>) -> bool,
) -> bool {
    if a == b {
        return false;
    }
    for (name, pa) in a {
        let stop = match b.get(name) {
            None => on(Field::Plugin(name, "removed")),
            Some(pb) => {
                (pa.status != pb.status && on(Field::Plugin(name, "status")))
                    || (pa.version != pb.version && on(Field::Plugin(name, "version")))
            }
        };
        if stop {
            return true;
        }
    }
    b.keys()
        .filter(|name| !a.contains_key(*name))
        .any(|name| on(Field::Plugin(name, "added")))
}

/// One changed field.
#[derive(Debug, Clone, Copy)]
enum Field<'a> {
    Core(&'static str),
    Info(&'static str),
    /// Plugin name and what changed: status, version, added, removed.
    Plugin(&'a str, &'static str),
}

impl std::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Core(n) => f.write_str(n),
            Field::Info(n) => write!(f, "info.{n}"),
            Field::Plugin(p, what) => write!(f, "plugins.{p}.{what}"),
        }
    }
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
            status_api: "v2".into(),
            ..AgentState::default()
        }
    }

    fn d() -> Diff {
        Diff::default()
    }

    #[test]
    fn identical_states_do_not_differ() {
        assert!(!d().differs(&state(), &state()));
        assert!(d().changed_fields(&state(), &state()).is_empty());
    }

    #[test]
    fn a_new_observation_time_alone_is_not_a_change() {
        let mut b = state();
        b.observed_at_ms = 99;
        assert!(!d().differs(&state(), &b));
    }

    #[test]
    fn a_status_change_names_every_field_that_moved() {
        let mut b = state();
        b.status_code = 3;
        b.status = "lossy".into();
        b.alive = false;
        assert!(d().differs(&state(), &b));
        assert_eq!(
            d().changed_fields(&state(), &b),
            ["status_code", "status", "alive"]
        );
    }

    #[test]
    fn inventory_fields_are_tracked_too() {
        let mut b = state();
        b.biz_id = 3;
        b.version = "2.1.6".into();
        assert_eq!(d().changed_fields(&state(), &b), ["biz_id", "version"]);
    }

    #[test]
    fn cpu_and_memory_are_carried_not_diffed_by_default() {
        let mut b = state();
        b.info = Some(AgentInfo {
            cpu_rate: 12.5,
            mem_rate: 40.0,
            report_time_ms: 5,
            ..AgentInfo::default()
        });
        assert!(!d().differs(&state(), &b));
        let all = Diff {
            info: TrackedInfo::from_names(INFO_FIELDS),
        };
        assert_eq!(
            all.changed_fields(&state(), &b),
            ["info.report_time", "info.cpu_rate", "info.mem_rate"]
        );
    }

    #[test]
    fn a_restart_or_a_new_parent_is_an_update_by_default() {
        let mut b = state();
        b.info = Some(AgentInfo {
            parent_ip: "10.0.0.9".into(),
            start_time_ms: 1000,
            ..AgentInfo::default()
        });
        assert_eq!(
            d().changed_fields(&state(), &b),
            ["info.parent_ip", "info.start_time"]
        );
    }

    #[test]
    fn plugin_changes_name_the_plugin_and_what_changed() {
        let plug = |s: &str, v: &str| PluginState {
            status: s.into(),
            version: v.into(),
        };
        let mut a = state();
        a.plugins
            .insert("bkmonitorbeat".into(), plug("RUNNING", "3.1"));
        a.plugins
            .insert("bkunifylogbeat".into(), plug("RUNNING", "7.2"));
        let mut b = a.clone();
        b.plugins
            .insert("bkmonitorbeat".into(), plug("TERMINATED", "3.1"));
        b.plugins.remove("bkunifylogbeat");
        b.plugins
            .insert("gsecmdline".into(), plug("RUNNING", "2.0"));
        assert!(d().differs(&a, &b));
        assert_eq!(
            d().changed_fields(&a, &b),
            [
                "plugins.bkmonitorbeat.status",
                "plugins.bkunifylogbeat.removed",
                "plugins.gsecmdline.added"
            ]
        );
    }
}
