//! Kafka transport security against a real broker: a private tansu behind a TLS front
//! (`security.protocol=SSL`, private CA, client certificate) and a tansu requiring
//! SASL/SCRAM.
//!
//! tansu 0.6.0 cannot terminate TLS itself (its CLI rejects `--cert` together with
//! `--key`), so a rustls front forwards decrypted bytes to it and tansu advertises the
//! front's address. Its SCRAM users live only in its storage engine's memory (the S3
//! engine does not persist them either), and creating one needs an unauthenticated
//! broker — so with `--authentication` no user can ever log in, and only the refusal
//! of credentials is tested here.

mod common;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use agentwatch::config::Config;
use common::{pki::*, *};

/// A private tansu with extra arguments, killed on drop (memory engine: nothing to
/// flush, and it ignores SIGTERM while clients are connected).
struct Tansu {
    child: Child,
    port: u16,
}

impl Tansu {
    fn start(advertised: Option<SocketAddr>, extra: &[&str]) -> Tansu {
        let port = free_port();
        let listen = format!("tcp://127.0.0.1:{port}");
        let advertised = advertised
            .map(|a| format!("tcp://{a}"))
            .unwrap_or_else(|| listen.clone());
        let child = Command::new(tansu_bin())
            .args(["broker", "--listener-url", &listen])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Tansu { child, port }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `agentwatch doctor --skip-produce` on `cfg` (secrets from `env`); its stdout.
fn doctor(cfg: &Config, dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    let path = dir.join(format!("doctor-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, cfg.to_masked_toml()).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_agentwatch"))
        .args(["doctor", "--skip-produce", "--timeout", "4s", "--config"])
        .arg(&path)
        .env("AGENTWATCH__BK__APP_SECRET", SIM_SECRET)
        .envs(env.iter().copied())
        .output()
        .expect("doctor");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `kafka brokers` line of a doctor report and its fix line.
fn brokers_check(report: &str) -> String {
    report
        .lines()
        .skip_while(|l| !l.contains("kafka brokers"))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_broker_over_mutual_tls_with_a_private_ca() {
    let pki = Pki::new();
    let front_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind front");
    let front_addr = front_listener.local_addr().expect("front addr");
    let tansu = Tansu::start(Some(front_addr), &[]);
    tls_front_on(front_listener, tansu.addr(), pki.server_config(true));
    let brokers = front_addr.to_string();

    let sim = Sim::agents(12, 91).await;
    let mut cfg = service_config(&sim, &brokers, "kafka-ssl");
    let ca = pki.ca.display().to_string();
    let cert = pki.client_cert.display().to_string();
    let key = pki.client_key.display().to_string();
    let ssl = [
        ("security.protocol", "SSL"),
        ("ssl.ca.location", ca.as_str()),
        ("ssl.certificate.location", cert.as_str()),
        ("ssl.key.location", key.as_str()),
    ];
    for (k, v) in ssl {
        cfg.kafka.options.insert(k.into(), v.into());
    }
    cfg.validate().expect("valid");

    let service = Service::start(&cfg).await;
    service.settle().await;
    service.stop().await;
    let agents: BTreeSet<String> = read_topic_with(&brokers, &cfg.kafka.events_topic, &ssl)
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(agents.len(), 12, "one event per agent over SSL: {agents:?}");

    // Without the private CA the doctor names the certificate problem.
    let mut no_ca = cfg.clone();
    no_ca.kafka.options.remove("ssl.ca.location");
    let report = doctor(&no_ca, pki.dir.path(), &[]);
    let check = brokers_check(&report);
    assert!(check.starts_with('✘'), "{report}");
    assert!(
        check.contains("TLS failed") && check.contains("certificate verify failed"),
        "{check}"
    );
    assert!(check.contains("fix: the TLS handshake") && check.contains("ssl.ca.location"));

    // Without the client certificate the broker's front refuses the handshake.
    let mut no_cert = cfg.clone();
    no_cert.kafka.options.remove("ssl.certificate.location");
    no_cert.kafka.options.remove("ssl.key.location");
    let report = doctor(&no_cert, pki.dir.path(), &[]);
    let check = brokers_check(&report);
    assert!(check.starts_with('✘'), "{report}");
    // TLS 1.3: the client learns of the refusal from the server's alert after its own
    // side of the handshake, so librdkafka files it as a receive failure.
    assert!(check.contains("alert certificate required"), "{check}");
    assert!(check.contains("ssl.certificate.location"), "{check}");
}

// Multi-threaded: the TLS front keeps serving while the doctor process is awaited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_credentials_the_broker_does_not_accept_fail_with_a_clear_error() {
    let tansu = Tansu::start(None, &["--authentication"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let password = dir.path().join("kafka-password");
    std::fs::write(&password, "not-the-password\n").expect("write password");
    let sim = Sim::agents(2, 92).await;
    let mut cfg = service_config(&sim, &tansu.addr().to_string(), "kafka-sasl");
    for (k, v) in [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanisms", "SCRAM-SHA-512"),
        ("sasl.username", "agentwatch"),
    ] {
        cfg.kafka.options.insert(k.into(), v.into());
    }
    cfg.kafka
        .option_files
        .insert("sasl.password".into(), password.clone());
    cfg.validate().expect("valid");

    let report = doctor(&cfg, dir.path(), &[]);
    let check = brokers_check(&report);
    assert!(check.starts_with('✘'), "{report}");
    assert!(
        check.contains("SASL authentication failed")
            && check.contains("SCRAM authentication failed"),
        "{check}"
    );
    assert!(
        check.contains("fix: the brokers refused the credentials"),
        "{check}"
    );
    // The password came from the file and is shown nowhere.
    assert!(!report.contains("not-the-password"), "{report}");
    // The service's start-up error takes its cause from the same probe (after the
    // topic creation's own 60 s request timeout, too slow to wait for here).
    let kafka = cfg.kafka.clone();
    let why = tokio::task::spawn_blocking(move || {
        agentwatch::sinks::kafka::probe::why_unreachable(&kafka, Duration::from_secs(4))
    })
    .await
    .expect("probe");
    let (code, reason) = why.expect("librdkafka gave a reason");
    assert_eq!(
        code,
        rdkafka::types::RDKafkaErrorCode::Authentication,
        "{reason}"
    );
    assert!(reason.contains("SCRAM authentication failed"), "{reason}");

    // SASL_SSL: TLS to a front with a private CA, then the same SCRAM exchange.
    let pki = Pki::new();
    let front = tls_front(tansu.addr(), pki.server_config(false)).await;
    cfg.kafka.brokers = front.to_string();
    cfg.kafka
        .options
        .insert("security.protocol".into(), "SASL_SSL".into());
    cfg.kafka
        .options
        .insert("ssl.ca.location".into(), pki.ca.display().to_string());
    cfg.validate().expect("valid");
    let check = brokers_check(&doctor(&cfg, dir.path(), &[]));
    assert!(
        check.contains("sasl_ssl://") && check.contains("SCRAM authentication failed"),
        "TLS succeeded and SASL ran inside it: {check}"
    );
}
