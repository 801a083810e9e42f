//! NodeMan `api/plugin/search/` (bk-api.md B §5.3): every host with the status and
//! version of its plugin processes (bkmonitorbeat, bkunifylogbeat, ...). Paged exactly
//! like host search, through the same loop, so the result is complete or an error.

use serde::{Deserialize, Serialize};

use super::{host_search::HostRow, NodemanClient};
use crate::sources::bk::{null_as_default, ApiError};

/// One plugin on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    pub name: String,
    /// NodeMan's process state string: RUNNING, TERMINATED, UNREGISTER, ...
    pub status: String,
    pub version: String,
}

/// The plugins of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlugins {
    pub host_id: i64,
    pub plugins: Vec<Plugin>,
}

/// No `conditions`: they would also drop the hosts without a matching plugin, and a
/// host listed with no plugins is how an uninstalled plugin shows. Names are filtered
/// here instead.
#[derive(Serialize)]
struct PageRequest {
    /// 1-based.
    page: usize,
    pagesize: usize,
    /// Ask for the full `plugin_status` of each host.
    detail: bool,
}

/// One `list` item: host fields (skipped, except the id) plus `plugin_status`.
#[derive(Deserialize)]
pub(crate) struct WireHostPlugins {
    bk_host_id: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    plugin_status: Vec<WirePlugin>,
}

impl HostRow for WireHostPlugins {
    fn host_id(&self) -> i64 {
        self.bk_host_id
    }
}

#[derive(Deserialize)]
pub(crate) struct WirePlugin {
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    status: String,
    #[serde(default, deserialize_with = "null_as_default")]
    version: String,
}

impl NodemanClient {
    /// Every host's plugins (all pages; complete or an error). `names` limits the
    /// plugins reported (empty = all); every host is reported, with an empty list when
    /// it has none of them.
    pub async fn search_plugins(&self, names: &[String]) -> Result<Vec<HostPlugins>, ApiError> {
        let page_size = self.page_size;
        let hosts: Vec<WireHostPlugins> = self
            .all_pages(&self.plugin_url, |page| PageRequest {
                page,
                pagesize: page_size,
                detail: true,
            })
            .await?;
        Ok(select_plugins(hosts, names))
    }
}

/// Each host with the plugins named in `names` (empty = all).
pub(crate) fn select_plugins(hosts: Vec<WireHostPlugins>, names: &[String]) -> Vec<HostPlugins> {
    let wanted = |name: &str| names.is_empty() || names.iter().any(|n| n == name);
    hosts
        .into_iter()
        .map(|h| HostPlugins {
            host_id: h.bk_host_id,
            plugins: h
                .plugin_status
                .into_iter()
                .filter(|p| wanted(&p.name))
                .map(|p| Plugin {
                    name: p.name,
                    status: p.status,
                    version: p.version,
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashSet,
        sync::{Arc, Mutex},
    };

    use axum::{http::StatusCode, response::IntoResponse, routing::post, Json, Router};
    use serde_json::{json, Value};

    use super::*;
    use crate::{
        metrics::Metrics,
        sources::{
            bk::tests::{bk_config, fast_retry, serve},
            nodeman::NodemanConfig,
        },
    };

    const PATH: &str = "/api/plugin/search/";

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

    /// Host `id` as plugin search lists it: every third host has no plugins.
    fn item(id: i64) -> Value {
        let plugins = if id % 3 == 0 {
            json!([])
        } else {
            json!([
                {"name": "bkmonitorbeat", "status": "RUNNING", "version": "3.42.1502", "host_id": id},
                {"name": "processbeat", "status": if id == 7 { "TERMINATED" } else { "RUNNING" },
                    "version": "1.17.45", "host_id": id},
            ])
        };
        json!({
            "bk_host_id": id, "bk_cloud_id": 0, "bk_biz_id": 2, "bk_agent_id": format!("a{id}"),
            "inner_ip": "10.0.0.1", "os_type": "LINUX", "status": "RUNNING",
            "cpu_arch": "x86_64", "node_type": "AGENT", "node_from": "NODE_MAN",
            "plugin_status": plugins,
        })
    }

    /// NodeMan over `total` hosts; records request bodies; `fail_page` answers 502.
    fn nodeman(total: i64, seen: Arc<Mutex<Vec<Value>>>, fail_page: Option<u64>) -> Router {
        Router::new().route(
            PATH,
            post(move |Json(req): Json<Value>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(req.clone());
                    let page = req["page"].as_u64().unwrap();
                    if Some(page) == fail_page {
                        let body =
                            json!({"result": false, "code": 1650200, "message": "bad gateway"});
                        return (StatusCode::BAD_GATEWAY, Json(body)).into_response();
                    }
                    let size = req["pagesize"].as_i64().unwrap();
                    let from = (page as i64 - 1) * size + 1;
                    let to = (page as i64 * size).min(total);
                    let list: Vec<Value> = (from..=to).map(item).collect();
                    Json(json!({"result": true, "code": 0, "message": "",
                        "data": {"total": total, "list": list}}))
                    .into_response()
                }
            }),
        )
    }

    #[tokio::test]
    async fn all_pages_are_fetched_and_every_host_arrives_once_with_its_plugins() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let base = serve(nodeman(25, seen.clone(), None)).await;
        let got = client(&base, 10).search_plugins(&[]).await.unwrap();
        assert_eq!(got.len(), 25);
        let ids: HashSet<i64> = got.iter().map(|h| h.host_id).collect();
        assert_eq!(ids, (1..=25).collect());

        let h7 = got.iter().find(|h| h.host_id == 7).unwrap();
        assert_eq!(
            h7.plugins,
            [
                Plugin {
                    name: "bkmonitorbeat".into(),
                    status: "RUNNING".into(),
                    version: "3.42.1502".into(),
                },
                Plugin {
                    name: "processbeat".into(),
                    status: "TERMINATED".into(),
                    version: "1.17.45".into(),
                },
            ]
        );
        assert!(got
            .iter()
            .find(|h| h.host_id == 9)
            .unwrap()
            .plugins
            .is_empty());

        let mut bodies = seen.lock().unwrap().clone();
        bodies.sort_by_key(|b| b["page"].as_u64());
        assert_eq!(
            bodies,
            (1..=3)
                .map(|p| json!({"page": p, "pagesize": 10, "detail": true}))
                .collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn names_limit_the_plugins_but_not_the_hosts() {
        let base = serve(nodeman(6, Arc::default(), None)).await;
        let got = client(&base, 10)
            .search_plugins(&["processbeat".to_owned()])
            .await
            .unwrap();
        assert_eq!(got.len(), 6);
        for h in &got {
            let names: Vec<&str> = h.plugins.iter().map(|p| p.name.as_str()).collect();
            let want: &[&str] = if h.host_id % 3 == 0 {
                &[]
            } else {
                &["processbeat"]
            };
            assert_eq!(names, want, "host {}", h.host_id);
        }
    }

    #[tokio::test]
    async fn a_failing_page_fails_the_search() {
        let base = serve(nodeman(25, Arc::default(), Some(2))).await;
        let err = client(&base, 10).search_plugins(&[]).await.unwrap_err();
        assert!(matches!(err, ApiError::Http { status: 502, .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_page_with_a_different_total_fails_the_search() {
        let app = Router::new().route(
            PATH,
            post(|Json(req): Json<Value>| async move {
                let page = req["page"].as_i64().unwrap();
                let total = if page == 1 { 2 } else { 3 };
                Json(json!({"result": true, "data": {"total": total, "list": [item(page)]}}))
            }),
        );
        let err = client(&serve(app).await, 1)
            .search_plugins(&[])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ApiError::Inconsistent { endpoint, .. } if endpoint.ends_with(PATH)),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn null_plugin_status_and_fields_take_defaults() {
        let app = Router::new().route(
            PATH,
            post(|| async {
                Json(json!({"result": true, "data": {"total": 2, "list": [
                    {"bk_host_id": 1, "plugin_status": null},
                    {"bk_host_id": 2, "plugin_status": [{"name": "x", "status": null}]},
                ]}}))
            }),
        );
        let got = client(&serve(app).await, 10)
            .search_plugins(&[])
            .await
            .unwrap();
        assert!(got[0].plugins.is_empty());
        assert_eq!(
            got[1].plugins,
            [Plugin {
                name: "x".into(),
                status: String::new(),
                version: String::new(),
            }]
        );
    }
}
