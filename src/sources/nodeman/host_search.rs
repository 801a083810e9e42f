//! NodeMan `api/host/search/` (bk-api.md B §5.2): the whole host inventory, page by
//! page. The result is complete or an error, never a partial inventory: a missing
//! host would otherwise look like a deleted one.
//!
//! The paging loop ([`NodemanClient::all_pages`]) is shared with `api/plugin/search/`,
//! which pages the same host list.

use std::{collections::HashSet, sync::Arc};

use futures::{stream, StreamExt};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::NodemanConfig;
use crate::{
    metrics::Metrics,
    sources::{
        bk::{null_as_default, ApiError, BkClient, BkConfig, Upstream},
        inventory::Host,
    },
};

#[derive(Clone, Debug)]
pub struct NodemanClient {
    client: BkClient,
    url: String,
    /// `api/plugin/search/`.
    pub(super) plugin_url: String,
    pub(super) page_size: usize,
    concurrency: usize,
    /// `nodeman.max_hosts`.
    max_hosts: usize,
}

#[derive(Serialize)]
struct PageRequest {
    /// 1-based.
    page: usize,
    pagesize: usize,
}

/// One page of a NodeMan host list (`{total, list}`).
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
pub(crate) struct Page<T> {
    total: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    list: Vec<T>,
}

/// An item of a paged NodeMan host list, identified by its host id.
pub(crate) trait HostRow: DeserializeOwned {
    fn host_id(&self) -> i64;
}

impl HostRow for WireHost {
    fn host_id(&self) -> i64 {
        self.bk_host_id
    }
}

/// One `list` item; the many other fields NodeMan sends are skipped.
#[derive(Deserialize)]
pub(crate) struct WireHost {
    bk_host_id: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    bk_cloud_id: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    bk_biz_id: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    inner_ip: String,
    #[serde(default, deserialize_with = "null_as_default")]
    inner_ipv6: String,
    #[serde(default, deserialize_with = "null_as_default")]
    bk_agent_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    os_type: String,
    #[serde(default, deserialize_with = "null_as_default")]
    status: String,
}

impl From<WireHost> for Host {
    fn from(w: WireHost) -> Self {
        Host {
            host_id: w.bk_host_id,
            cloud_id: w.bk_cloud_id,
            biz_id: w.bk_biz_id,
            ip: w.inner_ip,
            ipv6: w.inner_ipv6,
            bk_agent_id: w.bk_agent_id,
            os_type: w.os_type.into(),
            nodeman_status: w.status.into(),
        }
    }
}

impl NodemanClient {
    pub fn new(
        cfg: &NodemanConfig,
        bk: &BkConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ApiError> {
        let client = BkClient::new(
            Upstream::Nodeman,
            bk,
            cfg.timeout,
            cfg.retry.clone(),
            cfg.concurrency,
            cfg.max_response_bytes,
            metrics,
        )?;
        Ok(NodemanClient {
            client,
            url: format!("{}api/host/search/", cfg.base_url),
            plugin_url: format!("{}api/plugin/search/", cfg.base_url),
            page_size: cfg.page_size.max(1),
            concurrency: cfg.concurrency.max(1),
            max_hosts: cfg.max_hosts,
        })
    }

    /// Every host, all pages (see [`all_pages`](Self::all_pages)): complete or an error.
    pub async fn search_hosts(&self) -> Result<Vec<Host>, ApiError> {
        let page_size = self.page_size;
        let hosts: Vec<WireHost> = self
            .all_pages(&self.url, |page| PageRequest {
                page,
                pagesize: page_size,
            })
            .await?;
        Ok(hosts.into_iter().map(Host::from).collect())
    }

    /// One authenticated call for `agentwatch doctor`: page 1 of `api/host/search/` with
    /// page size 1, giving NodeMan's total and at most one host (not the inventory).
    pub async fn probe_hosts(&self) -> Result<(i64, Vec<Host>), ApiError> {
        let request = PageRequest {
            page: 1,
            pagesize: 1,
        };
        let page: Page<WireHost> = self.client.post(&self.url, &request).await?;
        Ok((page.total, page.list.into_iter().map(Host::from).collect()))
    }

    /// The same for `api/plugin/search/` (its own gateway resource and permission): the
    /// total it reports.
    pub async fn probe_plugins(&self) -> Result<i64, ApiError> {
        #[derive(Serialize)]
        struct PluginPage {
            page: usize,
            pagesize: usize,
            detail: bool,
        }
        let request = PluginPage {
            page: 1,
            pagesize: 1,
            detail: true,
        };
        let page: Page<serde::de::IgnoredAny> =
            self.client.post(&self.plugin_url, &request).await?;
        Ok(page.total)
    }

    /// Every item of the paged host list at `url`; `request(n)` is the body asking for
    /// page `n` (1-based) of `page_size` items. Page 1 gives `total`; pages
    /// `2..=ceil(total/page_size)` are then fetched `concurrency` at a time. Any failed
    /// page, a page reporting another `total` or holding an unexpected number of hosts,
    /// or a host id seen twice fails the whole listing with no result.
    pub(super) async fn all_pages<T, B>(
        &self,
        url: &str,
        request: impl Fn(usize) -> B,
    ) -> Result<Vec<T>, ApiError>
    where
        T: HostRow,
        B: Serialize,
    {
        let first: Page<T> = self.client.post(url, &request(1)).await?;
        let mut all = Collector::new(url, first.total, self.page_size, self.max_hosts)?;
        let pages = all.expected.div_ceil(self.page_size).max(1);
        all.take(1, first)?;

        let mut rest = stream::iter(2..=pages)
            .map(|n| {
                let body = request(n);
                async move { (n, self.client.post::<_, Page<T>>(url, &body).await) }
            })
            .buffered(self.concurrency);
        // Returning early drops the stream, which cancels the pages still in flight.
        while let Some((n, page)) = rest.next().await {
            let page = page.inspect_err(|e| {
                tracing::debug!(upstream = "nodeman", url, page = n, error = %e, "NodeMan page failed");
            })?;
            all.take(n, page)?;
        }
        all.finish()
    }
}

/// The items of a listing whose page bodies (pages 1, 2, ... in order) were already
/// fetched: the same decoding and checks as [`NodemanClient::all_pages`], without HTTP.
/// For fuzzing.
pub(crate) fn collect_bodies<T: HostRow>(
    url: &str,
    page_size: usize,
    bodies: &[&[u8]],
) -> Result<Vec<T>, ApiError> {
    let endpoint = format!("{} {url}", Upstream::Nodeman);
    let page_size = page_size.max(1);
    let decode = |body: &[u8]| crate::sources::bk::envelope::decode::<Page<T>>(&endpoint, body);
    let Some((first, rest)) = bodies.split_first() else {
        return Err(inconsistent(url, "no page 1".to_owned()));
    };
    let first = decode(first)?;
    let max_hosts = crate::sources::DEFAULT_MAX_HOSTS;
    let mut all = Collector::new(url, first.total, page_size, max_hosts)?;
    let pages = all.expected.div_ceil(page_size).max(1);
    all.take(1, first)?;
    for (i, body) in rest.iter().take(pages - 1).enumerate() {
        all.take(i + 2, decode(body)?)?;
    }
    all.finish()
}

/// Most hosts room is reserved for up front; a listing with more grows as pages arrive.
const MAX_RESERVED_HOSTS: usize = 100_000;

/// The pages of one listing so far, each checked against what page 1 promised.
struct Collector<'a, T> {
    url: &'a str,
    /// As page 1 reported it.
    total: i64,
    expected: usize,
    page_size: usize,
    items: Vec<T>,
    seen: HashSet<i64>,
}

impl<'a, T: HostRow> Collector<'a, T> {
    fn new(url: &'a str, total: i64, page_size: usize, max_hosts: usize) -> Result<Self, ApiError> {
        let expected = usize::try_from(total)
            .map_err(|_| inconsistent(url, format!("page 1 reports a negative total {total}")))?;
        // Checked before anything is allocated for `total` or any other page is asked for.
        if expected > max_hosts {
            return Err(ApiError::OverLimit {
                endpoint: format!("{} {url}", Upstream::Nodeman),
                what: "hosts",
                value: total,
                limit: max_hosts,
                field: "nodeman.max_hosts",
            });
        }
        Ok(Collector {
            url,
            total,
            expected,
            page_size,
            // `total` is upstream data: reserve for at most a realistic inventory, or
            // one bad number would ask for gigabytes before the first page is checked.
            items: Vec::with_capacity(expected.min(MAX_RESERVED_HOSTS)),
            seen: HashSet::with_capacity(expected.min(MAX_RESERVED_HOSTS)),
        })
    }

    /// Checks page `n` against page 1 and appends its items.
    fn take(&mut self, n: usize, page: Page<T>) -> Result<(), ApiError> {
        let (total, size) = (self.total, self.page_size);
        if page.total != total {
            return Err(inconsistent(
                self.url,
                format!(
                    "page {n} reports total {}, page 1 reported {total} (hosts changed while paging)",
                    page.total
                ),
            ));
        }
        let want = self.expected.saturating_sub((n - 1) * size).min(size);
        if page.list.len() != want {
            return Err(inconsistent(
                self.url,
                format!(
                    "page {n} holds {} hosts, expected {want} (total {total}, page size {size})",
                    page.list.len(),
                ),
            ));
        }
        for item in page.list {
            let id = item.host_id();
            if !self.seen.insert(id) {
                return Err(inconsistent(
                    self.url,
                    format!("host {id} appears twice (page {n}); hosts changed while paging"),
                ));
            }
            self.items.push(item);
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<T>, ApiError> {
        if self.items.len() != self.expected {
            return Err(inconsistent(
                self.url,
                format!(
                    "received {} hosts, total is {}",
                    self.items.len(),
                    self.total
                ),
            ));
        }
        Ok(self.items)
    }
}

fn inconsistent(url: &str, detail: String) -> ApiError {
    ApiError::Inconsistent {
        endpoint: format!("{} {url}", Upstream::Nodeman),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    };

    use axum::{http::StatusCode, response::IntoResponse, routing::post, Json, Router};
    use serde_json::{json, Value};

    use super::*;
    use crate::sources::bk::tests::{bk_config, fast_retry, serve};

    const PATH: &str = "/api/host/search/";

    fn client(base: &str, page_size: usize) -> NodemanClient {
        let cfg = NodemanConfig {
            base_url: base.to_owned(),
            page_size,
            concurrency: 3,
            retry: fast_retry(),
            ..NodemanConfig::default()
        };
        NodemanClient::new(&cfg, &bk_config(), Metrics::new()).unwrap()
    }

    fn host_json(id: i64) -> Value {
        json!({
            "bk_host_id": id, "bk_cloud_id": 0, "bk_biz_id": 2,
            "inner_ip": format!("10.0.{}.{}", id / 256, id % 256), "inner_ipv6": null,
            "bk_agent_id": if id % 2 == 0 { Value::Null } else { json!(format!("agent-{id}")) },
            "os_type": "LINUX", "status": "RUNNING", "status_display": "正常",
            "job_result": {}, "topology": ["biz/set/module"],
        })
    }

    /// NodeMan over `total` hosts; `tweak(page, body)` may alter a page's answer.
    fn nodeman(
        total: i64,
        requested: Arc<Mutex<Vec<usize>>>,
        tweak: fn(usize, &mut Value) -> Option<StatusCode>,
    ) -> Router {
        Router::new().route(
            PATH,
            post(move |Json(req): Json<Value>| {
                let requested = requested.clone();
                async move {
                    let page = req["page"].as_u64().unwrap() as usize;
                    let size = req["pagesize"].as_u64().unwrap() as i64;
                    requested.lock().unwrap().push(page);
                    let from = (page as i64 - 1) * size + 1;
                    let to = (page as i64 * size).min(total);
                    let list: Vec<Value> = (from..=to).map(host_json).collect();
                    let mut body = json!({"result": true, "code": 0, "message": "",
                        "data": {"total": total, "list": list}});
                    match tweak(page, &mut body) {
                        Some(status) => (status, Json(body)).into_response(),
                        None => Json(body).into_response(),
                    }
                }
            }),
        )
    }

    fn as_is(_: usize, _: &mut Value) -> Option<StatusCode> {
        None
    }

    #[tokio::test]
    async fn all_pages_are_fetched_and_every_host_arrives_exactly_once() {
        let requested = Arc::new(Mutex::new(Vec::new()));
        let base = serve(nodeman(2345, requested.clone(), as_is)).await;
        let hosts = client(&base, 500).search_hosts().await.unwrap();
        assert_eq!(hosts.len(), 2345);
        let ids: HashSet<i64> = hosts.iter().map(|h| h.host_id).collect();
        assert_eq!(ids, (1..=2345).collect());
        let mut pages = requested.lock().unwrap().clone();
        pages.sort();
        assert_eq!(pages, [1, 2, 3, 4, 5]);

        let h = hosts.iter().find(|h| h.host_id == 2).unwrap();
        assert_eq!(
            *h,
            Host {
                host_id: 2,
                cloud_id: 0,
                biz_id: 2,
                ip: "10.0.0.2".into(),
                ipv6: String::new(),
                bk_agent_id: String::new(),
                os_type: "LINUX".into(),
                nodeman_status: "RUNNING".into(),
            }
        );
        assert_eq!(
            hosts.iter().find(|h| h.host_id == 3).unwrap().bk_agent_id,
            "agent-3"
        );
    }

    #[tokio::test]
    async fn a_total_of_exactly_max_hosts_is_listed_and_one_more_fails_after_page_one() {
        let client_with = |base: &str, max_hosts| {
            let cfg = NodemanConfig {
                base_url: base.to_owned(),
                page_size: 100,
                retry: fast_retry(),
                max_hosts,
                ..NodemanConfig::default()
            };
            NodemanClient::new(&cfg, &bk_config(), Metrics::new()).unwrap()
        };
        let requested = Arc::new(Mutex::new(Vec::new()));
        let base = serve(nodeman(250, requested.clone(), as_is)).await;
        assert_eq!(
            client_with(&base, 250).search_hosts().await.unwrap().len(),
            250
        );

        requested.lock().unwrap().clear();
        let e = client_with(&base, 249).search_hosts().await.unwrap_err();
        assert!(matches!(e, ApiError::OverLimit { limit: 249, .. }), "{e:?}");
        assert!(
            e.to_string().ends_with(
                "the answer announces 250 hosts, over the limit of 249 (nodeman.max_hosts)"
            ),
            "{e}"
        );
        assert_eq!(e.metric_label(), "too_large");
        assert!(!e.is_retryable());
        // Only page 1 was asked for.
        assert_eq!(*requested.lock().unwrap(), [1]);
    }

    #[tokio::test]
    async fn a_hostile_total_of_a_billion_hosts_fails_without_allocating_or_paging() {
        fn huge(_: usize, body: &mut Value) -> Option<StatusCode> {
            body["data"]["total"] = json!(i64::MAX);
            None
        }
        let requested = Arc::new(Mutex::new(Vec::new()));
        let base = serve(nodeman(10, requested.clone(), huge)).await;
        let e = client(&base, 500).search_hosts().await.unwrap_err();
        assert!(e.to_string().contains("nodeman.max_hosts"), "{e}");
        assert_eq!(*requested.lock().unwrap(), [1]);
    }

    #[tokio::test]
    async fn empty_inventory_is_one_call_and_no_hosts() {
        let requested = Arc::new(Mutex::new(Vec::new()));
        let base = serve(nodeman(0, requested.clone(), as_is)).await;
        assert!(client(&base, 500).search_hosts().await.unwrap().is_empty());
        assert_eq!(*requested.lock().unwrap(), [1]);
    }

    #[tokio::test]
    async fn a_page_with_a_different_total_fails_the_search() {
        fn grow(page: usize, body: &mut Value) -> Option<StatusCode> {
            if page == 3 {
                body["data"]["total"] = json!(2346);
            }
            None
        }
        let base = serve(nodeman(2345, Arc::default(), grow)).await;
        match client(&base, 500).search_hosts().await {
            Err(e @ ApiError::Inconsistent { .. }) => {
                assert!(e.to_string().contains("page 3 reports total 2346"), "{e}");
                assert_eq!(e.metric_label(), "decode");
            }
            other => panic!("expected Inconsistent, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_short_page_fails_the_search() {
        fn drop_one(page: usize, body: &mut Value) -> Option<StatusCode> {
            if page == 2 {
                body["data"]["list"].as_array_mut().unwrap().pop();
            }
            None
        }
        let base = serve(nodeman(1200, Arc::default(), drop_one)).await;
        let err = client(&base, 500).search_hosts().await.unwrap_err();
        assert!(matches!(err, ApiError::Inconsistent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_host_seen_on_two_pages_fails_the_search() {
        fn shift(page: usize, body: &mut Value) -> Option<StatusCode> {
            if page == 2 {
                body["data"]["list"][0] = host_json(1);
            }
            None
        }
        let base = serve(nodeman(20, Arc::default(), shift)).await;
        let err = client(&base, 10).search_hosts().await.unwrap_err();
        assert!(err.to_string().contains("host 1 appears twice"), "{err}");
    }

    #[tokio::test]
    async fn a_failing_page_fails_the_search() {
        fn fail(page: usize, body: &mut Value) -> Option<StatusCode> {
            (page == 4).then(|| {
                *body = json!({"result": false, "code": 1650200, "message": "bad gateway"});
                StatusCode::BAD_GATEWAY
            })
        }
        let base = serve(nodeman(2345, Arc::default(), fail)).await;
        let err = client(&base, 500).search_hosts().await.unwrap_err();
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
    }

    #[tokio::test]
    async fn a_host_without_id_fails_the_search_naming_the_field() {
        fn no_id(page: usize, body: &mut Value) -> Option<StatusCode> {
            if page == 1 {
                body["data"]["list"][1]
                    .as_object_mut()
                    .unwrap()
                    .remove("bk_host_id");
            }
            None
        }
        let base = serve(nodeman(3, Arc::default(), no_id)).await;
        match client(&base, 10).search_hosts().await {
            Err(ApiError::Decode { detail, .. }) => assert!(
                detail.starts_with("data.list[1]: missing field `bk_host_id`"),
                "{detail}"
            ),
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn pages_are_fetched_at_most_concurrency_at_a_time() {
        static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
        static PEAK: AtomicUsize = AtomicUsize::new(0);
        let app = Router::new().route(
            PATH,
            post(|Json(req): Json<Value>| async move {
                let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
                PEAK.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
                let page = req["page"].as_i64().unwrap();
                Json(json!({"result": true, "data": {"total": 100, "list": [host_json(page)]}}))
            }),
        );
        let base = serve(app).await;
        assert_eq!(client(&base, 1).search_hosts().await.unwrap().len(), 100);
        assert!(PEAK.load(Ordering::SeqCst) <= 3);
    }
}
