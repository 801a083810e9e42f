//! GSE agent details: 2.0 `cluster/list_agent_info` (bk-api.md §1.2) and the 1.x ESB
//! `gse/get_agent_info/` (§2.2).
//!
//! The parent (proxy or GSE server) and the start time are truth, changed only through the
//! control API. The heartbeat time and CPU/memory usage are readings: fresh on every request,
//! so a poller sees them move and must not turn that into events.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use serde::Serialize;

use super::faults::Endpoint;
use super::gateway::Api;
use super::generate::mix64;
use super::gse::{self, GetAgentStatusRequest, ListAgentStateRequest, MAX_IDS_PER_CALL};
use super::model::{Host, OsType};
use super::reply::{self, codes};
use super::Simulator;

/// The GSE agent's data port on its parent, the same everywhere.
pub(crate) const PARENT_PORT: i32 = 28668;
/// Generated agents started during the 90 days before 2025-01-01T00:00:00Z; fixed rather than
/// relative to now so a seed always yields the same population.
pub(crate) const GENERATED_START_BEFORE: i64 = 1_735_689_600;
pub(crate) const GENERATED_START_SPREAD: i64 = 90 * 86_400;

/// Cloud area 0 reports to one of three GSE servers, any other area to one of two proxies of
/// its own.
pub(crate) fn default_parent_ip(cloud_id: i64, host_id: u64) -> String {
    if cloud_id == 0 {
        format!("192.168.100.{}", host_id % 3 + 1)
    } else {
        format!("172.16.{}.{}", cloud_id.rem_euclid(256), host_id % 2 + 1)
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn now_secs() -> i64 {
    now_ms() / 1000
}

/// What an agent's last heartbeat carried, as of one request.
struct Readings {
    /// Unix milliseconds, within the last second.
    report_time: i64,
    /// Percent, two decimals.
    cpu_rate: f64,
    mem_rate: f64,
}

/// `salt` differs per request, so the usage figures differ per request too.
fn readings(host: &Host, now_ms: i64, salt: u64) -> Readings {
    let a = mix64(host.host_id ^ salt);
    let b = mix64(a);
    let percent = |x: u64, lo: u64, span: u64| (lo * 100 + x % (span * 100)) as f64 / 100.0;
    Readings {
        report_time: now_ms - (host.host_id.wrapping_mul(37) % 1000) as i64,
        cpu_rate: percent(a, 0, 100),
        mem_rate: percent(b, 10, 80),
    }
}

/// A per-request salt from the gateway request id (unique per request).
fn salt(request_id: &str) -> u64 {
    request_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// GSE 2.0 status names, as `list_agent_info` spells them.
fn status_name(code: i32) -> &'static str {
    match code {
        0 => "initial",
        1 => "starting",
        2 => "running",
        3 => "lossy",
        4 => "busy",
        5 => "upgrading",
        6 => "stopping",
        7 => "uninstalled",
        _ => "unknown",
    }
}

pub(crate) struct ListAgentInfo;

/// One `data` item: the NodeMan mock's field list (bk-api.md §1.2).
#[derive(Serialize)]
struct AgentInfo<'a> {
    code: i64,
    message: &'static str,
    bk_agent_id: &'a str,
    bk_cloud_id: i64,
    bk_host_ip: String,
    bk_os_type: &'static str,
    report_time: i64,
    parent_ip: &'a str,
    parent_port: i32,
    version: &'a str,
    cpu_rate: f64,
    mem_rate: f64,
    /// Unix seconds, unlike `report_time`.
    start_time: i64,
    run_mode: i32,
    status_code: i32,
    status: &'static str,
    last_status_code: i32,
    last_status: &'static str,
    remark: &'static str,
}

/// A per-agent error item for an id GSE does not know.
#[derive(Serialize)]
struct AgentInfoError<'a> {
    code: i64,
    message: &'static str,
    bk_agent_id: &'a str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Item<'a> {
    Known(Box<AgentInfo<'a>>),
    Unknown(AgentInfoError<'a>),
}

impl Api for ListAgentInfo {
    const ENDPOINT: Endpoint = Endpoint::GseListAgentInfo;

    fn respond(sim: &Simulator, body: &[u8], request_id: &str) -> (StatusCode, Vec<u8>) {
        let ids = match reply::parse_object::<ListAgentStateRequest>(body) {
            Ok(ListAgentStateRequest {
                agent_id_list: Some(ids),
            }) => ids,
            Ok(_) => return gse::invalid("agent_id_list is required", request_id),
            Err(message) => return gse::invalid(&message, request_id),
        };
        if ids.len() > MAX_IDS_PER_CALL {
            let message = format!(
                "agent_id_list has {} ids, more than the limit of {MAX_IDS_PER_CALL}",
                ids.len()
            );
            return gse::invalid(&message, request_id);
        }
        let (now, salt) = (now_ms(), salt(request_id));
        let inventory = sim.read();
        // An unknown id gets an error item of its own; when no id is known the whole call is
        // 1011003, as for `list_agent_state`.
        let mut known = 0;
        let items: Vec<Item> = ids
            .iter()
            .map(|id| match inventory.find(id).filter(|h| h.in_gse) {
                Some(host) => {
                    known += 1;
                    let r = readings(host, now, salt);
                    let status = status_name(host.status_code);
                    Item::Known(Box::new(AgentInfo {
                        code: 0,
                        message: "",
                        bk_agent_id: id,
                        bk_cloud_id: host.cloud_id,
                        bk_host_ip: match host.ip {
                            Some(ip) => ip.to_string(),
                            None => host.inner_ipv6(),
                        },
                        bk_os_type: match host.os_type {
                            OsType::Linux => "linux",
                            OsType::Windows => "windows",
                        },
                        report_time: r.report_time,
                        parent_ip: &host.parent_ip,
                        parent_port: PARENT_PORT,
                        version: &host.version,
                        cpu_rate: r.cpu_rate,
                        mem_rate: r.mem_rate,
                        start_time: host.start_time,
                        run_mode: host.run_mode,
                        status_code: host.status_code,
                        status,
                        last_status_code: host.status_code,
                        last_status: status,
                        remark: "",
                    }))
                }
                None => Item::Unknown(AgentInfoError {
                    code: codes::GSE_AGENT_NOT_FOUND,
                    message: "agent not found",
                    bk_agent_id: id,
                }),
            })
            .collect();
        if known == 0 && !ids.is_empty() {
            let body =
                reply::business_error(codes::GSE_AGENT_NOT_FOUND, "agent not found", request_id);
            return (StatusCode::OK, body);
        }
        (StatusCode::OK, reply::success(items, request_id))
    }
}

pub(crate) struct GetAgentInfo;

#[derive(Serialize)]
struct V1Info<'a> {
    ip: String,
    version: &'a str,
    bk_cloud_id: i64,
    parent_ip: &'a str,
    parent_port: i32,
}

impl Api for GetAgentInfo {
    const ENDPOINT: Endpoint = Endpoint::GseGetAgentInfo;
    const BODY_CREDENTIALS: bool = true;

    fn respond(sim: &Simulator, body: &[u8], request_id: &str) -> (StatusCode, Vec<u8>) {
        let hosts = match GetAgentStatusRequest::hosts(body, request_id) {
            Ok(hosts) => hosts,
            Err(reply) => return reply,
        };
        let inventory = sim.read();
        // Keyed "cloud:ip" like get_agent_status; IPv4 only, unknown hosts omitted.
        let data: BTreeMap<String, V1Info> = hosts
            .iter()
            .filter_map(|addr| {
                let (cloud_id, ip) = addr.v4()?;
                let host = inventory.find_by_addr(cloud_id, ip).filter(|h| h.in_gse)?;
                let info = V1Info {
                    ip: ip.to_string(),
                    version: &host.version,
                    bk_cloud_id: cloud_id,
                    parent_ip: &host.parent_ip,
                    parent_port: PARENT_PORT,
                };
                Some((format!("{cloud_id}:{ip}"), info))
            })
            .collect();
        (StatusCode::OK, reply::success(data, request_id))
    }
}

impl Simulator {
    /// Moves an agent to another parent (proxy or GSE server); false if the id is unknown.
    pub fn set_parent_ip(&self, agent_id: &str, parent_ip: &str) -> bool {
        match self.write().find_mut(agent_id) {
            Some(host) => {
                host.parent_ip = parent_ip.into();
                true
            }
            None => false,
        }
    }

    /// Restarts an agent: its `start_time` becomes now (and always moves forward). False if
    /// the id is unknown.
    pub fn restart_agent(&self, agent_id: &str) -> bool {
        match self.write().find_mut(agent_id) {
            Some(host) => {
                host.start_time = now_secs().max(host.start_time + 1);
                true
            }
            None => false,
        }
    }
}
