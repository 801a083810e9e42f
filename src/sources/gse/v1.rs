//! GSE 1.x ESB `gse/get_agent_status/` (bk-api.md B §2.1) and `gse/get_agent_info/`
//! (§2.2): hosts are named by `(bk_cloud_id, IPv4)` and `data` is an object keyed
//! `"{bk_cloud_id}:{ip}"`.

use std::sync::Arc;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

use super::GseConfig;
use crate::{
    metrics::Metrics,
    sources::bk::{null_as_default, ApiError, BkClient, BkConfig, Upstream},
};

/// One host's `bk_agent_alive` from `get_agent_status/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Status {
    pub cloud_id: i64,
    pub ip: String,
    /// 1 online, 0 offline.
    pub alive: i32,
}

/// One host's details from `get_agent_info/`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct V1Info {
    pub cloud_id: i64,
    pub ip: String,
    pub version: String,
    pub parent_ip: String,
    pub parent_port: i32,
}

#[derive(Clone, Debug)]
pub struct GseV1Client {
    client: BkClient,
    status_url: String,
    info_url: String,
    supplier_account: String,
    /// Also put in the body, as bk-monitor does for ESB; the app credentials travel only
    /// in the auth header.
    username: String,
}

#[derive(Serialize)]
struct Request<'a> {
    bk_supplier_account: &'a str,
    bk_username: &'a str,
    hosts: Vec<HostAddr<'a>>,
}

#[derive(Serialize)]
struct HostAddr<'a> {
    ip: &'a str,
    bk_cloud_id: i64,
}

/// An integer that may also arrive as a numeric string (ESB components are loose here).
#[derive(Deserialize)]
#[serde(untagged)]
enum LooseInt {
    Int(i64),
    Text(String),
}

impl LooseInt {
    fn get(&self) -> Option<i64> {
        match self {
            LooseInt::Int(v) => Some(*v),
            LooseInt::Text(s) => s.trim().parse().ok(),
        }
    }
}

/// A `data` value that names its host; the key names it too and the two must agree.
trait Keyed: DeserializeOwned {
    fn ip(&self) -> Option<&str>;
    fn cloud_id(&self) -> Option<&LooseInt>;
}

#[derive(Deserialize)]
struct WireStatus {
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    bk_cloud_id: Option<LooseInt>,
    bk_agent_alive: i64,
}

impl Keyed for WireStatus {
    fn ip(&self) -> Option<&str> {
        self.ip.as_deref()
    }
    fn cloud_id(&self) -> Option<&LooseInt> {
        self.bk_cloud_id.as_ref()
    }
}

#[derive(Deserialize)]
struct WireInfo {
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    bk_cloud_id: Option<LooseInt>,
    #[serde(default, deserialize_with = "null_as_default")]
    version: String,
    #[serde(default, deserialize_with = "null_as_default")]
    parent_ip: String,
    #[serde(default)]
    parent_port: Option<LooseInt>,
}

impl Keyed for WireInfo {
    fn ip(&self) -> Option<&str> {
        self.ip.as_deref()
    }
    fn cloud_id(&self) -> Option<&LooseInt> {
        self.bk_cloud_id.as_ref()
    }
}

impl GseV1Client {
    pub fn new(cfg: &GseConfig, bk: &BkConfig, metrics: Arc<Metrics>) -> Result<Self, ApiError> {
        let client = BkClient::new(
            Upstream::Gse,
            bk,
            cfg.timeout,
            cfg.retry.clone(),
            cfg.concurrency,
            cfg.max_response_bytes,
            metrics,
        )?;
        Ok(GseV1Client {
            client,
            status_url: format!("{}get_agent_status/", cfg.esb_base_url),
            info_url: format!("{}get_agent_info/", cfg.esb_base_url),
            supplier_account: cfg.bk_supplier_account.clone(),
            username: bk.username.clone(),
        })
    }

    /// Liveness of one batch of `(bk_cloud_id, IPv4)` hosts: one [`V1Status`] per entry
    /// of `data`. Hosts GSE does not know are absent. An empty `hosts` makes no call.
    ///
    /// An entry whose key and value name different hosts, that names no host at all, or
    /// whose `bk_agent_alive` is not 0 or 1 fails the batch with [`ApiError::Decode`]
    /// naming the key: a guess would be worse than a failed batch, which keeps the last
    /// known state.
    pub async fn get_agent_status(
        &self,
        hosts: &[(i64, String)],
    ) -> Result<Vec<V1Status>, ApiError> {
        match self.post_hosts(&self.status_url, hosts).await? {
            Some(data) => statuses_from_data(&endpoint(&self.status_url), data),
            None => Ok(Vec::new()),
        }
    }

    /// Details of one batch of hosts (not realtime: up to a minute behind). Same keying,
    /// absence and error rules as [`get_agent_status`](Self::get_agent_status).
    pub async fn get_agent_info(&self, hosts: &[(i64, String)]) -> Result<Vec<V1Info>, ApiError> {
        match self.post_hosts(&self.info_url, hosts).await? {
            Some(data) => infos_from_data(&endpoint(&self.info_url), data),
            None => Ok(Vec::new()),
        }
    }

    /// Posts the batch and returns its `data`; `None` (no call) for no hosts.
    async fn post_hosts(
        &self,
        url: &str,
        hosts: &[(i64, String)],
    ) -> Result<Option<Value>, ApiError> {
        if hosts.is_empty() {
            return Ok(None);
        }
        let request = Request {
            bk_supplier_account: &self.supplier_account,
            bk_username: &self.username,
            hosts: hosts
                .iter()
                .map(|(cloud, ip)| HostAddr {
                    ip,
                    bk_cloud_id: *cloud,
                })
                .collect(),
        };
        self.client.post(url, &request).await.map(Some)
    }
}

/// How errors name a v1 endpoint: upstream and URL.
fn endpoint(url: &str) -> String {
    format!("{} {url}", Upstream::Gse)
}

/// One [`V1Status`] per entry of a decoded `get_agent_status/` `data` (pure; see
/// [`GseV1Client::get_agent_status`] for the rules).
pub(crate) fn statuses_from_data(endpoint: &str, data: Value) -> Result<Vec<V1Status>, ApiError> {
    keyed::<WireStatus>(endpoint, data)?
        .into_iter()
        .map(
            |(key, cloud_id, ip, w)| match i32::try_from(w.bk_agent_alive) {
                Ok(alive @ (0 | 1)) => Ok(V1Status {
                    cloud_id,
                    ip,
                    alive,
                }),
                _ => Err(decode_error(
                    endpoint,
                    format!(
                        "data[{key:?}].bk_agent_alive: expected 0 or 1, got {}",
                        w.bk_agent_alive
                    ),
                )),
            },
        )
        .collect()
}

/// One [`V1Info`] per entry of a decoded `get_agent_info/` `data` (pure).
pub(crate) fn infos_from_data(endpoint: &str, data: Value) -> Result<Vec<V1Info>, ApiError> {
    keyed::<WireInfo>(endpoint, data)?
        .into_iter()
        .map(|(key, cloud_id, ip, w)| {
            let parent_port = match &w.parent_port {
                None => 0,
                Some(p) => p.get().and_then(|p| i32::try_from(p).ok()).ok_or_else(|| {
                    decode_error(
                        endpoint,
                        format!("data[{key:?}].parent_port: not a port number"),
                    )
                })?,
            };
            Ok(V1Info {
                cloud_id,
                ip,
                version: w.version,
                parent_ip: w.parent_ip,
                parent_port,
            })
        })
        .collect()
}

/// `(key, cloud, ip, value)` per entry of `data`, decoded in two steps so that a bad
/// entry is reported by its key.
fn keyed<W: Keyed>(endpoint: &str, data: Value) -> Result<Vec<(String, i64, String, W)>, ApiError> {
    let map = match data {
        Value::Object(map) => map,
        // Nothing known; some ESB components encode an empty object as `[]`.
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) if a.is_empty() => return Ok(Vec::new()),
        other => {
            return Err(decode_error(
                endpoint,
                format!("data: expected an object keyed \"cloud:ip\", got {other}"),
            ))
        }
    };
    map.into_iter()
        .map(|(key, value)| {
            let w = W::deserialize(value)
                .map_err(|e| decode_error(endpoint, format!("data[{key:?}]: {e}")))?;
            let (cloud_id, ip) = resolve(&key, &w)
                .map_err(|why| decode_error(endpoint, format!("data[{key:?}]: {why}")))?;
            Ok((key, cloud_id, ip, w))
        })
        .collect()
}

fn decode_error(endpoint: &str, detail: String) -> ApiError {
    ApiError::Decode {
        endpoint: endpoint.to_owned(),
        detail,
    }
}

/// The host an entry is about: cloud and ip from the value, or from the `"cloud:ip"` key
/// where the value leaves them out; both present must agree.
fn resolve<W: Keyed>(key: &str, w: &W) -> Result<(i64, String), String> {
    let from_key = key
        .split_once(':')
        .and_then(|(cloud, ip)| Some((cloud.trim().parse::<i64>().ok()?, ip.trim())))
        .filter(|(_, ip)| !ip.is_empty());
    let cloud = match w.cloud_id() {
        Some(c) => Some(c.get().ok_or("bk_cloud_id is not an integer")?),
        None => None,
    };
    let ip = w.ip().map(str::trim).filter(|ip| !ip.is_empty());
    let (cloud, ip) = match (
        cloud.or(from_key.map(|k| k.0)),
        ip.or(from_key.map(|k| k.1)),
    ) {
        (Some(cloud), Some(ip)) => (cloud, ip),
        _ => return Err("neither the key nor the value names a cloud:ip".to_owned()),
    };
    if let Some((key_cloud, key_ip)) = from_key {
        if (key_cloud, key_ip) != (cloud, ip) {
            return Err(format!(
                "the key names another host than the value ({cloud}:{ip})"
            ));
        }
    }
    Ok((cloud, ip.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    };

    use axum::{routing::post, Json, Router};
    use serde_json::json;

    use super::*;
    use crate::sources::bk::tests::{bk_config, fast_retry, serve, SECRET};

    fn client(base: &str) -> GseV1Client {
        let cfg = GseConfig {
            esb_base_url: base.to_owned(),
            retry: fast_retry(),
            ..GseConfig::default()
        };
        GseV1Client::new(&cfg, &bk_config(), Metrics::new()).unwrap()
    }

    /// An ESB answering `data` on both paths; every request body is kept.
    fn esb(data: Value, seen: Arc<Mutex<Vec<Value>>>) -> Router {
        let answer = move |Json(req): Json<Value>| {
            let (data, seen) = (data.clone(), seen.clone());
            async move {
                seen.lock().unwrap().push(req);
                Json(json!({"result": true, "code": 0, "message": "", "data": data}))
            }
        };
        Router::new()
            .route("/get_agent_status/", post(answer.clone()))
            .route("/get_agent_info/", post(answer))
    }

    fn hosts(list: &[(i64, &str)]) -> Vec<(i64, String)> {
        list.iter().map(|(c, ip)| (*c, ip.to_string())).collect()
    }

    async fn status_of(data: Value) -> Result<Vec<V1Status>, ApiError> {
        let base = serve(esb(data, Arc::default())).await;
        client(&base)
            .get_agent_status(&hosts(&[(0, "10.0.0.1")]))
            .await
    }

    #[tokio::test]
    async fn keyed_data_is_mapped_to_one_status_per_host() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let data = json!({
            "0:10.0.0.1": {"ip": "10.0.0.1", "bk_cloud_id": 0, "bk_agent_alive": 1},
            "2:10.0.0.2": {"ip": "10.0.0.2", "bk_cloud_id": "2", "bk_agent_alive": 0},
        });
        let base = serve(esb(data, seen.clone())).await;
        let mut got = client(&base)
            .get_agent_status(&hosts(&[(0, "10.0.0.1"), (2, "10.0.0.2"), (0, "10.0.0.9")]))
            .await
            .unwrap();
        got.sort_by(|a, b| a.ip.cmp(&b.ip));
        assert_eq!(
            got,
            [
                V1Status {
                    cloud_id: 0,
                    ip: "10.0.0.1".into(),
                    alive: 1
                },
                V1Status {
                    cloud_id: 2,
                    ip: "10.0.0.2".into(),
                    alive: 0
                },
            ],
            "the unknown 0:10.0.0.9 is simply absent"
        );
        let body = seen.lock().unwrap()[0].clone();
        assert_eq!(
            body,
            json!({"bk_supplier_account": "0", "bk_username": "admin", "hosts": [
                {"ip": "10.0.0.1", "bk_cloud_id": 0},
                {"ip": "10.0.0.2", "bk_cloud_id": 2},
                {"ip": "10.0.0.9", "bk_cloud_id": 0},
            ]})
        );
        assert!(!body.to_string().contains(SECRET));
    }

    #[tokio::test]
    async fn a_value_without_ip_or_cloud_takes_them_from_its_key() {
        let got = status_of(json!({"3:10.0.0.1": {"bk_agent_alive": 1}}))
            .await
            .unwrap();
        assert_eq!(
            got,
            [V1Status {
                cloud_id: 3,
                ip: "10.0.0.1".into(),
                alive: 1
            }]
        );
    }

    #[tokio::test]
    async fn alive_other_than_zero_or_one_fails_the_batch_naming_the_key() {
        let err = status_of(json!({"0:10.0.0.1": {"ip": "10.0.0.1", "bk_cloud_id": 0,
            "bk_agent_alive": 2}}))
        .await
        .unwrap_err();
        match err {
            ApiError::Decode { detail, .. } => assert!(
                detail.starts_with("data[\"0:10.0.0.1\"].bk_agent_alive: expected 0 or 1, got 2"),
                "{detail}"
            ),
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_key_naming_another_host_than_its_value_fails_naming_the_key() {
        let err = status_of(json!({"0:10.0.0.9": {"ip": "10.0.0.1", "bk_cloud_id": 0,
            "bk_agent_alive": 1}}))
        .await
        .unwrap_err();
        match err {
            ApiError::Decode { detail, .. } => {
                assert!(detail.starts_with("data[\"0:10.0.0.9\"]: "), "{detail}")
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_unparseable_key_without_ip_in_the_value_fails_naming_the_key() {
        let err = status_of(json!({"garbage": {"bk_agent_alive": 1}}))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ApiError::Decode { detail, .. } if detail.contains("data[\"garbage\"]")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_entry_without_alive_fails_naming_the_key() {
        let err = status_of(json!({"0:10.0.0.1": {"ip": "10.0.0.1"}}))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ApiError::Decode { detail, .. }
                if detail.starts_with("data[\"0:10.0.0.1\"]: missing field `bk_agent_alive`")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn null_or_empty_data_means_no_host_is_known() {
        for data in [Value::Null, json!({}), json!([])] {
            assert!(status_of(data).await.unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn empty_hosts_make_no_call() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Json(json!({"result": true, "data": {}})) }
        });
        let c = client(&serve(app).await);
        assert!(c.get_agent_status(&[]).await.unwrap().is_empty());
        assert!(c.get_agent_info(&[]).await.unwrap().is_empty());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn business_errors_fail_the_batch() {
        let app = Router::new().route(
            "/get_agent_status/",
            post(|| async { Json(json!({"result": false, "code": 1306201, "message": "x"})) }),
        );
        let err = client(&serve(app).await)
            .get_agent_status(&hosts(&[(0, "10.0.0.1")]))
            .await
            .unwrap_err();
        assert_eq!(err.business_code(), Some(1306201));
    }

    #[tokio::test]
    async fn agent_info_is_keyed_like_status_and_tolerates_missing_fields() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let data = json!({
            "0:10.0.0.1": {"ip": "10.0.0.1", "bk_cloud_id": 0, "version": "1.7.17",
                "parent_ip": "10.0.255.1", "parent_port": 48533},
            "1:10.0.0.2": {"ip": "10.0.0.2", "bk_cloud_id": 1, "version": null,
                "parent_ip": null},
        });
        let base = serve(esb(data, seen.clone())).await;
        let mut got = client(&base)
            .get_agent_info(&hosts(&[(0, "10.0.0.1"), (1, "10.0.0.2")]))
            .await
            .unwrap();
        got.sort_by(|a, b| a.ip.cmp(&b.ip));
        assert_eq!(
            got,
            [
                V1Info {
                    cloud_id: 0,
                    ip: "10.0.0.1".into(),
                    version: "1.7.17".into(),
                    parent_ip: "10.0.255.1".into(),
                    parent_port: 48533,
                },
                V1Info {
                    cloud_id: 1,
                    ip: "10.0.0.2".into(),
                    ..V1Info::default()
                },
            ]
        );
        assert_eq!(seen.lock().unwrap()[0]["hosts"][1]["bk_cloud_id"], 1);
    }
}
