//! The preference database from the command line: a JSONL store imported and exported back
//! byte for byte, a preference model trained from the database and recorded in it, and a
//! second round trained only on the votes after the first model, continuing from it.

mod common;

use std::process::Command;

use common::{TINY_POLICY, run_to_end};

fn musicrl(config: &std::path::Path, args: &[&str]) -> (String, String) {
    let out = run_to_end(
        Command::new(env!("CARGO_BIN_EXE_musicrl"))
            .arg("--config")
            .arg(config)
            .args(args),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "musicrl {args:?} failed:\n{stderr}");
    (stdout, stderr)
}

/// `n` choices between two melodies over the tiny vocabulary, from `start`, as musicrl
/// writes a store.
fn store(n: usize, start: u64) -> String {
    let choices: Vec<musicrl_prefdb::Choice> = (0..n as u32)
        .map(|i| musicrl_prefdb::Choice {
            caption: "a jig in d".into(),
            a: (0..10).map(|k| (i * 3 + k * 5) % 14 + 1).collect(),
            b: (0..7).map(|k| (i + k * 2) % 14 + 1).collect(),
            choice: if (i * 7) % 3 == 0 { "b" } else { "a" }.into(),
            who: format!("listener-{}", i % 5),
            when: start + u64::from(i),
            codebooks: None,
        })
        .collect();
    musicrl_prefdb::jsonl::store_text(&choices)
}

/// The tiny policy's configuration in `dir`, starting from a seeded random policy.
fn tiny_config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("tiny.toml");
    std::fs::write(
        &config,
        format!("{TINY_POLICY}\n[learner]\ninit_policy = \"\"\n"),
    )
    .expect("writes");
    config
}

#[test]
fn the_database_round_trips_the_store_and_trains_versioned_preference_models() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tiny_config(dir.path());
    let db = format!("sqlite:{}", dir.path().join("prefs.db").display());
    let first = dir.path().join("first.jsonl");
    std::fs::write(&first, store(40, 1_800_000_000)).expect("writes");

    let (out, _) = musicrl(
        &config,
        &[
            "preferences",
            "import",
            first.to_str().expect("utf-8"),
            "--db",
            &db,
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["inserted"], 40, "{out}");
    let back = dir.path().join("back.jsonl");
    musicrl(
        &config,
        &[
            "preferences",
            "export",
            back.to_str().expect("utf-8"),
            "--format",
            "store",
            "--db",
            &db,
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&back).expect("reads"),
        std::fs::read_to_string(&first).expect("reads"),
        "the store comes back byte for byte"
    );

    // Round 1: every vote.
    let v1_dir = dir.path().join("pref-1");
    let (out, err) = musicrl(
        &config,
        &[
            "train-reward",
            "preference",
            "--db",
            &db,
            "--out",
            v1_dir.to_str().expect("utf-8"),
            "--epochs",
            "1",
        ],
    );
    let m1: serde_json::Value = serde_json::from_str(&out).expect("JSON metrics");
    let v1 = m1["version"].as_str().expect("a version").to_string();
    assert!(err.contains("40 decisive votes"), "{err}");
    assert!(err.contains(&format!("recorded {v1}")), "{err}");

    // Round 2: only the votes after round 1, continuing from its model.
    let second = dir.path().join("second.jsonl");
    std::fs::write(&second, store(20, 1_900_000_000)).expect("writes");
    musicrl(
        &config,
        &[
            "preferences",
            "import",
            second.to_str().expect("utf-8"),
            "--db",
            &db,
        ],
    );
    let v2_dir = dir.path().join("pref-2");
    let (out, err) = musicrl(
        &config,
        &[
            "train-reward",
            "preference",
            "--db",
            &db,
            "--after-version",
            &v1,
            "--continue-from",
            v1_dir.to_str().expect("utf-8"),
            "--out",
            v2_dir.to_str().expect("utf-8"),
            "--epochs",
            "1",
        ],
    );
    let v2 = serde_json::from_str::<serde_json::Value>(&out).expect("JSON")["version"]
        .as_str()
        .expect("a version")
        .to_string();
    assert!(
        err.contains("20 decisive votes"),
        "only the new votes: {err}"
    );
    assert_ne!(v1, v2);

    let (out, _) = musicrl(&config, &["preferences", "status", "--db", &db]);
    let status: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(status["schema_version"], 3);
    assert_eq!(status["rows"]["votes"], 60);
    assert_eq!(status["model_versions"], serde_json::json!([v1, v2]));

    // An unknown version is a clear error.
    let out = run_to_end(
        Command::new(env!("CARGO_BIN_EXE_musicrl"))
            .arg("--config")
            .arg(&config)
            .args([
                "preferences",
                "export",
                "-",
                "--after-version",
                "preference-nope",
                "--db",
                &db,
            ]),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model version \"preference-nope\""));
}

#[test]
fn exports_round_trip_with_default_flags_carrying_the_channel_and_each_clips_audio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tiny_config(dir.path());
    let path = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_string();
    let db = |name: &str| format!("sqlite:{}", path(name));
    let store_file = path("store.jsonl");
    std::fs::write(&store_file, store(12, 1_800_000_000)).expect("writes");
    musicrl(
        &config,
        &["preferences", "import", &store_file, "--db", &db("a.db")],
    );
    // Default flags: export writes RLHF rows, import reads the format off the file.
    let first = path("first.jsonl");
    musicrl(
        &config,
        &["preferences", "export", &first, "--db", &db("a.db")],
    );
    let text = std::fs::read_to_string(&first).expect("reads");
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(rows.len(), 12);
    assert!(rows.iter().all(|r| r["channel"] == "import"), "{text}");
    // One vote came from the bot: the channel survives an import and an export.
    let edited = text.replacen("\"channel\":\"import\"", "\"channel\":\"bot\"", 1);
    assert_ne!(edited, text);
    let edited_file = path("edited.jsonl");
    std::fs::write(&edited_file, &edited).expect("writes");
    let (out, _) = musicrl(
        &config,
        &["preferences", "import", &edited_file, "--db", &db("b.db")],
    );
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["inserted"], 12, "{out}");
    let second = path("second.jsonl");
    musicrl(
        &config,
        &["preferences", "export", &second, "--db", &db("b.db")],
    );
    assert_eq!(
        std::fs::read_to_string(&second).expect("reads"),
        edited,
        "RLHF rows come back byte for byte"
    );

    // The datasets folder: one Parquet file with every clip's audio, and it imports back.
    let hf = path("hf");
    musicrl(
        &config,
        &[
            "preferences",
            "export",
            &hf,
            "--format",
            "hf",
            "--db",
            &db("b.db"),
        ],
    );
    let parquet = std::fs::read(dir.path().join("hf").join(musicrl_prefdb::hf::DATA))
        .expect("the Parquet file");
    assert_eq!(&parquet[..4], b"PAR1");
    assert!(
        std::fs::read_to_string(dir.path().join("hf/README.md"))
            .expect("a dataset card")
            .contains("load_dataset")
    );
    musicrl(
        &config,
        &["preferences", "import", &hf, "--db", &db("c.db")],
    );
    let third = path("third.jsonl");
    musicrl(
        &config,
        &["preferences", "export", &third, "--db", &db("c.db")],
    );
    assert_eq!(std::fs::read_to_string(&third).expect("reads"), edited);

    // A file that is neither format is refused by name, and the database is untouched.
    let odd = path("odd.jsonl");
    std::fs::write(&odd, "{\"song\": 1}\n").expect("writes");
    let out = run_to_end(
        Command::new(env!("CARGO_BIN_EXE_musicrl"))
            .arg("--config")
            .arg(&config)
            .args(["preferences", "import", &odd, "--db", &db("c.db")]),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("odd.jsonl:1") && err.contains("--format"),
        "{err}"
    );
}
