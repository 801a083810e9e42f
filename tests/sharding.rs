//! Horizontal sharding: replicas split the agents; a rescale hands agents over through
//! the state topic without delete/create storms.

mod common;

use std::collections::HashSet;

use agentwatch::proto::v1::Op;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_cover_every_agent_exactly_once_and_a_rescale_to_three_emits_nothing() {
    let broker = Broker::shared();
    let sim = Sim::agents(600, 21).await;
    let base = service_config(&sim, &broker.brokers, "sharding");
    let start = |index: u32, total: u32| {
        let mut c = base.clone();
        c.shard.index = index;
        c.shard.total = total;
        c.validate().expect("valid");
        c
    };

    let (c0, c1) = (start(0, 2), start(1, 2));
    let (s0, s1) = (Service::start(&c0).await, Service::start(&c1).await);
    s0.settle().await;
    s1.settle().await;
    let m0 = s0.metrics().await;
    assert_eq!(metric_value(&m0, "agentwatch_shard_total"), 2.0);
    assert_eq!(metric_value(&m0, "agentwatch_shard_index"), 0.0);
    assert_eq!(
        metric_value(&s1.metrics().await, "agentwatch_shard_index"),
        1.0
    );

    let events = read_events(&broker.brokers, &base.kafka.events_topic);
    let ids: Vec<String> = events
        .iter()
        .map(|e| e.after.as_ref().expect("after").agent_id.clone())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), 600, "no agent produced by both shards");
    assert_eq!(unique.len(), 600, "every agent produced by one shard");
    let n0 = metric_value(&m0, "agentwatch_events_total{op=\"snapshot\"}");
    assert!((200.0..400.0).contains(&n0), "shards are balanced: {n0}");
    s0.stop().await;
    s1.stop().await;

    // Rescale 2 → 3 on the same topics: each new replica restores its agents from the
    // state topic, so nothing is created, deleted or changed.
    let before: HashSet<String> = events.into_iter().map(|e| e.event_id).collect();
    let replicas = [
        Service::start(&start(0, 3)).await,
        Service::start(&start(1, 3)).await,
        Service::start(&start(2, 3)).await,
    ];
    let mut restored = 0.0;
    for r in &replicas {
        r.settle_after_sweeps(3).await;
        restored += metric_value(&r.metrics().await, "agentwatch_restored_agents");
    }
    assert_eq!(
        restored, 600.0,
        "each agent restored by exactly one new shard"
    );
    let new = events_since(&broker.brokers, &base.kafka.events_topic, &before);
    assert!(
        new.iter().all(|e| e.op == Op::Update as i32),
        "no create/delete storm on rescale: {new:?}"
    );
    assert!(new.is_empty(), "nothing changed, nothing emitted: {new:?}");
    for r in replicas {
        r.stop().await;
    }
}
