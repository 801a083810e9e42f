//! The generated population is deterministic and looks like a real deployment.

use std::collections::HashSet;

use crate::sim::{SimConfig, Simulator};

#[test]
fn the_same_seed_gives_the_same_population_and_another_seed_does_not() {
    let a = Simulator::new(SimConfig {
        agents: 300,
        ..SimConfig::default()
    })
    .truth();
    let b = Simulator::new(SimConfig {
        agents: 300,
        ..SimConfig::default()
    })
    .truth();
    let c = Simulator::new(SimConfig {
        agents: 300,
        seed: 2,
        ..SimConfig::default()
    })
    .truth();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn ids_and_addresses_are_unique_and_ids_vary_in_length() {
    let truth = Simulator::new(SimConfig {
        agents: 5000,
        ..SimConfig::default()
    })
    .truth();
    let ids: HashSet<_> = truth.iter().map(|a| a.agent_id.as_str()).collect();
    let ips: HashSet<_> = truth.iter().map(|a| a.ip.as_str()).collect();
    assert_eq!((ids.len(), ips.len()), (5000, 5000));
    let lengths: HashSet<_> = truth
        .iter()
        .filter(|a| !a.legacy)
        .map(|a| a.agent_id.len())
        .collect();
    assert!(lengths.iter().all(|l| (32..=64).contains(l)));
    assert!(lengths.len() > 20, "lengths vary: {lengths:?}");
    assert!(truth.iter().any(|a| a
        .agent_id
        .chars()
        .any(|c| c > 'f' && c.is_ascii_lowercase())));
}

#[test]
fn the_mix_is_mostly_running_with_some_legacy_hosts_and_clouds() {
    let truth = Simulator::new(SimConfig {
        agents: 10_000,
        ..SimConfig::default()
    })
    .truth();
    let share = |f: &dyn Fn(&crate::sim::SimAgent) -> bool| {
        truth.iter().filter(|a| f(a)).count() as f64 / truth.len() as f64
    };
    assert!((0.93..0.97).contains(&share(&|a| a.status_code == 2)));
    assert!((0.08..0.12).contains(&share(&|a| a.legacy)));
    assert!((0.1..0.2).contains(&share(&|a| a.cloud_id != 0)));
    assert!(truth
        .iter()
        .all(|a| a.in_gse && a.status_code >= 0 && a.status_code <= 7));
    let bizs: HashSet<_> = truth.iter().map(|a| a.biz_id).collect();
    assert_eq!(bizs.len(), 20);
}

#[test]
fn generating_a_large_population_is_quick() {
    let started = std::time::Instant::now();
    let sim = Simulator::new(SimConfig {
        agents: 100_000,
        ..SimConfig::default()
    });
    assert_eq!(sim.agent_count(), 100_000);
    // Generous for a debug build; the point is "linear, not quadratic".
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}
