//! Black-box tests of the whole pipeline: simulator → service → real broker process →
//! an independent consumer.

mod common;

use std::collections::HashMap;

use agentwatch::{
    proto::v1::Op,
    sim::{FaultConfig, SimConfig},
};
use common::*;

fn sim_config(agents: usize) -> SimConfig {
    SimConfig {
        agents,
        seed: 7,
        gse_unknown_ratio: 0.05,
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_inventory_agent_appears_exactly_once_on_the_first_sweep() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config(1500)).await;
    let cfg = service_config(&sim, &broker.brokers, "first-sweep");
    let svc = Service::start(&cfg).await;
    svc.settle().await;

    let records = read_topic(&broker.brokers, &cfg.kafka.events_topic);
    let truth = sim.sim.truth();
    assert_eq!(records.len(), truth.len(), "one event per agent");
    let mut by_agent = HashMap::new();
    for r in &records {
        let ev = r.event();
        assert_eq!(
            ev.op,
            Op::Snapshot as i32,
            "empty state topic → snapshot events"
        );
        assert_eq!(ev.seq, 1);
        assert!(ev.before.is_none());
        let after = ev.after.clone().expect("after");
        assert_eq!(r.key, after.agent_id, "key = agent id");
        assert_eq!(r.header("ce_specversion"), Some("1.0"));
        assert_eq!(r.header("ce_id"), Some(ev.event_id.as_str()));
        assert_eq!(r.header("ce_type"), Some("io.agentwatch.agent.v1.snapshot"));
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
        assert!(r.header("ce_time").is_some() && r.header("ce_source").is_some());
        assert!(
            by_agent.insert(after.agent_id.clone(), after).is_none(),
            "duplicate"
        );
    }
    for t in &truth {
        let s = by_agent.get(&t.agent_id).expect("every agent has an event");
        let expected_code = if t.in_gse { t.status_code } else { -2 };
        assert_eq!(s.status_code, expected_code, "status of {}", t.agent_id);
        assert_eq!(s.alive, expected_code == 2);
        assert_eq!(s.host_id, t.host_id as i64);
        assert_eq!(s.biz_id, t.biz_id);
        assert_eq!(s.ip, t.ip);
    }
    // Legacy agents without bk_agent_id are watched as "cloud:ip".
    assert!(truth.iter().any(|t| t.agent_id.contains(':')));

    let metrics = svc.metrics().await;
    assert_eq!(
        metric_value(&metrics, "agentwatch_events_total{op=\"snapshot\"}"),
        truth.len() as f64
    );
    assert_eq!(
        metric_value(&metrics, "agentwatch_agents{"),
        truth.len() as f64
    );
    let running = truth
        .iter()
        .filter(|t| t.in_gse && t.status_code == 2)
        .count();
    assert_eq!(
        metric_value(&metrics, "agentwatch_agents{status=\"running\"}"),
        running as f64
    );
    assert!(metric_value(&metrics, "agentwatch_sweeps_total{result=\"success\"}") >= 1.0);
    assert!(metric_value(&metrics, "agentwatch_last_sweep_success_timestamp_seconds") > 0.0);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_n_agents_yields_exactly_n_update_events_and_no_others() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config(800)).await;
    let cfg = service_config(&sim, &broker.brokers, "n-updates");
    let svc = Service::start(&cfg).await;
    svc.settle().await;

    let changed = sim.running_agents(25);
    let new = svc.events_after(|| sim.set_status_of(&changed, 3)).await;
    assert_eq!(
        new.len(),
        changed.len(),
        "exactly one event per changed agent"
    );
    for ev in &new {
        assert_eq!(ev.op, Op::Update as i32);
        let b = ev.before.as_ref().expect("before");
        let a = ev.after.as_ref().expect("after");
        assert!(changed.contains(&a.agent_id));
        assert_eq!(
            (b.status_code, b.status.as_str(), b.alive),
            (2, "running", true)
        );
        assert_eq!(
            (a.status_code, a.status.as_str(), a.alive),
            (3, "lossy", false)
        );
        assert_eq!(ev.seq, 2);
        // NodeMan's own view moves with GSE's in the simulator; both arrive in one
        // sweep (the inventory is refreshed every sweep here), so one event.
        assert_eq!(
            ev.changed_fields,
            vec!["status_code", "status", "alive", "nodeman_status"]
        );
    }
    let metrics = svc.metrics().await;
    assert_eq!(
        metric_value(&metrics, "agentwatch_events_total{op=\"update\"}"),
        changed.len() as f64
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_never_produce_false_events() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config(600)).await;
    let mut cfg = service_config(&sim, &broker.brokers, "faults");
    // Fewer retries so faults survive them and batches really fail.
    cfg.gse.retry.max_retries = 1;
    cfg.nodeman.retry.max_retries = 0;
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let before = event_ids(&broker.brokers, &cfg.kafka.events_topic);

    sim.sim.set_faults(FaultConfig {
        rate: 0.4,
        ..FaultConfig::default()
    });
    svc.settle_after_sweeps(8).await;
    let stats = sim.sim.stats();
    sim.sim.set_fault_rate(0.0);
    svc.settle_after_sweeps(2).await;

    let new = events_since(&broker.brokers, &cfg.kafka.events_topic, &before);
    assert!(new.is_empty(), "faults turned into events: {new:?}");
    let metrics = svc.metrics().await;
    assert!(
        metric_value(&metrics, "agentwatch_gse_failed_batches_total") > 0.0,
        "the faults were real: some batches failed after retries ({stats:?})"
    );
    let failed_upstream: f64 = [
        "timeout",
        "http_5xx",
        "rate_limited",
        "decode",
        "envelope",
        "connect",
    ]
    .iter()
    .map(|o| {
        metric_value(
            &metrics,
            &format!("agentwatch_upstream_requests_total{{outcome=\"{o}\",upstream=\"gse\"}}"),
        )
    })
    .sum();
    assert!(
        failed_upstream > 0.0,
        "upstream failures are counted by outcome"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_gse_does_not_know_are_not_found_and_a_forgotten_agent_is_a_real_update() {
    let broker = Broker::shared();
    let sim = Sim::agents(300, 3).await;
    let mut cfg = service_config(&sim, &broker.brokers, "not-found");
    cfg.gse.batch_size = 10;
    let svc = Service::start(&cfg).await;
    svc.settle().await;

    // A whole batch GSE no longer knows: GSE answers 1011003 for it.
    let forgotten = sim.running_agents(10);
    let new = svc
        .events_after(|| {
            for id in &forgotten {
                assert!(sim.sim.forget_in_gse(id));
            }
        })
        .await;
    assert_eq!(new.len(), forgotten.len());
    for ev in &new {
        let a = ev.after.as_ref().expect("after");
        assert_eq!(ev.op, Op::Update as i32);
        assert_eq!(
            (a.status_code, a.status.as_str(), a.alive),
            (-2, "not_found", false)
        );
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_format_uses_the_proto_field_names() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config(50)).await;
    let mut cfg = service_config(&sim, &broker.brokers, "json");
    cfg.kafka.format = agentwatch::sinks::kafka::Format::Json;
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let records = read_topic(&broker.brokers, &cfg.kafka.events_topic);
    assert_eq!(records.len(), 50);
    for r in &records {
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v: serde_json::Value =
            serde_json::from_slice(r.payload.as_deref().expect("payload")).expect("json");
        assert_eq!(v["op"], "OP_SNAPSHOT");
        assert_eq!(v["after"]["agent_id"], r.key.as_str());
        assert!(v["after"].get("status_code").is_some() || v["after"]["status"] == "initial");
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_true_after_the_first_sweep_and_health_is_always_ok() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config(20)).await;
    let cfg = service_config(&sim, &broker.brokers, "ready");
    let svc = Service::start(&cfg).await;
    let base = format!("http://{}", svc.running().http_addr);
    let health = reqwest::get(format!("{base}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    svc.settle().await;
    let ready = reqwest::get(format!("{base}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_payloads_decode_with_the_published_proto_file() {
    use prost_reflect::{DescriptorPool, DynamicMessage, Value};

    let broker = Broker::shared();
    let sim = Sim::start(sim_config(40)).await;
    let cfg = service_config(&sim, &broker.brokers, "published-proto");
    let svc = Service::start(&cfg).await;
    svc.settle().await;

    // Compile the .proto as a consumer would, independently of the generated code.
    let root = env!("CARGO_MANIFEST_DIR");
    let fds = protox::compile(
        [format!("{root}/proto/agentwatch/v1/events.proto")],
        [format!("{root}/proto")],
    )
    .expect("the published proto compiles");
    let pool = DescriptorPool::from_file_descriptor_set(fds).expect("descriptor pool");
    let desc = pool
        .get_message_by_name("agentwatch.v1.AgentEvent")
        .expect("AgentEvent is published");
    let op_enum = pool.get_enum_by_name("agentwatch.v1.Op").expect("Op enum");

    let records = read_topic(&broker.brokers, &cfg.kafka.events_topic);
    assert_eq!(records.len(), 40);
    for r in &records {
        let msg = DynamicMessage::decode(desc.clone(), r.payload.as_deref().expect("payload"))
            .expect("decodes with the published schema");
        let op = msg.get_field_by_name("op").expect("op");
        let op_name = op
            .as_enum_number()
            .and_then(|n| op_enum.get_value(n))
            .map(|v| v.name().to_owned());
        assert_eq!(op_name.as_deref(), Some("OP_SNAPSHOT"));
        let after = msg.get_field_by_name("after").expect("after");
        let Value::Message(after) = after.as_ref() else {
            panic!("after is a message");
        };
        let id = after.get_field_by_name("agent_id").expect("agent_id");
        assert_eq!(id.as_str(), Some(r.key.as_str()));
        assert_eq!(
            msg.get_field_by_name("seq").and_then(|v| v.as_u64()),
            Some(1)
        );
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_one_readable_line_per_event_filtered_by_agent_and_op() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config(60)).await;
    let cfg = service_config(&sim, &broker.brokers, "tail");
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let target = sim.running_agent();
    svc.change_between_sweeps(|| assert!(sim.sim.set_status(&target, 3)))
        .await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentwatch"))
        .args(["tail", "--brokers", &broker.brokers, "--topic"])
        .arg(&cfg.kafka.events_topic)
        .args(["--from-beginning", "--idle-timeout", "5s", "--agent"])
        .arg(&target)
        .output()
        .expect("tail runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "snapshot + update of that agent only:\n{stdout}"
    );
    assert!(lines[0].contains("snapshot") && lines[0].contains(&target));
    assert!(lines[1].contains("update") && lines[1].contains("status running → lossy"));

    let json = std::process::Command::new(env!("CARGO_BIN_EXE_agentwatch"))
        .args(["tail", "--brokers", &broker.brokers, "--topic"])
        .arg(&cfg.kafka.events_topic)
        .args([
            "--from-beginning",
            "--idle-timeout",
            "5s",
            "--op",
            "update",
            "--json",
        ])
        .output()
        .expect("tail runs");
    let stdout = String::from_utf8_lossy(&json.stdout);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["after"]["agent_id"], target.as_str());
    svc.stop().await;
}
