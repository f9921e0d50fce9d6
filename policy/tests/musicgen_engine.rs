//! The MusicGen rollout engine against burn's path on the two tiny fixtures: the same logits
//! at every grid position, and for a seed the same codes, token for token, with the same
//! behaviour log-probabilities — greedy, sampled with and without top-k, with and without
//! guidance, on one thread and on several.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use musicrl_policy::musicgen::engine::Engine;
use musicrl_policy::musicgen::{Decoding, MusicGen, SamplingOptions, to_vec};

const MODELS: [&str; 2] = ["tiny", "tiny-gated"];
const CAPTIONS: [&str; 3] = [
    "a slow jig in d major",
    "happy reel",
    "a sad waltz on the fiddle, slow and quiet",
];

fn load(name: &str) -> MusicGen {
    let folder: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/musicgen")
        .join(name);
    MusicGen::load(&folder, &Device::flex()).expect("the fixture loads")
}

#[test]
fn each_grid_position_has_the_decoders_logits() {
    for name in MODELS {
        let model = load(name);
        let k_total = model.config().n_codebooks();
        let vocab = model.config().vocab_size();
        for threads in [1, 3] {
            let engine = Engine::new(model.decoder(), threads);
            let cond = model.encode(&CAPTIONS).unwrap();
            let cross = model.decoder().cross_kv(cond.states, cond.pad);
            let positions = 7;
            let mut session = engine.session(&cross, positions);
            let mut cache = model.decoder().new_cache();
            let rows = CAPTIONS.len();
            let mut logits = vec![0f32; rows * k_total * vocab];
            for p in 0..positions {
                // Arbitrary in-range ids, the BOS id at the first position.
                let ids: Vec<u32> = (0..rows * k_total)
                    .map(|i| {
                        if p == 0 {
                            vocab as u32
                        } else {
                            ((i * 7 + p * 13) % vocab) as u32
                        }
                    })
                    .collect();
                engine.step(&mut session, &ids, &mut logits);
                let tensor = Tensor::<3, Int>::from_data(
                    TensorData::new(
                        ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(),
                        [rows, k_total, 1],
                    ),
                    model.device(),
                );
                let expected = to_vec(model.decoder().forward(
                    tensor,
                    Some(&cross),
                    Some(&mut cache),
                ));
                let worst = logits
                    .iter()
                    .zip(&expected)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst < 1e-4,
                    "{name}, {threads} threads, position {p}: logits differ by {worst}"
                );
            }
        }
    }
}

#[test]
fn the_engine_draws_the_codes_burn_draws() {
    let decodings = [
        (Decoding::Greedy, None),
        (
            Decoding::Sample {
                temperature: 1.0,
                top_k: 0,
            },
            None,
        ),
        (
            Decoding::Sample {
                temperature: 0.7,
                top_k: 5,
            },
            Some(3.0),
        ),
        (
            Decoding::Sample {
                temperature: 1.0,
                top_k: 0,
            },
            Some(2.0),
        ),
    ];
    for name in MODELS {
        let model = load(name);
        let engine = Engine::new(model.decoder(), 2);
        for (i, (decoding, guidance)) in decodings.iter().enumerate() {
            let options = SamplingOptions {
                decoding: *decoding,
                guidance: *guidance,
                seed: 11 + i as u64,
            };
            let burn = model.generate_scored(&CAPTIONS, 9, &options).unwrap();
            let fast = model
                .generate_scored_with(&engine, &CAPTIONS, 9, &options)
                .unwrap();
            assert_eq!(burn.codes, fast.codes, "{name}, {decoding:?}, {guidance:?}");
            for (a, b) in burn
                .logprobs
                .iter()
                .flatten()
                .flatten()
                .zip(fast.logprobs.iter().flatten().flatten())
            {
                assert!(
                    (a - b).abs() < 1e-4,
                    "{name}, {decoding:?}: log-probabilities {a} and {b}"
                );
            }
        }
    }
}

#[test]
fn a_session_refuses_a_position_past_its_grid() {
    let model = load("tiny");
    let engine = Engine::new(model.decoder(), 1);
    let cond = model.encode(&["a jig"]).unwrap();
    let cross = model.decoder().cross_kv(cond.states, cond.pad);
    let mut session = engine.session(&cross, 1);
    let k_total = model.config().n_codebooks();
    let vocab = model.config().vocab_size();
    let ids = vec![vocab as u32; k_total];
    let mut logits = vec![0f32; k_total * vocab];
    engine.step(&mut session, &ids, &mut logits);
    let full = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        engine.step(&mut session, &ids, &mut logits)
    }));
    assert!(
        full.is_err(),
        "a second position fitted a one-position session"
    );
}
