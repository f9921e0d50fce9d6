//! MusicGen and T5 against transformers: the fixture (scripts/fixtures/musicgen_fixture.py)
//! holds two tiny random models and the reference implementation's outputs on them; every
//! number here must match within the stated tolerance, every greedy code exactly.
// Test helpers unwrap too: a panic is the failure message (`allow-unwrap-in-tests` covers
// only `#[test]` functions).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use musicrl_policy::musicgen::{Decoding, MusicGen, SamplingOptions, delay, to_vec};
use safetensors::{Dtype, SafeTensors};

/// f32 against f32 through the same operations in another order: absolute tolerance.
const TOL: f32 = 1e-4;
const MODELS: [&str; 2] = ["tiny", "tiny-gated"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/musicgen")
        .join(name)
}

struct Reference {
    floats: HashMap<String, (Vec<usize>, Vec<f32>)>,
    ints: HashMap<String, (Vec<usize>, Vec<i64>)>,
    captions: Vec<String>,
    token_ids: Vec<Vec<u32>>,
}

impl Reference {
    fn load(name: &str) -> Self {
        let bytes = std::fs::read(fixture(name).join("reference.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut floats = HashMap::new();
        let mut ints = HashMap::new();
        for (key, view) in st.tensors() {
            let shape = view.shape().to_vec();
            match view.dtype() {
                Dtype::F32 => {
                    let v = view
                        .data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect();
                    floats.insert(key, (shape, v));
                }
                Dtype::I64 => {
                    let v = view
                        .data()
                        .chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                        .collect();
                    ints.insert(key, (shape, v));
                }
                other => panic!("{key}: unexpected dtype {other:?}"),
            }
        }
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(name).join("reference.json")).unwrap(),
        )
        .unwrap();
        let captions = meta["captions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        let token_ids = meta["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect();
        Self {
            floats,
            ints,
            captions,
            token_ids,
        }
    }

    fn codes(&self, key: &str) -> Vec<Vec<u32>> {
        let (shape, v) = &self.ints[key];
        v.chunks(shape[1])
            .map(|r| r.iter().map(|&x| x as u32).collect())
            .collect()
    }
}

fn device() -> Device {
    Device::default()
}

fn load(name: &str) -> MusicGen {
    MusicGen::load(&fixture(name), &device()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let (mut worst, mut at) = (0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        assert!(d.is_finite(), "{what}[{i}]: {g} vs {w}");
        if d > worst {
            (worst, at) = (d, i);
        }
    }
    assert!(
        worst <= tol,
        "{what}: max |diff| {worst:e} at {at} ({} vs {}) > {tol:e}",
        got[at],
        want[at]
    );
}

#[test]
fn tokenizer_gives_transformers_ids() {
    for name in MODELS {
        let (model, r) = (load(name), Reference::load(name));
        for (caption, ids) in r.captions.iter().zip(&r.token_ids) {
            assert_eq!(
                &model.tokenize(caption).unwrap(),
                ids,
                "{name}: {caption:?}"
            );
        }
    }
}

#[test]
fn t5_states_match_transformers() {
    for name in MODELS {
        let (model, r) = (load(name), Reference::load(name));
        let (shape, ids) = &r.ints["encoder_ids"];
        let (_, mask) = &r.ints["encoder_mask"];
        let (b, s) = (shape[0], shape[1]);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [b, s]), &device());
        let pad: Vec<bool> = mask.iter().map(|&m| m == 0).collect();
        let pad = Tensor::<2, Bool>::from_data(TensorData::new(pad, [b, s]), &device());
        let got = to_vec(model.text_states(ids, pad));
        assert_close(
            &format!("{name} encoder states"),
            &got,
            &r.floats["encoder_states"].1,
            TOL,
        );
    }
}

#[test]
fn decoder_logits_on_the_delayed_grid_match_transformers() {
    for name in MODELS {
        let (model, r) = (load(name), Reference::load(name));
        let k_total = model.config().n_codebooks();
        for (i, caption) in r.captions.iter().enumerate() {
            let codes = r.codes(&format!("codes_{i}"));
            let grid = delay::delay(&codes, 32, 32).unwrap();
            let len = grid[0].len() - 1;
            let inputs: Vec<i64> = grid
                .iter()
                .flat_map(|row| row[..len].iter().map(|&x| i64::from(x)))
                .collect();
            let inputs =
                Tensor::<3, Int>::from_data(TensorData::new(inputs, [1, k_total, len]), &device());
            let cond = model.encode(&[caption]).unwrap();
            let got = to_vec(model.grid_logits(Some(&cond), inputs));
            assert_close(
                &format!("{name} logits {i}"),
                &got,
                &r.floats[&format!("logits_{i}")].1,
                TOL,
            );
        }
    }
}

#[test]
fn code_log_probabilities_match_transformers() {
    for name in MODELS {
        let (model, r) = (load(name), Reference::load(name));
        for (i, caption) in r.captions.iter().enumerate() {
            let codes = r.codes(&format!("codes_{i}"));
            let got: Vec<f32> = model
                .score(caption, &codes)
                .unwrap()
                .into_iter()
                .flatten()
                .map(|x| x as f32)
                .collect();
            assert_close(
                &format!("{name} logprob {i}"),
                &got,
                &r.floats[&format!("logprob_{i}")].1,
                TOL,
            );
        }
    }
}

fn greedy(guidance: Option<f32>) -> SamplingOptions {
    SamplingOptions {
        decoding: Decoding::Greedy,
        guidance,
        seed: 0,
    }
}

#[test]
fn greedy_codes_equal_transformers_generate_with_and_without_guidance() {
    for name in MODELS {
        let (model, r) = (load(name), Reference::load(name));
        for (i, caption) in r.captions.iter().enumerate() {
            for (label, guidance) in [("greedy", None), ("greedy_cfg3", Some(3.0))] {
                let want = r.codes(&format!("{label}_{i}"));
                let got = model
                    .generate(&[caption], want[0].len(), &greedy(guidance))
                    .unwrap();
                assert_eq!(got[0], want, "{name} {label} caption {i}");
            }
        }
    }
}

#[test]
fn a_padded_batch_generates_what_each_caption_does_alone() {
    let (model, r) = (load("tiny"), Reference::load("tiny"));
    let got = model.generate(&r.captions, 10, &greedy(Some(3.0))).unwrap();
    for (i, codes) in got.iter().enumerate() {
        assert_eq!(
            codes,
            &r.codes(&format!("greedy_cfg3_{i}")),
            "caption {i} in a batch of 3"
        );
    }
}

#[test]
fn sampling_is_seeded_and_scores_are_finite() {
    let model = load("tiny");
    let options = SamplingOptions::musicgen_default(7);
    let a = model
        .generate(&["a calm piano melody"], 8, &options)
        .unwrap();
    let b = model
        .generate(&["a calm piano melody"], 8, &options)
        .unwrap();
    assert_eq!(a, b, "same seed, same codes");
    let c = model
        .generate(
            &["a calm piano melody"],
            8,
            &SamplingOptions::musicgen_default(8),
        )
        .unwrap();
    assert_ne!(a, c, "another seed draws other codes");
    let lp = model.score("a calm piano melody", &a[0]).unwrap();
    assert!(lp.iter().flatten().all(|x| x.is_finite() && *x <= 0.0));
}

#[test]
fn codes_out_of_range_or_ragged_are_refused_by_name() {
    let model = load("tiny");
    let err = model
        .score("x", &[vec![1, 2], vec![3, 4], vec![5, 32], vec![0, 0]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("code 32 at codebook 2, frame 1"), "{err}");
    let err = model
        .score("x", &[vec![1, 2], vec![3], vec![5, 6], vec![0, 0]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("row 1 has 1"), "{err}");
    let err = model.score("x", &[vec![1, 2]]).unwrap_err().to_string();
    assert!(err.contains("this model has 4"), "{err}");
}

#[test]
fn the_tensor_log_probs_of_a_batch_equal_the_scores_and_train() {
    use musicrl_policy::musicgen::kl_per_code;
    let (model, r) = (load("tiny"), Reference::load("tiny"));
    let clips: Vec<Vec<Vec<u32>>> = (0..3).map(|i| r.codes(&format!("codes_{i}"))).collect();
    let cond = model.encode(&r.captions).unwrap(); // padded: three caption lengths
    let got = to_vec(model.code_log_probs(&cond, &clips).unwrap());
    let want: Vec<f32> = (0..3)
        .flat_map(|i| r.floats[&format!("logprob_{i}")].1.clone())
        .collect();
    assert_close("batched code log-probs", &got, &want, TOL);

    // The exact KL of the model against itself is zero; against a hand-made pair, by hand.
    let ls = model.aligned_log_softmax(&cond, &clips).unwrap();
    let kl = to_vec(kl_per_code(ls.clone(), ls));
    assert!(kl.iter().all(|x| x.abs() < 1e-6), "KL(π ‖ π) = 0");
    let p = Tensor::<4>::from_data(
        TensorData::new(vec![0.5f32.ln(), 0.5f32.ln()], [1, 1, 1, 2]),
        &device(),
    );
    let q = Tensor::<4>::from_data(
        TensorData::new(vec![0.25f32.ln(), 0.75f32.ln()], [1, 1, 1, 2]),
        &device(),
    );
    let kl = to_vec(kl_per_code(p, q))[0];
    let hand = 0.5 * (0.5f32 / 0.25).ln() + 0.5 * (0.5f32 / 0.75).ln();
    assert!((kl - hand).abs() < 1e-6, "{kl} vs {hand}");
}

#[test]
fn a_gradient_step_on_the_code_log_probs_raises_them() {
    use burn::optim::{GradientsParams, SgdConfig};
    // The decoder trains (the learner's path): one SGD step up the log-likelihood of a clip
    // raises it, through the delayed grid, the cross-attention and the K heads.
    let device = Device::flex().autodiff();
    let model = MusicGen::load(&fixture("tiny"), &device).unwrap();
    let r = Reference::load("tiny");
    let clips = vec![r.codes("codes_0")];
    let cond = model.encode(&[r.captions[0].as_str()]).unwrap();
    let before = model.code_log_probs(&cond, &clips).unwrap().sum();
    let grads = before.clone().neg().backward(); // descend on −log p
    let decoder = model.decoder().clone();
    let grads = GradientsParams::from_grads(grads, &decoder);
    let mut optim = SgdConfig::new().init();
    let stepped = optim.step(0.05, decoder, grads);
    let model = model.with_decoder(stepped);
    let after = model.code_log_probs(&cond, &clips).unwrap().sum();
    let (before, after) = (to_vec(before)[0], to_vec(after)[0]);
    assert!(after > before + 1e-3, "log p {before} -> {after}");
}
