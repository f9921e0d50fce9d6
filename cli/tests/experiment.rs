//! `musicrl experiment --quick` as a user runs it: every recipe trained as a `musicrl local`
//! run, evaluated on held-out prompts, its checkpoint chosen and pinned, RL-RU started from
//! and anchored to RL-R's chosen checkpoint, everything judged, and the report written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use musicrl_config::PolicyConfig;
use musicrl_policy::melody::params::{encode_policy, load_policy};

use common::{TINY_POLICY, repo, run_to_end, tiny_policy};

/// A tiny policy and a token-fraction reward: `target` sets which tokens it rewards, so the
/// recipes differ.
fn tiny(target: u32) -> String {
    format!(
        r#"{TINY_POLICY}
[learner]
init_policy = ""
value_warmup_steps = 1
lr_warmup_steps = 0
batch_size = 8
learning_rate = 0.01
seed = 7

[actor]
batch_size = 8
max_backoff_seconds = 0.5
prompts = {prompts:?}

[pretrain]
corpus = {corpus:?}

[[reward.components]]
kind = "token-fraction"
target_below = {target}
"#,
        prompts = repo("data/prompts/train.txt"),
        corpus = repo("data/corpus/tunes.jsonl.gz"),
    )
}

fn policy_bytes(path: &Path, config: &PolicyConfig) -> Vec<u8> {
    let device = musicrl_policy::device::inference_device();
    encode_policy(&load_policy(path, config, &device).expect("load")).expect("encode")
}

#[test]
fn quick_experiment_runs_every_recipe_chains_rl_ru_onto_rl_r_and_writes_the_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    std::fs::write(p.join("rl-u.toml"), tiny(8)).expect("write");
    let mut main = tiny(4);
    main.push_str(&format!(
        r#"
[experiment]
eval_prompts = {select:?}
judge_prompts = {test:?}

[[experiment.recipes]]
name = "rl-r"
config = ""
steps = 100
start = "theta0"

[[experiment.recipes]]
name = "rl-u"
config = {u:?}
steps = 100
start = "theta0"

[[experiment.recipes]]
name = "rl-ru"
config = {u:?}
steps = 100
start = "rl-r"
"#,
        test = repo("data/prompts/test.txt"),
        select = repo("data/prompts/select.txt"),
        u = p.join("rl-u.toml").display().to_string(),
    ));
    let config = p.join("experiment.toml");
    std::fs::write(&config, &main).expect("write");
    let out = p.join("exp");
    let run = run_to_end(
        Command::new(env!("CARGO_BIN_EXE_musicrl"))
            .arg("--config")
            .arg(&config)
            .args(["experiment", "--quick", "--out"])
            .arg(&out)
            .env_remove("MUSICRL_CONFIG"),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "musicrl experiment failed:\n{stderr}");

    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("results.json"),
    )
    .expect("JSON");
    let runs = results["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3, "one quick run per recipe");
    let run_of = |name: &str| {
        runs.iter()
            .find(|r| r["recipe"] == name)
            .unwrap_or_else(|| panic!("no {name} run"))
    };
    for r in runs {
        // The start and the two checkpoints (every 2 of 4 steps) were evaluated.
        let curve = r["curve"].as_array().expect("curve");
        let steps: Vec<u64> = curve
            .iter()
            .map(|p| p["step"].as_u64().expect("step"))
            .collect();
        assert_eq!(steps, [0, 2, 4], "{r}");
        for key in [
            "kl",
            "train_reward",
            "judge_overall",
            "distinct_4",
            "copy_mean",
            "mean_length",
        ] {
            assert!(curve[1][key].is_number(), "{key} missing: {}", curve[1]);
        }
        // The chosen checkpoint is pinned and survives pruning.
        let chosen = PathBuf::from(r["chosen"].as_str().expect("chosen"));
        assert!(chosen.is_file(), "{} was deleted", chosen.display());
        assert!(chosen.with_file_name("PINNED").is_file());
        assert!(
            r["dir"]
                .as_str()
                .map(|d| Path::new(d).join("curve.jsonl").is_file())
                .expect("dir")
        );
    }

    // RL-RU started from RL-R's chosen checkpoint and its learner measured the KL against
    // it (the reference the learner saved with the run), not against θ0.
    let policy = tiny_policy();
    let r_chosen = PathBuf::from(run_of("rl-r")["chosen"].as_str().expect("chosen"));
    let ru = run_of("rl-ru");
    assert_eq!(ru["init_policy"].as_str(), r_chosen.to_str());
    let ru_reference =
        Path::new(ru["dir"].as_str().expect("dir")).join("checkpoints/reference.bpk");
    assert_eq!(ru_reference.to_str(), ru["reference_policy"].as_str());
    let theta0 = PathBuf::from(results["theta0"].as_str().expect("theta0"));
    assert_eq!(
        policy_bytes(&ru_reference, &policy),
        policy_bytes(&r_chosen, &policy)
    );
    assert_ne!(
        policy_bytes(&ru_reference, &policy),
        policy_bytes(&theta0, &policy)
    );
    // RL-U anchors to θ0.
    let u_reference =
        Path::new(run_of("rl-u")["dir"].as_str().expect("dir")).join("checkpoints/reference.bpk");
    assert_eq!(
        policy_bytes(&u_reference, &policy),
        policy_bytes(&theta0, &policy)
    );

    // The table has every recipe against θ0 and against each other, from the seed's judgment.
    let table = results["table"].as_array().expect("table");
    for (a, b) in [
        ("rl-r", "theta0"),
        ("rl-u", "theta0"),
        ("rl-ru", "theta0"),
        ("rl-ru", "rl-r"),
        ("rl-ru", "rl-u"),
    ] {
        let row = table
            .iter()
            .find(|r| r["a"] == a && r["b"] == b)
            .unwrap_or_else(|| panic!("no {a} vs {b} row"));
        assert_eq!(row["runs"].as_array().expect("runs").len(), 1);
    }
    assert!(out.join("judge/seed-1.json").is_file());
    for model in ["rl-r-1", "rl-u-1", "rl-ru-1", "theta0-1"] {
        let text = std::fs::read_to_string(out.join(format!("samples/{model}.jsonl")))
            .unwrap_or_else(|_| panic!("samples of {model}"));
        // 6 prompts × 1 pair, each with its assessment.
        assert_eq!(text.lines().count(), 6, "{model}");
        assert!(text.contains("\"assessment\""));
        // Every sample's melody for music tools: an ABC tune book and a MIDI file each.
        let book = std::fs::read_to_string(out.join(format!("samples/{model}.abc"))).expect("ABC");
        assert_eq!(book.matches("\nK:").count(), 6, "{model}");
        assert!(out.join(format!("samples/midi/{model}/0006.mid")).is_file());
    }
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(
        html.matches("<svg").count() >= 8,
        "the report has its plots"
    );
    assert!(
        html.contains("Side by side") && html.contains("<audio"),
        "table and players"
    );
    assert!(html.contains(".mid\">MIDI</a>") && html.contains(".abc\">ABC</a>"));

    // The report rebuilds from the folder alone.
    std::fs::remove_file(out.join("report.html")).expect("remove");
    let again = run_to_end(
        Command::new(env!("CARGO_BIN_EXE_musicrl"))
            .arg("--config")
            .arg(&config)
            .arg("report")
            .arg(&out),
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(out.join("report.html").is_file());
}
