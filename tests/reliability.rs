//! Reliability tests of the event stream, service in-process: broker outages (a paused
//! tansu process and librdkafka's mock cluster), upstream faults, failing and shrinking
//! inventories, and the consumer's view (folding the events topic = the state topic).
//!
//! Run with `--nocapture` to see the figures each test prints.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use agentwatch::{
    proto::v1::{AgentEvent, AgentState, Op},
    sim::{FaultConfig, NewHost, SimConfig},
};
use common::*;
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    mocking::MockCluster,
    producer::DefaultProducerContext,
    types::{RDKafkaApiKey, RDKafkaRespErr},
    ClientConfig,
};
use tokio::time::Instant;

fn sim_config(agents: usize) -> SimConfig {
    SimConfig {
        agents,
        seed: 11,
        gse_unknown_ratio: 0.05,
        ..SimConfig::default()
    }
}

/// What the events topic says, checked the way a consumer that drops re-deliveries
/// by `event_id` would read it.
#[derive(Debug, Default)]
struct Chains {
    /// Records in the topic.
    records: usize,
    /// Re-deliveries: same event_id and same content as an earlier record.
    duplicates: usize,
    /// Same event_id (so same agent and seq) but different content: a consumer that
    /// drops re-deliveries keeps the first and silently loses the second.
    conflicting: Vec<String>,
    /// Agents whose seqs (after dropping duplicates) are not 1, 2, 3, ...
    seq_gaps: Vec<String>,
    /// Agents where an event's `before` is not the previous event's `after`.
    order_breaks: Vec<String>,
    /// Latest state per agent after folding (deletes remove), with its seq.
    folded: BTreeMap<String, (AgentState, u64)>,
    /// Distinct events per agent.
    per_agent: BTreeMap<String, Vec<AgentEvent>>,
}

fn check_chains(records: &[Record]) -> Chains {
    let mut c = Chains {
        records: records.len(),
        ..Chains::default()
    };
    for (agent, events) in events_by_agent(records) {
        let mut seen: HashMap<String, AgentEvent> = HashMap::new();
        let mut kept: Vec<AgentEvent> = Vec::new();
        for ev in events {
            if let Some(first) = seen.get(&ev.event_id) {
                if same_change(first, &ev) {
                    c.duplicates += 1;
                } else {
                    c.conflicting.push(format!(
                        "{agent} seq {}: {:?} then {:?}",
                        ev.seq,
                        first.after.as_ref().map(|s| s.status_code),
                        ev.after.as_ref().map(|s| s.status_code)
                    ));
                }
                continue;
            }
            seen.insert(ev.event_id.clone(), ev.clone());
            kept.push(ev);
        }
        let seqs: Vec<u64> = kept.iter().map(|e| e.seq).collect();
        if seqs.iter().enumerate().any(|(i, s)| *s != i as u64 + 1) {
            c.seq_gaps.push(format!("{agent}: {seqs:?}"));
        }
        for pair in kept.windows(2) {
            if pair[1].before != pair[0].after {
                c.order_breaks.push(format!("{agent} seq {}", pair[1].seq));
            }
        }
        let last = kept.last().expect("at least one event");
        match (&last.after, Op::try_from(last.op)) {
            (Some(after), _) => {
                c.folded.insert(agent.clone(), (after.clone(), last.seq));
            }
            (None, Ok(Op::Delete)) => {}
            (None, op) => panic!("{agent}: event without after that is not a delete: {op:?}"),
        }
        c.per_agent.insert(agent, kept);
    }
    c
}

/// Same change: everything but the produce time (a re-delivery after a crash is
/// produced again, so its `ts_ms` differs).
fn same_change(a: &AgentEvent, b: &AgentEvent) -> bool {
    AgentEvent {
        ts_ms: 0,
        ..a.clone()
    } == AgentEvent {
        ts_ms: 0,
        ..b.clone()
    }
}

/// The status code the service must end up with for a simulated agent.
fn truth_code(sim: &Sim, agent_id: &str) -> i32 {
    let t = sim.sim.agent(agent_id).expect("agent in the simulation");
    if t.in_gse {
        t.status_code
    } else {
        -2
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_of_30s_loses_no_change_and_keeps_per_agent_order() {
    let broker = Broker::private();
    let sim = Sim::start(sim_config(200)).await;
    let mut cfg = service_config(&sim, &broker.brokers, "outage");
    // Longer than the outage: librdkafka keeps the produce requests it already sent to
    // the paused broker and retries them, instead of timing the messages out. (With a
    // shorter timeout tansu fences the producer for good: see
    // `broker_outage_longer_than_the_message_timeout_is_recovered_from`.)
    cfg.kafka.message_timeout = Duration::from_secs(60);
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let running = svc.running();
    let changed = sim.running_agents(20);

    broker.signal("STOP");
    let down = Instant::now();
    // Three successive statuses per agent, ~10 s apart: the first change is already in
    // flight to the paused broker when the later ones replace the pending one.
    let statuses = [3, 4, 1];
    let mut changes = 0;
    let mut max_pending = 0;
    for (round, code) in statuses.iter().enumerate() {
        tokio::time::sleep_until(down + Duration::from_secs(10) * round as u32).await;
        svc.between_sweeps().await;
        for id in &changed {
            assert!(sim.sim.set_status(id, *code));
            changes += 1;
        }
        next_sweeps(running, 2).await;
        let stats = running.store.stats();
        assert!(
            stats.pending <= changed.len(),
            "at most one pending change per changed agent: {} pending after round {}",
            stats.pending,
            round + 1
        );
        max_pending = max_pending.max(stats.pending);
    }
    tokio::time::sleep_until(down + Duration::from_secs(30)).await;
    next_sweeps(running, 1).await;
    let stats = running.store.stats();
    assert_eq!(
        stats.pending,
        changed.len(),
        "every changed agent (and no other) holds a pending change while Kafka is down"
    );
    let metrics = svc.metrics().await;
    let pending_metric = metric_value(&metrics, "agentwatch_pending_changes ");
    let oldest = metric_value(&metrics, "agentwatch_oldest_pending_age_seconds ");
    assert!(
        pending_metric > 0.0,
        "agentwatch_pending_changes > 0 while down"
    );
    assert!(
        oldest >= 20.0,
        "oldest pending age covers the outage: {oldest}"
    );
    let errors_while_down = metric_value(&metrics, "agentwatch_kafka_delivery_errors_total");

    broker.signal("CONT");
    let outage = down.elapsed();
    let resumed = Instant::now();
    svc.settle_after_sweeps(1).await;
    let recovery = resumed.elapsed();

    let records = read_topic(&broker.brokers, &cfg.kafka.events_topic);
    let chains = check_chains(&records);
    let delivered: usize = changed
        .iter()
        .map(|id| chains.per_agent[id].iter().filter(|e| e.seq > 1).count())
        .sum();
    let lost: Vec<&String> = changed
        .iter()
        .filter(|id| chains.folded.get(*id).map(|(s, _)| s.status_code) != Some(1))
        .collect();
    println!(
        "outage {outage:.1?}, recovery {recovery:.1?}: {changes} changes made to {} agents, \
         {delivered} distinct events delivered for them (latest wins while down), \
         {} records in topic, {} duplicates (same event_id and content), \
         {} conflicting duplicates, {} lost final states, \
         max pending {max_pending}, delivery errors while down {errors_while_down}",
        changed.len(),
        chains.records,
        chains.duplicates,
        chains.conflicting.len(),
        lost.len()
    );
    assert!(
        chains.conflicting.is_empty(),
        "one event_id with two contents: {:?}",
        chains.conflicting
    );
    assert!(
        chains.seq_gaps.is_empty(),
        "seq gaps: {:?}",
        chains.seq_gaps
    );
    assert!(
        chains.order_breaks.is_empty(),
        "before != previous after: {:?}",
        chains.order_breaks
    );
    assert!(lost.is_empty(), "final state lost for {lost:?}");
    for id in &changed {
        let evs = &chains.per_agent[id];
        assert!(
            (2..=4).contains(&evs.len()),
            "{id}: snapshot + 1..=3 updates, got {}",
            evs.len()
        );
        assert!(evs[1..].iter().all(|e| e.op == Op::Update as i32));
    }
    let untouched = chains
        .per_agent
        .iter()
        .filter(|(id, _)| !changed.contains(id))
        .filter(|(_, evs)| evs.len() != 1)
        .count();
    assert_eq!(untouched, 0, "unchanged agents emit nothing new");
    assert_eq!(chains.per_agent.len(), 200);
    assert_eq!(
        state_topic_view(&broker.brokers, &cfg.kafka.state_topic),
        chains.folded,
        "state topic = folded events"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_longer_than_the_message_timeout_is_recovered_from() {
    let broker = Broker::private();
    let sim = Sim::start(sim_config(100)).await;
    let mut cfg = service_config(&sim, &broker.brokers, "outage-timeout");
    cfg.kafka.message_timeout = Duration::from_secs(3);
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let running = svc.running();
    let changed = sim.running_agents(10);

    broker.signal("STOP");
    let down = Instant::now();
    svc.between_sweeps().await;
    sim.set_status_of(&changed, 3);
    // The produce request sent to the paused broker times out on the client.
    let metrics = running.metrics.clone();
    wait_until(
        Duration::from_secs(20),
        "deliveries time out while the broker is paused",
        || metrics.kafka_delivery_errors_total.get() > 0,
    )
    .await;
    tokio::time::sleep_until(down + Duration::from_secs(8)).await;
    broker.signal("CONT");
    let outage = down.elapsed();
    let errors_at_resume = metrics.kafka_delivery_errors_total.get();
    let resumed = Instant::now();
    let store = running.store.clone();
    let deadline = resumed + Duration::from_secs(45);
    while store.unflushed() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let unflushed = store.unflushed();
    let errors_after = metrics.kafka_delivery_errors_total.get();
    let restarts = metric_value(
        &svc.metrics().await,
        "agentwatch_kafka_producer_restarts_total",
    );
    println!(
        "outage {outage:.1?} with message_timeout 3s: after {:.1?} {unflushed} agents still \
         unflushed; delivery errors {errors_at_resume} at resume, {errors_after} after; \
         {restarts} producer restarts",
        resumed.elapsed()
    );
    assert_eq!(
        unflushed,
        0,
        "changes never delivered after the broker came back ({} delivery errors since \
         the resume)",
        errors_after - errors_at_resume
    );
    let chains = check_chains(&read_topic(&broker.brokers, &cfg.kafka.events_topic));
    for id in &changed {
        assert_eq!(chains.folded[id].0.status_code, 3, "{id}");
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_cluster_request_errors_and_broker_down_are_retried_until_delivered() {
    let mock: MockCluster<'static, DefaultProducerContext> =
        MockCluster::new(1).expect("mock cluster");
    let brokers = mock.bootstrap_servers();
    let sim = Sim::start(sim_config(200)).await;
    let mut cfg = service_config(&sim, &brokers, "mock");
    // The mock cluster has no admin API: topics are created through its handle.
    cfg.kafka.create_topics = false;
    // Short, so the broker-down phase makes deliveries fail at the sink (not only
    // inside librdkafka) and exercises the sink's own retry.
    cfg.kafka.message_timeout = Duration::from_secs(2);
    for t in [&cfg.kafka.events_topic, &cfg.kafka.state_topic] {
        mock.create_topic(t, cfg.kafka.partitions, 1)
            .expect("create topic");
    }
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let running = svc.running();
    let agents = sim.running_agents(20);
    let (group_a, group_b) = agents.split_at(10);
    let mut changes = 0;

    // Phase 1: produce requests answered with errors.
    use RDKafkaRespErr::*;
    let errors = [
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        RD_KAFKA_RESP_ERR__TRANSPORT,
    ];
    let injected: Vec<RDKafkaRespErr> = errors.iter().cycle().take(30).copied().collect();
    mock.request_errors(RDKafkaApiKey::Produce, &injected);
    svc.between_sweeps().await;
    for id in group_a {
        assert!(sim.sim.set_status(id, 3));
        changes += 1;
    }
    svc.settle_after_sweeps(2).await;

    // Phase 2: the broker goes down longer than the message timeout.
    mock.broker_down(1).expect("broker down");
    let down = Instant::now();
    svc.between_sweeps().await;
    for id in group_b {
        assert!(sim.sim.set_status(id, 4));
        changes += 1;
    }
    for id in group_a {
        assert!(sim.sim.set_status(id, 1));
        changes += 1;
    }
    next_sweeps(running, 2).await;
    let metrics = running.metrics.clone();
    wait_until(
        Duration::from_secs(20),
        "deliveries fail while the broker is down",
        || metrics.kafka_delivery_errors_total.get() > 0,
    )
    .await;
    tokio::time::sleep_until(down + Duration::from_secs(8)).await;
    let pending = running.store.stats().pending;
    assert_eq!(
        pending,
        agents.len(),
        "one pending change per changed agent"
    );
    mock.broker_up(1).expect("broker up");
    let outage = down.elapsed();
    let resumed = Instant::now();
    svc.settle_after_sweeps(1).await;
    let recovery = resumed.elapsed();
    let delivery_errors = metrics.kafka_delivery_errors_total.get();

    let records = read_topic(&brokers, &cfg.kafka.events_topic);
    let chains = check_chains(&records);
    let lost: Vec<&String> = agents
        .iter()
        .filter(|id| {
            chains.folded.get(*id).map(|(s, _)| s.status_code) != Some(truth_code(&sim, id))
        })
        .collect();
    let delivered: usize = agents
        .iter()
        .map(|id| chains.per_agent[id].iter().filter(|e| e.seq > 1).count())
        .sum();
    println!(
        "mock cluster: {} produce errors injected, broker down {outage:.1?}, recovery \
         {recovery:.1?}: {changes} changes, {delivered} events delivered for them, {} records, \
         {} duplicates, {} conflicting, {} lost, {delivery_errors} delivery errors seen by the sink",
        injected.len(),
        chains.records,
        chains.duplicates,
        chains.conflicting.len(),
        lost.len()
    );
    assert!(delivery_errors > 0);
    assert!(chains.conflicting.is_empty(), "{:?}", chains.conflicting);
    assert!(chains.seq_gaps.is_empty(), "{:?}", chains.seq_gaps);
    assert!(chains.order_breaks.is_empty(), "{:?}", chains.order_breaks);
    assert!(lost.is_empty(), "final state lost for {lost:?}");
    // Group A changed twice (once in each phase), group B once.
    for id in group_a {
        assert_eq!(chains.per_agent[id].len(), 3, "{id}: snapshot + 2 updates");
    }
    for id in group_b {
        assert_eq!(chains.per_agent[id].len(), 2, "{id}: snapshot + 1 update");
    }
    assert_eq!(
        chains.per_agent.values().map(Vec::len).sum::<usize>(),
        200 + 30,
        "no other agent emitted anything"
    );
    assert_eq!(
        state_topic_view(&brokers, &cfg.kafka.state_topic),
        chains.folded
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_percent_upstream_faults_over_twenty_sweeps_emit_zero_events() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config(300)).await;
    let mut cfg = service_config(&sim, &broker.brokers, "faults20");
    // Many small batches, all at once, one retry each: some faults survive the retry
    // (0.2² per batch) and really fail a batch, and a sweep stays short.
    cfg.gse.batch_size = 25;
    cfg.gse.concurrency = 12;
    cfg.gse.retry.max_retries = 1;
    cfg.nodeman.retry.max_retries = 1;
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let before = event_ids(&broker.brokers, &cfg.kafka.events_topic);
    assert_eq!(before.len(), 300);

    sim.sim.set_faults(FaultConfig {
        rate: 0.2,
        // Longer than the service's 1.5 s timeouts: a slow answer is a timeout.
        slow_delay: Duration::from_secs(3),
        ..FaultConfig::default()
    });
    let started = Instant::now();
    let reports = next_sweeps(svc.running(), 20).await;
    let elapsed = started.elapsed();
    sim.sim.set_faults(FaultConfig::default());
    let stats = sim.sim.stats();
    svc.settle_after_sweeps(2).await;

    let new = events_since(&broker.brokers, &cfg.kafka.events_topic, &before);
    let metrics = svc.metrics().await;
    let failed_batches = metric_value(&metrics, "agentwatch_gse_failed_batches_total");
    let partial = reports
        .iter()
        .filter(|r| r.failed_batches > 0 && r.failed_batches < r.batches)
        .count();
    println!(
        "20 sweeps in {elapsed:.1?} with {} of {} requests faulted ({:?}): \
         {failed_batches} GSE batches failed after retries, {partial} partial sweeps, \
         {} inventory refreshes failed, {} new events",
        stats.faulted.total(),
        stats.requests.total(),
        stats.faults,
        metric_value(
            &metrics,
            "agentwatch_inventory_refreshes_total{result=\"failed\"}"
        ),
        new.len()
    );
    assert!(new.is_empty(), "faults turned into events: {new:?}");
    assert!(
        failed_batches > 0.0,
        "the faults were real: some batches failed after retries"
    );
    assert!(stats.faults.len() >= 6, "most fault kinds were injected");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_page_failing_mid_refresh_deletes_nothing() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config(1000)).await;
    let mut cfg = service_config(&sim, &broker.brokers, "page-fail");
    // 1000 hosts at 200 per page: 5 pages, page 2 fails after page 1 succeeded.
    cfg.poll.remove_after = 2;
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let before = event_ids(&broker.brokers, &cfg.kafka.events_topic);
    assert_eq!(before.len(), 1000);
    let running = svc.running();
    let failed = || {
        running
            .metrics
            .inventory_refreshes_total
            .with_label_values(&["failed"])
            .get()
    };
    assert_eq!(failed(), 0);

    // Several refreshes in a row fail on page 2: far more than remove_after.
    let failures = 6;
    sim.sim.fail_inventory_page(2, failures);
    wait_until(
        Duration::from_secs(30),
        "every injected page failure fails a refresh",
        || failed() >= failures as u64,
    )
    .await;
    svc.settle_after_sweeps(3).await;

    let new = events_since(&broker.brokers, &cfg.kafka.events_topic, &before);
    let metrics = svc.metrics().await;
    let deletes = metric_value(&metrics, "agentwatch_events_total{op=\"delete\"}");
    println!(
        "{failures} refreshes failed on page 2 of 5 (remove_after = 2): {} new events, \
         {deletes} deletes, {} inventory agents",
        new.len(),
        metric_value(&metrics, "agentwatch_inventory_agents ")
    );
    assert_eq!(
        failed(),
        failures as u64,
        "each failing page fails one refresh"
    );
    assert!(new.is_empty(), "a failed refresh produced events: {new:?}");
    assert_eq!(deletes, 0.0);
    assert_eq!(running.store.len(), 1000, "every agent still watched");
    assert_eq!(
        metric_value(&metrics, "agentwatch_inventory_agents "),
        1000.0
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_removed_from_the_inventory_get_one_delete_after_remove_after_refreshes_and_a_tombstone(
) {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config(300)).await;
    let mut cfg = service_config(&sim, &broker.brokers, "removals");
    cfg.poll.remove_after = 3;
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let before_records = read_topic(&broker.brokers, &cfg.kafka.events_topic);
    let last_state: HashMap<String, AgentState> = before_records
        .iter()
        .map(Record::event)
        .map(|e| {
            let s = e.after.expect("snapshot has after");
            (s.agent_id.clone(), s)
        })
        .collect();
    let before: std::collections::HashSet<String> =
        before_records.iter().map(|r| r.event().event_id).collect();
    let running = svc.running();
    // Include a legacy ("cloud:ip") agent and one GSE does not know.
    let truth = sim.sim.truth();
    let mut removed: Vec<String> = truth
        .iter()
        .filter(|t| t.in_gse && !t.legacy)
        .take(5)
        .map(|t| t.agent_id.clone())
        .collect();
    removed.extend(
        truth
            .iter()
            .filter(|t| t.legacy)
            .take(1)
            .map(|t| t.agent_id.clone()),
    );
    removed.extend(
        truth
            .iter()
            .filter(|t| !t.in_gse)
            .take(1)
            .map(|t| t.agent_id.clone()),
    );
    assert_eq!(removed.len(), 7);

    // Right after a sweep ends, so the next sweep's refresh is the first without them
    // and no sweep in progress asks GSE about a host that just vanished.
    let last = next_sweeps(running, 1).await[0].sweep;
    for id in &removed {
        assert!(sim.sim.remove_host(id));
    }
    // Two refreshes without them: still there.
    let early = next_sweeps(running, 2).await;
    let deletes = || {
        running
            .metrics
            .events_total
            .with_label_values(&["delete"])
            .get()
    };
    let deletes_after_two = deletes();
    for id in &removed {
        assert!(
            running.store.acked(id).is_some(),
            "{id} deleted before remove_after refreshes"
        );
    }
    assert_eq!(
        early.iter().map(|r| r.sweep).collect::<Vec<_>>(),
        [last + 1, last + 2]
    );
    assert!(early.iter().all(|r| r.inventory_refreshed));
    assert_eq!(deletes_after_two, 0, "no delete after 2 of 3 refreshes");

    // The third refresh deletes them.
    svc.settle_after_sweeps(2).await;
    let new = events_since(&broker.brokers, &cfg.kafka.events_topic, &before);
    let tombstones = state_topic_tombstones(&broker.brokers, &cfg.kafka.state_topic);
    println!(
        "{} hosts removed, remove_after = 3: {deletes_after_two} deletes after 2 refreshes, \
         then {} new events ({} deletes), {} tombstones",
        removed.len(),
        new.len(),
        deletes(),
        tombstones.len()
    );
    assert_eq!(new.len(), 7, "exactly one event per removed agent: {new:?}");
    for ev in &new {
        assert_eq!(ev.op, Op::Delete as i32);
        assert!(ev.after.is_none());
        let b = ev.before.as_ref().expect("before");
        assert!(removed.contains(&b.agent_id));
        assert_eq!(Some(b), last_state.get(&b.agent_id), "before = last state");
        assert_eq!(ev.seq, 2, "seq continues after the snapshot");
        assert_eq!(
            ev.sweep,
            last + 3,
            "deleted by the third refresh without it"
        );
        assert!(ev.changed_fields.is_empty());
    }
    let mut deleted: Vec<String> = new
        .iter()
        .map(|e| e.before.as_ref().expect("before").agent_id.clone())
        .collect();
    deleted.sort();
    removed.sort();
    assert_eq!(deleted, removed);
    assert_eq!(deletes(), 7);
    assert_eq!(
        tombstones,
        removed.iter().cloned().collect(),
        "the latest state record of each removed agent is a tombstone"
    );
    for id in &removed {
        assert!(running.store.acked(id).is_none(), "{id} left the snapshot");
    }
    // Deleted agents keep only their seq (so a return continues it); they count nowhere.
    assert_eq!(running.store.stats().agents, 293);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_returns_after_its_delete_continues_its_seq_with_new_event_ids() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config(50)).await;
    let mut cfg = service_config(&sim, &broker.brokers, "return");
    cfg.poll.remove_after = 1;
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    // A legacy agent's id is "cloud:ip": a new host on a reused address is the same
    // agent id (the usual way an id comes back).
    let t = sim
        .sim
        .truth()
        .into_iter()
        .find(|t| t.legacy && t.in_gse)
        .expect("a legacy agent");
    svc.between_sweeps().await;
    assert!(sim.sim.remove_host(&t.agent_id));
    svc.settle_after_sweeps(3).await;
    svc.between_sweeps().await;
    let back = sim.sim.add_host(NewHost {
        cloud_id: Some(t.cloud_id),
        ip: Some(t.ip.parse().expect("ipv4")),
        bk_agent_id: Some(String::new()),
        biz_id: Some(t.biz_id),
        ..NewHost::default()
    });
    assert_eq!(back, t.agent_id, "same agent id");
    svc.settle_after_sweeps(3).await;

    let records = read_topic(&broker.brokers, &cfg.kafka.events_topic);
    let events = events_by_agent(&records)
        .remove(&t.agent_id)
        .expect("events");
    let summary: Vec<(String, u64)> = events
        .iter()
        .map(|e| {
            let op = Op::try_from(e.op).expect("op").as_str_name().to_owned();
            (op, e.seq)
        })
        .collect();
    println!("events of the returning agent {}: {summary:?}", t.agent_id);
    let ops: Vec<&str> = summary.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(ops, ["OP_SNAPSHOT", "OP_DELETE", "OP_CREATE"]);
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids.len(),
        3,
        "every event has its own event_id: {summary:?}"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3], "seq strictly increases per agent");
    assert!(
        events[2].incarnation_ms > events[0].incarnation_ms,
        "the returning agent is a new incarnation"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folding_the_events_topic_reproduces_the_state_topic() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config(400)).await;
    let mut cfg = service_config(&sim, &broker.brokers, "fold");
    cfg.poll.remove_after = 1;
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let truth = sim.sim.truth();
    let ids: Vec<String> = truth
        .iter()
        .filter(|t| t.in_gse)
        .map(|t| t.agent_id.clone())
        .collect();

    // Updates, several per agent for some.
    for (round, code) in [3, 4, 2].iter().enumerate() {
        for id in ids.iter().skip(round * 10).take(30) {
            assert!(sim.sim.set_status(id, *code));
        }
        for id in ids.iter().skip(100 + round).take(3) {
            assert!(sim.sim.set_version(id, &format!("2.2.{round}")));
        }
        svc.settle_after_sweeps(2).await;
    }
    // Deletes, including agents that changed before.
    for id in ids.iter().skip(25).take(10) {
        assert!(sim.sim.remove_host(id));
    }
    // Creates.
    let added: Vec<String> = (0..8)
        .map(|_| sim.sim.add_host(NewHost::default()))
        .collect();
    // GSE forgets some.
    for id in ids.iter().skip(200).take(4) {
        assert!(sim.sim.forget_in_gse(id));
    }
    svc.settle_after_sweeps(3).await;
    // And one more update after all that.
    assert!(sim.sim.set_status(&added[0], 3));
    svc.settle_after_sweeps(2).await;

    let records = read_topic(&broker.brokers, &cfg.kafka.events_topic);
    let chains = check_chains(&records);
    let state = state_topic_view(&broker.brokers, &cfg.kafka.state_topic);
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for ev in chains.per_agent.values().flatten() {
        let op = Op::try_from(ev.op).expect("known op");
        *ops.entry(op.as_str_name().to_owned()).or_default() += 1;
    }
    println!(
        "{} records ({} duplicates), ops {ops:?}; folded {} agents, state topic {} agents",
        chains.records,
        chains.duplicates,
        chains.folded.len(),
        state.len()
    );
    assert!(chains.seq_gaps.is_empty(), "{:?}", chains.seq_gaps);
    assert!(chains.order_breaks.is_empty(), "{:?}", chains.order_breaks);
    assert!(chains.conflicting.is_empty(), "{:?}", chains.conflicting);
    assert_eq!(ops.get("OP_SNAPSHOT"), Some(&400));
    assert_eq!(ops.get("OP_CREATE"), Some(&8));
    assert_eq!(ops.get("OP_DELETE"), Some(&10));
    assert!(ops.get("OP_UPDATE").is_some_and(|n| *n >= 60));
    assert_eq!(chains.folded.len(), 400 - 10 + 8);
    // Full equality: same AgentState (observed_at_ms included) and same seq.
    let differing: Vec<&String> = chains
        .folded
        .keys()
        .chain(state.keys())
        .filter(|k| chains.folded.get(*k) != state.get(*k))
        .collect();
    assert!(
        differing.is_empty(),
        "fold != state topic for {differing:?}"
    );
    // And both agree with the simulator.
    for (id, (s, _)) in &chains.folded {
        assert_eq!(s.status_code, truth_code(&sim, id), "{id}");
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_state_topic_is_reported_clearly() {
    let broker = Broker::shared();
    let sim = Sim::start(sim_config(20)).await;
    let cfg = service_config(&sim, &broker.brokers, "misconf");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.brokers)
        .create()
        .expect("admin client");
    let created = admin
        .create_topics(
            &[
                NewTopic::new(&cfg.kafka.state_topic, 3, TopicReplication::Fixed(1))
                    .set("cleanup.policy", "delete"),
            ],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let stop = tokio_util::sync::CancellationToken::new();
    let running = agentwatch::app::start(cfg.clone(), stop.clone())
        .await
        .expect("starts");
    let result = tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .expect("the service stops on its own");
    let err = result.expect_err("a non-compacted state topic is an error");
    let msg = err.to_string();
    println!("start-up error: {msg}");
    assert!(
        msg.contains(&cfg.kafka.state_topic),
        "names the topic: {msg}"
    );
    assert!(msg.contains("cleanup.policy"), "names the setting: {msg}");
    assert!(msg.contains("delete"), "says what it is: {msg}");
    stop.cancel();
}
