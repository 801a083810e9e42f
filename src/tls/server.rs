//! `[http.tls]`: serving `/metrics`, the query API and the slot receiver over HTTPS.

use std::{path::PathBuf, sync::Arc};

use rustls::{server::WebPkiClientVerifier, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};

use super::{pem, provider, TlsVersion};
use crate::config::FieldErrors;

/// HTTPS for the HTTP endpoint. Absent (the default), it serves plain HTTP — the
/// choice for a pod whose service mesh (Istio, Linkerd) already encrypts traffic.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain served to clients (leaf first), e.g. `tls.crt` of a
    /// Kubernetes TLS Secret.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file` (`tls.key`).
    pub key_file: PathBuf,
    /// PEM CA bundle; when set, every client must present a certificate signed by one
    /// of these CAs (mutual TLS), Prometheus and query clients included.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Lowest TLS version accepted: "1.2" (default) or "1.3".
    #[serde(default)]
    pub min_version: TlsVersion,
}

impl ServerTlsConfig {
    /// Reads and checks every file; problems are pushed under `prefix` (`http.tls`).
    pub(crate) fn validate(&self, prefix: &str, errs: &mut FieldErrors) {
        let _ = self.build(prefix, errs);
    }

    /// The rustls server config, or `None` when some field is bad (every reason is
    /// pushed to `errs`, each under its own field).
    pub fn build(&self, prefix: &str, errs: &mut FieldErrors) -> Option<Arc<ServerConfig>> {
        let field = |name: &str| format!("{prefix}.{name}");
        let before = errs.0.len();
        let certs = pem::certs(&field("cert_file"), &self.cert_file, errs);
        let key = pem::key(&field("key_file"), &self.key_file, errs);
        let client_roots = self.client_ca_file.as_ref().and_then(|path| {
            let certs = pem::certs(&field("client_ca_file"), path, errs)?;
            let mut roots = RootCertStore::empty();
            for (i, cert) in certs.into_iter().enumerate() {
                if let Err(e) = roots.add(cert) {
                    errs.push(
                        field("client_ca_file"),
                        format!(
                            "certificate #{} in {} cannot be a trust anchor: {e}",
                            i + 1,
                            path.display()
                        ),
                    );
                }
            }
            Some(roots)
        });
        if errs.0.len() > before {
            return None;
        }
        let (Some(certs), Some(key)) = (certs, key) else {
            return None;
        };

        let builder = match ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(self.min_version.versions())
        {
            Ok(b) => b,
            Err(e) => {
                errs.push(field("min_version"), e.to_string());
                return None;
            }
        };
        let builder = match client_roots {
            None => builder.with_no_client_auth(),
            Some(roots) => {
                match WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                {
                    Ok(verifier) => builder.with_client_cert_verifier(verifier),
                    Err(e) => {
                        errs.push(field("client_ca_file"), e.to_string());
                        return None;
                    }
                }
            }
        };
        let mut config = match builder.with_single_cert(certs, key) {
            Ok(c) => c,
            Err(e) => {
                errs.push(field("key_file"), pem::pair_error(&e, &field("cert_file")));
                return None;
            }
        };
        // The endpoint is HTTP/1.1 only (axum is built with the http1 feature).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(Arc::new(config))
    }
}
