//! `musicrl local` as a user runs it: separate processes on loopback, a summary at the end,
//! and `--resume` continuing the same run.

mod common;

use std::path::Path;
use std::process::Command;

use common::{TINY_POLICY, run_to_end, tiny_policy};

const TINY_REST: &str = r#"
[learner]
init_policy = ""
value_warmup_steps = 2   # short: these tests train a few dozen steps
lr_warmup_steps = 0
batch_size = 8
learning_rate = 0.01
checkpoint_every = 10

[actor]
batch_size = 8
max_backoff_seconds = 0.5

[[reward.components]]
kind = "token-fraction"
target_below = 4
"#;

/// The tiny configuration with the repository's prompt file (tests run from the crate's
/// folder).
fn tiny_config() -> String {
    let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/prompts/train.txt");
    format!("{TINY_POLICY}{TINY_REST}").replace(
        "[actor]\n",
        &format!("[actor]\nprompts = {:?}\n", prompts.display().to_string()),
    )
}

fn musicrl(config: &Path, args: &[&str]) -> std::process::Output {
    run_to_end(
        Command::new(env!("CARGO_BIN_EXE_musicrl"))
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("MUSICRL_CONFIG"),
    )
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary.json"))
        .expect("JSON")
}

#[test]
fn local_runs_every_role_and_writes_a_summary_then_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, tiny_config()).expect("write config");
    let out = dir.path().join("out");
    let out_arg = out.to_str().expect("utf-8 path");

    let run = musicrl(
        &config,
        &["local", "--steps", "40", "--actors", "2", "--out", out_arg],
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "musicrl local failed:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stderr.contains("every actor has exited"),
        "a completed run raises no alarm:\n{stderr}"
    );
    let s = summary(&out);
    for key in [
        "steps",
        "trajectories_accepted",
        "trajectories_rejected",
        "trajectories_after_end",
        "reward_mean_first",
        "reward_mean_last",
        "kl_last",
        "policy_version",
        "max_policy_version_seen_by_actors",
        "samples_per_second",
        "wall_seconds",
    ] {
        assert!(s.get(key).is_some(), "summary lacks {key}: {s}");
    }
    assert_eq!(s["steps"], 40);
    assert_eq!(s["completed"], true);
    // Secure by default: mutual TLS, tokens and seals from a CA written to OUT/security,
    // every reward sealed and verified.
    assert_eq!(s["secure"], true, "{s}");
    assert!(out.join("security/ca.pem").is_file());
    let rejected = &s["accounting"]["rejected"];
    for reason in [
        "forged_reward",
        "unsealed_reward",
        "replayed_seal",
        "expired_seal",
    ] {
        assert!(
            rejected.get(reason).is_none(),
            "every sealed reward verified: {rejected}"
        );
    }
    // Pushes that met the end of training are no fault: counted apart, as the actors count
    // them, and a completed run has rejected nothing.
    assert_eq!(s["trajectories_rejected"], 0, "{s}");
    let after_end: u64 = s["actor_outcomes"]
        .as_array()
        .expect("actor outcomes")
        .iter()
        .map(|a| a["samples_after_end"].as_u64().expect("u"))
        .sum();
    assert_eq!(s["trajectories_after_end"].as_u64(), Some(after_end), "{s}");
    let (first, last) = (
        s["reward_mean_first"].as_f64().expect("f"),
        s["reward_mean_last"].as_f64().expect("f"),
    );
    assert!(last > first + 0.1, "reward {first} -> {last}");
    assert!(s["max_policy_version_seen_by_actors"].as_u64().expect("u") > 1);
    assert!(s["kl_last"].as_f64().expect("f").is_finite());

    // The end answers "did the music get better?" in words, not JSON: each component first
    // -> last, and the simulated panel's verdict on θ0 against the final policy, with the
    // report that shows both side by side (players and sheet music).
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(!stdout.trim_start().starts_with('{'), "{stdout}");
    assert!(stdout.contains("token-fraction"), "{stdout}");
    assert!(
        stdout.contains("did the music get better? the simulated rater panel"),
        "{stdout}"
    );
    let first_tf = s["component_means_first"]["token-fraction"]
        .as_f64()
        .expect("f");
    let last_tf = s["component_means_last"]["token-fraction"]
        .as_f64()
        .expect("f");
    assert!(last_tf > first_tf, "{first_tf} -> {last_tf}");
    let v = &s["verdict"];
    let judged = ["wins", "ties", "losses"]
        .iter()
        .map(|k| v[k].as_u64().expect("a count"))
        .sum::<u64>();
    assert!(judged > 0, "{v}");
    assert_eq!(v["prompts"], 24, "{v}");
    assert!(
        v["before"]
            .as_str()
            .expect("a path")
            .ends_with("reference.bpk")
    );
    for model in ["before", "after"] {
        let clips = std::fs::read_to_string(out.join(format!("verdict/samples/{model}.jsonl")))
            .expect("the judged clips");
        assert_eq!(clips.lines().count(), 48, "{model}");
    }
    let page = std::fs::read_to_string(out.join("report.html")).expect("the run report");
    assert!(page.contains("Did the music get better?"), "report");
    assert!(
        page.contains("<b>simulated</b>"),
        "the report says the panel is simulated"
    );
    assert!(
        page.contains("class=\"score\" data-abc=\"X:"),
        "sheet music"
    );
    assert!(out.join("abcjs-basic-min.js").is_file());
    assert!(out.join("audio/verdict-after-p0.wav").is_file());
    for role in ["learner", "reward-server", "actor-0", "actor-1"] {
        let log =
            std::fs::read_to_string(out.join(format!("logs/{role}.log"))).expect("a log per role");
        assert!(!log.contains("panicked"), "{role}: {log}");
    }

    // The ledger balances: what was received was trained, dropped or rejected.
    let balanced = |s: &serde_json::Value| {
        let a = &s["accounting"];
        let sum = |k: &str| -> u64 {
            a[k].as_object()
                .map(|m| m.values().filter_map(serde_json::Value::as_u64).sum())
                .unwrap_or(0)
        };
        let n = |k: &str| a[k].as_u64().expect("a count");
        assert_eq!(n("sampled"), n("received") + sum("lost"), "{a}");
        assert_eq!(
            n("received"),
            n("trained") + sum("dropped") + sum("rejected") + n("pending"),
            "{a}"
        );
        n("trained")
    };
    assert_eq!(balanced(&s), 40 * 8);

    // A second run into the same folder is refused, and the first run is intact.
    let again = musicrl(
        &config,
        &["local", "--steps", "4", "--actors", "1", "--out", out_arg],
    );
    let e = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success());
    assert!(
        e.contains("holds a previous run") && e.contains("step 40") && e.contains("--overwrite"),
        "{e}"
    );
    assert_eq!(summary(&out)["steps"], 40);
    assert!(out.join("checkpoints/LATEST").is_file());
    // Resuming a run that already has its steps: nothing to do, said so, nothing changed.
    let done = musicrl(
        &config,
        &["local", "--steps", "30", "--out", out_arg, "--resume"],
    );
    let e = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{e}");
    assert!(
        e.contains("already at step 40") && e.contains("nothing to do"),
        "{e}"
    );
    assert!(!String::from_utf8_lossy(&done.stdout).contains("NaN"));
    assert_eq!(summary(&out)["steps"], 40);
    // --resume where there is no run is an error, not a fresh start.
    let missing = dir.path().join("no-such-run");
    let lost = musicrl(
        &config,
        &[
            "local",
            "--steps",
            "4",
            "--out",
            missing.to_str().expect("utf-8"),
            "--resume",
        ],
    );
    let e = String::from_utf8_lossy(&lost.stderr);
    assert!(!lost.status.success());
    assert!(e.contains("holds no run to continue"), "{e}");
    assert!(!missing.exists(), "nothing is created");

    // Continue the same run to 50 steps, this time without TLS, tokens or seals.
    let run = musicrl(
        &config,
        &[
            "local",
            "--steps",
            "50",
            "--actors",
            "1",
            "--out",
            out_arg,
            "--resume",
            "--insecure",
        ],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let s = summary(&out);
    assert_eq!(s["steps"], 50);
    assert_eq!(s["resumed_from_step"], 40);
    assert_eq!(s["secure"], false);
    assert_eq!(
        balanced(&s),
        50 * 8,
        "the ledger continues across the resume"
    );
    // The prompt stream continues: actor-0's first captions after the resume are not its
    // first captions of the run (the same seed once replayed them).
    let log = std::fs::read_to_string(out.join("trajectories.jsonl")).expect("trajectory log");
    let first_captions = |after: u64| -> Vec<String> {
        let mut seen = Vec::new();
        for v in log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["actor"] == "actor-0")
            .filter(|v| {
                v["policy_version"]
                    .as_u64()
                    .is_some_and(|p| (p >= 40) == (after >= 40))
            })
        {
            let c = v["caption"].as_str().expect("a caption").to_string();
            if !seen.contains(&c) {
                seen.push(c);
            }
            if seen.len() == 4 {
                break;
            }
        }
        seen
    };
    let (start, resumed) = (first_captions(0), first_captions(40));
    assert_eq!(resumed.len(), 4, "{log}");
    assert_ne!(start, resumed, "a resumed run replays its first prompts");
}

/// SIGTERM (how Kubernetes stops a Job's pod) stops the run cleanly: the learner
/// checkpoints, summary.json says how far it got and why it stopped, and the exit code says
/// it was stopped; `--resume` continues from there.
#[cfg(unix)]
#[test]
fn sigterm_stops_local_with_a_summary_and_a_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, tiny_config()).expect("write config");
    let out = dir.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_musicrl"))
        .arg("--config")
        .arg(&config)
        .args([
            "local",
            "--steps",
            "100000",
            "--actors",
            "1",
            "--insecure",
            "--out",
        ])
        .arg(&out)
        .env_remove("MUSICRL_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("musicrl local starts");
    // Wait for a few learner steps.
    let history = out.join("history.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while std::fs::read_to_string(&history)
        .map(|h| h.lines().count())
        .unwrap_or(0)
        < 3
    {
        assert!(std::time::Instant::now() < deadline, "no learner steps");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "local exited early"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    sigterm(child.id());
    let output = child.wait_with_output().expect("musicrl local exits");
    let e = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(143), "{e}");
    assert!(e.contains("SIGTERM"), "{e}");
    let s = summary(&out);
    assert_eq!(s["completed"], false, "{s}");
    assert_eq!(s["interrupted"], "SIGTERM", "{s}");
    let steps = s["steps"].as_u64().expect("steps");
    assert!(steps >= 3, "{s}");
    assert!(
        out.join("checkpoints/LATEST").is_file(),
        "the learner checkpointed"
    );
    let target = (steps + 2).to_string();
    let resumed = musicrl(
        &config,
        &[
            "local",
            "--steps",
            &target,
            "--actors",
            "1",
            "--insecure",
            "--out",
            out.to_str().expect("utf-8"),
            "--resume",
        ],
    );
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(summary(&out)["resumed_from_step"], steps);
}

#[test]
fn bad_configuration_is_named_and_nothing_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[learner]\nlearning_rate = -1.0\n").expect("write");
    let run = musicrl(
        &config,
        &[
            "local",
            "--steps",
            "5",
            "--out",
            dir.path().join("out").to_str().expect("utf-8"),
        ],
    );
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("learner.learning_rate"), "{stderr}");
    assert!(
        !dir.path().join("out").exists(),
        "nothing is written for an invalid config"
    );

    std::fs::write(&config, "[learner]\nlearning_rait = 0.1\n").expect("write");
    let run = musicrl(&config, &["config"]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("learning_rait"));

    // Environment variables override the file (here: the step count).
    std::fs::write(&config, "[local]\nsteps = 5\n").expect("write");
    let run = run_to_end(
        Command::new(env!("CARGO_BIN_EXE_musicrl"))
            .args(["--config", config.to_str().expect("utf-8"), "local"])
            .env("MUSICRL_LOCAL_STEPS", "0")
            .env(
                "MUSICRL_LOCAL_OUT",
                dir.path().join("out").to_str().expect("utf-8"),
            ),
    );
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("--steps N"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn config_prints_a_configuration_that_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[learner]\nsteps = 7\n").expect("write");
    let printed = musicrl(&config, &["config"]);
    assert!(printed.status.success());
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(text.contains("steps = 7"), "{text}");
    // The printed configuration reads back as the same configuration.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, text.as_bytes()).expect("write");
    assert_eq!(
        String::from_utf8_lossy(&musicrl(&again, &["config"]).stdout),
        text
    );
}

/// A policy file's logits and values on a fixed input, as raw bits: equal exactly when the
/// parameters are (the file itself also holds random parameter ids).
fn outputs(path: &Path) -> Vec<u32> {
    use musicrl_policy::melody::{caption_batch, params::load_policy, to_vec_f32, token_tensor};
    let config = tiny_policy();
    let device = musicrl_policy::device::inference_device();
    let policy = load_policy(path, &config, &device).expect("load");
    let captions = caption_batch(&["a jig in D major", "a slow air"], &config, &device);
    let tokens: Vec<u32> = (0..24).map(|i| i % 16).collect();
    let out = policy.forward(&captions, token_tensor(&tokens, 2, 12, &device));
    to_vec_f32(out.logits)
        .into_iter()
        .chain(to_vec_f32(out.values))
        .map(f32::to_bits)
        .collect()
}

#[test]
fn deterministic_mode_reproduces_a_run_bit_for_bit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("sync.toml");
    let text = tiny_config().replace("[actor]\n", "[actor]\nsynchronous = true\n");
    std::fs::write(&config, text).expect("write config");
    let mut finals = Vec::new();
    for k in 0..2 {
        let out = dir.path().join(format!("run-{k}"));
        let run = musicrl(
            &config,
            &[
                "local",
                "--steps",
                "12",
                "--actors",
                "1",
                "--out",
                out.to_str().expect("utf-8"),
            ],
        );
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let latest = std::fs::read_to_string(out.join("checkpoints/LATEST")).expect("LATEST");
        let policy = outputs(
            &out.join("checkpoints")
                .join(latest.trim())
                .join("policy.bpk"),
        );
        let history = std::fs::read_to_string(out.join("history.jsonl")).expect("history");
        assert_eq!(history.lines().count(), 12);
        // Every row carries its wall-clock time and its timings; all else must repeat
        // exactly.
        let history: Vec<serde_json::Value> = history
            .lines()
            .map(|l| {
                let mut row: serde_json::Value = serde_json::from_str(l).expect("a JSON row");
                let o = row.as_object_mut().expect("an object");
                assert!(
                    o.remove("time")
                        .is_some_and(|t| t.as_str().is_some_and(|t| t.ends_with('Z')))
                );
                assert!(
                    o.remove("unix_seconds")
                        .is_some_and(|t| t.as_f64().is_some_and(|t| t > 1.7e9))
                );
                for timing in ["batch_wait_seconds", "step_seconds"] {
                    assert!(
                        o.remove(timing)
                            .is_some_and(|t| t.as_f64().is_some_and(|t| t >= 0.0)),
                        "{timing}"
                    );
                }
                row
            })
            .collect();
        finals.push((policy, history));
    }
    assert_eq!(finals[0].1, finals[1].1, "the same per-step history");
    assert!(
        finals[0].0 == finals[1].0,
        "the same final parameters, bit for bit (their logits and values on a fixed input)"
    );

    // Two actors cannot be deterministic: refused, with the reason.
    let run = musicrl(
        &config,
        &[
            "local",
            "--steps",
            "2",
            "--actors",
            "2",
            "--out",
            dir.path().join("two").to_str().expect("utf-8"),
        ],
    );
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("exactly one actor"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn a_named_run_continues_itself_and_refuses_another_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, tiny_config()).expect("write config");
    let root = dir.path().join("runs");
    let set_root = format!("run.root={}", root.display());
    let named = |extra: &[&str]| {
        let mut args = vec!["--set", "run.name=rl-r", "--set", set_root.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["local", "--steps", "10", "--actors", "1"]);
        musicrl(&config, &args)
    };
    let first = named(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let run = root.join("rl-r");
    assert!(run.join("run.toml").exists() && run.join("history.jsonl").exists());

    // The same configuration again (a retried Job) continues from the checkpoint.
    let again = musicrl(
        &config,
        &[
            "--set",
            "run.name=rl-r",
            "--set",
            &set_root,
            "local",
            "--steps",
            "20",
            "--actors",
            "1",
        ],
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(summary(&run)["resumed_from_step"], 10);

    // Another configuration under the name is refused, naming what changed, and nothing of
    // the run is touched.
    let refused = named(&["--set", "learner.kl_coef=0.5"]);
    assert!(!refused.status.success());
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(
        e.contains("learner.kl_coef") && e.contains("run.resume"),
        "{e}"
    );
    assert_eq!(summary(&run)["steps"], 20);
    // Asked to, it continues with the change.
    let resumed = musicrl(
        &config,
        &[
            "--set",
            "run.name=rl-r",
            "--set",
            &set_root,
            "--set",
            "learner.kl_coef=0.5",
            "--set",
            "run.resume=true",
            "local",
            "--steps",
            "25",
            "--actors",
            "1",
        ],
    );
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(summary(&run)["resumed_from_step"], 20);
}

/// Sends SIGTERM to `pid` (as Kubernetes stops a pod), without relying on a `kill` binary.
#[cfg(unix)]
#[allow(unsafe_code)]
fn sigterm(pid: u32) {
    let pid = libc::pid_t::try_from(pid).expect("a pid");
    // SAFETY: kill(2) with a pid this test spawned and has not reaped; no memory is touched.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(
        sent,
        0,
        "kill(2) failed: {}",
        std::io::Error::last_os_error()
    );
}
