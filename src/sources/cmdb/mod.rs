//! CMDB: an alternative host inventory.

mod client;
mod config;

pub(crate) use client::collect_bodies;
pub use client::CmdbClient;
pub use config::CmdbConfig;
