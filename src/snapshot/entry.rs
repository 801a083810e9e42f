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
    // Boxed: most agents have neither, and an inline `Change` would triple the size
    // of every entry.
    pub(super) pending: Option<Box<Change>>,
    pub(super) in_flight: Option<Box<Change>>,
    /// With `poll.confirm_sweeps > 1`: a change seen but not yet confirmed, and in how
    /// many consecutive sweeps it was seen.
    pub(super) candidate: Option<Box<(Stored, u32)>>,
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
    /// Consecutive successful inventory refreshes this agent was missing from.
    pub(super) missing: u32,
}

impl Entry {
    /// The newest state this process knows (pending, else in flight, else acked).
    pub(super) fn latest(&self) -> Option<&Stored> {
        match (&self.pending, &self.in_flight) {
            (Some(c), _) => c.after.as_ref(),
            (None, Some(c)) => c.after.as_ref(),
            (None, None) => self.acked.as_ref(),
        }
    }

    /// The state the next pending change is compared against.
    pub(super) fn base(&self) -> Option<&Stored> {
        match &self.in_flight {
            Some(c) => c.after.as_ref(),
            None => self.acked.as_ref(),
        }
    }

    pub(super) fn is_settled(&self) -> bool {
        self.pending.is_none()
            && self.in_flight.is_none()
            && !self.state_dirty
            && !self.state_in_flight
    }
}
