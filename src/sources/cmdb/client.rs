//! CMDB host listing (bk-api.md B §8): `list_hosts_without_biz` for every host, or
//! `list_biz_hosts` once per configured business. Like NodeMan's host search the
//! result is complete or an error, never a partial inventory: a missing host would
//! otherwise look like a deleted one.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use futures::{stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::CmdbConfig;
use crate::{
    metrics::Metrics,
    sources::{
        bk::{null_as_default, ApiError, BkClient, BkConfig, Upstream},
        inventory::Host,
    },
};

/// The host properties asked for; CMDB returns only what `fields` names.
const FIELDS: &[&str] = &[
    "bk_host_id",
    "bk_cloud_id",
    "bk_host_innerip",
    "bk_host_innerip_v6",
    "bk_agent_id",
    "bk_host_name",
    "bk_os_type",
];

#[derive(Clone, Debug)]
pub struct CmdbClient {
    client: BkClient,
    without_biz_url: String,
    /// `list_biz_hosts` URL with `{bk_biz_id}` still in it (ESB paths have none).
    biz_url: String,
    /// Configured businesses, duplicates removed; empty = every host.
    biz_ids: Vec<i64>,
    page_size: usize,
    concurrency: usize,
    supplier_account: String,
}

/// One listing: which URL, and which business to name in the body.
struct Scope {
    url: String,
    /// `None` for `list_hosts_without_biz`; the hosts then get biz id 0.
    biz_id: Option<i64>,
}

#[derive(Serialize)]
struct ListRequest<'a> {
    bk_supplier_account: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bk_biz_id: Option<i64>,
    page: PageSpec,
    fields: &'static [&'static str],
}

#[derive(Serialize)]
struct PageSpec {
    start: usize,
    limit: usize,
    /// Offset paging is only sound over a stable order; CMDB's default order is not
    /// documented, so ask for the host id explicitly.
    sort: &'static str,
}

#[derive(Deserialize)]
struct Page {
    count: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    info: Vec<WireHost>,
}

/// One `info` item. CMDB sends `null` for unset properties.
#[derive(Deserialize)]
struct WireHost {
    bk_host_id: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    bk_cloud_id: i64,
    /// May hold several addresses: `"10.0.0.1,10.0.0.2"`.
    #[serde(default, deserialize_with = "null_as_default")]
    bk_host_innerip: String,
    #[serde(default, deserialize_with = "null_as_default")]
    bk_host_innerip_v6: String,
    #[serde(default, deserialize_with = "null_as_default")]
    bk_agent_id: String,
    /// CMDB's enum id: "1" Linux, "2" Windows, "3" AIX, ...
    #[serde(default, deserialize_with = "null_as_default")]
    bk_os_type: String,
}

impl WireHost {
    fn into_host(self, biz_id: i64) -> Host {
        Host {
            host_id: self.bk_host_id,
            cloud_id: self.bk_cloud_id,
            biz_id,
            ip: first_address(&self.bk_host_innerip).to_owned(),
            ipv6: first_address(&self.bk_host_innerip_v6).to_owned(),
            bk_agent_id: self.bk_agent_id,
            os_type: os_type_name(&self.bk_os_type),
            nodeman_status: String::new(),
        }
    }
}

/// The first of CMDB's comma-separated addresses; "" when there is none.
fn first_address(list: &str) -> &str {
    list.split(',')
        .map(str::trim)
        .find(|a| !a.is_empty())
        .unwrap_or("")
}

/// CMDB's `bk_os_type` enum id as NodeMan names the OS; unknown ids are kept as sent.
fn os_type_name(id: &str) -> String {
    match id.trim() {
        "1" => "LINUX".to_owned(),
        "2" => "WINDOWS".to_owned(),
        "3" => "AIX".to_owned(),
        _ => id.to_owned(),
    }
}

impl CmdbClient {
    pub fn new(cfg: &CmdbConfig, bk: &BkConfig, metrics: Arc<Metrics>) -> Result<Self, ApiError> {
        let client = BkClient::new(
            Upstream::Cmdb,
            bk,
            cfg.timeout,
            cfg.retry.clone(),
            cfg.concurrency,
            cfg.max_response_bytes,
            metrics,
        )?;
        let mut seen = HashSet::new();
        let biz_ids = cfg
            .biz_ids
            .iter()
            .copied()
            .filter(|b| seen.insert(*b))
            .collect();
        Ok(CmdbClient {
            client,
            without_biz_url: format!("{}{}", cfg.base_url, cfg.list_hosts_without_biz_path),
            biz_url: format!("{}{}", cfg.base_url, cfg.list_biz_hosts_path),
            biz_ids,
            // CMDB rejects a limit above 500.
            page_size: cfg.page_size.clamp(1, 500),
            concurrency: cfg.concurrency.max(1),
            supplier_account: cfg.bk_supplier_account.clone(),
        })
    }

    /// Every host: one `list_hosts_without_biz` listing when no business is
    /// configured, else one `list_biz_hosts` listing per business (one after the
    /// other; the pages of each are concurrent). A host listed under two businesses
    /// (moved while listing) fails the whole call.
    pub async fn list_hosts(&self) -> Result<Vec<Host>, ApiError> {
        if self.biz_ids.is_empty() {
            let scope = Scope {
                url: self.without_biz_url.clone(),
                biz_id: None,
            };
            return self.list(&scope).await;
        }
        let mut hosts = Vec::new();
        let mut owner: HashMap<i64, i64> = HashMap::new();
        for &biz in &self.biz_ids {
            let scope = Scope {
                url: self.biz_url.replace("{bk_biz_id}", &biz.to_string()),
                biz_id: Some(biz),
            };
            for host in self.list(&scope).await? {
                if let Some(other) = owner.insert(host.host_id, biz) {
                    return Err(inconsistent(
                        &scope,
                        format!(
                            "host {} is listed in business {other} and in business {biz}; \
                             hosts moved while listing",
                            host.host_id
                        ),
                    ));
                }
                hosts.push(host);
            }
        }
        Ok(hosts)
    }

    /// All pages of one listing. A first call with `limit: 1` gives `count`; pages of
    /// `page_size` at offsets `0, page_size, ..` are then fetched `concurrency` at a
    /// time. A failed page, a page reporting another `count` or holding an unexpected
    /// number of hosts, or a host id seen twice fails the listing with no result.
    async fn list(&self, scope: &Scope) -> Result<Vec<Host>, ApiError> {
        let probe = self.page(scope, 0, 1).await?;
        let count = probe.count;
        let expected = usize::try_from(count)
            .map_err(|_| inconsistent(scope, format!("CMDB reports a negative count {count}")))?;
        if probe.info.len() > 1 {
            return Err(inconsistent(
                scope,
                format!(
                    "asked for 1 host, received {} (is page.limit ignored?)",
                    probe.info.len()
                ),
            ));
        }
        let biz_id = scope.biz_id.unwrap_or(0);
        let mut hosts = Vec::with_capacity(expected);
        let mut seen = HashSet::with_capacity(expected);

        let mut pages = stream::iter((0..expected).step_by(self.page_size))
            .map(|start| async move { (start, self.page(scope, start, self.page_size).await) })
            .buffered(self.concurrency);
        // Returning early drops the stream, which cancels the pages still in flight.
        while let Some((start, page)) = pages.next().await {
            let page = page.inspect_err(|e| {
                tracing::debug!(upstream = "cmdb", start, error = %e, "CMDB host page failed");
            })?;
            if page.count != count {
                return Err(inconsistent(
                    scope,
                    format!(
                        "page at start {start} reports count {}, the first call reported \
                         {count} (hosts changed while paging)",
                        page.count
                    ),
                ));
            }
            let want = (expected - start).min(self.page_size);
            if page.info.len() != want {
                return Err(inconsistent(
                    scope,
                    format!(
                        "page at start {start} holds {} hosts, expected {want} (count {count}, \
                         page size {})",
                        page.info.len(),
                        self.page_size
                    ),
                ));
            }
            for wire in page.info {
                if !seen.insert(wire.bk_host_id) {
                    return Err(inconsistent(
                        scope,
                        format!(
                            "host {} appears twice (page at start {start}); hosts changed \
                             while paging",
                            wire.bk_host_id
                        ),
                    ));
                }
                hosts.push(wire.into_host(biz_id));
            }
        }
        if hosts.len() != expected {
            return Err(inconsistent(
                scope,
                format!("received {} hosts, count is {count}", hosts.len()),
            ));
        }
        Ok(hosts)
    }

    async fn page(&self, scope: &Scope, start: usize, limit: usize) -> Result<Page, ApiError> {
        let request = ListRequest {
            bk_supplier_account: &self.supplier_account,
            bk_biz_id: scope.biz_id,
            page: PageSpec {
                start,
                limit,
                sort: "bk_host_id",
            },
            fields: FIELDS,
        };
        self.client.post(&scope.url, &request).await
    }
}

fn inconsistent(scope: &Scope, detail: String) -> ApiError {
    ApiError::Inconsistent {
        endpoint: format!("{} {}", Upstream::Cmdb, scope.url),
        detail,
    }
}
