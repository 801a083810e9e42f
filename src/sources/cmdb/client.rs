//! CMDB host listing. Placeholder until implemented.

use std::sync::Arc;

use super::CmdbConfig;
use crate::{
    metrics::Metrics,
    sources::{
        bk::{ApiError, BkClient, BkConfig, Upstream},
        inventory::Host,
    },
};

#[derive(Clone)]
pub struct CmdbClient {
    client: BkClient,
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
        Ok(CmdbClient { client })
    }

    pub async fn list_hosts(&self) -> Result<Vec<Host>, ApiError> {
        let _ = &self.client;
        Err(ApiError::Build {
            upstream: "cmdb",
            detail: "CMDB inventory not implemented yet".to_owned(),
        })
    }
}
