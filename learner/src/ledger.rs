//! The trajectory ledger: where every trajectory the actors sampled went.
//!
//! Every trajectory carries an id (actor, actor incarnation, sequence). The ledger keeps,
//! for each actor incarnation (a *source*), the set of sequences received, as sorted
//! disjoint ranges (arrivals are almost in order, so a source is a handful of ranges), and
//! counts what became of each received trajectory. Two invariants hold at every moment and
//! are saved with every checkpoint, so they hold across restarts too:
//!
//! ```text
//! sampled  = received + lost            (lost: the gaps in each source's sequences)
//! received = trained + dropped + rejected + pending
//! ```
//!
//! `sampled` counts each source up to the highest sequence seen, so a trajectory an actor
//! sampled and never delivered (killed with it in flight, or delivered to a learner that
//! crashed before checkpointing) shows as a gap, `lost{unreceived}`, once a later one of the
//! same source arrives. A trajectory sampled after a source's last delivery is invisible to
//! the learner; the actor's own summary counts it (`abandoned`). Duplicates (an id already
//! received: a push retried after its answer was lost) are counted apart and never queued.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use musicrl_common::types::TrajectoryId;

/// Sources kept with their ranges; past this, the least recently seen source is retired
/// (its counts stay in the totals; a duplicate of it can no longer be recognised).
pub const MAX_SOURCES: usize = 4096;

/// The sequences one actor incarnation delivered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Source {
    /// Sorted, disjoint, non-adjacent half-open ranges [start, end).
    ranges: Vec<(u64, u64)>,
    /// When the source was last seen (the ledger's event counter), for retirement.
    last_seen: u64,
}

impl Source {
    fn contains(&self, seq: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, end)| end <= seq);
        self.ranges.get(i).is_some_and(|&(start, _)| start <= seq)
    }

    /// Inserts `seq`; false if it was already there.
    fn insert(&mut self, seq: u64) -> bool {
        if self.contains(seq) {
            return false;
        }
        let i = self.ranges.partition_point(|&(_, end)| end < seq);
        // ranges[i] is the first range with end >= seq: it may end exactly at seq (extend
        // it), or start after seq.
        let joins_left = self.ranges.get(i).is_some_and(|&(_, end)| end == seq);
        let next = if joins_left { i + 1 } else { i };
        let joins_right = self
            .ranges
            .get(next)
            .is_some_and(|&(start, _)| start == seq + 1);
        match (joins_left, joins_right) {
            (true, true) => {
                self.ranges[i].1 = self.ranges[next].1;
                self.ranges.remove(next);
            }
            (true, false) => self.ranges[i].1 = seq + 1,
            (false, true) => self.ranges[next].0 = seq,
            (false, false) => self.ranges.insert(i, (seq, seq + 1)),
        }
        true
    }

    /// Removes `seq` (it was received and then not admitted after all).
    fn remove(&mut self, seq: u64) {
        let i = self.ranges.partition_point(|&(_, end)| end <= seq);
        let Some(&(start, end)) = self.ranges.get(i) else {
            return;
        };
        if seq < start {
            return;
        }
        match (seq == start, seq + 1 == end) {
            (true, true) => {
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i].0 = seq + 1,
            (false, true) => self.ranges[i].1 = seq,
            (false, false) => {
                self.ranges[i].1 = seq;
                self.ranges.insert(i + 1, (seq + 1, end));
            }
        }
    }

    fn received(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Sequences up to the highest seen.
    fn sampled(&self) -> u64 {
        self.ranges.last().map_or(0, |&(_, end)| end)
    }
}

/// The ledger (serialised into every checkpoint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// Keyed by `actor_id/actor_run` (hex).
    sources: BTreeMap<String, Source>,
    /// Received and sampled of retired sources.
    retired_received: u64,
    retired_sampled: u64,
    events: u64,
    pub duplicates: u64,
    pub trained: u64,
    pub rejected: BTreeMap<String, u64>,
    pub dropped: BTreeMap<String, u64>,
    /// Items of refused pushes whose id could not be read (outside the invariants).
    pub unidentified: u64,
}

pub use musicrl_common::types::Accounting;

/// The source key of an id.
fn key(actor: &str, id: &TrajectoryId) -> String {
    format!("{actor}/{:016x}", id.actor_run)
}

impl Ledger {
    /// Records the arrival of `id`; false (and counted as a duplicate) if it was received
    /// before.
    pub fn receive(&mut self, actor: &str, id: &TrajectoryId) -> bool {
        self.events += 1;
        let events = self.events;
        let source = self.sources.entry(key(actor, id)).or_default();
        source.last_seen = events;
        if !source.insert(id.sequence) {
            self.duplicates += 1;
            return false;
        }
        if self.sources.len() > MAX_SOURCES {
            self.retire_oldest();
        }
        true
    }

    /// Takes back a [`Ledger::receive`] whose trajectory never reached the queue because its
    /// push was cancelled (the caller left, or the server stopped) while it waited: a retry
    /// of that push must be admitted, not counted as a duplicate.
    pub fn forget(&mut self, actor: &str, id: &TrajectoryId) {
        if let Some(s) = self.sources.get_mut(&key(actor, id)) {
            s.remove(id.sequence);
        }
    }

    fn retire_oldest(&mut self) {
        if let Some(k) = self
            .sources
            .iter()
            .min_by_key(|(_, s)| s.last_seen)
            .map(|(k, _)| k.clone())
            && let Some(s) = self.sources.remove(&k)
        {
            self.retired_received += s.received();
            self.retired_sampled += s.sampled();
        }
    }

    pub fn reject(&mut self, reason: &str) {
        *self.rejected.entry(reason.to_string()).or_default() += 1;
    }

    pub fn drop_n(&mut self, reason: &str, n: u64) {
        if n > 0 {
            *self.dropped.entry(reason.to_string()).or_default() += n;
        }
    }

    pub fn train(&mut self, n: u64) {
        self.trained += n;
    }

    pub fn received(&self) -> u64 {
        self.retired_received + self.sources.values().map(Source::received).sum::<u64>()
    }

    pub fn sampled(&self) -> u64 {
        self.retired_sampled + self.sources.values().map(Source::sampled).sum::<u64>()
    }

    /// Received and not yet trained, dropped or rejected: what should be in the queue or in
    /// the batch being filled (the service measures those, and the invariant compares).
    pub fn unsettled(&self) -> u64 {
        self.received().saturating_sub(
            self.trained + self.rejected.values().sum::<u64>() + self.dropped.values().sum::<u64>(),
        )
    }

    /// After a restart: whatever was pending at the checkpoint died with the old process.
    pub fn restarted(&mut self) -> u64 {
        let pending = self.unsettled();
        self.drop_n("learner_restart", pending);
        pending
    }

    /// The totals, with `pending` as measured (queued plus gathered).
    pub fn snapshot(&self, pending: u64) -> Accounting {
        let received = self.received();
        let sampled = self.sampled();
        let mut lost = BTreeMap::new();
        if sampled > received {
            lost.insert("unreceived".to_string(), sampled - received);
        }
        Accounting {
            sampled,
            received,
            duplicates: self.duplicates,
            trained: self.trained,
            pending,
            rejected: self.rejected.clone(),
            dropped: self.dropped.clone(),
            lost,
            unidentified: self.unidentified,
            sources: self.sources.len() as u64,
        }
    }

    /// Sets the ledger gauges to the current totals.
    pub fn publish(&self, pending: u64) {
        let a = self.snapshot(pending);
        let g = |account: &'static str, v: u64| {
            metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_LEDGER_TRAJECTORIES, "account" => account)
                .set(v as f64);
        };
        g("sampled", a.sampled);
        g("received", a.received);
        g("duplicates", a.duplicates);
        g("trained", a.trained);
        g("pending", a.pending);
        g("rejected", a.rejected_total());
        g("dropped", a.dropped_total());
        g("lost", a.lost_total());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(run: u64, sequence: u64) -> TrajectoryId {
        TrajectoryId {
            actor_run: run,
            sequence,
        }
    }

    #[test]
    fn ranges_merge_and_duplicates_are_recognised() {
        let mut s = Source::default();
        for q in [0, 1, 2, 5, 7, 6, 3] {
            assert!(s.insert(q), "{q}");
        }
        assert_eq!(s.ranges, vec![(0, 4), (5, 8)]);
        assert!(!s.insert(6));
        assert!(!s.insert(0));
        assert!(s.insert(4));
        assert_eq!(s.ranges, vec![(0, 8)]);
        assert_eq!((s.received(), s.sampled()), (8, 8));
        assert!(s.insert(10));
        assert_eq!((s.received(), s.sampled()), (9, 11));
        s.remove(3);
        assert_eq!(s.ranges, vec![(0, 3), (4, 8), (10, 11)]);
        s.remove(10);
        s.remove(0);
        s.remove(99);
        assert_eq!(s.ranges, vec![(1, 3), (4, 8)]);
        assert!(s.insert(3) && s.insert(0));
        assert_eq!(s.ranges, vec![(0, 8)]);
    }

    #[test]
    fn the_invariants_hold_through_gaps_duplicates_drops_and_a_restart() {
        let mut l = Ledger::default();
        // Actor a: 0..6 with 3 lost in flight; 2 pushed twice.
        for q in [0, 1, 2, 4, 5] {
            assert!(l.receive("a", &id(7, q)));
        }
        assert!(!l.receive("a", &id(7, 2)));
        // Actor b: 0..2, one rejected.
        assert!(l.receive("b", &id(9, 0)));
        assert!(l.receive("b", &id(9, 1)));
        l.reject("forged_reward");
        l.train(4);
        l.drop_n("stale", 1);
        let a = l.snapshot(1);
        assert_eq!(a.sampled, 8);
        assert_eq!(a.received, 7);
        assert_eq!(a.lost.get("unreceived"), Some(&1));
        assert_eq!(a.duplicates, 1);
        assert_eq!(a.pending, 1);
        assert_eq!(a.check(), Ok(()));
        // The learner restarts from a checkpoint of this ledger: the pending one is lost.
        let mut resumed: Ledger =
            serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(resumed.restarted(), 1);
        let a = resumed.snapshot(0);
        assert_eq!(a.pending, 0);
        assert_eq!(a.dropped.get("learner_restart"), Some(&1));
        assert_eq!(a.check(), Ok(()));
        // A broken flow is caught.
        let mut broken = a.clone();
        broken.trained += 1;
        assert!(broken.check().unwrap_err().contains("received 7"));
    }

    #[test]
    fn retired_sources_keep_their_counts() {
        let mut l = Ledger::default();
        for run in 0..(MAX_SOURCES as u64 + 3) {
            l.receive("a", &id(run, 1));
        }
        let a = l.snapshot(0);
        assert_eq!(a.sources, MAX_SOURCES as u64);
        assert_eq!(a.received, MAX_SOURCES as u64 + 3);
        assert_eq!(a.sampled, 2 * (MAX_SOURCES as u64 + 3));
        assert!(
            a.check().is_err(),
            "nothing trained and nothing pending: unbalanced"
        );
        l.train(MAX_SOURCES as u64 + 3);
        assert_eq!(l.snapshot(0).check(), Ok(()));
    }
}
