//! The command line: the commands, and the flags of the three roles and of the commands
//! that only wrap a library call; every orchestration command's flags are its typed plan
//! (`musicrl_orchestrate::plan`). Precedence, lowest first: the embedded default, the config
//! file, the environment (`MUSICRL__SECTION__KEY` for any key, and short aliases such as
//! `MUSICRL_LEARNER_URL`: `common/config/src/overrides.rs`), `--set KEY=VALUE`, then a
//! subcommand's named flag.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use musicrl_config::Config;
use musicrl_orchestrate::plan::{
    BenchPlan, CalibratePlan, EvaluatePlan, ExperimentPlan, FeedbackPlan, GeneratePlan, JudgePlan,
    LocalPlan, PolicyCommand, PrefsDbPlan, PrefsExportPlan, PrefsImportPlan, PretrainPlan,
    PromptsPlan, SimulatePlan, Supervision, TrainRewardPlan,
};

/// The environment, for `musicrl --help` (the aliases are `musicrl_config::ENV_ALIASES`;
/// a test keeps this list equal to it).
pub const ENV_HELP: &str = "Environment:
  MUSICRL_CONFIG            the configuration file (as --config)
  MUSICRL__SECTION__KEY     any key, e.g. MUSICRL__LEARNER__KL_COEF=0.05 (indices as __0__)
  MUSICRL_HOME              where relative inputs (models/, data/, config/) are also looked for
  MUSICRL_LOG_FORMAT=json   JSON log lines; RUST_LOG filters
  MUSICRL_ACTOR_ID          an actor's name (as actor --id)
  Short names of keys: MUSICRL_LOCAL_STEPS, MUSICRL_LOCAL_ACTORS, MUSICRL_LOCAL_OUT,
  MUSICRL_LEARNER_LISTEN, MUSICRL_LEARNER_METRICS_LISTEN, MUSICRL_LEARNER_STEPS,
  MUSICRL_CHECKPOINT_DIR, MUSICRL_INIT_POLICY, MUSICRL_REFERENCE_POLICY, MUSICRL_HISTORY,
  MUSICRL_LEARNER_BATCH_SIZE, MUSICRL_LEARNER_SEED, MUSICRL_LEARNER_URL, MUSICRL_REWARD_URL,
  MUSICRL_ACTOR_METRICS_LISTEN, MUSICRL_ACTOR_BATCH_SIZE, MUSICRL_PROMPTS, MUSICRL_ACTOR_SEED,
  MUSICRL_REWARD_LISTEN, MUSICRL_REWARD_METRICS_LISTEN, MUSICRL_REWARD_MAX_BATCH,
  MUSICRL_CORPUS, MUSICRL_RUN
Any other MUSICRL_ variable is an error, so a misspelt one is never ignored.";

/// musicrl: fine-tune a text-to-music policy from rewards with distributed RL.
#[derive(Debug, Parser)]
#[command(
    name = "musicrl",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = ENV_HELP
)]
pub struct Cli {
    /// Configuration file (TOML). Omitted: the embedded default (`config/default.toml`).
    #[arg(long, global = true, env = "MUSICRL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Set any configuration key, e.g. `--set learner.kl_coef=0.05` or
    /// `--set reward.components[0].weight=2` (repeatable; a key the configuration lacks is an
    /// error). Every key can also come from the environment as MUSICRL__SECTION__KEY
    /// (MUSICRL__LEARNER__KL_COEF=0.05). Lowest first: default, file, environment, --set,
    /// a named flag.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole loop on this machine: a reward server, a learner and K actors as
    /// separate processes on loopback, with a progress bar; at the end, the simulated rater
    /// panel's verdict on θ0 against the final policy, OUT/summary.json and OUT/report.html.
    /// SIGINT or SIGTERM stops it cleanly: the learner checkpoints, summary.json is written
    /// (`completed: false`, `interrupted`), and it exits 130 (SIGINT) or 143 (SIGTERM).
    Local(LocalPlan),
    /// Run the learner: receives trajectories, trains, broadcasts parameters, checkpoints.
    Learner(LearnerArgs),
    /// Run an actor: samples from the newest policy, gets rewards, pushes trajectories.
    Actor(ActorArgs),
    /// Run the reward server: scores token sequences with the configured components.
    RewardServer(RewardArgs),
    /// Measure sampling (with and without the KV cache) and learner throughput.
    Bench(BenchPlan),
    /// Pretrain the base policy θ0 on the folk-tune corpus (teacher-forced, caption-conditioned).
    Pretrain(PretrainPlan),
    /// Sample melodies for captions and write WAVs, token files and an index.html to listen to.
    Generate(GeneratePlan),
    /// Train a reward model (text adherence, quality or user preference) and write its
    /// checkpoint folder with held-out metrics.
    TrainReward(TrainRewardPlan),
    /// Preferences: `simulate` fills a store with simulated app users' choices, `evaluate`
    /// has them choose between a policy and a baseline (the users' verdict; the raters' is
    /// `musicrl judge`), `import`/`export`/`status` move choices in and out of the
    /// preference database and count what it holds.
    Preferences(PreferencesArgs),
    /// Write the prompt sets from the corpus (RL: a caption of every training-split tune;
    /// evaluation: 101 test-split captions) and report the share of prompt words the
    /// pretrained policy never saw.
    Prompts(PromptsPlan),
    /// The rater panel (an independent judge, never a reward): rate policies side by side on
    /// held-out prompts for adherence, quality and appeal; win/tie/loss, win rate, Wilcoxon
    /// p-value and mean scores, in DIR/results.json, with every judged sample in
    /// DIR/samples/<model>.jsonl.
    Judge(JudgePlan),
    /// The paper's experiment in one command: RL-R, RL-U, RL-RU (from RL-R's chosen
    /// checkpoint, KL against it) and the joint recipe over several seeds, each evaluated on
    /// held-out prompts as it trains, its checkpoint chosen by the rater panel with the
    /// over-optimisation rule, then all judged against θ0 and each other; writes
    /// DIR/results.json, DIR/samples/<model>.jsonl and DIR/report.html.
    Experiment(ExperimentPlan),
    /// Write DIR/report.html for an experiment folder (results.json) or a run folder
    /// (history.jsonl): plots, the win-rate table, example pairs to listen to.
    Report(ReportArgs),
    /// Convert a policy between burn's burnpack and safetensors (what PyTorch, JAX and the
    /// Hugging Face tools load; tensor names and layout in docs/interop.md).
    Policy(PolicyArgs),
    /// EnCodec, MusicGen's codec: `decode` turns a clip's codes into a WAV file.
    Codec(CodecArgs),
    /// The listening and voting service: a page where people hear two clips of a caption
    /// and vote, a JSON API (docs/feedback.md), the preference database behind it; `bot`
    /// makes the simulated listeners vote through the same API.
    Feedback(FeedbackPlan),
    /// Print the effective configuration (defaults, file, environment, --set) as TOML.
    Config,
    /// Transport security: `init` writes a development CA, server and client certificates,
    /// per-role tokens and a reward key, and prints the `[security]` section that uses them.
    Security(SecurityArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    #[command(subcommand)]
    pub command: SecurityCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum SecurityCommand {
    /// Write DIR/{ca.pem, server.pem, server.key, client.pem, client.key, tokens,
    /// actor.token, operator.token, admin.token, reward.keys} (private files mode 0600).
    Init {
        /// The folder to write.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// A name the server certificate is valid for (DNS name or IP address); repeat it
        /// for several. Kubernetes: the Services' names.
        #[arg(long = "name", value_name = "NAME", default_value = "localhost")]
        names: Vec<String>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct CodecArgs {
    #[command(subcommand)]
    pub command: CodecCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CodecCommand {
    /// Decode a clip's codes to a 32-bit float WAV at the codec's rate, and print what was
    /// decoded as one JSON line (rate, channels, samples, seconds, timings, codec version).
    Decode {
        /// An EnCodec folder (`facebook/encodec_32khz` layout: config.json with model_type
        /// "encodec", model.safetensors) or a MusicGen folder (its audio_encoder).
        #[arg(long, value_name = "DIR")]
        codec: PathBuf,
        /// A JSON file `{"codes": [[…], …]}`: K rows of T frames, undelayed, as `musicrl
        /// policy generate` writes and `policy score` reads.
        #[arg(long, value_name = "FILE")]
        codes: PathBuf,
        /// The WAV file to write.
        #[arg(long, value_name = "OUT.wav")]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// An experiment's folder (with results.json) or a run's (with history.jsonl).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct PreferencesArgs {
    #[command(subcommand)]
    pub command: PreferencesCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum PreferencesCommand {
    /// Fill a preference store with simulated listeners' choices between pairs of base-policy
    /// samples for the same caption.
    Simulate(SimulatePlan),
    /// Draw a new listener population whose own caption counts just enough that the text
    /// reward agrees with their choices as often as MuLan agreed with the paper's users
    /// (51.6%); writes population.json, calibration.jsonl (the scored pairs) and
    /// calibration.json (targets and measured values) beside --store, for `simulate`.
    Calibrate(CalibratePlan),
    /// The simulated app users' side-by-side verdict on a policy against a baseline — the
    /// users whose choices trained the preference model, not the instructed raters (the
    /// independent judge is `musicrl judge`).
    Evaluate(EvaluatePlan),
    /// Import choices into the preference database: a musicrl store (JSONL of
    /// caption/a/b/choice/who/when, what `simulate` writes) or RLHF rows
    /// (prompt/chosen/rejected with chosen_tokens/rejected_tokens). Idempotent.
    Import(PrefsImportPlan),
    /// Export decisive votes from the preference database as a musicrl store or as RLHF rows
    /// (prompt/chosen/rejected in ABC notation, plus token ids and provenance).
    Export(PrefsExportPlan),
    /// The preference database's schema version, row counts and votes by outcome.
    Status(PrefsDbPlan),
}

#[derive(Debug, Clone, Args)]
pub struct LearnerArgs {
    /// gRPC listen address [default: learner.listen = 127.0.0.1:50051; 0.0.0.0:PORT to serve other hosts].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Prometheus /metrics address; "" disables [default: learner.metrics_listen = 127.0.0.1:9100; 0.0.0.0:PORT to serve other hosts].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Steps to train before finishing; 0 trains until stopped [default: learner.steps = 0].
    #[arg(long, value_name = "N")]
    pub steps: Option<u64>,
    /// Checkpoint folder; the learner resumes from its newest checkpoint
    /// [default: learner.checkpoint_dir = runs/checkpoints].
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Policy weights (burnpack) to start from as θ0 [default: learner.init_policy =
    /// models/base/policy.bpk, the shipped θ0; "" starts from a policy seeded by
    /// learner.seed].
    #[arg(long, value_name = "FILE")]
    pub init_policy: Option<PathBuf>,
    /// Policy weights (burnpack) the KL is measured against [default: learner.reference_policy
    /// = "" = the starting policy].
    #[arg(long, value_name = "FILE")]
    pub reference_policy: Option<PathBuf>,
    /// Append per-step statistics (JSON lines) here [default: learner.history_path = none].
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Trajectories per update [default: learner.batch_size = 32].
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Seed of the initialisation [default: learner.seed = 0].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub process: Supervision,
}

impl LearnerArgs {
    pub fn apply(&self, c: &mut Config) {
        let l = &mut c.learner;
        if let Some(v) = &self.listen {
            l.listen = v.clone();
        }
        if let Some(v) = &self.metrics_listen {
            l.metrics_listen = v.clone();
        }
        if let Some(v) = self.steps {
            l.steps = v;
        }
        if let Some(v) = &self.checkpoint_dir {
            l.checkpoint_dir = v.clone();
        }
        if let Some(v) = &self.init_policy {
            l.init_policy = v.clone();
        }
        if let Some(v) = &self.reference_policy {
            l.reference_policy = v.clone();
        }
        if let Some(v) = &self.history {
            l.history_path = v.clone();
        }
        if let Some(v) = self.batch_size {
            l.batch_size = v;
        }
        if let Some(v) = self.seed {
            l.seed = v;
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ActorArgs {
    /// Learner endpoint [default: actor.learner = http://127.0.0.1:50051].
    #[arg(long, value_name = "URL")]
    pub learner: Option<String>,
    /// Reward server endpoint [default: actor.reward = http://127.0.0.1:50052].
    #[arg(long, value_name = "URL")]
    pub reward: Option<String>,
    /// This actor's name in logs, metrics and trajectories [default: $HOSTNAME, else actor-PID].
    #[arg(long, env = "MUSICRL_ACTOR_ID", value_name = "NAME")]
    pub id: Option<String>,
    /// Prometheus /metrics address; "" disables [default: actor.metrics_listen = 127.0.0.1:9102; 0.0.0.0:PORT to serve other hosts].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Sequences per round [default: actor.batch_size = 16].
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Prompt file, one caption a line [default: actor.prompts = data/prompts/train.txt].
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Base seed, mixed with the actor id [default: actor.seed = 0].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub process: Supervision,
}

impl ActorArgs {
    pub fn apply(&self, c: &mut Config) {
        let a = &mut c.actor;
        if let Some(v) = &self.learner {
            a.learner = v.clone();
        }
        if let Some(v) = &self.reward {
            a.reward = v.clone();
        }
        if let Some(v) = &self.metrics_listen {
            a.metrics_listen = v.clone();
        }
        if let Some(v) = self.batch_size {
            a.batch_size = v;
        }
        if let Some(v) = &self.prompts {
            a.prompts = v.clone();
        }
        if let Some(v) = self.seed {
            a.seed = v;
        }
    }

    /// The actor's name: `--id`, else the host name (the pod name on Kubernetes), else by PID.
    pub fn actor_id(&self) -> String {
        self.id
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| format!("actor-{}", std::process::id()))
    }
}

#[derive(Debug, Clone, Args)]
pub struct RewardArgs {
    /// gRPC listen address [default: reward.listen = 127.0.0.1:50052; 0.0.0.0:PORT to serve other hosts].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Prometheus /metrics address; "" disables [default: reward.metrics_listen = 127.0.0.1:9101; 0.0.0.0:PORT to serve other hosts].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Largest batch one Score call may carry [default: reward.max_batch = 512].
    #[arg(long, value_name = "N")]
    pub max_batch: Option<usize>,
    #[command(flatten)]
    pub process: Supervision,
}

impl RewardArgs {
    pub fn apply(&self, c: &mut Config) {
        let r = &mut c.reward;
        if let Some(v) = &self.listen {
            r.listen = v.clone();
        }
        if let Some(v) = &self.metrics_listen {
            r.metrics_listen = v.clone();
        }
        if let Some(v) = self.max_batch {
            r.max_batch = v;
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every `[default: SECTION.KEY = VALUE]` in a help text, as (flag, key, value).
    fn stated_defaults() -> Vec<(String, String, String)> {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String, String)>) {
            for arg in cmd.get_arguments() {
                let help = arg
                    .get_long_help()
                    .or(arg.get_help())
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                let mut rest = help.as_str();
                while let Some(at) = rest.find("[default: ") {
                    rest = &rest[at + "[default: ".len()..];
                    let Some((key, tail)) = rest.split_once(" = ") else {
                        continue;
                    };
                    if key.contains(' ') || !key.contains('.') {
                        continue;
                    }
                    let end = tail.find([';', ',', ']']).unwrap_or(tail.len());
                    let flag = format!("{path} --{}", arg.get_id());
                    out.push((flag, key.to_string(), tail[..end].trim().to_string()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut out = Vec::new();
        walk(&super::Cli::command(), "musicrl", &mut out);
        out
    }

    #[test]
    fn every_default_a_help_text_states_is_the_configurations() {
        // The configuration is the one source of defaults; a help text that names a key's
        // default must say the value `Config::default()` has (it once said 16 for 32).
        let config: toml::Table = musicrl_config::Config::default()
            .to_toml()
            .parse()
            .expect("the default configuration is TOML");
        let stated = stated_defaults();
        assert!(
            stated.len() >= 25,
            "only {} stated defaults found",
            stated.len()
        );
        for (flag, key, said) in stated {
            let mut value = &toml::Value::Table(config.clone());
            for part in key.split('.') {
                value = value
                    .get(part)
                    .unwrap_or_else(|| panic!("{flag}: the help names {key}, not a key"));
            }
            // A quoted value is the text between its quotes (`"" = the starting policy`).
            let said = match said.strip_prefix('"') {
                Some(q) => q.split('"').next().unwrap_or_default().to_string(),
                None => said,
            };
            let same = match value {
                toml::Value::String(s) => s == &said || (s.is_empty() && said == "none"),
                toml::Value::Integer(i) => said.parse::<i64>() == Ok(*i),
                toml::Value::Float(f) => said.parse::<f64>() == Ok(*f),
                toml::Value::Boolean(b) => said.parse::<bool>() == Ok(*b),
                other => other.to_string() == said,
            };
            assert!(
                same,
                "{flag}: the help says {key} = {said}, the configuration {value}"
            );
        }
    }

    #[test]
    fn the_help_lists_every_environment_alias() {
        for (alias, _) in musicrl_config::ENV_ALIASES {
            assert!(
                super::ENV_HELP.contains(alias),
                "{alias} is missing from ENV_HELP"
            );
        }
    }
}
