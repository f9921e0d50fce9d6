//! `musicrl pretrain` then `musicrl generate`, as a user runs them, on a tiny policy.

use std::path::{Path, PathBuf};
use std::process::Command;

const TINY: &str = r#"
[policy]
vocab_size = 64
max_tokens = 32
d_model = 32
n_heads = 2
n_layers = 1
d_ff = 64
caption_buckets = 256
max_caption_words = 16

[pretrain]
epochs = 2
batch_size = 16
learning_rate = 0.01
max_tunes = 96
decode_check_samples = 16
"#;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/corpus/tunes.jsonl.gz")
}

fn musicrl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_musicrl"))
        .args(args)
        .env_remove("MUSICRL_CONFIG")
        .output()
        .expect("musicrl runs")
}

/// Pretrains the tiny policy into `dir/model` and returns that folder.
fn pretrain_tiny(dir: &Path) -> PathBuf {
    let config = dir.join("tiny.toml");
    std::fs::write(&config, TINY).expect("write");
    let model = dir.join("model");
    let run = musicrl(&[
        "--config",
        config.to_str().expect("utf-8"),
        "pretrain",
        "--out",
        model.to_str().expect("utf-8"),
        "--corpus",
        corpus().to_str().expect("utf-8"),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    model
}

#[test]
fn pretrain_writes_a_policy_that_generate_turns_into_wavs_and_a_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = pretrain_tiny(dir.path());
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model.join("metrics.json")).expect("metrics.json"),
    )
    .expect("JSON");
    let ppl = metrics["validation_perplexity"].as_f64().expect("ppl");
    let unigram = metrics["unigram_validation_perplexity"]
        .as_f64()
        .expect("unigram");
    assert!(
        ppl.is_finite() && unigram.is_finite() && ppl < unigram,
        "{metrics}"
    );
    assert!(model.join("config.toml").exists());

    let out = dir.path().join("samples");
    let run = musicrl(&[
        "generate",
        "--policy",
        model.join("policy.bpk").to_str().expect("utf-8"),
        "--caption",
        "a lively jig in D major on fiddle",
        "--caption",
        "a slow air on flute",
        "--n",
        "2",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let html = std::fs::read_to_string(out.join("index.html")).expect("index.html");
    assert_eq!(html.matches("<audio controls").count(), 4);
    assert!(html.contains("a lively jig in D major on fiddle") && html.contains("flute"));
    for c in 0..2 {
        for s in 0..2 {
            let wav = out.join(format!("caption{c}-sample{s}.wav"));
            let mut reader = hound::WavReader::open(&wav).expect("a WAV");
            let spec = reader.spec();
            assert_eq!((spec.channels, spec.bits_per_sample), (1, 16));
            assert!(spec.sample_rate >= 16_000);
            let samples: Vec<i16> = reader
                .samples::<i16>()
                .map(|x| x.expect("sample"))
                .collect();
            let peak = samples
                .iter()
                .map(|x| i32::from(*x).abs())
                .max()
                .unwrap_or(0);
            // Not silent unless the model ended at once; never clipped (peak-normalised to 0.8).
            assert!(
                peak <= (0.8 * 32767.0) as i32 + 1,
                "{} clips",
                wav.display()
            );
            assert!(
                out.join(format!("caption{c}-sample{s}.tokens.txt"))
                    .exists()
            );
            // The melody for other tools: a MIDI file that parses, ABC that names the tune.
            let mid = std::fs::read(out.join(format!("caption{c}-sample{s}.mid"))).expect("MIDI");
            assert_eq!(&mid[..4], b"MThd", "a standard MIDI file");
            let abc = std::fs::read_to_string(out.join(format!("caption{c}-sample{s}.abc")))
                .expect("ABC");
            assert!(
                abc.starts_with("X:1\nT:") && abc.contains("\nM:") && abc.contains("\nK:"),
                "{abc}"
            );
            assert!(html.contains(&format!("caption{c}-sample{s}.mid")));
        }
    }

    // The rater panel judges the policy against itself on the shipped test prompts and
    // exports every clip; re-judging the export reads back exactly the same clips (the
    // panel's measures of each model are identical).
    let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/prompts/test.txt");
    let judged = dir.path().join("judge");
    let policy = model.join("policy.bpk");
    let run = musicrl(&[
        "--config",
        dir.path().join("tiny.toml").to_str().expect("utf-8"),
        "judge",
        "--policy",
        policy.to_str().expect("utf-8"),
        "--name",
        "tiny",
        "--baseline",
        policy.to_str().expect("utf-8"),
        "--prompts",
        prompts.to_str().expect("utf-8"),
        "--pairs-per-prompt",
        "1",
        "--out",
        judged.to_str().expect("utf-8"),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("tiny vs model"));
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(judged.join("results.json")).expect("results.json"),
    )
    .expect("JSON");
    let c = &results["report"]["comparisons"][0];
    // 101 prompts × 1 pair × 3 raters.
    assert_eq!(c["judgments"], 303, "{c}");
    let total = ["wins", "ties", "losses"]
        .iter()
        .map(|k| c[k].as_u64().expect("count"))
        .sum::<u64>();
    assert_eq!(total, 303);
    let exported = [
        judged.join("samples/tiny.jsonl"),
        judged.join("samples/model.jsonl"),
    ];
    for f in &exported {
        let text = std::fs::read_to_string(f).expect("exported samples");
        assert_eq!(text.lines().count(), 101, "{}", f.display());
        let first: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("a line")).expect("JSON");
        assert!(
            first["assessment"]["well_formed"]["overall"].is_number(),
            "{first}"
        );
    }
    let rejudged = dir.path().join("rejudge");
    let run = musicrl(&[
        "judge",
        "--samples",
        exported[0].to_str().expect("utf-8"),
        "--samples",
        exported[1].to_str().expect("utf-8"),
        "--out",
        rejudged.to_str().expect("utf-8"),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let again: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(rejudged.join("results.json")).expect("results.json"),
    )
    .expect("JSON");
    let d = &again["report"]["comparisons"][0];
    // Models are ordered by name on import ("model" before "tiny"): the same judgments, seen
    // from the other side.
    assert_eq!(
        (d["a"].as_str(), d["b"].as_str()),
        (Some("model"), Some("tiny"))
    );
    assert_eq!(d["judgments"], 303);
    let measured = |report: &serde_json::Value, model: &str| {
        report["report"]["models"]
            .as_array()
            .expect("models")
            .iter()
            .find(|m| m["model"] == model)
            .map(|m| {
                [
                    "measured_adherence",
                    "measured_well_formed",
                    "ended",
                    "mean_length",
                ]
                .map(|k| m[k].as_f64().expect("a number"))
            })
            .expect("the model is reported")
    };
    for model in ["tiny", "model"] {
        assert_eq!(
            measured(&results, model),
            measured(&again, model),
            "{model}"
        );
    }
    // A malformed sample is refused with its file and line.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"model\":\"x\",\"prompt\":0,\"caption\":\"a jig\",\"tokens\":[99]}\n",
    )
    .expect("write");
    let run = musicrl(&[
        "judge",
        "--samples",
        bad.to_str().expect("utf-8"),
        "--out",
        rejudged.to_str().expect("utf-8"),
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("bad.jsonl:1") && stderr.contains("99"),
        "{stderr}"
    );
}

#[test]
fn simulate_keeps_one_population_per_store_and_evaluate_judges_a_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = pretrain_tiny(dir.path());
    let policy = model.join("policy.bpk");
    let store = dir.path().join("prefs/store.jsonl");
    let population = dir.path().join("prefs/population.json");
    let corpus = corpus();
    let simulate = |extra: &[&str]| {
        let mut args = vec![
            "preferences",
            "simulate",
            "--policy",
            policy.to_str().expect("utf-8"),
            "--store",
            store.to_str().expect("utf-8"),
            "--corpus",
            corpus.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        musicrl(&args)
    };
    let lines = || {
        std::fs::read_to_string(&store)
            .expect("the store")
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
            .collect::<Vec<_>>()
    };

    let run = simulate(&["--pairs", "12", "--listeners", "7"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let drawn = std::fs::read(&population).expect("population.json");
    let listeners: serde_json::Value = serde_json::from_slice(&drawn).expect("JSON");
    assert_eq!(listeners["ideals"].as_array().map(Vec::len), Some(7));
    assert_eq!(listeners["importance"].as_array().map(Vec::len), Some(7));

    // Appending with the same seed reuses the population and samples new pairs.
    let run = simulate(&["--pairs", "8"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(std::fs::read(&population).expect("population.json"), drawn);
    let choices = lines();
    assert_eq!(choices.len(), 20);
    let distinct: std::collections::HashSet<String> = choices
        .iter()
        .map(|c| format!("{}|{}", c["a"], c["b"]))
        .collect();
    assert_eq!(
        distinct.len(),
        20,
        "the second run repeated pairs of the first"
    );
    assert!(choices.iter().all(|c| {
        c["who"]
            .as_str()
            .and_then(|w| w.strip_prefix("listener-"))
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n < 7)
    }));

    // Shaping a new population over an existing store is refused and changes nothing.
    let run = simulate(&["--pairs", "4", "--listeners", "3"]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("already holds a population"), "{stderr}");
    assert_eq!(lines().len(), 20);
    assert_eq!(std::fs::read(&population).expect("population.json"), drawn);

    // The listeners judge a policy against a baseline (here the same policy: no clear winner).
    let evaluate = |population: &Path| {
        musicrl(&[
            "preferences",
            "evaluate",
            "--policy",
            policy.to_str().expect("utf-8"),
            "--baseline",
            policy.to_str().expect("utf-8"),
            "--population",
            population.to_str().expect("utf-8"),
            "--prompts",
            "6",
            "--pairs-per-prompt",
            "4",
            "--corpus",
            corpus.to_str().expect("utf-8"),
        ])
    };
    let run = evaluate(&population);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON");
    assert_eq!(report["pairs"], 24);
    let (wins, rate, expected) = (
        report["wins"].as_u64().expect("wins"),
        report["win_rate"].as_f64().expect("win rate"),
        report["expected_win_rate"].as_f64().expect("expected"),
    );
    assert!((rate - wins as f64 / 24.0).abs() < 1e-9, "{report}");
    assert!((0.2..=0.8).contains(&expected), "{report}");
    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        r#"{"ideals": [], "importance": [], "temperature": 1.0}"#,
    )
    .expect("write");
    let run = evaluate(&broken);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("at least one listener"), "{stderr}");

    // A store without its population cannot be appended to.
    std::fs::remove_file(&population).expect("remove");
    let run = simulate(&["--pairs", "4"]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("population.json is missing"), "{stderr}");
    assert_eq!(lines().len(), 20);
}

#[test]
fn judge_with_rewards_reports_how_often_a_reward_orders_clips_as_the_judge_does() {
    // Two clips of one jig caption: a tune in 6/8 bars on high notes, and a low drone with
    // no bar lines. The judge prefers the tune on meter and on well-formedness; the
    // token-fraction scorer (the share of token ids below 16: low pitches, BAR, END) prefers
    // the drone. So it orders the only pair against the judge: concordance 0.
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, results, stdout) = judge_jig_and_drone(
        dir.path(),
        "[[reward.components]]\nkind = \"token-fraction\"\ntarget_below = 16\n",
    );
    assert!(stdout.contains("reward-judge concordance"));
    let find = |reward: &str, measure: &str| {
        results["agreement"]["concordance"]
            .as_array()
            .expect("concordance rows")
            .iter()
            .find(|c| c["reward"] == reward && c["measure"] == measure)
            .cloned()
            .unwrap_or_else(|| panic!("no {reward}/{measure} row: {results}"))
    };
    for measure in ["meter", "well_formed"] {
        let c = find("token-fraction", measure);
        assert_eq!(
            (c["pairs"].as_u64(), c["concordance"].as_f64()),
            (Some(1), Some(0.0)),
            "{c}"
        );
        // The combined reward is the one component here.
        assert_eq!(find("reward", measure)["concordance"].as_f64(), Some(0.0));
    }
    // The caption claims no key: no pair for the key.
    assert_eq!(find("token-fraction", "key")["pairs"].as_u64(), Some(0));
    // Each exported clip carries its rewards: 25 of the drone's 49 tokens are below 16.
    let drone_line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(out.join("samples/drone.jsonl"))
            .expect("export")
            .lines()
            .next()
            .expect("a line"),
    )
    .expect("JSON");
    let r = drone_line["rewards"]["token-fraction"]
        .as_f64()
        .expect("a reward");
    assert!((r - 25.0 / 49.0).abs() < 1e-6, "{drone_line}");
}

/// Two clips of one jig caption, exported as `judge --samples` reads them: a tune in 6/8 bars
/// of eighth notes on high pitches, and a low drone of the same length with no bar lines.
fn jig_and_drone(dir: &Path) -> PathBuf {
    let (dur6, bar, end) = (53u32, 1u32, 0u32);
    let mut tune = Vec::new();
    for b in 0..4 {
        if b > 0 {
            tune.push(bar);
        }
        for p in [30u32, 32, 34, 35, 34, 32] {
            tune.extend([p, dur6]);
        }
    }
    tune.push(end);
    let mut drone: Vec<u32> = std::iter::repeat_n([5u32, dur6], 24).flatten().collect();
    drone.push(end);
    let caption = "A jig in 6/8 time, played on fiddle";
    let samples = dir.join("clips.jsonl");
    let line = |model: &str, tokens: &[u32]| {
        serde_json::json!({"model": model, "prompt": 0, "caption": caption, "tokens": tokens})
            .to_string()
    };
    std::fs::write(
        &samples,
        format!("{}\n{}\n", line("tune", &tune), line("drone", &drone)),
    )
    .expect("write");
    samples
}

/// `musicrl judge --rewards` over the jig/drone pair with the reward components of
/// `components` (TOML); returns the output folder and its results.json.
fn judge_jig_and_drone(dir: &Path, components: &str) -> (PathBuf, serde_json::Value, String) {
    let config = dir.join("rewards.toml");
    std::fs::write(&config, components).expect("write");
    let samples = jig_and_drone(dir);
    let out = dir.join("judged");
    let run = musicrl(&[
        "--config",
        config.to_str().expect("utf-8"),
        "judge",
        "--samples",
        samples.to_str().expect("utf-8"),
        "--rewards",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("results.json"),
    )
    .expect("JSON");
    (
        out,
        results,
        String::from_utf8_lossy(&run.stdout).into_owned(),
    )
}

/// The reward `component` gave the first clip of `model` in a `judge --rewards` export.
fn exported_reward(out: &Path, model: &str, component: &str) -> f64 {
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(out.join(format!("samples/{model}.jsonl")))
            .expect("export")
            .lines()
            .next()
            .expect("a line"),
    )
    .expect("JSON");
    line["rewards"][component].as_f64().expect("a reward")
}

/// The judge's results order the jig/drone pair by `measure` as `reward` does: one pair,
/// concordance 1.
fn assert_orders_the_one_pair(results: &serde_json::Value, reward: &str, measure: &str) {
    let row = results["agreement"]["concordance"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|c| c["reward"] == reward && c["measure"] == measure)
        .cloned()
        .unwrap_or_else(|| panic!("a {reward}/{measure} row"));
    assert_eq!(
        (row["pairs"].as_u64(), row["concordance"].as_f64()),
        (Some(1), Some(1.0)),
        "{row}"
    );
}

#[test]
fn the_attributes_reward_hears_the_bars_the_judge_reads() {
    // The caption claims 6/8 and a jig: the tune's downbeat accents fall every three
    // quarters, the drone has none, so the rule-based reward orders the pair as the judge.
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, results, _) =
        judge_jig_and_drone(dir.path(), "[[reward.components]]\nkind = \"attributes\"\n");
    assert_orders_the_one_pair(&results, "attributes", "meter");
    let reward = |model: &str| exported_reward(&out, model, "attributes");
    // Every bar of the tune is heard as a 6/8 (and jig) bar; the drone has no bar at all.
    assert_eq!((reward("tune"), reward("drone")), (1.0, 0.0));
}

#[test]
fn the_form_reward_hears_the_form_the_judge_reads() {
    // The tune keeps its bars and closes on a whole one; the drone has no bar, one pitch and
    // no variety: the rule-based form reward orders the pair as the judge's well-formedness.
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, results, _) =
        judge_jig_and_drone(dir.path(), "[[reward.components]]\nkind = \"form\"\n");
    assert_orders_the_one_pair(&results, "form", "well_formed");
    let reward = |model: &str| exported_reward(&out, model, "form");
    let (tune, drone) = (reward("tune"), reward("drone"));
    // The drone keeps only its range (one pitch is singable): no bar is heard, and one
    // pitch repeated is no variety.
    assert!(drone < 0.3, "{drone}");
    assert!(tune > 0.5, "{tune}");
}

#[test]
fn train_reward_reports_its_concordance_on_the_policys_own_clips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let samples = jig_and_drone(dir.path());
    let out = dir.path().join("text");
    let run = musicrl(&[
        "train-reward",
        "text",
        "--tunes",
        "16",
        "--epochs",
        "1",
        "--eval",
        "8",
        "--on-policy-clips",
        "0",
        "--on-policy-samples",
        samples.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(
        err.contains("on the policy's own clips (2, models drone, tune)"),
        "{err}"
    );
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("metrics.json")).expect("metrics.json"),
    )
    .expect("JSON");
    let on_policy = &metrics["on_policy"];
    assert_eq!(on_policy["clips"].as_u64(), Some(2), "{on_policy}");
    // One pair of one caption, told apart by the judge on meter and adherence; the caption
    // states no key. The model orders it one way or the other (or ties): 0, ½ or 1.
    let c = &on_policy["concordance"];
    assert_eq!(c["meter"]["pairs"].as_u64(), Some(1), "{c}");
    assert_eq!(c["key"]["pairs"].as_u64(), Some(0), "{c}");
    let v = c["adherence"]["concordance"].as_f64().expect("a share");
    assert!([0.0, 0.5, 1.0].contains(&v), "{c}");
}
