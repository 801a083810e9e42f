use super::*;
use crate::snapshot::Store;

fn st(id: &str, host: i64, cloud: i64, ip: &str, code: i32) -> AgentState {
    AgentState {
        agent_id: id.into(),
        host_id: host,
        cloud_id: cloud,
        biz_id: host % 3,
        ip: ip.into(),
        status_code: code,
        status: if code == 2 { "running" } else { "lossy" }.into(),
        alive: code == 2,
        observed_at_ms: 1_000,
        ..AgentState::default()
    }
}

/// Observes, produces and acknowledges: the agent ends settled with `acked` set.
fn deliver(s: &Store, id: &str, state: AgentState) {
    s.observe(id, state, 1);
    if s.take_event(id, "t", 0).is_some() {
        s.event_acked(id);
    }
}

fn ids(v: &[AgentRecord]) -> Vec<&str> {
    v.iter().map(|a| a.state.agent_id.as_str()).collect()
}

#[test]
fn lookups_by_host_id_and_address_find_observed_agents() {
    let (s, _rx) = Store::new();
    s.finish_restore();
    s.observe("a", st("a", 11, 0, "10.0.0.1", 2), 1);
    s.observe("0:10.0.0.2", st("0:10.0.0.2", 12, 0, "10.0.0.2", 3), 1);
    s.observe("c", st("c", 13, 5, "10.0.0.1", 2), 1);
    let idx = s.build_index();
    assert_eq!(idx.len(), 3);
    let by_host = |h| s.agent_by_host(&idx, h).map(|a| a.state.agent_id);
    let by_addr = |c, ip| s.agent_by_addr(&idx, c, ip).map(|a| a.state.agent_id);
    assert_eq!(by_host(11).as_deref(), Some("a"));
    assert_eq!(by_host(12).as_deref(), Some("0:10.0.0.2"));
    assert_eq!(by_host(99), None);
    assert_eq!(by_host(0), None, "host id 0 means unknown, never a key");
    // The same IP in two cloud areas is two hosts.
    assert_eq!(by_addr(0, "10.0.0.1").as_deref(), Some("a"));
    assert_eq!(by_addr(5, "10.0.0.1").as_deref(), Some("c"));
    assert_eq!(by_addr(0, " 10.0.0.2 ").as_deref(), Some("0:10.0.0.2"));
    assert_eq!(by_addr(1, "10.0.0.2"), None);
    assert_eq!(by_addr(0, "not-an-ip"), None);
}

#[test]
fn restored_agents_are_indexed_and_tombstoned_ones_are_not_found() {
    let (s, _rx) = Store::new();
    s.restore("a", st("a", 11, 0, "10.0.0.1", 2), 4);
    s.restore("b", st("b", 12, 0, "10.0.0.2", 2), 7);
    s.restore_tombstone("b");
    s.finish_restore();
    let idx = s.build_index();
    let a = s.agent_by_host(&idx, 11).expect("restored agent");
    assert_eq!((a.seq, a.pending, a.observed_at_ms), (4, false, 1_000));
    assert!(s.agent_by_host(&idx, 12).is_none());
    assert!(s.agent_by_addr(&idx, 0, "10.0.0.2").is_none());
}

#[test]
fn an_index_built_before_a_removal_does_not_return_the_removed_agent() {
    let (s, _rx) = Store::new();
    s.restore("a", st("a", 11, 0, "10.0.0.1", 2), 1);
    let idx = s.build_index();
    let g = s.generation();
    s.restore_tombstone("a");
    assert_eq!(s.generation(), g, "removals do not force a rebuild");
    assert!(s.agent_by_host(&idx, 11).is_none());
    assert!(s.agent_by_addr(&idx, 0, "10.0.0.1").is_none());
}

#[test]
fn the_generation_moves_on_new_agents_and_identity_changes_but_not_on_status_changes() {
    let (s, _rx) = Store::new();
    s.finish_restore();
    let g0 = s.generation();
    deliver(&s, "a", st("a", 11, 0, "10.0.0.1", 2));
    let g1 = s.generation();
    assert!(g1 > g0, "a new agent invalidates the index");
    deliver(&s, "a", st("a", 11, 0, "10.0.0.1", 3));
    assert_eq!(s.generation(), g1, "a status change keeps the index");
    s.mark_stale("a");
    assert_eq!(s.generation(), g1);
    deliver(&s, "a", st("a", 11, 0, "10.0.0.9", 3));
    assert!(s.generation() > g1, "a new IP invalidates the index");
}

#[test]
fn an_undelivered_move_that_is_undone_moves_the_generation_back_and_a_status_flap_does_not() {
    let (s, _rx) = Store::new();
    s.finish_restore();
    deliver(&s, "a", st("a", 11, 0, "10.0.0.1", 2));
    s.observe("a", st("a", 11, 0, "10.0.0.9", 2), 2);
    let moved = s.generation();
    // Back to the delivered state before the move was produced: the pending change is
    // dropped, and the index must find "a" at its old address again.
    s.observe("a", st("a", 11, 0, "10.0.0.1", 2), 3);
    assert!(s.generation() > moved);
    let idx = s.build_index();
    assert!(s.agent_by_addr(&idx, 0, "10.0.0.1").is_some());
    // A status change dropped the same way keeps the identity: no rebuild.
    s.observe("a", st("a", 11, 0, "10.0.0.1", 3), 4);
    let g = s.generation();
    s.observe("a", st("a", 11, 0, "10.0.0.1", 2), 5);
    assert_eq!(s.generation(), g);
}

#[test]
fn an_agent_whose_ip_changed_is_found_only_at_its_new_address() {
    let (s, _rx) = Store::new();
    s.finish_restore();
    deliver(&s, "a", st("a", 11, 0, "10.0.0.1", 2));
    let old = s.build_index();
    s.observe("a", st("a", 11, 0, "10.0.0.9", 2), 2);
    assert_ne!(old.generation(), s.generation());
    // The old index still points at "a" for the old address, but "a" no longer has it.
    assert!(s.agent_by_addr(&old, 0, "10.0.0.1").is_none());
    let new = s.build_index();
    assert_eq!(new.generation(), s.generation());
    assert!(s.agent_by_addr(&new, 0, "10.0.0.1").is_none());
    let a = s.agent_by_addr(&new, 0, "10.0.0.9").expect("new address");
    assert!(
        a.pending,
        "the unacknowledged change is what the API reports"
    );
}

#[test]
fn two_agents_on_one_host_resolve_to_the_most_recently_observed() {
    let (s, _rx) = Store::new();
    s.finish_restore();
    // A legacy `cloud:ip` agent, then the same host with a real bk_agent_id.
    deliver(&s, "0:10.0.0.1", st("0:10.0.0.1", 11, 0, "10.0.0.1", 2));
    let mut newer = st("02abc", 11, 0, "10.0.0.1", 3);
    newer.observed_at_ms = 2_000;
    deliver(&s, "02abc", newer);
    let idx = s.build_index();
    let by_host = s.agent_by_host(&idx, 11).expect("host");
    assert_eq!(by_host.state.agent_id, "02abc");
    let by_addr = s.agent_by_addr(&idx, 0, "10.0.0.1").expect("addr");
    assert_eq!(by_addr.state.agent_id, "02abc");
}

#[test]
fn the_record_shows_the_pending_state_and_the_time_of_the_last_observation() {
    let (s, _rx) = Store::new();
    s.finish_restore();
    deliver(&s, "a", st("a", 11, 0, "10.0.0.1", 2));
    let a = s.agent("a").expect("a");
    assert_eq!((a.seq, a.pending, a.stale), (1, false, false));
    // Unchanged but observed later: the state keeps its time, the record moves on.
    let mut again = st("a", 11, 0, "10.0.0.1", 2);
    again.observed_at_ms = 5_000;
    s.observe("a", again, 2);
    let a = s.agent("a").expect("a");
    assert_eq!((a.state.observed_at_ms, a.observed_at_ms), (1_000, 5_000));
    // A change not yet acknowledged is reported, with the acknowledged seq.
    s.observe("a", st("a", 11, 0, "10.0.0.1", 3), 3);
    let a = s.agent("a").expect("a");
    assert_eq!((a.state.status_code, a.seq, a.pending), (3, 1, true));
    s.mark_stale("a");
    assert!(s.agent("a").expect("a").stale);
    assert!(s.agent("missing").is_none());
}

#[test]
fn an_agent_being_deleted_is_not_reported() {
    let (s, _rx) = Store::new();
    s.finish_restore();
    deliver(&s, "a", st("a", 11, 0, "10.0.0.1", 2));
    assert_eq!(s.inventory_refreshed(&|_| false, 1, 2), 1);
    assert!(s.agent("a").is_none());
    assert!(s.build_index().is_empty());
    assert_eq!(s.summary().total, 0);
}

#[test]
fn paging_walks_every_agent_once_in_id_order() {
    let (s, _rx) = Store::new();
    s.finish_restore();
    for i in (0..25).rev() {
        let id = format!("id-{i:02}");
        deliver(&s, &id, st(&id, i + 1, 0, &format!("10.0.1.{i}"), 2));
    }
    let idx = Arc::new(s.build_index());
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut w = PageWalk::new(
            idx.clone(),
            after.as_deref(),
            ListFilter::default(),
            10,
            1000,
        );
        let mut page = Vec::new();
        loop {
            let chunk = w.next_chunk(&s, 3);
            if chunk.is_empty() {
                break;
            }
            page.extend(chunk);
        }
        assert!(page.len() <= 10);
        seen.extend(ids(&page).into_iter().map(str::to_owned));
        match w.next_after() {
            Some(a) => after = Some(a.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("id-{i:02}")).collect();
    assert_eq!(seen, expected);
}

#[test]
fn a_filtered_page_stops_at_the_scan_bound_and_continues_from_there() {
    let (s, _rx) = Store::new();
    s.finish_restore();
    for i in 0..20 {
        let id = format!("id-{i:02}");
        let code = if i == 17 { 3 } else { 2 };
        deliver(&s, &id, st(&id, i + 1, i % 2, &format!("10.0.1.{i}"), code));
    }
    let idx = Arc::new(s.build_index());
    let lossy = ListFilter {
        statuses: vec!["lossy".into()],
        ..ListFilter::default()
    };
    let mut w = PageWalk::new(idx.clone(), None, lossy.clone(), 5, 10);
    assert!(w.next_chunk(&s, 100).is_empty(), "nothing in the first 10");
    assert_eq!(w.next_after(), Some("id-09"));
    let mut w = PageWalk::new(idx.clone(), Some("id-09"), lossy, 5, 10);
    assert_eq!(ids(&w.next_chunk(&s, 100)), vec!["id-17"]);
    assert_eq!(w.next_after(), None);

    let f = ListFilter {
        statuses: vec!["running".into(), "lossy".into()],
        biz_id: Some(2),
        cloud_id: Some(1),
    };
    let mut w = PageWalk::new(idx, None, f, 100, 1000);
    let got = w.next_chunk(&s, 100);
    assert!(!got.is_empty());
    assert!(got
        .iter()
        .all(|a| a.state.biz_id == 2 && a.state.cloud_id == 1));
    let expected = (0..20).filter(|i| (i + 1) % 3 == 2 && i % 2 == 1).count();
    assert_eq!(got.len(), expected);
}

#[test]
fn the_summary_counts_by_status_business_and_cloud() {
    let (s, _rx) = Store::new();
    s.finish_restore();
    deliver(&s, "a", st("a", 1, 0, "10.0.0.1", 2));
    deliver(&s, "b", st("b", 2, 0, "10.0.0.2", 2));
    deliver(&s, "c", st("c", 3, 7, "10.0.0.3", 3));
    s.observe("d", st("d", 4, 7, "10.0.0.4", 3), 1); // not yet acknowledged
    s.mark_stale("a");
    let sum = s.summary();
    assert_eq!((sum.total, sum.stale, sum.pending), (4, 1, 1));
    assert_eq!(sum.by_status["running"], 2);
    assert_eq!(sum.by_status["lossy"], 2);
    assert_eq!(sum.by_biz, BTreeMap::from([(0, 1), (1, 2), (2, 1)]));
    assert_eq!(sum.by_cloud, BTreeMap::from([(0, 2), (7, 2)]));
}

#[test]
#[ignore = "timing only: cargo test --lib query_index_build_time -- --ignored --nocapture"]
fn query_index_build_time() {
    let (s, _rx) = Store::new();
    s.finish_restore();
    let n = 200_000;
    for i in 0..n {
        let id = format!("02{i:030}");
        let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        s.restore(&id, st(&id, i + 1, 0, &ip, 2), 1);
    }
    let t = std::time::Instant::now();
    let idx = s.build_index();
    println!("index of {} agents built in {:?}", idx.len(), t.elapsed());
    let t = std::time::Instant::now();
    let found = (1..=10_000)
        .filter(|h| s.agent_by_host(&idx, *h).is_some())
        .count();
    println!("10,000 host-id lookups in {:?}", t.elapsed());
    assert_eq!(found, 10_000);
}
