//! `musicrl local`: every role as its own process on loopback, supervised from here.
//!
//! The supervisor writes the effective configuration to `OUT/config.toml`, starts the reward
//! server and the learner on `127.0.0.1:0`, reads the ports they bound from their ready
//! files, starts K actors pointed at them, and follows the learner's `Status` RPC with a
//! progress bar. Children log to `OUT/logs/<role>.log` and stop when their standard input
//! closes, so they never outlive the supervisor. When the learner has trained the requested
//! steps it exits, the actors see `training_complete` and exit, the reward server is told to
//! stop, and `OUT/summary.json` is written. Then (melody family) θ0 and the final policy are
//! judged side by side by the simulated rater panel (`verdict.rs`), `OUT/report.html` is
//! written, and a short human summary ends the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use musicrl_config::Config;
use musicrl_proto::v1::StatusRequest;
use musicrl_proto::v1::learner_service_client::LearnerServiceClient;

use crate::plan::LocalPlan;
use crate::process::{Ready, write_json};

/// Marks a folder as written by `musicrl local`, so a rerun may replace it.
const MARKER: &str = ".musicrl-local";
const READY_TIMEOUT: Duration = Duration::from_secs(180);
const ACTOR_EXIT_GRACE: Duration = Duration::from_secs(20);
const STOP_GRACE: Duration = Duration::from_secs(15);
const STALL_WARNING: Duration = Duration::from_secs(60);

/// What `OUT/summary.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Learner steps completed in total (including steps before a resume).
    pub steps: u64,
    /// Steps this run started from (0 unless `--resume`).
    pub resumed_from_step: u64,
    pub completed: bool,
    pub trajectories_accepted: u64,
    /// Trajectories the learner refused as data (`accounting.rejected` holds them by reason:
    /// invalid, forged, …): what the actors' `samples_rejected` add up to. A completed run
    /// has 0.
    pub trajectories_rejected: u64,
    /// Trajectories pushed after training completed (sampled while the last update ran; no
    /// fault): what the actors' `samples_after_end` add up to.
    pub trajectories_after_end: u64,
    pub trajectories_dropped_stale: u64,
    /// Updates whose batch mixed scorer versions (the reward configuration changed mid-run).
    #[serde(default)]
    pub mixed_scorer_batches: u64,
    /// Mean reward over the first and the last 10% of this run's steps (at least one step).
    pub reward_mean_first: f32,
    pub reward_mean_last: f32,
    pub kl_last: f32,
    pub policy_version: u64,
    pub max_policy_version_seen_by_actors: u64,
    /// Trajectories accepted by the learner per second of training (learner ready → exit).
    pub samples_per_second: f64,
    pub training_seconds: f64,
    /// The whole run, process start-up and shutdown included.
    pub wall_seconds: f64,
    pub actors: usize,
    pub actor_outcomes: Vec<serde_json::Value>,
    pub out: PathBuf,
    /// The learner's trajectory ledger (sampled = received + lost; received = trained +
    /// dropped + rejected + pending), the same numbers as Status and the
    /// `musicrl_learner_ledger_trajectories` gauges.
    #[serde(default)]
    pub accounting: musicrl_learner::ledger::Accounting,
    /// The run went over mutual TLS with tokens and reward seals (the default; `--insecure`
    /// turns them off).
    #[serde(default)]
    pub secure: bool,
    /// The signal that stopped the run before `--steps` (SIGINT or SIGTERM): the learner
    /// saved a checkpoint and `--resume` continues it.
    #[serde(default)]
    pub interrupted: Option<String>,
    /// Each reward component's mean over the same first and last 10% of steps.
    #[serde(default)]
    pub component_means_first: BTreeMap<String, f64>,
    #[serde(default)]
    pub component_means_last: BTreeMap<String, f64>,
    /// The simulated rater panel's verdict on the final policy against θ0 (`local.verdict_prompts`;
    /// absent when skipped).
    #[serde(default)]
    pub verdict: Option<crate::verdict::Verdict>,
    /// The run's report page.
    #[serde(default)]
    pub report: Option<PathBuf>,
    /// The learner's MLflow run (`tracking.mlflow`), where the verdict and an experiment's
    /// held-out curve are added.
    #[serde(default)]
    pub mlflow_run_id: Option<String>,
}

/// A run stopped by a signal: summary.json is written and the process exits 128 + the
/// signal's number, as a shell reports a process the signal killed.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl Interrupted {
    pub fn exit_code(&self) -> u8 {
        if self.0 == "SIGTERM" { 143 } else { 130 }
    }
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped by {}: the learner saved a checkpoint and summary.json is written; `--resume` continues the run",
            self.0
        )
    }
}

impl std::error::Error for Interrupted {}

/// The fixed sampling seed of the verdict: every run's θ0 clips are the same draws.
const VERDICT_SEED: u64 = 0x5EED;

/// Each component's mean over the first and the last `ceil(10%)` of this run's steps of
/// `history.jsonl` (steps after `resumed_from`).
fn component_means(
    history: &Path,
    resumed_from: u64,
) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    // A row's component_means: [[name, mean], …] in the reward's order.
    let rows: Vec<Vec<(String, f64)>> = std::fs::read_to_string(history)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["step"].as_u64().is_some_and(|s| s > resumed_from))
        .filter_map(|v| serde_json::from_value(v["component_means"].clone()).ok())
        .collect();
    if rows.is_empty() {
        return Default::default();
    }
    let k = rows.len().div_ceil(10).max(1);
    let mean = |rs: &[Vec<(String, f64)>]| {
        let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for r in rs {
            for (name, v) in r {
                let e = sums.entry(name.clone()).or_default();
                e.0 += v;
                e.1 += 1;
            }
        }
        sums.into_iter()
            .map(|(name, (s, n))| (name, s / n as f64))
            .collect()
    };
    (mean(&rows[..k]), mean(&rows[rows.len() - k..]))
}

/// The verdict where the run's trackers are: TensorBoard (scalars `verdict/*`, the first
/// captions' θ0 and final clips on the Audio tab, the sentence on the Text tab, at the last
/// step, in the learner's run folder) and the learner's MLflow run (the same scalars, the
/// report page and the verdict's results as artifacts).
fn track_verdict(
    child: &Config,
    s: &Summary,
    outcome: &musicrl_learner::LearnerOutcome,
) -> anyhow::Result<()> {
    let Some(v) = &s.verdict else {
        return Ok(());
    };
    let t = &child.tracking;
    let step = s.steps as i64;
    let scalars = vec![
        ("verdict/win_rate".to_string(), v.win_rate as f32),
        ("verdict/p_value".to_string(), v.p_value as f32),
        (
            "verdict/theta0_overall".to_string(),
            v.before_overall as f32,
        ),
        ("verdict/final_overall".to_string(), v.after_overall as f32),
    ];
    if !t.tensorboard.as_os_str().is_empty() {
        use musicrl_music::render;
        let dir = t
            .tensorboard
            .join(t.run_name(&child.run, &child.learner.history_path));
        let mut board = musicrl_tracking::tensorboard::EventWriter::create(&dir)?;
        let (_, now) = musicrl_config::fsutil::wall_clock(std::time::SystemTime::now());
        board.scalars(step, now, &scalars)?;
        board.text("verdict", step, now, &v.sentence())?;
        let samples = s.out.join(crate::verdict::DIR).join("samples");
        for (model, label) in [
            (crate::verdict::BEFORE, "theta0"),
            (crate::verdict::AFTER, "final"),
        ] {
            let text = std::fs::read_to_string(samples.join(format!("{model}.jsonl")))?;
            for (i, line) in text
                .lines()
                .step_by(v.samples_per_prompt.max(1))
                .take(2)
                .enumerate()
            {
                let clip: musicrl_judge::Sample = serde_json::from_str(line)?;
                let rate = render::DEFAULT_SAMPLE_RATE;
                let audio = musicrl_rewards::clips::sample_audio(&clip.caption, &clip.tokens, rate);
                let wav = render::wav_bytes(&audio, rate);
                board.audio(
                    &format!("verdict/{label}/{i}"),
                    step,
                    now,
                    &wav,
                    rate,
                    audio.len(),
                )?;
            }
        }
        board.flush()?;
    }
    if let (false, Some(id)) = (t.mlflow.is_empty(), &outcome.mlflow_run_id) {
        let run = musicrl_tracking::mlflow::MlflowRun::resume(&t.mlflow, id)
            .map_err(anyhow::Error::msg)?;
        run.log_metrics(step, &scalars)
            .map_err(anyhow::Error::msg)?;
        // The report with what it links (its clips and abcjs) in the same layout, so it plays
        // from the artifact store; the verdict's numbers beside it.
        let mut files = vec![
            "report.html".to_string(),
            crate::sheet::SCRIPT.to_string(),
            format!("{}/results.json", crate::verdict::DIR),
        ];
        if let Ok(entries) = std::fs::read_dir(s.out.join("audio")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with("verdict-") {
                    files.push(format!("audio/{name}"));
                }
            }
        }
        files.sort();
        for name in files {
            let file = s.out.join(&name);
            if file.is_file() {
                run.log_artifact_as(&file, &name)
                    .map_err(anyhow::Error::msg)?;
            }
        }
    }
    Ok(())
}

/// What a person reads at the end of `musicrl local` (the numbers are in summary.json).
pub fn human_summary(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "musicrl local: {} steps{} in {:.0} s ({:.1} clips/s trained, {} actors)",
        s.steps,
        if s.completed { "" } else { " (stopped early)" },
        s.wall_seconds,
        s.samples_per_second,
        s.actors
    );
    let _ = writeln!(
        o,
        "  reward {:>12.3} -> {:.3}   (mean over the first -> last 10% of steps)",
        s.reward_mean_first, s.reward_mean_last
    );
    for (name, first) in &s.component_means_first {
        if let Some(last) = s.component_means_last.get(name) {
            let _ = writeln!(o, "    {name:<14} {first:>8.3} -> {last:.3}");
        }
    }
    let _ = writeln!(o, "  KL to θ0 {:>10.3}   (the last step)", s.kl_last);
    if s.trajectories_rejected > 0 {
        let _ = writeln!(
            o,
            "  {} trajectories refused by the learner (see summary.json's accounting)",
            s.trajectories_rejected
        );
    }
    match &s.verdict {
        Some(v) => {
            let _ = writeln!(o, "  did the music get better? {}", v.sentence());
            let _ = writeln!(
                o,
                "    (panel mean overall, 1-5: θ0 {:.2}, final {:.2}; `musicrl judge` measures it on all 101 test captions)",
                v.before_overall, v.after_overall
            );
        }
        None => {
            let _ = writeln!(
                o,
                "  did the music get better? not judged here; `musicrl judge --policy {}` answers it",
                s.out.join("checkpoints/step-…/policy.bpk").display()
            );
        }
    }
    let _ = writeln!(
        o,
        "  files: {} (summary.json, history.jsonl, checkpoints/, logs/{})",
        s.out.display(),
        if s.verdict.is_some() {
            ", verdict/"
        } else {
            ""
        }
    );
    if let Some(r) = &s.report {
        let _ = writeln!(o, "  report: {}", r.display());
    }
    o
}

/// The mean of the first and the last `ceil(10%)` of `rewards` (at least one value each).
pub fn first_last_means(rewards: &[f32]) -> (f32, f32) {
    if rewards.is_empty() {
        return (f32::NAN, f32::NAN);
    }
    let k = rewards.len().div_ceil(10).max(1);
    let mean = |xs: &[f32]| xs.iter().sum::<f32>() / xs.len() as f32;
    (mean(&rewards[..k]), mean(&rewards[rewards.len() - k..]))
}

struct Role {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Role {
    /// Closes the child's stdin: its signal to shut down cleanly.
    fn ask_to_stop(&mut self) {
        drop(self.child.stdin.take());
    }

    async fn stop(&mut self, grace: Duration) -> anyhow::Result<std::process::ExitStatus> {
        self.ask_to_stop();
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                tracing::warn!(role = %self.name, "did not stop within {grace:?}; killing it");
                self.child.kill().await?;
                Ok(self.child.wait().await?)
            }
        }
    }

    fn failure(&self, status: std::process::ExitStatus) -> anyhow::Error {
        anyhow::anyhow!(
            "{} exited with {status}; last lines of {}:\n{}",
            self.name,
            self.log.display(),
            tail(&self.log, 20)
        )
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn spawn(name: &str, exe: &Path, args: &[String], logs: &Path) -> anyhow::Result<Role> {
    let log = logs.join(format!("{name}.log"));
    let file =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut command = Command::new(exe);
    // The children read the configuration this supervisor resolved and wrote for them: the
    // environment's settings are already in it, and re-applied they would undo what the
    // supervisor set on purpose (its loopback ports, the run's folders).
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("MUSICRL_")
            && !["MUSICRL_LOG_FORMAT", "MUSICRL_HOME"].contains(&key_text.as_ref())
        {
            command.env_remove(&key);
        }
    }
    let child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {name} ({})", exe.display()))?;
    Ok(Role {
        name: name.to_string(),
        child,
        log,
    })
}

async fn wait_ready(role: &mut Role, file: &Path) -> anyhow::Result<Ready> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(file)
            && let Ok(ready) = serde_json::from_str::<Ready>(&text)
        {
            return Ok(ready);
        }
        if let Some(status) = role.child.try_wait()? {
            return Err(role.failure(status));
        }
        if Instant::now() > deadline {
            bail!(
                "{} was not ready after {READY_TIMEOUT:?}; see {}",
                role.name,
                role.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a run treats what OUT already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A new run: a previous run in OUT is an error, or replaced with `overwrite`.
    Fresh { overwrite: bool },
    /// `--resume`: OUT must hold a run with a checkpoint.
    Resume,
    /// A named run (`run.name`): continues when it has a checkpoint, starts when not.
    Named,
}

impl Mode {
    /// Whether what OUT holds is kept (continued) rather than cleared.
    fn keeps_run(self) -> bool {
        !matches!(self, Self::Fresh { .. })
    }
}

/// The step of the newest complete checkpoint in `dir`.
fn latest_step(dir: &Path) -> Option<u64> {
    musicrl_learner::checkpoint::latest(dir)?
        .file_name()?
        .to_str()?
        .strip_prefix("step-")?
        .parse()
        .ok()
}

/// Prepares OUT: refuses a folder that `musicrl local` did not create, a new run over a
/// previous one without `--overwrite`, and `--resume` where there is nothing to resume;
/// a fresh run with `--overwrite` removes the previous run's files.
fn prepare_out(out: &Path, mode: Mode) -> anyhow::Result<()> {
    let occupied = out.exists() && std::fs::read_dir(out)?.next().is_some();
    if occupied && !out.join(MARKER).exists() {
        bail!(
            "{} exists, is not empty and was not written by `musicrl local`; choose another --out",
            out.display()
        );
    }
    let checkpoints = out.join("checkpoints");
    let holds_run = ["history.jsonl", "summary.json", "checkpoints/LATEST"]
        .iter()
        .any(|f| out.join(f).exists());
    match mode {
        Mode::Fresh { overwrite: false } if holds_run => bail!(
            "{} holds a previous run{}: `--resume` continues it, `--overwrite` replaces it \
             (its checkpoints and history are deleted), or choose another --out",
            out.display(),
            latest_step(&checkpoints)
                .map(|s| format!(" (its newest checkpoint is step {s})"))
                .unwrap_or_default()
        ),
        Mode::Resume if latest_step(&checkpoints).is_none() => bail!(
            "--resume: {} holds no run to continue (no checkpoint in {}); check the path, \
             or drop --resume to start a new run there",
            out.display(),
            checkpoints.display()
        ),
        _ => {}
    }
    let resume = mode.keeps_run();
    // Ready and outcome files always belong to the run about to start: a stale ready file
    // would point actors at a port that no longer listens.
    let run = out.join("run");
    if run.exists() {
        std::fs::remove_dir_all(&run).with_context(|| format!("cannot clear {}", run.display()))?;
    }
    if !resume {
        for dir in ["checkpoints", "logs"] {
            let p = out.join(dir);
            if p.exists() {
                std::fs::remove_dir_all(&p)
                    .with_context(|| format!("cannot clear {}", p.display()))?;
            }
        }
        for file in [
            "history.jsonl",
            "trajectories.jsonl",
            "trajectories.jsonl.1",
            "summary.json",
            "config.toml",
            "prometheus-targets.json",
        ] {
            let p = out.join(file);
            if p.exists() {
                std::fs::remove_file(&p)
                    .with_context(|| format!("cannot clear {}", p.display()))?;
            }
        }
    }
    for dir in ["logs", "run"] {
        std::fs::create_dir_all(out.join(dir))?;
    }
    std::fs::write(
        out.join(MARKER),
        "written by `musicrl local`; a rerun may replace this folder\n",
    )?;
    Ok(())
}

/// The configuration every child reads: loopback ports chosen by the OS, paths under OUT.
fn child_config(config: &Config, out: &Path) -> Config {
    let mut c = config.clone();
    let metrics = if config.local.metrics {
        "127.0.0.1:0"
    } else {
        ""
    };
    c.learner.listen = "127.0.0.1:0".into();
    c.learner.metrics_listen = metrics.into();
    c.learner.steps = config.local.steps;
    c.learner.checkpoint_dir = out.join("checkpoints");
    c.learner.history_path = out.join("history.jsonl");
    c.learner.trajectory_log = out.join("trajectories.jsonl");
    c.reward.listen = "127.0.0.1:0".into();
    c.reward.metrics_listen = metrics.into();
    c.actor.metrics_listen = metrics.into();
    c
}

/// Runs `local` in named steps: check the plan, open the output folder, secure the
/// connections, start the processes, follow the learner to the end, stop everything,
/// summarise, then judge and report.
pub async fn run(mut config: Config, args: LocalPlan) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let signal = stop_signals();
    let mut signal = std::pin::pin!(signal);
    args.apply(&mut config);
    check(&config)?;
    let (out, mode) = open_out(&mut config, &args)?;
    prepare_out(&out, mode)?;
    if mode.keeps_run()
        && let Some(done) = already_done(&out, &config)
    {
        return done;
    }
    let secure = !args.insecure;
    if secure {
        secure_connections(&mut config, &out)?;
    }
    let mut processes = Processes::start(&config, &out).await?;
    let followed = follow_progress(
        &mut processes.learner,
        &mut processes.actors,
        processes.learner_addr,
        &config,
        &mut signal,
    )
    .await;
    let (learner_status, stopped_by) = match followed {
        Ok((status, by)) => (Ok(status), by),
        Err(e) => (Err(e), None),
    };
    let training_started = processes.training_started;
    processes.stop(learner_status).await?;
    let (mut summary, outcome) = summarise(&config, &out, (started, training_started), secure)?;
    summary.interrupted = stopped_by.map(str::to_string);
    write_json(&out.join("summary.json"), &summary)?;
    judge_and_report(&config, &out, &mut summary, &outcome);
    write_json(&out.join("summary.json"), &summary)?;
    Ok(summary)
}

/// What the configuration must say for a local run.
fn check(config: &Config) -> anyhow::Result<()> {
    if config.local.steps == 0 {
        bail!("musicrl local needs --steps N with N > 0 (local.steps is 0)");
    }
    config.validate()?;
    if config.actor.synchronous && config.local.actors != 1 {
        bail!(
            "actor.synchronous (deterministic mode) needs exactly one actor (local.actors is {}): \
             with several, the order their pushes arrive in is not reproducible",
            config.local.actors
        );
    }
    Ok(())
}

/// The run's folder and how to treat what it holds: `local.out` with `--resume` or
/// `--overwrite`, or a named run's folder (a recipe Job on the cluster: `run.root/run.name`,
/// a changed training configuration refused unless `run.resume`, an existing run always
/// continued from its newest checkpoint — a retried Job never starts over).
fn open_out(config: &mut Config, args: &LocalPlan) -> anyhow::Result<(PathBuf, Mode)> {
    if config.run.name.is_empty() {
        let mode = match (args.resume, args.overwrite) {
            (true, true) => {
                bail!("--resume continues the run in OUT and --overwrite replaces it: choose one")
            }
            (true, false) => Mode::Resume,
            (false, overwrite) => Mode::Fresh { overwrite },
        };
        return Ok((config.local.out.clone(), mode));
    }
    let dir = musicrl_learner::named_run::folder(config).expect("the run is named");
    let fresh = !dir.join(musicrl_learner::named_run::RUN_CONFIG).exists();
    if fresh && dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} exists and is not a run's folder (it has no {}); choose another run.name",
            dir.display(),
            musicrl_learner::named_run::RUN_CONFIG
        );
    }
    musicrl_learner::named_run::open(config)?;
    std::fs::write(dir.join(MARKER), b"")
        .with_context(|| format!("cannot write to {}", dir.display()))?;
    eprintln!(
        "musicrl local: run {:?} in {} ({})",
        config.run.name,
        dir.display(),
        if fresh { "new" } else { "continuing" }
    );
    // The children get the run's paths from this supervisor, not the name.
    config.run.name.clear();
    Ok((dir, Mode::Named))
}

/// A continued run that already has its steps: its previous summary (nothing to do).
fn already_done(out: &Path, config: &Config) -> Option<anyhow::Result<Summary>> {
    let step = latest_step(&out.join("checkpoints"))?;
    if step < config.local.steps {
        return None;
    }
    eprintln!(
        "musicrl local: the run in {} is already at step {step}, and --steps is {}: nothing to do (raise --steps to train further)",
        out.display(),
        config.local.steps
    );
    let previous = out.join("summary.json");
    Some(
        read_json(&previous)
            .and_then(|v| Ok(serde_json::from_value::<Summary>(v)?))
            .map(|s| Summary {
                // This invocation was not stopped by anything.
                interrupted: None,
                ..s
            })
            .with_context(|| {
                format!(
                    "the run has its steps but its summary {} cannot be read",
                    previous.display()
                )
            }),
    )
}

/// Mutual TLS, tokens and reward seals on every connection, from a fresh development CA in
/// OUT/security (the actors use the actor token, this supervisor too).
fn secure_connections(config: &mut Config, out: &Path) -> anyhow::Result<()> {
    let dir = out.join("security");
    let written = musicrl_security::pki::init(&dir, &["localhost".into()])?;
    config.security = written.config;
    config.security.token_file = dir.join("actor.token");
    eprintln!(
        "musicrl local: mutual TLS, tokens and reward seals (credentials in {})",
        dir.display()
    );
    Ok(())
}

/// The run's processes: a reward server, a learner and `local.actors` actors.
struct Processes {
    reward: Role,
    learner: Role,
    actors: Vec<Role>,
    learner_addr: std::net::SocketAddr,
    /// When the learner reported ready: training time counts from here.
    training_started: Instant,
}

impl Processes {
    /// Writes the children's configuration, starts the reward server and the learner on
    /// `:0`, reads their ports from the ready files, starts the actors pointed at them, and
    /// writes every process's /metrics as a Prometheus file_sd target list
    /// (deploy/prometheus/prometheus-local.yml scrapes it).
    async fn start(config: &Config, out: &Path) -> anyhow::Result<Self> {
        let config_path = out.join("config.toml");
        musicrl_config::fsutil::write_atomic(
            &config_path,
            child_config(config, out).to_toml().as_bytes(),
        )?;
        let (logs, run_dir) = (out.join("logs"), out.join("run"));
        let exe = std::env::current_exe().context("cannot find the musicrl executable")?;
        let command = |role: &str, name: &str| -> Vec<String> {
            let file = |what: &str| {
                run_dir
                    .join(format!("{name}.{what}.json"))
                    .display()
                    .to_string()
            };
            vec![
                "--config".into(),
                config_path.display().to_string(),
                role.into(),
                "--stop-on-stdin-close".into(),
                "--ready-file".into(),
                file("ready"),
                "--outcome-file".into(),
                file("outcome"),
            ]
        };
        eprintln!(
            "musicrl local: {} steps, {} actors, policy {}, output in {}",
            config.local.steps,
            config.local.actors,
            describe_policy(&config.policy),
            out.display()
        );
        let mut reward = spawn(
            "reward-server",
            &exe,
            &command("reward-server", "reward-server"),
            &logs,
        )?;
        let mut learner = spawn("learner", &exe, &command("learner", "learner"), &logs)?;
        let reward_ready =
            wait_ready(&mut reward, &run_dir.join("reward-server.ready.json")).await?;
        let learner_ready = wait_ready(&mut learner, &run_dir.join("learner.ready.json")).await?;
        let training_started = Instant::now();
        let learner_addr = learner_ready
            .grpc
            .context("the learner reported no gRPC address")?;
        let reward_addr = reward_ready
            .grpc
            .context("the reward server reported no gRPC address")?;
        let scheme_host = if config.security.server_tls() {
            "https://localhost"
        } else {
            "http://127.0.0.1"
        };
        let mut actors = Vec::with_capacity(config.local.actors);
        for i in 0..config.local.actors {
            let name = format!("actor-{i}");
            let mut a = command("actor", &name);
            a.extend([
                "--id".into(),
                name.clone(),
                "--learner".into(),
                format!("{scheme_host}:{}", learner_addr.port()),
                "--reward".into(),
                format!("{scheme_host}:{}", reward_addr.port()),
            ]);
            actors.push(spawn(&name, &exe, &a, &logs)?);
        }
        let mut targets = Vec::new();
        let mut endpoints = vec![
            format!("learner grpc {learner_addr}"),
            format!("reward-server grpc {reward_addr}"),
        ];
        for (role, ready) in [
            ("learner", &learner_ready),
            ("reward-server", &reward_ready),
        ] {
            if let Some(m) = ready.metrics {
                targets.push(
                    serde_json::json!({"targets": [m.to_string()], "labels": {"role": role}}),
                );
                endpoints.push(format!("{role} metrics http://{m}/metrics"));
            }
        }
        for a in &mut actors {
            let ready = wait_ready(a, &run_dir.join(format!("{}.ready.json", a.name))).await?;
            if let Some(m) = ready.metrics {
                targets.push(serde_json::json!({"targets": [m.to_string()], "labels": {"role": "actor", "actor": a.name}}));
            }
        }
        write_json(&out.join("prometheus-targets.json"), &targets)?;
        eprintln!("  {}; logs in {}", endpoints.join(", "), logs.display());
        Ok(Self {
            reward,
            learner,
            actors,
            learner_addr,
            training_started,
        })
    }

    /// After the learner has exited (or failed): actors leave on `training_complete`; give
    /// them a moment, then ask, then insist; then stop the reward server. A failed learner or
    /// reward server is the run's error, with its log's last lines; a failed actor a warning.
    async fn stop(
        mut self,
        learner_status: anyhow::Result<std::process::ExitStatus>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + ACTOR_EXIT_GRACE;
        for a in &mut self.actors {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, a.child.wait()).await.is_err() {
                tracing::debug!(actor = %a.name, "still running after training; stopping it");
            }
        }
        let mut actor_failures = Vec::new();
        for a in &mut self.actors {
            let status = a.stop(STOP_GRACE).await?;
            if !status.success() {
                actor_failures.push(a.failure(status));
            }
        }
        let reward_status = self.reward.stop(STOP_GRACE).await?;
        let learner_status = learner_status?;
        if !learner_status.success() {
            return Err(self.learner.failure(learner_status));
        }
        if !reward_status.success() {
            return Err(self.reward.failure(reward_status));
        }
        for e in &actor_failures {
            eprintln!("warning: {e}");
        }
        Ok(())
    }
}

/// One line on the policy being trained.
fn describe_policy(p: &musicrl_config::PolicyConfig) -> String {
    if p.family == musicrl_config::FAMILY_MUSICGEN {
        format!(
            "MusicGen {} ({} codes a clip: codebooks × {} frames, codebooks of {})",
            p.folder.display(),
            p.max_tokens,
            p.frames,
            p.vocab_size
        )
    } else {
        format!(
            "d_model={} layers={} vocab={}",
            p.d_model, p.n_layers, p.vocab_size
        )
    }
}

/// The run's summary from the processes' outcome files and the history; `started` is when
/// the run began and when training did (the learner ready).
fn summarise(
    config: &Config,
    out: &Path,
    (started, training_started): (Instant, Instant),
    secure: bool,
) -> anyhow::Result<(Summary, musicrl_learner::LearnerOutcome)> {
    let run_dir = out.join("run");
    let outcome: musicrl_learner::LearnerOutcome =
        serde_json::from_value(read_json(&run_dir.join("learner.outcome.json"))?)?;
    let actor_outcomes = (0..config.local.actors)
        .filter_map(|i| read_json(&run_dir.join(format!("actor-{i}.outcome.json"))).ok())
        .collect();
    let (reward_mean_first, reward_mean_last) = first_last_means(&outcome.reward_means);
    let after_end = outcome
        .accounting
        .rejected
        .get(musicrl_common::wire::TRAINING_COMPLETE)
        .copied()
        .unwrap_or(0);
    let training_seconds = training_started.elapsed().as_secs_f64();
    let (component_means_first, component_means_last) =
        component_means(&out.join("history.jsonl"), outcome.resumed_from_step);
    let summary = Summary {
        steps: outcome.steps,
        resumed_from_step: outcome.resumed_from_step,
        completed: outcome.completed,
        trajectories_accepted: outcome.trajectories_accepted,
        trajectories_rejected: outcome.accounting.rejected_total() - after_end,
        trajectories_after_end: after_end,
        trajectories_dropped_stale: outcome.trajectories_dropped_stale,
        mixed_scorer_batches: outcome.mixed_scorer_batches,
        reward_mean_first,
        reward_mean_last,
        kl_last: outcome.kl_last,
        policy_version: outcome.policy_version,
        max_policy_version_seen_by_actors: outcome.max_policy_version_seen_by_actors,
        samples_per_second: outcome.trajectories_accepted as f64 / training_seconds.max(1e-9),
        training_seconds,
        wall_seconds: started.elapsed().as_secs_f64(),
        actors: config.local.actors,
        actor_outcomes,
        out: out.to_path_buf(),
        accounting: outcome.accounting.clone(),
        secure,
        interrupted: None,
        component_means_first,
        component_means_last,
        verdict: None,
        report: None,
        mlflow_run_id: outcome.mlflow_run_id.clone(),
    };
    Ok((summary, outcome))
}

/// "Did the music get better?": θ0 against the final policy, judged by the simulated panel
/// (melody family, a completed run, `local.verdict_prompts` > 0); then the report page and
/// the verdict sent to the trackers. Each is a warning when it fails, never the run's error.
fn judge_and_report(
    config: &Config,
    out: &Path,
    summary: &mut Summary,
    outcome: &musicrl_learner::LearnerOutcome,
) {
    let n = config.local.verdict_prompts;
    if n > 0 && summary.completed && config.policy.family == musicrl_config::FAMILY_MELODY {
        let checkpoints = out.join("checkpoints");
        let before = checkpoints.join("reference.bpk");
        let after = musicrl_learner::checkpoint::latest(&checkpoints).map(|d| d.join("policy.bpk"));
        match after {
            Some(after) if before.is_file() && after.is_file() => {
                eprintln!(
                    "judging θ0 against the final policy on {n} held-out captions (the simulated rater panel)"
                );
                match crate::verdict::before_after(config, out, &before, &after, n, 2, VERDICT_SEED)
                {
                    Ok(v) => summary.verdict = Some(v),
                    Err(e) => eprintln!("warning: no verdict: {e:#}"),
                }
            }
            _ => eprintln!(
                "no verdict: {} has no reference.bpk and final checkpoint to compare",
                checkpoints.display()
            ),
        }
    }
    match crate::experiment::report::write_run(out) {
        Ok(page) => summary.report = Some(page),
        Err(e) => eprintln!("warning: no report: {e:#}"),
    }
    if let Err(e) = track_verdict(&child_config(config, out), summary, outcome) {
        eprintln!("warning: the verdict did not reach the trackers: {e:#}");
    }
}

/// A Status client for the learner at `addr`, over TLS when the run uses it.
async fn status_client(
    config: &Config,
    addr: std::net::SocketAddr,
) -> Option<LearnerServiceClient<tonic::transport::Channel>> {
    let url = if config.security.server_tls() {
        format!("https://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    };
    let channel = musicrl_actor::lazy_channel(&url, &config.security).ok()?;
    Some(LearnerServiceClient::new(channel))
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// How long the supervisor waits for the learner to finish by itself once every actor has
/// exited before it calls that a failure (actors exit as soon as training completes, a
/// moment before the learner does).
const ACTORS_GONE_GRACE: Duration = Duration::from_secs(10);

/// The first SIGINT (Ctrl-C) or SIGTERM (how Kubernetes and most supervisors stop a
/// process) this process receives, by name. The handlers are installed when this is
/// called, not when it is first awaited, so a signal during start-up is not lost: it stops
/// the run as soon as the learner is up.
fn stop_signals() -> impl std::future::Future<Output = &'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (int, term) = (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        );
        async move {
            match (int, term) {
                (Some(mut int), Some(mut term)) => tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                },
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                    "SIGINT"
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// Shows progress from the learner's `Status` until the learner exits; SIGINT or SIGTERM
/// asks it to stop (it checkpoints first). Returns the learner's exit status and the
/// signal that stopped the run, if one did.
async fn follow_progress(
    learner: &mut Role,
    actors: &mut [Role],
    addr: std::net::SocketAddr,
    config: &Config,
    signal: &mut std::pin::Pin<&mut impl std::future::Future<Output = &'static str>>,
) -> anyhow::Result<(std::process::ExitStatus, Option<&'static str>)> {
    let total = config.local.steps;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let interactive = !bar.is_hidden();
    let mut client = None;
    let token = musicrl_security::tokens::client_token(&config.security.token_file)?;
    let mut last_print = Instant::now();
    let (mut last_step, mut last_change) = (u64::MAX, Instant::now());
    let mut interrupted = false;
    let mut training_complete = false;
    let mut actors_gone_since: Option<Instant> = None;
    let mut stopped_by: Option<&'static str> = None;
    loop {
        if let Some(status) = learner.child.try_wait()? {
            bar.finish_and_clear();
            return Ok((status, stopped_by));
        }
        if actors
            .iter_mut()
            .all(|a| matches!(a.child.try_wait(), Ok(Some(_))))
            && !interrupted
        {
            // Actors exit as soon as the learner announces the end of training, while the
            // learner still saves its last checkpoint: that is a run finishing, not failing.
            let since = *actors_gone_since.get_or_insert_with(Instant::now);
            let finishing =
                training_complete || (total > 0 && last_step != u64::MAX && last_step >= total);
            if finishing || since.elapsed() < ACTORS_GONE_GRACE {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            bar.abandon();
            eprintln!("every actor has exited before training finished; stopping the learner");
            for a in actors.iter() {
                eprintln!("{}:\n{}", a.name, tail(&a.log, 10));
            }
            learner.ask_to_stop();
            interrupted = true;
        }
        if client.is_none() {
            client = status_client(config, addr).await;
        }
        if let Some(c) = client.as_mut() {
            let mut request = tonic::Request::new(StatusRequest {});
            musicrl_security::authorize(&mut request, token.as_ref());
            match c.status(request).await {
                Ok(s) => {
                    let s = s.into_inner();
                    training_complete |= s.training_complete;
                    bar.set_position(s.step.min(total));
                    if s.step != last_step {
                        (last_step, last_change) = (s.step, Instant::now());
                    } else if last_change.elapsed() > STALL_WARNING {
                        bar.suspend(|| {
                            eprintln!(
                                "warning: no learner step for {:?} (queue depth {}); see the logs in {}",
                                STALL_WARNING,
                                s.queue_depth,
                                learner.log.parent().map(|p| p.display().to_string()).unwrap_or_default()
                            )
                        });
                        last_change = Instant::now();
                    }
                    let msg = format!(
                        "reward {:.3}  kl {:.4}  accepted {}  stale {}  version {}",
                        s.reward_mean_last,
                        s.kl_last,
                        s.trajectories_accepted,
                        s.trajectories_dropped_stale,
                        s.policy_version
                    );
                    if !interactive && last_print.elapsed() > Duration::from_secs(10) {
                        eprintln!("step {}/{}  {msg}", s.step, total);
                        last_print = Instant::now();
                    }
                    bar.set_message(msg);
                }
                Err(_) => client = None,
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            name = signal.as_mut(), if stopped_by.is_none() => {
                bar.suspend(|| eprintln!("{name}: stopping the learner (it saves a checkpoint; `--resume` continues the run)"));
                learner.ask_to_stop();
                interrupted = true;
                stopped_by = Some(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_ten_percent() {
        let r: Vec<f32> = (0..20).map(|i| i as f32).collect();
        assert_eq!(first_last_means(&r), (0.5, 18.5));
        // Fewer than 10 steps still use one step each.
        assert_eq!(first_last_means(&[1.0, 2.0, 4.0]), (1.0, 4.0));
        // 11 steps: ceil(1.1) = 2.
        let r: Vec<f32> = (0..11).map(|i| i as f32).collect();
        assert_eq!(first_last_means(&r), (0.5, 9.5));
    }

    #[test]
    fn refuses_a_folder_it_did_not_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("precious.txt"), "keep").expect("write");
        let err = prepare_out(dir.path(), Mode::Fresh { overwrite: true }).unwrap_err();
        assert!(
            err.to_string().contains("not written by `musicrl local`"),
            "{err}"
        );
        assert!(dir.path().join("precious.txt").exists());
    }
}
