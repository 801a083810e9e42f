//! `agentwatch gse ...` run as the real binary against the simulator: stream_to and
//! route CRUD on both API generations, dispatch_message, status, `--json`, and exit
//! codes.

mod common;

use std::{path::PathBuf, process::Output};

use agentwatch::sim::{SimAgent, SimConfig};
use common::*;
use serde_json::{json, Value};

const SLOT_ID: i64 = 42;
const DISPATCH_TOKEN: &str = "gse-slot-token";

/// A simulator plus a config file pointing at it.
struct Setup {
    sim: Sim,
    dir: tempfile::TempDir,
    config: PathBuf,
}

async fn setup() -> Setup {
    let sim = Sim::start(SimConfig {
        agents: 30,
        seed: 9,
        legacy_ratio: 0.3,
        gse_unknown_ratio: 0.1,
        ..SimConfig::default()
    })
    .await;
    let addr = sim.addr;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agentwatch.toml");
    let text = format!(
        r#"
[bk]
app_code = "agentwatch"
[gse]
base_url = "http://{addr}/api/bk-gse/prod/api/v2/"
esb_base_url = "http://{addr}/api/c/compapi/v2/gse/"
timeout = "3s"
[gse.retry]
max_retries = 1
initial_backoff = "10ms"
max_backoff = "20ms"
[nodeman]
base_url = "http://{addr}/api/bk-nodeman/prod/"
[slot]
slot_id = {SLOT_ID}
"#
    );
    std::fs::write(&config, text).expect("write config");
    Setup { sim, dir, config }
}

impl Setup {
    /// Runs `agentwatch gse --config FILE <args>`, secrets from the environment.
    async fn gse(&self, args: &[&str]) -> Output {
        self.gse_with_secret(args, SIM_SECRET).await
    }

    async fn gse_with_secret(&self, args: &[&str], secret: &str) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_agentwatch"))
            .arg("gse")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("AGENTWATCH_CONFIG")
            .env("AGENTWATCH__BK__APP_SECRET", secret)
            .env("AGENTWATCH__SLOT__DISPATCH_TOKEN", DISPATCH_TOKEN)
            .output()
            .await
            .expect("run agentwatch gse")
    }

    fn write(&self, name: &str, body: &Value) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body.to_string()).expect("write body");
        path.display().to_string()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and parses stdout as JSON.
fn json_out(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    serde_json::from_str(stdout(o).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn kafka_stream_to(name: &str) -> Value {
    json!({
        "name": name,
        "report_mode": "kafka",
        "kafka": {"storage_address": [{"ip": "10.0.0.5", "port": 9092}]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_to_add_query_update_delete_round_trip_on_the_gateway() {
    let s = setup().await;
    let add = s.write(
        "add.json",
        &json!({"metadata": {"plat_name": "bkmonitor"},
                "operation": {"operator_name": "admin"},
                "stream_to": kafka_stream_to("kafka-a")}),
    );
    let out = json_out(&s.gse(&["stream-to", "add", "--body", &add, "--json"]).await);
    let id = out["stream_to_id"].as_i64().expect("stream_to_id");
    assert_eq!(s.sim.sim.stream_tos().len(), 1);

    // Human output: the data, pretty-printed.
    let o = s
        .gse(&["stream-to", "query", "--plat-name", "bkmonitor"])
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"kafka-a\""), "{}", stdout(&o));

    let update = s.write(
        "update.json",
        &json!({"condition": {"stream_to_id": id, "plat_name": "bkmonitor"},
                "operation": {"operator_name": "admin"},
                "specification": {"stream_to": kafka_stream_to("kafka-b")}}),
    );
    let o = s.gse(&["stream-to", "update", "--body", &update]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "ok");
    let listed = json_out(
        &s.gse(&["stream-to", "query", "--id", &id.to_string(), "--json"])
            .await,
    );
    assert_eq!(listed[0]["stream_to"]["name"], "kafka-b");
    assert_eq!(listed[0]["metadata"]["stream_to_id"], id);

    let o = s
        .gse(&["stream-to", "delete", "--id", &id.to_string()])
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(s.sim.sim.stream_tos().is_empty());
    let listed = json_out(&s.gse(&["stream-to", "query", "--json"]).await);
    assert_eq!(listed, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_commands_work_on_the_v1_esb_paths_too() {
    let s = setup().await;
    // Only the ESB answers until GSE 2.0 is switched back on below.
    s.sim.sim.set_gse_v2_enabled(false);
    let add = s.write(
        "st.json",
        &json!({"metadata": {"plat_name": "bkmonitor"},
                "operation": {"operator_name": "admin"},
                "stream_to": kafka_stream_to("kafka-r")}),
    );
    let st = json_out(
        &s.gse(&["stream-to", "add", "--api", "v1", "--body", &add, "--json"])
            .await,
    )["stream_to_id"]
        .as_i64()
        .expect("id");

    let route = json!({
        "metadata": {"plat_name": "bkmonitor", "channel_id": 1_500_123},
        "operation": {"operator_name": "admin"},
        "route": [{"name": "r1", "stream_to": {"stream_to_id": st,
                   "kafka": {"topic_name": "0bkmonitor_15001230"}}}],
    });
    let path = s.write("route.json", &route);
    // The body may also come from stdin.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentwatch"))
        .args(["gse", "--config"])
        .arg(&s.config)
        .args(["route", "add", "--api", "v1", "--body", "-", "--json"])
        .env("AGENTWATCH__BK__APP_SECRET", SIM_SECRET)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(route.to_string().as_bytes())
            .await
            .expect("write stdin");
    }
    let out = json_out(&child.wait_with_output().await.expect("wait"));
    assert_eq!(out, json!({"channel_id": 1_500_123}));
    let routes = s.sim.sim.data_routes();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].route[0]["name"], "r1");

    // Adding the same channel again is GSE's error, not a crash.
    let o = s
        .gse(&["route", "add", "--api", "v1", "--body", &path])
        .await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    let update = s.write(
        "route-update.json",
        &json!({"condition": {"channel_id": 1_500_123, "plat_name": "bkmonitor"},
                "operation": {"operator_name": "admin"},
                "specification": {"stream_filters": [{"name": "f1", "field_index": 0,
                    "field_data_type": "string", "field_data_value": "x"}]}}),
    );
    let o = s
        .gse(&["route", "update", "--api", "v1", "--body", &update])
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = json_out(
        &s.gse(&["route", "query", "--api", "v1", "--id", "1500123", "--json"])
            .await,
    );
    assert_eq!(listed[0]["stream_filters"][0]["name"], "f1");
    assert_eq!(listed[0]["route"][0]["name"], "r1");

    let o = s.gse(&["route", "delete", "--id", "1500123"]).await;
    assert_eq!(
        o.status.code(),
        Some(1),
        "gse.api v2 is gone: {}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("1640401"), "{}", stderr(&o));
    s.sim.sim.set_gse_v2_enabled(true);
    let o = s.gse(&["route", "delete", "--id", "1500123"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(s.sim.sim.data_routes().is_empty());
    let (requests, auth_failures) = s.sim.sim.admin_request_counts();
    assert_eq!(requests, 7);
    assert_eq!(auth_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_sends_the_content_with_the_configured_slot_id_and_token() {
    let s = setup().await;
    s.sim
        .sim
        .set_slot_credentials(Some((SLOT_ID, DISPATCH_TOKEN.to_owned())));
    let out = json_out(
        &s.gse(&[
            "dispatch",
            "--agents",
            "agent-a,agent-b",
            "--content",
            r#"{"code":0,"data":[]}"#,
            "--message-id",
            "m-1",
            "--json",
        ])
        .await,
    );
    assert_eq!(
        out,
        json!({"message_id": "m-1", "agents": ["agent-a", "agent-b"]})
    );
    let sent = s.sim.sim.dispatched();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].agent_id_list, ["agent-a", "agent-b"]);
    assert_eq!(sent[0].content, r#"{"code":0,"data":[]}"#);
    assert_eq!(
        (sent[0].slot_id, sent[0].token.as_str()),
        (SLOT_ID, DISPATCH_TOKEN)
    );

    // Human output; a generated message id.
    let o = s
        .gse(&["dispatch", "--agents", "agent-c", "--content", "hi"])
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("dispatched message agentwatch-"),
        "{}",
        stdout(&o)
    );
    assert_eq!(s.sim.sim.dispatched().len(), 2);

    // A slot the simulator does not know: GSE's error, exit 1.
    s.sim
        .sim
        .set_slot_credentials(Some((SLOT_ID + 1, DISPATCH_TOKEN.to_owned())));
    let o = s
        .gse(&["dispatch", "--agents", "agent-c", "--content", "hi"])
        .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("1013401"), "{}", stderr(&o));
}

fn status_of(rows: &Value, agent: &str) -> Value {
    rows.as_array()
        .expect("rows")
        .iter()
        .find(|r| r["agent"] == agent)
        .unwrap_or_else(|| panic!("{agent} not in {rows}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_asks_gse_directly_by_agent_id_and_by_cloud_ip() {
    let s = setup().await;
    let truth = s.sim.sim.truth();
    let modern: &SimAgent = truth
        .iter()
        .find(|a| !a.legacy && a.in_gse)
        .expect("a GSE 2.0 agent");
    let legacy: &SimAgent = truth
        .iter()
        .find(|a| a.legacy && a.in_gse && !a.ip.is_empty())
        .expect("a legacy agent");
    s.sim.sim.set_status(&legacy.agent_id, 3);
    let addr = format!("{}:{}", legacy.cloud_id, legacy.ip);
    assert_eq!(addr, legacy.agent_id, "a legacy agent's id is cloud:ip");

    let rows = json_out(
        &s.gse(&["status", &modern.agent_id, &addr, "no-such-agent", "--json"])
            .await,
    );
    let m = status_of(&rows, &modern.agent_id);
    assert_eq!(m["status_code"], modern.status_code);
    assert_eq!(m["version"], modern.version.as_str());
    assert_eq!(m["api"], "v2");
    // GSE 1.x only knows alive or not: lossy (3) is "offline" there.
    let l = status_of(&rows, &addr);
    assert_eq!(
        (l["status_code"].clone(), l["status"].clone()),
        (json!(-3), json!("offline"))
    );
    assert_eq!(l["api"], "v1");
    assert_eq!(l["version"], legacy.version.as_str());
    let n = status_of(&rows, "no-such-agent");
    assert_eq!(
        (n["status_code"].clone(), n["found"].clone()),
        (json!(-2), json!(false))
    );

    let o = s.gse(&["status", &modern.agent_id, "no-such-agent"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("AGENT"), "{text}");
    assert!(
        lines[0].contains("STATUS_CODE") && lines[0].contains("VERSION"),
        "{text}"
    );
    assert!(lines[1].starts_with(&modern.agent_id), "{text}");
    assert!(lines[2].contains("not_found"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_exit_1_with_their_code_and_message_and_usage_errors_exit_2() {
    let s = setup().await;
    // GSE's answer: no such stream_to.
    let o = s.gse(&["stream-to", "delete", "--id", "999"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("1012404"), "{}", stderr(&o));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    let o = s
        .gse(&["stream-to", "delete", "--id", "999", "--json"])
        .await;
    assert_eq!(o.status.code(), Some(1));
    let err: Value = serde_json::from_str(stdout(&o).trim()).expect("JSON error on stdout");
    assert_eq!(err["result"], false);
    assert_eq!(err["code"], 1_012_404);
    assert!(
        err["message"].as_str().unwrap().contains("not found"),
        "{err}"
    );

    // The gateway's answer: wrong app secret.
    let o = s
        .gse_with_secret(&["route", "query", "--id", "1"], "wrong")
        .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("1640001"), "{}", stderr(&o));

    // Usage: add without a body, a body that is not JSON, an unknown subcommand.
    let o = s.gse(&["stream-to", "add"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let bad = s.dir.path().join("bad.json");
    std::fs::write(&bad, "{nope").expect("write");
    let o = s
        .gse(&["route", "add", "--body", bad.to_str().unwrap()])
        .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not valid JSON"), "{}", stderr(&o));
    let o = s.gse(&["stream-to", "frobnicate"]).await;
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        s.sim.sim.admin_request_counts().0,
        3,
        "usage errors call nothing"
    );
}
