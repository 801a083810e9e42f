//! GSE 1.x ESB `get_agent_status/` and `get_agent_info/`. Placeholder until implemented.

use std::sync::Arc;

use super::GseConfig;
use crate::{
    metrics::Metrics,
    sources::bk::{ApiError, BkClient, BkConfig, Upstream},
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

#[derive(Clone)]
pub struct GseV1Client {
    client: BkClient,
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
        Ok(GseV1Client { client })
    }

    pub async fn get_agent_status(
        &self,
        _hosts: &[(i64, String)],
    ) -> Result<Vec<V1Status>, ApiError> {
        let _ = &self.client;
        Err(ApiError::Build {
            upstream: "gse",
            detail: "GSE 1.x not implemented yet".to_owned(),
        })
    }

    pub async fn get_agent_info(&self, _hosts: &[(i64, String)]) -> Result<Vec<V1Info>, ApiError> {
        Err(ApiError::Build {
            upstream: "gse",
            detail: "GSE 1.x not implemented yet".to_owned(),
        })
    }
}
