//! Transport security of the BlueKing clients (`[bk.tls]`) and of the HTTP endpoint
//! (`[http.tls]`), against real TLS: a CA, server and client certificates generated
//! at test time, and a TLS front (requiring a client certificate where stated) that
//! passes decrypted traffic to the simulator.

mod common;

use std::{collections::BTreeSet, time::Duration};

use agentwatch::{
    config::{load_str, Config, ConfigError},
    metrics::Metrics,
    sources::{bk::ApiError, gse::GseClient},
    tls::{ClientTlsConfig, ServerTlsConfig},
};
use common::{pki::*, *};

/// A service config whose GSE and NodeMan base URLs are https:// through `front`.
fn https_config(sim: &Sim, front: std::net::SocketAddr, brokers: &str, name: &str) -> Config {
    let mut cfg = service_config(sim, brokers, name);
    cfg.gse.base_url = format!("https://127.0.0.1:{}/api/bk-gse/prod/api/v2/", front.port());
    cfg.nodeman.base_url = format!("https://localhost:{}/api/bk-nodeman/prod/", front.port());
    cfg
}

fn tls(pki: &Pki, client_cert: bool) -> ClientTlsConfig {
    ClientTlsConfig {
        ca_file: Some(pki.ca.clone()),
        client_cert_file: client_cert.then(|| pki.client_cert.clone()),
        client_key_file: client_cert.then(|| pki.client_key.clone()),
        ..ClientTlsConfig::default()
    }
}

/// One `list_agent_state` call through the real GSE client with `cfg`'s settings.
async fn one_gse_call(cfg: &Config) -> Result<usize, ApiError> {
    let mut gse = cfg.gse.clone();
    gse.retry.max_retries = 0;
    let client = GseClient::new(&gse, &cfg.bk, Metrics::new())?;
    client
        .list_agent_state(&["no-such-agent".into()])
        .await
        .map(|v| v.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sweep_over_mutual_tls_with_a_private_ca_emits_every_agent() {
    let pki = Pki::new();
    let broker = Broker::shared();
    let sim = Sim::agents(20, 81).await;
    let front = tls_front(sim.addr, pki.server_config(true)).await;
    let mut cfg = https_config(&sim, front, &broker.brokers, "tls-mtls");
    cfg.bk.tls = tls(&pki, true);
    cfg.validate().expect("valid");

    let service = Service::start(&cfg).await;
    service.settle().await;
    let ok = metric_value(
        &reqwest::get(format!("http://{}/metrics", service.running().http_addr))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body"),
        "agentwatch_upstream_requests_total{outcome=\"ok\",upstream=\"gse\"}",
    );
    service.stop().await;

    let agents: BTreeSet<String> = read_topic(&broker.brokers, &cfg.kafka.events_topic)
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(
        agents.len(),
        20,
        "one event per simulated agent: {agents:?}"
    );
    assert!(ok >= 1.0, "GSE calls succeeded over https");
}

#[tokio::test]
async fn without_the_private_ca_the_gateway_certificate_is_rejected_by_name() {
    let pki = Pki::new();
    let sim = Sim::agents(3, 82).await;
    let front = tls_front(sim.addr, pki.server_config(false)).await;
    let mut cfg = https_config(&sim, front, "127.0.0.1:9", "tls-noca");

    // Public roots only (the default): the private CA is unknown.
    let err = one_gse_call(&cfg).await.expect_err("untrusted certificate");
    assert!(matches!(err, ApiError::Connect { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("certificate") && text.contains("UnknownIssuer"),
        "{text}"
    );

    // Only an unrelated CA trusted: the same failure.
    cfg.bk.tls = ClientTlsConfig {
        ca_file: Some(pki.other_ca.clone()),
        ca_only: true,
        ..ClientTlsConfig::default()
    };
    cfg.validate().expect("valid");
    let err = one_gse_call(&cfg).await.expect_err("wrong CA");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // The right CA: the call goes through (the agent is unknown, so no states).
    cfg.bk.tls = tls(&pki, false);
    cfg.validate().expect("valid");
    assert_eq!(one_gse_call(&cfg).await.expect("trusted"), 0);
}

#[tokio::test]
async fn a_gateway_that_requires_a_client_certificate_refuses_a_call_without_one() {
    let pki = Pki::new();
    let sim = Sim::agents(3, 83).await;
    let front = tls_front(sim.addr, pki.server_config(true)).await;
    let mut cfg = https_config(&sim, front, "127.0.0.1:9", "tls-nocert");
    cfg.bk.tls = tls(&pki, false);
    cfg.validate().expect("valid");

    let err = one_gse_call(&cfg).await.expect_err("no client certificate");
    let text = err.to_string();
    // TLS 1.3 finishes the client's side of the handshake before the server checks
    // the (empty) certificate, so the refusal arrives as the server's alert.
    assert!(
        text.contains("received fatal alert: CertificateRequired"),
        "{err:?}"
    );

    cfg.bk.tls = tls(&pki, true);
    cfg.validate().expect("valid");
    assert_eq!(one_gse_call(&cfg).await.expect("with certificate"), 0);
}

#[test]
fn every_bad_tls_file_is_reported_under_its_own_field_at_once() {
    let pki = Pki::new();
    let empty = pki.dir.path().join("empty.pem");
    std::fs::write(&empty, "no PEM here\n").expect("write");
    let missing = pki.dir.path().join("missing.pem");
    let toml = format!(
        r#"
[bk]
app_code = "a"
app_secret = "s"
[bk.tls]
ca_file = "{missing}"
client_cert_file = "{empty}"
client_key_file = "{cert}"
[gse]
base_url = "https://127.0.0.1:1/"
[nodeman]
base_url = "https://127.0.0.1:1/"
[http.tls]
cert_file = "{server_cert}"
key_file = "{stray}"
client_ca_file = "{empty}"
"#,
        missing = missing.display(),
        empty = empty.display(),
        cert = pki.client_cert.display(),
        server_cert = pki.server_cert.display(),
        stray = pki.stray_key.display(),
    );
    let err = load_str(&toml, "tls.toml", Vec::new()).expect_err("invalid");
    let ConfigError::Invalid { errors } = err else {
        panic!("not a field error: {err}");
    };
    let text = errors.to_string();
    assert_eq!(
        errors.paths(),
        vec![
            "bk.tls.ca_file",
            "bk.tls.client_cert_file",
            "bk.tls.client_key_file",
            "http.tls.client_ca_file",
        ],
        "{text}"
    );
    assert!(
        text.contains("missing.pem") && text.contains("No such file"),
        "{text}"
    );
    assert!(text.contains("holds no PEM certificate"), "{text}");
    assert!(text.contains("holds no PEM private key"), "{text}");

    // With readable files, a key that belongs to another certificate is named.
    let mut errs = agentwatch::config::FieldErrors::default();
    let server = ServerTlsConfig {
        cert_file: pki.server_cert.clone(),
        key_file: pki.stray_key.clone(),
        client_ca_file: None,
        min_version: Default::default(),
    };
    assert!(server.build("http.tls", &mut errs).is_none());
    let client = ClientTlsConfig {
        client_cert_file: Some(pki.client_cert.clone()),
        client_key_file: Some(pki.server_key.clone()),
        ..ClientTlsConfig::default()
    };
    assert!(client.build("bk.tls", &mut errs).is_none());
    let only_key = ClientTlsConfig {
        client_key_file: Some(pki.client_key.clone()),
        ca_only: true,
        ..ClientTlsConfig::default()
    };
    assert!(only_key.build("bk.tls", &mut errs).is_none());
    assert_eq!(
        errs.paths(),
        vec![
            "http.tls.key_file",
            "bk.tls.client_key_file",
            "bk.tls.ca_only",
            "bk.tls.client_cert_file",
        ],
        "{errs}"
    );
    assert!(
        errs.0[0]
            .reason
            .contains("does not belong to the certificate in http.tls.cert_file"),
        "{errs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_endpoint_serves_https_and_can_require_client_certificates() {
    let pki = Pki::new();
    let broker = Broker::shared();
    let sim = Sim::agents(5, 84).await;
    let mut cfg = service_config(&sim, &broker.brokers, "tls-http");
    cfg.http.tls = Some(ServerTlsConfig {
        cert_file: pki.server_cert.clone(),
        key_file: pki.server_key.clone(),
        client_ca_file: None,
        min_version: Default::default(),
    });
    cfg.validate().expect("valid");
    let service = Service::start(&cfg).await;
    let port = service.running().http_addr.port();
    let trusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(pki.reqwest_ca())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    let ok = trusting
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .expect("HTTPS /healthz");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.expect("body"), "ok\n");
    let plain = trusting
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP to the TLS port answered: {plain:?}"
    );
    let untrusting = reqwest::Client::builder()
        .tls_built_in_root_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let err = untrusting
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .expect_err("server certificate from an unknown CA");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
    service.stop().await;

    // Mutual TLS: only clients with a certificate from the CA get an answer.
    cfg.http.listen = "127.0.0.1:0".into();
    if let Some(t) = cfg.http.tls.as_mut() {
        t.client_ca_file = Some(pki.ca.clone());
    }
    cfg.validate().expect("valid");
    let service = Service::start(&cfg).await;
    let url = format!(
        "https://localhost:{}/metrics",
        service.running().http_addr.port()
    );
    let refused = trusting.get(&url).send().await;
    assert!(refused.is_err(), "answered without a client certificate");
    let with_cert = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(pki.reqwest_ca())
        .identity(pki.reqwest_identity())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let metrics = with_cert.get(&url).send().await.expect("mTLS /metrics");
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.expect("body").contains("agentwatch_"));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reaches_a_private_ca_gateway_only_with_bk_tls_and_says_so() {
    let pki = Pki::new();
    let sim = Sim::agents(3, 85).await;
    let front = tls_front(sim.addr, pki.server_config(false)).await;
    let cfg = https_config(&sim, front, "127.0.0.1:9", "tls-doctor");
    let run = |with_ca: bool| {
        let mut c = cfg.clone();
        if with_ca {
            c.bk.tls = tls(&pki, false);
        }
        let path = pki.dir.path().join(format!("doctor-{with_ca}.toml"));
        std::fs::write(&path, c.to_masked_toml()).expect("write config");
        let pki_dir = pki.dir.path().to_owned();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentwatch"))
                .args(["doctor", "--skip-produce", "--timeout", "3s", "--config"])
                .arg(&path)
                .env("AGENTWATCH__BK__APP_SECRET", SIM_SECRET)
                .current_dir(pki_dir)
                .output()
                .await
                .expect("doctor");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let without = run(false).await;
    let line = without
        .lines()
        .skip_while(|l| !l.contains("reach gse.base_url"))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        line.starts_with('✘') && line.contains("UnknownIssuer"),
        "{without}"
    );
    assert!(
        line.contains("bk.tls.ca_file"),
        "the fix names the setting: {line}"
    );

    let with = run(true).await;
    let line = with
        .lines()
        .find(|l| l.contains("reach gse.base_url"))
        .unwrap_or_default();
    assert!(
        line.starts_with('✔') && line.contains("TLS handshake ok"),
        "{with}"
    );
}

#[tokio::test]
async fn an_endpoint_with_min_version_1_3_refuses_a_tls_1_2_client() {
    use agentwatch::tls::TlsVersion;
    let pki = Pki::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let serve = |min_version: TlsVersion| {
        let mut errs = agentwatch::config::FieldErrors::default();
        let config = ServerTlsConfig {
            cert_file: pki.server_cert.clone(),
            key_file: pki.server_key.clone(),
            client_ca_file: None,
            min_version,
        }
        .build("http.tls", &mut errs)
        .expect("valid TLS config");
        let stop = stop.clone();
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let router = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
            tokio::spawn(agentwatch::http::serve(
                listener,
                Some(config),
                router,
                agentwatch::http::ServerLimits::from_config(&Default::default()),
                stop,
            ));
            format!("https://localhost:{port}/")
        }
    };
    let tls12_client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(pki.reqwest_ca())
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    // Control: the default ("1.2") serves that client.
    let url = serve(TlsVersion::Tls12).await;
    let answer = tls12_client.get(&url).send().await.expect("TLS 1.2");
    assert_eq!(answer.text().await.expect("body"), "hi");

    let url = serve(TlsVersion::Tls13).await;
    let refused = tls12_client.get(&url).send().await;
    assert!(refused.is_err(), "a TLS 1.2 client was served: {refused:?}");
    stop.cancel();
}
