//! CMDB: an alternative host inventory.

mod client;
mod config;

pub use client::CmdbClient;
pub use config::CmdbConfig;
