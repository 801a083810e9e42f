//! Remembers recently handled `message_id`s: bounded by count and by age, so memory
//! stays fixed whatever the traffic.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

pub struct Dedup {
    window: Duration,
    capacity: usize,
    /// Id → when it was (last) remembered.
    seen: HashMap<String, Instant>,
    /// Insertion order, oldest first; an entry is stale when `seen` holds a newer time
    /// for its id (the id was remembered again).
    order: VecDeque<(String, Instant)>,
}

impl Dedup {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Dedup {
            window,
            capacity: capacity.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether `id` was remembered less than `window` ago (and not pushed out by
    /// `capacity` newer ids).
    pub fn contains(&mut self, id: &str, now: Instant) -> bool {
        self.expire(now);
        self.seen.contains_key(id)
    }

    pub fn remember(&mut self, id: &str, now: Instant) {
        self.expire(now);
        self.seen.insert(id.to_owned(), now);
        self.order.push_back((id.to_owned(), now));
        while self.seen.len() > self.capacity {
            self.pop_oldest();
        }
        // An id remembered again leaves a stale entry in `order`; a caller retrying one
        // id in a loop would grow it without bound within the window. Past twice the
        // capacity, at least half of it is stale: drop the stale entries (amortized O(1)).
        if self.order.len() > 2 * self.capacity {
            let seen = &self.seen;
            self.order.retain(|(id, at)| seen.get(id) == Some(at));
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((_, at)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((id, at)) = self.order.pop_front() {
            if self.seen.get(&id) == Some(&at) {
                self.seen.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_a_duplicate_within_the_window_only() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(10), 100);
        assert!(!d.contains("a", t0));
        d.remember("a", t0);
        assert!(d.contains("a", t0 + Duration::from_secs(9)));
        assert!(!d.contains("a", t0 + Duration::from_secs(10)));
        assert!(d.is_empty());
    }

    #[test]
    fn capacity_forgets_the_oldest_first() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(60), 2);
        d.remember("a", t0);
        d.remember("b", t0);
        d.remember("c", t0);
        assert_eq!(d.len(), 2);
        assert!(!d.contains("a", t0));
        assert!(d.contains("b", t0) && d.contains("c", t0));
    }

    #[test]
    fn one_id_remembered_again_and_again_keeps_memory_within_twice_the_capacity() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(3600), 10);
        d.remember("other", t0);
        for i in 0..1000 {
            d.remember("retried", t0 + Duration::from_millis(i));
            assert!(d.order.len() <= 20, "{}", d.order.len());
        }
        // Compaction forgot nothing live.
        assert_eq!(d.len(), 2);
        let later = t0 + Duration::from_secs(1);
        assert!(d.contains("other", later) && d.contains("retried", later));
    }

    #[test]
    fn exactly_capacity_ids_are_all_remembered_and_one_more_forgets_the_oldest() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(60), 3);
        for id in ["a", "b", "c"] {
            d.remember(id, t0);
        }
        assert!(["a", "b", "c"].iter().all(|id| d.contains(id, t0)));
        d.remember("d", t0);
        assert_eq!(d.len(), 3);
        assert!(!d.contains("a", t0));
    }

    #[test]
    fn remembering_again_restarts_the_window() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(10), 100);
        d.remember("a", t0);
        d.remember("a", t0 + Duration::from_secs(8));
        // The first entry expires, but the id was remembered again since.
        assert!(d.contains("a", t0 + Duration::from_secs(12)));
        assert!(!d.contains("a", t0 + Duration::from_secs(18)));
    }
}
