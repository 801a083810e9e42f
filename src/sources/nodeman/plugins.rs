//! NodeMan `api/plugin/search/`. Placeholder until implemented.

use super::NodemanClient;
use crate::sources::bk::ApiError;

/// One plugin on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    pub name: String,
    pub status: String,
    pub version: String,
}

/// The plugins of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlugins {
    pub host_id: i64,
    pub plugins: Vec<Plugin>,
}

impl NodemanClient {
    /// Every host's plugins (all pages; complete or an error). `names` limits the
    /// plugins reported (empty = all).
    pub async fn search_plugins(&self, _names: &[String]) -> Result<Vec<HostPlugins>, ApiError> {
        Err(ApiError::Build {
            upstream: "nodeman",
            detail: "plugin search not implemented yet".to_owned(),
        })
    }
}
