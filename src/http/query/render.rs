//! JSON shapes of the query API (documented in `docs/openapi.yaml`) and the chunked
//! writers that stream large answers.
//!
//! The agent state is written with plain JSON numbers and snake_case names — unlike
//! the proto3 JSON mapping of the Kafka `json` format, which writes 64-bit integers as
//! strings — because callers of this API (bk-monitor's host views) use host, cloud
//! and business ids as numbers.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ShardInfo;
use crate::{
    proto::v1::{AgentInfo, AgentState, PluginState},
    snapshot::{AgentRecord, Summary, UNKNOWN},
};

/// What every body says about the shard that answered.
#[derive(Debug, Serialize)]
pub(super) struct ShardView {
    index: u32,
    total: u32,
    /// True when the answer covers only this shard's agents.
    partial: bool,
}

impl From<ShardInfo> for ShardView {
    fn from(s: ShardInfo) -> Self {
        ShardView {
            index: s.index,
            total: s.total,
            partial: s.total > 1,
        }
    }
}

#[derive(Serialize)]
struct InfoView<'a> {
    parent_ip: &'a str,
    parent_port: i32,
    report_time_ms: i64,
    start_time_ms: i64,
    cpu_rate: f64,
    mem_rate: f64,
}

#[derive(Serialize)]
struct PluginView<'a> {
    status: &'a str,
    version: &'a str,
}

#[derive(Serialize)]
struct StateView<'a> {
    agent_id: &'a str,
    host_id: i64,
    cloud_id: i64,
    biz_id: i64,
    ip: &'a str,
    status_code: i32,
    status: &'a str,
    alive: bool,
    version: &'a str,
    run_mode: i32,
    nodeman_status: &'a str,
    os_type: &'a str,
    observed_at_ms: i64,
    status_api: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    v1_agent_alive: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<InfoView<'a>>,
    plugins: BTreeMap<&'a str, PluginView<'a>>,
}

impl<'a> StateView<'a> {
    fn of(s: &'a AgentState) -> Self {
        StateView {
            agent_id: &s.agent_id,
            host_id: s.host_id,
            cloud_id: s.cloud_id,
            biz_id: s.biz_id,
            ip: &s.ip,
            status_code: s.status_code,
            status: &s.status,
            alive: s.alive,
            version: &s.version,
            run_mode: s.run_mode,
            nodeman_status: &s.nodeman_status,
            os_type: &s.os_type,
            observed_at_ms: s.observed_at_ms,
            status_api: &s.status_api,
            v1_agent_alive: s.v1_agent_alive,
            info: s.info.as_ref().map(|i: &'a AgentInfo| InfoView {
                parent_ip: &i.parent_ip,
                parent_port: i.parent_port,
                report_time_ms: i.report_time_ms,
                start_time_ms: i.start_time_ms,
                cpu_rate: i.cpu_rate,
                mem_rate: i.mem_rate,
            }),
            plugins: s
                .plugins
                .iter()
                .map(|(k, p): (&'a String, &'a PluginState)| {
                    (
                        k.as_str(),
                        PluginView {
                            status: &p.status,
                            version: &p.version,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// One agent as every route reports it (schema `AgentRecord`).
#[derive(Serialize)]
pub(super) struct RecordView<'a> {
    agent_id: &'a str,
    status: &'a str,
    alive: bool,
    /// The last GSE query for this agent failed: `state` is older than the last sweep.
    stale: bool,
    /// `state` is not yet acknowledged by Kafka.
    pending: bool,
    seq: u64,
    incarnation_ms: i64,
    observed_at_ms: Option<i64>,
    age_seconds: Option<f64>,
    state: StateView<'a>,
}

impl<'a> RecordView<'a> {
    pub(super) fn of(r: &'a AgentRecord, now_ms: i64) -> Self {
        let observed = (r.observed_at_ms > 0).then_some(r.observed_at_ms);
        RecordView {
            agent_id: &r.state.agent_id,
            status: &r.state.status,
            alive: r.state.alive,
            stale: r.stale,
            pending: r.pending,
            seq: r.seq,
            incarnation_ms: r.incarnation_ms,
            observed_at_ms: observed,
            // Milliseconds precision; never negative when clocks disagree slightly.
            age_seconds: observed.map(|t| (now_ms - t).max(0) as f64 / 1000.0),
            state: StateView::of(&r.state),
        }
    }
}

/// One entry of a status batch the agent of which is known (schema `StatusFound`).
#[derive(Serialize)]
struct FoundView<'a, Q: Serialize> {
    query: &'a Q,
    found: bool,
    #[serde(flatten)]
    record: RecordView<'a>,
}

/// One entry of a status batch this shard does not know (schema `StatusUnknown`).
#[derive(Serialize)]
struct UnknownView<'a, Q: Serialize> {
    query: &'a Q,
    found: bool,
    status: &'static str,
}

/// Appends one batch result; `unknown` (never a guess like "offline") when the agent
/// is not in this shard's snapshot.
pub(super) fn write_result<Q: Serialize>(
    out: &mut Vec<u8>,
    query: &Q,
    record: Option<&AgentRecord>,
    now_ms: i64,
) {
    match record {
        Some(r) => write_json(
            out,
            &FoundView {
                query,
                found: true,
                record: RecordView::of(r, now_ms),
            },
        ),
        None => write_json(
            out,
            &UnknownView {
                query,
                found: false,
                status: UNKNOWN,
            },
        ),
    }
}

pub(super) fn write_record(out: &mut Vec<u8>, r: &AgentRecord, now_ms: i64) {
    write_json(out, &RecordView::of(r, now_ms));
}

/// `GET /api/v1/agents/{id}`: the record plus the shard.
#[derive(Serialize)]
pub(super) struct AgentBody<'a> {
    pub shard: ShardView,
    #[serde(flatten)]
    pub record: RecordView<'a>,
}

#[derive(Serialize)]
pub(super) struct SummaryBody<'a> {
    pub shard: ShardView,
    pub total: u64,
    pub stale: u64,
    pub pending: u64,
    pub by_status: &'a BTreeMap<String, u64>,
    /// Keys are business ids as strings (JSON object keys).
    pub by_biz: &'a BTreeMap<i64, u64>,
    pub by_cloud: &'a BTreeMap<i64, u64>,
}

impl<'a> SummaryBody<'a> {
    pub(super) fn of(shard: ShardInfo, s: &'a Summary) -> Self {
        SummaryBody {
            shard: shard.into(),
            total: s.total,
            stale: s.stale,
            pending: s.pending,
            by_status: &s.by_status,
            by_biz: &s.by_biz,
            by_cloud: &s.by_cloud,
        }
    }
}

/// Serializing these views into a `Vec` cannot fail: every map key is a string or an
/// integer, and there is no I/O.
pub(super) fn write_json(out: &mut Vec<u8>, v: &impl Serialize) {
    serde_json::to_writer(out, v).expect("query API views always serialize");
}

pub(super) fn to_json(v: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::new();
    write_json(&mut out, v);
    out
}
