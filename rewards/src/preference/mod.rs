//! User preference: the simulated listener population that fills the preference store in
//! the embedded default (simplified stand-ins for the paper's users, named as such), its
//! choices, ceilings and verdicts here; the Bradley–Terry reward model trained on the
//! choices in [`model`].
//!
//! **Preference store** (`musicrl preferences simulate` writes one): the JSONL format of
//! [`musicrl_prefdb::jsonl`], one choice a line; `musicrl preferences import` moves it into the
//! preference database, where the feedback service's votes are.
//!
//! **Simulated listeners.** Each listener has a **single-peaked** taste over nine musical
//! qualities of a melody that are neither text adherence nor audio quality
//! ([`taste_features`]): pitch range, stepwise motion, note density, register, bar-to-bar
//! repetition, ending on the opening pitch class, rhythmic variety, whether the tune is
//! finished (END) and whether it has bars. For each quality a listener has an ideal amount and
//! an importance, and likes a melody less the further it is from the ideal, in tolerances
//! ([`TOLERANCE`]): u = −Σ importance · ((f − ideal) / tolerance)². Ideals are drawn around the
//! typical corpus tune ([`MEAN_IDEAL`], its median qualities), so no extreme (a one-pitch
//! drone, a tune that never ends) wins; every listener wants a finished tune with bars. A
//! listener prefers A with probability σ((u(A) − u(B)) / temperature); the temperature keeps
//! the ceiling of agreement modest, as with real users.
//!
//! **Their own caption.** The paper's users typed a prompt and chose between two clips of it,
//! so what they asked for counts a little in their choice. A listener also reads the key and
//! meter (or tune type) their caption states off the score ([`caption_fit`]: the
//! Krumhansl–Schmuckler key of the notes and the modal bar length, not what any reward model
//! or the judge hears) and adds `caption_weight · fit` to the clip's utility. The weight is
//! calibrated (`musicrl preferences calibrate`, [`calibrate_caption_weight`]) so that our text
//! reward agrees with the listeners' choices as often as MuLan agreed with the paper's users
//! ([`PAPER_TEXT_AGREEMENT`]); populations drawn before 2026-12-07 have no caption weight and
//! ignore the caption.

pub mod audio;
pub mod model;

use std::path::Path;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use musicrl_music::tokens::{self, Event};

use crate::error::{Error, Result};
use crate::theory::claims_of;

/// How often the paper's MuLan text-adherence score picked the clip its users chose
/// (Cideron et al. 2024, section 5.2): the calibration target of the caption weight.
pub const PAPER_TEXT_AGREEMENT: f64 = 0.516;
/// How often the paper's quality (MOS) score picked the clip its users chose.
pub const PAPER_QUALITY_AGREEMENT: f64 = 0.533;
/// The paper's user-preference model's accuracy on held-out pairs.
pub const PAPER_PREFERENCE_ACCURACY: f64 = 0.60;

/// The caption weight (the scale of [`Population::new`]) of the shipped population
/// (`models/rewards/preference/population.json`), found by `musicrl preferences calibrate`:
/// what `simulate` gives a new population unless told otherwise (a test keeps `simulate`'s
/// defaults drawing the shipped population).
pub const CALIBRATED_CAPTION_WEIGHT: f32 = 4.4153;
/// The shipped population's calibrated temperature (choice noise), `simulate`'s default.
pub const CALIBRATED_TEMPERATURE: f32 = 3.0811;

/// How well a clip gives what its caption asks for, as a listener reads it off the score:
/// the mean over what the caption states of **key** (1 when the notes' Krumhansl–Schmuckler
/// key, [`musicrl_music::export::key_of`], is the stated one; 0.5 for the same tonic or the
/// relative key, which share a tonic or a signature; else 0) and **meter** (1 when the modal
/// interior bar, [`musicrl_music::export::modal_bar`], has the stated meter's length, or one
/// of the stated tune type's customary lengths; else 0). `None` when the caption states
/// neither, so the caption cannot sway the choice.
pub fn caption_fit(caption: &str, tokens_: &[u32]) -> Option<f32> {
    let claims = claims_of(caption);
    let events = tokens::decode(tokens_).events;
    let mut parts: Vec<f32> = Vec::new();
    if let Some(want) = claims.key {
        parts.push(match musicrl_music::export::key_of(&events) {
            Some(k) if k.tonic == want.tonic && k.minor == want.minor => 1.0,
            Some(k) => {
                // The relative key shares the signature: minor tonic = major tonic + 9.
                let relative = |major: u8, minor: u8| (major + 9) % 12 == minor;
                let related = k.tonic == want.tonic
                    || (!k.minor && want.minor && relative(k.tonic, want.tonic))
                    || (k.minor && !want.minor && relative(want.tonic, k.tonic));
                if related { 0.5 } else { 0.0 }
            }
            None => 0.0,
        });
    }
    let bars: Vec<f32> = match claims.bar {
        Some(b) => vec![b],
        None => claims.type_bars.clone(),
    };
    if !bars.is_empty() {
        let heard = musicrl_music::export::modal_bar(&events).map(|t| t as f32 / 12.0);
        parts.push(f32::from(
            heard.is_some_and(|h| bars.iter().any(|b| (b - h).abs() < 1e-3)),
        ));
    }
    (!parts.is_empty()).then(|| parts.iter().sum::<f32>() / parts.len() as f32)
}

/// What a listener takes from one clip of their caption: its taste features and its caption
/// fit (0 when the caption states nothing it could be checked against).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heard {
    pub taste: [f32; TASTE_DIM],
    pub fit: f32,
}

impl Heard {
    pub fn of(caption: &str, tokens_: &[u32]) -> Self {
        Self {
            taste: taste_features(tokens_),
            fit: caption_fit(caption, tokens_).unwrap_or(0.0),
        }
    }
}

/// Number of taste features.
pub const TASTE_DIM: usize = 9;

/// Names of [`taste_features`], in order.
pub const TASTE_NAMES: [&str; TASTE_DIM] = [
    "range", "steps", "density", "register", "repeats", "closure", "variety", "finished", "barred",
];

/// The qualities listeners care about, each roughly in [0, 1] for real tunes: range (span /
/// 24 semitones), steps (share of intervals of at most 2 semitones), density (notes a quarter
/// / 4, at most 1.5), register ((mean pitch − 60) / 24), repeats (share of bars whose first
/// three pitches repeat an earlier bar's), closure (1 when the last note has the first note's
/// pitch class), variety (distinct durations / 5), finished (1 when the tokens contain END),
/// barred (bar lines / 4, at most 1). Fewer than two notes: all zeros.
pub fn taste_features(tokens_: &[u32]) -> [f32; TASTE_DIM] {
    let decoded = tokens::decode(tokens_);
    let notes: Vec<(u8, u16)> = decoded
        .notes()
        .filter_map(|(p, d)| p.map(|p| (p, d)))
        .collect();
    if notes.len() < 2 {
        return [0.0; TASTE_DIM];
    }
    let pitches: Vec<i32> = notes.iter().map(|n| i32::from(n.0)).collect();
    let (lo, hi) = (
        pitches.iter().min().copied().unwrap_or(0),
        pitches.iter().max().copied().unwrap_or(0),
    );
    let range = (hi - lo) as f32 / 24.0;
    let steps = pitches
        .windows(2)
        .filter(|w| (w[1] - w[0]).abs() <= 2)
        .count() as f32
        / (pitches.len() - 1) as f32;
    let quarters = decoded.quarters().max(0.25) as f32;
    let density = (notes.len() as f32 / quarters / 4.0).min(1.5);
    let register = ((pitches.iter().sum::<i32>() as f32 / pitches.len() as f32) - 60.0) / 24.0;
    // Bars as pitch sequences; the share that repeat an earlier bar's first three pitches.
    let mut bars: Vec<Vec<u8>> = vec![Vec::new()];
    for e in &decoded.events {
        match e {
            Event::Bar => bars.push(Vec::new()),
            Event::Note { pitch: Some(p), .. } => bars.last_mut().expect("one bar").push(*p),
            Event::Note { pitch: None, .. } => {}
        }
    }
    let heads: Vec<&[u8]> = bars
        .iter()
        .filter(|b| b.len() >= 3)
        .map(|b| &b[..3])
        .collect();
    let repeats = heads
        .iter()
        .enumerate()
        .filter(|(i, h)| heads[..*i].contains(h))
        .count() as f32
        / heads.len().max(1) as f32;
    let closure = f32::from(pitches[0].rem_euclid(12) == pitches[pitches.len() - 1].rem_euclid(12));
    let mut durations: Vec<u16> = notes.iter().map(|n| n.1).collect();
    durations.sort_unstable();
    durations.dedup();
    let variety = (durations.len() as f32 / 5.0).min(1.0);
    let finished = f32::from(tokens_.contains(&tokens::END));
    let bar_lines = decoded.events.iter().filter(|e| **e == Event::Bar).count();
    let barred = (bar_lines as f32 / 4.0).min(1.0);
    [
        range, steps, density, register, repeats, closure, variety, finished, barred,
    ]
}

/// The typical tune's qualities: the medians of [`taste_features`] (the mean for closure,
/// which is 0 or 1) over the corpus's test-split tunes cut to 128 tokens with END, measured
/// by `typical_taste_of_the_corpus`, which keeps them true; every listener's ideal is drawn
/// around these. (The training split's medians differ by at most 0.016; the shipped population
/// was drawn around these, so they stay until it is next regenerated.)
pub const MEAN_IDEAL: [f32; TASTE_DIM] = [0.583, 0.686, 0.385, 0.415, 0.25, 0.268, 0.8, 1.0, 1.0];

/// How far from the ideal a quality can be before a melody is clearly worse.
pub const TOLERANCE: [f32; TASTE_DIM] = [0.2, 0.15, 0.2, 0.15, 0.25, 0.6, 0.25, 0.3, 0.3];

/// The average listener's importance of each quality.
pub const IMPORTANCE: [f32; TASTE_DIM] = [1.0, 1.5, 1.0, 0.6, 1.0, 0.5, 0.8, 1.0, 1.0];

/// The simulated listener population.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Population {
    /// Per-listener ideal amount of each of [`taste_features`].
    pub ideals: Vec<[f32; TASTE_DIM]>,
    /// Per-listener importance of each quality (> 0).
    pub importance: Vec<[f32; TASTE_DIM]>,
    pub temperature: f32,
    /// Per-listener weight of their own caption: a clip's utility gains `weight ·`
    /// [`caption_fit`]. Empty (populations drawn before 2026-12-07): the caption is ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caption_weight: Vec<f32>,
}

impl Population {
    /// `listeners` listeners: ideal = MEAN_IDEAL + spread · TOLERANCE · N(0, 1) per quality
    /// (finished and barred stay at 1: nobody wants an unfinished tune without bars), and
    /// importance = IMPORTANCE · exp(0.3 · N(0, 1)); caption weight = `caption_weight` ·
    /// exp(0.3 · N(0, 1)), drawn from a stream of its own so that the tastes of a seed do not
    /// depend on it.
    pub fn new(
        listeners: usize,
        spread: f32,
        temperature: f32,
        caption_weight: f32,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut ideals, mut importance) = (Vec::new(), Vec::new());
        for _ in 0..listeners {
            let mut ideal = MEAN_IDEAL;
            let mut imp = IMPORTANCE;
            for k in 0..TASTE_DIM {
                if k < 7 {
                    ideal[k] += spread * TOLERANCE[k] * normal(&mut rng);
                }
                imp[k] *= (0.3 * normal(&mut rng)).exp();
            }
            ideals.push(ideal);
            importance.push(imp);
        }
        let mut caption_rng = StdRng::seed_from_u64(seed ^ 0xCA57_10F1_7000_0000);
        let caption_weight = (0..listeners)
            .map(|_| caption_weight * (0.3 * normal(&mut caption_rng)).exp())
            .collect();
        Self {
            ideals,
            importance,
            temperature,
            caption_weight,
        }
    }

    /// The mean caption weight over the listeners (0 for a population that ignores captions).
    pub fn mean_caption_weight(&self) -> f32 {
        if self.caption_weight.is_empty() {
            0.0
        } else {
            self.caption_weight.iter().sum::<f32>() / self.caption_weight.len() as f32
        }
    }

    pub fn listeners(&self) -> usize {
        self.ideals.len()
    }

    /// At least one listener, finite ideals, importances > 0 and a temperature > 0.
    pub fn validate(&self) -> Result<()> {
        match self.problem() {
            Some(p) => Err(Error::Data(p)),
            None => Ok(()),
        }
    }

    fn problem(&self) -> Option<String> {
        if self.ideals.is_empty() {
            return Some("the population needs at least one listener".into());
        }
        if self.ideals.len() != self.importance.len() {
            return Some(format!(
                "{} listeners' ideals but {} listeners' importances",
                self.ideals.len(),
                self.importance.len()
            ));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Some(format!(
                "the population's temperature must be a finite number > 0, not {}",
                self.temperature
            ));
        }
        if !self.caption_weight.is_empty() && self.caption_weight.len() != self.ideals.len() {
            return Some(format!(
                "{} listeners' ideals but {} listeners' caption weights",
                self.ideals.len(),
                self.caption_weight.len()
            ));
        }
        if let Some(l) = self
            .caption_weight
            .iter()
            .position(|w| !(w.is_finite() && *w >= 0.0))
        {
            return Some(format!(
                "listener {l} has a caption weight that is not a finite number ≥ 0"
            ));
        }
        if let Some(l) = self
            .ideals
            .iter()
            .position(|w| w.iter().any(|x| !x.is_finite()))
        {
            return Some(format!("listener {l} has an ideal that is not finite"));
        }
        self.importance
            .iter()
            .position(|w| w.iter().any(|x| !(x.is_finite() && *x > 0.0)))
            .map(|l| format!("listener {l} has an importance that is not a finite number > 0"))
    }

    /// Reads and validates a `population.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let p: Self = serde_json::from_str(&text).map_err(|e| {
            let hint = if text.contains("\"weights\"") {
                " (this is the linear-taste population of before 2026-12-01: simulate a new store)"
            } else {
                ""
            };
            Error::Data(format!("{}: {e}{hint}", path.display()))
        })?;
        match p.problem() {
            Some(problem) => Err(Error::Data(format!("{}: {problem}", path.display()))),
            None => Ok(p),
        }
    }

    /// The population's shared taste as a one-listener population (with the mean caption
    /// weight).
    pub fn shared(&self) -> Self {
        Self {
            ideals: vec![MEAN_IDEAL],
            importance: vec![IMPORTANCE],
            temperature: self.temperature,
            caption_weight: if self.caption_weight.is_empty() {
                Vec::new()
            } else {
                vec![self.mean_caption_weight()]
            },
        }
    }

    /// Listener `listener`'s utility: −Σ importance · ((f − ideal) / tolerance)².
    pub fn utility(&self, listener: usize, features: &[f32; TASTE_DIM]) -> f32 {
        -(0..TASTE_DIM)
            .map(|k| {
                self.importance[listener][k]
                    * ((features[k] - self.ideals[listener][k]) / TOLERANCE[k]).powi(2)
            })
            .sum::<f32>()
    }

    /// Listener `listener`'s utility of a clip of their caption: the taste's utility plus
    /// their caption weight times the clip's caption fit.
    pub fn value(&self, listener: usize, heard: &Heard) -> f32 {
        let w = self.caption_weight.get(listener).copied().unwrap_or(0.0);
        self.utility(listener, &heard.taste) + w * heard.fit
    }

    /// The probability that `listener` picks A over B, both clips of the same caption.
    pub fn p_heard(&self, listener: usize, a: &Heard, b: &Heard) -> f32 {
        let d = self.value(listener, a) - self.value(listener, b);
        1.0 / (1.0 + (-d / self.temperature).exp())
    }

    /// The probability that `listener`, who asked for `caption`, picks A over B.
    pub fn p_a(&self, listener: usize, caption: &str, a: &[u32], b: &[u32]) -> f32 {
        self.p_heard(listener, &Heard::of(caption, a), &Heard::of(caption, b))
    }
}

fn normal(rng: &mut StdRng) -> f32 {
    // Box–Muller.
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// The preference store's choices and JSONL format live in the preference database crate,
/// which the feedback service, the simulator and the reward trainer share.
pub use musicrl_prefdb::jsonl::{Choice, append_store, read_store};

/// The simulated listeners' choices between pairs of clips for the same caption:
/// `pairs[i] = (caption, a, b)`; each pair is judged by a random listener.
pub fn simulate_choices(
    population: &Population,
    pairs: &[(String, Vec<u32>, Vec<u32>)],
    when: u64,
    seed: u64,
) -> Vec<Choice> {
    let mut rng = StdRng::seed_from_u64(seed);
    pairs
        .iter()
        .map(|(caption, a, b)| {
            let listener = rng.random_range(0..population.listeners());
            let pick_a = rng.random::<f32>() < population.p_a(listener, caption, a, b);
            Choice {
                caption: caption.clone(),
                a: a.clone(),
                b: b.clone(),
                choice: if pick_a { "a" } else { "b" }.into(),
                who: format!("listener-{listener}"),
                when,
                codebooks: None,
            }
        })
        .collect()
}

/// The best agreement any predictor could reach on `choices`: each choice's probability under
/// the listener who made it, max(p, 1 − p), averaged (knowing the listener and their taste);
/// and the same for a predictor that knows only the population's mean taste.
pub fn ceilings(population: &Population, choices: &[Choice]) -> (f64, f64) {
    let mean = population.shared();
    let (mut own, mut shared) = (0.0f64, 0.0f64);
    for c in choices {
        let who = c.listener().unwrap_or(0).min(population.listeners() - 1);
        let p = f64::from(population.p_a(who, &c.caption, &c.a, &c.b));
        own += p.max(1.0 - p);
        // The mean-taste predictor picks the side the average listener prefers; it is right
        // with the probability that this listener picks that side.
        let pick_a = mean.p_a(0, &c.caption, &c.a, &c.b) >= 0.5;
        shared += if pick_a { p } else { 1.0 - p };
    }
    let n = choices.len().max(1) as f64;
    (own / n, shared / n)
}

/// The population's side-by-side verdict on clips `a` (the judged policy's) against clips `b`
/// (the baseline's): see [`judge`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub pairs: usize,
    /// Pairs in which the listener chose `a`.
    pub wins: usize,
    /// wins / pairs (the listeners never tie).
    pub win_rate: f64,
    /// Standard error of the win rate over prompts: pairs of one prompt are not independent,
    /// so the per-prompt win shares are the samples (NaN with a single prompt).
    pub standard_error: f64,
    /// The mean probability that the listener chooses `a` (the win rate without choice noise).
    pub expected_win_rate: f64,
    /// Mean utility of the `a` and `b` clips under the shared taste.
    pub shared_taste_utility_a: f64,
    pub shared_taste_utility_b: f64,
}

/// Each pair judged by a random listener; `pairs` holds `per_prompt` consecutive pairs for each
/// prompt. The simulated listeners have no position bias, so `a` need not be shuffled.
pub fn judge(
    population: &Population,
    pairs: &[(String, Vec<u32>, Vec<u32>)],
    per_prompt: usize,
    seed: u64,
) -> Verdict {
    let choices = simulate_choices(population, pairs, 0, seed);
    let n = choices.len().max(1) as f64;
    let wins = choices.iter().filter(|c| c.choice == "a").count();
    let expected = choices
        .iter()
        .map(|c| f64::from(population.p_a(c.listener().unwrap_or(0), &c.caption, &c.a, &c.b)))
        .sum::<f64>()
        / n;
    let shares: Vec<f64> = choices
        .chunks(per_prompt.max(1))
        .map(|g| g.iter().filter(|c| c.choice == "a").count() as f64 / g.len() as f64)
        .collect();
    let k = shares.len() as f64;
    let mean = shares.iter().sum::<f64>() / k.max(1.0);
    let standard_error = if shares.len() > 1 {
        (shares.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1.0) / k).sqrt()
    } else {
        f64::NAN
    };
    let shared = population.shared();
    let utility = |pick: fn(&(String, Vec<u32>, Vec<u32>)) -> &Vec<u32>| {
        pairs
            .iter()
            .map(|p| f64::from(shared.utility(0, &taste_features(pick(p)))))
            .sum::<f64>()
            / n
    };
    Verdict {
        pairs: choices.len(),
        wins,
        win_rate: wins as f64 / n,
        standard_error,
        expected_win_rate: expected,
        shared_taste_utility_a: utility(|p| &p.1),
        shared_taste_utility_b: utility(|p| &p.2),
    }
}

/// A pair of clips of one caption with the text and quality rewards' scores of each: what the
/// listeners are calibrated against (`calibration.jsonl` beside a calibrated population).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoredPair {
    pub caption: String,
    pub a: Vec<u32>,
    pub b: Vec<u32>,
    /// The text reward's scores of a and b.
    pub text: [f32; 2],
    /// The quality reward's scores of a and b.
    pub quality: [f32; 2],
}

/// Writes scored pairs as JSON Lines.
pub fn write_scored_pairs(path: &Path, pairs: &[ScoredPair]) -> Result<()> {
    let mut text = String::new();
    for p in pairs {
        text.push_str(&serde_json::to_string(p).map_err(|e| Error::Data(e.to_string()))?);
        text.push('\n');
    }
    musicrl_config::fsutil::write_atomic(path, text.as_bytes())
        .map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

/// Reads scored pairs; a line that is not a pair of valid token sequences with finite scores
/// is refused with its line number.
pub fn read_scored_pairs(path: &Path) -> Result<Vec<ScoredPair>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = format!("{}:{}", path.display(), i + 1);
        let p: ScoredPair =
            serde_json::from_str(line).map_err(|e| Error::Data(format!("{at}: {e}")))?;
        if let Some(t) =
            p.a.iter()
                .chain(&p.b)
                .find(|&&t| t as usize >= tokens::VOCAB_SIZE)
        {
            return Err(Error::Data(format!(
                "{at}: token {t} is outside the vocabulary of {}",
                tokens::VOCAB_SIZE
            )));
        }
        if p.text.iter().chain(&p.quality).any(|x| !x.is_finite()) {
            return Err(Error::Data(format!("{at}: a score is not finite")));
        }
        out.push(p);
    }
    Ok(out)
}

/// The share of pairs in which the listeners choose the clip a score prefers, in expectation:
/// each pair's probability that the chosen clip is the higher-scored one, averaged over every
/// listener (no choice noise, no draw of who judges), then over the pairs; a tie counts ½.
pub fn expected_agreement(
    population: &Population,
    heard: &[(Heard, Heard)],
    scores: &[[f32; 2]],
) -> f64 {
    let listeners = population.listeners();
    let mut total = 0.0f64;
    for ((a, b), s) in heard.iter().zip(scores) {
        if s[0] == s[1] {
            total += 0.5;
            continue;
        }
        let p_a = (0..listeners)
            .map(|l| f64::from(population.p_heard(l, a, b)))
            .sum::<f64>()
            / listeners as f64;
        total += if s[0] > s[1] { p_a } else { 1.0 - p_a };
    }
    total / heard.len().max(1) as f64
}

/// The shared-taste ceiling a calibrated population aims at: the paper's preference model
/// reached [`PAPER_PREFERENCE_ACCURACY`], and ours stays under the ceiling of agreement of the
/// shared taste by a margin that grows with the choice noise (docs/rewards.md: 0.610 under a
/// ceiling of 0.665, 0.574 under 0.654 with noisier listeners), so a population whose shared
/// taste agrees with its choices 0.675 of the time aims the model at about 0.60.
pub const TARGET_SHARED_CEILING: f64 = 0.675;

/// What calibration found: the caption weight and the population's statistics on the
/// calibration pairs (expected agreements, see [`expected_agreement`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub pairs: usize,
    pub caption_weight: f32,
    pub temperature: f32,
    pub text_agreement: f64,
    pub text_target: f64,
    pub quality_agreement: f64,
    pub quality_target: f64,
    /// Agreement of the shared taste (with the mean caption weight): the best a preference
    /// model that does not know who chose can expect; the paper's model reached
    /// [`PAPER_PREFERENCE_ACCURACY`].
    pub shared_taste_ceiling: f64,
    pub preference_target: f64,
    /// The shared-taste ceiling the temperature was calibrated to (None: a given temperature).
    pub shared_ceiling_target: Option<f64>,
    /// The text agreement with captions ignored (caption weight 0).
    pub text_agreement_without_caption: f64,
    /// Whether the target lies within the weights tried (0 to [`MAX_CAPTION_WEIGHT`]).
    pub reached: bool,
}

/// The largest caption weight calibration tries: at 64 the caption outweighs every taste.
pub const MAX_CAPTION_WEIGHT: f32 = 64.0;

/// Draws the population of `listeners`, `spread`, `temperature` and `seed`, and bisects its
/// caption weight until the text reward's expected agreement with the listeners on `pairs`
/// is `target` (weight 0 when it is reached without the caption, [`MAX_CAPTION_WEIGHT`]
/// when it cannot be). The text agreement rises with the weight as far as the text reward and
/// the listeners' caption fit agree; the bisection assumes it does not fall.
pub fn calibrate_caption_weight(
    listeners: usize,
    spread: f32,
    temperature: f32,
    seed: u64,
    pairs: &[ScoredPair],
    target: f64,
) -> (Population, Calibration) {
    let heard: Vec<(Heard, Heard)> = pairs
        .iter()
        .map(|p| (Heard::of(&p.caption, &p.a), Heard::of(&p.caption, &p.b)))
        .collect();
    let text: Vec<[f32; 2]> = pairs.iter().map(|p| p.text).collect();
    let quality: Vec<[f32; 2]> = pairs.iter().map(|p| p.quality).collect();
    let at = |w: f32| Population::new(listeners, spread, temperature, w, seed);
    let agreement = |w: f32| expected_agreement(&at(w), &heard, &text);
    let without = agreement(0.0);
    let (weight, reached) = if without >= target {
        (0.0, true)
    } else if agreement(MAX_CAPTION_WEIGHT) < target {
        (MAX_CAPTION_WEIGHT, false)
    } else {
        let (mut lo, mut hi) = (0.0f32, MAX_CAPTION_WEIGHT);
        for _ in 0..24 {
            let mid = 0.5 * (lo + hi);
            if agreement(mid) < target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        (0.5 * (lo + hi), true)
    };
    let population = at(weight);
    let shared = population.shared();
    let shared_side: Vec<[f32; 2]> = heard
        .iter()
        .map(|(a, b)| [shared.value(0, a), shared.value(0, b)])
        .collect();
    let calibration = Calibration {
        pairs: pairs.len(),
        caption_weight: weight,
        temperature,
        text_agreement: expected_agreement(&population, &heard, &text),
        text_target: target,
        quality_agreement: expected_agreement(&population, &heard, &quality),
        quality_target: PAPER_QUALITY_AGREEMENT,
        shared_taste_ceiling: expected_agreement(&population, &heard, &shared_side),
        preference_target: PAPER_PREFERENCE_ACCURACY,
        shared_ceiling_target: None,
        text_agreement_without_caption: without,
        reached,
    };
    (population, calibration)
}

/// [`calibrate_caption_weight`] with the temperature calibrated too: the choice noise at
/// which the shared taste (with its calibrated caption weight) agrees with the listeners'
/// choices on `pairs` `target_ceiling` of the time, bisected over temperatures 0.25 to 16 (the
/// ceiling falls as the noise rises).
pub fn calibrate_population(
    listeners: usize,
    spread: f32,
    seed: u64,
    pairs: &[ScoredPair],
    target_text: f64,
    target_ceiling: f64,
) -> (Population, Calibration) {
    let at = |t: f32| calibrate_caption_weight(listeners, spread, t, seed, pairs, target_text);
    let (mut lo, mut hi) = (0.25f32, 16.0f32);
    for _ in 0..20 {
        let mid = (lo * hi).sqrt();
        if at(mid).1.shared_taste_ceiling > target_ceiling {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let (population, mut calibration) = at((lo * hi).sqrt());
    calibration.shared_ceiling_target = Some(target_ceiling);
    (population, calibration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use musicrl_music::tokens::encode;

    fn melody(pitches: &[u8], twelfths: u16, bar_every: usize) -> Vec<u32> {
        let mut events = Vec::new();
        for (i, &p) in pitches.iter().enumerate() {
            if i > 0 && i % bar_every == 0 {
                events.push(Event::Bar);
            }
            events.push(Event::Note {
                pitch: Some(p),
                twelfths,
            });
        }
        let mut t = encode(&events);
        t.push(tokens::END);
        t
    }

    #[test]
    fn taste_features_of_hand_made_melodies() {
        // C D E F | C D E F | C: range 5/24, all steps but the two leaps F→C (5 of 8 steps ≤ 2
        // semitones … 6 of 8), eighths: 2 notes a quarter → density 0.5, repeats 1 of 2 bar heads.
        let t = melody(&[60, 62, 64, 65, 60, 62, 64, 65, 60], 6, 4);
        let f = taste_features(&t);
        assert!((f[0] - 5.0 / 24.0).abs() < 1e-6, "{f:?}");
        assert!((f[1] - 6.0 / 8.0).abs() < 1e-6, "{f:?}");
        assert!((f[2] - 0.5).abs() < 1e-6, "{f:?}");
        assert!((f[4] - 0.5).abs() < 1e-6, "{f:?}");
        assert_eq!(f[5], 1.0);
        assert!((f[6] - 0.2).abs() < 1e-6);
        // Finished (END), two bar lines of four.
        assert_eq!((f[7], f[8]), (1.0, 0.5));
        assert_eq!(taste_features(&[tokens::END]), [0.0; TASTE_DIM]);
    }

    #[test]
    fn taste_is_single_peaked() {
        let one = Population {
            ideals: vec![MEAN_IDEAL],
            importance: vec![IMPORTANCE],
            temperature: 1.0,
            caption_weight: Vec::new(),
        };
        assert_eq!(one.utility(0, &MEAN_IDEAL), 0.0);
        for k in 0..TASTE_DIM {
            let (mut more, mut less, mut far) = (MEAN_IDEAL, MEAN_IDEAL, MEAN_IDEAL);
            more[k] += TOLERANCE[k];
            less[k] -= TOLERANCE[k];
            far[k] += 3.0 * TOLERANCE[k];
            let (u_more, u_less, u_far) = (
                one.utility(0, &more),
                one.utility(0, &less),
                one.utility(0, &far),
            );
            // One tolerance away costs the quality's importance, either way; further, more.
            assert!((u_more + IMPORTANCE[k]).abs() < 1e-4, "{k}: {u_more}");
            assert!((u_more - u_less).abs() < 1e-4 && u_far < u_more, "{k}");
        }
    }

    #[test]
    fn a_drone_loses_to_real_tunes_for_nearly_every_listener() {
        // One pitch repeated, no bars, no END: what the linear taste rewarded.
        let drone: Vec<u32> = std::iter::repeat_n([32u32, 53], 64).flatten().collect();
        let tunes = musicrl_music::corpus::load(&musicrl_music::corpus::repo_path())
            .expect("the corpus loads");
        let clips: Vec<Vec<u32>> = tunes
            .iter()
            .filter(|t| t.split == musicrl_music::corpus::Split::Test)
            .take(100)
            .map(|t| {
                let mut c = tokens::clip(&encode(&t.events), 127).to_vec();
                c.push(tokens::END);
                c
            })
            .collect();
        let population = Population::new(200, 1.0, 1.0, 0.0, 9);
        let (mut tune_better, mut n) = (0usize, 0usize);
        for l in 0..population.listeners() {
            let u_drone = population.utility(l, &taste_features(&drone));
            for c in &clips {
                tune_better += usize::from(population.utility(l, &taste_features(c)) > u_drone);
                n += 1;
            }
        }
        let share = tune_better as f64 / n as f64;
        assert!(
            share > 0.99,
            "real tunes beat the drone in {share:.4} of listener × tune pairs"
        );
    }

    #[test]
    fn typical_taste_of_the_corpus() {
        let tunes = musicrl_music::corpus::load(&musicrl_music::corpus::repo_path())
            .expect("the corpus loads");
        let feats: Vec<[f32; TASTE_DIM]> = tunes
            .iter()
            .filter(|t| t.split == musicrl_music::corpus::Split::Test)
            .map(|t| {
                let mut c = tokens::clip(&encode(&t.events), 127).to_vec();
                c.push(tokens::END);
                taste_features(&c)
            })
            .collect();
        // Medians; the mean for closure, which is 0 or 1.
        let mut medians = [0.0f32; TASTE_DIM];
        for k in 0..TASTE_DIM {
            let mut v: Vec<f32> = feats.iter().map(|f| f[k]).collect();
            v.sort_by(f32::total_cmp);
            medians[k] = if TASTE_NAMES[k] == "closure" {
                v.iter().sum::<f32>() / v.len() as f32
            } else {
                v[v.len() / 2]
            };
        }
        eprintln!("medians {medians:?}");
        for k in 0..TASTE_DIM {
            assert!(
                (medians[k] - MEAN_IDEAL[k]).abs() < 0.01,
                "{}: corpus median {}, MEAN_IDEAL {}",
                TASTE_NAMES[k],
                medians[k],
                MEAN_IDEAL[k]
            );
        }
    }

    #[test]
    fn an_unambiguous_pair_is_chosen_the_way_the_shared_taste_says() {
        // Stepwise, repetitive, closed vs leaping, never repeating, open.
        let nice = melody(&[60, 62, 64, 62, 60, 62, 64, 62, 60], 12, 4);
        let harsh = melody(&[48, 79, 50, 90, 53, 85, 49, 94, 61], 3, 4);
        let population = Population::new(50, 0.3, 1.0, 0.0, 1);
        let agree = (0..50)
            .filter(|&l| population.p_a(l, "c", &nice, &harsh) > 0.9)
            .count();
        assert!(
            agree >= 45,
            "{agree} of 50 listeners clearly prefer the smooth melody"
        );
        let choices = simulate_choices(
            &population,
            &vec![("c".to_string(), nice.clone(), harsh.clone()); 200],
            0,
            3,
        );
        let won = choices.iter().filter(|c| c.choice == "a").count();
        assert!(won > 180, "{won}");
        let (own, shared) = ceilings(&population, &choices);
        assert!(own > 0.9 && shared > 0.9 && own >= shared - 1e-9);
    }

    #[test]
    fn judge_counts_wins_for_the_side_the_taste_prefers() {
        let nice = melody(&[60, 62, 64, 62, 60, 62, 64, 62, 60], 12, 4);
        let harsh = melody(&[48, 79, 50, 90, 53, 85, 49, 94, 61], 3, 4);
        let one = Population {
            ideals: vec![MEAN_IDEAL],
            importance: vec![IMPORTANCE],
            temperature: 0.05,
            caption_weight: Vec::new(),
        };
        // Three prompts of four pairs: a nice clip wins every pair of the first two prompts,
        // the third prompt has a harsh clip on the judged side.
        let mut pairs = vec![("c".to_string(), nice.clone(), harsh.clone()); 8];
        pairs.extend(vec![("c".to_string(), harsh.clone(), nice.clone()); 4]);
        let v = judge(&one, &pairs, 4, 7);
        assert_eq!((v.pairs, v.wins), (12, 8), "{v:?}");
        assert!((v.win_rate - 8.0 / 12.0).abs() < 1e-12);
        // Per-prompt shares 1, 1, 0: mean 2/3, sample variance 1/3, standard error 1/3.
        assert!((v.standard_error - 1.0 / 3.0).abs() < 1e-9, "{v:?}");
        assert!((v.expected_win_rate - 8.0 / 12.0).abs() < 1e-3, "{v:?}");
        let (u_nice, u_harsh) = (
            f64::from(one.utility(0, &taste_features(&nice))),
            f64::from(one.utility(0, &taste_features(&harsh))),
        );
        assert!(u_nice > u_harsh);
        let want_a = (8.0 * u_nice + 4.0 * u_harsh) / 12.0;
        assert!((v.shared_taste_utility_a - want_a).abs() < 1e-5, "{v:?}");
        assert!(v.shared_taste_utility_b < v.shared_taste_utility_a);
    }

    /// A tune in C major, six eighths a bar (a jig's bar, three quarters), transposed by
    /// `shift` semitones.
    fn c_major_jig(shift: i32) -> Vec<u32> {
        let pitches: Vec<u8> = [
            60, 64, 67, 64, 60, 62, 64, 65, 67, 65, 64, 62, 60, 64, 67, 72, 67, 64, 62, 65, 71, 67,
            62, 59, 60, 64, 67, 64, 60, 60,
        ]
        .iter()
        .map(|&p| (p + shift) as u8)
        .collect();
        melody(&pitches, 6, 6)
    }

    #[test]
    fn caption_fit_reads_the_stated_key_and_meter_off_the_score() {
        use musicrl_music::export::{key_of, modal_bar};
        let tune = c_major_jig(0);
        let events = tokens::decode(&tune).events;
        let key = key_of(&events).expect("notes");
        assert_eq!((key.tonic, key.minor), (0, false));
        assert_eq!(modal_bar(&events), Some(36));
        let fit = |caption: &str, t: &[u32]| caption_fit(caption, t);
        assert_eq!(fit("a jig in C major", &tune), Some(1.0));
        assert_eq!(
            fit("a folk tune in 6/8 time, played on harp", &tune),
            Some(1.0)
        );
        // Key right, meter wrong: ½.
        assert_eq!(fit("a reel in C major", &tune), Some(0.5));
        assert_eq!(fit("in C major, in four-four", &tune), Some(0.5));
        // The relative minor (A minor: same signature) and the tonic minor earn half the key.
        assert_eq!(fit("in A minor", &tune), Some(0.5));
        assert_eq!(fit("in C minor", &tune), Some(0.5));
        // A tritone away: nothing.
        assert_eq!(fit("in F# major", &tune), Some(0.0));
        let up = c_major_jig(6);
        assert_eq!(fit("in F# major", &up), Some(1.0));
        // A caption that states neither cannot sway a choice.
        assert_eq!(fit("a folk tune played on harp", &tune), None);
        assert_eq!(Heard::of("a folk tune played on harp", &tune).fit, 0.0);
        // A clip without notes gives nothing of what was asked.
        assert_eq!(fit("in C major", &[tokens::END]), Some(0.0));
    }

    #[test]
    fn the_caption_weight_moves_choices_toward_the_clip_that_fits() {
        // The same tune in C and a semitone up: nearly the same taste, only one in C major.
        let (c, d_flat) = (c_major_jig(0), c_major_jig(1));
        let deaf = Population::new(40, 1.0, 2.0, 0.0, 3);
        let hearing = Population::new(40, 1.0, 2.0, 4.0, 3);
        assert_eq!(
            deaf.ideals, hearing.ideals,
            "the weight does not move the tastes"
        );
        for l in 0..40 {
            let (p0, p1) = (
                deaf.p_a(l, "in C major", &c, &d_flat),
                hearing.p_a(l, "in C major", &c, &d_flat),
            );
            assert!(p1 > p0 + 0.1, "listener {l}: {p0} → {p1}");
            // Without a stated key or meter the caption weight changes nothing.
            assert_eq!(
                hearing.p_a(l, "a folk tune", &c, &d_flat),
                deaf.p_a(l, "a folk tune", &c, &d_flat)
            );
        }
        assert!((hearing.mean_caption_weight() - 4.0).abs() < 0.6);
        assert_eq!(deaf.shared().caption_weight.len(), 1);
    }

    #[test]
    fn expected_agreement_by_hand() {
        // One listener, temperature 1, utilities given by the caption fit alone: ideals at the
        // clips' taste so the taste term is 0 for both clips of a pair.
        let c = c_major_jig(0);
        let taste = taste_features(&c);
        let one = Population {
            ideals: vec![taste],
            importance: vec![IMPORTANCE],
            temperature: 1.0,
            caption_weight: vec![2.0],
        };
        let fits = Heard { taste, fit: 1.0 };
        let misses = Heard { taste, fit: 0.0 };
        // p(fits chosen) = σ(2) = 0.880797; the score prefers the fitting clip in the first
        // pair, the other in the second, and ties in the third: (0.880797 + 0.119203 + 0.5) / 3.
        let heard = vec![(fits, misses), (fits, misses), (fits, misses)];
        let scores = vec![[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]];
        let a = expected_agreement(&one, &heard, &scores);
        assert!((a - 0.5).abs() < 1e-6, "{a}");
        let a = expected_agreement(&one, &heard[..1], &scores[..1]);
        assert!((a - 0.880_797).abs() < 1e-5, "{a}");
    }

    #[test]
    fn calibration_finds_the_caption_weight_that_meets_the_target() {
        // Pairs of one tune in the stated key against it transposed (all through the octave);
        // a text score that always prefers the fitting clip. Agreement rises with the weight.
        let c = c_major_jig(0);
        let pairs: Vec<ScoredPair> = (1..12)
            .flat_map(|shift| {
                let other = c_major_jig(shift);
                [
                    ScoredPair {
                        caption: "in C major".into(),
                        a: c.clone(),
                        b: other.clone(),
                        text: [1.0, 0.0],
                        quality: [0.0, 0.0],
                    },
                    ScoredPair {
                        caption: "in C major".into(),
                        a: other,
                        b: c.clone(),
                        text: [0.0, 1.0],
                        quality: [0.0, 0.0],
                    },
                ]
            })
            .collect();
        let (population, cal) = calibrate_caption_weight(30, 1.0, 2.0, 7, &pairs, 0.6);
        assert!(cal.reached && cal.caption_weight > 0.0, "{cal:?}");
        assert!((cal.text_agreement - 0.6).abs() < 1e-3, "{cal:?}");
        assert!(cal.text_agreement_without_caption < 0.6, "{cal:?}");
        assert_eq!(cal.quality_agreement, 0.5, "ties count ½");
        assert!((population.mean_caption_weight() / cal.caption_weight - 1.0).abs() < 0.2);
        // A target already met without the caption keeps weight 0; one out of reach says so.
        let (_, low) = calibrate_caption_weight(30, 1.0, 2.0, 7, &pairs, 0.0);
        assert_eq!((low.caption_weight, low.reached), (0.0, true));
        let (_, high) = calibrate_caption_weight(30, 1.0, 2.0, 7, &pairs, 1.01);
        assert_eq!(
            (high.caption_weight, high.reached),
            (MAX_CAPTION_WEIGHT, false)
        );
        // The pairs round-trip through their file, and a bad token is refused by line.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("calibration.jsonl");
        write_scored_pairs(&path, &pairs).expect("writes");
        assert_eq!(read_scored_pairs(&path).expect("reads"), pairs);
        let mut bad = pairs[0].clone();
        bad.b.push(64);
        write_scored_pairs(&path, &[pairs[1].clone(), bad]).expect("writes");
        let err = read_scored_pairs(&path).unwrap_err().to_string();
        assert!(err.contains(":2") && err.contains("64"), "{err}");
    }

    #[test]
    fn a_broken_population_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("population.json");
        for (text, says) in [
            (
                r#"{"ideals": [], "importance": [], "temperature": 1.0}"#,
                "at least one listener",
            ),
            (
                r#"{"ideals": [[0,0,0,0,0,0,0,0,0]], "importance": [[1,1,1,1,1,1,1,1,1]], "temperature": 0.0}"#,
                "temperature",
            ),
            (
                r#"{"ideals": [[0,0,0,0,0,0,0,0,0]], "importance": [[1,1,1,1,0,1,1,1,1]], "temperature": 1.0}"#,
                "importance",
            ),
            (
                r#"{"ideals": [[0,0,0]], "importance": [[1,1,1]], "temperature": 1.0}"#,
                "population.json",
            ),
            (
                r#"{"weights": [[0,0,0,0,0,0,0]], "temperature": 0.25}"#,
                "linear-taste population",
            ),
            (
                r#"{"ideals": [[0,0,0,0,0,0,0,0,0]], "importance": [[1,1,1,1,1,1,1,1,1]], "temperature": 1.0, "caption_weight": [-1]}"#,
                "caption weight",
            ),
            (
                r#"{"ideals": [[0,0,0,0,0,0,0,0,0]], "importance": [[1,1,1,1,1,1,1,1,1]], "temperature": 1.0, "caption_weight": [1, 2]}"#,
                "caption weights",
            ),
        ] {
            std::fs::write(&path, text).expect("write");
            let err = Population::load(&path).unwrap_err().to_string();
            assert!(
                err.contains(says) && err.contains("population.json"),
                "{err}"
            );
        }
        std::fs::write(
            &path,
            serde_json::to_string(&Population::new(3, 1.0, 0.25, 2.0, 1)).unwrap(),
        )
        .expect("write");
        assert_eq!(Population::load(&path).expect("loads").listeners(), 3);
    }

    #[test]
    fn the_store_round_trips_and_refuses_bad_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("prefs.jsonl");
        let c = Choice {
            caption: "a jig".into(),
            a: vec![2, 53, 0],
            b: vec![3, 53, 0],
            choice: "b".into(),
            who: "listener-1".into(),
            when: 5,
            codebooks: None,
        };
        append_store(&path, &[c.clone(), c.clone()]).expect("writes");
        assert_eq!(
            read_store(&path).expect("reads"),
            vec![c.clone(), c.clone()]
        );
        assert_eq!(c.ordered().0, &[3, 53, 0][..]);
        std::fs::write(
            &path,
            "{\"caption\":\"x\",\"a\":[99],\"b\":[2],\"choice\":\"a\",\"who\":\"w\",\"when\":0}\n",
        )
        .expect("writes");
        let err = read_store(&path)
            .expect_err("token 99 is refused")
            .to_string();
        assert!(err.contains(":1") && err.contains("99"), "{err}");
        std::fs::write(
            &path,
            "{\"caption\":\"x\",\"a\":[2],\"b\":[2],\"choice\":\"c\",\"who\":\"w\",\"when\":0}\n",
        )
        .expect("writes");
        assert!(read_store(&path).is_err());
    }
}
