//! The audio reward models, trained small on the real corpus, then served: each score moves
//! the right way on constructed cases, the reward server returns every component for a batch
//! and rejects malformed requests, and the remote scorer forwards to a second server.

use std::path::PathBuf;
use std::sync::OnceLock;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tonic::Code;

use musicrl_config::Config;
use musicrl_config::{ComponentConfig, PolicyConfig};
use musicrl_music::captions::caption;
use musicrl_music::corpus::{self, Split, Tune};
use musicrl_music::render::Instrument;
use musicrl_music::tokens;
use musicrl_proto::v1 as pb;
use musicrl_proto::v1::reward_service_client::RewardServiceClient;
use musicrl_rewards::clips::{features_of, tune_events};
use musicrl_rewards::degrade::{Degradation, Fault};
use musicrl_rewards::features::Extractor;
use musicrl_rewards::quality::{self, QualityModel};
use musicrl_rewards::text::{self, TextModel};
use musicrl_tests::{Quiet, start_reward_server, tiny_config};

const MAX_TOKENS: usize = 64;

fn tunes() -> &'static [Tune] {
    static TUNES: OnceLock<Vec<Tune>> = OnceLock::new();
    TUNES.get_or_init(|| corpus::load(&corpus::repo_path()).expect("the bundled corpus loads"))
}

/// Both models, trained once per test binary into a folder that outlives the tests.
fn checkpoints() -> &'static (PathBuf, PathBuf) {
    static DIRS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DIRS.get_or_init(|| {
        let root =
            std::env::temp_dir().join(format!("musicrl-reward-models-{}", std::process::id()));
        let (text_dir, quality_dir) = (root.join("text"), root.join("quality"));
        let mut t = text::TextConfig {
            model: text::TextModelConfig::default(),
            train: text::TextTrainConfig::default(),
        };
        t.model.audio.hidden = 32;
        t.model.audio.out = 32;
        t.model.text.hidden = 32;
        t.model.text.out = 32;
        t.model.text.embed = 32;
        t.model.window_frames = 100;
        t.train.tunes = 160;
        t.train.renders_per_tune = 2;
        t.train.epochs = 10;
        t.train.batch_size = 32;
        t.train.max_tokens = MAX_TOKENS;
        t.train.eval_pairs = 20;
        t.train.attribute_clips = 0;
        text::train(&t, tunes(), &text_dir, &mut Quiet).expect("the text model trains");

        let mut q = quality::QualityConfig {
            model: quality::QualityModelConfig::default(),
            train: quality::QualityTrainConfig::default(),
        };
        q.model.audio.hidden = 32;
        q.model.audio.out = 16;
        q.model.window_frames = 100;
        q.train.tunes = 600;
        q.train.renders_per_tune = 2;
        q.train.epochs = 10;
        q.train.max_tokens = MAX_TOKENS;
        q.train.eval_clips = 40;
        quality::train(&q, tunes(), &quality_dir, &mut Quiet).expect("the quality model trains");
        (text_dir, quality_dir)
    })
}

fn held_out(n: usize) -> Vec<&'static Tune> {
    tunes()
        .iter()
        .filter(|t| t.split == Split::Test)
        .take(n)
        .collect()
}

#[test]
fn text_score_prefers_the_caption_that_matches_the_clip() {
    let model = TextModel::load(&checkpoints().0).expect("loads");
    let x = Extractor::new();
    let (mut right, mut total) = (0, 0);
    const TONICS: [&str; 6] = ["G", "D", "F", "A", "C", "Bb"];
    for (i, tune) in held_out(80).into_iter().enumerate() {
        let inst = Instrument::ALL[i % 4];
        let clip = features_of(&x, &tune_events(tune, MAX_TOKENS), inst, 120.0, i as u64);
        // The same wording (caption seed) for the tune and for the tune in another key; only
        // captions that state the key count. (The instrument, which the renderer decides,
        // is not shown to the model at all.)
        let mut moved = tune.clone();
        let at = TONICS
            .iter()
            .position(|t| *t == tune.key_tonic)
            .unwrap_or(0);
        moved.key_tonic = TONICS[(at + 1 + i % (TONICS.len() - 1)) % TONICS.len()].to_string();
        let matching = caption(tune, inst, 120, &mut StdRng::seed_from_u64(i as u64));
        let contradicting = caption(&moved, inst, 120, &mut StdRng::seed_from_u64(i as u64));
        if matching == contradicting {
            continue;
        }
        let s = model.score(&[(matching.as_str(), &clip), (contradicting.as_str(), &clip)]);
        assert!(
            s.iter().all(|v| v.is_finite() && (-1.0..=1.0).contains(v)),
            "{s:?}"
        );
        right += usize::from(s[0] > s[1]);
        total += 1;
    }
    eprintln!("the caption with the right key won {right} of {total}");
    // Chance is 50%.
    assert!(total >= 20, "{total} captions state a key");
    assert!(
        right * 10 >= total * 7,
        "the caption with the right key won {right} of {total}"
    );
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(checkpoints().0.join("metrics.json")).expect("metrics.json"),
    )
    .expect("JSON");
    assert!(
        metrics["recall_at_1"].as_f64().is_some()
            && metrics["version"]
                .as_str()
                .is_some_and(|v| v.starts_with("text-"))
    );
}

#[test]
fn quality_score_rates_clean_renderings_above_corrupted_ones() {
    let model = QualityModel::load(&checkpoints().1).expect("loads");
    let x = Extractor::new();
    let (mut right, mut total) = (0, 0);
    for (i, tune) in held_out(30).into_iter().enumerate() {
        let inst = Instrument::ALL[i % 4];
        let events = tune_events(tune, MAX_TOKENS);
        let clean = features_of(&x, &events, inst, 120.0, i as u64);
        let mut rng = StdRng::seed_from_u64(i as u64);
        let fault = [Fault::Noise, Fault::Clipping, Fault::Monotony][i % 3];
        let d = Degradation {
            fault: Some(fault),
            severity: 1.0,
        };
        // Monotony changes the notes (the same few pitches in even eighths), the others the
        // signal.
        let faulty_events = d.apply_to_events(&events, &mut rng);
        let mut audio = musicrl_rewards::clips::render_audio(&faulty_events, inst, 120.0, i as u64);
        d.apply_to_audio(&mut audio, &mut rng);
        let corrupted = x.extract(&audio);
        let s = model.score(&[&clean, &corrupted]);
        assert!(s.iter().all(|v| (0.0..=1.0).contains(v)), "{s:?}");
        right += usize::from(s[0] > s[1]);
        total += 1;
    }
    eprintln!("clean won {right} of {total}");
    assert!(right * 10 >= total * 8, "clean won {right} of {total}");
}

fn music_config(dir: &std::path::Path, components: Vec<ComponentConfig>) -> Config {
    let mut c = tiny_config(dir);
    c.policy = PolicyConfig {
        vocab_size: tokens::VOCAB_SIZE,
        max_tokens: MAX_TOKENS,
        end_token: tokens::END,
        ..c.policy
    };
    c.reward.components = components;
    c
}

fn component(kind: &str, checkpoint: &std::path::Path, weight: f32) -> ComponentConfig {
    ComponentConfig {
        kind: kind.into(),
        checkpoint: checkpoint.to_path_buf(),
        weight,
        ..ComponentConfig::default()
    }
}

fn samples(n: usize) -> Vec<pb::Sample> {
    held_out(n)
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let mut toks = tokens::clip(&tokens::encode(&t.events), MAX_TOKENS - 1).to_vec();
            toks.push(tokens::END);
            pb::Sample {
                caption: caption(
                    t,
                    Instrument::ALL[i % 4],
                    120,
                    &mut StdRng::seed_from_u64(i as u64),
                ),
                tokens: toks,
                audio: None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reward_server_returns_every_component_and_rejects_bad_batches() {
    let (text_dir, quality_dir) = checkpoints().clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = music_config(
        dir.path(),
        vec![
            component("text", &text_dir, 0.5),
            component("quality", &quality_dir, 2.0),
        ],
    );
    let server = start_reward_server(&config).await;
    let mut client = RewardServiceClient::connect(server.url())
        .await
        .expect("connect");
    let batch = samples(5);
    let response = client
        .score(pb::ScoreRequest {
            samples: batch.clone(),
        })
        .await
        .expect("scores")
        .into_inner();
    let names: Vec<&str> = response
        .components
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["text", "quality"]);
    assert!(response.components[0].version.starts_with("text-"));
    assert!(response.components[1].version.starts_with("quality-"));
    assert_eq!(response.scores.len(), 5);
    for s in &response.scores {
        let (t, q) = (s.components[0], s.components[1]);
        assert!(
            (-1.0..=1.0).contains(&t) && (0.0..=1.0).contains(&q),
            "{s:?}"
        );
        assert!((s.reward - (0.5 * t + 2.0 * q)).abs() < 1e-5, "{s:?}");
        // Each component's window scores come along, and average to its score: the text
        // model's three windows, the quality model's head and tail.
        assert_eq!(s.windows.len(), 2, "{s:?}");
        for (c, (w, n)) in s.windows.iter().zip([3usize, 2]).enumerate() {
            assert_eq!(w.values.len(), n, "{s:?}");
            let mean = w.values.iter().sum::<f32>() / n as f32;
            assert!((mean - s.components[c]).abs() < 1e-5, "{s:?}");
        }
    }
    // The same samples score the same again (rendering is seeded by the tokens).
    let again = client
        .score(pb::ScoreRequest {
            samples: batch.clone(),
        })
        .await
        .expect("scores")
        .into_inner();
    assert_eq!(again.scores, response.scores);

    let mut bad = batch.clone();
    bad[2].tokens[3] = tokens::VOCAB_SIZE as u32;
    let err = client
        .score(pb::ScoreRequest { samples: bad })
        .await
        .expect_err("a token outside the vocabulary is refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Still serving.
    client
        .score(pb::ScoreRequest { samples: batch })
        .await
        .expect("serves after a bad request");
    server.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_scorer_forwards_a_component_to_a_second_server() {
    let (_, quality_dir) = checkpoints().clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = start_reward_server(&music_config(
        dir.path(),
        vec![component("quality", &quality_dir, 1.0)],
    ))
    .await;
    let remote = ComponentConfig {
        kind: "remote".into(),
        name: "quality-remote".into(),
        endpoint: backend.url(),
        remote_component: "quality".into(),
        ..ComponentConfig::default()
    };
    let fraction = ComponentConfig {
        kind: "token-fraction".into(),
        target_below: 16,
        weight: 0.0,
        ..ComponentConfig::default()
    };
    let front = start_reward_server(&music_config(dir.path(), vec![remote, fraction])).await;
    let batch = samples(4);
    let direct = RewardServiceClient::connect(backend.url())
        .await
        .expect("connect")
        .score(pb::ScoreRequest {
            samples: batch.clone(),
        })
        .await
        .expect("scores")
        .into_inner();
    let forwarded = RewardServiceClient::connect(front.url())
        .await
        .expect("connect")
        .score(pb::ScoreRequest { samples: batch })
        .await
        .expect("scores")
        .into_inner();
    assert_eq!(forwarded.components[0].name, "quality-remote");
    assert!(
        forwarded.components[0].version.contains("quality-"),
        "{:?}",
        forwarded.components[0]
    );
    for (d, f) in direct.scores.iter().zip(&forwarded.scores) {
        assert_eq!(d.components[0], f.components[0]);
        assert_eq!(f.reward, f.components[0]);
    }
    // A remote component the backend does not have is an error that names it.
    let missing = ComponentConfig {
        kind: "remote".into(),
        endpoint: backend.url(),
        remote_component: "preference".into(),
        ..ComponentConfig::default()
    };
    let broken = start_reward_server(&music_config(dir.path(), vec![missing])).await;
    let err = RewardServiceClient::connect(broken.url())
        .await
        .expect("connect")
        .score(pb::ScoreRequest {
            samples: samples(1),
        })
        .await
        .expect_err("no such remote component");
    assert!(err.message().contains("preference"), "{err:?}");
    for s in [broken, front, backend] {
        s.stop().await.expect("stops cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_checkpoint_stops_the_server_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = music_config(
        dir.path(),
        vec![component("text", &dir.path().join("nowhere"), 1.0)],
    );
    let server = start_reward_server(&config).await;
    let err = server
        .join()
        .await
        .expect_err("cannot start without its model");
    assert!(err.to_string().contains("nowhere"), "{err}");
}

/// A corpus tune and a scrambled, leaping, rushed version of it: the population's shared
/// taste clearly prefers the tune.
fn unambiguous_pairs(n: usize, seed: u64) -> Vec<(String, Vec<u32>, Vec<u32>)> {
    use rand::RngExt;
    let mut rng = StdRng::seed_from_u64(seed);
    tunes()
        .iter()
        .filter(|t| t.split == Split::Train)
        .take(n)
        .map(|t| {
            let mut nice = tokens::clip(&tokens::encode(&t.events), MAX_TOKENS - 1).to_vec();
            nice.push(tokens::END);
            let harsh: Vec<u32> = nice
                .iter()
                .map(|&tok| match tokens::Token::of(tok) {
                    tokens::Token::Pitch(_) => tokens::PITCH_BASE + rng.random_range(0..48),
                    tokens::Token::Dur(_) => tokens::DUR_BASE,
                    _ => tok,
                })
                .collect();
            let caption = caption(t, Instrument::Harp, 120, &mut rng);
            if rng.random::<bool>() {
                (caption, nice, harsh)
            } else {
                (caption, harsh, nice)
            }
        })
        .collect()
}

#[test]
fn the_preference_model_learns_an_unambiguous_taste_and_serves_it() {
    use musicrl_rewards::preference::{self, Population, model};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store.jsonl");
    let population = Population::new(20, 0.3, 1.0, 0.0, 4);
    let choices = preference::simulate_choices(&population, &unambiguous_pairs(300, 9), 0, 2);
    preference::append_store(&store, &choices).expect("writes the store");
    let mut c = model::PreferenceConfig {
        policy: PolicyConfig {
            vocab_size: tokens::VOCAB_SIZE,
            max_tokens: MAX_TOKENS,
            d_model: 32,
            n_heads: 2,
            n_layers: 1,
            d_ff: 64,
            caption_buckets: 64,
            max_caption_words: 16,
            ..PolicyConfig::default()
        },
        train: model::PreferenceTrainConfig::default(),
    };
    c.train.store = store;
    c.train.init_policy = PathBuf::new();
    c.train.epochs = 6;
    c.train.learning_rate = 3e-3;
    let out = dir.path().join("preference");
    let (metrics, eval) = model::train(&c, &out, &mut Quiet).expect("trains");
    let (ceiling, _) = preference::ceilings(&population, &eval);
    eprintln!("held-out accuracy {} (ceiling {ceiling})", metrics.accuracy);
    assert!(
        metrics.accuracy >= 0.8,
        "held-out accuracy {}",
        metrics.accuracy
    );
    let m = model::PreferenceModel::load(&out).expect("loads");
    let (cap, a, b) = &unambiguous_pairs(1, 77)[0];
    let s = m.score(&[(cap.as_str(), a.as_slice()), (cap.as_str(), b.as_slice())]);
    let nice_first = preference::taste_features(a)[1] > preference::taste_features(b)[1];
    assert_eq!(s[0] > s[1], nice_first, "{s:?}");
}

/// The shipped listener population is calibrated to the paper's users (issue 33, item 2): on
/// its calibration pairs (θ0's samples of training captions, scored by the shipped text and
/// quality models), the text score picks the listeners' choice 0.516 ± 0.01 of the time (the
/// calibrated statistic), the quality score 0.533 ± 0.03 and the shared taste 0.675 ± 0.01;
/// the shipped preference model, trained on this population's choices, is 0.60 ± 0.03 on its
/// held-out choices. The pairs' scores are what the shipped models give today, so the fixture
/// cannot drift from the models it stands for.
#[test]
fn the_shipped_listeners_are_calibrated_to_the_papers_users() {
    use musicrl_rewards::preference::{self, Heard, Population};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/rewards");
    let population =
        Population::load(&dir.join("preference/population.json")).expect("the population loads");
    let pairs = preference::read_scored_pairs(&dir.join("preference/calibration.jsonl"))
        .expect("the calibration pairs load");
    assert!(pairs.len() >= 2000, "{} calibration pairs", pairs.len());
    let heard: Vec<(Heard, Heard)> = pairs
        .iter()
        .map(|p| (Heard::of(&p.caption, &p.a), Heard::of(&p.caption, &p.b)))
        .collect();
    let of = |f: fn(&preference::ScoredPair) -> [f32; 2]| -> Vec<[f32; 2]> {
        pairs.iter().map(f).collect()
    };
    let text = preference::expected_agreement(&population, &heard, &of(|p| p.text));
    let quality = preference::expected_agreement(&population, &heard, &of(|p| p.quality));
    let shared = population.shared();
    let shared_side: Vec<[f32; 2]> = heard
        .iter()
        .map(|(a, b)| [shared.value(0, a), shared.value(0, b)])
        .collect();
    let ceiling = preference::expected_agreement(&population, &heard, &shared_side);
    eprintln!("text {text:.4}, quality {quality:.4}, shared-taste ceiling {ceiling:.4}");
    assert!(
        (text - preference::PAPER_TEXT_AGREEMENT).abs() <= 0.01,
        "text agreement {text}"
    );
    assert!(
        (quality - preference::PAPER_QUALITY_AGREEMENT).abs() <= 0.03,
        "quality agreement {quality}"
    );
    assert!(
        (ceiling - preference::TARGET_SHARED_CEILING).abs() <= 0.01,
        "shared-taste ceiling {ceiling}"
    );
    // Without their captions the same listeners agree with the text score no more than chance
    // does: the caption weight is what calibration set.
    let deaf = Population {
        caption_weight: Vec::new(),
        ..population.clone()
    };
    let text_deaf = preference::expected_agreement(&deaf, &heard, &of(|p| p.text));
    assert!(text_deaf < text - 0.01, "{text_deaf} without captions");
    // `preferences simulate`'s defaults (200 listeners, spread 1, seed 1) draw this population.
    let drawn = Population::new(
        200,
        1.0,
        preference::CALIBRATED_TEMPERATURE,
        preference::CALIBRATED_CAPTION_WEIGHT,
        1,
    );
    assert_eq!(drawn.ideals, population.ideals);
    assert!((drawn.temperature - population.temperature).abs() < 1e-3);
    for (w, want) in drawn.caption_weight.iter().zip(&population.caption_weight) {
        assert!((w / want - 1.0).abs() < 1e-4, "{w} vs {want}");
    }

    // The preference model trained on this population's choices.
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("preference/metrics.json")).expect("metrics"),
    )
    .expect("metrics parse");
    let accuracy = metrics["accuracy"].as_f64().expect("accuracy");
    assert!(
        (accuracy - preference::PAPER_PREFERENCE_ACCURACY).abs() <= 0.03,
        "held-out accuracy {accuracy}"
    );
    let bytes = std::fs::read(
        dir.join("preference")
            .join(musicrl_rewards::store::MODEL_FILE),
    )
    .expect("the model");
    assert_eq!(
        metrics["version"].as_str(),
        Some(musicrl_rewards::store::version_of("preference", &bytes).as_str()),
        "the metrics are the shipped model's"
    );

    // The fixture's scores are the shipped models' scores.
    let text_model = TextModel::load(&dir.join("text")).expect("the text model");
    let quality_model = QualityModel::load(&dir.join("quality")).expect("the quality model");
    let x = Extractor::default();
    for p in &pairs[..3] {
        let f = [
            musicrl_rewards::clips::sample_features(&x, &p.caption, &p.a),
            musicrl_rewards::clips::sample_features(&x, &p.caption, &p.b),
        ];
        let t = text_model.score(&[(p.caption.as_str(), &f[0]), (p.caption.as_str(), &f[1])]);
        let q = quality_model.score(&[&f[0], &f[1]]);
        for k in 0..2 {
            assert!((t[k] - p.text[k]).abs() < 1e-4, "{t:?} vs {:?}", p.text);
            assert!(
                (q[k] - p.quality[k]).abs() < 1e-4,
                "{q:?} vs {:?}",
                p.quality
            );
        }
    }
}
