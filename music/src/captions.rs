//! Captions built only from what is known about a tune and how it is rendered.
//!
//! A caption mentions a subset of: the tune type (only when the source names it), the key and
//! mode, the meter, the tempo (a word for the rendered tempo), the origin (only when known),
//! the collection, and the instrument. Several templates, word orders and synonyms, and
//! partial captions (some attributes left out) keep the text side from being one template.

use rand::RngExt;
use rand::rngs::StdRng;

use crate::corpus::Tune;
use crate::render::Instrument;

/// The words of a caption that say how it is *rendered* rather than what the melody is:
/// instruments, tempo words, and the phrases around them ("played on", "for solo").
const RENDERING_WORDS: [&str; 13] = [
    "harp",
    "flute",
    "fiddle",
    "organ",
    "slow",
    "moderate",
    "lively",
    "fast",
    "played",
    "performed",
    "solo",
    "on",
    "for",
];

/// The caption without what the renderer decides from it (instrument and tempo): what a
/// text-adherence model should compare with the melody, since the policy controls the
/// notes, not the instrument or the tempo. Lower-case words, punctuation dropped.
pub fn adherence_text(caption: &str) -> String {
    caption
        .split(|c: char| !(c.is_alphanumeric() || c == '/' || c == '#' || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !RENDERING_WORDS.contains(&w.as_str()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Tempo words, by quarter notes per minute.
pub fn tempo_word(bpm: u32) -> &'static str {
    match bpm {
        0..=89 => "slow",
        90..=129 => "moderate",
        130..=169 => "lively",
        _ => "fast",
    }
}

/// The rendering tempo (quarter notes per minute): the source's marking, else a customary
/// tempo for the tune type.
pub fn default_bpm(tune: &Tune) -> u32 {
    if let Some(b) = tune.tempo_bpm {
        return b;
    }
    match tune.tune_type.as_str() {
        "reel" | "jig" | "slip jig" | "highland fling" => 180,
        "hornpipe" | "clog" | "polka" | "march" => 140,
        "strathspey" | "schottische" => 120,
        "air" => 76,
        "waltz" | "mazurka" | "minuet" | "gavotte" => 130,
        _ => 100,
    }
}

/// How a caption is rendered when nothing else is known (by `musicrl generate` and by the
/// reward server): the instrument it names (the harp when it names none or several) and the
/// tempo its tempo word stands for, in quarter notes per minute (110 without one).
pub fn rendering_for(caption: &str) -> (Instrument, f32) {
    let lower = caption.to_lowercase();
    let instrument = Instrument::named_in(&lower).unwrap_or(Instrument::Harp);
    let bpm = [
        ("slow", 76.0),
        ("moderate", 110.0),
        ("lively", 150.0),
        ("fast", 180.0),
    ]
    .into_iter()
    .find(|(word, _)| {
        lower
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| w == *word)
    })
    .map_or(110.0, |(_, bpm)| bpm);
    (instrument, bpm)
}

fn collection_phrase(collection: &str) -> &'static str {
    match collection {
        "essen" => "from the Essen folksong collection",
        "oneills1850" => "from O'Neill's Music of Ireland",
        "ryans_mammoth" => "from Ryan's Mammoth Collection",
        "airds_airs" => "from James Aird's selection",
        _ => "from a folk collection",
    }
}

/// The words a caption may use for a meter ("six-eight"), when it has them.
pub fn meter_words(meter: &str) -> Option<&'static str> {
    match meter {
        "2/4" => Some("two-four"),
        "3/4" => Some("three-four"),
        "4/4" => Some("four-four"),
        "6/8" => Some("six-eight"),
        "9/8" => Some("nine-eight"),
        "12/8" => Some("twelve-eight"),
        "3/8" => Some("three-eight"),
        "2/2" => Some("cut time"),
        _ => None,
    }
}

fn meter_phrase(meter: &str, rng: &mut StdRng) -> String {
    let words = meter_words(meter);
    match (words, rng.random_range(0..2)) {
        (Some(w), 0) => format!("in {w}"),
        _ => format!("in {meter} time"),
    }
}

/// One caption for `tune` rendered with `instrument` at `bpm`. Deterministic for the RNG.
pub fn caption(tune: &Tune, instrument: Instrument, bpm: u32, rng: &mut StdRng) -> String {
    let tempo = tempo_word(bpm);
    let kind = if tune.tune_type.is_empty() {
        if tune.collection == "essen" {
            "folk song"
        } else {
            "folk tune"
        }
    } else {
        tune.tune_type.as_str()
    };
    let key = format!("{} {}", tune.key_tonic, tune.key_mode);
    let inst = instrument.caption_name();
    // O'Neill's collection is Irish music by definition; elsewhere only a stated origin.
    let origin = if !tune.origin.is_empty() {
        Some(tune.origin.clone())
    } else if tune.collection == "oneills1850" {
        Some("Irish".to_string())
    } else {
        None
    };

    // The subject: "a lively Irish reel", "a German folk song", "a jig".
    let mut subject = String::from("a");
    let with_tempo = rng.random_range(0..3) > 0;
    if with_tempo {
        subject.push(' ');
        subject.push_str(tempo);
    }
    if let Some(o) = origin.as_ref().filter(|_| rng.random_range(0..3) > 0) {
        subject.push(' ');
        subject.push_str(o);
    }
    subject.push(' ');
    subject.push_str(kind);
    if subject.starts_with("a a") || subject.starts_with("a e") || subject.starts_with("a o") {
        subject.replace_range(0..1, "an");
    }

    // Optional details, shuffled and thinned (at least one kept besides the instrument).
    let mut details = vec![format!("in {key}"), meter_phrase(&tune.meter, rng)];
    if rng.random_range(0..3) == 0 {
        details.push(collection_phrase(&tune.collection).to_string());
    }
    crate::shuffle(&mut details, rng);
    let keep = rng.random_range(1..=details.len());
    details.truncate(keep);

    let played = match rng.random_range(0..4) {
        0 => format!("played on {inst}"),
        1 => format!("on {inst}"),
        2 => format!("performed on {inst}"),
        _ => format!("for solo {inst}"),
    };
    let text = match rng.random_range(0..4) {
        0 => format!("{subject} {} {played}", details.join(", ")),
        1 => format!("{played}: {subject} {}", details.join(" ")),
        2 => format!("{subject} {played}, {}", details.join(", ")),
        _ => format!("{inst} solo, {subject}, {}", details.join(", ")),
    };
    let mut text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(first) = text.get(0..1) {
        let upper = first.to_uppercase();
        text.replace_range(0..1, &upper);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Split;
    use rand::SeedableRng;

    fn tune(tune_type: &str, origin: &str, mode: &str) -> Tune {
        Tune {
            id: "t".into(),
            collection: "ryans_mammoth".into(),
            title: "T".into(),
            tune_type: tune_type.into(),
            origin: origin.into(),
            meter: "6/8".into(),
            key_tonic: "D".into(),
            key_mode: mode.into(),
            tempo_bpm: None,
            split: Split::Train,
            events: vec![],
        }
    }

    const TYPES: [&str; 8] = [
        "reel",
        "jig",
        "hornpipe",
        "waltz",
        "march",
        "air",
        "polka",
        "strathspey",
    ];

    #[test]
    fn adherence_text_drops_what_the_renderer_decides() {
        assert_eq!(
            adherence_text("Fiddle solo, a lively Irish reel, in D major, in 2/4 time"),
            "a irish reel in d major in 2/4 time"
        );
        assert_eq!(
            adherence_text("Played on harp: a slow air in E minor from O'Neill's Music of Ireland"),
            "a air in e minor from o'neill's music of ireland"
        );
    }

    #[test]
    fn captions_mention_only_attributes_the_tune_has() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut texts = std::collections::BTreeSet::new();
        for (ty, origin, mode) in [
            ("jig", "", "major"),
            ("", "German", "minor"),
            ("reel", "Irish", "major"),
        ] {
            let t = tune(ty, origin, mode);
            for inst in Instrument::ALL {
                for _ in 0..50 {
                    let c = caption(&t, inst, default_bpm(&t), &mut rng);
                    let lower = c.to_lowercase();
                    assert!(!c.trim().is_empty());
                    assert!(lower.contains(inst.caption_name()), "{c}");
                    for other in TYPES.iter().filter(|x| **x != ty) {
                        assert!(
                            !lower
                                .split(|ch: char| !ch.is_alphanumeric())
                                .any(|w| w == *other),
                            "{c} names {other}"
                        );
                    }
                    let wrong_mode = if mode == "major" { "minor" } else { "major" };
                    assert!(!lower.contains(wrong_mode), "{c}");
                    if origin.is_empty() {
                        assert!(!lower.contains("german") && !lower.contains("irish"), "{c}");
                    }
                    for other in Instrument::ALL.iter().filter(|i| **i != inst) {
                        assert!(!lower.contains(other.caption_name()), "{c}");
                    }
                    texts.insert(c);
                }
            }
        }
        assert!(texts.len() > 300, "captions vary: {} distinct", texts.len());
    }
}
