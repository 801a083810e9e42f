//! A throw-away PKI for the TLS tests: a CA, a server certificate for 127.0.0.1 /
//! localhost, a client certificate, and an unrelated CA — generated at test time
//! (rcgen) and written as PEM files — plus a TLS-terminating TCP front for any
//! plain server (the simulator, a broker).

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::{server::WebPkiClientVerifier, RootCertStore, ServerConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

pub struct Pki {
    pub dir: tempfile::TempDir,
    /// PEM of the CA that signed the server and client certificates.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
    /// A private key that belongs to no certificate here.
    pub stray_key: PathBuf,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        let ca = CertifiedIssuer::self_signed(
            ca_params("agentwatch test CA"),
            KeyPair::generate().expect("key"),
        )
        .expect("CA");
        let other = CertifiedIssuer::self_signed(
            ca_params("unrelated test CA"),
            KeyPair::generate().expect("key"),
        )
        .expect("other CA");

        let server_key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
        p.distinguished_name.push(DnType::CommonName, "localhost");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = p.signed_by(&server_key, &ca).expect("server cert");

        let client_key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("client params");
        p.distinguished_name.push(DnType::CommonName, "agentwatch");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = p.signed_by(&client_key, &ca).expect("client cert");

        Pki {
            ca: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
            other_ca: write("other-ca.pem", other.pem()),
            stray_key: write(
                "stray.key",
                KeyPair::generate().expect("key").serialize_pem(),
            ),
            dir,
        }
    }

    /// A rustls server config with the server certificate; `require_client_cert`
    /// demands a client certificate signed by the CA.
    pub fn server_config(&self, require_client_cert: bool) -> Arc<ServerConfig> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.server_cert)
            .expect("server cert")
            .collect::<Result<_, _>>()
            .expect("server cert PEM");
        let key = PrivateKeyDer::from_pem_file(&self.server_key).expect("server key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = if require_client_cert {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&self.ca).expect("ca") {
                roots.add(c.expect("ca PEM")).expect("ca root");
            }
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .expect("verifier"),
            )
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(builder.with_single_cert(certs, key).expect("server config"))
    }

    /// The CA as a reqwest root.
    pub fn reqwest_ca(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(&std::fs::read(&self.ca).expect("read CA")).expect("CA")
    }

    /// The client certificate and key as a reqwest identity.
    pub fn reqwest_identity(&self) -> reqwest::Identity {
        let mut pem = std::fs::read(&self.client_cert).expect("client cert");
        pem.extend(std::fs::read(&self.client_key).expect("client key"));
        reqwest::Identity::from_pem(&pem).expect("identity")
    }
}

/// Accepts TLS on a fresh loopback port and forwards the decrypted bytes to
/// `upstream`; failed handshakes just close the connection. Lives as long as the
/// runtime.
pub async fn tls_front(upstream: SocketAddr, config: Arc<ServerConfig>) -> SocketAddr {
    tls_front_on(
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TLS front"),
        upstream,
        config,
    )
}

/// [`tls_front`] on a listener the caller bound (to know the port in advance).
pub fn tls_front_on(
    listener: tokio::net::TcpListener,
    upstream: SocketAddr,
    config: Arc<ServerConfig>,
) -> SocketAddr {
    let addr = listener.local_addr().expect("front addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}
