//! Configuration a person can drive: `--set` and `MUSICRL__…` for any key, clear errors for
//! a misspelt key, a bad device or a missing file, and the binary working from any folder.

mod common;

use std::process::Command;

use common::run_to_end;

fn musicrl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_musicrl"));
    // The tests' own environment must not leak settings in.
    for (k, _) in std::env::vars() {
        if k.starts_with("MUSICRL_") {
            c.env_remove(k);
        }
    }
    c
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn set_and_the_environment_override_nested_keys_and_set_wins() {
    let out = run_to_end(
        musicrl()
            .args([
                "--set",
                "learner.kl_coef=0.05",
                "--set",
                "reward.components[1].weight=2.5",
                "--set",
                "actor.batch_size=3",
                "config",
            ])
            .env("MUSICRL__ACTOR__BATCH_SIZE", "5")
            .env("MUSICRL__ACTOR__SEED", "42"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let c = musicrl_config::Config::from_toml(&String::from_utf8_lossy(&out.stdout))
        .expect("`musicrl config` prints a configuration");
    assert_eq!(c.learner.kl_coef, 0.05);
    assert_eq!(c.reward.components[1].weight, 2.5);
    assert_eq!(c.actor.batch_size, 3, "--set wins over the environment");
    assert_eq!(c.actor.seed, 42, "the environment sets what --set leaves");
}

#[test]
fn a_misspelt_key_is_an_error_naming_it() {
    let out = run_to_end(musicrl().args(["--set", "learner.kl_coeff=0.1", "config"]));
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("learner.kl_coeff"), "{e}");
    assert!(e.contains("did you mean learner.kl_coef"), "{e}");
    let out = run_to_end(
        musicrl()
            .arg("config")
            .env("MUSICRL__LEARNER__KL_COEFF", "0.1"),
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("MUSICRL__LEARNER__KL_COEFF"), "{e}");
}

#[test]
fn an_unknown_device_and_cuda_on_a_cpu_build_are_refused_clearly() {
    let out = run_to_end(musicrl().args(["--set", "learner.device=tpu", "config"]));
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("learner.device") && e.contains("\"tpu\""), "{e}");
    assert!(e.contains("cpu"), "{e}");
    if !cfg!(any(feature = "cuda", feature = "vulkan")) {
        let out = run_to_end(musicrl().args([
            "--set",
            "actor.device=cuda:0",
            "actor",
            "--metrics-listen",
            "",
        ]));
        assert!(!out.status.success());
        let e = stderr(&out);
        assert!(
            e.contains("actor.device") && e.contains("\"cuda:0\""),
            "{e}"
        );
        assert!(e.contains("no GPU feature"), "{e}");
    }
    // The variable that used to be ignored is now refused with what to set instead.
    let out = run_to_end(musicrl().arg("config").env("MUSICRL_DEVICE", "cuda"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("MUSICRL__LEARNER__DEVICE"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn started_from_another_folder_it_finds_its_shipped_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_to_end(musicrl().current_dir(dir.path()).arg("config"));
    assert!(out.status.success(), "{}", stderr(&out));
    let c = musicrl_config::Config::from_toml(&String::from_utf8_lossy(&out.stdout))
        .expect("a configuration");
    for p in [
        &c.learner.init_policy,
        &c.actor.prompts,
        &c.reward.components[0].checkpoint,
        &c.experiment.judge_prompts,
        &c.feedback.prompts,
    ] {
        assert!(
            p.is_absolute() && p.exists(),
            "{} was not found",
            p.display()
        );
    }
    // And a real command runs on them: θ0 samples a clip from a folder with no data.
    let out = run_to_end(musicrl().current_dir(dir.path()).args([
        "generate",
        "--caption",
        "a jig in D major",
        "--n",
        "1",
        "--out",
        "gen",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("gen/index.html").exists());
    // The experiment too: every recipe's config file and the models it names resolve (the
    // reward components of config/rl-u.toml were once looked for in the working directory).
    let out =
        run_to_end(
            musicrl()
                .current_dir(dir.path())
                .args(["experiment", "--quick", "--out", "q"]),
        );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("q/report.html").exists());
    // The judge's prompts are looked for the same way, and a missing one lists the places
    // tried.
    let out = run_to_end(musicrl().current_dir(dir.path()).args([
        "judge",
        "--policy",
        "models/base/policy.bpk",
        "--prompts",
        "no/such/prompts.txt",
    ]));
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("--prompts = no/such/prompts.txt") && e.contains("tried"),
        "{e}"
    );
    // A recipe's config file resolves too.
    let out = run_to_end(musicrl().current_dir(dir.path()).args([
        "--config",
        "config/rl-u.toml",
        "config",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_missing_input_names_the_key_and_the_paths_tried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_to_end(musicrl().current_dir(dir.path()).args([
        "--set",
        "learner.init_policy=models/none/policy.bpk",
        "learner",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "",
        "--steps",
        "1",
    ]));
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("learner.init_policy = models/none/policy.bpk"),
        "{e}"
    );
    assert!(
        e.contains(
            &dir.path()
                .join("models/none/policy.bpk")
                .display()
                .to_string()
        ),
        "{e}"
    );
}

/// The help texts say what the program does today (each of these was out of date once).
#[test]
fn help_texts_say_what_the_defaults_are() {
    let help = |args: &[&str]| {
        let out = musicrl()
            .args(args)
            .arg("--help")
            .output()
            .expect("musicrl runs");
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).replace('\n', " ")
    };
    let learner = help(&["learner"]);
    assert!(
        learner.contains("models/base/policy.bpk") && !learner.contains("= seeded random"),
        "{learner}"
    );
    assert!(help(&["feedback"]).contains("learner (the newest parameters"));
    let out = musicrl().arg("--help").output().expect("musicrl runs");
    let top = String::from_utf8_lossy(&out.stdout).to_string();
    let line = top
        .lines()
        .find(|l| l.trim_start().starts_with("preferences"))
        .expect("preferences is listed");
    for sub in ["simulate", "evaluate", "import", "export", "status"] {
        assert!(line.contains(sub), "{sub}: {line}");
    }
    assert!(!help(&["experiment"]).contains("a few minutes"));
}

/// A learner or reward server that other hosts could reach without authentication refuses
/// to start and says how to secure it (issue 35: insecure by default outside Kubernetes);
/// loopback, or `security.allow_insecure`, is the operator's choice.
#[test]
fn a_server_open_to_other_hosts_without_security_refuses_to_start() {
    for (role, key) in [
        ("learner", "learner.listen"),
        ("reward-server", "reward.listen"),
    ] {
        let out = run_to_end(
            musicrl()
                .args([
                    "--set",
                    &format!("{key}=0.0.0.0:0"),
                    "--set",
                    "learner.init_policy=",
                    role,
                    "--stop-on-stdin-close",
                ])
                .stdin(std::process::Stdio::null()),
        );
        let e = stderr(&out);
        assert!(!out.status.success(), "{role} started: {e}");
        assert!(
            e.contains(key) && e.contains("security.allow_insecure") && e.contains("127.0.0.1"),
            "{role}: {e}"
        );
    }
}
