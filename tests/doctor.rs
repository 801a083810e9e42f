//! `agentwatch doctor` as an operator runs it: the real binary as a child process against
//! the in-process simulator (told to misbehave) and a real broker. Each diagnosis is
//! asserted on its check's name, status and fix text, not on whole lines.

mod common;

use std::time::Duration;

use agentwatch::{
    config::Config,
    sim::{Endpoint, GatewayError, SimConfig},
    sinks::kafka::topics,
};
use common::{read_topic, service_config, Broker, Sim, SIM_SECRET};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    ClientConfig,
};
use serde_json::Value;

/// A slot token that passes the doctor (and the config's 16-character minimum).
const GOOD_SLOT_TOKEN: &str = "9f2c1d7be04a4c55a1e0c3b8";

fn sim_config() -> SimConfig {
    SimConfig {
        agents: 20,
        ..SimConfig::default()
    }
}

/// The output of one doctor run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The `--json` array, checked to have the documented shape.
    fn checks(&self) -> Vec<Value> {
        let v: Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{}", self.stdout));
        let all = v.as_array().expect("a JSON array").clone();
        for c in &all {
            for key in ["check", "status", "ok", "detail", "fix"] {
                assert!(c.get(key).is_some(), "{key} missing in {c}");
            }
            assert_eq!(
                c["fix"].is_string(),
                c["ok"] == false,
                "a fix exactly on failed checks: {c}"
            );
        }
        all
    }

    fn check(&self, name: &str) -> Value {
        self.checks()
            .into_iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no check {name:?} in:\n{}", self.stdout))
    }

    /// The named check, asserted failed; returns (detail, fix).
    fn failed(&self, name: &str) -> (String, String) {
        let c = self.check(name);
        assert_eq!(c["status"], "fail", "{name} should fail: {c}");
        assert_eq!(self.code, Some(1), "exit code with a failed check");
        (
            c["detail"].as_str().unwrap_or_default().to_owned(),
            c["fix"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

/// Writes `cfg` as TOML into a fresh directory (secrets come from the environment, as
/// from a Kubernetes Secret: the file has them masked) and runs the doctor on it with
/// app secret `secret`.
async fn doctor(cfg: &Config, secret: &str, extra: &[&str]) -> Run {
    doctor_env(cfg, &[("AGENTWATCH__BK__APP_SECRET", secret)], extra).await
}

/// Like [`doctor`], with environment overrides on top of the working secrets.
async fn doctor_env(cfg: &Config, env: &[(&str, &str)], extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agentwatch.toml");
    std::fs::write(&path, cfg.to_masked_toml()).expect("write config");
    run_doctor(&path, env, extra).await
}

async fn run_doctor(path: &std::path::Path, env: &[(&str, &str)], extra: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentwatch"));
    // Keep the developer's environment from leaking into the config under test.
    for (k, _) in std::env::vars() {
        if k.starts_with("AGENTWATCH") || k.to_lowercase().ends_with("_proxy") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("doctor").arg("--config").arg(path).args(extra);
    if !extra.contains(&"--timeout") {
        cmd.args(["--timeout", "3s"]);
    }
    cmd.env("AGENTWATCH__BK__APP_SECRET", SIM_SECRET)
        .env("AGENTWATCH__SLOT__TOKEN", GOOD_SLOT_TOKEN)
        .env("AGENTWATCH__SLOT__DISPATCH_TOKEN", GOOD_SLOT_TOKEN)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("doctor finishes within 60s")
        .expect("doctor runs");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!(
        "--- doctor {extra:?} (exit {:?}):\n{}{}",
        run.code, run.stdout, run.stderr
    );
    run
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_passes_every_check_and_its_test_record_is_skippable() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config()).await;
    let mut cfg = service_config(&sim, &broker.brokers, "doctor-ok");
    cfg.slot.enabled = true;
    cfg.slot.slot_id = Some(7);
    topics::ensure_topics(&cfg.kafka).await.expect("topics");

    let run = doctor(&cfg, SIM_SECRET, &[]).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let names: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("✔ "))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert_eq!(
        names,
        [
            "config",
            "reach gse.base_url",
            "reach nodeman.base_url",
            "api nodeman host/search",
            "api gse list_agent_state",
            "kafka brokers",
            "kafka topics",
            "kafka topic configs",
            "kafka test produce",
            "slot token",
        ],
        "every check passes, in order:\n{}",
        run.stdout
    );
    assert!(!run.stdout.contains('✘'));
    assert!(run.stdout.contains("0 failed"), "{}", run.stdout);

    // The test record: no value, its own ce_type, so event readers skip it.
    let probes: Vec<_> = read_topic(&broker.brokers, &cfg.kafka.events_topic)
        .into_iter()
        .filter(|r| r.key == "agentwatch-doctor")
        .collect();
    assert_eq!(probes.len(), 1, "one test record");
    assert!(probes[0].payload.is_none(), "the test record has no value");
    assert_eq!(probes[0].header("ce_type"), Some("io.agentwatch.doctor.v1"));

    // The same run as JSON: every check ok.
    let run = doctor(&cfg, SIM_SECRET, &["--json", "--skip-produce"]).await;
    assert_eq!(run.code, Some(0));
    for c in run.checks() {
        assert!(c["status"] != "fail", "{c}");
    }
    assert_eq!(run.check("kafka test produce")["status"], "skip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_app_secret_is_diagnosed_as_bad_credentials() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config()).await;
    let cfg = service_config(&sim, &broker.brokers, "doctor-secret");

    let run = doctor(&cfg, "not-the-secret", &["--skip-produce"]).await;
    assert_eq!(run.code, Some(1));
    // The text form: the check's line, then its fix.
    let text = &run.stdout;
    let at = text
        .find("✘ api nodeman host/search: 1640001")
        .unwrap_or_else(|| panic!("no 1640001 line:\n{text}"));
    let fix_line = text[at..].lines().nth(1).unwrap_or_default();
    assert!(fix_line.trim_start().starts_with("fix:"), "{fix_line}");
    assert!(
        fix_line.contains("bk.app_code") && fix_line.contains("AGENTWATCH__BK__APP_SECRET"),
        "{fix_line}"
    );
    assert!(
        text.contains("✘ api gse list_agent_state: 1640001"),
        "GSE is asked too (with a made-up id):\n{text}"
    );
    assert!(
        !text.contains("not-the-secret"),
        "the secret is never printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_names_the_permission_to_request() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config()).await;
    sim.sim.set_gateway_error(
        Endpoint::GseListAgentState,
        Some(GatewayError::NoPermission),
    );
    let cfg = service_config(&sim, &broker.brokers, "doctor-perm");

    let run = doctor(&cfg, SIM_SECRET, &["--json", "--skip-produce"]).await;
    assert_eq!(run.check("api nodeman host/search")["status"], "ok");
    let (detail, fix) = run.failed("api gse list_agent_state");
    assert!(detail.contains("1640301"), "{detail}");
    assert!(
        fix.contains("\"bk-gse: cluster/list_agent_state\"") && fix.contains("\"agentwatch\""),
        "names the permission and the app: {fix}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_outside_the_whitelist_is_diagnosed() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config()).await;
    sim.sim.set_gateway_error(
        Endpoint::NodemanHostSearch,
        Some(GatewayError::IpNotAllowed),
    );
    let cfg = service_config(&sim, &broker.brokers, "doctor-ip");

    let run = doctor(&cfg, SIM_SECRET, &["--json", "--skip-produce"]).await;
    let (detail, fix) = run.failed("api nodeman host/search");
    assert!(
        detail.contains("1640302") && detail.contains("not whitelisted"),
        "{detail}"
    );
    assert!(
        fix.contains("IP access control") && fix.contains("bk-nodeman"),
        "{fix}"
    );
    // GSE is still asked, about a made-up agent.
    let gse = run.check("api gse list_agent_state");
    assert_eq!(gse["status"], "ok", "{gse}");
    assert!(gse["detail"].as_str().unwrap().contains("made-up"), "{gse}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_gse_v2_suggests_gse_api_v1() {
    let broker = Broker::shared();
    let sim = Sim::start(SimConfig {
        gse_v2: false,
        ..sim_config()
    })
    .await;
    let cfg = service_config(&sim, &broker.brokers, "doctor-v1");

    let run = doctor(&cfg, SIM_SECRET, &["--json", "--skip-produce"]).await;
    let (detail, fix) = run.failed("api gse list_agent_state");
    assert!(detail.contains("1640401"), "{detail}");
    assert!(
        fix.contains("gse.api = \"v1\"") && fix.contains("gse.esb_base_url"),
        "{fix}"
    );
    assert!(
        !fix.contains("must end in api/v2/"),
        "the base URL is fine: {fix}"
    );

    // With "auto" the same answer is expected, and GSE 1.x is checked instead.
    let mut auto = cfg.clone();
    auto.gse.api = agentwatch::sources::gse::GseApi::Auto;
    auto.gse.esb_base_url = format!("http://{}/api/c/compapi/v2/gse/", sim.addr);
    let run = doctor(&auto, SIM_SECRET, &["--json", "--skip-produce"]).await;
    assert_eq!(run.check("api gse list_agent_state")["status"], "ok");
    assert_eq!(run.check("api gse get_agent_status")["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gse_base_url_without_api_v2_gets_the_suffix_suggested() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config()).await;
    let mut cfg = service_config(&sim, &broker.brokers, "doctor-path");
    cfg.gse.base_url = format!("http://{}/api/bk-gse/prod/", sim.addr);

    let run = doctor(&cfg, SIM_SECRET, &["--json", "--skip-produce"]).await;
    assert_eq!(run.check("reach gse.base_url")["status"], "ok");
    let (detail, fix) = run.failed("api gse list_agent_state");
    assert!(detail.contains("1640401"), "{detail}");
    let suggested = format!("http://{}/api/bk-gse/prod/api/v2/", sim.addr);
    assert!(
        fix.contains("must end in api/v2/") && fix.contains(&suggested),
        "{fix}"
    );
    assert!(
        fix.contains("gse.api = \"v1\""),
        "v1 is suggested too: {fix}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_shows_the_reset_header() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config()).await;
    sim.sim.set_gateway_error(
        Endpoint::GseListAgentState,
        Some(GatewayError::RateLimited { reset_secs: 42 }),
    );
    let cfg = service_config(&sim, &broker.brokers, "doctor-429");

    let run = doctor(&cfg, SIM_SECRET, &["--json", "--skip-produce"]).await;
    let (detail, fix) = run.failed("api gse list_agent_state");
    assert!(
        detail.contains("429") && detail.contains("X-Bkapi-RateLimit-Reset: 42s"),
        "{detail}"
    );
    assert!(fix.contains("gse.concurrency"), "{fix}");
    assert_eq!(
        sim.sim.request_counts().gse_list_agent_state,
        1,
        "retries are off: one call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_gets_a_network_fix_and_missing_topics_a_create_fix() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config()).await;
    let mut cfg = service_config(&sim, &broker.brokers, "doctor-net");
    cfg.nodeman.base_url = format!("http://127.0.0.1:{}/api/bk-nodeman/prod/", closed_port());

    let run = doctor(&cfg, SIM_SECRET, &["--json"]).await;
    let (detail, fix) = run.failed("reach nodeman.base_url");
    assert!(detail.contains("refused"), "{detail}");
    assert!(
        fix.contains("firewall") && fix.contains("nodeman.base_url"),
        "{fix}"
    );
    let api = run.check("api nodeman host/search");
    assert_eq!(api["status"], "skip", "{api}");
    assert!(api["ok"].is_null());
    assert_eq!(run.check("reach gse.base_url")["status"], "ok");

    // The topics were never created.
    let (detail, fix) = run.failed("kafka topics");
    assert!(detail.contains(&cfg.kafka.events_topic), "{detail}");
    assert!(fix.contains("agentwatch kafka create-topics"), "{fix}");
    assert_eq!(run.check("kafka test produce")["status"], "skip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_kafka_is_diagnosed() {
    let sim = Sim::start(sim_config()).await;
    let brokers = format!("127.0.0.1:{}", closed_port());
    let cfg = service_config(&sim, &brokers, "doctor-kafka");

    let run = doctor(&cfg, SIM_SECRET, &["--json", "--timeout", "2s"]).await;
    let (detail, fix) = run.failed("kafka brokers");
    assert!(detail.contains(&brokers), "{detail}");
    assert!(fix.contains("kafka.brokers"), "{fix}");
    for later in ["kafka topics", "kafka topic configs", "kafka test produce"] {
        assert_eq!(run.check(later)["status"], "skip", "{later}");
    }
    assert_eq!(run.check("api gse list_agent_state")["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_topic_that_is_not_compacted_is_diagnosed() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config()).await;
    let cfg = service_config(&sim, &broker.brokers, "doctor-compact");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.brokers)
        .create()
        .expect("admin client");
    fn new(t: &str) -> NewTopic<'_> {
        NewTopic::new(t, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "delete")
    }
    let created = admin
        .create_topics(
            &[new(&cfg.kafka.events_topic), new(&cfg.kafka.state_topic)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let run = doctor(&cfg, SIM_SECRET, &["--json", "--skip-produce"]).await;
    assert_eq!(run.check("kafka topics")["status"], "ok");
    let (detail, fix) = run.failed("kafka topic configs");
    assert!(
        detail.contains(&cfg.kafka.state_topic) && detail.contains("cleanup.policy=delete"),
        "{detail}"
    );
    assert!(fix.contains("cleanup.policy=compact"), "{fix}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_example_slot_token_is_refused() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config()).await;
    let mut cfg = service_config(&sim, &broker.brokers, "doctor-slot");
    cfg.slot.enabled = true;
    cfg.slot.slot_id = Some(7);

    let env = [("AGENTWATCH__SLOT__TOKEN", "change-me-change-me")];
    let run = doctor_env(&cfg, &env, &["--json", "--skip-produce"]).await;
    let (detail, fix) = run.failed("slot token");
    assert!(
        detail.contains("slot.token is an example value"),
        "{detail}"
    );
    assert!(fix.contains("AGENTWATCH__SLOT__TOKEN"), "{fix}");
    assert!(!run.stdout.contains("change-me-change-me"), "never printed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_a_failed_check_and_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[gse]\nbatch_size = 0\n").expect("write");
    let run = run_doctor(&path, &[], &["--json"]).await;
    let (detail, fix) = run.failed("config");
    assert!(detail.contains("gse.batch_size"), "{detail}");
    assert!(fix.contains("check-config"), "{fix}");
    let rest = run.checks();
    assert!(
        rest[1..].iter().all(|c| c["status"] == "skip"),
        "nothing else runs: {rest:?}"
    );

    let run = run_doctor(&dir.path().join("missing.toml"), &[], &[]).await;
    assert_eq!(
        run.code,
        Some(1),
        "unreadable is a failed check, not a usage error"
    );
    assert!(run.stdout.contains("✘ config:"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cmdb_inventory_is_probed_with_its_count_call() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config()).await;
    let mut cfg = service_config(&sim, &broker.brokers, "doctor-cmdb");
    cfg.inventory.source = agentwatch::sources::inventory::SourceKind::Cmdb;
    cfg.cmdb.base_url = format!("http://{}/api/bk-cmdb/prod/", sim.addr);
    cfg.nodeman.base_url = String::new();

    let run = doctor(&cfg, SIM_SECRET, &["--json", "--skip-produce"]).await;
    assert_eq!(run.check("reach cmdb.base_url")["status"], "ok");
    let cmdb = run.check("api cmdb host listing");
    assert_eq!(cmdb["status"], "ok", "{cmdb}");
    assert!(
        cmdb["detail"]
            .as_str()
            .unwrap()
            .contains("CMDB lists 20 hosts"),
        "{cmdb}"
    );
    let gse = run.check("api gse list_agent_state");
    assert!(
        gse["detail"]
            .as_str()
            .unwrap()
            .contains("from the inventory"),
        "GSE is asked about a host CMDB named: {gse}"
    );
    assert_eq!(sim.sim.request_counts().nodeman_host_search, 0);

    sim.sim
        .set_gateway_error(Endpoint::CmdbListHosts, Some(GatewayError::ApiNotFound));
    let run = doctor(&cfg, SIM_SECRET, &["--json", "--skip-produce"]).await;
    let (_, fix) = run.failed("api cmdb host listing");
    assert!(fix.contains("cmdb.list_hosts_without_biz_path"), "{fix}");
}
