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
