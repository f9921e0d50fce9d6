//! `musicrl policy score|generate` on a MusicGen folder, as someone checking the numbers
//! against transformers would run them: codes in and out as JSON, errors that say what is
//! wrong (the numbers themselves are held to transformers in `policy/tests/`).

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use burn::tensor::Device;
use common::{repo, run_to_end};
use musicrl_policy::musicgen::{Decoding, MusicGen, SamplingOptions};

fn fixture() -> PathBuf {
    PathBuf::from(repo("policy/tests/fixtures/musicgen/tiny"))
}

fn musicrl(args: &[&str]) -> Output {
    run_to_end(
        Command::new(env!("CARGO_BIN_EXE_musicrl"))
            .args(args)
            .env_remove("MUSICRL_CONFIG"),
    )
}

fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

/// `musicrl ARGS --out OUT` from the repository, as the README runs it: it must succeed;
/// its summary.json.
fn local_run(args: &[&str], out: &std::path::Path) -> serde_json::Value {
    let run = run_to_end(
        Command::new(env!("CARGO_BIN_EXE_musicrl"))
            .args(args)
            .args(["--out", out.to_str().expect("a UTF-8 temporary path")])
            .current_dir(repo(""))
            .env_remove("MUSICRL_CONFIG"),
    );
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(run.status.success(), "musicrl local failed:\n{stderr}");
    let summary = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    serde_json::from_str(&summary).expect("summary.json is JSON")
}

#[test]
fn generate_then_score_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let codes = dir.path().join("clip.json");
    let folder = fixture();
    let out = musicrl(&[
        "policy",
        "generate",
        "--policy",
        folder.to_str().unwrap(),
        "--caption",
        "sad waltz",
        "--frames",
        "10",
        "--greedy",
        "--guidance",
        "3",
        "--out",
        codes.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&codes).unwrap()).unwrap();
    let written: Vec<Vec<u32>> = serde_json::from_value(written["codes"].clone()).unwrap();

    let model = MusicGen::load(&folder, &Device::default()).unwrap();
    let options = SamplingOptions {
        decoding: Decoding::Greedy,
        guidance: Some(3.0),
        seed: 0,
    };
    let expected = model
        .generate(&["sad waltz"], 10, &options)
        .unwrap()
        .remove(0);
    assert_eq!(
        written, expected,
        "4 rows of 10 frames, as the library generates them"
    );

    let scored = ok(&musicrl(&[
        "policy",
        "score",
        "--policy",
        folder.to_str().unwrap(),
        "--caption",
        "sad waltz",
        "--codes",
        codes.to_str().unwrap(),
    ]));
    let logprob: Vec<Vec<f64>> = serde_json::from_value(scored["logprob"].clone()).unwrap();
    let want = model.score("sad waltz", &written).unwrap();
    assert_eq!(logprob.len(), 4);
    for (got, want) in logprob.iter().flatten().zip(want.iter().flatten()) {
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }
    assert_eq!(logprob[0].len(), 10);
}

#[test]
fn bad_codes_and_folders_are_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let folder = fixture();
    let folder = folder.to_str().unwrap();
    let cases = [
        (
            r#"{"codes": [[1, 2], [3, 4], [5, 6], [7, 99]]}"#,
            "code 99 at codebook 3, frame 1",
        ),
        (r#"{"codes": [[1, 2], [3, 4], [5, 6]]}"#, "this model has 4"),
        (r#"{"codes": [[1, 2], [3], [5, 6], [7, 8]]}"#, "row 1 has 1"),
        (r#"{"codes": [[1, -2]]}"#, "expected {\"codes\""),
        ("[1, 2]", "expected {\"codes\""),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("c{i}.json"));
        std::fs::write(&file, text).unwrap();
        let err = score_fails(folder, &["--codes", file.to_str().unwrap()]);
        assert!(err.contains(want), "{text}: {err}");
    }
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let file = dir.path().join("c0.json");
    let err = score_fails(
        empty.to_str().unwrap(),
        &["--codes", file.to_str().unwrap()],
    );
    assert!(err.contains("no config.json"), "{err}");
    // A folder without --codes says what to give.
    let err = score_fails(folder, &["--tokens", "1 2"]);
    assert!(err.contains("--codes"), "{err}");
}

/// `musicrl policy score --policy POLICY --caption x EXTRA…`, which must fail: its stderr.
fn score_fails(policy: &str, extra: &[&str]) -> String {
    let mut args = vec!["policy", "score", "--policy", policy, "--caption", "x"];
    args.extend_from_slice(extra);
    let out = musicrl(&args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `musicrl local --config config/musicgen-tiny.toml`, as the README runs it: the learner,
/// the reward server and two actors train the tiny MusicGen, the reward rises, the KL stays
/// bounded, the learner's log-probabilities of the actors' first clips are the actors' own;
/// then the run resumes from its checkpoint over mutual TLS with tokens and sealed rewards.
#[test]
fn musicgen_trains_in_the_whole_loop_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_arg = out.to_str().unwrap();
    let local = |extra: &[&str]| {
        let mut args = vec![
            "--config",
            "config/musicgen-tiny.toml",
            "local",
            "--out",
            out_arg,
        ];
        args.extend_from_slice(extra);
        let run = run_to_end(
            Command::new(env!("CARGO_BIN_EXE_musicrl"))
                .args(&args)
                .current_dir(repo(""))
                .env_remove("MUSICRL_CONFIG"),
        );
        let stderr = String::from_utf8_lossy(&run.stderr).to_string();
        assert!(run.status.success(), "musicrl local failed:\n{stderr}");
        assert!(stderr.contains("policy MusicGen"), "{stderr}");
        assert!(
            !stderr.contains("every actor has exited"),
            "a completed run raises no alarm:\n{stderr}"
        );
        serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(out.join("summary.json")).unwrap(),
        )
        .unwrap()
    };

    let s = local(&["--steps", "30"]);
    assert_eq!(s["steps"], 30);
    assert_eq!(s["completed"], true);
    let (first, last) = (
        s["reward_mean_first"].as_f64().unwrap(),
        s["reward_mean_last"].as_f64().unwrap(),
    );
    // Measured: 0.365 → 0.584.
    assert!(last > first + 0.1, "reward {first} -> {last}");
    let history: Vec<serde_json::Value> = std::fs::read_to_string(out.join("history.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(history.len(), 30);
    let actors_rejected: u64 = s["actor_outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["samples_rejected"].as_u64().unwrap())
        .sum();
    assert_eq!(
        s["trajectories_rejected"].as_u64().unwrap(),
        actors_rejected,
        "{s}"
    );
    for row in &history {
        let kl = row["kl"].as_f64().unwrap();
        assert!(kl.is_finite() && kl < 1.0, "{row}");
        assert_eq!(row["batch_tokens"], 16 * 32, "{row}");
    }
    let gap = history[0]["fresh_logprob_gap"]
        .as_f64()
        .expect("step 1 trains on clips of version 0 only");
    assert!(
        gap < 1e-4,
        "the learner's log-probabilities of the actors' clips: gap {gap}"
    );
    for role in ["learner", "reward-server", "actor-0", "actor-1"] {
        let log = std::fs::read_to_string(out.join(format!("logs/{role}.log"))).unwrap();
        assert!(
            !log.contains("panicked") && !log.contains("ERROR"),
            "{role}: {log}"
        );
    }

    let s = local(&["--steps", "40", "--actors", "1", "--resume", "--secure"]);
    assert_eq!(s["steps"], 40);
    assert_eq!(s["resumed_from_step"], 30);
    assert_eq!(s["secure"], true);
    assert!(s["reward_mean_last"].as_f64().unwrap() > first + 0.1, "{s}");
}

/// `musicrl local` with adapters (`policy.lora`): the whole loop trains them, the
/// checkpoint holds only them and the value head, `policy export` writes a Hugging Face
/// folder with them merged, and that folder scores a clip exactly as the checkpoint does.
#[test]
fn adapters_train_in_the_whole_loop_and_export_a_folder_that_scores_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let s = local_run(
        &[
            "--config",
            "config/musicgen-tiny.toml",
            "--set",
            "policy.lora.rank=4",
            "--set",
            r#"policy.lora.targets=["q_proj","v_proj","fc1"]"#,
            "local",
            "--steps",
            "20",
            "--actors",
            "1",
        ],
        &out,
    );
    assert_eq!(s["steps"], 20, "{s}");
    let (first, last) = (
        s["reward_mean_first"].as_f64().unwrap(),
        s["reward_mean_last"].as_f64().unwrap(),
    );
    assert!(last > first, "reward {first} -> {last}");

    let step = out.join("checkpoints/step-00000020");
    let policy = step.join("policy.bpk");
    let full = std::fs::metadata(fixture().join("model.safetensors"))
        .unwrap()
        .len();
    let saved = std::fs::metadata(&policy).unwrap().len();
    assert!(
        saved * 3 < full,
        "the checkpoint holds the adapters, not the decoder: {saved} bytes"
    );

    let exported = dir.path().join("export");
    let written = ok(&musicrl(&[
        "policy",
        "export",
        "--policy",
        policy.to_str().unwrap(),
        "--out",
        exported.to_str().unwrap(),
    ]));
    assert_eq!(written["adapters_merged"], true, "{written}");
    assert!(exported.join("config.json").is_file() && exported.join("tokenizer.json").is_file());

    let codes = dir.path().join("clip.json");
    let generated = musicrl(&[
        "policy",
        "generate",
        "--policy",
        exported.to_str().unwrap(),
        "--caption",
        "a jig",
        "--frames",
        "8",
        "--seed",
        "5",
        "--out",
        codes.to_str().unwrap(),
    ]);
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let score = |policy: &std::path::Path| -> Vec<f64> {
        let v = ok(&musicrl(&[
            "policy",
            "score",
            "--policy",
            policy.to_str().unwrap(),
            "--caption",
            "a jig",
            "--codes",
            codes.to_str().unwrap(),
        ]));
        serde_json::from_value::<Vec<Vec<f64>>>(v["logprob"].clone())
            .unwrap()
            .concat()
    };
    let (merged, unmerged, source) = (score(&exported), score(&policy), score(&fixture()));
    let worst = merged
        .iter()
        .zip(&unmerged)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-4, "export vs checkpoint: worst {worst}");
    assert_ne!(merged, source, "the adapters moved the policy");
}

/// A MusicGen configuration that does not fit its folder is refused before anything
/// starts, naming the key and the value to write.
#[test]
fn a_musicgen_configuration_that_does_not_fit_its_folder_is_refused() {
    let refused = |sets: &[&str], key: &str, hint: &str| {
        let mut args = vec!["--config", "config/musicgen-tiny.toml"];
        for s in sets {
            args.extend_from_slice(&["--set", s]);
        }
        args.extend_from_slice(&["local", "--steps", "1"]);
        let run = run_to_end(
            Command::new(env!("CARGO_BIN_EXE_musicrl"))
                .args(&args)
                .current_dir(repo(""))
                .env_remove("MUSICRL_CONFIG"),
        );
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{sets:?} was accepted");
        assert!(
            stderr.contains(key) && stderr.contains(hint),
            "{sets:?}: {stderr}"
        );
    };
    refused(
        &["policy.max_tokens=30"],
        "policy.max_tokens",
        "set policy.max_tokens = 32",
    );
    refused(
        &["policy.vocab_size=64"],
        "policy.vocab_size",
        "set policy.vocab_size = 32",
    );
    refused(&["policy.end_token=3"], "policy.end_token", "no END");
    refused(
        &["policy.folder=no/such/folder"],
        "policy.folder",
        "no/such/folder",
    );
    refused(&["policy.family=jukebox"], "policy.family", "jukebox");
    // A preference model trained on melody tokens cannot read MusicGen's codes.
    refused(
        &[
            "reward.components[0].kind=preference",
            "reward.components[0].checkpoint=models/rewards/preference",
        ],
        "reward.components",
        "trained over the melody family's tokens",
    );
}

#[test]
fn codec_decode_writes_a_float_wav_at_the_codecs_rate() {
    let dir = tempfile::tempdir().unwrap();
    let folder = PathBuf::from(repo("policy/tests/fixtures/encodec/tiny-32khz"));
    // 4 codebooks × 25 frames (half a second at 50 frames/s).
    let codes: Vec<Vec<u32>> = (0..4)
        .map(|k| (0..25).map(|t| (7 * t + 13 * k) % 64).collect())
        .collect();
    let codes_file = dir.path().join("clip.json");
    std::fs::write(
        &codes_file,
        serde_json::json!({ "codes": codes }).to_string(),
    )
    .unwrap();
    let wav_file = dir.path().join("out/clip.wav");
    let args = |codes: &std::path::Path| {
        musicrl(&[
            "codec",
            "decode",
            "--codec",
            folder.to_str().unwrap(),
            "--codes",
            codes.to_str().unwrap(),
            "--out",
            wav_file.to_str().unwrap(),
        ])
    };
    let report = ok(&args(&codes_file));
    assert_eq!(report["sample_rate"], 1600);
    assert_eq!(report["samples"], 25 * 32);
    assert!(report["codec"].as_str().unwrap().starts_with("encodec-"));

    let mut reader = hound::WavReader::open(&wav_file).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, 1600, 32)
    );
    assert_eq!(spec.sample_format, hound::SampleFormat::Float);
    let samples: Vec<f32> = reader.samples::<f32>().map(Result::unwrap).collect();
    // The same numbers the library decodes (held to transformers in policy/tests/).
    let codec = musicrl_policy::encodec::Encodec::load(&folder, &Device::flex()).unwrap();
    assert_eq!(samples, codec.decode(&codes).unwrap().channels[0]);

    // A code beyond the codebook is refused with where it is; nothing is written.
    std::fs::remove_file(&wav_file).unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"codes": [[1, 2, 64]]}"#).unwrap();
    let out = args(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("code 64 at codebook 0, frame 2"),
        "{stderr}"
    );
    assert!(!wav_file.exists());
}

/// The tiny MusicGen rewarded only through its audio (config/musicgen-tiny-audio.toml: the
/// reward server decodes each clip with an EnCodec decoder whose higher codes sound louder,
/// and scores how loud it is): the reward rises, and the trajectory log names the codec.
#[test]
fn musicgen_learns_from_what_its_codec_makes_heard() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let s = local_run(
        &[
            "--config",
            "config/musicgen-tiny-audio.toml",
            "local",
            "--insecure",
        ],
        &out,
    );
    assert_eq!(s["steps"], 60);
    let history: Vec<serde_json::Value> = std::fs::read_to_string(out.join("history.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let loudness = |rows: &[serde_json::Value]| {
        rows.iter()
            .map(|r| r["component_means"][0][1].as_f64().unwrap())
            .sum::<f64>()
            / rows.len() as f64
    };
    let (first, last) = (loudness(&history[..10]), loudness(&history[50..]));
    // Measured: 0.176 → 0.219 (about 2.6 dB louder).
    assert!(last > first + 0.02, "loudness {first} -> {last}");
    let log = std::fs::read_to_string(out.join("trajectories.jsonl")).unwrap();
    let first_line: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert!(
        first_line["scorer_version"]
            .as_str()
            .unwrap()
            .contains("+encodec-"),
        "{first_line}"
    );
}
