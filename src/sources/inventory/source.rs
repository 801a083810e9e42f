//! The configured inventory source, whichever it is.

use std::sync::Arc;

use super::{file::FileInventory, Host, SourceKind};
use crate::{
    config::Config,
    metrics::Metrics,
    sources::{bk::ApiError, cmdb::CmdbClient, nodeman::NodemanClient},
};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    File(#[from] super::file::FileError),
}

pub enum InventorySource {
    Nodeman(NodemanClient),
    Cmdb(CmdbClient),
    File(FileInventory),
}

impl InventorySource {
    pub fn from_config(cfg: &Config, metrics: Arc<Metrics>) -> Result<Self, ApiError> {
        Ok(match cfg.inventory.source {
            SourceKind::Nodeman => {
                InventorySource::Nodeman(NodemanClient::new(&cfg.nodeman, &cfg.bk, metrics)?)
            }
            SourceKind::Cmdb => {
                InventorySource::Cmdb(CmdbClient::new(&cfg.cmdb, &cfg.bk, metrics)?)
            }
            SourceKind::File => InventorySource::File(
                FileInventory::new(cfg.inventory.file.clone().unwrap_or_default())
                    .with_max_bytes(cfg.inventory.max_file_bytes),
            ),
        })
    }

    pub fn kind(&self) -> SourceKind {
        match self {
            InventorySource::Nodeman(_) => SourceKind::Nodeman,
            InventorySource::Cmdb(_) => SourceKind::Cmdb,
            InventorySource::File(_) => SourceKind::File,
        }
    }

    /// Every host, or an error: never a partial list.
    pub async fn fetch(&self) -> Result<Vec<Host>, InventoryError> {
        Ok(match self {
            InventorySource::Nodeman(c) => c.search_hosts().await?,
            InventorySource::Cmdb(c) => c.list_hosts().await?,
            InventorySource::File(f) => f.load()?,
        })
    }

    /// For a file inventory: true when the file changed since it was last loaded (so
    /// it is reloaded before `inventory_interval` is up). API sources: false.
    pub fn changed(&self) -> bool {
        match self {
            InventorySource::File(f) => f.changed(),
            _ => false,
        }
    }
}
