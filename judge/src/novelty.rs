//! Collapse and copying, the two known ways music RL fails: how varied a model's melodies are
//! across samples (distinct n-grams) and the longest run of notes a melody copies from a
//! training tune.
//!
//! Both read decoded notes, (pitch or rest, duration) pairs, through the same decoder as the
//! rest of the judge; bar lines and END do not count as notes. The copy index holds the
//! corpus's tunes passed through the token encoder first, so their durations are the ones a
//! policy can write.

use std::collections::HashSet;

use musicrl_music::tokens::{self, Event};

/// One note as a symbol: the pitch (0 for a rest, MIDI + 1 otherwise) and the duration in
/// twelfths.
fn symbol(pitch: Option<u8>, twelfths: u16) -> u32 {
    (u32::from(pitch.map_or(0, |p| p + 1)) << 16) | u32::from(twelfths)
}

/// The notes of a token sequence (up to its first END), as symbols.
pub fn note_symbols(tokens_: &[u32]) -> Vec<u32> {
    tokens::decode(tokens_)
        .notes()
        .map(|(p, d)| symbol(p, d))
        .collect()
}

fn event_symbols(events: &[Event]) -> Vec<u32> {
    // Through the encoder and back, so a corpus duration becomes the nearest one a policy
    // can write.
    note_symbols(&tokens::encode(events))
}

/// Distinct-n: the share of distinct note n-grams among all n-grams of the melodies, pooled
/// across them (1 when no n-gram repeats anywhere, near 0 for a model that plays one figure
/// again and again). NaN when no melody has n notes.
pub fn distinct_ngrams(melodies: &[Vec<u32>], n: usize) -> f64 {
    assert!(n > 0, "n-grams need n ≥ 1");
    let mut seen = HashSet::new();
    let mut total = 0usize;
    for m in melodies {
        for w in m.windows(n) {
            total += 1;
            seen.insert(w.to_vec());
        }
    }
    if total == 0 {
        return f64::NAN;
    }
    seen.len() as f64 / total as f64
}

/// Separates tunes in the index; no melody contains it, so no match crosses two tunes.
const SEPARATOR: u32 = u32::MAX;

/// The training tunes' notes as a suffix automaton: every substring of every tune is a path
/// from the root, so the longest run of a melody's notes found in any one tune takes one pass
/// over the melody (linear in the corpus to build, in the melody to query).
#[derive(Debug, Clone)]
pub struct CopyIndex {
    /// Per state: the longest string it stands for, and its suffix link.
    len: Vec<u32>,
    link: Vec<u32>,
    /// Per state: its transitions (symbol, next state); most states have one or two.
    next: Vec<Vec<(u32, u32)>>,
    tunes: usize,
    notes: usize,
}

const NONE: u32 = u32::MAX;

impl CopyIndex {
    /// Indexes tunes given as events (the corpus's training split).
    pub fn of_tunes<'a>(tunes: impl IntoIterator<Item = &'a [Event]>) -> CopyIndex {
        let mut index = CopyIndex {
            len: vec![0],
            link: vec![NONE],
            next: vec![Vec::new()],
            tunes: 0,
            notes: 0,
        };
        let mut last = 0u32;
        for events in tunes {
            let notes = event_symbols(events);
            index.tunes += 1;
            index.notes += notes.len();
            for s in notes {
                last = index.extend(last, s);
            }
            last = index.extend(last, SEPARATOR);
        }
        index
    }

    fn go(&self, state: u32, s: u32) -> Option<u32> {
        self.next[state as usize]
            .iter()
            .find(|(sym, _)| *sym == s)
            .map(|&(_, to)| to)
    }

    fn set(&mut self, state: u32, s: u32, to: u32) {
        let edges = &mut self.next[state as usize];
        match edges.iter_mut().find(|(sym, _)| *sym == s) {
            Some(edge) => edge.1 = to,
            None => edges.push((s, to)),
        }
    }

    /// The textbook online construction (Blumer et al.): appends one symbol.
    fn extend(&mut self, last: u32, s: u32) -> u32 {
        let cur = self.len.len() as u32;
        self.len.push(self.len[last as usize] + 1);
        self.link.push(0);
        self.next.push(Vec::new());
        let mut p = last;
        while p != NONE && self.go(p, s).is_none() {
            self.set(p, s, cur);
            p = self.link[p as usize];
        }
        if p == NONE {
            self.link[cur as usize] = 0;
            return cur;
        }
        let q = self.go(p, s).expect("the loop stopped at a transition");
        if self.len[p as usize] + 1 == self.len[q as usize] {
            self.link[cur as usize] = q;
            return cur;
        }
        // Split q: a clone with q's transitions and the shorter length.
        let clone = self.len.len() as u32;
        self.len.push(self.len[p as usize] + 1);
        self.link.push(self.link[q as usize]);
        self.next.push(self.next[q as usize].clone());
        while p != NONE && self.go(p, s) == Some(q) {
            self.set(p, s, clone);
            p = self.link[p as usize];
        }
        self.link[q as usize] = clone;
        self.link[cur as usize] = clone;
        cur
    }

    /// Tunes and notes indexed.
    pub fn size(&self) -> (usize, usize) {
        (self.tunes, self.notes)
    }

    /// The longest run of consecutive notes of `melody` (symbols, [`note_symbols`]) that
    /// occurs in one indexed tune.
    pub fn longest_copy(&self, melody: &[u32]) -> usize {
        let (mut state, mut run, mut best) = (0u32, 0u32, 0u32);
        for &s in melody {
            while state != 0 && self.go(state, s).is_none() {
                state = self.link[state as usize];
                run = self.len[state as usize];
            }
            if let Some(to) = self.go(state, s) {
                state = to;
                run += 1;
            }
            best = best.max(run);
        }
        best as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notes(pitches: &[u8]) -> Vec<Event> {
        pitches
            .iter()
            .map(|&p| Event::Note {
                pitch: Some(p),
                twelfths: 6,
            })
            .collect()
    }

    fn symbols(pitches: &[u8]) -> Vec<u32> {
        pitches.iter().map(|&p| symbol(Some(p), 6)).collect()
    }

    #[test]
    fn distinct_ngrams_by_hand() {
        // Bigrams of [a b a b] and [a b c]: ab ba ab | ab bc → 3 distinct of 5.
        let (a, b, c) = (symbol(Some(60), 6), symbol(Some(62), 6), symbol(None, 6));
        let melodies = vec![vec![a, b, a, b], vec![a, b, c]];
        assert!((distinct_ngrams(&melodies, 2) - 3.0 / 5.0).abs() < 1e-12);
        // Unigrams: a b c of 7 notes.
        assert!((distinct_ngrams(&melodies, 1) - 3.0 / 7.0).abs() < 1e-12);
        // A drone has one distinct n-gram however long it is.
        let drone = vec![vec![a; 40]];
        assert!((distinct_ngrams(&drone, 4) - 1.0 / 37.0).abs() < 1e-12);
        assert!(distinct_ngrams(&[vec![a]], 2).is_nan());
    }

    #[test]
    fn the_longest_copied_run_never_crosses_two_tunes() {
        let t1 = notes(&[60, 62, 64, 65, 67]);
        let t2 = notes(&[67, 65, 64, 62, 60, 59]);
        let index = CopyIndex::of_tunes([t1.as_slice(), t2.as_slice()]);
        assert_eq!(index.size(), (2, 11));
        // Copies 62 64 65 67 of tune 1, then wanders.
        assert_eq!(index.longest_copy(&symbols(&[50, 62, 64, 65, 67, 51])), 4);
        // The end of tune 1 followed by the start of tune 2 is not in either tune.
        assert_eq!(index.longest_copy(&symbols(&[65, 67, 67, 65])), 2);
        // The whole of tune 2.
        assert_eq!(index.longest_copy(&symbols(&[67, 65, 64, 62, 60, 59])), 6);
        // A different duration is a different note.
        assert_eq!(
            index.longest_copy(&[symbol(Some(60), 12), symbol(Some(62), 12)]),
            0
        );
        assert_eq!(index.longest_copy(&[]), 0);
    }

    #[test]
    fn the_automaton_agrees_with_brute_force() {
        // Random tunes over a small alphabet repeat a lot, which exercises the clone step.
        let mut x = 12345u64;
        let mut rnd = |k: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % k
        };
        let tunes: Vec<Vec<u8>> = (0..6)
            .map(|_| (0..20).map(|_| 60 + rnd(3) as u8).collect())
            .collect();
        let events: Vec<Vec<Event>> = tunes.iter().map(|t| notes(t)).collect();
        let index = CopyIndex::of_tunes(events.iter().map(Vec::as_slice));
        for _ in 0..30 {
            let q: Vec<u8> = (0..15).map(|_| 60 + rnd(3) as u8).collect();
            let brute = (0..q.len())
                .flat_map(|i| (i + 1..=q.len()).map(move |j| (i, j)))
                .filter(|&(i, j)| {
                    tunes
                        .iter()
                        .any(|t| t.windows(j - i).any(|w| w == &q[i..j]))
                })
                .map(|(i, j)| j - i)
                .max()
                .unwrap_or(0);
            assert_eq!(index.longest_copy(&symbols(&q)), brute, "{q:?}");
        }
    }
}
