//! [`handshake`]: the server side of one TLS connection of the HTTP endpoint.
//!
//! The endpoint's accept loop (`http/server.rs`) runs it inside each connection's own
//! task, so one slow or silent client cannot hold up everybody else's accept.

use std::{sync::Arc, time::Duration};

use tokio::net::TcpStream;
use tokio_rustls::{server::TlsStream, TlsAcceptor};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Completes the TLS handshake on `stream`; `None` (logged at debug) when it fails or
/// takes longer than 10 s.
pub async fn handshake(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> Option<TlsStream<TcpStream>> {
    let peer = stream.peer_addr().ok();
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        // Scanners, plain-HTTP clients and clients without an accepted certificate
        // all end here; debug keeps them out of normal logs.
        Ok(Err(e)) => {
            tracing::debug!(?peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(?peer, "TLS handshake timed out");
            None
        }
    }
}
