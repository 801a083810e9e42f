//! [`Entry`]: one agent's slot in the snapshot map, and [`Change`], a change on its way
//! to Kafka.

use std::time::Instant;

use super::compact::Stored;

/// A change waiting to be (or being) produced.
#[derive(Debug, Clone)]
pub(super) struct Change {
    /// The new state; `None` means the agent is being deleted.
    pub(super) after: Option<Stored>,
    /// Seen during the initial snapshot (empty state topic at start).
    pub(super) initial: bool,
    /// For a first event (create/snapshot): the new incarnation, fixed when the change
    /// was first observed so a retried delivery keeps its event id.
    pub(super) incarnation_ms: i64,
    pub(super) sweep: u64,
    pub(super) since: Instant,
}

#[derive(Debug, Default)]
pub(super) struct Entry {
    /// What the events topic last said about this agent; `None` before its first event
    /// (or after its delete event).
    pub(super) acked: Option<Stored>,
    /// `seq` of the last acknowledged event.
    pub(super) seq: u64,
    /// Start of the agent's current incarnation (see the .proto).
    pub(super) incarnation_ms: i64,
    /// Changes not yet acknowledged, and one being confirmed; see the accessors.
    motion: Option<Box<InMotion>>,
    /// The sink holds a `Work::Event` for this agent (queued or waiting to retry).
    pub(super) event_queued: bool,
    /// `acked` is newer than the state topic's record.
    pub(super) state_dirty: bool,
    pub(super) state_in_flight: bool,
    pub(super) state_queued: bool,
    /// The last GSE query for this agent failed; `acked`/`pending` are older.
    pub(super) stale: bool,
    /// Unix ms of the last successful GSE observation (the state's own
    /// `observed_at_ms` only moves when the state changes); from the restored state
    /// until the first sweep.
    pub(super) observed_ms: i64,
    /// Consecutive successful inventory refreshes this agent was missing from
    /// (saturating; `poll.remove_after` is at most 1000). 16 bits: with the five flags
    /// it fills the 8 bytes after the 8-byte fields, where a u32 would add 8 more.
    pub(super) missing: u16,
}

// A million agents hold one each, in a table 44-88% full: 8 bytes here are 9-18 bytes
// per agent. The small fields fill what would otherwise be padding.
const _: () = assert!(std::mem::size_of::<Entry>() <= 80);
// One per agent with a change not yet acknowledged (all of them in the first sweep's
// storm or a broker outage).
const _: () = assert!(std::mem::size_of::<InMotion>() <= 104);

/// What is in motion for one agent. Most agents have none of it, so an entry keeps it
/// behind one optional box (8 bytes in every entry rather than three boxes' 24), and
/// drops the box when the last of it goes.
///
/// A change goes pending → in flight → acknowledged, and it stays in `first` all the
/// way, so the usual path (one change at a time, as in the first sweep's storm) costs
/// one box about the size of a change. Only a newer change seen while one is in flight
/// takes a second box.
#[derive(Debug, Default)]
struct InMotion {
    first: First,
    /// A newer change, pending behind the one in flight (only while `first` is in
    /// flight).
    next: Option<Box<Change>>,
    /// With `poll.confirm_sweeps > 1`: a change seen but not yet confirmed, and in how
    /// many consecutive sweeps it was seen. Boxed again: only that option uses it, and
    /// inline it would add ~70 bytes to every box.
    candidate: Option<Box<(Stored, u32)>>,
}

/// The oldest change not yet acknowledged.
#[derive(Debug, Default)]
enum First {
    #[default]
    None,
    Pending(Change),
    InFlight(Change),
}

impl InMotion {
    fn pending(&self) -> Option<&Change> {
        match &self.first {
            First::Pending(c) => Some(c),
            First::InFlight(_) => self.next.as_deref(),
            First::None => None,
        }
    }

    fn in_flight(&self) -> Option<&Change> {
        match &self.first {
            First::InFlight(c) => Some(c),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self.first, First::None) && self.candidate.is_none()
    }
}

impl Entry {
    /// An agent loaded from the state topic.
    pub(super) fn restored(acked: Stored, seq: u64, incarnation_ms: i64) -> Entry {
        Entry {
            observed_ms: acked.observed_at_ms(),
            acked: Some(acked),
            seq,
            incarnation_ms,
            ..Entry::default()
        }
    }

    /// An agent seen for the first time: its first change is pending, and the caller
    /// queues its event.
    pub(super) fn first_seen(first: Change, observed_ms: i64) -> Entry {
        Entry {
            motion: Some(Box::new(InMotion {
                first: First::Pending(first),
                ..InMotion::default()
            })),
            event_queued: true,
            observed_ms,
            ..Entry::default()
        }
    }

    /// The newest state this process knows (pending, else in flight, else acked).
    pub(super) fn latest(&self) -> Option<&Stored> {
        match (self.pending(), self.in_flight()) {
            (Some(c), _) => c.after.as_ref(),
            (None, Some(c)) => c.after.as_ref(),
            (None, None) => self.acked.as_ref(),
        }
    }

    /// The state the next pending change is compared against.
    pub(super) fn base(&self) -> Option<&Stored> {
        match self.in_flight() {
            Some(c) => c.after.as_ref(),
            None => self.acked.as_ref(),
        }
    }

    pub(super) fn is_settled(&self) -> bool {
        !self.is_unacked() && !self.state_dirty && !self.state_in_flight
    }

    /// A deleted agent whose delete event and tombstone are both written, with nothing
    /// queued or waiting: only its seq is left, and forgetting it loses nothing but
    /// seq continuity (as a restart does).
    pub(super) fn is_forgettable(&self) -> bool {
        self.acked.is_none()
            && self.motion.is_none()
            && self.is_settled()
            && !self.event_queued
            && !self.state_queued
    }

    /// A change is pending or in flight.
    pub(super) fn is_unacked(&self) -> bool {
        self.pending().is_some() || self.in_flight().is_some()
    }

    pub(super) fn pending(&self) -> Option<&Change> {
        self.motion.as_ref()?.pending()
    }

    pub(super) fn in_flight(&self) -> Option<&Change> {
        self.motion.as_ref()?.in_flight()
    }

    /// Replaces the pending change ("latest wins").
    pub(super) fn set_pending(&mut self, change: Change) {
        let m = self.motion.get_or_insert_default();
        match (&m.first, &mut m.next) {
            (First::InFlight(_), Some(next)) => **next = change,
            (First::InFlight(_), next) => *next = Some(Box::new(change)),
            _ => m.first = First::Pending(change),
        }
    }

    pub(super) fn drop_pending(&mut self) {
        self.update(|m| match m.first {
            First::InFlight(_) => m.next = None,
            _ => m.first = First::None,
        });
    }

    /// The pending change becomes the one in flight, unless one already is.
    pub(super) fn send_pending(&mut self) -> Option<&mut Change> {
        let m = self.motion.as_deref_mut()?;
        m.first = match std::mem::take(&mut m.first) {
            First::Pending(c) => First::InFlight(c),
            other => {
                m.first = other;
                return None;
            }
        };
        match &mut m.first {
            First::InFlight(c) => Some(c),
            _ => None,
        }
    }

    /// The in-flight change, acknowledged; a newer one moves up.
    pub(super) fn take_in_flight(&mut self) -> Option<Change> {
        self.update(|m| match std::mem::take(&mut m.first) {
            First::InFlight(c) => {
                m.first = m.next.take().map_or(First::None, |n| First::Pending(*n));
                Some(c)
            }
            other => {
                m.first = other;
                None
            }
        })
    }

    /// The in-flight change failed: it is pending again, unless a newer change is.
    pub(super) fn retry_in_flight(&mut self) {
        self.update(|m| {
            m.first = match std::mem::take(&mut m.first) {
                First::InFlight(c) => First::Pending(m.next.take().map_or(c, |n| *n)),
                other => other,
            }
        });
    }

    pub(super) fn candidate_mut(&mut self) -> Option<&mut (Stored, u32)> {
        self.motion.as_deref_mut()?.candidate.as_deref_mut()
    }

    /// A new candidate, seen once so far.
    pub(super) fn start_candidate(&mut self, candidate: Stored) {
        self.motion.get_or_insert_default().candidate = Some(Box::new((candidate, 1)));
    }

    pub(super) fn drop_candidate(&mut self) {
        self.update(|m| m.candidate = None);
    }

    /// Applies `f` to what is in motion, if anything is, and drops the box once it is
    /// empty. Never allocates: only removals go through here.
    fn update<R: Default>(&mut self, f: impl FnOnce(&mut InMotion) -> R) -> R {
        let Some(m) = self.motion.as_deref_mut() else {
            return R::default();
        };
        let r = f(m);
        if m.is_empty() {
            self.motion = None;
        }
        r
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::{proto::v1::AgentState, snapshot::compact::Interner, snapshot::view::View};

    fn change(sweep: u64) -> Change {
        let state = AgentState {
            agent_id: "a".into(),
            ..AgentState::default()
        };
        Change {
            after: Some(Stored::from_view(&state.view(), &Interner::default())),
            initial: false,
            incarnation_ms: 0,
            sweep,
            since: Instant::now(),
        }
    }

    fn sweeps(e: &Entry) -> (Option<u64>, Option<u64>) {
        (e.pending().map(|c| c.sweep), e.in_flight().map(|c| c.sweep))
    }

    #[test]
    fn a_change_seen_while_one_is_in_flight_waits_behind_it_and_moves_up_on_the_ack() {
        let mut e = Entry::first_seen(change(1), 0);
        assert_eq!(e.send_pending().map(|c| c.sweep), Some(1));
        assert!(e.send_pending().is_none(), "one change in flight at a time");
        e.set_pending(change(2));
        e.set_pending(change(3));
        assert_eq!(sweeps(&e), (Some(3), Some(1)));
        assert_eq!(e.take_in_flight().map(|c| c.sweep), Some(1));
        assert_eq!(sweeps(&e), (Some(3), None));
        e.send_pending();
        assert_eq!(e.take_in_flight().map(|c| c.sweep), Some(3));
        assert!(e.motion.is_none(), "the box goes with the last change");
    }

    #[test]
    fn a_failed_change_is_pending_again_unless_a_newer_one_is() {
        let mut e = Entry::first_seen(change(1), 0);
        e.send_pending();
        e.retry_in_flight();
        assert_eq!(sweeps(&e), (Some(1), None));
        e.send_pending();
        e.set_pending(change(2));
        e.retry_in_flight();
        assert_eq!(sweeps(&e), (Some(2), None));
        e.drop_pending();
        assert!(e.motion.is_none());
    }

    #[test]
    fn dropping_the_pending_change_keeps_the_one_in_flight_and_the_candidate() {
        let mut e = Entry::first_seen(change(1), 0);
        e.send_pending();
        e.set_pending(change(2));
        e.drop_pending();
        assert_eq!(sweeps(&e), (None, Some(1)));
        e.take_in_flight();
        e.start_candidate(change(3).after.expect("state"));
        e.drop_pending();
        assert_eq!(e.candidate_mut().map(|c| c.1), Some(1));
        e.drop_candidate();
        assert!(e.motion.is_none());
    }
}
