//! Restart tests: the real `agentwatch` binary as a child process (killed, terminated,
//! started again) against the in-process simulator and a real broker.
//!
//! Run with `--nocapture` to see the figures each test prints.

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use agentwatch::{config::Config, proto::v1::Op, sim::SimConfig};
use common::*;

fn sim_config(agents: usize) -> SimConfig {
    SimConfig {
        agents,
        seed: 23,
        gse_unknown_ratio: 0.05,
        ..SimConfig::default()
    }
}

/// The service config for a child process: as in-process tests, logs at info.
fn child_config(sim: &Sim, brokers: &str, name: &str) -> Config {
    let mut cfg = service_config(sim, brokers, name);
    cfg.log.level = "info".to_owned();
    cfg
}

/// Waits until the events topic holds `want` distinct event ids, then until three
/// more sweeps added none; returns the distinct ids. Panics on more than `want`.
async fn wait_events(
    child: &ServiceProcess,
    brokers: &str,
    topic: &str,
    want: usize,
) -> HashSet<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids = event_ids(brokers, topic);
        assert!(ids.len() <= want, "{} events, expected {want}", ids.len());
        if ids.len() == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {want} events after 60s:\n{}",
            ids.len(),
            child.stderr()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    child.wait_sweeps(3, Duration::from_secs(30)).await;
    let ids = event_ids(brokers, topic);
    assert_eq!(ids.len(), want, "no event after the expected ones");
    ids
}

/// Waits until the state topic holds a record for `agents` agents, each at `seq`
/// (acknowledged state written, so a restart restores it).
async fn wait_state(brokers: &str, topic: &str, agents: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = state_topic_view(brokers, topic);
        if view.len() == agents {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "state topic holds {} of {agents} agents",
            view.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigkill_emits_each_change_made_while_down_exactly_once() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config(500)).await;
    let cfg = child_config(&sim, &broker.brokers, "sigkill");
    let (events, state) = (&cfg.kafka.events_topic, &cfg.kafka.state_topic);
    let dir = tempfile::tempdir().expect("tempdir");

    let mut first = ServiceProcess::spawn(&cfg, dir.path(), "first");
    first.wait_ready(Duration::from_secs(60)).await;
    let snapshot = wait_events(&first, &broker.brokers, events, 500).await;
    wait_state(&broker.brokers, state, 500).await;
    first.kill9();

    let changed = sim.running_agents(15);
    sim.set_status_of(&changed, 3);

    let mut second = ServiceProcess::spawn(&cfg, dir.path(), "second");
    let started = Instant::now();
    let ready_after = second.wait_ready(Duration::from_secs(60)).await;
    wait_events(&second, &broker.brokers, events, 500 + 15).await;
    let settled_after = started.elapsed();
    let metrics = second.metrics().await;
    let restored = metric_value(&metrics, "agentwatch_restored_agents ");
    let restore_secs = metric_value(&metrics, "agentwatch_restore_duration_seconds ");

    let records = read_topic(&broker.brokers, events);
    let all: Vec<_> = records.iter().map(Record::event).collect();
    let new: Vec<_> = all
        .iter()
        .filter(|e| !snapshot.contains(&e.event_id))
        .collect();
    let distinct: HashSet<&str> = new.iter().map(|e| e.event_id.as_str()).collect();
    let duplicates = new.len() - distinct.len();
    println!(
        "restart after SIGKILL: {} changes made while down; restored {restored} agents in \
         {restore_secs:.3}s, ready after {ready_after:.1?}, settled after {settled_after:.1?}; \
         {} new records ({} distinct, {duplicates} same-event_id duplicates), \
         {} records in all",
        changed.len(),
        new.len(),
        distinct.len(),
        records.len()
    );
    assert_eq!(restored, 500.0, "the whole state topic was restored");
    assert_eq!(distinct.len(), 15, "one event per change made while down");
    let mut per_agent: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for ev in &new {
        assert_eq!(ev.op, Op::Update as i32, "{ev:?}");
        assert_eq!(ev.seq, 2, "seq continues from the restored value");
        let b = ev.before.as_ref().expect("before");
        let a = ev.after.as_ref().expect("after");
        assert_eq!((b.status_code, a.status_code), (2, 3));
        per_agent.entry(a.agent_id.as_str()).or_default().push(*ev);
    }
    let mut got: Vec<&str> = per_agent.keys().copied().collect();
    let mut want: Vec<&str> = changed.iter().map(String::as_str).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(
        got, want,
        "exactly the changed agents, unchanged ones emit nothing"
    );
    for evs in per_agent.values() {
        // A re-delivery is only acceptable as the same event (same id, same change).
        assert!(evs
            .iter()
            .all(|e| e.event_id == evs[0].event_id && e.after == evs[0].after));
    }
    // The update's `before` is what the snapshot said: consumers see a continuous chain.
    for ev in &new {
        let a = ev.after.as_ref().expect("after");
        let snap = all
            .iter()
            .find(|e| e.seq == 1 && e.after.as_ref().is_some_and(|s| s.agent_id == a.agent_id))
            .expect("snapshot event of the agent");
        assert_eq!(ev.before, snap.after);
    }
    second.signal("TERM");
    assert!(second.wait_exit(Duration::from_secs(15)).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_sigterm_flushes_and_exits_zero() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config(300)).await;
    let mut cfg = child_config(&sim, &broker.brokers, "sigterm");
    cfg.shutdown.grace = std::time::Duration::from_secs(10);
    let events = cfg.kafka.events_topic.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = ServiceProcess::spawn(&cfg, dir.path(), "sigterm");
    child.wait_ready(Duration::from_secs(60)).await;
    let snapshot = wait_events(&child, &broker.brokers, &events, 300).await;

    // Changes observed by a sweep, then SIGTERM at once: whatever is still pending must
    // be flushed within the grace period.
    let changed = sim.running_agents(10);
    child.between_sweeps().await;
    sim.set_status_of(&changed, 4);
    child.wait_sweeps(1, Duration::from_secs(30)).await;
    let signalled = Instant::now();
    child.signal("TERM");
    let status = child
        .wait_exit(cfg.shutdown.grace + Duration::from_secs(5))
        .await;
    let took = signalled.elapsed();
    let stderr = child.stderr();
    let status = status.unwrap_or_else(|| panic!("still running after grace:\n{stderr}"));
    let new = events_since(&broker.brokers, &events, &snapshot);
    println!(
        "SIGTERM: {status} after {took:.2?} (grace {:?}); {} of {} changes in the topic",
        cfg.shutdown.grace,
        new.len(),
        changed.len()
    );
    assert!(status.success(), "exit status 0, got {status}:\n{stderr}");
    assert!(took < cfg.shutdown.grace, "exited within the grace period");
    assert!(
        stderr.contains("signal received, shutting down"),
        "logs the signal:\n{stderr}"
    );
    assert!(
        stderr.contains("shutdown: flushing pending changes"),
        "logs the drain:\n{stderr}"
    );
    assert!(stderr.contains("stopped"), "logs the stop:\n{stderr}");
    assert!(
        !stderr.contains("not acknowledged by Kafka"),
        "nothing left unflushed:\n{stderr}"
    );
    assert_eq!(new.len(), changed.len(), "every change flushed");
    assert!(new.iter().all(|e| e.op == Op::Update as i32 && e.seq == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_state_topic_gives_snapshot_then_restart_gives_nothing_new() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config(400)).await;
    let cfg = child_config(&sim, &broker.brokers, "restart-quiet");
    let (events, state) = (&cfg.kafka.events_topic, &cfg.kafka.state_topic);
    let dir = tempfile::tempdir().expect("tempdir");

    let mut first = ServiceProcess::spawn(&cfg, dir.path(), "first");
    first.wait_ready(Duration::from_secs(60)).await;
    let snapshot = wait_events(&first, &broker.brokers, events, 400).await;
    let first_metrics = first.metrics().await;
    assert_eq!(
        metric_value(&first_metrics, "agentwatch_restored_agents "),
        0.0
    );
    let all = read_events(&broker.brokers, events);
    assert!(all
        .iter()
        .all(|e| e.op == Op::Snapshot as i32 && e.seq == 1));
    first.signal("TERM");
    let status = first.wait_exit(Duration::from_secs(15)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "first run exits 0: {status:?}\n{}",
        first.stderr()
    );
    wait_state(&broker.brokers, state, 400).await;

    let mut second = ServiceProcess::spawn(&cfg, dir.path(), "second");
    let ready_after = second.wait_ready(Duration::from_secs(60)).await;
    second.wait_sweeps(5, Duration::from_secs(30)).await;
    let new = events_since(&broker.brokers, events, &snapshot);
    let metrics = second.metrics().await;
    let restored = metric_value(&metrics, "agentwatch_restored_agents ");
    let restore_secs = metric_value(&metrics, "agentwatch_restore_duration_seconds ");
    println!(
        "quiet restart: {} snapshot events, restored {restored} agents in {restore_secs:.3}s, \
         ready after {ready_after:.1?}, {} new events over 5 sweeps",
        snapshot.len(),
        new.len()
    );
    assert!(new.is_empty(), "restart without changes emitted {new:?}");
    assert_eq!(restored, 400.0);
    assert_eq!(metric_value(&metrics, "agentwatch_events_total{"), 0.0);
    assert_eq!(metric_value(&metrics, "agentwatch_pending_changes "), 0.0);
    second.signal("TERM");
    assert!(second
        .wait_exit(Duration::from_secs(15))
        .await
        .is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_kafka_is_down_exits_after_the_grace_and_the_next_start_emits_the_rest() {
    let broker = Broker::private();
    let sim = Sim::start(sim_config(200)).await;
    let mut cfg = child_config(&sim, &broker.brokers, "sigterm-down");
    cfg.shutdown.grace = Duration::from_secs(3);
    let (events, state) = (&cfg.kafka.events_topic, &cfg.kafka.state_topic);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = ServiceProcess::spawn(&cfg, dir.path(), "first");
    first.wait_ready(Duration::from_secs(60)).await;
    let snapshot = wait_events(&first, &broker.brokers, events, 200).await;
    wait_state(&broker.brokers, state, 200).await;

    broker.signal("STOP");
    let changed = sim.running_agents(10);
    first.between_sweeps().await;
    sim.set_status_of(&changed, 3);
    first.wait_sweeps(2, Duration::from_secs(30)).await;
    let pending = metric_value(&first.metrics().await, "agentwatch_pending_changes ");
    assert_eq!(pending, 10.0, "the changes wait for Kafka");
    let signalled = Instant::now();
    first.signal("TERM");
    let status = first
        .wait_exit(cfg.shutdown.grace + Duration::from_secs(10))
        .await;
    let took = signalled.elapsed();
    let stderr = first.stderr();
    let status = status.unwrap_or_else(|| panic!("still running:\n{stderr}"));
    broker.signal("CONT");
    assert!(
        status.success(),
        "exit 0 even with changes left: {status}\n{stderr}"
    );
    assert!(
        took >= cfg.shutdown.grace - Duration::from_millis(200),
        "kept trying for the grace period: {took:?}"
    );
    assert!(
        took < cfg.shutdown.grace + Duration::from_secs(5),
        "stopped soon after the grace period: {took:?}"
    );
    assert!(
        stderr.contains("not acknowledged by Kafka") && stderr.contains("agents=10"),
        "logs what could not be flushed:\n{stderr}"
    );

    let mut second = ServiceProcess::spawn(&cfg, dir.path(), "second");
    second.wait_ready(Duration::from_secs(60)).await;
    wait_events(&second, &broker.brokers, events, 200 + 10).await;
    let new = events_since(&broker.brokers, events, &snapshot);
    let distinct: HashSet<&str> = new.iter().map(|e| e.event_id.as_str()).collect();
    println!(
        "SIGTERM with Kafka paused: {status} after {took:.2?} (grace {:?}); next start \
         emitted the {} unflushed changes as {} records ({} same-event_id duplicates of \
         requests the paused broker still held)",
        cfg.shutdown.grace,
        distinct.len(),
        new.len(),
        new.len() - distinct.len()
    );
    assert_eq!(distinct.len(), 10);
    for ev in &new {
        let a = ev.after.as_ref().expect("after");
        assert!(changed.contains(&a.agent_id));
        assert_eq!((ev.op, ev.seq, a.status_code), (Op::Update as i32, 2, 3));
    }
    second.signal("TERM");
    assert!(second.wait_exit(Duration::from_secs(15)).await.is_some());
}
