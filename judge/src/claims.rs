//! What a caption claims about the music that the policy controls: the key and mode, the
//! meter, and the tune type. Read from the caption's text, the way a rater reads it.
//!
//! Tempo and instrument are claims too, but the renderer decides them from the caption, not
//! the policy, so they are not read here and never judged.

use serde::{Deserialize, Serialize};

/// A key: a tonic pitch class (0 = C … 11 = B) and a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key {
    pub tonic: u8,
    pub minor: bool,
}

const TONICS: [(&str, u8); 17] = [
    ("c", 0),
    ("c#", 1),
    ("db", 1),
    ("d", 2),
    ("d#", 3),
    ("eb", 3),
    ("e", 4),
    ("f", 5),
    ("f#", 6),
    ("gb", 6),
    ("g", 7),
    ("g#", 8),
    ("ab", 8),
    ("a", 9),
    ("a#", 10),
    ("bb", 10),
    ("b", 11),
];

const NAMES: [&str; 12] = [
    "C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
];

impl Key {
    /// `("Bb", "major")` → B♭ major; `None` for anything else.
    pub fn parse(tonic: &str, mode: &str) -> Option<Key> {
        let t = tonic.to_lowercase();
        let tonic = TONICS.iter().find(|(n, _)| *n == t)?.1;
        let minor = match mode.to_lowercase().as_str() {
            "major" => false,
            "minor" => true,
            _ => return None,
        };
        Some(Key { tonic, minor })
    }

    pub fn name(&self) -> String {
        format!(
            "{} {}",
            NAMES[usize::from(self.tonic % 12)],
            if self.minor { "minor" } else { "major" }
        )
    }

    /// The relative key (G major ↔ E minor): the same scale, another tonic.
    pub fn relative(&self) -> Key {
        if self.minor {
            Key {
                tonic: (self.tonic + 3) % 12,
                minor: false,
            }
        } else {
            Key {
                tonic: (self.tonic + 9) % 12,
                minor: true,
            }
        }
    }
}

/// A time signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Meter {
    pub num: u16,
    pub den: u16,
}

impl Meter {
    /// `"6/8"` → 6/8; numerators 1–16 over 1, 2, 4, 8 or 16 (a bar and a beat are then whole
    /// numbers of the vocabulary's twelfths of a quarter; /32 meters are not read).
    pub fn parse(text: &str) -> Option<Meter> {
        let (n, d) = text.split_once('/')?;
        let (num, den) = (n.parse::<u16>().ok()?, d.parse::<u16>().ok()?);
        ((1..=16).contains(&num) && [1, 2, 4, 8, 16].contains(&den)).then_some(Meter { num, den })
    }

    /// Length of a full bar in twelfths of a quarter note (the token vocabulary's unit).
    pub fn bar_twelfths(&self) -> u32 {
        u32::from(self.num) * 48 / u32::from(self.den)
    }

    /// Compound meters (6/8, 9/8, 12/8, 6/4) group their beats in threes.
    pub fn compound(&self) -> bool {
        self.num.is_multiple_of(3) && self.num >= 6
    }

    /// The beat in twelfths: a dotted note in compound meters, else the denominator's note.
    pub fn beat_twelfths(&self) -> u32 {
        let unit = 48 / u32::from(self.den);
        if self.compound() { unit * 3 } else { unit }
    }

    pub fn name(&self) -> String {
        format!("{}/{}", self.num, self.den)
    }
}

/// The tune types captions name (those the corpus has, and common dance forms besides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TuneType {
    Reel,
    Jig,
    SlipJig,
    Hornpipe,
    Strathspey,
    Clog,
    Air,
    HighlandFling,
    Waltz,
    March,
    Polka,
    Schottische,
    Mazurka,
    Minuet,
    Gavotte,
}

impl TuneType {
    const WORDS: [(&'static str, TuneType); 15] = [
        ("slip jig", TuneType::SlipJig),
        ("highland fling", TuneType::HighlandFling),
        ("reel", TuneType::Reel),
        ("jig", TuneType::Jig),
        ("hornpipe", TuneType::Hornpipe),
        ("strathspey", TuneType::Strathspey),
        ("clog", TuneType::Clog),
        ("air", TuneType::Air),
        ("waltz", TuneType::Waltz),
        ("march", TuneType::March),
        ("polka", TuneType::Polka),
        ("schottische", TuneType::Schottische),
        ("mazurka", TuneType::Mazurka),
        ("minuet", TuneType::Minuet),
        ("gavotte", TuneType::Gavotte),
    ];

    pub fn name(&self) -> &'static str {
        Self::WORDS
            .iter()
            .find(|(_, t)| t == self)
            .map(|(w, _)| *w)
            .expect("every type has a word")
    }

    /// The meters the type is played in (4/4 and 2/2 count as one: the same bar).
    pub fn meters(&self) -> &'static [(u16, u16)] {
        match self {
            TuneType::Reel => &[(4, 4), (2, 2), (2, 4)],
            TuneType::Jig => &[(6, 8)],
            TuneType::SlipJig => &[(9, 8)],
            TuneType::Hornpipe => &[(4, 4), (2, 2), (2, 4)],
            TuneType::Strathspey => &[(4, 4), (2, 2)],
            TuneType::Clog | TuneType::HighlandFling => &[(4, 4), (2, 2)],
            TuneType::Air => &[(3, 4), (4, 4), (2, 4), (6, 8), (2, 2), (3, 8), (9, 8)],
            TuneType::Waltz | TuneType::Mazurka | TuneType::Minuet => &[(3, 4)],
            TuneType::March => &[(2, 4), (6, 8), (4, 4), (2, 2)],
            TuneType::Polka => &[(2, 4)],
            TuneType::Schottische => &[(4, 4), (2, 4)],
            TuneType::Gavotte => &[(4, 4), (2, 2)],
        }
    }
}

/// What one caption claims.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub key: Option<Key>,
    pub meter: Option<Meter>,
    pub tune_type: Option<TuneType>,
}

impl Claims {
    /// Whether the caption claims anything the policy controls.
    pub fn any(&self) -> bool {
        self.key.is_some() || self.meter.is_some() || self.tune_type.is_some()
    }
}

const METER_WORDS: [(&str, (u16, u16)); 7] = [
    ("two-four", (2, 4)),
    ("three-four", (3, 4)),
    ("four-four", (4, 4)),
    ("six-eight", (6, 8)),
    ("nine-eight", (9, 8)),
    ("twelve-eight", (12, 8)),
    ("three-eight", (3, 8)),
];

/// Reads the claims of a caption: "… in D major …" / "in E minor", "in 6/8 time" /
/// "in six-eight" / "in cut time", and a tune-type word ("slip jig" before "jig").
pub fn claims_of(caption: &str) -> Claims {
    let words: Vec<String> = caption
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !(c.is_alphanumeric() || c == '#' || c == '/' || c == '-'))
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect();
    let mut claims = Claims::default();
    for (i, w) in words.iter().enumerate() {
        if (w == "major" || w == "minor")
            && i > 0
            && claims.key.is_none()
            && let Some(k) = Key::parse(&words[i - 1], w)
        {
            claims.key = Some(k);
        }
        if claims.meter.is_none() {
            if let Some(m) =
                Meter::parse(w).filter(|_| words.get(i + 1).is_some_and(|n| n == "time"))
            {
                claims.meter = Some(m);
            } else if let Some((_, (num, den))) = METER_WORDS.iter().find(|(t, _)| t == w) {
                claims.meter = Some(Meter {
                    num: *num,
                    den: *den,
                });
            } else if w == "cut" && words.get(i + 1).is_some_and(|n| n == "time") {
                claims.meter = Some(Meter { num: 2, den: 2 });
            }
        }
    }
    let joined = format!(" {} ", words.join(" "));
    claims.tune_type = TuneType::WORDS
        .iter()
        .find(|(word, _)| joined.contains(&format!(" {word} ")))
        .map(|(_, t)| *t);
    claims
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_key_meter_and_type_from_generated_caption_shapes() {
        let c = claims_of("A lively Irish jig in D major, in six-eight played on fiddle");
        assert_eq!(
            c.key,
            Some(Key {
                tonic: 2,
                minor: false
            })
        );
        assert_eq!(c.meter, Some(Meter { num: 6, den: 8 }));
        assert_eq!(c.tune_type, Some(TuneType::Jig));

        let c = claims_of("Flute solo, a slip jig, in 9/8 time, in Bb minor");
        assert_eq!(
            c.key,
            Some(Key {
                tonic: 10,
                minor: true
            })
        );
        assert_eq!(c.meter, Some(Meter { num: 9, den: 8 }));
        assert_eq!(c.tune_type, Some(TuneType::SlipJig));

        let c = claims_of("On harp: a folk tune in cut time from James Aird's selection");
        assert_eq!(c.key, None);
        assert_eq!(c.meter, Some(Meter { num: 2, den: 2 }));
        assert_eq!(c.tune_type, None, "Aird's is not an air");
        assert!(!claims_of("a slow tune for solo organ").any());
    }

    #[test]
    fn meters_know_their_bars_and_beats() {
        let m = |s: &str| Meter::parse(s).expect("a meter");
        assert_eq!(
            (m("6/8").bar_twelfths(), m("6/8").beat_twelfths()),
            (36, 18)
        );
        assert_eq!(
            (m("3/4").bar_twelfths(), m("3/4").beat_twelfths()),
            (36, 12)
        );
        assert_eq!(m("2/2").bar_twelfths(), 48);
        assert_eq!(m("9/8").bar_twelfths(), 54);
        assert!(Meter::parse("7/3").is_none() && Meter::parse("x/4").is_none());
        assert!(Meter::parse("1/32").is_none());
        assert_eq!(
            Key::parse("G", "major").map(|k| k.relative()),
            Key::parse("E", "minor")
        );
    }
}
