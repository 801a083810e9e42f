//! Transport security shared by the outgoing BlueKing clients (`[bk.tls]`) and the
//! HTTP endpoint (`[http.tls]`).
//!
//! Everything is rustls with the `ring` provider — the same rustls and provider that
//! reqwest already links, so there is one TLS stack and no aws-lc-sys build. PEM files
//! are read and checked when the config is validated, so a wrong path, a file without a
//! certificate or a key that does not belong to its certificate is reported with the
//! name of its field before anything connects.

mod client;
mod handshake;
mod pem;
mod server;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use client::ClientTlsConfig;
pub use handshake::handshake;
pub use server::ServerTlsConfig;

/// Lowest TLS version accepted (`min_version`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (default).
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

impl TlsVersion {
    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS12_UP: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsVersion::Tls12 => &TLS12_UP,
            TlsVersion::Tls13 => &TLS13_ONLY,
        }
    }
}

/// The one crypto provider of every TLS config built here.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
