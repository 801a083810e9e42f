//! `[bk.tls]`: how agentwatch verifies an https:// BlueKing upstream and, for mTLS,
//! which certificate it presents.

use std::path::PathBuf;

use rustls::{ClientConfig, RootCertStore};
use serde::{Deserialize, Serialize};

use super::{pem, provider, TlsVersion};
use crate::config::FieldErrors;

/// TLS towards https:// upstreams. Unset (the default), the public Mozilla roots
/// (webpki-roots) are trusted and no client certificate is sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM file of CA certificates to trust, e.g. the company CA that signed the
    /// gateway's certificate. Added to the public roots unless `ca_only` is true.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Trust only the CAs in `ca_file`, not the public roots.
    #[serde(default)]
    pub ca_only: bool,
    /// PEM certificate chain (leaf first) presented when the server asks for one
    /// (mutual TLS). Needs `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Lowest TLS version offered: "1.2" (default) or "1.3".
    #[serde(default)]
    pub min_version: TlsVersion,
}

impl ClientTlsConfig {
    /// True when nothing is configured, so the HTTP client keeps its own defaults.
    pub fn is_default(&self) -> bool {
        *self == ClientTlsConfig::default()
    }

    /// Reads and checks every file; problems are pushed under `prefix` (e.g. `bk.tls`).
    pub(crate) fn validate(&self, prefix: &str, errs: &mut FieldErrors) {
        let _ = self.build(prefix, errs);
    }

    /// The rustls client config, or `None` when some field is bad (every reason is
    /// pushed to `errs`, each under its own field).
    pub fn build(&self, prefix: &str, errs: &mut FieldErrors) -> Option<ClientConfig> {
        let field = |name: &str| format!("{prefix}.{name}");
        let before = errs.0.len();

        let mut roots = RootCertStore::empty();
        if !self.ca_only {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        match &self.ca_file {
            Some(path) => {
                if let Some(certs) = pem::certs(&field("ca_file"), path, errs) {
                    for (i, cert) in certs.into_iter().enumerate() {
                        if let Err(e) = roots.add(cert) {
                            errs.push(
                                field("ca_file"),
                                format!(
                                    "certificate #{} in {} cannot be a trust anchor: {e}",
                                    i + 1,
                                    path.display()
                                ),
                            );
                        }
                    }
                }
            }
            None if self.ca_only => errs.push(
                field("ca_only"),
                format!(
                    "needs {}: with no CA file nothing would be trusted",
                    field("ca_file")
                ),
            ),
            None => {}
        }

        let identity = match (&self.client_cert_file, &self.client_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let cert = pem::certs(&field("client_cert_file"), cert, errs);
                let key = pem::key(&field("client_key_file"), key, errs);
                cert.zip(key)
            }
            (Some(_), None) => {
                errs.push(
                    field("client_key_file"),
                    format!("must be set together with {}", field("client_cert_file")),
                );
                None
            }
            (None, Some(_)) => {
                errs.push(
                    field("client_cert_file"),
                    format!("must be set together with {}", field("client_key_file")),
                );
                None
            }
        };
        if errs.0.len() > before {
            return None;
        }

        let builder = match ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(self.min_version.versions())
        {
            Ok(b) => b.with_root_certificates(roots),
            Err(e) => {
                errs.push(field("min_version"), e.to_string());
                return None;
            }
        };
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((certs, key)) => match builder.with_client_auth_cert(certs, key) {
                Ok(c) => c,
                Err(e) => {
                    errs.push(
                        field("client_key_file"),
                        pem::pair_error(&e, &field("client_cert_file")),
                    );
                    return None;
                }
            },
        };
        // The BlueKing clients speak HTTP/1.1 only (reqwest is built without http2).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(config)
    }
}
