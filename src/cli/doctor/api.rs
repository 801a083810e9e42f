//! `api ...`: one authenticated call per BlueKing API agentwatch uses, through the
//! service's own clients (same headers, URLs and envelope rules) with retries off;
//! failures are explained by [`super::diagnose`].
//!
//! The inventory is asked first (NodeMan page 1 with page size 1, the CMDB count call,
//! or the host file) so that GSE can be asked about an agent that really exists; without
//! one, GSE is asked about a made-up legacy id, which still proves access.

use std::{future::Future, net::Ipv4Addr, sync::Arc, time::Duration};

use super::{
    diagnose::{explain, is_not_found, Api, Ctx, Kind},
    Check,
};
use crate::{
    config::Config,
    metrics::Metrics,
    snapshot::StatusNames,
    sources::{
        bk::{ApiError, RetryConfig},
        cmdb::CmdbClient,
        gse::{GseApi, GseClient, GseConfig, GseV1Client},
        inventory::{file::FileInventory, Host, SourceKind},
        nodeman::NodemanClient,
    },
};

/// Asked about when the inventory gave no agent: a legacy `cloud:ip` id GSE accepts in
/// form and, answering "not found", proves the call is authorised.
const MADE_UP_HOST: (i64, &str) = (0, "127.0.0.1");

/// The API checks for `cfg`; upstreams whose key is not in `reachable` are skipped.
pub async fn checks(cfg: &Config, reachable: &[&str], timeout: Duration) -> Vec<Check> {
    let probe = Probe {
        ctx: Ctx { cfg, timeout },
        reachable,
        metrics: Metrics::new(),
    };
    let (mut out, known) = probe.inventory().await;
    if cfg.nodeman.plugins {
        out.push(probe.plugins().await);
    }
    let target = Target::from(known.as_ref());
    if matches!(cfg.gse.api, GseApi::V2 | GseApi::Auto) {
        out.extend(probe.gse_v2(&target).await);
    }
    if matches!(cfg.gse.api, GseApi::V1 | GseApi::Auto) {
        out.extend(probe.gse_v1(&target).await);
    }
    out
}

/// What GSE is asked about, and how to say where it came from.
struct Target {
    id: String,
    id_note: String,
    host: (i64, String),
    host_note: String,
}

impl From<Option<&Host>> for Target {
    fn from(known: Option<&Host>) -> Self {
        let made_up_id = format!("{}:{}", MADE_UP_HOST.0, MADE_UP_HOST.1);
        let (id, id_note) = match known.and_then(|h| h.agent_id().ok()) {
            Some(id) => (id.clone(), format!("agent {id} from the inventory")),
            None => (
                made_up_id,
                "a made-up id (the inventory gave no agent)".to_owned(),
            ),
        };
        let v4 = known.filter(|h| h.ip.parse::<Ipv4Addr>().is_ok());
        let (host, host_note) = match v4 {
            Some(h) => (
                (h.cloud_id, h.ip.clone()),
                format!("host {}:{} from the inventory", h.cloud_id, h.ip),
            ),
            None => (
                (MADE_UP_HOST.0, MADE_UP_HOST.1.to_owned()),
                "a made-up host (the inventory gave no IPv4 host)".to_owned(),
            ),
        };
        Target {
            id,
            id_note,
            host,
            host_note,
        }
    }
}

struct Probe<'a> {
    ctx: Ctx<'a>,
    reachable: &'a [&'a str],
    metrics: Arc<Metrics>,
}

impl Probe<'_> {
    fn cfg(&self) -> &Config {
        self.ctx.cfg
    }

    /// One attempt, the doctor's timeout: a failure is reported as it is, not retried away.
    fn once(&self) -> RetryConfig {
        RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        }
    }

    /// Runs `call` unless the API's base URL was unreachable; `ok` describes a success.
    async fn check<T, F>(
        &self,
        api: &Api,
        call: F,
        ok: impl FnOnce(T) -> Result<String, ApiError>,
    ) -> Check
    where
        F: Future<Output = Result<T, ApiError>>,
    {
        if !self.reachable.contains(&api.base_key) {
            return Check::skip(
                api.check,
                format!("{} is not reachable (see its reach line)", api.base_key),
            );
        }
        match call.await.and_then(ok) {
            Ok(detail) => Check::ok(api.check, detail),
            Err(e) => self.explained(api, &e),
        }
    }

    fn explained(&self, api: &Api, e: &ApiError) -> Check {
        let (detail, fix) = explain(api, &self.ctx, e);
        Check::fail(api.check, detail, fix)
    }

    fn nodeman(&self) -> Result<NodemanClient, ApiError> {
        let mut c = self.cfg().nodeman.clone();
        c.timeout = self.ctx.timeout;
        c.retry = self.once();
        NodemanClient::new(&c, &self.cfg().bk, self.metrics.clone())
    }

    fn gse_config(&self) -> GseConfig {
        let mut c = self.cfg().gse.clone();
        c.timeout = self.ctx.timeout;
        c.retry = self.once();
        c.concurrency = 1;
        c
    }

    fn nodeman_api(&self, check: &'static str, resource: &str) -> Api {
        Api {
            kind: Kind::Nodeman,
            check,
            base_key: "nodeman.base_url",
            base_url: self.cfg().nodeman.base_url.clone(),
            resource: resource.to_owned(),
        }
    }

    /// The inventory check, and the first host it named.
    async fn inventory(&self) -> (Vec<Check>, Option<Host>) {
        let cfg = self.cfg();
        let mut known = None;
        let check = match cfg.inventory.source {
            SourceKind::Nodeman => {
                let api = self.nodeman_api("api nodeman host/search", "api/host/search/");
                let call = async { self.nodeman()?.probe_hosts().await };
                self.check(&api, call, |(total, hosts)| {
                    known = hosts.into_iter().next();
                    Ok(inventory_detail("NodeMan", total, known.as_ref()))
                })
                .await
            }
            SourceKind::Cmdb => {
                let api = Api {
                    kind: Kind::Cmdb,
                    check: "api cmdb host listing",
                    base_key: "cmdb.base_url",
                    base_url: cfg.cmdb.base_url.clone(),
                    resource: if cfg.cmdb.biz_ids.is_empty() {
                        cfg.cmdb.list_hosts_without_biz_path.clone()
                    } else {
                        cfg.cmdb.list_biz_hosts_path.clone()
                    },
                };
                let call = async {
                    let mut c = cfg.cmdb.clone();
                    c.timeout = self.ctx.timeout;
                    c.retry = self.once();
                    CmdbClient::new(&c, &cfg.bk, self.metrics.clone())?
                        .probe()
                        .await
                };
                self.check(&api, call, |(count, hosts)| {
                    known = hosts.into_iter().next();
                    Ok(inventory_detail("CMDB", count, known.as_ref()))
                })
                .await
            }
            SourceKind::File => file_check(cfg, &mut known),
        };
        (vec![check], known)
    }

    async fn plugins(&self) -> Check {
        let api = self.nodeman_api("api nodeman plugin/search", "api/plugin/search/");
        let call = async { self.nodeman()?.probe_plugins().await };
        self.check(&api, call, |total| {
            Ok(format!("plugin search lists {total} hosts"))
        })
        .await
    }

    async fn gse_v2(&self, target: &Target) -> Vec<Check> {
        let cfg = self.cfg();
        let auto = cfg.gse.api == GseApi::Auto;
        let state = Api {
            kind: Kind::GseV2,
            check: "api gse list_agent_state",
            base_key: "gse.base_url",
            base_url: cfg.gse.base_url.clone(),
            resource: "cluster/list_agent_state".to_owned(),
        };
        let names = StatusNames::from_config(&cfg.gse.status_names);
        let ids = [crate::sources::inventory::AgentId::from(target.id.as_str())];
        let client = || GseClient::new(&self.gse_config(), &cfg.bk, self.metrics.clone());
        // With "auto" a missing GSE 2.0 is expected: the service falls back to 1.x.
        let fallback = |e: ApiError| -> Result<String, ApiError> {
            if auto && is_not_found(&e) {
                Ok(format!(
                    "GSE 2.0 is not there (HTTP 404 / 1640401); gse.api = \"auto\" falls back \
                     to GSE 1.x, checked below ({e})"
                ))
            } else {
                Err(e)
            }
        };
        let call = async { client()?.list_agent_state(&ids).await };
        let mut out = vec![
            self.check(&state, async { Ok(call.await) }, |r| match r {
                Ok(states) => Ok(match states.iter().find(|s| s.agent_id == target.id) {
                    Some(s) => format!(
                        "asked about {}: status_code {} ({})",
                        target.id_note,
                        s.status_code,
                        names.name(s.status_code)
                    ),
                    None => format!(
                        "asked about {}: GSE does not know it (not_found)",
                        target.id_note
                    ),
                }),
                Err(e) => fallback(e),
            })
            .await,
        ];
        if cfg.gse.agent_info {
            let info = Api {
                check: "api gse list_agent_info",
                resource: "cluster/list_agent_info".to_owned(),
                ..state
            };
            let call = async { client()?.list_agent_info(&ids).await };
            out.push(
                self.check(&info, async { Ok(call.await) }, |r| match r {
                    Ok(v) => Ok(format!(
                        "asked about {}: {} answer(s)",
                        target.id_note,
                        v.len()
                    )),
                    Err(e) => fallback(e),
                })
                .await,
            );
        }
        out
    }

    async fn gse_v1(&self, target: &Target) -> Vec<Check> {
        let cfg = self.cfg();
        let status = Api {
            kind: Kind::GseV1,
            check: "api gse get_agent_status",
            base_key: "gse.esb_base_url",
            base_url: cfg.gse.esb_base_url.clone(),
            resource: "get_agent_status/".to_owned(),
        };
        let hosts = [target.host.clone()];
        let client = || GseV1Client::new(&self.gse_config(), &cfg.bk, self.metrics.clone());
        let call = async { client()?.get_agent_status(&hosts).await };
        let mut out = vec![
            self.check(&status, call, |answers| {
                Ok(match answers.first() {
                    Some(a) => format!(
                        "asked about {}: bk_agent_alive {} ({})",
                        target.host_note,
                        a.alive,
                        if a.alive == 1 { "online" } else { "offline" }
                    ),
                    None => format!("asked about {}: GSE does not know it", target.host_note),
                })
            })
            .await,
        ];
        if cfg.gse.agent_info {
            let info = Api {
                check: "api gse get_agent_info",
                resource: "get_agent_info/".to_owned(),
                ..status
            };
            let call = async { client()?.get_agent_info(&hosts).await };
            out.push(
                self.check(&info, call, |v| {
                    Ok(format!(
                        "asked about {}: {} answer(s)",
                        target.host_note,
                        v.len()
                    ))
                })
                .await,
            );
        }
        out
    }
}

fn inventory_detail(system: &str, total: i64, first: Option<&Host>) -> String {
    let first = match first.map(Host::agent_id) {
        Some(Ok(id)) => format!("; first agent {id}"),
        Some(Err(_)) => "; the first host has no agent id (no bk_agent_id, no IPv4)".to_owned(),
        None => String::new(),
    };
    let warning = if total == 0 {
        " — an empty inventory: agentwatch would watch nothing"
    } else {
        ""
    };
    format!("{system} lists {total} hosts{first}{warning}")
}

fn file_check(cfg: &Config, known: &mut Option<Host>) -> Check {
    const NAME: &str = "inventory file";
    let Some(path) = cfg.inventory.file.clone() else {
        return Check::fail(
            NAME,
            "inventory.source = \"file\" but inventory.file is not set",
            "set inventory.file to a YAML or CSV host list",
        );
    };
    match FileInventory::new(path.clone())
        .with_max_bytes(cfg.inventory.max_file_bytes)
        .load()
    {
        Ok(hosts) => {
            let total = hosts.len() as i64;
            *known = hosts.into_iter().next();
            let shown = path.display().to_string();
            Check::ok(NAME, inventory_detail(&shown, total, known.as_ref()))
        }
        Err(e) => Check::fail(
            NAME,
            e.to_string(),
            "fix the file (each host needs agent_id, or cloud_id and ip; see README \
             `inventory.file`); agentwatch re-reads it when it changes",
        ),
    }
}
