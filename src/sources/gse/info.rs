//! GSE 2.0 `cluster/list_agent_info`. Placeholder until implemented.

use super::GseClient;
use crate::sources::bk::ApiError;

/// One agent's details from `list_agent_info`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GseAgentInfo {
    pub agent_id: String,
    pub parent_ip: String,
    pub parent_port: i32,
    /// Unix milliseconds.
    pub report_time_ms: i64,
    /// Unix milliseconds (GSE sends seconds).
    pub start_time_ms: i64,
    pub cpu_rate: f64,
    pub mem_rate: f64,
    pub version: String,
}

impl GseClient {
    pub async fn list_agent_info(&self, _ids: &[String]) -> Result<Vec<GseAgentInfo>, ApiError> {
        let _ = (&self.client, &self.base_url);
        Err(ApiError::Build {
            upstream: "gse",
            detail: "list_agent_info not implemented yet".to_owned(),
        })
    }
}
