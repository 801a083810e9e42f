//! Reading PEM files into rustls types, each problem reported against its field.

use std::path::Path;

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use crate::config::FieldErrors;

/// Every `CERTIFICATE` block of `path`; `None` (with the reason pushed under `field`)
/// when the file cannot be read, is not PEM or holds no certificate.
pub(super) fn certs(
    field: &str,
    path: &Path,
    errs: &mut FieldErrors,
) -> Option<Vec<CertificateDer<'static>>> {
    let bytes = read(field, path, errs)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    match certs {
        Ok(c) if c.is_empty() => {
            errs.push(
                field,
                format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                ),
            );
            None
        }
        Ok(c) => Some(c),
        Err(e) => {
            errs.push(field, format!("{} is not valid PEM: {e}", path.display()));
            None
        }
    }
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of `path`.
pub(super) fn key(
    field: &str,
    path: &Path,
    errs: &mut FieldErrors,
) -> Option<PrivateKeyDer<'static>> {
    let bytes = read(field, path, errs)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(k) => Some(k),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            errs.push(
                field,
                format!(
                    "{} holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
                    path.display()
                ),
            );
            None
        }
        Err(e) => {
            errs.push(field, format!("{} is not valid PEM: {e}", path.display()));
            None
        }
    }
}

fn read(field: &str, path: &Path, errs: &mut FieldErrors) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) => {
            errs.push(field, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// A rustls error about a certificate/key pair in words an operator can act on.
pub(super) fn pair_error(e: &rustls::Error, cert_field: &str) -> String {
    match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            format!("does not belong to the certificate in {cert_field} (their public keys differ)")
        }
        other => format!("cannot be used with the certificate in {cert_field}: {other}"),
    }
}
