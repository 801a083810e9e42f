//! Horizontal sharding: replicas split the agents; a rescale hands agents over through
//! the state topic without delete/create storms.

mod common;

use std::collections::{BTreeMap, HashSet};

use agentwatch::proto::v1::{AgentState, Op};
use common::*;

/// Agent id → (status_code, version, biz_id) of every `after` in a topic; panics on an
/// agent produced twice.
fn first_sweep_states(brokers: &str, topic: &str) -> BTreeMap<String, (i32, String, i64)> {
    let mut out = BTreeMap::new();
    for ev in read_events(brokers, topic) {
        let a: AgentState = ev.after.expect("after");
        let prev = out.insert(a.agent_id.clone(), (a.status_code, a.version, a.biz_id));
        assert!(prev.is_none(), "{} produced twice", a.agent_id);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_equal_one_unsharded_run_and_a_rescale_to_four_emits_nothing() {
    let broker = Broker::shared();
    let sim = Sim::agents(900, 21).await;

    // The reference: one unsharded replica on its own topics.
    let single = service_config(&sim, &broker.brokers, "sharding-single");
    let s = Service::start(&single).await;
    s.settle().await;
    s.stop().await;
    let reference = first_sweep_states(&broker.brokers, &single.kafka.events_topic);
    assert_eq!(reference.len(), 900);

    let base = service_config(&sim, &broker.brokers, "sharding");
    let start = |index: u32, total: u32| {
        let mut c = base.clone();
        c.shard.index = index;
        c.shard.total = total;
        c.validate().expect("valid");
        c
    };
    let shards = [
        Service::start(&start(0, 3)).await,
        Service::start(&start(1, 3)).await,
        Service::start(&start(2, 3)).await,
    ];
    let mut per_shard = Vec::new();
    for (i, s) in shards.iter().enumerate() {
        s.settle().await;
        let m = s.metrics().await;
        assert_eq!(metric_value(&m, "agentwatch_shard_total"), 3.0);
        assert_eq!(metric_value(&m, "agentwatch_shard_index"), i as f64);
        per_shard.push(metric_value(&m, "agentwatch_events_total{op=\"snapshot\"}"));
    }
    println!("agents per shard (3): {per_shard:?}");
    assert!(
        per_shard.iter().all(|&n| (200.0..400.0).contains(&n)),
        "balanced"
    );
    let union = first_sweep_states(&broker.brokers, &base.kafka.events_topic);
    assert_eq!(
        union, reference,
        "3 shards together = one unsharded run, no agent twice"
    );
    for s in shards {
        s.stop().await;
    }

    // Rescale 3 → 4 on the same topics: each agent is restored by its new owner from
    // the state topic, so nothing is created, deleted or changed.
    let before: HashSet<String> = read_events(&broker.brokers, &base.kafka.events_topic)
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    let replicas = [
        Service::start(&start(0, 4)).await,
        Service::start(&start(1, 4)).await,
        Service::start(&start(2, 4)).await,
        Service::start(&start(3, 4)).await,
    ];
    let mut restored = 0.0;
    for r in &replicas {
        r.settle_after_sweeps(3).await;
        restored += metric_value(&r.metrics().await, "agentwatch_restored_agents");
    }
    assert_eq!(
        restored, 900.0,
        "each agent restored by exactly one new shard"
    );
    let new = events_since(&broker.brokers, &base.kafka.events_topic, &before);
    let storms = new
        .iter()
        .filter(|e| e.op == Op::Create as i32 || e.op == Op::Delete as i32)
        .count();
    println!(
        "after the 3 → 4 rescale: {} new events, {storms} create/delete",
        new.len()
    );
    assert_eq!(storms, 0, "no create/delete storm on rescale");
    assert!(new.is_empty(), "nothing changed, nothing emitted: {new:?}");
    for r in replicas {
        r.stop().await;
    }
}
