//! Typed plans: what each orchestration command does, as one struct per command with its
//! defaults and their help texts in one place. The `musicrl` binary parses them from the
//! command line (clap derives the flags and the help from these definitions); orchestration
//! that runs another command (the experiment running `local`, the feedback loop training a
//! reward) builds that command's plan. Precedence, lowest first: the embedded default, the
//! config file, the environment, `--set KEY=VALUE`, then a plan's field (`apply`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use musicrl_config::Config;

#[derive(Debug, Clone, Subcommand)]
pub enum PolicyCommand {
    /// Write a burnpack policy (with the config.toml beside it, or the configured policy
    /// shape) as a safetensors file; for a MusicGen run's checkpoint, a Hugging Face folder
    /// that transformers loads (the source folder with the trained decoder, adapters merged).
    Export {
        /// The policy, e.g. models/base/policy.bpk or a MusicGen run's
        /// checkpoints/step-N/policy.bpk [default: learner.init_policy].
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// The safetensors file to write; for a MusicGen run, the folder (new or empty).
        #[arg(long, value_name = "FILE|DIR")]
        out: PathBuf,
    },
    /// Print log-probabilities as JSON: for the melody policy, log π(a_t | caption, a_<t)
    /// of every token and V(s_t) (tests/interop/check.py reproduces them in numpy); for a
    /// MusicGen folder or a MusicGen run's checkpoint (`step-N/policy.bpk`, adapters
    /// unmerged), `{"logprob": [[…], …]}`, log p of every code of a clip (guidance off,
    /// temperature 1) given the caption and every code the delay pattern shows before it,
    /// in the codes' shape.
    Score {
        /// The policy: burnpack (.bpk), safetensors (.safetensors), or a Hugging Face
        /// MusicGen folder (config.json, model.safetensors, tokenizer.json) [default:
        /// learner.init_policy].
        #[arg(long, value_name = "FILE|DIR")]
        policy: Option<PathBuf>,
        #[arg(long, value_name = "TEXT")]
        caption: String,
        /// Melody policy: token ids, space-separated.
        #[arg(
            long,
            value_name = "IDS",
            required_unless_present = "codes",
            conflicts_with = "codes"
        )]
        tokens: Option<String>,
        /// MusicGen: a JSON file `{"codes": [[…], …]}`, K rows of T frames, undelayed (as
        /// the codec takes them).
        #[arg(long, value_name = "FILE")]
        codes: Option<PathBuf>,
    },
    /// Sample a MusicGen clip's codes for a caption and write them as JSON
    /// `{"codes": [[…], …]}` (K rows of FRAMES codes, undelayed), the form `score` reads.
    Generate {
        /// A Hugging Face MusicGen folder (config.json, model.safetensors, tokenizer.json).
        #[arg(long, value_name = "DIR")]
        policy: PathBuf,
        #[arg(long, value_name = "TEXT")]
        caption: String,
        /// Frames to generate (MusicGen's codec runs at 50 frames a second).
        #[arg(long, value_name = "N")]
        frames: usize,
        /// Take the most likely code at every step instead of sampling.
        #[arg(long)]
        greedy: bool,
        /// Sampling temperature.
        #[arg(long, value_name = "T", default_value_t = 1.0)]
        temperature: f32,
        /// Sample among the K most likely codes (0: all).
        #[arg(long, value_name = "K", default_value_t = 250)]
        top_k: usize,
        /// Classifier-free guidance scale (1 or less: off; MusicGen's published setting is 3).
        #[arg(long, value_name = "S", default_value_t = 1.0)]
        guidance: f32,
        /// Seed of the draws.
        #[arg(long, value_name = "N", default_value_t = 0)]
        seed: u64,
        /// The JSON file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Read a safetensors policy back into burnpack (policy.bpk and config.toml in OUT), so
    /// the learner, actors and every command can use it.
    Import {
        /// The safetensors file (written by `musicrl policy export`, or by your own code with
        /// the same names, shapes and metadata).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Folder for policy.bpk and config.toml.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ExperimentPlan {
    /// Output folder, replaced if an earlier experiment wrote it [default: experiment.out =
    /// runs/experiment].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The same pipeline in well under a minute (about 20 s on 2 cores): one seed, 4 steps a
    /// recipe, evaluation every 2 steps on 6 prompts (checks that everything runs; the
    /// numbers mean nothing).
    #[arg(long)]
    pub quick: bool,
    /// Independent runs (seeds) of every recipe [default: experiment.runs = 3].
    #[arg(long, value_name = "N")]
    pub runs: Option<usize>,
    /// The first seed [default: experiment.first_seed = 1].
    #[arg(long, value_name = "N")]
    pub first_seed: Option<u64>,
    /// Deterministic runs (one synchronous actor each): a seed reproduces its run exactly
    /// [default: experiment.deterministic = false].
    #[arg(long)]
    pub deterministic: bool,
}

impl ExperimentPlan {
    pub fn apply(&self, c: &mut Config) {
        if let Some(v) = &self.out {
            c.experiment.out = v.clone();
        }
        if let Some(v) = self.runs {
            c.experiment.runs = v;
        }
        if let Some(v) = self.first_seed {
            c.experiment.first_seed = v;
        }
        if self.deterministic {
            c.experiment.deterministic = true;
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct PromptsPlan {
    /// Folder for train.txt, test.txt and select.txt.
    #[arg(long, default_value = "data/prompts", value_name = "DIR")]
    pub out: PathBuf,
    /// Corpus [default: pretrain.corpus].
    #[arg(long, value_name = "FILE")]
    pub corpus: Option<PathBuf>,
    /// Only report the share of this prompt file's words unknown to the pretrained policy
    /// (write nothing).
    #[arg(long, value_name = "FILE")]
    pub check: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct JudgePlan {
    /// A policy to judge (repeat for several; every pair is compared), e.g.
    /// runs/local/checkpoints/step-00000200/policy.bpk.
    #[arg(long, value_name = "FILE")]
    pub policy: Vec<PathBuf>,
    /// Names for the policies, in order [default: the checkpoint's run folder].
    #[arg(long, value_name = "NAME")]
    pub name: Vec<String>,
    /// What the policies are compared with [default: learner.init_policy, θ0, named theta0].
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Judge samples exported earlier (samples/<model>.jsonl of an earlier run, or your own
    /// in that format) instead of sampling policies; repeat for each model.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["policy", "baseline"])]
    pub samples: Vec<PathBuf>,
    /// Output folder: results.json and samples/<model>.jsonl.
    #[arg(long, default_value = "runs/judge", value_name = "DIR")]
    pub out: PathBuf,
    /// Evaluation prompts (test-split captions only).
    #[arg(long, default_value = "data/prompts/test.txt", value_name = "FILE")]
    pub prompts: PathBuf,
    /// Clips each model samples per prompt; each clip is paired with the other model's
    /// clip of the same index.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub pairs_per_prompt: usize,
    /// Seeds the sampling (the panel has its own seed).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
    /// Raters in the pool.
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub raters: usize,
    /// Raters who score each pair (the paper: 3).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub raters_per_pair: usize,
    /// The rater/user population gap: how far the raters' taste centre sits from the typical
    /// tune, in tolerances.
    #[arg(long, default_value_t = 0.5, value_name = "X")]
    pub gap: f64,
    /// Rater noise: standard deviation in points of the 1–5 scale.
    #[arg(long, default_value_t = 0.5, value_name = "X")]
    pub noise: f64,
    /// Seeds the panel (who the raters are, their noise, the pair positions).
    #[arg(long, default_value_t = 2024, value_name = "N")]
    pub panel_seed: u64,
    /// Also score every judged clip with the configured reward components
    /// (`reward.components`) and report how often each orders two clips of a caption as the
    /// judge does (results.json "agreement"; each exported sample gains its "rewards").
    #[arg(long)]
    pub rewards: bool,
}

/// Which reward model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RewardKind {
    /// The MuLan-style text/audio model (contrastive).
    Text,
    /// The MOS-style quality regressor (graded degradations, optional ratings file).
    Quality,
    /// The Bradley–Terry user-preference model (a preference store; initialised from θ0).
    Preference,
}

#[derive(Debug, Clone, Args)]
pub struct PrefsDbPlan {
    /// The database: sqlite:PATH or postgres://USER:PASSWORD@HOST/DB [default: feedback.db].
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
}

/// The file formats of `preferences import` and `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrefsFormat {
    /// musicrl's store: {"caption", "a", "b", "choice", "who", "when"} a line.
    Store,
    /// RLHF rows: {"prompt", "chosen", "rejected", "chosen_tokens", "rejected_tokens",
    /// "channel", …} a line.
    Rlhf,
    /// A Hugging Face `datasets` folder: the RLHF rows with each clip's audio, one Parquet
    /// file (`datasets.load_dataset(FOLDER)` gives chosen_audio and rejected_audio columns).
    Hf,
}

#[derive(Debug, Clone, Args)]
pub struct PrefsImportPlan {
    /// The file (or, for hf, the folder) to import.
    pub file: PathBuf,
    /// [default: read off the input: a folder is hf, a file whose first row has "prompt" is
    /// rlhf, one with "caption" a store]
    #[arg(long, value_enum)]
    pub format: Option<PrefsFormat>,
    #[command(flatten)]
    pub db: PrefsDbPlan,
}

#[derive(Debug, Clone, Args)]
pub struct PrefsExportPlan {
    /// The JSONL file to write ("-": standard output); for hf, the folder.
    pub file: PathBuf,
    #[arg(long, value_enum, default_value_t = PrefsFormat::Rlhf)]
    pub format: PrefsFormat,
    /// Only votes cast at or after this time (Unix milliseconds).
    #[arg(long, value_name = "MS")]
    pub since_ms: Option<i64>,
    /// Only votes newer than those this reward-model version was trained on.
    #[arg(long, value_name = "VERSION")]
    pub after_version: Option<String>,
    #[command(flatten)]
    pub db: PrefsDbPlan,
}

#[derive(Debug, Clone, Args)]
pub struct FeedbackPlan {
    #[command(subcommand)]
    pub command: Option<FeedbackCommand>,
    /// HTTP listen address [default: feedback.listen = 127.0.0.1:8080; 0.0.0.0:PORT to serve other hosts].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The preference database: sqlite:PATH or postgres://… [default: feedback.db = sqlite:feedback.db].
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// Prometheus /metrics address; "" disables [default: feedback.metrics_listen = 127.0.0.1:9103].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Where pairs come from: policy, checkpoints, or learner (the newest parameters a
    /// running learner broadcasts) [default: feedback.source = policy].
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
    /// An A/B model (`NAME=PATH` or `PATH`); give it twice or more for `--source checkpoints`
    /// [default: feedback.checkpoints].
    #[arg(long = "checkpoint", value_name = "NAME=PATH")]
    pub checkpoints: Vec<String>,
    /// Seconds each clip must play before a vote counts [default: feedback.min_listen_seconds = 5].
    #[arg(long, value_name = "S")]
    pub min_listen_seconds: Option<f64>,
    #[command(flatten)]
    pub process: Supervision,
}

impl FeedbackPlan {
    pub fn apply(&self, c: &mut Config) {
        let f = &mut c.feedback;
        if let Some(v) = &self.listen {
            f.listen = v.clone();
        }
        if let Some(v) = &self.db {
            f.db = v.clone();
        }
        if let Some(v) = &self.metrics_listen {
            f.metrics_listen = v.clone();
        }
        if let Some(v) = &self.source {
            f.source = v.clone();
        }
        if !self.checkpoints.is_empty() {
            f.checkpoints = self.checkpoints.clone();
        }
        if let Some(v) = self.min_listen_seconds {
            f.min_listen_seconds = v;
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum FeedbackCommand {
    /// The simulated listeners vote through the HTTP API, as people do: each listener its
    /// own session, listening reported, the choice drawn from the listener's hidden taste.
    Bot(BotPlan),
    /// The on-policy loop, unattended, against off-policy with the same votes and steps:
    /// serve pairs of the current policy → the bot votes → retrain the preference model on
    /// the new votes (continuing from the last) → continue RL on it → repeat; then the
    /// listeners' hidden taste and the rater panel judge both arms on held-out prompts.
    /// Writes OUT/results.json, OUT/samples/ and one preference database per arm.
    Loop(LoopPlan),
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct LoopPlan {
    /// Output folder, replaced if an earlier loop wrote it.
    #[arg(long, default_value = "runs/feedback-loop", value_name = "DIR")]
    pub out: PathBuf,
    /// Votes per arm, over all its rounds.
    #[arg(long, default_value_t = 4000, value_name = "N")]
    pub votes: usize,
    /// RL steps per arm, over all its rounds (the preference reward alone, KL against θ0).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub steps: u64,
    /// Rounds of the on-policy arm (the off-policy arm has one: every vote on θ0's pairs).
    #[arg(long, default_value_t = 3, value_name = "K")]
    pub rounds: usize,
    /// Passes over each round's votes when the preference model is retrained.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub epochs: usize,
    /// Independent runs (seeds) of both arms.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub runs: usize,
    /// The first seed.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub first_seed: u64,
    /// The listener population voting (their hidden taste also judges the arms).
    #[arg(
        long,
        default_value = "models/rewards/preference/population.json",
        value_name = "FILE"
    )]
    pub population: PathBuf,
    /// Held-out captions (test-split tunes) on which the listeners judge each arm.
    #[arg(long, default_value_t = 101, value_name = "N")]
    pub prompts: usize,
    /// Pairs per held-out caption in the listeners' verdict.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub pairs_per_prompt: usize,
    /// Pairs per prompt (experiment.judge_prompts) in the rater panel's verdict; 0 skips it.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub judge_pairs_per_prompt: usize,
    /// Fresh votes on each arm's final policy, trained on by nothing: how often its last
    /// reward model still agrees with the listeners where the policy went (0 skips).
    #[arg(long, default_value_t = 600, value_name = "N")]
    pub probe_votes: usize,
    /// The same cycle in a few minutes: 2 rounds, 24 votes, 4 steps, 4 held-out prompts
    /// (checks that everything runs; the numbers mean nothing).
    #[arg(long)]
    pub quick: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BotPlan {
    /// The feedback service.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub url: String,
    /// Votes to cast.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub votes: usize,
    /// The listener population (their tastes decide the votes).
    #[arg(
        long,
        default_value = "models/rewards/preference/population.json",
        value_name = "FILE"
    )]
    pub population: PathBuf,
    /// Seconds of each clip the bot listens to, waiting in real time (at least what the
    /// server requires before a vote counts, `feedback.min_listen_seconds`, capped at the
    /// clip).
    #[arg(long, default_value_t = 0.0, value_name = "S")]
    pub listen_seconds: f64,
    /// Seeds which listener votes and their draws.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,
    /// The bot's token, the service's `feedback.bot_token_file`: its votes are then the
    /// `bot` channel and exempt from the per-address limits (without it the bot is limited
    /// like any client).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct EvaluatePlan {
    /// The policy to judge, e.g. runs/local/checkpoints/step-00000200/policy.bpk.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// What it is compared with [default: learner.init_policy, θ0].
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// The listener population (the one the shipped preference model learned from by default).
    #[arg(
        long,
        default_value = "models/rewards/preference/population.json",
        value_name = "FILE"
    )]
    pub population: PathBuf,
    /// Held-out captions, from tunes of the test split (101, as in the paper).
    #[arg(long, default_value_t = 101, value_name = "N")]
    pub prompts: usize,
    /// Pairs judged per caption, each by a random listener.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub pairs_per_prompt: usize,
    /// Corpus for the captions [default: pretrain.corpus].
    #[arg(long, value_name = "FILE")]
    pub corpus: Option<PathBuf>,
    /// Seeds the prompts, both policies' sampling and the listeners (separate streams).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
}

#[derive(Debug, Clone, Args)]
pub struct SimulatePlan {
    /// Pairs to judge (20,000 take about 6 minutes on 2 cores; with 3,000 the preference
    /// model overfitted, see docs/rewards.md).
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub pairs: usize,
    /// The preference store to append to. The listener population lives beside it in
    /// population.json: drawn when the folder has none, reused when appending, so that a store
    /// holds one population's choices (give each store its own folder).
    #[arg(
        long,
        default_value = "runs/preferences/store.jsonl",
        value_name = "FILE"
    )]
    pub store: PathBuf,
    /// Listeners in a new population [default: 200].
    #[arg(long, value_name = "N")]
    pub listeners: Option<usize>,
    /// How much a new population's tastes differ (standard deviation of each listener's ideal
    /// around the typical tune's, in tolerances) [default: 1.0].
    #[arg(long, value_name = "X")]
    pub spread: Option<f32>,
    /// Choice noise of a new population: a listener picks A with probability
    /// σ((u(A) − u(B)) / temperature) [default: the shipped population's calibrated 3.08].
    #[arg(long, value_name = "X")]
    pub temperature: Option<f32>,
    /// How much a new population's listeners weigh whether a clip has the key and meter their
    /// caption asks for (mean over listeners; `preferences calibrate` finds it) [default: the
    /// shipped population's calibrated weight].
    #[arg(long, value_name = "X")]
    pub caption_weight: Option<f32>,
    /// The policy to sample from [default: learner.init_policy].
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Corpus for the captions [default: pretrain.corpus].
    #[arg(long, value_name = "FILE")]
    pub corpus: Option<PathBuf>,
    /// Seeds a new store's population; the pairs and choices use it mixed with the store's
    /// current length, so appending draws new pairs.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
}

#[derive(Debug, Clone, Args)]
pub struct CalibratePlan {
    /// Pairs of base-policy samples to calibrate on (2,000: about 3 minutes on 2 cores).
    #[arg(long, default_value_t = 2_000, value_name = "N")]
    pub pairs: usize,
    /// The store the calibrated population is for: population.json, calibration.jsonl and
    /// calibration.json are written beside it (a new folder), `simulate --store` fills it.
    #[arg(
        long,
        default_value = "runs/preferences/store.jsonl",
        value_name = "FILE"
    )]
    pub store: PathBuf,
    /// The share of choices the text reward should pick (the paper's MuLan score: 0.516).
    #[arg(long, default_value_t = 0.516, value_name = "X")]
    pub target_text: f64,
    /// Listeners in the population.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub listeners: usize,
    /// How much the listeners' tastes differ (see `simulate --spread`).
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub spread: f32,
    /// Choice noise (see `simulate --temperature`) [default: calibrated so that the shared
    /// taste agrees with the choices --target-ceiling of the time].
    #[arg(long, value_name = "X")]
    pub temperature: Option<f32>,
    /// The shared-taste ceiling of agreement the temperature is calibrated to: the paper's
    /// preference model reached 0.60, ours stays 0.05–0.08 under this ceiling.
    #[arg(long, default_value_t = 0.675, value_name = "X")]
    pub target_ceiling: f64,
    /// Calibrate on these scored pairs (a calibration.jsonl) instead of sampling and scoring
    /// new ones.
    #[arg(long, value_name = "FILE")]
    pub scored: Option<PathBuf>,
    /// The policy to sample from [default: learner.init_policy].
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Corpus for the captions [default: pretrain.corpus].
    #[arg(long, value_name = "FILE")]
    pub corpus: Option<PathBuf>,
    /// Seeds the population (as `simulate --seed` does) and, mixed, the calibration pairs.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
}

#[derive(Debug, Clone, Args)]
pub struct TrainRewardPlan {
    /// The model to train.
    #[arg(value_enum)]
    pub kind: RewardKind,
    /// The corpus [default: pretrain.corpus = data/corpus/tunes.jsonl.gz].
    #[arg(long, value_name = "FILE")]
    pub corpus: Option<PathBuf>,
    /// Checkpoint folder (model.bpk, config.json, metrics.json) [default: runs/rewards/KIND].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Training tunes, a seeded sample of the train split; 0 = all [default: text 3000, quality 5000].
    #[arg(long, value_name = "N")]
    pub tunes: Option<usize>,
    /// Passes over the training data [default: text 15, quality 20, preference 1].
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Held-out clips to measure on [default: text 100 pairs, quality 400 clips].
    #[arg(long, value_name = "N")]
    pub eval: Option<usize>,
    /// Clip length in tokens, as the policy samples [default: policy.max_tokens].
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<usize>,
    /// Quality only: a ratings file (JSON Lines of {"wav": PATH, "mos": 1..5}) to train on too.
    #[arg(long, value_name = "FILE")]
    pub ratings: Option<PathBuf>,
    /// Quality only: train on the ratings file alone, without synthetic degradations.
    #[arg(long, requires = "ratings")]
    pub ratings_only: bool,
    /// Preference only: the preference store [default: runs/preferences/store.jsonl].
    #[arg(long, value_name = "FILE")]
    pub store: Option<PathBuf>,
    /// Preference only: ignore captions (the paper's caption-less ablation).
    #[arg(long)]
    pub caption_free: bool,
    /// Preference only: train on the decisive votes of this preference database
    /// (sqlite:PATH or postgres://…) instead of --store, and record the new model version in it.
    #[arg(long, value_name = "URL", conflicts_with = "store")]
    pub db: Option<String>,
    /// Preference with --db: only votes cast at or after this time (Unix milliseconds).
    #[arg(long, value_name = "MS", requires = "db")]
    pub since_ms: Option<i64>,
    /// Preference with --db: only votes newer than those this model version was trained on.
    #[arg(long, value_name = "VERSION", requires = "db")]
    pub after_version: Option<String>,
    /// Preference only: continue from this preference checkpoint folder (its architecture
    /// and weights) instead of initialising from the base policy.
    #[arg(long, value_name = "DIR")]
    pub continue_from: Option<PathBuf>,
    /// Training seed.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Text and quality: after training, sample θ0 this many times for each selection prompt
    /// (experiment.eval_prompts) and measure how often the new model orders two clips of one
    /// caption as the rater panel does (its on-policy concordance, the headline figure in
    /// metrics.json); 0 skips it.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub on_policy_clips: usize,
    /// Text and quality: more clips for that measurement, exported by `musicrl judge`
    /// (DIR/samples/MODEL.jsonl), e.g. of RL checkpoints (repeatable).
    #[arg(long, value_name = "FILE")]
    pub on_policy_samples: Vec<PathBuf>,
}

/// Flags for processes that another program supervises (`musicrl local`, tests, scripts).
#[derive(Debug, Clone, Default, Args)]
pub struct Supervision {
    /// Once listening, write the bound addresses here as JSON (`{"grpc": .., "metrics": ..}`),
    /// which is how a supervisor learns the real port behind `:0`.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
    /// On exit, write what the process did here as JSON.
    #[arg(long, value_name = "FILE")]
    pub outcome_file: Option<PathBuf>,
    /// Also stop when standard input closes (a supervisor's death then stops its children).
    #[arg(long, hide = true)]
    pub stop_on_stdin_close: bool,
}

#[derive(Debug, Clone, Default, Args)]
pub struct LocalPlan {
    /// Learner steps to run [default: local.steps = 200].
    #[arg(long, value_name = "N")]
    pub steps: Option<u64>,
    /// Actor processes [default: local.actors = 2].
    #[arg(long, value_name = "K")]
    pub actors: Option<usize>,
    /// Output folder: summary.json, history.jsonl, checkpoints/, logs/ [default: local.out = runs/local].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in OUT from its newest checkpoint, to a total of --steps (the
    /// prompt stream continues too). An error when OUT holds no checkpoint; nothing to do
    /// when the run already has --steps.
    #[arg(long)]
    pub resume: bool,
    /// Replace the previous run in OUT (its checkpoints, history and summary are deleted).
    /// Without it (or --resume) a new run refuses to start over a previous one.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Do not serve Prometheus metrics from the child processes.
    #[arg(long)]
    pub no_metrics: bool,
    /// The policy to start from [default: learner.init_policy, θ0]; e.g. RL-R's checkpoint
    /// for config/rl-ru.toml.
    #[arg(long, value_name = "FILE")]
    pub init_policy: Option<PathBuf>,
    /// The policy the KL is measured against [default: learner.reference_policy, "" = the
    /// starting policy].
    #[arg(long, value_name = "FILE")]
    pub reference_policy: Option<PathBuf>,
    /// Run without mutual TLS, tokens and reward seals. By default every connection uses
    /// them, from a development CA written to OUT/security (`musicrl security init`), so no
    /// other local process can push trajectories or read the policy.
    #[arg(long)]
    pub insecure: bool,
    /// Mutual TLS, tokens and reward seals: the default (kept so older scripts run).
    #[arg(long, hide = true, conflicts_with = "insecure")]
    pub secure: bool,
}

impl LocalPlan {
    pub fn apply(&self, c: &mut Config) {
        if let Some(v) = self.steps {
            c.local.steps = v;
        }
        if let Some(v) = self.actors {
            c.local.actors = v;
        }
        if let Some(v) = &self.out {
            c.local.out = v.clone();
        }
        if self.no_metrics {
            c.local.metrics = false;
        }
        if let Some(v) = &self.init_policy {
            c.learner.init_policy = v.clone();
        }
        if let Some(v) = &self.reference_policy {
            c.learner.reference_policy = v.clone();
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct BenchPlan {
    /// Timed repetitions of each measurement (after one warm-up).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub iters: usize,
    /// Sequences sampled together (the actor's batch) [default: actor.batch_size].
    #[arg(long, value_name = "N")]
    pub sample_batch: Option<usize>,
    /// Trajectories per learner update [default: learner.batch_size].
    #[arg(long, value_name = "N")]
    pub learner_batch: Option<usize>,
    /// Batch sizes the actors' rollout engine is measured at (comma list).
    #[arg(
        long,
        value_name = "N,N,..",
        value_delimiter = ',',
        default_value = "1,8,32,64"
    )]
    pub batches: Vec<usize>,
    /// Tokens per sampled sequence [default: policy.max_tokens]. Every sequence runs this
    /// long (END does not stop it), so each iteration does the same work.
    #[arg(long, value_name = "N")]
    pub tokens: Option<usize>,
    /// Which workloads to run (comma list of engine, burn, uncached, learner, broadcast,
    /// reward, musicgen, lora; broadcast, a 100 M-parameter policy's broadcast, reward, the
    /// reward server over gRPC against in-process scoring, musicgen, sampling a MusicGen
    /// folder (--musicgen), and lora, a MusicGen version's broadcast whole and as adapters
    /// (policy.lora, or rank 16 on q_proj and v_proj), are not in the default list).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "engine,burn,uncached,learner"
    )]
    pub workloads: Vec<String>,
    /// The musicgen and lora workloads' model: a Hugging Face MusicGen folder
    /// (`scripts/bench_musicgen.py` writes a random one of musicgen-small's shape).
    #[arg(long, value_name = "DIR")]
    pub musicgen: Option<PathBuf>,
    /// Frames each musicgen sample runs (50 a second of audio).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub musicgen_frames: usize,
    /// Clips in the musicgen workload's timed learner update (`MusicgenTrainer`, the loop's
    /// objective over every code); 0 skips it.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub musicgen_update_batch: usize,
    /// Width of the broadcast workload's synthetic policy (d_ff = 4 x this).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub broadcast_d_model: usize,
    /// Depth of the broadcast workload's synthetic policy (1024 x 8: 101 M parameters).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub broadcast_layers: usize,
    /// Also write the results here as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct PretrainPlan {
    /// The corpus [default: pretrain.corpus = data/corpus/tunes.jsonl.gz].
    #[arg(long, value_name = "FILE")]
    pub corpus: Option<PathBuf>,
    /// Output folder for policy.bpk, config.toml, metrics.json [default: pretrain.out = runs/pretrain].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Passes over the training split [default: pretrain.epochs = 8].
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Use at most N tunes per split, for quick runs [default: pretrain.max_tunes = 0, all].
    #[arg(long, value_name = "N")]
    pub max_tunes: Option<usize>,
}

impl PretrainPlan {
    pub fn apply(&self, c: &mut Config) {
        let p = &mut c.pretrain;
        if let Some(v) = &self.corpus {
            p.corpus = v.clone();
        }
        if let Some(v) = &self.out {
            p.out = v.clone();
        }
        if let Some(v) = self.epochs {
            p.epochs = v;
        }
        if let Some(v) = self.max_tunes {
            p.max_tunes = v;
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct GeneratePlan {
    /// A caption to generate for (repeat the flag for several).
    #[arg(long, required = true, value_name = "TEXT")]
    pub caption: Vec<String>,
    /// Samples per caption.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub n: usize,
    /// Output folder (WAVs, token files, index.html).
    #[arg(long, default_value = "runs/generate", value_name = "DIR")]
    pub out: PathBuf,
    /// Policy weights; the config.toml beside them gives the architecture
    /// [default: learner.init_policy, the shipped base policy models/base/policy.bpk].
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Sampling seed.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,
}
