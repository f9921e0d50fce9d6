//! An actor: follows the learner's parameter broadcast, samples sequences for captions,
//! has them scored by the reward server, and pushes the scored trajectories, each tagged
//! with the policy version that sampled it.
//!
//! Actors are stateless and safe to kill at any time: a batch in flight is simply lost
//! (never half-pushed), and a restarted actor starts from the learner's newest version.
//! Both connections are lazy channels: when a server goes away, calls fail, the actor
//! retries with exponential backoff, and the channel reconnects by itself.

pub mod balance;

use musicrl_client::backoff;
pub use musicrl_client::{CappedBackoff, Token, lazy_channel, learner_client};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, Retryable};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::watch;
use tonic::transport::Channel;

use musicrl_common::prompts::load_prompts;
use musicrl_common::types::SampleScore;
use musicrl_common::wire::{self, ScoreInput, TRAINING_COMPLETE};
use musicrl_common::{PolicyVersion, Trajectory};
use musicrl_config::Config;
use musicrl_policy::{ParameterBlob, Rollout, Sampled};
use musicrl_proto::v1::learner_service_client::LearnerServiceClient;
use musicrl_proto::v1::reward_service_client::RewardServiceClient;

/// Errors that stop an actor (transient network failures are retried, not returned).
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error(transparent)]
    Common(#[from] musicrl_common::Error),
    #[error("bad endpoint {url:?}: {message}")]
    Endpoint { url: String, message: String },
    #[error("the sampling task failed: {0}")]
    Sampling(String),
    /// The learner's policy or sampling settings differ from this actor's: the log-probs it
    /// would record would not be the ones the learner computes.
    #[error(
        "this actor's configuration disagrees with the learner's: {0}; give every role the same configuration"
    )]
    Mismatch(String),
    #[error(transparent)]
    Client(#[from] musicrl_client::ClientError),
}

/// Checks that this actor samples exactly as the learner will score: the same policy
/// configuration (vocabulary, END, caption encoder and its buckets, …) and the same sampling
/// temperature as the parameter version it received. The error names every differing key.
pub fn check_agreement(config: &Config, blob: &ParameterBlob) -> Result<()> {
    if config.policy == blob.config
        && config.sampling.temperature.to_bits() == blob.temperature.to_bits()
    {
        return Ok(());
    }
    let mut differences = config.policy.differences(&blob.config);
    if config.sampling.temperature.to_bits() != blob.temperature.to_bits() {
        differences.push(format!(
            "sampling.temperature ({} here vs {} at the learner)",
            config.sampling.temperature, blob.temperature
        ));
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(ActorError::Mismatch(differences.join(", ")))
    }
}

/// Result with [`ActorError`].
pub type Result<T, E = ActorError> = std::result::Result<T, E>;

/// What an actor did before it stopped. Its own ledger: `sampled = pushed + duplicates +
/// rejected + abandoned` (abandoned: sampled and never delivered, because training ended or
/// the actor stopped with the batch in hand).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ActorOutcome {
    pub rounds: u64,
    /// This actor incarnation (the `actor_run` of its trajectory ids).
    #[serde(default)]
    pub actor_run: u64,
    #[serde(default)]
    pub sampled: u64,
    pub samples_pushed: u64,
    /// Trajectories the learner had already received (a retried push).
    #[serde(default)]
    pub duplicates: u64,
    /// Trajectories the learner refused as malformed, forged or unusable (not those pushed
    /// after training completed: [`ActorOutcome::samples_after_end`]).
    pub samples_rejected: u64,
    /// Trajectories pushed after the learner had finished training (refused
    /// `training_complete`: sampled while the last update ran; no fault).
    #[serde(default)]
    pub samples_after_end: u64,
    #[serde(default)]
    pub abandoned: u64,
    pub max_policy_version_used: u64,
    pub versions_loaded: u64,
}

/// Runs one actor until the learner announces the end of training or `shutdown` resolves.
///
/// Each round is a fixed sequence of named steps ([`Actor::round`]): take the newest
/// version, wait for this actor's turn (deterministic mode), place the draws, sample off the
/// executor, score, push, account, and back off after a refused push. Every step that waits
/// also watches `shutdown`, and the waits on the reward server and the learner also watch for
/// the end of training; each step says whether the round goes on, starts again or stops.
pub async fn run(
    config: Config,
    actor_id: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ActorOutcome> {
    let mut actor = Actor::start(config, actor_id)?;
    let mut shutdown = std::pin::pin!(shutdown);
    while let Round::Next = actor.round(&mut shutdown).await? {}
    Ok(actor.stop())
}

/// How a round ended.
enum Round {
    /// Go on with the next round.
    Next,
    /// The actor stops (shutdown, training complete, the broadcast gone).
    Stop,
}

/// What a step of a round gives: its value, or that the round ends early.
enum Step<T> {
    Ready(T),
    /// Abandon this round and start the next.
    NextRound,
    Stop,
}

/// The value of a step, or the early end of the round it asks for.
macro_rules! step {
    ($e:expr) => {
        match $e {
            Step::Ready(v) => v,
            Step::NextRound => return Ok(Round::Next),
            Step::Stop => return Ok(Round::Stop),
        }
    };
}

/// One actor's state across rounds.
struct Actor {
    config: Config,
    actor_id: String,
    prompts: Vec<String>,
    token: Option<Token>,
    learner: LearnerServiceClient<Channel>,
    reward: RewardServiceClient<Channel>,
    /// The newest version the follower received.
    params: watch::Receiver<Option<Arc<ParameterBlob>>>,
    subscriber: tokio::task::JoinHandle<()>,
    seed: u64,
    /// In the actor between rounds; in the blocking pool while it samples.
    worker: Option<Worker>,
    outcome: ActorOutcome,
    /// The next trajectory's sequence number in this incarnation.
    sequence: u64,
    /// Rounds whose push the learner refused as a whole, in a row: each waits longer.
    refused_rounds: musicrl_client::CappedDelays,
    /// Deterministic mode: the version being sampled and how many trajectories the learner
    /// has accepted of it.
    sync: Option<(PolicyVersion, usize)>,
    /// Whether the draws have been seeded from the first version this actor samples.
    stream_placed: bool,
}

impl Actor {
    /// Validates the configuration, makes the clients and starts following the broadcast.
    fn start(config: Config, actor_id: String) -> Result<Self> {
        config.validate().map_err(musicrl_common::Error::from)?;
        musicrl_telemetry::metrics_catalog::register(
            musicrl_telemetry::metrics_catalog::Role::Actor,
        );
        if !config.actor.prompts.as_os_str().is_empty() && !config.actor.prompts.exists() {
            return Err(musicrl_common::Error::from(musicrl_config::paths::missing(
                "actor.prompts",
                &config.actor.prompts,
            ))
            .into());
        }
        let prompts = load_prompts(&config.actor.prompts)?;
        let token = musicrl_security::tokens::client_token(&config.security.token_file)?;
        let learner = learner_client(&config, &config.actor.learner)?;
        let reward = RewardServiceClient::new(balance::reward_channel(
            &config.actor.reward,
            Duration::from_secs_f64(config.actor.reward_resolve_seconds),
            &config.security,
        )?)
        .send_compressed(tonic::codec::CompressionEncoding::Zstd)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd);

        let (params_tx, params) = watch::channel::<Option<Arc<ParameterBlob>>>(None);
        let subscriber = tokio::spawn(musicrl_client::follow::follow(
            learner.clone(),
            token.clone(),
            actor_id.clone(),
            config.actor.parameter_encoding,
            params_tx,
            backoff(&config),
            config.actor.exit_on_completion,
        ));
        let seed = config.actor.seed ^ fnv(&actor_id);
        let worker = Worker {
            prompt_rng: StdRng::seed_from_u64(seed.rotate_left(17)),
            rollout: None,
            reseed: Some(seed),
            engine: config.actor.engine.clone(),
            threads: config.actor.threads,
            temperature: config.sampling.temperature,
        };
        let actor_run = musicrl_common::types::fresh_run_id();
        tracing::info!(actor = %actor_id, actor_run = %format!("{actor_run:016x}"), learner = %config.actor.learner, reward = %config.actor.reward, synchronous = config.actor.synchronous, "actor started");
        Ok(Self {
            refused_rounds: backoff(&config).build(),
            config,
            actor_id,
            prompts,
            token,
            learner,
            reward,
            params,
            subscriber,
            seed,
            worker: Some(worker),
            outcome: ActorOutcome {
                actor_run,
                ..ActorOutcome::default()
            },
            sequence: 0,
            sync: None,
            stream_placed: false,
        })
    }

    /// Stops following the broadcast and reports what this actor did.
    fn stop(self) -> ActorOutcome {
        self.subscriber.abort();
        tracing::info!(actor = %self.actor_id, outcome = ?self.outcome, "actor stopped");
        self.outcome
    }

    /// One round: sample a batch with the newest version, score it, push it.
    async fn round<S: Future<Output = ()>>(&mut self, shutdown: &mut Pin<&mut S>) -> Result<Round> {
        let blob = step!(self.newest_version(shutdown).await);
        check_agreement(&self.config, &blob)?;
        if blob.training_complete {
            return Ok(self.training_completed(&blob, shutdown).await);
        }
        step!(self.wait_for_turn(&blob, shutdown).await);
        let mut worker = self
            .worker
            .take()
            .expect("the worker is returned after every round");
        self.place_draws(&mut worker, &blob);
        let captions = self.draw_captions(&mut worker);
        let (sampled, first_sequence) =
            step!(self.sample(worker, &blob, &captions, shutdown).await?);
        let inputs: Vec<ScoreInput> = captions
            .iter()
            .zip(&sampled)
            .map(|(c, s)| ScoreInput {
                caption: c.clone(),
                tokens: s.tokens.clone(),
            })
            .collect();
        let in_hand = inputs.len() as u64;
        let scored = step!(self.score_round(&inputs, shutdown).await);
        let trajectories = self.trajectories(&blob, first_sequence, captions, sampled, scored);
        let pushed = step!(self.push_round(&trajectories, in_hand, shutdown).await);
        self.account(&blob, &pushed);
        step!(self.back_off_if_refused(&pushed, shutdown).await);
        Ok(Round::Next)
    }

    /// The newest parameters, waiting for the first version.
    async fn newest_version<S: Future<Output = ()>>(
        &mut self,
        shutdown: &mut Pin<&mut S>,
    ) -> Step<Arc<ParameterBlob>> {
        loop {
            if let Some(b) = self.params.borrow_and_update().clone() {
                return Step::Ready(b);
            }
            tokio::select! {
                changed = self.params.changed() => if changed.is_err() { return Step::Stop },
                () = shutdown.as_mut() => return Step::Stop,
            }
        }
    }

    /// The learner announced the end of training: stop, or wait for a new run's version.
    async fn training_completed<S: Future<Output = ()>>(
        &mut self,
        blob: &ParameterBlob,
        shutdown: &mut Pin<&mut S>,
    ) -> Round {
        if self.config.actor.exit_on_completion {
            tracing::info!(actor = %self.actor_id, version = %blob.version, "training complete; actor exits");
            return Round::Stop;
        }
        tracing::info!(actor = %self.actor_id, version = %blob.version, "training complete; waiting for a new run");
        tokio::select! {
            changed = self.params.changed() => if changed.is_err() { return Round::Stop },
            () = shutdown.as_mut() => return Round::Stop,
        }
        Round::Next
    }

    /// Deterministic mode: once this version's update has its batch, wait for the next
    /// version (the round starts again). Otherwise records the version being sampled.
    async fn wait_for_turn<S: Future<Output = ()>>(
        &mut self,
        blob: &ParameterBlob,
        shutdown: &mut Pin<&mut S>,
    ) -> Step<()> {
        if !self.config.actor.synchronous {
            return Step::Ready(());
        }
        let pushed = match self.sync {
            Some((v, n)) if v == blob.version => n,
            _ => 0,
        };
        if pushed >= self.config.learner.batch_size {
            tokio::select! {
                changed = self.params.changed() => if changed.is_err() { return Step::Stop },
                () = shutdown.as_mut() => return Step::Stop,
            }
            return Step::NextRound;
        }
        self.sync = Some((blob.version, pushed));
        Step::Ready(())
    }

    /// Seeds the round's draws where they must restart: in deterministic mode from (seed,
    /// version, round) alone, not from history; otherwise once, from the first version this
    /// actor samples, so a run resumed at step 200 (whose learner publishes version 200
    /// first) does not replay the captions of steps 1, 2, … (a fresh run, version 0, draws as
    /// before).
    fn place_draws(&mut self, worker: &mut Worker, blob: &ParameterBlob) {
        let by_version = self.seed ^ blob.version.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let seed = if self.config.actor.synchronous {
            let pushed = self.sync.map_or(0, |(_, n)| n);
            let round = (pushed / self.config.actor.batch_size) as u64;
            Some(by_version ^ round.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        } else {
            (!self.stream_placed).then_some(by_version)
        };
        if let Some(s) = seed {
            worker.reseed = Some(s);
            worker.prompt_rng = StdRng::seed_from_u64(s.rotate_left(17));
        }
        self.stream_placed = true;
    }

    /// The round's captions: `samples_per_prompt` clips of each caption drawn, side by side,
    /// so the learner can take a leave-one-out baseline within each caption.
    fn draw_captions(&self, worker: &mut Worker) -> Vec<String> {
        let batch = self.config.actor.batch_size;
        let k = self.config.actor.samples_per_prompt.clamp(1, batch.max(1));
        (0..batch.div_ceil(k))
            .map(|_| self.prompts[worker.prompt_rng.random_range(0..self.prompts.len())].clone())
            .flat_map(|c| std::iter::repeat_n(c, k))
            .take(batch)
            .collect()
    }

    /// Loads the version if it is new and samples one clip per caption, off the executor.
    /// Returns the clips and the sequence number of the first.
    async fn sample<S: Future<Output = ()>>(
        &mut self,
        mut worker: Worker,
        blob: &Arc<ParameterBlob>,
        captions: &[String],
        shutdown: &mut Pin<&mut S>,
    ) -> Result<Step<(Vec<Sampled>, u64)>> {
        let sampling = {
            let captions = captions.to_vec();
            let blob = blob.clone();
            tokio::task::spawn_blocking(move || {
                let loaded = worker.ensure_policy(&blob);
                let started = Instant::now();
                let sampled: musicrl_common::Result<Vec<Sampled>> =
                    match (&loaded, worker.rollout.as_mut()) {
                        (Ok(_), Some(rollout)) => rollout.sample(&captions).map_err(Into::into),
                        _ => Ok(Vec::new()),
                    };
                (worker, loaded, sampled, started.elapsed())
            })
        };
        let (worker, loaded, sampled, took) = tokio::select! {
            r = sampling => r.map_err(|e| ActorError::Sampling(e.to_string()))?,
            () = shutdown.as_mut() => return Ok(Step::Stop),
        };
        let loaded = loaded?;
        self.worker = Some(worker);
        let sampled = sampled?;
        if let Some(load) = loaded {
            self.outcome.versions_loaded += 1;
            metrics::histogram!(musicrl_telemetry::metrics_catalog::ACTOR_PARAM_LOAD_SECONDS)
                .record(load.as_secs_f64());
            metrics::gauge!(musicrl_telemetry::metrics_catalog::ACTOR_POLICY_VERSION)
                .set(blob.version.0 as f64);
        }
        let n_tokens: usize = sampled.iter().map(|s| s.tokens.len()).sum();
        let first_sequence = self.sequence;
        self.sequence += sampled.len() as u64;
        self.outcome.sampled += sampled.len() as u64;
        metrics::histogram!(musicrl_telemetry::metrics_catalog::ACTOR_SAMPLE_SECONDS)
            .record(took.as_secs_f64());
        metrics::counter!(musicrl_telemetry::metrics_catalog::ACTOR_SAMPLES_TOTAL)
            .increment(sampled.len() as u64);
        metrics::counter!(musicrl_telemetry::metrics_catalog::ACTOR_TOKENS_TOTAL)
            .increment(n_tokens as u64);
        Ok(Step::Ready((sampled, first_sequence)))
    }

    /// Scores the round's clips, retrying through outages; the clips in hand are abandoned
    /// if the actor stops or training ends first.
    async fn score_round<S: Future<Output = ()>>(
        &mut self,
        inputs: &[ScoreInput],
        shutdown: &mut Pin<&mut S>,
    ) -> Step<Scored> {
        let in_hand = inputs.len() as u64;
        let step = tokio::select! {
            r = score(&self.reward, self.token.as_ref(), inputs, &self.config) => Step::Ready(r),
            () = shutdown.as_mut() => Step::Stop,
            () = training_complete(self.params.clone()) => Step::NextRound,
        };
        if !matches!(step, Step::Ready(_)) {
            self.outcome.abandoned += in_hand;
        }
        step
    }

    /// The round's trajectories, each tagged with the version that sampled it.
    fn trajectories(
        &self,
        blob: &ParameterBlob,
        first_sequence: u64,
        captions: Vec<String>,
        sampled: Vec<Sampled>,
        (scores, components, scorer_version): Scored,
    ) -> Vec<Trajectory> {
        captions
            .into_iter()
            .zip(sampled)
            .zip(scores)
            .enumerate()
            .map(
                |(i, ((caption, Sampled { tokens, logprobs }), s))| Trajectory {
                    id: musicrl_common::types::TrajectoryId {
                        actor_run: self.outcome.actor_run,
                        sequence: first_sequence + i as u64,
                    },
                    learner_run: blob.learner_run,
                    seal: s.seal,
                    actor_id: self.actor_id.clone(),
                    policy_version: blob.version,
                    caption,
                    tokens,
                    behaviour_logprobs: logprobs,
                    reward: s.reward,
                    components: components.iter().cloned().zip(s.components).collect(),
                    component_windows: s.windows,
                    scorer_version: scorer_version.clone(),
                },
            )
            .collect()
    }

    /// Pushes the round's trajectories, retrying through outages.
    async fn push_round<S: Future<Output = ()>>(
        &mut self,
        trajectories: &[Trajectory],
        in_hand: u64,
        shutdown: &mut Pin<&mut S>,
    ) -> Step<musicrl_proto::v1::PushSummary> {
        let call = push(
            &self.learner,
            self.token.as_ref(),
            trajectories,
            &self.config,
        );
        tokio::pin!(call);
        let pushed = tokio::select! {
            r = &mut call => Some(r),
            () = shutdown.as_mut() => {
                self.outcome.abandoned += in_hand;
                return Step::Stop;
            }
            // Training ended while the push was in flight. The learner may have trained on
            // these very trajectories and be answering now (it shuts down gracefully), so
            // wait a little for the answer instead of counting delivered samples as
            // abandoned; it may also be gone for good, so do not retry into the void.
            () = training_complete(self.params.clone()) => {
                tokio::time::timeout(PUSH_GRACE, &mut call).await.ok()
            }
        };
        match pushed {
            Some(p) => Step::Ready(p),
            None => {
                self.outcome.abandoned += in_hand;
                Step::NextRound
            }
        }
    }

    /// Counts the learner's answer into the outcome and the metrics.
    fn account(&mut self, blob: &ParameterBlob, pushed: &musicrl_proto::v1::PushSummary) {
        let outcome = &mut self.outcome;
        outcome.rounds += 1;
        outcome.samples_pushed += pushed.accepted;
        outcome.duplicates += pushed.duplicates;
        if let Some((v, n)) = self.sync.as_mut()
            && *v == blob.version
        {
            *n += pushed.accepted as usize;
        }
        let after_end: u64 = pushed
            .rejections
            .iter()
            .filter(|r| r.reason == TRAINING_COMPLETE)
            .map(|r| r.count)
            .sum();
        outcome.samples_after_end += after_end;
        outcome.samples_rejected += pushed.rejected.saturating_sub(after_end);
        outcome.max_policy_version_used = outcome.max_policy_version_used.max(blob.version.0);
        let lag = pushed.learner_version.saturating_sub(blob.version.0);
        metrics::gauge!(musicrl_telemetry::metrics_catalog::ACTOR_POLICY_LAG).set(lag as f64);
        if pushed.rejected > 0 {
            metrics::counter!(
                musicrl_telemetry::metrics_catalog::ACTOR_TRAJECTORIES_REJECTED_TOTAL
            )
            .increment(pushed.rejected);
            if pushed
                .rejections
                .iter()
                .all(|r| r.reason == TRAINING_COMPLETE)
            {
                tracing::info!(actor = %self.actor_id, "the learner has finished training");
            } else {
                tracing::warn!(actor = %self.actor_id, rejections = ?pushed.rejections, "the learner rejected trajectories");
            }
        }
    }

    /// A push refused whole (malformed, forged, or a learner that cannot use them): never
    /// sample and push again at full speed; wait, longer each time in a row.
    async fn back_off_if_refused<S: Future<Output = ()>>(
        &mut self,
        pushed: &musicrl_proto::v1::PushSummary,
        shutdown: &mut Pin<&mut S>,
    ) -> Step<()> {
        if pushed.accepted > 0 || pushed.duplicates > 0 {
            self.refused_rounds = backoff(&self.config).build();
            return Step::Ready(());
        }
        let wait = self
            .refused_rounds
            .next()
            .unwrap_or(Duration::from_secs_f64(
                self.config.actor.max_backoff_seconds,
            ));
        tracing::warn!(actor = %self.actor_id, ?wait, "the learner refused a whole push; backing off");
        tokio::select! {
            () = tokio::time::sleep(wait) => Step::Ready(()),
            () = shutdown.as_mut() => Step::Stop,
        }
    }
}

/// A round's scores: each clip's, the component names, the scorer version.
type Scored = (Vec<SampleScore>, Vec<String>, String);

/// Resolves once the learner has announced the end of training (never otherwise).
async fn training_complete(mut params: watch::Receiver<Option<Arc<ParameterBlob>>>) {
    loop {
        if params
            .borrow_and_update()
            .as_ref()
            .is_some_and(|b| b.training_complete)
        {
            return;
        }
        if params.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The sampling state that moves in and out of the blocking pool each round.
struct Worker {
    prompt_rng: StdRng,
    /// The family's rollout, made from the first version's configuration.
    rollout: Option<Box<dyn Rollout>>,
    /// The seed the next round's draws restart from, when they restart.
    reseed: Option<u64>,
    /// `actor.engine`, `actor.threads` and `sampling.temperature`.
    engine: String,
    threads: usize,
    temperature: f32,
}

impl Worker {
    /// Loads `blob` unless it is the version already loaded (returning how long loading
    /// took), then restarts the draws if the round asked to.
    fn ensure_policy(&mut self, blob: &ParameterBlob) -> musicrl_common::Result<Option<Duration>> {
        let started = Instant::now();
        let rollout = match &mut self.rollout {
            Some(rollout) => rollout,
            None => self.rollout.insert(musicrl_policy::rollout(
                &blob.config,
                &self.engine,
                self.threads,
                self.temperature,
                &musicrl_policy::device::inference_device(),
            )?),
        };
        let loaded = if rollout.version() == Some(blob.version) {
            None
        } else {
            rollout.load(blob)?;
            Some(started.elapsed())
        };
        if let Some(seed) = self.reseed.take() {
            rollout.reseed(seed);
        }
        Ok(loaded)
    }
}

async fn score(
    client: &RewardServiceClient<Channel>,
    token: Option<&Token>,
    inputs: &[ScoreInput],
    config: &Config,
) -> (Vec<SampleScore>, Vec<String>, String) {
    let timeout = Duration::from_secs_f64(config.actor.reward_timeout_seconds);
    let call = || async {
        let mut client = client.clone();
        let mut request = tonic::Request::new(wire::score_request_to_wire(inputs));
        request.set_timeout(timeout);
        musicrl_security::authorize(&mut request, token);
        let started = Instant::now();
        let response = client.score(request).await?;
        metrics::histogram!(musicrl_telemetry::metrics_catalog::ACTOR_REWARD_CALL_SECONDS)
            .record(started.elapsed().as_secs_f64());
        wire::score_response_from_wire(response.into_inner(), inputs.len())
            .map_err(|e| tonic::Status::internal(e.to_string()))
    };
    let mut failures = 0u32;
    let (scores, components, version) = call
        .retry(backoff(config))
        .notify(|e: &tonic::Status, wait| {
            metrics::counter!(musicrl_telemetry::metrics_catalog::ACTOR_RECONNECTS_TOTAL, "target" => "reward").increment(1);
            failures += 1;
            if failures == 1 && closed_connection(e) {
                // The server recycles connections (reward.max_connection_age_seconds) so
                // that new replicas get load: a call on a closing connection is retried on a
                // fresh one, which is routine, not a failure.
                tracing::debug!(code = ?e.code(), message = e.message(), ?wait, "reward connection closed by the server; retrying on a new one");
            } else {
                tracing::warn!(code = ?e.code(), message = e.message(), ?wait, failures, "reward call failed; retrying");
            }
        })
        .await
        .expect("retries without a limit only return on success");
    (
        scores,
        components.into_iter().map(|c| c.name).collect(),
        version,
    )
}

/// Whether a call failed because its connection was closed under it (a server recycling
/// connections, a replica going away), rather than because the server answered with an
/// error.
fn closed_connection(e: &tonic::Status) -> bool {
    let m = e.message().to_ascii_lowercase();
    matches!(e.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
        && (m.contains("transport error")
            || m.contains("connection")
            || m.contains("broken pipe")
            || m.contains("goaway")
            || m.contains("h2 protocol error"))
}

/// How long a push in flight when training ends may still take to be answered.
const PUSH_GRACE: Duration = Duration::from_secs(5);

async fn push(
    client: &LearnerServiceClient<Channel>,
    token: Option<&Token>,
    trajectories: &[Trajectory],
    config: &Config,
) -> musicrl_proto::v1::PushSummary {
    let call = || async {
        let mut client = client.clone();
        let started = Instant::now();
        let items: Vec<_> = trajectories.iter().map(wire::trajectory_to_wire).collect();
        let mut request = tonic::Request::new(tokio_stream::iter(items));
        musicrl_security::authorize(&mut request, token);
        let summary = client.push_trajectories(request).await?.into_inner();
        metrics::histogram!(musicrl_telemetry::metrics_catalog::ACTOR_PUSH_SECONDS)
            .record(started.elapsed().as_secs_f64());
        Ok::<_, tonic::Status>(summary)
    };
    call.retry(backoff(config))
        .when(|e: &tonic::Status| e.code() != tonic::Code::InvalidArgument)
        .notify(|e: &tonic::Status, wait| {
            metrics::counter!(musicrl_telemetry::metrics_catalog::ACTOR_RECONNECTS_TOTAL, "target" => "learner").increment(1);
            tracing::warn!(code = ?e.code(), message = e.message(), ?wait, "push failed; retrying");
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(code = ?e.code(), message = e.message(), "the learner refused a push");
            musicrl_proto::v1::PushSummary {
                rejected: trajectories.len() as u64,
                ..Default::default()
            }
        })
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_connection_is_told_from_an_error_the_server_answered() {
        use tonic::{Code, Status};
        assert!(closed_connection(&Status::new(
            Code::Unknown,
            "transport error"
        )));
        assert!(closed_connection(&Status::new(
            Code::Unavailable,
            "error trying to connect: tcp connect error: Connection refused"
        )));
        assert!(!closed_connection(&Status::new(
            Code::Unavailable,
            "the reward server is shedding load"
        )));
        assert!(!closed_connection(&Status::new(
            Code::InvalidArgument,
            "transport error in caption"
        )));
        assert!(!closed_connection(&Status::new(
            Code::Internal,
            "scorer failed"
        )));
    }

    #[test]
    fn an_actor_refuses_a_learner_that_samples_differently() {
        let config = Config::default();
        let blob = |policy: &musicrl_config::PolicyConfig, temperature: f32| {
            ParameterBlob::from_bytes(vec![1, 2, 3], PolicyVersion(0), policy, temperature)
        };
        assert!(check_agreement(&config, &blob(&config.policy, 0.99)).is_ok());
        let err = check_agreement(&config, &blob(&config.policy, 1.0))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sampling.temperature (0.99 here vs 1 at the learner)"),
            "{err}"
        );
        let mut other = config.policy.clone();
        other.caption_buckets = 2048;
        other.end_token = 5;
        let err = check_agreement(&config, &blob(&other, 0.99))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("policy.caption_buckets (1024 vs 2048)")
                && err.contains("policy.end_token (0 vs 5)"),
            "{err}"
        );
    }
}
