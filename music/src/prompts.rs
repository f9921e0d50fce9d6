//! Prompt sets: captions from the caption generator ([`crate::captions`]) over one split of
//! the corpus — the paper's prompt split. RL trains on captions of training-split tunes
//! (one per tune, so thousands of distinct captions in exactly the words the policy was
//! pretrained on); evaluation uses captions of test-split tunes only.
//!
//! `musicrl prompts` writes both sets to `data/prompts/` (`train.txt`, `test.txt`: one
//! caption a line after `#` comment lines), and a test keeps the shipped files equal to what
//! these functions generate.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::captions::{caption, default_bpm};
use crate::corpus::{Split, Tune};
use crate::render::Instrument;

/// The seed of the shipped prompt files.
pub const SEED: u64 = 0;

/// Evaluation prompts in the shipped test set (the paper's 101).
pub const EVALUATION_PROMPTS: usize = 101;

/// One caption of a tune rendered on a random instrument at the tune's customary tempo.
pub fn rendering_caption(tune: &Tune, rng: &mut StdRng) -> String {
    let instrument = Instrument::ALL[rng.random_range(0..Instrument::ALL.len())];
    caption(tune, instrument, default_bpm(tune), rng)
}

/// One caption for every training-split tune, in corpus order.
pub fn training_prompts(tunes: &[Tune], seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    tunes
        .iter()
        .filter(|t| t.split == Split::Train)
        .map(|t| rendering_caption(t, &mut rng))
        .collect()
}

/// Whether a caption of `tune` states its key or its meter (what the policy controls and
/// the judge can check); captions may state neither (only a collection, say).
pub fn states_key_or_meter(tune: &Tune, caption: &str) -> bool {
    let lower = caption.to_lowercase();
    lower.contains(&format!("in {} {}", tune.key_tonic, tune.key_mode).to_lowercase())
        || lower.contains(&format!("in {} time", tune.meter))
        || crate::captions::meter_words(&tune.meter).is_some_and(|w| lower.contains(w))
}

/// `n` evaluation prompts from distinct test-split tunes (drawn in a seeded order), each a
/// caption that states the tune's key or meter (re-drawn until it does, up to 32 times; a
/// tune whose captions never do is skipped).
pub fn evaluation_prompts(tunes: &[Tune], n: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7e57);
    let mut test: Vec<&Tune> = tunes.iter().filter(|t| t.split == Split::Test).collect();
    crate::shuffle(&mut test, &mut rng);
    let mut out = Vec::with_capacity(n);
    for t in test {
        if out.len() == n {
            break;
        }
        if let Some(c) = (0..32)
            .map(|_| rendering_caption(t, &mut rng))
            .find(|c| states_key_or_meter(t, c))
        {
            out.push(c);
        }
    }
    out
}

/// `n` selection prompts: the evaluation generator's next `n` prompts after its first
/// `EVALUATION_PROMPTS`, so they caption *other* test-split tunes than the judge's prompts.
/// An experiment chooses checkpoints on these and judges on [`evaluation_prompts`], so the
/// choice cannot fit the very prompts it is judged on.
pub fn selection_prompts(tunes: &[Tune], n: usize, seed: u64) -> Vec<String> {
    let mut all = evaluation_prompts(tunes, EVALUATION_PROMPTS + n, seed);
    if all.len() <= EVALUATION_PROMPTS {
        return Vec::new();
    }
    all.split_off(EVALUATION_PROMPTS)
}

/// The distinct lower-case words of some captions (split as the policy's caption encoder
/// splits them: on anything that is not a letter or digit).
pub fn words<'a>(
    captions: impl IntoIterator<Item = &'a str>,
) -> std::collections::BTreeSet<String> {
    captions
        .into_iter()
        .flat_map(|c| {
            c.split(|ch: char| !ch.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The prompt file format: `#` comment lines, then one caption a line.
pub fn to_file(header: &[String], prompts: &[String]) -> String {
    let mut s = String::new();
    for h in header {
        s.push_str("# ");
        s.push_str(h);
        s.push('\n');
    }
    for p in prompts {
        s.push_str(p);
        s.push('\n');
    }
    s
}
