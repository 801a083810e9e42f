//! Secrets hygiene: a full run with known secret values, then every log line, the
//! metrics, HTTP answers and `check-config` output are searched for them.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use secrecy::SecretString;

const SLOT_TOKEN: &str = "slot-token-Zq81mVx3kP0a";
const DISPATCH_TOKEN: &str = "dispatch-token-Lw20cNe7";
const SASL_PASSWORD: &str = "sasl-password-Hy52tRb9";
const KEY_PASSWORD: &str = "key-password-Pq73uXc1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_metrics_answers_or_check_config() {
    let broker = Broker::shared();
    let sim = Sim::agents(50, 31).await;
    let mut cfg = service_config(&sim, &broker.brokers, "secrets");
    cfg.log.level = "debug".into();
    cfg.slot.enabled = true;
    cfg.slot.slot_id = Some(7);
    cfg.slot.token = Some(SecretString::from(SLOT_TOKEN.to_owned()));
    cfg.slot.dispatch_token = Some(SecretString::from(DISPATCH_TOKEN.to_owned()));
    // Unused without SASL, but it is a credential in kafka.options all the same.
    cfg.kafka
        .options
        .insert("sasl.password".into(), SASL_PASSWORD.into());
    cfg.http.listen = format!("127.0.0.1:{}", free_port());
    // A credential read from a file (kafka.option_files) and a TLS client key.
    let pki = common::pki::Pki::new();
    let key_password = pki.dir.path().join("kafka-key-password");
    std::fs::write(&key_password, format!("{KEY_PASSWORD}\n")).expect("write secret file");
    cfg.kafka
        .option_files
        .insert("ssl.key.password".into(), key_password);
    cfg.bk.tls.ca_file = Some(pki.ca.clone());
    cfg.bk.tls.client_cert_file = Some(pki.client_cert.clone());
    cfg.bk.tls.client_key_file = Some(pki.client_key.clone());
    let client_key = std::fs::read_to_string(&pki.client_key).expect("key");
    // The middle of the PEM body: no header, no line that could occur by chance.
    let key_body = client_key
        .lines()
        .find(|l| !l.starts_with("-----") && l.len() > 40)
        .expect("key body")
        .to_owned();
    cfg.validate().expect("valid");

    // The file holds masked values; the real ones come from the environment, as from
    // a Kubernetes Secret.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agentwatch.toml");
    std::fs::write(&path, cfg.to_masked_toml()).expect("write config");
    let secrets = [
        SIM_SECRET,
        SLOT_TOKEN,
        DISPATCH_TOKEN,
        SASL_PASSWORD,
        KEY_PASSWORD,
        key_body.as_str(),
    ];
    let file = std::fs::read_to_string(&path).expect("read config");
    for s in secrets {
        assert!(
            !file.contains(s),
            "the effective config file holds a secret"
        );
    }
    let env = [
        ("AGENTWATCH__BK__APP_SECRET", SIM_SECRET),
        ("AGENTWATCH__SLOT__TOKEN", SLOT_TOKEN),
        ("AGENTWATCH__SLOT__DISPATCH_TOKEN", DISPATCH_TOKEN),
        ("AGENTWATCH__KAFKA__OPTIONS__SASL.PASSWORD", SASL_PASSWORD),
    ];
    let stderr_path = dir.path().join("run.stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentwatch"))
        .args(["run", "--config"])
        .arg(&path)
        .envs(env)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            std::fs::File::create(dir.path().join("run.stdout")).expect("stdout file"),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(&stderr_path).expect("stderr file"),
        ))
        .spawn()
        .expect("spawn");

    let base = format!("http://{}", cfg.http.listen);
    let http = reqwest::Client::new();
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Exercise the paths that log: a rejected and an accepted slot message, queries.
    let slot = format!("{base}/api/v4/bk_gse_slot/");
    let body = serde_json::json!({"message_id": "m-1", "bk_agent_id": "x", "content": "{}"});
    let bad = http
        .post(&slot)
        .header("X-Agentwatch-Slot-Token", "wrong-token-0000000000")
        .json(&body)
        .send()
        .await
        .expect("slot call");
    assert_eq!(bad.status(), 401);
    seen.push_str(&bad.text().await.unwrap_or_default());
    let good = http
        .post(&slot)
        .header("X-Agentwatch-Slot-Token", SLOT_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("slot call");
    assert_eq!(good.status(), 200);
    seen.push_str(&good.text().await.unwrap_or_default());
    for path in [
        "/metrics",
        "/api/v1/summary",
        "/api/v1/agents?limit=5",
        "/healthz",
    ] {
        let r = http.get(format!("{base}{path}")).send().await.expect("get");
        seen.push_str(&r.text().await.unwrap_or_default());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("exit");
    assert!(status.success(), "clean exit");

    let check = Command::new(env!("CARGO_BIN_EXE_agentwatch"))
        .args(["check-config", "--config"])
        .arg(&path)
        .envs(env)
        .output()
        .expect("check-config");
    assert!(
        check.status.success(),
        "check-config failed: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let check_out = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check_out.contains("***"), "secrets shown masked");

    let logs = std::fs::read_to_string(&stderr_path).expect("logs");
    let stdout = std::fs::read_to_string(dir.path().join("run.stdout")).unwrap_or_default();
    assert!(logs.lines().count() > 20, "debug logs were written");
    for s in secrets {
        assert!(!logs.contains(s), "a secret is in the logs");
        assert!(!stdout.contains(s), "a secret is on stdout");
        assert!(
            !seen.contains(s),
            "a secret is in an HTTP answer or the metrics"
        );
        assert!(!check_out.contains(s), "a secret is in check-config output");
    }
}
