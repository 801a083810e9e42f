//! Agent status from whichever GSE API generation is configured (`gse.api`), with the
//! "auto" fallback from 2.0 to 1.x.

use crate::sources::inventory::AgentId;
use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use super::{
    GseAgentInfo, GseAgentState, GseApi, GseClient, GseConfig, GseV1Client, STATUS_RUNNING,
    STATUS_V1_OFFLINE,
};
use crate::{
    metrics::Metrics,
    sources::{
        bk::{ApiError, BkConfig},
        inventory::HostRow,
    },
};

/// Gateway code for "no such API" (wrong path or unpublished resource).
const API_NOT_FOUND: i64 = 1_640_401;

pub struct StatusSource {
    mode: GseApi,
    v2: Option<GseClient>,
    v1: Option<GseV1Client>,
    /// With "auto": set once v2 turned out not to exist.
    fell_back: AtomicBool,
    metrics: Arc<Metrics>,
}

impl StatusSource {
    pub fn new(cfg: &GseConfig, bk: &BkConfig, metrics: Arc<Metrics>) -> Result<Self, ApiError> {
        let v2 = match cfg.api {
            GseApi::V2 | GseApi::Auto => Some(GseClient::new(cfg, bk, metrics.clone())?),
            GseApi::V1 => None,
        };
        let v1 = match cfg.api {
            GseApi::V1 | GseApi::Auto => Some(GseV1Client::new(cfg, bk, metrics.clone())?),
            GseApi::V2 => None,
        };
        let s = StatusSource {
            mode: cfg.api,
            v2,
            v1,
            fell_back: AtomicBool::new(false),
            metrics,
        };
        s.publish_api();
        Ok(s)
    }

    /// The generation in use now: v2 or v1 (never auto).
    pub fn active(&self) -> GseApi {
        match self.mode {
            GseApi::Auto if self.fell_back.load(Ordering::Relaxed) => GseApi::V1,
            GseApi::Auto => GseApi::V2,
            m => m,
        }
    }

    fn publish_api(&self) {
        let active = self.active();
        for api in [GseApi::V2, GseApi::V1] {
            self.metrics
                .gse_api
                .with_label_values(&[api.label()])
                .set(i64::from(api == active));
        }
    }

    /// Status of one batch. `ids[i]` is the agent id of `hosts[i]`. GSE 1.x is keyed by
    /// cloud:ip and knows only IPv4: the poller does not put IPv6-only hosts into a
    /// batch while v1 is active (see [`needs_ipv4`](Self::needs_ipv4)).
    pub async fn query(
        &self,
        ids: &[AgentId],
        hosts: &[HostRow],
    ) -> Result<Vec<GseAgentState>, ApiError> {
        if self.active() == GseApi::V2 {
            if let Some(v2) = &self.v2 {
                match v2.list_agent_state(ids).await {
                    Err(e) if self.mode == GseApi::Auto && is_missing_api(&e) => {
                        self.fall_back(&e);
                    }
                    other => return other,
                }
            }
        }
        self.query_v1(ids, hosts).await
    }

    async fn query_v1(
        &self,
        ids: &[AgentId],
        hosts: &[HostRow],
    ) -> Result<Vec<GseAgentState>, ApiError> {
        let Some(v1) = &self.v1 else {
            return Ok(Vec::new());
        };
        let (keys, by_key) = v1_keys(ids, hosts);
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let answers = v1.get_agent_status(&keys).await?;
        Ok(answers
            .into_iter()
            .filter_map(|a| {
                let id = by_key.get(&(a.cloud_id, a.ip.parse::<Ipv4Addr>().ok()?))?;
                Some(GseAgentState {
                    agent_id: (*id).to_owned(),
                    cloud_id: a.cloud_id,
                    version: String::new(),
                    run_mode: 0,
                    status_code: if a.alive == 1 {
                        STATUS_RUNNING
                    } else {
                        STATUS_V1_OFFLINE
                    },
                    v1_alive: Some(a.alive),
                })
            })
            .collect())
    }

    /// Agent details of one batch (v2 `list_agent_info`, v1 `get_agent_info`).
    pub async fn agent_info(
        &self,
        ids: &[AgentId],
        hosts: &[HostRow],
    ) -> Result<Vec<GseAgentInfo>, ApiError> {
        match (self.active(), &self.v2, &self.v1) {
            (GseApi::V2, Some(v2), _) => v2.list_agent_info(ids).await,
            (_, _, Some(v1)) => {
                let (keys, by_key) = v1_keys(ids, hosts);
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(v1
                    .get_agent_info(&keys)
                    .await?
                    .into_iter()
                    .filter_map(|i| {
                        let id = by_key.get(&(i.cloud_id, i.ip.parse::<Ipv4Addr>().ok()?))?;
                        Some(GseAgentInfo {
                            agent_id: (*id).to_owned(),
                            parent_ip: i.parent_ip,
                            parent_port: i.parent_port,
                            version: i.version,
                            ..GseAgentInfo::default()
                        })
                    })
                    .collect())
            }
            _ => Ok(Vec::new()),
        }
    }

    /// True when hosts need an IPv4 address to be queried (GSE 1.x is active).
    pub fn needs_ipv4(&self) -> bool {
        self.active() == GseApi::V1
    }

    fn fall_back(&self, e: &ApiError) {
        if !self.fell_back.swap(true, Ordering::SeqCst) {
            tracing::warn!(error = %e,
                "GSE 2.0 list_agent_state does not exist here; gse.api = \"auto\" falls back to GSE 1.x get_agent_status");
            self.publish_api();
        }
    }
}

/// The v2 endpoint is absent: HTTP 404 or the gateway's API_NOT_FOUND code.
fn is_missing_api(e: &ApiError) -> bool {
    matches!(e, ApiError::Http { status: 404, .. }) || e.business_code() == Some(API_NOT_FOUND)
}

/// Agent id by (cloud, IPv4): how a GSE 1.x answer is mapped back. Keyed by the
/// address, not its text: a host has one only when its text was the canonical form
/// (see `HostRow`), so an answer matches exactly the hosts its text matched before,
/// and an answer whose `ip` does not parse matches none.
type ByKey<'a> = HashMap<(i64, Ipv4Addr), &'a str>;

/// The (cloud, IPv4) keys of a batch and the agent id each belongs to.
fn v1_keys<'a>(ids: &'a [AgentId], hosts: &[HostRow]) -> (Vec<(i64, String)>, ByKey<'a>) {
    let mut keys = Vec::with_capacity(hosts.len());
    let mut by_key = HashMap::with_capacity(hosts.len());
    for (id, h) in ids.iter().zip(hosts) {
        if let Some(ip) = h.ipv4() {
            keys.push((h.cloud_id(), ip.to_string()));
            by_key.insert((h.cloud_id(), ip), &**id);
        }
    }
    (keys, by_key)
}

/// True when GSE 1.x can be asked about this host (it has an IPv4 address).
pub fn has_ipv4(h: &HostRow) -> bool {
    h.ipv4().is_some()
}
