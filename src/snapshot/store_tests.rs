use super::*;

fn st(id: &str, code: i32) -> AgentState {
    AgentState {
        agent_id: id.into(),
        status_code: code,
        status: if code == 2 { "running" } else { "lossy" }.into(),
        alive: code == 2,
        ..AgentState::default()
    }
}

fn drain(rx: &mut mpsc::UnboundedReceiver<Work>) -> Vec<Work> {
    let mut v = Vec::new();
    while let Ok(w) = rx.try_recv() {
        v.push(w);
    }
    v
}

fn ev(id: &str) -> Work {
    Work::Event(AgentId::from(id))
}

#[test]
fn first_sweep_on_an_empty_store_emits_snapshot_events() {
    let (s, mut rx) = Store::new();
    s.finish_restore();
    s.observe("a", st("a", 2), 1);
    assert_eq!(drain(&mut rx), vec![ev("a")]);
    let out = s.take_event("a", "src", 0).expect("event");
    assert_eq!(out.event.op, Op::Snapshot as i32);
    assert_eq!(out.event.seq, 1);
    assert!(out.event.before.is_none());
}

#[test]
fn agents_first_seen_after_the_first_sweep_are_creates() {
    let (s, _rx) = Store::new();
    s.finish_restore();
    s.end_initial_snapshot();
    s.observe("a", st("a", 2), 2);
    assert_eq!(
        s.take_event("a", "src", 0).expect("event").event.op,
        Op::Create as i32
    );
}

#[test]
fn unchanged_observation_of_a_restored_agent_emits_nothing() {
    let (s, mut rx) = Store::new();
    s.restore("a", st("a", 2), 5);
    s.finish_restore();
    let mut again = st("a", 2);
    again.observed_at_ms = 1234;
    s.observe("a", again, 1);
    assert!(drain(&mut rx).is_empty());
}

#[test]
fn a_change_is_an_update_with_before_after_and_the_next_seq() {
    let (s, _rx) = Store::new();
    s.restore("a", st("a", 2), 5);
    s.finish_restore();
    s.observe("a", st("a", 3), 1);
    let e = s.take_event("a", "src", 0).expect("event").event;
    assert_eq!(e.op, Op::Update as i32);
    assert_eq!(e.seq, 6);
    assert_eq!(e.before.expect("before").status_code, 2);
    assert_eq!(e.after.expect("after").status_code, 3);
    assert_eq!(e.changed_fields, vec!["status_code", "status", "alive"]);
    assert_eq!(e.event_id, crate::snapshot::event_id("a", 0, 6));
}

#[test]
fn while_undelivered_the_latest_observation_wins() {
    let (s, mut rx) = Store::new();
    s.restore("a", st("a", 2), 1);
    s.finish_restore();
    s.observe("a", st("a", 3), 1);
    s.observe("a", st("a", 4), 2);
    s.observe("a", st("a", 5), 3);
    // Queued once, not once per observation: memory is O(agents).
    assert_eq!(drain(&mut rx), vec![ev("a")]);
    let e = s.take_event("a", "src", 0).expect("event").event;
    assert_eq!(e.after.expect("after").status_code, 5);
    assert_eq!(e.before.expect("before").status_code, 2);
}

#[test]
fn a_change_reverted_before_delivery_is_not_sent() {
    let (s, _rx) = Store::new();
    s.restore("a", st("a", 2), 1);
    s.finish_restore();
    s.observe("a", st("a", 3), 1);
    s.observe("a", st("a", 2), 2);
    assert!(s.take_event("a", "src", 0).is_none());
}

#[test]
fn snapshot_advances_only_after_acknowledgement() {
    let (s, mut rx) = Store::new();
    s.restore("a", st("a", 2), 1);
    s.finish_restore();
    s.observe("a", st("a", 3), 1);
    drain(&mut rx);
    s.take_event("a", "src", 0).expect("event");
    assert_eq!(s.acked("a").expect("acked").0.status_code, 2);
    s.event_acked("a");
    assert_eq!(s.acked("a").expect("acked"), (st("a", 3), 2));
    // The state topic write follows the ack.
    assert_eq!(drain(&mut rx), vec![Work::State(AgentId::from("a"))]);
    let out = s.take_state("a").expect("state");
    assert_eq!(out.seq, 2);
    s.state_acked("a");
    assert_eq!(s.unflushed(), 0);
}

#[test]
fn an_acknowledged_event_can_hand_over_its_state_write_at_once() {
    let (s, mut rx) = Store::new();
    s.restore("a", st("a", 2), 1);
    s.finish_restore();
    s.observe("a", st("a", 3), 1);
    drain(&mut rx);
    s.take_event("a", "src", 0).expect("event");
    let out = s.event_acked_take_state("a").expect("state write due");
    assert_eq!((out.seq, out.state), (2, Some(st("a", 3))));
    assert!(
        drain(&mut rx).is_empty(),
        "nothing queued: the caller produces it"
    );
    assert_eq!(s.unflushed(), 1, "in flight until acknowledged");
    // A second change acknowledged while that write is in flight: its state write waits
    // for the first (one per agent in flight) and follows its acknowledgement.
    s.observe("a", st("a", 4), 2);
    drain(&mut rx);
    s.take_event("a", "src", 0).expect("event");
    assert!(s.event_acked_take_state("a").is_none());
    assert!(drain(&mut rx).is_empty());
    s.state_acked("a");
    assert_eq!(drain(&mut rx), vec![Work::State(AgentId::from("a"))]);
    let out = s.take_state("a").expect("the newer state");
    assert_eq!((out.seq, out.state), (3, Some(st("a", 4))));
    s.state_acked("a");
    assert_eq!(s.unflushed(), 0);
}

#[test]
fn a_failed_delivery_is_retried_with_the_same_seq() {
    let (s, _rx) = Store::new();
    s.restore("a", st("a", 2), 1);
    s.finish_restore();
    s.observe("a", st("a", 3), 1);
    let first = s.take_event("a", "src", 0).expect("event").event;
    assert!(s.event_failed("a"));
    let again = s.take_event("a", "src", 0).expect("event").event;
    assert_eq!(first.seq, again.seq);
    assert_eq!(first.event_id, again.event_id);
}

#[test]
fn a_change_seen_while_in_flight_follows_after_the_ack_in_order() {
    let (s, mut rx) = Store::new();
    s.restore("a", st("a", 2), 1);
    s.finish_restore();
    s.observe("a", st("a", 3), 1);
    drain(&mut rx);
    let e1 = s.take_event("a", "src", 0).expect("event").event;
    s.observe("a", st("a", 4), 2);
    // Only one event per agent in flight.
    assert!(s.take_event("a", "src", 0).is_none());
    s.event_acked("a");
    let e2 = s.take_event("a", "src", 0).expect("event").event;
    assert_eq!((e1.seq, e2.seq), (2, 3));
    assert_eq!(e2.before.expect("before").status_code, 3);
}

#[test]
fn an_agent_missing_from_k_successful_refreshes_is_deleted_once() {
    let (s, mut rx) = Store::new();
    s.restore("a", st("a", 2), 1);
    s.finish_restore();
    let absent = |_: &str| false;
    assert_eq!(s.inventory_refreshed(&absent, 3, 1), 0);
    assert_eq!(s.inventory_refreshed(&absent, 3, 2), 0);
    assert_eq!(s.inventory_refreshed(&absent, 3, 3), 1);
    assert_eq!(s.inventory_refreshed(&absent, 3, 4), 0);
    assert_eq!(drain(&mut rx), vec![ev("a")]);
    let e = s.take_event("a", "src", 0).expect("event").event;
    assert_eq!(e.op, Op::Delete as i32);
    assert!(e.after.is_none());
    s.event_acked("a");
    let tomb = s.take_state("a").expect("tombstone");
    assert!(tomb.state.is_none());
    s.state_acked("a");
    assert_eq!(s.stats().agents, 0, "gone from every count");
    assert!(s.acked("a").is_none());
    assert_eq!(s.unflushed(), 0);
}

#[test]
fn reappearing_resets_the_missing_count() {
    let (s, _rx) = Store::new();
    s.restore("a", st("a", 2), 1);
    s.finish_restore();
    let absent = |_: &str| false;
    let present = |_: &str| true;
    s.inventory_refreshed(&absent, 2, 1);
    s.inventory_refreshed(&present, 2, 2);
    assert_eq!(s.inventory_refreshed(&absent, 2, 3), 0);
}

#[test]
fn stale_agents_keep_their_state_and_are_counted() {
    let (s, _rx) = Store::new();
    s.restore("a", st("a", 2), 1);
    s.finish_restore();
    s.mark_stale("a");
    let stats = s.stats();
    assert_eq!(stats.stale, 1);
    assert_eq!(stats.by_code.get(&2), Some(&1));
    assert_eq!(stats.pending, 0);
}

#[test]
fn with_confirm_sweeps_a_change_is_emitted_only_after_n_consecutive_sightings() {
    let (s, mut rx) = Store::with_options(StoreOptions {
        confirm_sweeps: 3,
        ..StoreOptions::default()
    });
    s.restore("a", st("a", 2), 1);
    s.finish_restore();
    s.observe("a", st("a", 3), 1);
    s.observe("a", st("a", 3), 2);
    assert!(drain(&mut rx).is_empty(), "seen twice, not yet confirmed");
    s.observe("a", st("a", 3), 3);
    assert_eq!(drain(&mut rx), vec![ev("a")]);
    assert_eq!(s.take_event("a", "src", 0).expect("event").event.seq, 2);
}

#[test]
fn with_confirm_sweeps_a_flap_that_reverts_emits_nothing() {
    let (s, mut rx) = Store::with_options(StoreOptions {
        confirm_sweeps: 2,
        ..StoreOptions::default()
    });
    s.restore("a", st("a", 2), 1);
    s.finish_restore();
    s.observe("a", st("a", 3), 1);
    s.observe("a", st("a", 2), 2);
    s.observe("a", st("a", 3), 3);
    s.observe("a", st("a", 4), 4);
    assert!(drain(&mut rx).is_empty());
    assert!(s.take_event("a", "src", 0).is_none());
}

#[test]
fn with_confirm_sweeps_first_sightings_are_not_delayed() {
    let (s, mut rx) = Store::with_options(StoreOptions {
        confirm_sweeps: 5,
        ..StoreOptions::default()
    });
    s.finish_restore();
    s.observe("a", st("a", 2), 1);
    assert_eq!(drain(&mut rx), vec![ev("a")]);
}

#[test]
fn an_agent_that_returns_after_its_delete_starts_a_new_incarnation_with_new_event_ids() {
    let (s, _rx) = Store::new();
    s.finish_restore();
    s.end_initial_snapshot();
    let mut first = st("a", 2);
    first.observed_at_ms = 1000;
    s.observe("a", first, 1);
    let create = s.take_event("a", "src", 1000).expect("create").event;
    s.event_acked("a");
    s.take_state("a").expect("state");
    s.state_acked("a");
    s.inventory_refreshed(&|_: &str| false, 1, 2);
    let delete = s.take_event("a", "src", 2000).expect("delete").event;
    assert_eq!((delete.seq, delete.incarnation_ms), (2, 1000));
    s.event_acked("a");
    s.take_state("a").expect("tombstone");
    s.state_acked("a");
    let mut again = st("a", 2);
    again.observed_at_ms = 5000;
    s.observe("a", again, 3);
    let back = s.take_event("a", "src", 5000).expect("create again").event;
    assert_eq!(back.op, Op::Create as i32);
    assert_eq!((back.seq, back.incarnation_ms), (3, 5000), "seq continues");
    assert_ne!(back.event_id, create.event_id, "new incarnation, new ids");
}

#[test]
fn agents_are_found_after_the_map_made_room_for_a_restore() {
    // `reserve` rehashes with its own idea of DashMap's hash: a mismatch would
    // lose every existing entry from lookups.
    let (s, _rx) = Store::new();
    for i in 0..100 {
        let id = format!("early-{i}");
        s.restore(&id, st(&id, 2), 1);
    }
    s.reserve(50_000);
    for i in 0..20_000 {
        let id = format!("late-{i}");
        s.restore(&id, st(&id, 3), 2);
    }
    for i in 0..100 {
        let id = format!("early-{i}");
        assert_eq!(
            s.acked(&id).map(|(st, seq)| (st.status_code, seq)),
            Some((2, 1))
        );
    }
    for i in 0..20_000 {
        let id = format!("late-{i}");
        assert_eq!(
            s.acked(&id).map(|(st, seq)| (st.status_code, seq)),
            Some((3, 2))
        );
    }
    assert_eq!(s.len(), 20_100);
}

#[test]
fn an_agent_id_is_one_string_shared_by_the_inventory_and_the_snapshot() {
    let (s, _rx) = Store::new();
    s.restore("restored", st("restored", 2), 1);
    s.finish_restore();
    let key = |id: &str| s.map.get(id).expect("entry").key().clone();
    // A new agent is keyed by the caller's string itself.
    let new: AgentId = AgentId::from("new");
    s.observe_view(&new, &st("new", 2).view(), 1);
    assert!(AgentId::ptr_eq(&key("new"), &new));
    // A fresh inventory takes the snapshot's strings for the agents it already has.
    let mut ids: Vec<AgentId> = ["restored", "new", "unknown"].map(AgentId::from).to_vec();
    s.share_ids(&mut ids);
    assert!(AgentId::ptr_eq(&ids[0], &key("restored")));
    assert!(AgentId::ptr_eq(&ids[1], &new));
    assert_eq!(&*ids[2], "unknown");
}

#[test]
fn a_deleted_agent_is_forgotten_after_forget_deleted_after_refreshes() {
    let (s, _rx) = Store::with_options(StoreOptions {
        forget_deleted_after: 2,
        ..StoreOptions::default()
    });
    s.finish_restore();
    s.end_initial_snapshot();
    s.observe("a", st("a", 2), 1);
    s.observe("b", st("b", 2), 1);
    for id in ["a", "b"] {
        s.take_event(id, "src", 1000).expect("create");
        s.event_acked(id);
        s.take_state(id).expect("state");
        s.state_acked(id);
    }
    let only_b = |id: &str| id == "b";
    // remove_after = 1: the first refreshes without "a" deletes it.
    assert_eq!(s.inventory_refreshed(&only_b, 1, 2), 1);
    s.take_event("a", "src", 2000).expect("delete");
    // Not yet acknowledged: an entry with work in flight is never forgotten.
    s.inventory_refreshed(&only_b, 1, 3);
    s.inventory_refreshed(&only_b, 1, 4);
    assert_eq!(s.len(), 2, "kept while its delete is in flight");
    s.event_acked("a");
    s.take_state("a").expect("tombstone");
    s.state_acked("a");
    assert_eq!(s.len(), 2, "kept right after its tombstone");
    s.inventory_refreshed(&only_b, 1, 5);
    assert_eq!(
        s.len(),
        1,
        "forgotten once missing for remove_after + 2 refreshes"
    );
    assert!(s.acked("b").is_some(), "the present agent is untouched");
    // Back after being forgotten: a new incarnation starting at seq 1.
    let mut again = st("a", 2);
    again.observed_at_ms = 9000;
    s.observe("a", again, 6);
    let back = s.take_event("a", "src", 9000).expect("create again").event;
    assert_eq!(
        (back.op, back.seq, back.incarnation_ms),
        (Op::Create as i32, 1, 9000)
    );
}

/// `observe_batch` gives what `observe_view` gives agent by agent: the same work, the
/// same events, the same index generation, over sweeps with new agents, changes,
/// debounced changes, reverts, an id twice in one batch, and agents over every shard.
#[test]
fn a_batch_is_observed_exactly_as_one_agent_after_another() {
    let opts = StoreOptions {
        confirm_sweeps: 2,
        ..StoreOptions::default()
    };
    let (one, mut one_rx) = Store::with_options(opts);
    let (batch, mut batch_rx) = Store::with_options(opts);
    let ids: Vec<AgentId> = (0..300)
        .map(|i| AgentId::from(format!("agent-{i}")))
        .collect();
    for (i, id) in ids.iter().enumerate().take(200) {
        one.restore(id, st(id, 2), i as u64 + 1);
        batch.restore(id, st(id, 2), i as u64 + 1);
    }
    one.finish_restore();
    batch.finish_restore();
    assert!(
        ids.iter()
            .map(|id| batch.map.determine_map(id.as_str()))
            .collect::<std::collections::HashSet<_>>()
            .len()
            > 1
    );
    // Per sweep, the status code of agent i (agents 200.. are new in sweep 1).
    let code = |sweep: u64, i: usize| -> i32 {
        match (sweep, i % 5) {
            (_, 0) => 2,                  // never changes
            (1 | 2, 1) => 3,              // changes, confirmed in sweep 2
            (1, 2) => 3,                  // flaps once: debounced away
            (s, 3) => 2 + (s % 2) as i32, // alternates
            (s, _) => {
                if s >= 3 {
                    4
                } else {
                    2
                }
            } // changes late
        }
    };
    for sweep in 1..=4u64 {
        let states: Vec<AgentState> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let mut s = st(id, code(sweep, i));
                s.observed_at_ms = sweep as i64 * 1000;
                s.host_id = i as i64;
                s
            })
            .collect();
        // Agent 7 (known) and agent 250 (new in sweep 1) twice in the batch, the second
        // time with another state.
        let mut twice = states[7].clone();
        twice.status_code = 9;
        let mut new_twice = states[250].clone();
        new_twice.status_code = 9;
        let mut views: Vec<(&AgentId, AgentView<'_>)> = ids
            .iter()
            .zip(&states)
            .map(|(id, s)| (id, s.view()))
            .collect();
        views.push((&ids[7], twice.view()));
        views.push((&ids[250], new_twice.view()));
        for (id, v) in &views {
            one.observe_view(id, v, sweep);
        }
        batch.observe_batch(&views, sweep);

        let mut a = drain(&mut one_rx);
        let mut b = drain(&mut batch_rx);
        a.sort_by_key(|w| format!("{w:?}"));
        b.sort_by_key(|w| format!("{w:?}"));
        assert_eq!(a, b, "work after sweep {sweep}");
        assert!(!a.is_empty(), "sweep {sweep} changes something");
        assert_eq!(
            one.generation.load(Ordering::SeqCst),
            batch.generation.load(Ordering::SeqCst),
            "index generation after sweep {sweep}"
        );
        for w in a {
            let Work::Event(id) = w else { continue };
            let x = one.take_event(&id, "src", 0).map(|o| o.event);
            let y = batch.take_event(&id, "src", 0).map(|o| o.event);
            assert_eq!(x, y, "event of {id} in sweep {sweep}");
            one.event_acked(&id);
            batch.event_acked(&id);
        }
        assert_eq!(one.len(), batch.len());
        for s in [&one, &batch] {
            assert_eq!(s.unflushed(), s.unflushed_by_walk(), "sweep {sweep}");
        }
        assert_eq!(one.unflushed(), batch.unflushed(), "sweep {sweep}");
    }
    // Nothing left that differs: each agent's acknowledged state and seq.
    for id in &ids {
        assert_eq!(one.acked(id), batch.acked(id), "{id}");
    }
}

/// The sink reuses one message for every event: what it gets must equal a fresh
/// message each time, whatever the previous event left in it (more changed fields, a
/// `before` where this one has none, another agent's longer strings).
#[test]
fn an_event_taken_into_a_reused_message_equals_a_fresh_one() {
    let (fresh, _rx1) = Store::new();
    let (reused, _rx2) = Store::new();
    let long = |id: &str, code: i32| {
        let mut s = st(id, code);
        s.version = "2.1.5-a-rather-long-version-string".into();
        s.ip = "fe80::1".into();
        s
    };
    for s in [&fresh, &reused] {
        s.restore("a", long("a", 2), 1);
        s.restore("b", st("b", 2), 4);
        s.finish_restore();
        s.end_initial_snapshot();
    }
    let mut msg = AgentEvent::default();
    // (agent, new state or None for a delete) in order: update of many fields, update
    // of fewer, a create, a delete, a create again.
    let steps: Vec<(&str, Option<AgentState>)> = vec![
        ("a", Some(st("a", 3))),
        ("b", Some(st("b", 3))),
        ("c", Some(long("c", 2))),
        ("a", None),
        ("d", Some(st("d", 2))),
    ];
    for (i, (id, state)) in steps.into_iter().enumerate() {
        for s in [&fresh, &reused] {
            match &state {
                Some(st) => s.observe(id, st.clone(), i as u64),
                None => {
                    s.inventory_refreshed(&|k| k != id, 1, i as u64);
                }
            }
        }
        let want = fresh
            .take_event(id, "src", 1000 + i as i64)
            .expect("an event")
            .event;
        assert!(reused.take_event_into(id, "src", 1000 + i as i64, &mut msg));
        assert_eq!(msg, want, "step {i} ({id})");
        fresh.event_acked(id);
        reused.event_acked(id);
    }
}

/// `unflushed` is a counter kept as entries change; it must equal a walk over every
/// entry after each step of every path: first sightings, changes, reverts, failures
/// and retries of events and state writes, deletes, an agent deleted before it was
/// announced, forgetting, restore records and tombstones.
#[test]
fn the_unflushed_counter_equals_a_walk_over_every_entry_on_every_path() {
    let (s, _rx) = Store::with_options(StoreOptions {
        forget_deleted_after: 1,
        ..StoreOptions::default()
    });
    let check = |step: &str| assert_eq!(s.unflushed(), s.unflushed_by_walk(), "after {step}");
    s.restore("r1", st("r1", 2), 3);
    s.restore("r2", st("r2", 2), 3);
    s.restore("r1", st("r1", 3), 4); // a later record of the same agent
    s.restore_tombstone("r2");
    check("restore");
    s.finish_restore();
    s.end_initial_snapshot();
    s.observe("a", st("a", 2), 1);
    s.observe("b", st("b", 2), 1);
    s.observe("r1", st("r1", 2), 1);
    check("first sightings and a change");
    assert_eq!(s.unflushed(), 3);
    s.observe("r1", st("r1", 3), 1);
    check("a change reverted before delivery");
    assert_eq!(s.unflushed(), 2);
    // a: event fails, is retried, state write fails, is retried, settles.
    s.take_event("a", "src", 1).expect("create");
    check("take event");
    assert!(s.event_failed("a"));
    check("event failed");
    s.take_event("a", "src", 2).expect("retry");
    s.event_acked("a");
    check("event acked");
    s.take_state("a").expect("state");
    assert!(s.state_failed("a"));
    check("state failed");
    s.take_state("a").expect("state again");
    s.state_acked("a");
    check("state acked");
    // b: its state taken straight from the acknowledgement.
    s.take_event("b", "src", 1).expect("create");
    assert!(s.event_acked_take_state("b").is_some());
    s.state_acked("b");
    check("b settled");
    assert_eq!(s.unflushed(), 0);
    // c: first seen, then deleted before it was announced: it leaves.
    s.observe("c", st("c", 2), 2);
    check("c seen");
    s.inventory_refreshed(&|id| id != "c", 1, 2);
    check("c deleted before announced");
    assert!(s.take_event("c", "src", 3).is_none());
    check("c gone");
    // a: deleted, tombstone written, forgotten.
    s.inventory_refreshed(&|id| id != "a", 1, 3);
    check("a deleted");
    s.take_event("a", "src", 4).expect("delete");
    s.event_acked("a");
    s.take_state("a").expect("tombstone");
    s.state_acked("a");
    check("a tombstoned");
    s.inventory_refreshed(&|id| id != "a", 1, 4);
    s.inventory_refreshed(&|id| id != "a", 1, 5);
    check("a forgotten");
    assert!(s.acked("a").is_none());
    // A batch with new and changed agents.
    let ids: Vec<AgentId> = ["b", "d", "e"].into_iter().map(AgentId::from).collect();
    let states: Vec<AgentState> = ids.iter().map(|id| st(id, 3)).collect();
    let views: Vec<(&AgentId, AgentView<'_>)> = ids
        .iter()
        .zip(&states)
        .map(|(id, s)| (id, s.view()))
        .collect();
    s.observe_batch(&views, 6);
    check("a batch");
    assert_eq!(s.unflushed(), 3);
}

#[test]
fn status_codes_past_the_short_list_are_counted_too() {
    let mut counts = super::CodeCounts::default();
    let mut expected = std::collections::HashMap::new();
    // 40 distinct codes (more than the short list holds), each seen a different number
    // of times, interleaved.
    for round in 0..40 {
        for code in round..40 {
            counts.add(code - 3);
            *expected.entry(code - 3).or_insert(0i64) += 1;
        }
    }
    assert_eq!(counts.into_map(), expected);
}
