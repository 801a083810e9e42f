//! Black-box tests per upstream flavour: GSE 1.x, the v2→v1 "auto" fallback, NodeMan
//! plugin status and GSE agent-info enrichment — simulator + real broker.

mod common;

use std::collections::HashSet;

use agentwatch::{config::Config, proto::v1::Op, sim::SimConfig, sources::gse::GseApi};
use common::*;

/// The harness config with GSE 1.x reachable through the ESB, and `api` choosing
/// between the two.
fn gse_config(sim: &Sim, brokers: &str, name: &str, api: GseApi) -> Config {
    let mut cfg = service_config(sim, brokers, name);
    cfg.gse.api = api;
    cfg.gse.esb_base_url = format!("http://{}/api/c/compapi/v2/gse/", sim.addr);
    cfg.validate().expect("valid");
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gse_v1_with_mixed_ipv4_and_ipv6_hosts_watches_ipv4_and_reports_the_rest() {
    let broker = Broker::shared();
    let sim = Sim::start(SimConfig {
        agents: 400,
        seed: 11,
        ipv6_only_ratio: 0.1,
        ..SimConfig::default()
    })
    .await;
    let cfg = gse_config(&sim, &broker.brokers, "gse-v1", GseApi::V1);
    let svc = Service::start(&cfg).await;
    svc.settle().await;

    let truth = sim.sim.truth();
    let (v4, v6): (Vec<_>, Vec<_>) = truth.iter().partition(|t| !t.ip.is_empty());
    assert!(!v6.is_empty(), "the simulator has IPv6-only hosts");
    let events = read_events(&broker.brokers, &cfg.kafka.events_topic);
    assert_eq!(
        events.len(),
        v4.len(),
        "one snapshot per IPv4 host, none for IPv6-only"
    );
    for ev in &events {
        let a = ev.after.as_ref().expect("after");
        assert_eq!(a.status_api, "v1");
        let t = v4
            .iter()
            .find(|t| t.agent_id == a.agent_id)
            .expect("an IPv4 host");
        match (t.in_gse, t.status_code == 2) {
            (false, _) => assert_eq!(a.status_code, -2, "unknown to GSE → not_found"),
            (true, true) => {
                assert_eq!(
                    (a.status_code, a.v1_agent_alive, a.alive),
                    (2, Some(1), true)
                )
            }
            (true, false) => assert_eq!(
                (a.status_code, a.status.as_str(), a.v1_agent_alive, a.alive),
                (-3, "offline", Some(0), false)
            ),
        }
    }
    let metrics = svc.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "agentwatch_inventory_rejected_hosts{reason=\"ipv6_only_gse_v1\"}"
        ),
        v6.len() as f64,
        "IPv6-only hosts are reported, not silently dropped"
    );
    assert_eq!(
        metric_value(&metrics, "agentwatch_gse_api{api=\"v1\"}"),
        1.0
    );

    // A status change seen through v1 is an update.
    let target = v4
        .iter()
        .find(|t| t.in_gse && t.status_code == 2)
        .expect("a running IPv4 agent");
    let new = svc
        .events_after(|| assert!(sim.sim.set_status(&target.agent_id, 3)))
        .await;
    assert_eq!(new.len(), 1);
    let a = new[0].after.as_ref().expect("after");
    assert_eq!(
        (a.agent_id.as_str(), a.status.as_str()),
        (target.agent_id.as_str(), "offline")
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_gse_v1_when_v2_does_not_exist() {
    let broker = Broker::shared();
    let sim = Sim::start(SimConfig {
        agents: 200,
        seed: 12,
        gse_v2: false,
        ..SimConfig::default()
    })
    .await;
    let cfg = gse_config(&sim, &broker.brokers, "gse-auto", GseApi::Auto);
    let svc = Service::start(&cfg).await;
    svc.settle().await;

    let events = read_events(&broker.brokers, &cfg.kafka.events_topic);
    assert_eq!(events.len(), sim.sim.truth().len());
    assert!(events
        .iter()
        .all(|e| e.after.as_ref().expect("after").status_api == "v1"));
    let metrics = svc.metrics().await;
    assert_eq!(
        metric_value(&metrics, "agentwatch_gse_api{api=\"v1\"}"),
        1.0
    );
    assert_eq!(
        metric_value(&metrics, "agentwatch_gse_api{api=\"v2\"}"),
        0.0
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_stays_on_v2_when_it_exists() {
    let broker = Broker::shared();
    let sim = Sim::agents(50, 13).await;
    let cfg = gse_config(&sim, &broker.brokers, "gse-auto-v2", GseApi::Auto);
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let events = read_events(&broker.brokers, &cfg.kafka.events_topic);
    assert!(events
        .iter()
        .all(|e| e.after.as_ref().expect("after").status_api == "v2"));
    assert_eq!(
        metric_value(&svc.metrics().await, "agentwatch_gse_api{api=\"v2\"}"),
        1.0
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_stopping_on_10_hosts_gives_10_updates_naming_the_plugin() {
    let broker = Broker::shared();
    let sim = Sim::agents(300, 14).await;
    let mut cfg = service_config(&sim, &broker.brokers, "plugins");
    cfg.nodeman.plugins = true;
    let svc = Service::start(&cfg).await;
    svc.settle().await;

    let first = read_events(&broker.brokers, &cfg.kafka.events_topic);
    assert!(first
        .iter()
        .any(|e| !e.after.as_ref().expect("after").plugins.is_empty()));

    let targets: Vec<_> = sim
        .sim
        .truth()
        .into_iter()
        .filter(|t| {
            t.plugins
                .iter()
                .any(|p| p.name == "bkmonitorbeat" && p.status == "RUNNING")
        })
        .take(10)
        .collect();
    assert_eq!(targets.len(), 10);
    let new = svc
        .events_after(|| {
            for t in &targets {
                assert!(sim
                    .sim
                    .set_plugin_status(&t.agent_id, "bkmonitorbeat", "TERMINATED"));
            }
        })
        .await;
    assert_eq!(new.len(), 10, "one update per host whose plugin stopped");
    for ev in &new {
        assert_eq!(ev.op, Op::Update as i32);
        assert_eq!(ev.changed_fields, vec!["plugins.bkmonitorbeat.status"]);
        let b = ev.before.as_ref().expect("before");
        let a = ev.after.as_ref().expect("after");
        assert_eq!(b.plugins["bkmonitorbeat"].status, "RUNNING");
        assert_eq!(a.plugins["bkmonitorbeat"].status, "TERMINATED");
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_info_is_carried_and_only_tracked_fields_make_events() {
    let broker = Broker::shared();
    let sim = Sim::agents(150, 15).await;
    let mut cfg = service_config(&sim, &broker.brokers, "agent-info");
    cfg.gse.agent_info = true;
    cfg.gse.agent_info_interval = std::time::Duration::from_secs(1);
    let svc = Service::start(&cfg).await;
    svc.settle().await;

    let first = read_events(&broker.brokers, &cfg.kafka.events_topic);
    let with_info = first
        .iter()
        .filter(|e| {
            e.after
                .as_ref()
                .and_then(|a| a.info.as_ref())
                .is_some_and(|i| !i.parent_ip.is_empty() && i.start_time_ms > 0)
        })
        .count();
    assert!(with_info > 0, "agent info is merged into the state");

    // CPU/memory/report time change on every agent-info call in the simulator; several
    // refreshes later still no event, because they are carried, not diffed.
    let before: HashSet<String> = first.iter().map(|e| e.event_id.clone()).collect();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    svc.settle_after_sweeps(2).await;
    assert!(events_since(&broker.brokers, &cfg.kafka.events_topic, &before).is_empty());

    // A restart (new start time) is tracked by default.
    let target = sim.running_agent();
    svc.between_sweeps().await;
    assert!(sim.sim.restart_agent(&target));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    svc.settle_after_sweeps(2).await;
    let new = events_since(&broker.brokers, &cfg.kafka.events_topic, &before);
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0].changed_fields, vec!["info.start_time"]);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmdb_inventory_paging_over_2345_hosts_yields_exactly_2345_agents() {
    let broker = Broker::shared();
    let sim = Sim::agents(2345, 16).await;
    let mut cfg = service_config(&sim, &broker.brokers, "cmdb");
    cfg.inventory.source = agentwatch::sources::inventory::SourceKind::Cmdb;
    cfg.cmdb.base_url = format!("http://{}/api/bk-cmdb/prod/", sim.addr);
    cfg.cmdb.page_size = 500;
    cfg.nodeman.base_url = String::new();
    cfg.validate().expect("valid");
    let svc = Service::start(&cfg).await;
    svc.settle().await;

    let events = read_events(&broker.brokers, &cfg.kafka.events_topic);
    let ids: HashSet<String> = events
        .iter()
        .map(|e| e.after.as_ref().expect("after").agent_id.clone())
        .collect();
    assert_eq!(events.len(), 2345);
    assert_eq!(ids.len(), 2345, "each agent exactly once");
    let truth: HashSet<String> = sim.sim.truth().into_iter().map(|t| t.agent_id).collect();
    assert_eq!(
        ids, truth,
        "CMDB agents are the ones GSE knows, by the same id rule"
    );
    assert!(
        events
            .iter()
            .all(|e| e.after.as_ref().expect("after").nodeman_status.is_empty()),
        "no NodeMan status from a CMDB inventory"
    );
    assert!(
        sim.sim.request_counts().cmdb_list_hosts >= 6,
        "count call + 5 pages"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_inventory_edited_at_runtime_adds_and_later_removes_agents() {
    let broker = Broker::shared();
    let sim = Sim::agents(60, 17).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hosts.yaml");
    let truth = sim.sim.truth();
    let write = |hosts: &[agentwatch::sim::SimAgent]| {
        let mut y = String::from("hosts:\n");
        for t in hosts {
            if t.legacy {
                y.push_str(&format!("  - cloud_id: {}\n    ip: {}\n", t.cloud_id, t.ip));
            } else {
                y.push_str(&format!("  - agent_id: \"{}\"\n", t.agent_id));
            }
            y.push_str(&format!(
                "    host_id: {}\n    biz_id: {}\n",
                t.host_id, t.biz_id
            ));
        }
        // Write-then-rename, as config management tools do.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, y).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
    };
    write(&truth[..40]);

    let mut cfg = service_config(&sim, &broker.brokers, "file-inventory");
    cfg.inventory.source = agentwatch::sources::inventory::SourceKind::File;
    cfg.inventory.file = Some(path.clone());
    cfg.inventory.file_check_interval = std::time::Duration::from_millis(100);
    cfg.poll.inventory_interval = std::time::Duration::from_secs(3600);
    cfg.poll.remove_after = 2;
    cfg.nodeman.base_url = String::new();
    cfg.validate().expect("valid");
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    assert_eq!(
        read_events(&broker.brokers, &cfg.kafka.events_topic).len(),
        40
    );

    // Add 20 hosts: picked up on change, not on the (1 h) inventory interval.
    let added = svc.events_after(|| write(&truth[..60])).await;
    assert_eq!(added.len(), 20);
    assert!(added.iter().all(|e| e.op == Op::Create as i32));

    // Remove 10: deleted only after `remove_after` (2) refreshes without them; the
    // file changes twice more so the inventory is re-read.
    assert!(
        svc.events_after(|| write(&truth[10..60])).await.is_empty(),
        "one refresh without them is not enough"
    );
    let removed = svc.events_after(|| write(&truth[10..60])).await;
    assert_eq!(removed.len(), 10);
    for ev in &removed {
        assert_eq!(ev.op, Op::Delete as i32);
        let b = ev.before.as_ref().expect("before");
        assert!(truth[..10].iter().any(|t| t.agent_id == b.agent_id));
    }
    svc.stop().await;
}
