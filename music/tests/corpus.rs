//! The shipped corpus: it loads, its splits are disjoint, every tune survives
//! encode → decode → encode unchanged, and captions of real tunes name only what is known.

use std::collections::BTreeSet;

use rand::SeedableRng;
use rand::rngs::StdRng;

use musicrl_music::captions::{caption, default_bpm};
use musicrl_music::corpus::{self, Split};
use musicrl_music::render::Instrument;
use musicrl_music::tokens::{self, BAR, DUR_BASE, REST};

#[test]
fn the_corpus_loads_with_disjoint_splits_of_the_documented_size() {
    let tunes = corpus::load(&corpus::repo_path()).expect("data/corpus/tunes.jsonl.gz loads");
    assert!(tunes.len() > 10_000, "{} tunes", tunes.len());
    let ids: BTreeSet<&str> = tunes.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), tunes.len(), "tune ids are unique");
    let count = |s: Split| tunes.iter().filter(|t| t.split == s).count();
    let (train, val, test) = (
        count(Split::Train),
        count(Split::Validation),
        count(Split::Test),
    );
    assert!(
        train > 10 * val && val > 300 && test > 300,
        "{train}/{val}/{test}"
    );
    for collection in ["essen", "oneills1850", "ryans_mammoth", "airds_airs"] {
        assert!(
            tunes.iter().filter(|t| t.collection == collection).count() > 500,
            "{collection}"
        );
    }
}

#[test]
fn every_tune_round_trips_through_the_tokens() {
    let tunes = corpus::load(&corpus::repo_path()).expect("loads");
    let mut repaired_sources = 0;
    for t in &tunes {
        let first = tokens::encode(&t.events);
        let decoded = tokens::decode(&first);
        assert_eq!(
            decoded.repairs, 0,
            "{}: the encoder's output needs no repair",
            t.id
        );
        let second = tokens::encode(&decoded.events);
        assert_eq!(
            first, second,
            "{}: encode(decode(encode(x))) == encode(x)",
            t.id
        );
        // Well-formed: every head is followed by a duration.
        for w in first.windows(2) {
            let head = (2..=REST).contains(&w[0]);
            assert_eq!(head, w[1] >= DUR_BASE, "{}: {:?}", t.id, w);
        }
        assert!(
            first
                .iter()
                .all(|&x| (x as usize) < tokens::VOCAB_SIZE && x != tokens::END)
        );
        if decoded.events != t.events {
            repaired_sources += 1; // out-of-range pitches or unrepresentable durations
        }
        assert!(first.contains(&BAR) || t.events.iter().all(|e| *e != tokens::Event::Bar));
    }
    // The vocabulary covers the corpus: few tunes need any repair on the way in.
    assert!(
        repaired_sources * 10 < tunes.len(),
        "{repaired_sources} of {} tunes were repaired",
        tunes.len()
    );
}

#[test]
fn captions_of_real_tunes_name_only_their_attributes() {
    let tunes = corpus::load(&corpus::repo_path()).expect("loads");
    let all_types: BTreeSet<&str> = tunes
        .iter()
        .map(|t| t.tune_type.as_str())
        .filter(|s| !s.is_empty())
        .collect();
    let mut rng = StdRng::seed_from_u64(5);
    for (i, t) in tunes.iter().enumerate().step_by(7) {
        let inst = Instrument::ALL[i % 4];
        let c = caption(t, inst, default_bpm(t), &mut rng).to_lowercase();
        let words: Vec<&str> = c
            .split(|ch: char| !ch.is_alphanumeric() && ch != '\'')
            .filter(|w| !w.is_empty())
            .collect();
        let padded = format!(" {} ", words.join(" "));
        assert!(c.contains(inst.caption_name()), "{c}");
        for ty in &all_types {
            if *ty != t.tune_type && !t.tune_type.contains(ty) {
                assert!(
                    !padded.contains(&format!(" {ty} ")),
                    "{}: {c} names {ty}",
                    t.id
                );
            }
        }
        let wrong_mode = if t.key_mode == "major" {
            "minor"
        } else {
            "major"
        };
        assert!(!c.contains(wrong_mode), "{}: {c}", t.id);
    }
}
