//! The judge against the truth it claims to hear: on the corpus's test-split tunes (whose
//! key and meter the sources state), cut to the policy's clip length as θ0 learned them.
//! The accuracies printed here are the ones `docs/judge.md` reports.

use musicrl_judge::adherence::{key_score, meter_score};
use musicrl_judge::analysis::{KK_MAJOR, KK_MINOR, Melody, all_keys, key_correlation_with};
use musicrl_judge::appeal::{FEATURE_NAMES, FEATURES, TOLERANCE, TYPICAL, appeal_features};
use musicrl_judge::claims::{Key, Meter};
use musicrl_judge::wellformed::well_formed;
use musicrl_judge::{Panel, PanelConfig, assess};
use musicrl_music::corpus::{self, Split, Tune};
use musicrl_music::tokens::{self, END};
use rand::SeedableRng;

/// The tune as θ0 saw it in pretraining: its first 127 tokens (cut at a note boundary) + END.
fn clip(t: &Tune) -> Vec<u32> {
    let encoded = tokens::encode(&t.events);
    let mut c = tokens::clip(&encoded, 127).to_vec();
    c.push(END);
    c
}

fn test_tunes() -> Vec<Tune> {
    corpus::load(&corpus::repo_path())
        .expect("the corpus loads")
        .into_iter()
        .filter(|t| t.split == Split::Test)
        .collect()
}

const METERS: [(u16, u16); 8] = [
    (2, 4),
    (4, 4),
    (2, 2),
    (3, 4),
    (6, 8),
    (9, 8),
    (3, 8),
    (12, 8),
];

fn same_bar_family(a: Meter, b: Meter) -> bool {
    a == b || (a.bar_twelfths() == 48 && b.bar_twelfths() == 48 && !a.compound() && !b.compound())
}

#[test]
fn the_judge_hears_key_and_meter_of_real_tunes() {
    let tunes = test_tunes();
    assert!(tunes.len() > 500);
    let (mut key_right, mut kk_right, mut signature_right, mut keyed) = (0, 0, 0, 0);
    let (mut meter_right, mut metered) = (0, 0);
    let mut meter_confusion = std::collections::BTreeMap::<(String, String), usize>::new();
    for t in &tunes {
        let m = Melody::of(&clip(t));
        if let Some(truth) = Key::parse(&t.key_tonic, &t.key_mode) {
            keyed += 1;
            if key_score(&m, truth) == 1.0 {
                key_right += 1;
            }
            let h = m.pitch_classes();
            let kk = all_keys()
                .max_by(|a, b| {
                    key_correlation_with(&h, *a, &KK_MAJOR, &KK_MINOR)
                        .total_cmp(&key_correlation_with(&h, *b, &KK_MAJOR, &KK_MINOR))
                })
                .expect("24 keys");
            kk_right += usize::from(kk == truth);
            if m.estimated_key()
                .is_some_and(|(k, _)| k == truth || k == truth.relative())
            {
                signature_right += 1;
            }
        }
        let Some(truth) = Meter::parse(&t.meter).filter(|x| METERS.contains(&(x.num, x.den)))
        else {
            continue;
        };
        metered += 1;
        // The first of the best-scoring meters (METERS lists the common ones first), so a
        // tie between 4/4 and 12/8 goes to 4/4.
        let best = METERS
            .iter()
            .map(|&(num, den)| Meter { num, den })
            .map(|x| (x, meter_score(&m, x)))
            .fold(None::<(Meter, f64)>, |best, c| match best {
                Some(b) if b.1 >= c.1 => Some(b),
                _ => Some(c),
            })
            .expect("candidates")
            .0;
        if same_bar_family(best, truth) {
            meter_right += 1;
        } else {
            *meter_confusion
                .entry((truth.name(), best.name()))
                .or_default() += 1;
        }
    }
    let key_acc = key_right as f64 / keyed as f64;
    let kk_acc = kk_right as f64 / keyed as f64;
    let signature_acc = signature_right as f64 / keyed as f64;
    let meter_acc = meter_right as f64 / metered as f64;
    eprintln!(
        "key (Aarden–Essen) {key_acc:.3}, key (Krumhansl–Kessler) {kk_acc:.3}, key or its relative {signature_acc:.3} of {keyed}; meter {meter_acc:.3} of {metered} (chance: 1/24 keys, ~1/6 meters)"
    );
    eprintln!("meter confusions (truth, judged): {meter_confusion:?}");
    // The corpus's key labels are key signatures (read as major unless the source says
    // minor), so a tune in E minor is labelled G major: part of the key "errors" are the
    // labels'. Measured 2026-12-01: key 0.728 (Krumhansl–Kessler 0.660), with the relative
    // key 0.829, meter 0.960.
    assert!(
        key_acc > 0.70 && key_acc > kk_acc,
        "key {key_acc}, KK {kk_acc}"
    );
    assert!(signature_acc > 0.80, "{signature_acc}");
    assert!(meter_acc > 0.93, "meter {meter_acc}");
}

#[test]
fn typical_features_of_the_corpus() {
    let tunes = test_tunes();
    let feats: Vec<[f64; FEATURES]> = tunes
        .iter()
        .map(|t| appeal_features(&Melody::of(&clip(t))))
        .collect();
    for f in 0..FEATURES {
        let mut v: Vec<f64> = feats.iter().map(|x| x[f]).collect();
        v.sort_by(f64::total_cmp);
        let median = v[v.len() / 2];
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        eprintln!(
            "{:<18} median {median:.3} mean {mean:.3}  (TYPICAL {:.3}, tolerance {:.3})",
            FEATURE_NAMES[f], TYPICAL[f], TOLERANCE[f]
        );
        // Closure is 0 or 1: its typical value is the mean; the others' the median.
        let centre = if FEATURE_NAMES[f] == "closure" {
            mean
        } else {
            median
        };
        assert!(
            (centre - TYPICAL[f]).abs() < 0.01,
            "{}: corpus {centre:.3}, TYPICAL {:.3}",
            FEATURE_NAMES[f],
            TYPICAL[f]
        );
    }
    let formed: Vec<f64> = tunes
        .iter()
        .map(|t| well_formed(&Melody::of(&clip(t))).overall)
        .collect();
    let formed_mean = formed.iter().sum::<f64>() / formed.len() as f64;
    eprintln!("well-formedness of corpus clips: mean {formed_mean:.3}");
    assert!(formed_mean > 0.9, "{formed_mean}");
}

#[test]
fn a_drone_loses_to_real_tunes_for_nearly_every_rater() {
    let tunes = test_tunes();
    let panel = Panel::new(PanelConfig::default()).expect("valid panel");
    let drone: Vec<u32> = std::iter::repeat_n([32u32, 53], 63).flatten().collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let (mut real_wins, mut n) = (0, 0);
    for t in tunes.iter().take(100) {
        let caption = format!("a folk tune in {} {}", t.key_tonic, t.key_mode);
        let real = assess(&caption, &clip(t));
        let bad = assess(&caption, &drone);
        for r in 0..panel.raters.len() {
            // Alternate who is heard first (the position bonus).
            let first = r % 2 == 0;
            let a = panel.rate(r, &real, first, &mut rng);
            let b = panel.rate(r, &bad, !first, &mut rng);
            real_wins += usize::from(a.overall > b.overall);
            n += 1;
        }
    }
    let share = real_wins as f64 / n as f64;
    eprintln!("real tunes beat the drone in {share:.3} of {n} ratings");
    assert!(share > 0.97, "{share}");
}
