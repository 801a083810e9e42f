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
    /// `cmdb.max_hosts`.
    max_hosts: usize,
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
            os_type: os_type_name(&self.bk_os_type).into(),
            nodeman_status: "".into(),
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
            max_hosts: cfg.max_hosts,
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
            return self.list(&scope, self.max_hosts).await;
        }
        let mut hosts = Vec::new();
        let mut owner: HashMap<i64, i64> = HashMap::new();
        for &biz in &self.biz_ids {
            let scope = Scope {
                url: self.biz_url.replace("{bk_biz_id}", &biz.to_string()),
                biz_id: Some(biz),
            };
            // The businesses together must stay within `cmdb.max_hosts`.
            let budget = self.max_hosts.saturating_sub(hosts.len());
            for host in self.list(&scope, budget).await? {
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

    /// One authenticated call for `agentwatch doctor`: the `limit: 1` count call of the
    /// first listing (every host, or the first configured business). Returns the count
    /// and at most one host.
    pub async fn probe(&self) -> Result<(i64, Vec<Host>), ApiError> {
        let scope = match self.biz_ids.first() {
            None => Scope {
                url: self.without_biz_url.clone(),
                biz_id: None,
            },
            Some(&biz) => Scope {
                url: self.biz_url.replace("{bk_biz_id}", &biz.to_string()),
                biz_id: Some(biz),
            },
        };
        let page = self.page(&scope, 0, 1).await?;
        let biz_id = scope.biz_id.unwrap_or(0);
        let hosts = page.info.into_iter().map(|w| w.into_host(biz_id)).collect();
        Ok((page.count, hosts))
    }

    /// All pages of one listing. A first call with `limit: 1` gives `count`; pages of
    /// `page_size` at offsets `0, page_size, ..` are then fetched `concurrency` at a
    /// time. A failed page, a page reporting another `count` or holding an unexpected
    /// number of hosts, or a host id seen twice fails the listing with no result.
    async fn list(&self, scope: &Scope, max_hosts: usize) -> Result<Vec<Host>, ApiError> {
        let probe = self.page(scope, 0, 1).await?;
        let mut listing = Listing::new(scope, probe, self.page_size, max_hosts)?;
        let mut pages = stream::iter(listing.starts())
            .map(|start| async move { (start, self.page(scope, start, self.page_size).await) })
            .buffered(self.concurrency);
        // Returning early drops the stream, which cancels the pages still in flight.
        while let Some((start, page)) = pages.next().await {
            let page = page.inspect_err(|e| {
                tracing::debug!(upstream = "cmdb", start, error = %e, "CMDB host page failed");
            })?;
            listing.take(start, page)?;
        }
        listing.finish()
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

/// Most hosts room is reserved for up front; a listing with more grows as pages arrive.
const MAX_RESERVED_HOSTS: usize = 100_000;

/// The pages of one listing so far, each checked against the count of the first
/// (`limit: 1`) call.
struct Listing<'a> {
    scope: &'a Scope,
    count: i64,
    expected: usize,
    page_size: usize,
    hosts: Vec<Host>,
    seen: HashSet<i64>,
}

impl<'a> Listing<'a> {
    fn new(
        scope: &'a Scope,
        probe: Page,
        page_size: usize,
        max_hosts: usize,
    ) -> Result<Self, ApiError> {
        let count = probe.count;
        let expected = usize::try_from(count)
            .map_err(|_| inconsistent(scope, format!("CMDB reports a negative count {count}")))?;
        // Checked before anything is allocated for `count` or any page is asked for.
        if expected > max_hosts {
            return Err(ApiError::OverLimit {
                endpoint: format!("{} {}", Upstream::Cmdb, scope.url),
                what: "hosts",
                value: count,
                limit: max_hosts,
                field: "cmdb.max_hosts",
            });
        }
        if probe.info.len() > 1 {
            return Err(inconsistent(
                scope,
                format!(
                    "asked for 1 host, received {} (is page.limit ignored?)",
                    probe.info.len()
                ),
            ));
        }
        Ok(Listing {
            scope,
            count,
            expected,
            page_size: page_size.max(1),
            // `count` is upstream data: reserve for at most a realistic inventory, or
            // one bad number would ask for gigabytes before the first page is checked.
            hosts: Vec::with_capacity(expected.min(MAX_RESERVED_HOSTS)),
            seen: HashSet::with_capacity(expected.min(MAX_RESERVED_HOSTS)),
        })
    }

    /// The offsets of the pages to fetch.
    fn starts(&self) -> impl Iterator<Item = usize> {
        (0..self.expected).step_by(self.page_size)
    }

    /// Checks the page at offset `start` and appends its hosts.
    fn take(&mut self, start: usize, page: Page) -> Result<(), ApiError> {
        let (scope, count) = (self.scope, self.count);
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
        let want = self.expected.saturating_sub(start).min(self.page_size);
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
        let biz_id = scope.biz_id.unwrap_or(0);
        for wire in page.info {
            if !self.seen.insert(wire.bk_host_id) {
                return Err(inconsistent(
                    scope,
                    format!(
                        "host {} appears twice (page at start {start}); hosts changed \
                         while paging",
                        wire.bk_host_id
                    ),
                ));
            }
            self.hosts.push(wire.into_host(biz_id));
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<Host>, ApiError> {
        if self.hosts.len() != self.expected {
            return Err(inconsistent(
                self.scope,
                format!(
                    "received {} hosts, count is {}",
                    self.hosts.len(),
                    self.count
                ),
            ));
        }
        Ok(self.hosts)
    }
}

/// The hosts of a `list_hosts_without_biz` listing whose bodies (the `limit: 1` call,
/// then the pages in order) were already fetched: the same decoding and checks as
/// [`CmdbClient::list_hosts`], without HTTP. For fuzzing.
pub(crate) fn collect_bodies(
    url: &str,
    page_size: usize,
    bodies: &[&[u8]],
) -> Result<Vec<Host>, ApiError> {
    let scope = Scope {
        url: url.to_owned(),
        biz_id: None,
    };
    let endpoint = format!("{} {url}", Upstream::Cmdb);
    let decode = |body: &[u8]| crate::sources::bk::envelope::decode::<Page>(&endpoint, body);
    let Some((probe, pages)) = bodies.split_first() else {
        return Err(inconsistent(&scope, "no count call".to_owned()));
    };
    let max_hosts = crate::sources::DEFAULT_MAX_HOSTS;
    let mut listing = Listing::new(&scope, decode(probe)?, page_size, max_hosts)?;
    let starts: Vec<usize> = listing.starts().take(pages.len()).collect();
    for (start, body) in starts.into_iter().zip(pages) {
        listing.take(start, decode(body)?)?;
    }
    listing.finish()
}

fn inconsistent(scope: &Scope, detail: String) -> ApiError {
    ApiError::Inconsistent {
        endpoint: format!("{} {}", Upstream::Cmdb, scope.url),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::{
        http::{StatusCode, Uri},
        response::IntoResponse,
        Json, Router,
    };
    use serde_json::{json, Value};

    use super::*;
    use crate::{
        sim::{paths, OsType, SimConfig, Simulator},
        sources::bk::tests::{bk_config, fast_retry, serve, SECRET},
    };

    fn config(base_url: String, biz_ids: Vec<i64>) -> CmdbConfig {
        CmdbConfig {
            base_url,
            biz_ids,
            concurrency: 3,
            retry: fast_retry(),
            ..CmdbConfig::default()
        }
    }

    fn client(cfg: &CmdbConfig) -> CmdbClient {
        CmdbClient::new(cfg, &bk_config(), Metrics::new()).unwrap()
    }

    /// A simulator over `agents` hosts; returns it and its origin (no trailing '/').
    async fn simulator(agents: usize) -> (Arc<Simulator>, String) {
        let sim = Simulator::new(SimConfig {
            agents,
            app_secret: SECRET.to_owned(),
            ..SimConfig::default()
        });
        let base = serve(sim.router()).await;
        (sim, base.trim_end_matches('/').to_owned())
    }

    /// The simulator's truth as the inventory should see it, for business `biz`.
    fn expected(sim: &Simulator, biz: Option<i64>) -> Vec<Host> {
        sim.truth()
            .into_iter()
            .filter(|a| biz.is_none_or(|b| a.biz_id == b))
            .map(|a| Host {
                host_id: a.host_id as i64,
                cloud_id: a.cloud_id,
                biz_id: biz.unwrap_or(0),
                ip: a.ip,
                ipv6: a.ipv6,
                bk_agent_id: if a.legacy { String::new() } else { a.agent_id },
                os_type: match a.os_type {
                    OsType::Linux => "LINUX".into(),
                    OsType::Windows => "WINDOWS".into(),
                },
                nodeman_status: "".into(),
            })
            .collect()
    }

    #[tokio::test]
    async fn paging_over_2345_hosts_yields_exactly_2345_hosts_each_once() {
        let (sim, origin) = simulator(2345).await;
        let cfg = config(format!("{origin}{}", paths::CMDB_BASE), vec![]);
        let hosts = client(&cfg).list_hosts().await.unwrap();
        assert_eq!(hosts.len(), 2345);
        let ids: HashSet<i64> = hosts.iter().map(|h| h.host_id).collect();
        assert_eq!(ids.len(), 2345, "no host twice");
        assert_eq!(hosts, expected(&sim, None));
        // The agent ids are the ones GSE knows.
        let agent_ids: Vec<String> = hosts.iter().map(|h| h.agent_id().unwrap()).collect();
        let truth: Vec<String> = sim.truth().into_iter().map(|a| a.agent_id).collect();
        assert_eq!(agent_ids, truth);
        // One count call, then five pages of at most 500.
        assert_eq!(sim.request_counts().cmdb_list_hosts, 6);
    }

    #[tokio::test]
    async fn a_count_of_exactly_max_hosts_is_listed_and_one_more_fails_after_the_count_call() {
        let (sim, origin) = simulator(250).await;
        let base = format!("{origin}{}", paths::CMDB_BASE);
        let cfg = CmdbConfig {
            max_hosts: 250,
            ..config(base.clone(), vec![])
        };
        assert_eq!(client(&cfg).list_hosts().await.unwrap().len(), 250);
        let before = sim.request_counts().cmdb_list_hosts;

        let cfg = CmdbConfig {
            max_hosts: 249,
            ..config(base, vec![])
        };
        let e = client(&cfg).list_hosts().await.unwrap_err();
        assert!(matches!(e, ApiError::OverLimit { limit: 249, .. }), "{e:?}");
        assert!(
            e.to_string().ends_with(
                "the answer announces 250 hosts, over the limit of 249 (cmdb.max_hosts)"
            ),
            "{e}"
        );
        assert_eq!(e.metric_label(), "too_large");
        // Only the `limit: 1` count call was made.
        assert_eq!(sim.request_counts().cmdb_list_hosts, before + 1);
    }

    #[tokio::test]
    async fn businesses_together_over_max_hosts_fail_the_listing() {
        let (sim, origin) = simulator(600).await;
        let truth = sim.truth();
        let a = truth[0].biz_id;
        let b = truth.iter().find(|h| h.biz_id != a).unwrap().biz_id;
        let in_a = truth.iter().filter(|h| h.biz_id == a).count();
        let both = in_a + truth.iter().filter(|h| h.biz_id == b).count();
        let base = format!("{origin}{}", paths::CMDB_BASE);
        let at = CmdbConfig {
            max_hosts: both,
            ..config(base.clone(), vec![a, b])
        };
        assert_eq!(client(&at).list_hosts().await.unwrap().len(), both);
        let over = CmdbConfig {
            max_hosts: both - 1,
            ..config(base, vec![a, b])
        };
        let e = client(&over).list_hosts().await.unwrap_err();
        assert!(e.to_string().contains("(cmdb.max_hosts)"), "{e}");
    }

    #[tokio::test]
    async fn per_biz_listing_lists_each_business_once_with_its_biz_id() {
        let (sim, origin) = simulator(600).await;
        let truth = sim.truth();
        let (a, b) = (
            truth[0].biz_id,
            truth
                .iter()
                .find(|h| h.biz_id != truth[0].biz_id)
                .unwrap()
                .biz_id,
        );
        let mut want = expected(&sim, Some(a));
        want.extend(expected(&sim, Some(b)));

        // Gateway: the business in the path (and the body).
        let cfg = CmdbConfig {
            page_size: 7,
            ..config(format!("{origin}{}", paths::CMDB_BASE), vec![a, b, a])
        };
        assert_eq!(client(&cfg).list_hosts().await.unwrap(), want);

        // ESB: the business in the body only.
        let cfg = CmdbConfig {
            list_hosts_without_biz_path: "list_hosts_without_biz/".into(),
            list_biz_hosts_path: "list_biz_hosts/".into(),
            page_size: 7,
            ..config(format!("{origin}{}", paths::CMDB_ESB_BASE), vec![a, b])
        };
        assert_eq!(client(&cfg).list_hosts().await.unwrap(), want);
        let cfg = CmdbConfig {
            biz_ids: vec![],
            ..cfg
        };
        assert_eq!(client(&cfg).list_hosts().await.unwrap().len(), 600);
    }

    #[tokio::test]
    async fn a_failing_page_fails_the_listing() {
        let (sim, origin) = simulator(2345).await;
        sim.fail_inventory_page(3, 1);
        let cfg = config(format!("{origin}{}", paths::CMDB_BASE), vec![]);
        match client(&cfg).list_hosts().await {
            Err(ApiError::Business { code, .. }) => assert_eq!(code, 1_199_999),
            other => panic!("expected a business error, got {other:?}"),
        }
        assert_eq!(sim.stats().inventory_page_failures, 1);
    }

    type Requests = Arc<Mutex<Vec<(String, Value)>>>;
    type Tweak = fn(usize, &mut Value) -> Option<StatusCode>;

    fn host_json(id: i64) -> Value {
        json!({
            "bk_host_id": id, "bk_cloud_id": 0,
            "bk_host_innerip": format!("10.0.{}.{}", id / 256, id % 256),
            "bk_host_innerip_v6": "",
            "bk_agent_id": if id % 2 == 0 { Value::Null } else { json!(format!("agent-{id}")) },
            "bk_host_name": format!("host-{id}"), "bk_os_type": "1",
        })
    }

    /// CMDB on any path over hosts `1..=total`; records every request; `tweak(start,
    /// body)` may alter an answer (the `limit: 1` count call has start 0 too).
    fn cmdb(total: i64, requests: Requests, tweak: Tweak) -> Router {
        Router::new().fallback(move |uri: Uri, Json(req): Json<Value>| {
            let requests = requests.clone();
            async move {
                requests
                    .lock()
                    .unwrap()
                    .push((uri.path().to_owned(), req.clone()));
                let start = req["page"]["start"].as_i64().unwrap();
                let limit = req["page"]["limit"].as_i64().unwrap();
                let info: Vec<Value> = (start + 1..=(start + limit).min(total))
                    .map(host_json)
                    .collect();
                let mut body = json!({"result": true, "code": 0, "message": "success",
                    "permission": null, "data": {"count": total, "info": info}});
                match tweak(start as usize, &mut body) {
                    Some(status) => (status, Json(body)).into_response(),
                    None => Json(body).into_response(),
                }
            }
        })
    }

    fn as_is(_: usize, _: &mut Value) -> Option<StatusCode> {
        None
    }

    async fn fake(total: i64, tweak: Tweak) -> (Requests, CmdbConfig) {
        let requests = Requests::default();
        let base = serve(cmdb(total, requests.clone(), tweak)).await;
        (requests, config(base, vec![]))
    }

    #[tokio::test]
    async fn requests_carry_page_fields_and_supplier_account_after_a_count_call() {
        let (requests, cfg) = fake(1001, as_is).await;
        let cfg = CmdbConfig {
            bk_supplier_account: "tenant-0".into(),
            biz_ids: vec![5],
            ..cfg
        };
        assert_eq!(client(&cfg).list_hosts().await.unwrap().len(), 1001);
        let mut seen = requests.lock().unwrap().clone();
        assert_eq!(seen[0].0, "/api/v3/hosts/app/5/list_hosts");
        assert_eq!(
            seen[0].1,
            json!({"bk_supplier_account": "tenant-0", "bk_biz_id": 5,
                "page": {"start": 0, "limit": 1, "sort": "bk_host_id"}, "fields": FIELDS})
        );
        seen.remove(0);
        let mut pages: Vec<(i64, i64)> = seen
            .iter()
            .map(|(path, body)| {
                assert_eq!(path, "/api/v3/hosts/app/5/list_hosts");
                assert_eq!(body["bk_biz_id"], 5);
                (
                    body["page"]["start"].as_i64().unwrap(),
                    body["page"]["limit"].as_i64().unwrap(),
                )
            })
            .collect();
        pages.sort_unstable();
        assert_eq!(pages, [(0, 500), (500, 500), (1000, 500)]);
    }

    #[tokio::test]
    async fn without_biz_there_is_no_bk_biz_id_and_an_empty_cmdb_is_one_call() {
        let (requests, cfg) = fake(0, as_is).await;
        assert!(client(&cfg).list_hosts().await.unwrap().is_empty());
        let seen = requests.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "/api/v3/hosts/list_hosts_without_app");
        assert!(seen[0].1.get("bk_biz_id").is_none());
    }

    #[tokio::test]
    async fn addresses_agent_id_and_os_type_are_read_like_cmdb_writes_them() {
        fn odd_hosts(_: usize, body: &mut Value) -> Option<StatusCode> {
            if let Some(info) = body["data"]["info"].as_array_mut() {
                if info.len() == 3 {
                    info[0]["bk_host_innerip"] = json!("10.0.0.1,10.0.0.2");
                    info[0]["bk_host_innerip_v6"] = json!(" ,fe80::1,fe80::2");
                    info[0]["bk_os_type"] = json!("2");
                    info[1] = json!({"bk_host_id": 2, "bk_host_innerip": null,
                        "bk_os_type": null, "bk_agent_id": null});
                    info[2]["bk_os_type"] = json!("7");
                    info[2]["bk_cloud_id"] = json!(3);
                }
            }
            None
        }
        let (_, cfg) = fake(3, odd_hosts).await;
        let hosts = client(&cfg).list_hosts().await.unwrap();
        assert_eq!(
            hosts[0],
            Host {
                host_id: 1,
                cloud_id: 0,
                biz_id: 0,
                ip: "10.0.0.1".into(),
                ipv6: "fe80::1".into(),
                bk_agent_id: "agent-1".into(),
                os_type: "WINDOWS".into(),
                nodeman_status: "".into(),
            }
        );
        assert_eq!(
            hosts[1],
            Host {
                host_id: 2,
                ..Host::default()
            }
        );
        assert_eq!((hosts[2].cloud_id, &*hosts[2].os_type), (3, "7"));
        assert_eq!(hosts[0].agent_id().unwrap(), "agent-1");
        assert_eq!(hosts[2].agent_id().unwrap(), "agent-3");
        assert_eq!(os_type_name("3"), "AIX");
        assert_eq!(os_type_name(""), "");
    }

    #[tokio::test]
    async fn a_count_changing_between_pages_is_inconsistent() {
        fn grow(start: usize, body: &mut Value) -> Option<StatusCode> {
            if start == 1000 {
                body["data"]["count"] = json!(2346);
            }
            None
        }
        let (_, cfg) = fake(2345, grow).await;
        match client(&cfg).list_hosts().await {
            Err(e @ ApiError::Inconsistent { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("page at start 1000 reports count 2346"),
                    "{text}"
                );
                assert!(text.starts_with("cmdb http://"), "{text}");
            }
            other => panic!("expected Inconsistent, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_short_page_is_inconsistent() {
        fn drop_one(start: usize, body: &mut Value) -> Option<StatusCode> {
            if start == 500 {
                body["data"]["info"].as_array_mut().unwrap().pop();
            }
            None
        }
        let (_, cfg) = fake(1200, drop_one).await;
        let err = client(&cfg).list_hosts().await.unwrap_err();
        assert!(matches!(err, ApiError::Inconsistent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_host_on_two_pages_is_inconsistent() {
        fn shift(start: usize, body: &mut Value) -> Option<StatusCode> {
            if start == 10 {
                body["data"]["info"][0] = host_json(1);
            }
            None
        }
        let (_, cfg) = fake(20, shift).await;
        let cfg = CmdbConfig {
            page_size: 10,
            ..cfg
        };
        let err = client(&cfg).list_hosts().await.unwrap_err();
        assert!(err.to_string().contains("host 1 appears twice"), "{err}");
    }

    #[tokio::test]
    async fn a_host_in_two_businesses_is_inconsistent() {
        let (_, cfg) = fake(5, as_is).await;
        let cfg = CmdbConfig {
            biz_ids: vec![2, 3],
            ..cfg
        };
        let err = client(&cfg).list_hosts().await.unwrap_err();
        assert!(
            err.to_string()
                .contains("host 1 is listed in business 2 and in business 3"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_page_failing_with_http_502_after_retries_fails_the_listing() {
        fn fail(start: usize, body: &mut Value) -> Option<StatusCode> {
            (start == 1500).then(|| {
                *body = json!({"result": false, "code": 1650200, "message": "bad gateway"});
                StatusCode::BAD_GATEWAY
            })
        }
        let (requests, cfg) = fake(2345, fail).await;
        let err = client(&cfg).list_hosts().await.unwrap_err();
        assert!(
            matches!(
                err,
                ApiError::Http {
                    status: 502,
                    code: Some(1650200),
                    ..
                }
            ),
            "{err:?}"
        );
        let retried = requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, b)| b["page"]["start"] == 1500)
            .count();
        assert_eq!(retried, 3, "one attempt and two retries");
    }

    #[tokio::test]
    async fn a_host_without_id_is_a_decode_error_naming_the_field() {
        fn no_id(start: usize, body: &mut Value) -> Option<StatusCode> {
            if start == 0 && body["data"]["info"].as_array().unwrap().len() > 1 {
                body["data"]["info"][1]
                    .as_object_mut()
                    .unwrap()
                    .remove("bk_host_id");
            }
            None
        }
        let (_, cfg) = fake(3, no_id).await;
        match client(&cfg).list_hosts().await {
            Err(ApiError::Decode { detail, .. }) => assert!(
                detail.starts_with("data.info[1]: missing field `bk_host_id`"),
                "{detail}"
            ),
            other => panic!("expected a decode error, got {other:?}"),
        }
    }
}
