//! `reach <key>`: can this machine talk HTTP to an upstream base URL at all? Step by
//! step, so the failing step names its fix: DNS, TCP connect, then a plain GET of the
//! base URL through reqwest (rustls), which covers the TLS handshake for https. Any
//! HTTP answer, 404 included, counts as reachable: authentication and paths are the
//! API checks' business.

use std::{net::SocketAddr, time::Duration};

use reqwest::Url;
use tokio::net::TcpStream;

use super::Check;
use crate::{sources::bk::tls_config, tls::ClientTlsConfig};

/// Checks `url` (the value of config key `key`) with the TLS settings the service
/// uses (`[bk.tls]`), so a private CA or a required client certificate counts.
pub async fn reach(key: &str, url: &str, tls: &ClientTlsConfig, timeout: Duration) -> Check {
    let name = format!("reach {key}");
    let parsed = match Url::parse(url) {
        Ok(u) => u,
        Err(e) => {
            return Check::fail(
                name,
                format!("{url:?} is not a URL: {e}"),
                format!("set {key} to an http:// or https:// URL"),
            )
        }
    };
    let host = parsed
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let target = format!("{host}:{port}");
    let https = parsed.scheme() == "https";
    // reqwest (and so agentwatch) sends through a proxy from the environment; then a
    // failed direct DNS or TCP step proves nothing, and the GET decides.
    let proxy = proxy_from_env(parsed.scheme());
    let wait = humantime::format_duration(timeout);
    let mut steps = Vec::new();

    match direct(&host, port, timeout).await {
        Ok(addr) => {
            if addr.ip().to_string() != host {
                steps.push(format!("{host} resolves to {}", addr.ip()));
            }
            steps.push(format!("TCP connect to {addr} ok"));
        }
        Err(step) if proxy.is_none() => {
            let (detail, fix) = step.explain(key, &host, &target, &wait.to_string());
            return Check::fail(name, detail, fix);
        }
        Err(step) => steps.push(format!(
            "direct connection failed ({}); trying through proxy {}",
            step.short(),
            proxy.as_deref().unwrap_or_default()
        )),
    }

    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if !tls.is_default() {
        match tls_config(tls) {
            Ok(c) => builder = builder.use_preconfigured_tls(c),
            Err(e) => return Check::fail(name, e, "fix the bk.tls fields named above"),
        }
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            return Check::fail(
                name,
                format!("cannot build an HTTP client: {}", chain(&e)),
                "this is a bug or a broken TLS setup on this machine; report it",
            )
        }
    };
    match client.get(parsed.clone()).send().await {
        Ok(resp) => {
            if https {
                steps.push("TLS handshake ok".to_owned());
            }
            steps.push(format!(
                "HTTP {} to GET {}",
                resp.status().as_u16(),
                parsed.path()
            ));
            Check::ok(name, steps.join("; "))
        }
        Err(e) if e.is_timeout() => Check::fail(
            name,
            format!("{target} accepted the connection but sent no HTTP answer within {wait}"),
            format!(
                "something between here and {target} holds the request (a proxy, a firewall \
                 inspecting traffic) or the gateway is overloaded; check {key} points at the \
                 API gateway itself"
            ),
        ),
        Err(e) if https && e.is_connect() => Check::fail(
            name,
            format!("TLS handshake with {host} failed: {}", chain(&e)),
            format!(
                "agentwatch verifies certificates against the public Mozilla roots (rustls, \
                 webpki-roots){}: a self-signed certificate, one from a private CA not in \
                 bk.tls.ca_file or one issued for another name fails, and so does a port that \
                 does not speak TLS at all (an http:// endpoint written as https://). If the \
                 gateway uses a private CA, set bk.tls.ca_file to its PEM bundle; if it asks \
                 for a client certificate, set bk.tls.client_cert_file and \
                 bk.tls.client_key_file; otherwise check the host name in {key}",
                match &tls.ca_file {
                    Some(p) if tls.ca_only => format!(" — here only the CAs in {}", p.display()),
                    Some(p) => format!(" plus the CAs in {}", p.display()),
                    None => String::new(),
                }
            ),
        ),
        Err(e) => Check::fail(
            name,
            format!("GET {parsed} failed: {}", chain(&e)),
            format!(
                "check that {key} is the gateway's address and that nothing between here and \
                 {target} (proxy, firewall) breaks HTTP"
            ),
        ),
    }
}

/// Which step of the direct connection failed.
enum Step {
    Dns(String),
    DnsTimeout,
    NoAddress,
    Refused(String),
    ConnectTimeout,
    Connect(String),
}

impl Step {
    fn short(&self) -> &'static str {
        match self {
            Step::Dns(_) | Step::DnsTimeout | Step::NoAddress => "DNS",
            Step::Refused(_) => "connection refused",
            Step::ConnectTimeout => "connect timed out",
            Step::Connect(_) => "connect failed",
        }
    }

    /// (detail, fix)
    fn explain(&self, key: &str, host: &str, target: &str, wait: &str) -> (String, String) {
        let dns_fix = format!(
            "check the host name in {key}; make sure this machine's resolver (/etc/resolv.conf, \
             the pod's DNS) knows {host} — inside Kubernetes use a name resolvable from the pod, \
             e.g. the gateway's Service name or its IP"
        );
        let network_fix = format!(
            "network/firewall: allow traffic from this machine to {target} (security group, \
             firewall, Kubernetes egress NetworkPolicy), or set HTTPS_PROXY/HTTP_PROXY if the \
             gateway is only reachable through a proxy; check host and port in {key}"
        );
        match self {
            Step::Dns(e) => (format!("DNS cannot resolve {host}: {e}"), dns_fix),
            Step::DnsTimeout => (format!("DNS lookup of {host} took over {wait}"), dns_fix),
            Step::NoAddress => (format!("DNS returned no address for {host}"), dns_fix),
            Step::Refused(e) => (
                format!("TCP connect to {target} refused: {e}"),
                format!(
                    "nothing listens on {target}: wrong host or port in {key}, or the gateway \
                     is down (a firewall that rejects instead of dropping looks the same); \
                     {network_fix}"
                ),
            ),
            Step::ConnectTimeout => (
                format!("TCP connect to {target} got no answer within {wait}"),
                format!("packets are dropped on the way: {network_fix}"),
            ),
            Step::Connect(e) => (format!("TCP connect to {target} failed: {e}"), network_fix),
        }
    }
}

/// DNS, then TCP to each address in turn; the first address that connects.
async fn direct(host: &str, port: u16, timeout: Duration) -> Result<SocketAddr, Step> {
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => return Err(Step::Dns(e.to_string())),
            Err(_) => return Err(Step::DnsTimeout),
        };
    let mut last = Step::NoAddress;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Ok(addr),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Step::Refused(e.to_string())
            }
            Ok(Err(e)) => last = Step::Connect(e.to_string()),
            Err(_) => last = Step::ConnectTimeout,
        }
    }
    Err(last)
}

/// The proxy reqwest would use for `scheme`, from the usual environment variables
/// (NO_PROXY is not evaluated: this only decides whether a direct failure is final).
fn proxy_from_env(scheme: &str) -> Option<String> {
    let names: &[&str] = if scheme == "https" {
        &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
    };
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

/// An error and its sources, without repeats.
pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn doctor_reach_names_the_refused_port_and_the_key() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The listener is dropped: the port is closed.
        let c = reach(
            "nodeman.base_url",
            &format!("http://127.0.0.1:{port}/api/bk-nodeman/prod/"),
            &ClientTlsConfig::default(),
            Duration::from_secs(2),
        )
        .await;
        if proxy_from_env("http").is_some() {
            return;
        }
        assert!(c.failed());
        assert!(c.detail.contains("refused"), "{}", c.detail);
        let fix = c.fix.unwrap();
        assert!(
            fix.contains("nodeman.base_url") && fix.contains("firewall"),
            "{fix}"
        );
    }

    #[tokio::test]
    async fn doctor_reach_counts_any_http_answer_as_reachable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let app = axum::Router::new();
            let _ = axum::serve(listener, app).await;
        });
        let c = reach(
            "gse.base_url",
            &format!("http://{addr}/api/bk-gse/prod/api/v2/"),
            &ClientTlsConfig::default(),
            Duration::from_secs(2),
        )
        .await;
        assert!(!c.failed(), "{c:?}");
        assert!(c.detail.contains("HTTP 404"), "{}", c.detail);
    }
}
