//! The update's numerics held against a recorded reference.
//!
//! Speed work on the learner (the carried burn-flex patch: its GELU, its exp, and
//! whatever follows) must not change what an update computes beyond float rounding. This
//! test computes the loss, its parts and the whole gradient of one update on a fixed batch
//! (a fixed policy and a different fixed reference, so every term of the loss, the KL
//! included, has a gradient) and compares them with `data/update_reference.json`, which
//! was recorded by the implementation before that work: burn-flex 0.22.1 with only the
//! GELU change, libm's `expf`, and burn's composed softmax (commit `4dd10ba`).
//!
//! Re-record only when the objective itself changes on purpose:
//! `RECORD_UPDATE_REFERENCE=1 cargo test --workspace --test update_numerics`.

use burn::tensor::Device;

use musicrl_common::{PolicyVersion, Trajectory};
use musicrl_config::{Config, PolicyConfig};
use musicrl_learner::trainer::{GradientReport, Trainer};
use musicrl_policy::melody::Policy;

const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/update_reference.json"
);

fn config() -> Config {
    let mut c = Config::default();
    c.policy = PolicyConfig {
        vocab_size: 16,
        max_tokens: 12,
        d_model: 16,
        n_heads: 2,
        n_layers: 2,
        d_ff: 32,
        caption_buckets: 16,
        max_caption_words: 6,
        end_token: 15,
        ..PolicyConfig::default()
    };
    c.learner.init_policy = std::path::PathBuf::new();
    c.learner.value_warmup_steps = 0;
    c.learner.kl_coef = 0.2;
    c.learner.entropy_coef = 0.01;
    c.learner.importance_clip = 2.0;
    c.sampling.temperature = 0.9;
    c
}

/// Six trajectories: different lengths (three end with END, one at position 2), two
/// captions sampled twice (leave-one-out baselines) and two once (the value baseline),
/// behaviour log-probabilities that make importance weights both below and above the clip.
fn batch() -> Vec<Trajectory> {
    let rows: [(&str, &[u32], f32, f32); 6] = [
        ("a jig in D", &[1, 4, 7, 2, 9, 15], 0.8, -2.0),
        (
            "a jig in D",
            &[3, 3, 8, 1, 0, 5, 6, 2, 4, 10, 11, 12],
            0.1,
            -3.5,
        ),
        ("slow air", &[2, 15], -0.4, -1.0),
        ("slow air", &[6, 1, 9, 9, 2, 7, 15], 0.5, -2.8),
        (
            "a reel for fiddle",
            &[12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1],
            1.2,
            -2.2,
        ),
        ("waltz", &[0, 14, 13, 5], -1.0, -4.0),
    ];
    rows.iter()
        .map(|&(caption, tokens, reward, logprob)| Trajectory {
            id: Default::default(),
            learner_run: 0,
            seal: None,
            actor_id: "numerics".into(),
            policy_version: PolicyVersion(0),
            caption: caption.into(),
            behaviour_logprobs: (0..tokens.len())
                .map(|i| logprob + 0.3 * i as f32)
                .collect(),
            tokens: tokens.to_vec(),
            reward,
            components: vec![],
            scorer_version: "v".into(),
            component_windows: Vec::new(),
        })
        .collect()
}

fn compute() -> GradientReport {
    let config = config();
    let device = Device::flex().autodiff();
    // The optimiser state of a fresh trainer; the policy and the reference are two
    // different seeded initialisations.
    let fresh = Trainer::new(&config, &device).expect("trainer");
    let optimizer = fresh.optimizer_bytes().expect("optimizer bytes");
    device.seed(11);
    let policy = Policy::new(&config.policy, &device);
    device.seed(12);
    let reference = Policy::new(&config.policy, &device);
    let mut trainer =
        Trainer::restore(&config, &device, policy, reference, optimizer, 1).expect("restore");
    trainer.gradient(&batch())
}

#[test]
fn one_update_computes_what_the_reference_implementation_computed() {
    let got = compute();
    if std::env::var_os("RECORD_UPDATE_REFERENCE").is_some() {
        std::fs::create_dir_all(std::path::Path::new(REFERENCE).parent().expect("dir"))
            .expect("mkdir");
        std::fs::write(REFERENCE, serde_json::to_string(&got).expect("json") + "\n")
            .expect("write reference");
        eprintln!("recorded {REFERENCE}");
        return;
    }
    let want: GradientReport =
        serde_json::from_str(&std::fs::read_to_string(REFERENCE).expect("the recorded reference"))
            .expect("reference JSON");

    // Every term is exercised: a test of the numerics that a zero gradient would pass
    // proves nothing.
    assert!(
        want.kl > 1e-3,
        "the reference differs from the policy: {}",
        want.kl
    );
    let scale = want.gradient.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    assert!(scale > 1e-3, "the gradient is not trivial: {scale}");
    let nonzero = want
        .gradient
        .iter()
        .filter(|g| g.abs() > 1e-6 * scale)
        .count();
    assert!(
        nonzero * 2 > want.gradient.len(),
        "{nonzero} of {}",
        want.gradient.len()
    );

    // Float rounding only: each scalar within 1e-5 relative, the gradient within 1e-4 of
    // its largest entry everywhere and 1e-5 in relative L2.
    for (name, g, w) in [
        ("loss", got.loss, want.loss),
        ("policy_loss", got.policy_loss, want.policy_loss),
        ("kl", got.kl, want.kl),
        ("value_loss", got.value_loss, want.value_loss),
        ("entropy", got.entropy, want.entropy),
        (
            "importance_weight",
            got.importance_weight,
            want.importance_weight,
        ),
    ] {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1e-3),
            "{name}: {g} against the reference's {w}"
        );
    }
    assert_eq!(got.gradient.len(), want.gradient.len(), "parameter count");
    let (mut worst, mut at, mut diff2, mut norm2) = (0.0f32, 0, 0.0f64, 0.0f64);
    for (i, (g, w)) in got.gradient.iter().zip(&want.gradient).enumerate() {
        let d = (g - w).abs();
        if d > worst {
            (worst, at) = (d, i);
        }
        diff2 += f64::from(d).powi(2);
        norm2 += f64::from(*w).powi(2);
    }
    let relative_l2 = (diff2 / norm2).sqrt();
    eprintln!(
        "largest gradient difference {worst:.3e} (entry {at}; largest entry {scale:.3e}), relative L2 {relative_l2:.3e}"
    );
    assert!(
        worst <= 1e-4 * scale,
        "gradient entry {at}: {} against the reference's {} (largest entry {scale})",
        got.gradient[at],
        want.gradient[at]
    );
    assert!(
        relative_l2 <= 1e-5,
        "relative L2 difference {relative_l2:.3e}"
    );
}
