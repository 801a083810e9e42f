//! The HTTP endpoint: `/metrics`, `/healthz`, `/readyz`.

mod config;
mod server;

pub use config::HttpConfig;
pub use server::{router, serve, Health};
