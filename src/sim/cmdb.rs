//! CMDB host listing (bk-api.md §8): `list_hosts_without_biz` and per-business
//! `list_biz_hosts`, at the gateway paths (`api/v3/hosts/...`, biz id in the path) and
//! the ESB paths (`cc/list_hosts_without_biz/`, `cc/list_biz_hosts/`, biz id in the body).
//!
//! The hosts are the model's, the same that NodeMan lists and GSE knows, sorted by host
//! id. Paging is CMDB's `page {start, limit}` with `limit` at most 500 and `fields`
//! required; only the requested fields are returned.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde::{Deserialize, Serialize};

use super::faults::{Endpoint, FaultKind};
use super::gateway::{self, Api};
use super::model::{Host, OsType};
use super::reply::{self, LenientInt};
use super::Simulator;

/// CMDB's page limit (`common.BKMaxPageSize`).
pub const MAX_PAGE_LIMIT: i64 = 500;

/// bk-cmdb's common error codes (its `common/errors` list).
pub(crate) mod codes {
    /// `CCErrCommParamsInvalid`: "data Parameter Check of '%s' Fail".
    pub const PARAMS_INVALID: i64 = 1_199_006;
    /// `CCErrCommParamsNeedSet`: "'%s' is not Assign".
    pub const PARAMS_NEED_SET: i64 = 1_199_010;
    /// `CCErrCommPageLimitIsExceeded`.
    pub const PAGE_LIMIT_EXCEEDED: i64 = 1_199_059;
    /// "Internal Error on '%s' service".
    pub const INTERNAL: i64 = 1_199_999;
}

/// Gateway paths (relative to [`super::paths::CMDB_BASE`]'s host) and ESB paths.
pub(crate) fn routes() -> Router<Arc<Simulator>> {
    let without_biz = || post(gateway::handle::<WithoutBiz>);
    let esb_without_biz = || post(gateway::handle::<EsbWithoutBiz>);
    Router::new()
        .route(super::paths::CMDB_LIST_HOSTS_WITHOUT_APP, without_biz())
        // bk-cli's `open` variants (bk-api.md §8).
        .route(
            "/api/bk-cmdb/prod/api/v3/open/hosts/list_hosts_without_app",
            without_biz(),
        )
        .route(
            "/api/bk-cmdb/prod/api/v3/hosts/app/{bk_biz_id}/list_hosts",
            post(biz_hosts_by_path),
        )
        .route(
            "/api/bk-cmdb/prod/api/v3/open/hosts/app/{bk_biz_id}/list_hosts",
            post(biz_hosts_by_path),
        )
        .route(
            super::paths::CMDB_ESB_LIST_HOSTS_WITHOUT_BIZ,
            esb_without_biz(),
        )
        .route(
            super::paths::CMDB_ESB_LIST_BIZ_HOSTS,
            post(gateway::handle::<EsbBizHosts>),
        )
}

/// The gateway route names the business in its path; CMDB takes the path's id, so it
/// replaces whatever `bk_biz_id` the body carries before the usual pipeline runs.
async fn biz_hosts_by_path(
    state: State<Arc<Simulator>>,
    Path(biz): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(mut object)) => {
            let id = biz
                .parse::<i64>()
                .map_or(serde_json::Value::String(biz), serde_json::Value::from);
            object.insert("bk_biz_id".to_owned(), id);
            Bytes::from(serde_json::Value::Object(object).to_string())
        }
        // Left as sent: the handler reports it.
        _ => body,
    };
    gateway::handle::<GatewayBizHosts>(state, headers, body).await
}

/// `list_hosts_without_app` (gateway).
pub(crate) struct WithoutBiz;
/// `list_hosts_without_biz/` (ESB: app credentials may come in the body).
pub(crate) struct EsbWithoutBiz;
/// `app/{bk_biz_id}/list_hosts` (gateway), after [`biz_hosts_by_path`].
pub(crate) struct GatewayBizHosts;
/// `list_biz_hosts/` (ESB).
pub(crate) struct EsbBizHosts;

impl Api for WithoutBiz {
    const ENDPOINT: Endpoint = Endpoint::CmdbListHosts;
    fn scheduled_fault(sim: &Simulator, body: &[u8]) -> Option<FaultKind> {
        scheduled_fault(sim, body)
    }
    fn respond(sim: &Simulator, body: &[u8], request_id: &str) -> (StatusCode, Vec<u8>) {
        respond(sim, body, request_id, false)
    }
}

impl Api for EsbWithoutBiz {
    const ENDPOINT: Endpoint = Endpoint::CmdbListHosts;
    const BODY_CREDENTIALS: bool = true;
    fn scheduled_fault(sim: &Simulator, body: &[u8]) -> Option<FaultKind> {
        scheduled_fault(sim, body)
    }
    fn respond(sim: &Simulator, body: &[u8], request_id: &str) -> (StatusCode, Vec<u8>) {
        respond(sim, body, request_id, false)
    }
}

impl Api for GatewayBizHosts {
    const ENDPOINT: Endpoint = Endpoint::CmdbListHosts;
    fn scheduled_fault(sim: &Simulator, body: &[u8]) -> Option<FaultKind> {
        scheduled_fault(sim, body)
    }
    fn respond(sim: &Simulator, body: &[u8], request_id: &str) -> (StatusCode, Vec<u8>) {
        respond(sim, body, request_id, true)
    }
}

impl Api for EsbBizHosts {
    const ENDPOINT: Endpoint = Endpoint::CmdbListHosts;
    const BODY_CREDENTIALS: bool = true;
    fn scheduled_fault(sim: &Simulator, body: &[u8]) -> Option<FaultKind> {
        scheduled_fault(sim, body)
    }
    fn respond(sim: &Simulator, body: &[u8], request_id: &str) -> (StatusCode, Vec<u8>) {
        respond(sim, body, request_id, true)
    }
}

/// [`Simulator::fail_inventory_page`] for CMDB: page `start / limit + 1`, so with the
/// client's page size the pages count 1, 2, 3, ... The `limit: 1` count call is page 1
/// only when it starts at 0 and so is left alone: it is told apart by its limit.
fn scheduled_fault(sim: &Simulator, body: &[u8]) -> Option<FaultKind> {
    let request = parse(body, false).ok()?;
    if request.limit == 1 && request.start == 0 {
        return None;
    }
    let page = u32::try_from(request.start / request.limit + 1).ok()?;
    let kind = sim.faults.take_page_failure(page)?;
    sim.stats.inventory_page_failure();
    Some(kind)
}

#[derive(Deserialize)]
struct ListRequest {
    #[serde(default)]
    bk_biz_id: Option<LenientInt>,
    #[serde(default)]
    page: Option<PageRequest>,
    #[serde(default)]
    fields: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct PageRequest {
    #[serde(default)]
    start: Option<LenientInt>,
    #[serde(default)]
    limit: Option<LenientInt>,
}

/// A validated request.
struct Listing {
    biz_id: Option<i64>,
    start: usize,
    limit: usize,
    fields: Fields,
}

/// A CMDB error: code and message.
type Rejection = (i64, String);

fn parse(body: &[u8], per_biz: bool) -> Result<Listing, Rejection> {
    let invalid = |m: String| (codes::PARAMS_INVALID, m);
    let need = |field: &str| (codes::PARAMS_NEED_SET, format!("'{field}' is not assigned"));
    let request: ListRequest = reply::parse_object(body).map_err(invalid)?;
    let biz_id = if per_biz {
        let biz = request.bk_biz_id.ok_or_else(|| need("bk_biz_id"))?;
        let id = biz
            .get()
            .filter(|id| *id > 0)
            .ok_or_else(|| invalid("bk_biz_id must be a positive integer".to_owned()))?;
        Some(id)
    } else {
        None
    };
    let page = request.page.ok_or_else(|| need("page"))?;
    let start = match page.start {
        None => 0,
        Some(v) => v
            .get()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| invalid("page.start must be a non-negative integer".to_owned()))?,
    };
    let limit = page
        .limit
        .and_then(|v| v.get())
        .filter(|l| *l != 0)
        .ok_or_else(|| need("page.limit"))?;
    if limit > MAX_PAGE_LIMIT {
        return Err((
            codes::PAGE_LIMIT_EXCEEDED,
            format!("page.limit {limit} exceeds the maximum of {MAX_PAGE_LIMIT}"),
        ));
    }
    let limit = usize::try_from(limit)
        .map_err(|_| invalid(format!("page.limit must be positive, got {limit}")))?;
    let fields = request.fields.ok_or_else(|| need("fields"))?;
    Ok(Listing {
        biz_id,
        start,
        limit,
        fields: Fields::new(&fields),
    })
}

/// Which host properties to return; unknown names are ignored like CMDB does, and an
/// empty list means all.
#[derive(Clone, Copy, Default)]
struct Fields {
    host_id: bool,
    cloud_id: bool,
    innerip: bool,
    innerip_v6: bool,
    agent_id: bool,
    host_name: bool,
    os_type: bool,
}

impl Fields {
    fn new(names: &[String]) -> Fields {
        if names.is_empty() {
            return Fields {
                host_id: true,
                cloud_id: true,
                innerip: true,
                innerip_v6: true,
                agent_id: true,
                host_name: true,
                os_type: true,
            };
        }
        let has = |n: &str| names.iter().any(|f| f == n);
        Fields {
            host_id: has("bk_host_id"),
            cloud_id: has("bk_cloud_id"),
            innerip: has("bk_host_innerip"),
            innerip_v6: has("bk_host_innerip_v6"),
            agent_id: has("bk_agent_id"),
            host_name: has("bk_host_name"),
            os_type: has("bk_os_type"),
        }
    }
}

#[derive(Serialize)]
struct ListData<'a> {
    count: usize,
    info: Vec<HostInfo<'a>>,
}

/// One `info` item: only the requested properties are present.
#[derive(Serialize)]
struct HostInfo<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    bk_host_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bk_cloud_id: Option<i64>,
    /// A comma-separated string in CMDB, even for one address.
    #[serde(skip_serializing_if = "Option::is_none")]
    bk_host_innerip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bk_host_innerip_v6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bk_agent_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bk_host_name: Option<String>,
    /// CMDB's enum id: "1" Linux, "2" Windows.
    #[serde(skip_serializing_if = "Option::is_none")]
    bk_os_type: Option<&'static str>,
}

impl<'a> HostInfo<'a> {
    fn new(host: &'a Host, f: Fields) -> Self {
        let (ip, ipv6) = (host.inner_ip(), host.inner_ipv6());
        let address = if ip.is_empty() { &ipv6 } else { &ip };
        HostInfo {
            bk_host_id: f.host_id.then_some(host.host_id),
            bk_cloud_id: f.cloud_id.then_some(host.cloud_id),
            bk_host_name: f
                .host_name
                .then(|| format!("sim-{}", address.replace([':', '.'], "-"))),
            bk_host_innerip: f.innerip.then_some(ip.clone()),
            bk_host_innerip_v6: f.innerip_v6.then_some(ipv6.clone()),
            bk_agent_id: f.agent_id.then_some(&*host.bk_agent_id),
            bk_os_type: f.os_type.then_some(match host.os_type {
                OsType::Linux => "1",
                OsType::Windows => "2",
            }),
        }
    }
}

fn respond(sim: &Simulator, body: &[u8], request_id: &str, per_biz: bool) -> (StatusCode, Vec<u8>) {
    let listing = match parse(body, per_biz) {
        Ok(listing) => listing,
        Err((code, message)) => {
            return (
                StatusCode::OK,
                reply::business_error(code, &message, request_id),
            )
        }
    };
    let inventory = sim.read();
    let hosts = inventory.hosts();
    let data = match listing.biz_id {
        // A slice: O(page) however many hosts there are.
        None => {
            let start = listing.start.min(hosts.len());
            let end = start.saturating_add(listing.limit).min(hosts.len());
            ListData {
                count: hosts.len(),
                info: hosts[start..end]
                    .iter()
                    .map(|h| HostInfo::new(h, listing.fields))
                    .collect(),
            }
        }
        // A scan of every host per page; CMDB is read once per inventory refresh, so
        // there is no per-business index.
        Some(biz) => {
            let in_biz = || hosts.iter().filter(|h| h.biz_id == biz);
            ListData {
                count: in_biz().count(),
                info: in_biz()
                    .skip(listing.start)
                    .take(listing.limit)
                    .map(|h| HostInfo::new(h, listing.fields))
                    .collect(),
            }
        }
    };
    (StatusCode::OK, reply::success(data, request_id))
}
