//! NodeMan `api/host/search/`: the paged inventory (bk-api.md §5.2).

use std::borrow::Cow;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::faults::{Endpoint, FaultKind};
use super::gateway::Api;
use super::model::Host;
use super::reply::{self, codes, LenientInt};
use super::Simulator;

const DEFAULT_PAGE_SIZE: i64 = 10;

pub(crate) struct HostSearch;

/// Filters (`bk_biz_id`, `conditions`, …) are accepted and ignored: agentwatch reads the
/// whole inventory.
#[derive(Deserialize, Default)]
struct SearchRequest {
    #[serde(default)]
    page: Option<LenientInt>,
    #[serde(default)]
    pagesize: Option<LenientInt>,
}

#[derive(Serialize)]
struct SearchData<'a> {
    total: usize,
    list: Vec<HostItem<'a>>,
}

/// One host as host search lists it; plugin search items add fields to it.
#[derive(Serialize)]
pub(crate) struct HostItem<'a> {
    bk_biz_id: i64,
    bk_host_id: u64,
    bk_agent_id: &'a str,
    bk_cloud_id: i64,
    /// Empty for an IPv6-only host.
    inner_ip: String,
    inner_ipv6: String,
    bk_host_name: String,
    os_type: &'static str,
    status: &'static str,
    status_display: &'static str,
    version: &'a str,
    bk_cloud_name: Cow<'static, str>,
    bk_biz_name: String,
}

impl<'a> From<&'a Host> for HostItem<'a> {
    fn from(host: &'a Host) -> Self {
        let status = host.nodeman_status();
        let bk_host_name = match host.ip {
            Some(ip) => {
                let [a, b, c, d] = ip.octets();
                format!("sim-{a}-{b}-{c}-{d}")
            }
            None => format!("sim-v6-{}", host.host_id),
        };
        HostItem {
            bk_biz_id: host.biz_id,
            bk_host_id: host.host_id,
            bk_agent_id: &host.bk_agent_id,
            bk_cloud_id: host.cloud_id,
            inner_ip: host.inner_ip(),
            inner_ipv6: host.inner_ipv6(),
            bk_host_name,
            os_type: host.os_type.as_str(),
            status,
            status_display: status_display(status),
            // NodeMan has no version for an agent GSE never reported.
            version: if host.in_gse { &host.version } else { "" },
            bk_cloud_name: cloud_name(host.cloud_id),
            bk_biz_name: format!("biz-{}", host.biz_id),
        }
    }
}

fn status_display(status: &str) -> &'static str {
    match status {
        "RUNNING" => "正常",
        "TERMINATED" => "异常",
        "NOT_INSTALLED" => "未安装",
        _ => "未知",
    }
}

fn cloud_name(cloud_id: i64) -> Cow<'static, str> {
    if cloud_id == 0 {
        // NodeMan's fixed name for the direct-connect area.
        Cow::Borrowed("直连区域")
    } else {
        Cow::Owned(format!("cloud-{cloud_id}"))
    }
}

/// A page request after validation; `size == None` means "all" (`pagesize: -1`).
pub(crate) struct Paging {
    page: u32,
    size: Option<usize>,
}

impl Paging {
    /// The hosts of this page: a slice, so a page costs O(page size).
    pub fn slice<'a>(&self, hosts: &'a [Host]) -> &'a [Host] {
        match self.size {
            None => hosts,
            Some(size) => {
                let start = (self.page as usize - 1)
                    .saturating_mul(size)
                    .min(hosts.len());
                let end = start.saturating_add(size).min(hosts.len());
                &hosts[start..end]
            }
        }
    }
}

/// Parses `page` / `pagesize` the way NodeMan's list APIs do (host and plugin search).
pub(crate) fn parse(body: &[u8]) -> Result<Paging, String> {
    // Clients may send no body at all; NodeMan then uses its defaults.
    let req: SearchRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SearchRequest::default()
    } else {
        reply::parse_object(body)?
    };
    let int = |v: &Option<LenientInt>, name: &str, default: i64| match v {
        None => Ok(default),
        Some(v) => v.get().ok_or_else(|| format!("{name} must be an integer")),
    };
    let page = int(&req.page, "page", 1)?;
    let size = int(&req.pagesize, "pagesize", DEFAULT_PAGE_SIZE)?;
    let page = u32::try_from(page)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| format!("page must be at least 1, got {page}"))?;
    let size = match size {
        -1 => None,
        s if s >= 1 => Some(usize::try_from(s).unwrap_or(usize::MAX)),
        s => return Err(format!("pagesize must be -1 or at least 1, got {s}")),
    };
    Ok(Paging { page, size })
}

impl Api for HostSearch {
    const ENDPOINT: Endpoint = Endpoint::NodemanHostSearch;

    fn scheduled_fault(sim: &Simulator, body: &[u8]) -> Option<FaultKind> {
        let paging = parse(body).ok()?;
        // With pagesize -1 the whole inventory is page 1.
        let page = if paging.size.is_none() {
            1
        } else {
            paging.page
        };
        let kind = sim.faults.take_page_failure(page)?;
        sim.stats.inventory_page_failure();
        Some(kind)
    }

    fn respond(sim: &Simulator, body: &[u8], request_id: &str) -> (StatusCode, Vec<u8>) {
        let paging = match parse(body) {
            Ok(p) => p,
            Err(message) => {
                let body =
                    reply::business_error(codes::NODEMAN_INVALID_PARAMS, &message, request_id);
                return (StatusCode::OK, body);
            }
        };
        let inventory = sim.read();
        let hosts = inventory.hosts();
        let data = SearchData {
            total: hosts.len(),
            list: paging.slice(hosts).iter().map(HostItem::from).collect(),
        };
        (StatusCode::OK, reply::success(data, request_id))
    }
}
