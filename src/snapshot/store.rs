//! The snapshot: one entry per agent in a `DashMap`, holding what Kafka consumers have
//! been told (`acked`) and at most one change not yet acknowledged (`pending`).
//!
//! Writers: the poller (observations, inventory refreshes) and the Kafka sink
//! (acknowledgements). Each agent's entry moves through
//! `pending → in_flight → acked → state written` and the store decides, per agent,
//! what the sink sends next — so per-agent order holds with many agents in flight and
//! memory stays O(agents) whatever the Kafka outage length: a newer observation
//! replaces an older pending one ("latest wins").
//!
//! HTTP handlers only read.

use crate::sources::inventory::AgentId;
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Instant,
};

use dashmap::{DashMap, SharedValue};
use tokio::sync::mpsc;

use super::{
    compact::{Interner, Stored},
    diff,
    entry::{Change, Entry},
    view::{AgentView, View},
};
use crate::proto::v1::{AgentEvent, AgentState, Op};

/// Work for the sink: look at this agent's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Produce the agent's pending change to the events topic.
    Event(AgentId),
    /// Write the agent's acknowledged state (or a tombstone) to the state topic.
    State(AgentId),
}

impl Work {
    /// The agent this work is for.
    pub fn agent_id(&self) -> &str {
        match self {
            Work::Event(id) | Work::State(id) => id,
        }
    }
}

/// What `Store::take_event_locked` did.
enum Taken {
    /// An event was written into the message.
    Event,
    /// Nothing to send now.
    Nothing,
    /// Nothing to send: the agent was deleted before it was announced, and leaves the
    /// map if it has no history.
    Unannounced,
}

/// An event ready to encode, with what the sink needs to report on it.
#[derive(Debug, Clone)]
pub struct OutEvent {
    pub event: AgentEvent,
}

/// A state-topic write: `None` state is a tombstone.
#[derive(Debug, Clone)]
pub struct OutState {
    pub state: Option<AgentState>,
    pub seq: u64,
    pub incarnation_ms: i64,
}

/// Counts for the gauges, from one pass over the store.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub agents: usize,
    /// Agents per raw status code (names are applied by the caller: counting by an
    /// integer avoids a string clone per agent per sweep).
    pub by_code: std::collections::HashMap<i32, i64>,
    pub stale: usize,
    pub pending: usize,
    pub oldest_pending: Option<std::time::Duration>,
    pub unflushed: usize,
}

/// How the store decides what is a change.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// An update is emitted only after the changed state was seen in this many
    /// consecutive sweeps (1 = at once). First sightings and deletes are never delayed.
    pub confirm_sweeps: u32,
    pub diff: diff::Diff,
    /// Further successful inventory refreshes a deleted agent is remembered for (its
    /// seq and incarnation), counted from its delete; then its entry is dropped.
    pub forget_deleted_after: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            confirm_sweeps: 1,
            diff: diff::Diff::default(),
            forget_deleted_after: crate::poller::DEFAULT_FORGET_DELETED_AFTER,
        }
    }
}

pub struct Store {
    /// aHash rather than SipHash: one lookup per agent per sweep makes the hash a
    /// measurable share of a sweep; aHash is still randomly keyed per process.
    pub(super) map: DashMap<AgentId, Entry, ahash::RandomState>,
    /// Bumped whenever an agent appears or the host id / cloud / IP of its latest state
    /// changes: the query API's lookup index is rebuilt when it moved (`query.rs`).
    /// Removals do not bump it; lookups verify what the index points at.
    pub(super) generation: AtomicU64,
    /// True until the first sweep of a process that started with an empty state
    /// topic has finished: first sightings are `OP_SNAPSHOT`, later ones `OP_CREATE`.
    initial_snapshot: AtomicBool,
    /// Consecutive sweeps a changed state must be seen in before it is emitted.
    confirm_sweeps: u32,
    diff: diff::Diff,
    forget_deleted_after: u32,
    /// Shared strings of the stored states (see `compact.rs`).
    interner: Interner,
    /// Entries not settled (`Store::unflushed`), kept as they change: every change of
    /// an entry that can settle or unsettle it goes through `Store::counted`, and
    /// every insert and remove through `Store::inserted` / `Store::removed`.
    unsettled: AtomicUsize,
    work: mpsc::UnboundedSender<Work>,
}

impl Store {
    /// A store and the receiving end of its work queue (for the sink). The queue holds
    /// at most two items per agent (one event, one state write), so it is bounded by
    /// the number of agents even though the channel type is unbounded.
    pub fn new() -> (Arc<Store>, mpsc::UnboundedReceiver<Work>) {
        Store::with_options(StoreOptions::default())
    }

    pub fn with_options(opts: StoreOptions) -> (Arc<Store>, mpsc::UnboundedReceiver<Work>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let store = Store {
            map: DashMap::with_hasher(ahash::RandomState::new()),
            generation: AtomicU64::new(0),
            initial_snapshot: AtomicBool::new(true),
            confirm_sweeps: opts.confirm_sweeps.max(1),
            diff: opts.diff,
            forget_deleted_after: opts.forget_deleted_after,
            interner: Interner::default(),
            unsettled: AtomicUsize::new(0),
            work: tx,
        };
        (Arc::new(store), rx)
    }

    /// Entries, including deleted agents kept only for their seq; [`Store::stats`]
    /// counts live agents.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Makes room for `additional` more agents at once, before a restore: growing a
    /// million-entry map step by step rehashes and copies every entry each time it
    /// doubles, which was half of a 1M restore (page faults and `memmove`).
    pub fn reserve(&self, additional: usize) {
        let shards = self.map.shards();
        let per_shard = additional.div_ceil(shards.len());
        // Hashes do not spread exactly evenly over the shards.
        let per_shard = per_shard + per_shard / 8;
        for shard in shards {
            // The same hash DashMap computes for a lookup (`hash_usize` is its own
            // hasher over the key); `store_tests` checks lookups after a reserve.
            shard
                .write()
                .reserve(per_shard, |(k, _)| self.map.hash_usize(k) as u64);
        }
    }

    /// Loads one agent from the state topic (before the first sweep).
    pub fn restore(&self, agent_id: &str, state: AgentState, seq: u64) {
        self.restore_record(agent_id, state, seq, 0);
    }

    /// Loads one agent from a state-topic record, with its incarnation.
    pub fn restore_record(&self, agent_id: &str, state: AgentState, seq: u64, incarnation_ms: i64) {
        let entry = Entry::restored(
            Stored::from_view(&state.view(), &self.interner),
            seq,
            incarnation_ms,
        );
        self.inserted(&entry);
        let old = self.map.insert(AgentId::from(agent_id), entry);
        self.removed(old.as_ref());
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Removes an agent from the restored state (a tombstone read from the state topic).
    pub fn restore_tombstone(&self, agent_id: &str) {
        let old = self.map.remove(agent_id);
        self.removed(old.as_ref().map(|(_, e)| e));
    }

    /// Replaces each id by the snapshot's key for the same agent where there is one, so
    /// that an agent id is one string however many hold it: an inventory is built from
    /// fresh strings at every refresh, and restored agents were keyed before any
    /// inventory came. One lookup per id.
    pub fn share_ids(&self, ids: &mut [AgentId]) {
        for id in ids {
            if let Some(e) = self.map.get(&**id) {
                *id = e.key().clone();
            }
        }
    }

    /// Called once restore is done: with nothing restored, the first sweep is an
    /// initial snapshot.
    pub fn finish_restore(&self) {
        self.initial_snapshot
            .store(self.map.is_empty(), Ordering::SeqCst);
    }

    /// Called after each sweep.
    pub fn end_initial_snapshot(&self) {
        self.initial_snapshot.store(false, Ordering::SeqCst);
    }

    /// Records a successful GSE observation of one agent.
    pub fn observe(&self, agent_id: &str, observed: AgentState, sweep: u64) {
        self.observe_view(&AgentId::from(agent_id), &observed.view(), sweep);
    }

    /// Records a successful GSE observation of one agent, given as borrowed fields:
    /// an unchanged agent costs a lookup and a comparison, no allocation. A new agent
    /// is keyed by `agent_id` itself (the inventory's string, shared, not copied).
    pub fn observe_view(&self, agent_id: &AgentId, observed: &AgentView<'_>, sweep: u64) {
        let initial = self.initial_snapshot.load(Ordering::Relaxed);
        let queue = match self.map.get_mut(&**agent_id) {
            Some(mut e) => {
                let (key, entry) = e.pair_mut();
                self.update(key, entry, observed, sweep, initial)
            }
            None => {
                let entry = self.first_seen(observed, sweep, initial);
                self.inserted(&entry);
                let old = self.map.insert(agent_id.clone(), entry);
                self.removed(old.as_ref());
                // After the insert: a query index rebuilt in between must not record the
                // new generation without the new agent.
                self.generation.fetch_add(1, Ordering::Release);
                Some(agent_id.clone())
            }
        };
        if let Some(key) = queue {
            self.push(Work::Event(key));
        }
    }

    /// [`Store::observe_view`] for a whole GSE batch, with the same outcome agent by
    /// agent. At a million agents the snapshot is far larger than the CPU caches and
    /// one lookup after another waits on three cache misses each (control bytes, slot,
    /// key), serialised by the shard lock's atomic operation between them: ~450 ns
    /// per agent. Here each shard is locked once for its part of the batch, its slots
    /// are first only read in a tight loop, whose misses the CPU overlaps, and then
    /// diffed from cache.
    pub fn observe_batch(&self, batch: &[(&AgentId, AgentView<'_>)], sweep: u64) {
        let initial = self.initial_snapshot.load(Ordering::Relaxed);
        let shards = self.map.shards();
        // In batch order within a shard: an id twice in one batch is applied in order,
        // as one by one.
        let order = self.by_shard(
            batch
                .iter()
                .enumerate()
                .map(|(i, (id, _))| (id.as_str(), i)),
        );
        let mut queue: Vec<AgentId> = Vec::new();
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            let mut shard = shards[group[0].0].write();
            touch(
                |hash, id| {
                    shard
                        .get(hash, |(k, _)| k.as_str() == id)
                        .map(|(_, e)| e.get().observed_ms)
                },
                group
                    .iter()
                    .map(|&(_, hash, i)| (hash, batch[i].0.as_str())),
            );
            for &(_, hash, i) in group {
                let (id, observed) = &batch[i];
                let key = match shard.get_mut(hash, |(k, _)| k.as_str() == id.as_str()) {
                    Some((key, e)) => self.update(key, e.get_mut(), observed, sweep, initial),
                    None => {
                        let first = self.first_seen(observed, sweep, initial);
                        self.inserted(&first);
                        shard.insert(hash, ((*id).clone(), SharedValue::new(first)), |(k, _)| {
                            self.map.hash_usize(k) as u64
                        });
                        // Under the shard's lock, which an index rebuild's walk waits for.
                        self.generation.fetch_add(1, Ordering::Release);
                        Some((*id).clone())
                    }
                };
                queue.extend(key);
            }
            // Unlocked before the sink, woken by the work, looks the agents up.
            drop(shard);
            for key in queue.drain(..) {
                self.push(Work::Event(key));
            }
        }
    }

    /// Reads the slots of `ids` into the CPU caches, each shard locked once, so that
    /// the lookups that follow (the sink's, one agent at a time) do not each wait on
    /// memory: see [`Store::observe_batch`]. Changes nothing.
    pub fn warm<'a>(&self, ids: impl Iterator<Item = &'a str>) {
        let shards = self.map.shards();
        let order = self.by_shard(ids.map(|id| (id, id)));
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            let shard = shards[group[0].0].read();
            touch(
                |hash, id| {
                    shard
                        .get(hash, |(k, _)| k.as_str() == id)
                        .map(|(_, e)| e.get().observed_ms)
                },
                group.iter().map(|&(_, hash, id)| (hash, id)),
            );
        }
    }

    /// (shard, hash, item) for each (agent id, item), grouped by the agent's shard and,
    /// within one, in the order given (a stable sort).
    fn by_shard<'a, T>(&self, items: impl Iterator<Item = (&'a str, T)>) -> Vec<(usize, u64, T)> {
        let mut order: Vec<(usize, u64, T)> = items
            .map(|(id, item)| {
                let hash = self.map.hash_usize(&id);
                (self.map.determine_shard(hash), hash as u64, item)
            })
            .collect();
        order.sort_by_key(|&(shard, _, _)| shard);
        order
    }

    /// A new agent's entry (the caller inserts it, then bumps the generation and
    /// queues its event).
    fn first_seen(&self, observed: &AgentView<'_>, sweep: u64, initial: bool) -> Entry {
        let first = Change {
            after: Some(Stored::from_view(observed, &self.interner)),
            initial,
            incarnation_ms: observed.observed_at_ms,
            sweep,
            since: Instant::now(),
        };
        Entry::first_seen(first, observed.observed_at_ms)
    }

    /// Applies an observation to a known agent's entry. Returns the key to queue an
    /// event for, cloned only then: an unchanged agent costs no reference-count
    /// traffic on its id.
    fn update(
        &self,
        key: &AgentId,
        e: &mut Entry,
        observed: &AgentView<'_>,
        sweep: u64,
        initial: bool,
    ) -> Option<AgentId> {
        let was = e.is_settled();
        let mut queue = None;
        e.stale = false;
        e.missing = 0;
        e.observed_ms = observed.observed_at_ms;
        let (changed, debounce) = match e.base() {
            Some(base) => (
                self.diff.differs_view(&base.view(key), observed),
                self.confirm_sweeps > 1,
            ),
            None => (true, false),
        };
        // Does the latest state's host id, cloud or IP move (the query index must then
        // be rebuilt)? Decided before the entry changes. Afterwards the latest state is
        // `observed` if it changed, else the base (a pending change is dropped); an
        // unchanged agent with nothing pending keeps its latest state, the base.
        let moved = (changed || e.pending().is_some()) && {
            let after = if changed {
                Some(*observed)
            } else {
                e.base().map(|b| b.view(key))
            };
            !same_identity(e.latest().map(|l| l.view(key)), after)
        };
        let held = changed && debounce && !self.confirmed(e, observed);
        if held {
            // Not yet seen often enough; what is pending (if anything) stays.
        } else if changed {
            e.drop_candidate();
            // Keep the time of the oldest undelivered change for the age metric.
            let since = e.pending().map_or_else(Instant::now, |p| p.since);
            let incarnation_ms = e
                .pending()
                .map_or(observed.observed_at_ms, |p| p.incarnation_ms);
            let initial = initial && e.acked.is_none();
            e.set_pending(Change {
                after: Some(Stored::from_view(observed, &self.interner)),
                initial,
                incarnation_ms,
                sweep,
                since,
            });
            if !e.event_queued {
                e.event_queued = true;
                queue = Some(key.clone());
            }
        } else {
            // Back to what is (being) delivered: nothing left to send.
            e.drop_pending();
            e.drop_candidate();
        }
        if moved && !held {
            self.generation.fetch_add(1, Ordering::Release);
        }
        self.counted(was, e);
        queue
    }

    /// Debounce: true once `observed` has been seen in `confirm_sweeps` consecutive
    /// sweeps. A different state in between restarts the count.
    fn confirmed(&self, e: &mut Entry, observed: &AgentView<'_>) -> bool {
        let seen = match e.candidate_mut() {
            Some((c, n)) if !self.diff.differs_view(&c.view(observed.agent_id), observed) => {
                *n += 1;
                *n
            }
            _ => {
                e.start_candidate(Stored::from_view(observed, &self.interner));
                1
            }
        };
        seen >= self.confirm_sweeps
    }

    /// The agent's GSE batch failed: keep its state, count it stale, emit nothing.
    pub fn mark_stale(&self, agent_id: &str) {
        if let Some(mut e) = self.map.get_mut(agent_id) {
            e.stale = true;
        }
    }

    /// After a *successful, complete* inventory refresh: agents missing from it
    /// `remove_after` times in a row are scheduled for deletion. Returns how many were.
    pub fn inventory_refreshed(
        &self,
        present: &dyn Fn(&str) -> bool,
        remove_after: u32,
        sweep: u64,
    ) -> usize {
        let mut deleted = Vec::new();
        let mut forget = Vec::new();
        // `missing` saturates at u16::MAX; config validation keeps the sum below it.
        let forget_at = remove_after.saturating_add(self.forget_deleted_after);
        for mut e in self.map.iter_mut() {
            if present(e.key()) {
                e.missing = 0;
                continue;
            }
            e.missing = e.missing.saturating_add(1);
            if u32::from(e.missing) >= forget_at && e.is_forgettable() {
                forget.push(e.key().clone());
                continue;
            }
            let already_deleting = matches!(e.pending(), Some(c) if c.after.is_none());
            if u32::from(e.missing) >= remove_after && e.latest().is_some() && !already_deleting {
                let was = e.is_settled();
                e.set_pending(Change {
                    after: None,
                    initial: false,
                    incarnation_ms: 0,
                    sweep,
                    since: Instant::now(),
                });
                self.counted(was, &e);
                if !e.event_queued {
                    e.event_queued = true;
                    deleted.push(e.key().clone());
                }
            }
        }
        let n = deleted.len();
        for k in deleted {
            self.push(Work::Event(k));
        }
        // Removed after the walk (a shard is locked while it is walked); the check is
        // repeated under the entry's lock.
        for k in forget {
            let old = self.map.remove_if(&k, |_, e| e.is_forgettable());
            self.removed(old.as_ref().map(|(_, e)| e));
        }
        n
    }

    /// Takes the agent's pending change for producing. `None` when there is nothing to
    /// send now (already in flight — the ack re-queues it — or nothing pending).
    pub fn take_event(&self, agent_id: &str, source: &str, now_ms: i64) -> Option<OutEvent> {
        let mut event = AgentEvent::default();
        self.take_event_into(agent_id, source, now_ms, &mut event)
            .then_some(OutEvent { event })
    }

    /// [`Store::take_event`] written over `out`, reusing its strings' buffers (the sink
    /// keeps one message for every event it produces). False: nothing to send, and
    /// `out` holds nothing to use.
    pub fn take_event_into(
        &self,
        agent_id: &str,
        source: &str,
        now_ms: i64,
        out: &mut AgentEvent,
    ) -> bool {
        let Some(mut e) = self.map.get_mut(agent_id) else {
            return false;
        };
        let was = e.is_settled();
        let taken = self.take_event_locked(agent_id, &mut e, source, now_ms, out);
        self.counted(was, &e);
        drop(e);
        match taken {
            Taken::Event => true,
            Taken::Nothing => false,
            Taken::Unannounced => {
                // An agent never announced at all leaves; one with history keeps its
                // seq (see `take_event_locked`).
                let old = self
                    .map
                    .remove_if(agent_id, |_, e| e.seq == 0 && e.is_settled());
                self.removed(old.as_ref().map(|(_, e)| e));
                false
            }
        }
    }

    fn take_event_locked(
        &self,
        agent_id: &str,
        e: &mut Entry,
        source: &str,
        now_ms: i64,
        out: &mut AgentEvent,
    ) -> Taken {
        e.event_queued = false;
        if e.in_flight().is_some() {
            return Taken::Nothing;
        }
        let Some(change) = e.pending() else {
            return Taken::Nothing;
        };
        let op = match (&e.acked, &change.after) {
            (None, None) => {
                // Deleted before it was (re-)announced: nothing to tell anyone. An agent
                // never announced at all leaves; one with history keeps its seq.
                e.drop_pending();
                return Taken::Unannounced;
            }
            (None, Some(_)) if change.initial => Op::Snapshot,
            (None, Some(_)) => Op::Create,
            (Some(_), None) => Op::Delete,
            (Some(before), Some(after)) => {
                self.diff.changed_fields_into(
                    &before.view(agent_id),
                    &after.view(agent_id),
                    &mut out.changed_fields,
                );
                if out.changed_fields.is_empty() {
                    e.drop_pending();
                    return Taken::Nothing;
                }
                Op::Update
            }
        };
        if op != Op::Update {
            out.changed_fields.clear();
        }
        // A first event starts a new incarnation (also for an agent that was deleted and
        // came back), so its event ids never repeat earlier ones.
        let (seq, incarnation_ms) = if op == Op::Create || op == Op::Snapshot {
            let inc = if change.incarnation_ms > 0 {
                change.incarnation_ms
            } else {
                now_ms
            };
            // A deleted agent this process still remembers continues its seq.
            (e.seq + 1, inc)
        } else {
            (e.seq + 1, e.incarnation_ms)
        };
        match e
            .acked
            .as_ref()
            .filter(|_| op == Op::Update || op == Op::Delete)
        {
            Some(s) => s
                .view(agent_id)
                .write_to(out.before.get_or_insert_with(AgentState::default)),
            None => out.before = None,
        }
        let Some(change) = e.send_pending() else {
            return Taken::Nothing;
        };
        change.incarnation_ms = incarnation_ms;
        match &change.after {
            Some(s) => s
                .view(agent_id)
                .write_to(out.after.get_or_insert_with(AgentState::default)),
            None => out.after = None,
        }
        out.op = op as i32;
        out.ts_ms = now_ms;
        out.seq = seq;
        out.sweep = change.sweep;
        super::event_id_into(agent_id, incarnation_ms, seq, &mut out.event_id);
        out.source.clear();
        out.source.push_str(source);
        out.incarnation_ms = incarnation_ms;
        // Every field is set above: this stops compiling when the message gains one.
        let AgentEvent {
            op: _,
            before: _,
            after: _,
            ts_ms: _,
            seq: _,
            sweep: _,
            event_id: _,
            source: _,
            changed_fields: _,
            incarnation_ms: _,
        } = out;
        Taken::Event
    }

    /// The events topic acknowledged the in-flight event; the state write it makes due
    /// is queued (`Work::State`).
    pub fn event_acked(&self, agent_id: &str) {
        self.ack_event(agent_id, false);
    }

    /// [`Store::event_acked`], and the state record it makes due, taken at once (as
    /// [`Store::take_state`] would) for the caller to produce: one lookup and one trip
    /// through the work queue less per change. `None` when no state write can start
    /// now (one is in flight or queued; it is handled as usual).
    pub fn event_acked_take_state(&self, agent_id: &str) -> Option<OutState> {
        self.ack_event(agent_id, true)
    }

    fn ack_event(&self, agent_id: &str, take_state: bool) -> Option<OutState> {
        let mut work = Vec::new();
        let mut state = None;
        if let Some(mut e) = self.map.get_mut(agent_id) {
            let was = e.is_settled();
            if let Some(c) = e.take_in_flight() {
                if e.acked.is_none() && c.after.is_some() {
                    e.incarnation_ms = c.incarnation_ms;
                }
                e.seq += 1;
                e.acked = c.after;
                e.state_dirty = true;
                if !e.state_queued && !e.state_in_flight {
                    if take_state {
                        state = Some(Self::start_state_write(agent_id, &mut e));
                    } else {
                        e.state_queued = true;
                        work.push(Work::State(e.key().clone()));
                    }
                }
            }
            if e.pending().is_some() && !e.event_queued {
                e.event_queued = true;
                work.push(Work::Event(e.key().clone()));
            }
            self.counted(was, &e);
        }
        for w in work {
            self.push(w);
        }
        state
    }

    /// The in-flight event failed: it becomes pending again unless a newer change
    /// replaced it. Returns true when the caller must schedule the retry
    /// (`Work::Event`) after a back-off; false when a newer observation already did.
    pub fn event_failed(&self, agent_id: &str) -> bool {
        let Some(mut e) = self.map.get_mut(agent_id) else {
            return false;
        };
        let was = e.is_settled();
        e.retry_in_flight();
        self.counted(was, &e);
        if e.event_queued {
            // A newer observation already queued it.
            return false;
        }
        e.event_queued = true;
        true
    }

    /// Takes the agent's acknowledged state for the state topic.
    pub fn take_state(&self, agent_id: &str) -> Option<OutState> {
        let mut e = self.map.get_mut(agent_id)?;
        e.state_queued = false;
        if e.state_in_flight || !e.state_dirty {
            return None;
        }
        // Dirty to in flight: unsettled before and after.
        Some(Self::start_state_write(agent_id, &mut e))
    }

    /// The acknowledged state becomes the state write in flight.
    fn start_state_write(agent_id: &str, e: &mut Entry) -> OutState {
        e.state_in_flight = true;
        e.state_dirty = false;
        OutState {
            state: e.acked.as_ref().map(|s| s.to_state(agent_id)),
            seq: e.seq,
            incarnation_ms: e.incarnation_ms,
        }
    }

    pub fn state_acked(&self, agent_id: &str) {
        let mut requeue = None;
        if let Some(mut e) = self.map.get_mut(agent_id) {
            let was = e.is_settled();
            e.state_in_flight = false;
            self.counted(was, &e);
            if e.state_dirty && !e.state_queued {
                e.state_queued = true;
                requeue = Some(e.key().clone());
            }
        }
        if let Some(k) = requeue {
            self.push(Work::State(k));
        } else {
            // A deleted agent whose tombstone is written stays as a bare entry (no state,
            // just its seq) so that if it comes back soon its seq continues. Each costs
            // a table slot (88 bytes) and the key's heap block, so it is dropped
            // after `poll.forget_deleted_after` more refreshes (`inventory_refreshed`):
            // without that, memory would grow with every agent ever deleted.
        }
    }

    /// The state write failed: mark it dirty again. Returns true when the caller must
    /// schedule a retry (`Work::State`).
    pub fn state_failed(&self, agent_id: &str) -> bool {
        let Some(mut e) = self.map.get_mut(agent_id) else {
            return false;
        };
        let was = e.is_settled();
        e.state_in_flight = false;
        e.state_dirty = true;
        self.counted(was, &e);
        if e.state_queued {
            return false;
        }
        e.state_queued = true;
        true
    }

    /// The acknowledged state and seq of one agent.
    pub fn acked(&self, agent_id: &str) -> Option<(AgentState, u64)> {
        let e = self.map.get(agent_id)?;
        e.acked.as_ref().map(|s| (s.to_state(agent_id), e.seq))
    }

    /// Agents whose change or state write is not yet acknowledged (a counter: O(1)).
    pub fn unflushed(&self) -> usize {
        self.unsettled.load(Ordering::Acquire)
    }

    /// [`Store::unflushed`] counted by a walk over every entry (the tests check the
    /// counter against it).
    #[cfg(test)]
    pub(crate) fn unflushed_by_walk(&self) -> usize {
        self.map.iter().filter(|e| !e.is_settled()).count()
    }

    /// Keeps `unsettled` in step with a change of one entry (`was`: settled before).
    fn counted(&self, was: bool, e: &Entry) {
        match (was, e.is_settled()) {
            (true, false) => {
                self.unsettled.fetch_add(1, Ordering::AcqRel);
            }
            (false, true) => {
                self.unsettled.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
    }

    /// An entry about to be inserted.
    fn inserted(&self, e: &Entry) {
        if !e.is_settled() {
            self.unsettled.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// An entry removed from the map (or replaced by an insert), if any.
    fn removed(&self, e: Option<&Entry>) {
        if e.is_some_and(|e| !e.is_settled()) {
            self.unsettled.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// One pass over every entry for the gauges.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        let mut codes = CodeCounts::default();
        let now = Instant::now();
        for e in self.map.iter() {
            let Some(latest) = e.latest() else { continue };
            s.agents += 1;
            codes.add(latest.status_code());
            if e.stale {
                s.stale += 1;
            }
            if !e.is_settled() {
                s.unflushed += 1;
            }
            let oldest = match (e.pending(), e.in_flight()) {
                (Some(p), Some(f)) => Some(p.since.min(f.since)),
                (Some(p), None) => Some(p.since),
                (None, Some(f)) => Some(f.since),
                (None, None) => None,
            };
            if let Some(since) = oldest {
                s.pending += 1;
                let age = now.duration_since(since);
                s.oldest_pending = Some(s.oldest_pending.map_or(age, |o| o.max(age)));
            }
        }
        s.by_code = codes.into_map();
        // Once per sweep: forget shared strings no agent uses any more (few, cheap).
        self.interner.prune();
        s
    }

    fn push(&self, w: Work) {
        // The receiver lives as long as the sink; after shutdown there is nobody left to
        // deliver to, and the state topic still holds the old state, so the change is
        // re-emitted on the next start.
        let _ = self.work.send(w);
    }

    /// Re-queues work after a back-off (used by the sink's retry timer).
    pub fn requeue(&self, w: Work) {
        self.push(w);
    }
}

/// Agents per status code for [`Store::stats`], counted once per agent per sweep. GSE
/// has a handful of codes: they are counted in a short list searched in order (a
/// hash map's SipHash per agent was a third of the walk at a million agents); codes past
/// the first few, which only bad data would bring, go to the map.
#[derive(Default)]
struct CodeCounts {
    few: Vec<(i32, i64)>,
    rest: std::collections::HashMap<i32, i64>,
}

impl CodeCounts {
    const FEW: usize = 16;

    fn add(&mut self, code: i32) {
        if let Some((_, n)) = self.few.iter_mut().find(|(c, _)| *c == code) {
            *n += 1;
        } else if self.few.len() < Self::FEW {
            self.few.push((code, 1));
        } else {
            *self.rest.entry(code).or_default() += 1;
        }
    }

    fn into_map(self) -> std::collections::HashMap<i32, i64> {
        let mut map = self.rest;
        map.extend(self.few);
        map
    }
}

/// Looks up each agent (by hash and id) in one locked shard and reads a field of its
/// entry. The loop body is short and its iterations independent, so the CPU has their
/// cache misses (control bytes, slot, key) in flight together rather than one after
/// another.
fn touch<'a>(
    lookup: impl Fn(u64, &str) -> Option<i64>,
    agents: impl Iterator<Item = (u64, &'a str)>,
) {
    let mut touched = 0i64;
    for (hash, id) in agents {
        if let Some(v) = lookup(hash, id) {
            touched = touched.wrapping_add(v);
        }
    }
    std::hint::black_box(touched);
}

/// Same host id, cloud area and IP: what the query index keys an agent by. A missing
/// state (an agent not yet known, or being deleted) matches nothing.
fn same_identity(a: Option<AgentView<'_>>, b: Option<AgentView<'_>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.host_id == b.host_id && a.cloud_id == b.cloud_id && a.ip == b.ip,
        _ => false,
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
