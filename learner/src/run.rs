//! The learner process: the training loop on its own thread, the gRPC server on tokio.
//!
//! [`serve`] takes an already-bound listener and a shutdown future, so tests start it on
//! `127.0.0.1:0`. It returns when training reaches `learner.steps` (after giving
//! subscribers a moment to receive the final version) or when `shutdown` resolves.

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use musicrl_common::Trajectory;
use musicrl_common::grpc::ENCODINGS;
use musicrl_common::wire::TokenLimits;
use musicrl_config::Config;
use musicrl_policy::melody::params::ParameterBlob;
use musicrl_proto::v1::learner_service_server::LearnerServiceServer;

use crate::checkpoint::{self, Counters};
use crate::error::{LearnerError, Result};
use crate::family::{FamilyTrainer, Learn};
use crate::service::{Learner, Progress, Shared};
use crate::staleness::{Admission, StalenessRule};
use crate::trainer::StepStats;

/// What a learner run ended with.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LearnerOutcome {
    pub steps: u64,
    pub policy_version: u64,
    pub trajectories_accepted: u64,
    pub trajectories_rejected: u64,
    pub trajectories_dropped_stale: u64,
    pub max_policy_version_seen_by_actors: u64,
    /// Mean reward of each step, in order (this run's steps only).
    pub reward_means: Vec<f32>,
    pub kl_last: f32,
    /// Step at which this run started (non-zero after a resume).
    pub resumed_from_step: u64,
    pub completed: bool,
    /// Updates whose batch mixed scorer versions (this run's steps only).
    #[serde(default)]
    pub mixed_scorer_batches: u64,
    /// Updates skipped because their loss or gradient was not finite (this run only).
    #[serde(default)]
    pub batches_skipped: u64,
    /// This learner incarnation.
    #[serde(default)]
    pub learner_run: u64,
    /// Where every trajectory went, since the run began (across resumes); its invariants
    /// hold (`Accounting::check`).
    #[serde(default)]
    pub accounting: crate::ledger::Accounting,
    /// The MLflow run this learner logged to (`tracking.mlflow`), so its supervisor can add
    /// the end-of-run verdict and report to it.
    #[serde(default)]
    pub mlflow_run_id: Option<String>,
}

/// Runs the learner until it has trained `learner.steps` steps (0: until `shutdown`), in
/// named steps: restore or initialise the trainer, share the state the service reads, start
/// the training thread, serve gRPC until the run ends or `shutdown` resolves, then collect
/// the outcome.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<LearnerOutcome> {
    config.validate().map_err(musicrl_common::Error::from)?;
    let config = crate::named_run::open(&config)?;
    musicrl_telemetry::metrics_catalog::register(musicrl_telemetry::metrics_catalog::Role::Learner);

    let (trainer, counters, mut blob) = restore(&config).await?;
    let start_step = trainer.step_count();
    let run_id = musicrl_common::types::fresh_run_id();
    tracing::info!(learner_run = %format!("{run_id:016x}"), resumed_step = start_step, "learner incarnation");
    blob.learner_run = run_id;
    let (queue_tx, queue_rx) = mpsc::channel::<Trajectory>(config.learner.queue_capacity);
    let (params_tx, params_rx) = watch::channel(Some(Arc::new(blob)));
    // The server keeps a sender too, so subscriptions outlive the training thread.
    let params_keepalive = params_tx.clone();
    let (closing_tx, closing_rx) = watch::channel(false);
    let shared = Arc::new(share(
        &config, &counters, start_step, run_id, params_rx, queue_tx, closing_rx,
    )?);
    let training = Training::spawn(trainer, queue_rx, params_tx, &shared, &config)?;

    shared.publish_ledger();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<LearnerServiceServer<Learner>>().await;
    metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_SERVING).set(1.0);
    let health_only = musicrl_common::grpc::spawn_health_only(
        &config.learner.health_listen,
        health_service.clone(),
    );
    tracing::info!(addr = %listener.local_addr()?, steps = config.learner.steps, "learner serving");

    let ended = until_the_run_ends(
        shutdown,
        training.done,
        training.stop.clone(),
        shared.clone(),
        health,
        closing_tx,
        config.learner.exit_on_completion,
    );
    grpc_server(&config, &shared, health_service)?
        .serve_with_incoming_shutdown(musicrl_common::grpc::incoming(listener), ended)
        .await?;
    training.stop.send_replace(true);
    drop(params_keepalive);
    health_only.abort();
    collect_outcome(training.thread, &shared, start_step, run_id).await
}

/// Restores the newest checkpoint of `learner.checkpoint_dir`, or starts a new run at step 0;
/// with the first version to broadcast. Off the executor: loading and serialising take a
/// while.
async fn restore(config: &Config) -> Result<(FamilyTrainer, Counters, ParameterBlob)> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || -> Result<_> {
        let device = musicrl_policy::device::training_device();
        let dir = &config.learner.checkpoint_dir;
        let (trainer, counters) = match checkpoint::resume_family(dir, &config, &device)? {
            Some((t, c)) => {
                tracing::info!(step = t.step_count(), dir = %dir.display(), "resumed from checkpoint");
                (t, c)
            }
            None => {
                let t = FamilyTrainer::new(&config, &device)?;
                tracing::info!(
                    dir = %dir.display(),
                    init_policy = %config.learner.init_policy.display(),
                    reference_policy = %if config.learner.reference_policy.as_os_str().is_empty() {
                        "the starting policy".to_string()
                    } else {
                        config.learner.reference_policy.display().to_string()
                    },
                    "starting a new run at step 0"
                );
                (t, Counters::default())
            }
        };
        let blob = trainer.blob(&config.policy, config.sampling.temperature)?;
        Ok((trainer, counters, blob))
    })
    .await
    .map_err(|e| LearnerError::TrainingThread(e.to_string()))?
}

/// The state the gRPC service and the training thread share, from the restored counters.
fn share(
    config: &Config,
    counters: &Counters,
    start_step: u64,
    run_id: u64,
    params: watch::Receiver<Option<Arc<ParameterBlob>>>,
    queue: mpsc::Sender<Trajectory>,
    closing: watch::Receiver<bool>,
) -> Result<Shared> {
    let mut ledger = counters.ledger.clone();
    let lost_at_restart = ledger.restarted();
    if lost_at_restart > 0 {
        tracing::warn!(
            trajectories = lost_at_restart,
            step = start_step,
            "trajectories queued when the previous learner last checkpointed died with it (dropped as learner_restart)"
        );
    }
    let tokens = musicrl_security::TokenStore::open(
        &config.security.tokens_file,
        musicrl_telemetry::metrics_catalog::LEARNER_AUTH_FAILURES_TOTAL,
    )?;
    let reward_keys = musicrl_security::RewardKeys::load(&config.security.reward_keys_file)?;
    if reward_keys.is_empty() {
        tracing::info!("no reward keys: rewards are trusted as pushed (security.reward_keys_file)");
    }
    metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_POLICY_VERSION)
        .set(start_step as f64);
    metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_TRAINING_COMPLETE).set(0.0);
    Ok(Shared {
        progress: std::sync::Mutex::new(Progress {
            step: start_step,
            target_steps: config.learner.steps,
            policy_version: start_step,
            trajectories_accepted: counters.trajectories_accepted,
            trajectories_rejected: counters.trajectories_rejected,
            trajectories_dropped_stale: counters.trajectories_dropped_stale,
            max_policy_version_seen: counters.max_policy_version_seen,
            ledger,
            ..Progress::default()
        }),
        max_subscribers: config.learner.max_subscribers,
        admitting: std::sync::atomic::AtomicU64::new(0),
        run_id,
        resumed_step: start_step,
        tokens,
        reward_keys,
        seal_max_age_ms: (config.security.reward_seal_max_age_seconds * 1000.0) as u64,
        spent_seals: std::sync::Mutex::new(musicrl_security::SpentSeals::restore(
            &counters.spent_seals,
        )),
        push_memory: tokio::sync::Semaphore::new(config.learner.max_push_mb_in_flight << 10),
        push_memory_kib: config.learner.max_push_mb_in_flight << 10,
        params,
        queue,
        limits: TokenLimits::of(&config.policy),
        max_push: config.learner.max_push,
        chunk_bytes: config.learner.chunk_bytes,
        subscribers: AtomicUsize::new(0),
        closing,
        compact: Default::default(),
    })
}

/// The training thread, with the switch that stops it and the reason it ended.
struct Training {
    thread: std::thread::JoinHandle<Result<LearnerOutcome>>,
    stop: Arc<watch::Sender<bool>>,
    done: tokio::sync::oneshot::Receiver<String>,
}

impl Training {
    /// Starts [`train_loop`] on its own thread.
    fn spawn(
        trainer: FamilyTrainer,
        queue: mpsc::Receiver<Trajectory>,
        params: watch::Sender<Option<Arc<ParameterBlob>>>,
        shared: &Arc<Shared>,
        config: &Config,
    ) -> Result<Self> {
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let shared = shared.clone();
        let config = config.clone();
        let handle = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name("musicrl-train".into())
            .spawn(move || {
                let outcome =
                    train_loop(trainer, queue, params, &shared, stop_rx, &config, &handle);
                let reason = match &outcome {
                    Ok(o) if o.completed => "training complete".to_string(),
                    Ok(_) => "training stopped".to_string(),
                    Err(e) => format!("the training loop failed: {e}"),
                };
                let _ = done_tx.send(reason);
                outcome
            })?;
        Ok(Self {
            thread,
            stop: Arc::new(stop),
            done,
        })
    }
}

/// Health follows the training loop: NOT_SERVING (with the reason in Status and the log) as
/// soon as it cannot train.
async fn not_serving(
    shared: &Shared,
    health: &tonic_health::server::HealthReporter,
    reason: String,
) {
    tracing::warn!(reason = %reason, "learner NOT_SERVING");
    shared.progress().not_serving = Some(reason);
    metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_SERVING).set(0.0);
    health
        .set_not_serving::<LearnerServiceServer<Learner>>()
        .await;
}

/// Resolves when the server should stop: on `shutdown` (after the training loop has finished
/// its step, checkpointed and published the final version), or when training ends (at once
/// with `learner.exit_on_completion`, else on `shutdown`); then lets subscribers receive the
/// final version before the parameter streams close.
async fn until_the_run_ends(
    shutdown: impl Future<Output = ()>,
    mut done: tokio::sync::oneshot::Receiver<String>,
    stop: Arc<watch::Sender<bool>>,
    shared: Arc<Shared>,
    health: tonic_health::server::HealthReporter,
    closing: watch::Sender<bool>,
    exit_on_completion: bool,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {
            not_serving(&shared, &health, "stopping".into()).await;
            stop.send_replace(true);
            let _ = (&mut done).await;
        }
        ended = &mut done => {
            not_serving(&shared, &health, ended.unwrap_or_else(|_| "the training thread died".into())).await;
            if !exit_on_completion {
                tracing::info!("training ended; serving the final version until stopped");
                shutdown.await;
                let _ = closing.send(true);
                return;
            }
        }
    }
    let_subscribers_receive_the_last_version(&shared).await;
    let _ = closing.send(true);
}

/// Up to 3 s, and until no subscriber has been connected for a second, so an actor that is
/// between two reconnection attempts (backoff) still learns that training is complete.
async fn let_subscribers_receive_the_last_version(shared: &Shared) {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last_subscribed = Instant::now();
    while Instant::now() < deadline {
        if shared.subscribers.load(Ordering::Relaxed) > 0 {
            last_subscribed = Instant::now();
        } else if last_subscribed.elapsed() >= Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The gRPC server: health, the learner service (a message larger than any valid trajectory
/// or chunk request refused by the decoder before it is read whole) and reflection.
fn grpc_server(
    config: &Config,
    shared: &Arc<Shared>,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> Result<tonic::transport::server::Router> {
    let (reflection_v1, reflection_v1alpha) =
        musicrl_common::grpc::reflection(&["musicrl.v1.LearnerService"])?;
    let max_message = musicrl_common::wire::max_trajectory_bytes(&TokenLimits::of(&config.policy));
    Ok(musicrl_common::grpc::server_builder(
        musicrl_security::tls::server(&config.security)?,
        config.learner.max_concurrent_streams,
        Some(Duration::from_secs_f64(
            config.learner.request_timeout_seconds,
        )),
    )?
    .add_service(health)
    .add_service(
        LearnerServiceServer::new(Learner::new(shared.clone()))
            .max_decoding_message_size(max_message)
            .accept_compressed(ENCODINGS[0])
            .accept_compressed(ENCODINGS[1])
            .send_compressed(ENCODINGS[0])
            .send_compressed(ENCODINGS[1]),
    )
    .add_service(reflection_v1)
    .add_service(reflection_v1alpha))
}

/// Joins the training thread and completes its outcome with what the service counted.
async fn collect_outcome(
    thread: std::thread::JoinHandle<Result<LearnerOutcome>>,
    shared: &Shared,
    start_step: u64,
    run_id: u64,
) -> Result<LearnerOutcome> {
    let joined = tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|e| LearnerError::TrainingThread(e.to_string()))?;
    let mut outcome = joined
        .map_err(|_| LearnerError::TrainingThread("the training thread panicked".into()))??;
    let p = shared.progress().clone();
    outcome.trajectories_accepted = p.trajectories_accepted;
    outcome.trajectories_rejected = p.trajectories_rejected;
    outcome.max_policy_version_seen_by_actors = p.max_policy_version_seen;
    outcome.resumed_from_step = start_step;
    outcome.learner_run = run_id;
    outcome.accounting = shared.accounting();
    shared.publish_ledger();
    if let Err(e) = outcome.accounting.check() {
        tracing::error!(error = %e, accounting = ?outcome.accounting, "the trajectory ledger does not balance");
    }
    Ok(outcome)
}

/// What the training thread waits on while it gathers a batch: a closed set.
// One short-lived value at a time: boxing the trajectory would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Event {
    /// A trajectory arrived from a push.
    Trajectory(Trajectory),
    /// The queue closed (the server is gone).
    QueueClosed,
    /// The learner is stopping.
    Stop,
}

/// How a gathered batch was used.
enum Update {
    Trained(StepStats),
    /// Not applied (the loss or the gradient was not finite); counted as dropped.
    Skipped,
}

/// The training thread's state: the trainer, its queue and the trackers each step writes.
struct TrainLoop<'a> {
    trainer: FamilyTrainer,
    queue: mpsc::Receiver<Trajectory>,
    stop: watch::Receiver<bool>,
    shared: &'a Shared,
    config: &'a Config,
    handle: &'a tokio::runtime::Handle,
    rule: StalenessRule,
    history: Option<std::fs::File>,
    board: Option<musicrl_tracking::tensorboard::EventWriter>,
    mlflow: Option<musicrl_tracking::mlflow::MlflowRun>,
    mlflow_failures: u64,
    trajectories: Option<crate::trajlog::TrajectoryLog>,
    publisher: crate::publish::Publisher,
    outcome: LearnerOutcome,
    last_saved: u64,
}

/// The training thread: gather a batch (the staleness rule applied), update, publish,
/// record, checkpoint; until `learner.steps` are trained or the learner stops. Then drain
/// the queue, write the final checkpoint and announce the end.
fn train_loop(
    trainer: FamilyTrainer,
    queue: mpsc::Receiver<Trajectory>,
    params: watch::Sender<Option<Arc<ParameterBlob>>>,
    shared: &Shared,
    stop: watch::Receiver<bool>,
    config: &Config,
    handle: &tokio::runtime::Handle,
) -> Result<LearnerOutcome> {
    let mut run = TrainLoop::open(trainer, queue, params, shared, stop, config, handle)?;
    while !run.stopping() && !run.finished() {
        let wait_started = Instant::now();
        let Some(batch) = run.gather_batch() else {
            break;
        };
        let batch_wait_seconds = wait_started.elapsed().as_secs_f64();
        metrics::histogram!(musicrl_telemetry::metrics_catalog::LEARNER_BATCH_WAIT_SECONDS)
            .record(batch_wait_seconds);
        let step_started = Instant::now();
        let stats = match run.update(&batch) {
            Update::Trained(stats) => stats,
            Update::Skipped => continue,
        };
        let step_seconds = step_started.elapsed().as_secs_f64();
        // The last version is published after the loop, marked training_complete, once
        // the final checkpoint is on disk.
        let done = run.finished();
        if !done {
            run.publisher.publish(&run.trainer, false);
        }
        run.record(&stats, &batch, batch_wait_seconds, step_seconds)?;
        run.account(&stats, &batch);
        run.checkpoint_if_due(&stats, &batch, done)?;
    }
    run.finish()
}

impl<'a> TrainLoop<'a> {
    fn open(
        trainer: FamilyTrainer,
        queue: mpsc::Receiver<Trajectory>,
        params: watch::Sender<Option<Arc<ParameterBlob>>>,
        shared: &'a Shared,
        stop: watch::Receiver<bool>,
        config: &'a Config,
        handle: &'a tokio::runtime::Handle,
    ) -> Result<Self> {
        let l = &config.learner;
        let step = trainer.step_count();
        Ok(Self {
            rule: StalenessRule {
                max_policy_lag: l.max_policy_lag,
            },
            history: open_history(&l.history_path, step)?,
            board: open_tensorboard(config, step)?,
            mlflow: open_mlflow(config),
            mlflow_failures: 0,
            trajectories: crate::trajlog::TrajectoryLog::open(
                &l.trajectory_log,
                l.trajectory_log_max_mb,
            )?,
            publisher: crate::publish::Publisher::spawn(
                params,
                config.policy.clone(),
                config.sampling.temperature,
                shared.run_id,
            )?,
            outcome: LearnerOutcome::default(),
            last_saved: step,
            trainer,
            queue,
            stop,
            shared,
            config,
            handle,
        })
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// `learner.steps` are trained (0: train until stopped).
    fn finished(&self) -> bool {
        let steps = self.config.learner.steps;
        steps > 0 && self.trainer.step_count() >= steps
    }

    /// Waits for the next trajectory, or for the learner to stop.
    fn next_event(&mut self) -> Event {
        let (queue, stop) = (&mut self.queue, &mut self.stop);
        self.handle.block_on(async {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => Event::Stop,
                t = queue.recv() => t.map_or(Event::QueueClosed, Event::Trajectory),
            }
        })
    }

    /// A full batch under the staleness rule against the version being updated; `None`
    /// when the learner stops first (the partial batch is dropped and counted).
    fn gather_batch(&mut self) -> Option<Vec<Trajectory>> {
        let size = self.config.learner.batch_size;
        let mut batch = Vec::with_capacity(size);
        while batch.len() < size {
            match self.next_event() {
                Event::Trajectory(t) => self.admit(t, &mut batch),
                Event::QueueClosed | Event::Stop => break,
            }
        }
        if batch.len() < size {
            let mut p = self.shared.progress();
            p.ledger.drop_n("shutdown", batch.len() as u64);
            p.gathered = 0;
            metrics::counter!(musicrl_telemetry::metrics_catalog::LEARNER_TRAJECTORIES_DROPPED_TOTAL, "reason" => "shutdown")
                .increment(batch.len() as u64);
            return None;
        }
        metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_QUEUE_DEPTH)
            .set(self.shared.queue_depth() as f64);
        Some(batch)
    }

    /// Adds `t` to the batch, or drops and counts it (stale, or from a future version).
    fn admit(&self, t: Trajectory, batch: &mut Vec<Trajectory>) {
        match self.rule.admit(t.policy_version, self.trainer.version()) {
            Admission::Admit { .. } => {
                batch.push(t);
                self.shared.progress().gathered = batch.len();
            }
            Admission::Stale { lag } => {
                tracing::debug!(lag, "dropped a stale trajectory");
                metrics::counter!(musicrl_telemetry::metrics_catalog::LEARNER_TRAJECTORIES_DROPPED_TOTAL, "reason" => "stale").increment(1);
                let mut p = self.shared.progress();
                p.trajectories_dropped_stale += 1;
                p.ledger.drop_n("stale", 1);
            }
            Admission::Future => {
                metrics::counter!(musicrl_telemetry::metrics_catalog::LEARNER_TRAJECTORIES_DROPPED_TOTAL, "reason" => "future_version").increment(1);
                self.shared.progress().ledger.drop_n("future_version", 1);
            }
        }
    }

    /// One update on the batch. A skipped update is never applied and never fatal: the
    /// batch is dropped and counted, and the learner goes on from the same parameters.
    fn update(&mut self, batch: &[Trajectory]) -> Update {
        let step_started = Instant::now();
        let stats = {
            let _span =
                tracing::info_span!("train_step", step = self.trainer.step_count() + 1).entered();
            self.trainer.try_train_step(batch)
        };
        metrics::histogram!(musicrl_telemetry::metrics_catalog::LEARNER_STEP_SECONDS)
            .record(step_started.elapsed().as_secs_f64());
        match stats {
            Ok(stats) => {
                if stats.rewards_clipped > 0 {
                    metrics::counter!(
                        musicrl_telemetry::metrics_catalog::LEARNER_REWARDS_CLIPPED_TOTAL
                    )
                    .increment(stats.rewards_clipped as u64);
                }
                Update::Trained(stats)
            }
            Err(skipped) => {
                tracing::warn!(
                    step = self.trainer.step_count() + 1,
                    reason = skipped.reason,
                    loss = skipped.loss,
                    grad_norm = skipped.grad_norm,
                    trajectories = batch.len(),
                    "skipped an update whose loss or gradient was not finite"
                );
                metrics::counter!(musicrl_telemetry::metrics_catalog::LEARNER_BATCHES_SKIPPED_TOTAL, "reason" => skipped.reason)
                    .increment(1);
                metrics::counter!(musicrl_telemetry::metrics_catalog::LEARNER_TRAJECTORIES_DROPPED_TOTAL, "reason" => "skipped_update")
                    .increment(batch.len() as u64);
                {
                    let mut p = self.shared.progress();
                    p.ledger.drop_n("skipped_update", batch.len() as u64);
                    p.gathered = 0;
                }
                self.shared.publish_ledger();
                self.outcome.batches_skipped += 1;
                Update::Skipped
            }
        }
    }

    /// The step into the metrics, the history file, TensorBoard, MLflow and the trajectory
    /// log.
    fn record(
        &mut self,
        stats: &StepStats,
        batch: &[Trajectory],
        batch_wait_seconds: f64,
        step_seconds: f64,
    ) -> Result<()> {
        record_step_metrics(stats);
        self.outcome.reward_means.push(stats.reward_mean);
        self.outcome.kl_last = stats.kl;
        if self.history.is_some() || self.board.is_some() {
            let (time, unix_seconds) =
                musicrl_config::fsutil::wall_clock(std::time::SystemTime::now());
            let row = HistoryRow {
                time,
                unix_seconds,
                batch_wait_seconds,
                step_seconds,
                stats,
            };
            if let Some(f) = self.history.as_mut() {
                let line = serde_json::to_string(&row).expect("StepStats serialises");
                writeln!(f, "{line}").map_err(LearnerError::Io)?;
            }
            if self.board.is_some() || self.mlflow.is_some() {
                self.track(&row, stats, batch_wait_seconds + step_seconds)?;
            }
        }
        if let Some(log) = self.trajectories.as_mut() {
            log.append(stats.step, batch, self.config.policy.end_token)?;
        }
        Ok(())
    }

    /// The history row's numbers, each a tracker scalar of this step.
    fn track(&mut self, row: &HistoryRow<'_>, stats: &StepStats, seconds: f64) -> Result<()> {
        let value = serde_json::to_value(row).expect("StepStats serialises");
        let mut scalars =
            musicrl_tracking::tensorboard::scalars_of(&value, &["step", "unix_seconds"]);
        if seconds > 0.0 {
            scalars.push((
                "samples_per_second".into(),
                (stats.batch_size as f64 / seconds) as f32,
            ));
        }
        if let Some(b) = self.board.as_mut() {
            b.scalars(stats.step as i64, row.unix_seconds, &scalars)
                .and_then(|()| b.flush())
                .map_err(LearnerError::Io)?;
        }
        if let Some(m) = self.mlflow.as_ref()
            && let Err(e) = m.log_metrics(stats.step as i64, &scalars)
        {
            // A tracker that is down does not stop training; said once, then every
            // hundredth failure.
            if self.mlflow_failures.is_multiple_of(100) {
                tracing::warn!(error = %e, failures = self.mlflow_failures + 1, "cannot log this step to MLflow; training on");
            }
            self.mlflow_failures += 1;
        }
        Ok(())
    }

    /// The trained batch into the ledger and the progress the service reports.
    fn account(&mut self, stats: &StepStats, batch: &[Trajectory]) {
        if stats.scorer_versions > 1 {
            self.outcome.mixed_scorer_batches += 1;
            metrics::counter!(
                musicrl_telemetry::metrics_catalog::LEARNER_MIXED_SCORER_BATCHES_TOTAL
            )
            .increment(1);
            tracing::warn!(
                step = stats.step,
                versions = stats.scorer_versions,
                "a batch mixed scorer versions (the reward configuration changed while it was sampled)"
            );
        }
        {
            let mut p = self.shared.progress();
            p.ledger.train(batch.len() as u64);
            p.gathered = 0;
            p.step = stats.step;
            p.policy_version = self.trainer.version().0;
            p.reward_mean_last = f64::from(stats.reward_mean);
            p.kl_last = f64::from(stats.kl);
        }
        tracing::info!(
            step = stats.step,
            reward = stats.reward_mean,
            kl = stats.kl,
            loss = stats.loss,
            entropy = stats.entropy,
            lag = stats.policy_lag_mean,
            "train step"
        );
    }

    /// At each checkpoint: the batch's best- and worst-rewarded clips to listen to, and the
    /// checkpoint itself (the final step's is written by [`TrainLoop::finish`], with the
    /// queue drained).
    fn checkpoint_if_due(
        &mut self,
        stats: &StepStats,
        batch: &[Trajectory],
        done: bool,
    ) -> Result<()> {
        let every = self.config.learner.checkpoint_every;
        if let Some(b) = self.board.as_mut()
            && self.config.policy.family == musicrl_config::FAMILY_MELODY
            && every > 0
            && (stats.step.is_multiple_of(every) || done)
        {
            log_audio(b, stats.step, batch).map_err(LearnerError::Io)?;
        }
        if !done && every > 0 && stats.step.is_multiple_of(every) {
            save_checkpoint(&self.trainer, self.shared, self.config)?;
            self.last_saved = stats.step;
        }
        Ok(())
    }

    /// Stops accepting, drains the queue, writes the final checkpoint and announces the end.
    fn finish(mut self) -> Result<LearnerOutcome> {
        // Pushes now answer `training_complete`; what is still queued is dropped and
        // counted, so the final checkpoint's ledger has nothing pending.
        self.queue.close();
        let mut left = 0u64;
        while let Ok(t) = self.queue.try_recv() {
            drop(t);
            left += 1;
        }
        if left > 0 {
            self.shared.progress().ledger.drop_n("shutdown", left);
            metrics::counter!(musicrl_telemetry::metrics_catalog::LEARNER_TRAJECTORIES_DROPPED_TOTAL, "reason" => "shutdown")
                .increment(left);
            tracing::info!(
                trajectories = left,
                "dropped the trajectories still queued at the stop"
            );
        }
        self.shared.publish_ledger();
        if self.trainer.step_count() != self.last_saved {
            save_checkpoint(&self.trainer, self.shared, self.config)?;
        }
        // Only now, with the end on disk, announce it (actors leave when they see it): a
        // learner killed before this point restarts from a checkpoint with steps still to
        // train, and it needs its actors there to feed them. Finished or stopped early, the
        // last version is marked so that subscribers know no newer one is coming.
        self.shared.progress().training_complete = true;
        self.publisher.publish(&self.trainer, true);
        let completed = self.finished();
        let Self {
            trainer,
            shared,
            config,
            publisher,
            mut outcome,
            mlflow,
            history,
            ..
        } = self;
        publisher.finish();
        let p = shared.progress().clone();
        outcome.steps = trainer.step_count();
        outcome.policy_version = trainer.version().0;
        outcome.trajectories_dropped_stale = p.trajectories_dropped_stale;
        outcome.completed = completed;
        if outcome.completed {
            metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_TRAINING_COMPLETE).set(1.0);
        }
        if let Some(m) = mlflow {
            outcome.mlflow_run_id = Some(m.run_id().to_string());
            drop(history);
            close_mlflow(&m, &config.learner.history_path, outcome.completed);
        }
        Ok(outcome)
    }
}

/// Uploads the history file and closes the MLflow run (a failure is logged, not fatal).
fn close_mlflow(m: &musicrl_tracking::mlflow::MlflowRun, history_path: &Path, completed: bool) {
    let mut result = Ok(true);
    if !history_path.as_os_str().is_empty() && history_path.exists() {
        result = m.log_artifact(history_path);
    }
    if let Err(e) = result.and_then(|_| m.finish(if completed { "FINISHED" } else { "KILLED" })) {
        tracing::warn!(error = %e, "cannot close the MLflow run");
    }
}

fn save_checkpoint(trainer: &FamilyTrainer, shared: &Shared, config: &Config) -> Result<()> {
    let p = shared.progress().clone();
    let counters = Counters {
        trajectories_accepted: p.trajectories_accepted,
        trajectories_rejected: p.trajectories_rejected,
        trajectories_dropped_stale: p.trajectories_dropped_stale,
        max_policy_version_seen: p.max_policy_version_seen,
        ledger: p.ledger.clone(),
        spent_seals: shared
            .spent_seals()
            .unexpired(musicrl_security::seal::now_unix_ms()),
    };
    let started = Instant::now();
    let folder = checkpoint::save(&config.learner.checkpoint_dir, trainer, counters, config)?;
    metrics::histogram!(musicrl_telemetry::metrics_catalog::LEARNER_CHECKPOINT_SECONDS)
        .record(started.elapsed().as_secs_f64());
    tracing::info!(step = trainer.step_count(), path = %folder.display(), "checkpoint saved");
    Ok(())
}

/// One `history.jsonl` row: the step's statistics and when it finished (wall clock, UTC).
#[derive(serde::Serialize)]
struct HistoryRow<'a> {
    time: String,
    unix_seconds: f64,
    /// How long the learner waited for this step's batch (its idle time).
    batch_wait_seconds: f64,
    /// How long the update itself took.
    step_seconds: f64,
    #[serde(flatten)]
    stats: &'a StepStats,
}

/// Opens `history.jsonl` for appending, first dropping every row past `resumed_at`: steps a
/// crash lost after the last checkpoint are trained again, and the file must never hold a
/// step twice.
fn open_history(path: &Path, resumed_at: u64) -> Result<Option<std::fs::File>> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    if let Ok(text) = std::fs::read_to_string(path) {
        let step_of = |line: &str| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
        };
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| step_of(l).is_some_and(|s| s <= resumed_at))
            .collect();
        let dropped = text.lines().count() - kept.len();
        if dropped > 0 {
            tracing::warn!(
                path = %path.display(),
                rows = dropped,
                resumed_at,
                "dropping history rows past the checkpoint resumed from (those steps are trained again)"
            );
            let mut out = kept.join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            musicrl_config::fsutil::write_atomic(path, out.as_bytes())?;
        }
    }
    Ok(Some(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?,
    ))
}

/// TensorBoard's sample rate for the clips it plays.
const AUDIO_RATE: u32 = 16_000;

/// Renders the batch's best- and worst-rewarded melodies (as the reward server hears them:
/// the caption's instrument and tempo) into TensorBoard's Audio tab, with their captions and
/// rewards on the Text tab.
fn log_audio(
    board: &mut musicrl_tracking::tensorboard::EventWriter,
    step: u64,
    batch: &[Trajectory],
) -> std::io::Result<()> {
    let by_reward = |a: &&Trajectory, b: &&Trajectory| a.reward.total_cmp(&b.reward);
    let (Some(best), Some(worst)) = (
        batch.iter().max_by(by_reward),
        batch.iter().min_by(by_reward),
    ) else {
        return Ok(());
    };
    let (_, now) = musicrl_config::fsutil::wall_clock(std::time::SystemTime::now());
    let mut text = String::new();
    for (tag, t) in [("best", best), ("worst", worst)] {
        let events = musicrl_music::tokens::decode(&t.tokens).events;
        let (instrument, bpm) = musicrl_music::captions::rendering_for(&t.caption);
        let audio = musicrl_music::render::render(&events, bpm, instrument, AUDIO_RATE, step);
        let wav = musicrl_music::render::wav_bytes(&audio, AUDIO_RATE);
        board.audio(
            &format!("samples/{tag}"),
            step as i64,
            now,
            &wav,
            AUDIO_RATE,
            audio.len(),
        )?;
        text.push_str(&format!(
            "**{tag}** (reward {:.3}): {}\n\n",
            t.reward, t.caption
        ));
    }
    board.text("samples/captions", step as i64, now, &text)?;
    board.flush()
}

/// The MLflow run of `tracking.mlflow` (None when it is empty or the server cannot start a
/// run: training goes on without it, and says so).
fn open_mlflow(config: &Config) -> Option<musicrl_tracking::mlflow::MlflowRun> {
    let t = &config.tracking;
    if t.mlflow.is_empty() {
        return None;
    }
    let name = t.run_name(&config.run, &config.learner.history_path);
    match musicrl_tracking::mlflow::MlflowRun::start(
        &t.mlflow,
        &t.mlflow_experiment,
        &name,
        &musicrl_config::flatten(config),
    ) {
        Ok(run) => {
            tracing::info!(url = %t.mlflow, experiment = %t.mlflow_experiment, run_id = %run.run_id(), "logging to MLflow");
            Some(run)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the MLflow run; training without it");
            None
        }
    }
}

/// The TensorBoard run of `tracking.tensorboard` (None when it is empty), with the
/// configuration as its first text.
fn open_tensorboard(
    config: &Config,
    step: u64,
) -> Result<Option<musicrl_tracking::tensorboard::EventWriter>> {
    let t = &config.tracking;
    if t.tensorboard.as_os_str().is_empty() {
        return Ok(None);
    }
    let dir = t
        .tensorboard
        .join(t.run_name(&config.run, &config.learner.history_path));
    let mut board = musicrl_tracking::tensorboard::EventWriter::create(&dir)?;
    let (_, now) = musicrl_config::fsutil::wall_clock(std::time::SystemTime::now());
    let toml = config.to_toml();
    // Indented four spaces: Markdown shows it as a block, as written.
    let text: String = toml.lines().map(|l| format!("    {l}\n")).collect();
    board.text("configuration", step as i64, now, &text)?;
    board.flush()?;
    tracing::info!(path = %board.path().display(), "writing TensorBoard events");
    Ok(Some(board))
}

fn record_step_metrics(s: &StepStats) {
    metrics::counter!(musicrl_telemetry::metrics_catalog::LEARNER_STEPS_TOTAL).increment(1);
    metrics::counter!(musicrl_telemetry::metrics_catalog::LEARNER_TOKENS_TOTAL)
        .increment(s.batch_tokens as u64);
    metrics::counter!(musicrl_telemetry::metrics_catalog::LEARNER_TRAJECTORIES_TRAINED_TOTAL)
        .increment(s.batch_size as u64);
    metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_POLICY_VERSION).set(s.step as f64);
    for (part, v) in [
        ("total", s.loss),
        ("policy", s.policy_loss),
        ("value", s.value_loss),
    ] {
        metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_LOSS, "part" => part)
            .set(f64::from(v));
    }
    metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_KL).set(f64::from(s.kl));
    metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_ENTROPY).set(f64::from(s.entropy));
    metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_REWARD_MEAN)
        .set(f64::from(s.reward_mean));
    for (name, v) in &s.component_means {
        metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_REWARD_COMPONENT_MEAN, "component" => name.clone())
            .set(f64::from(*v));
    }
    metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_GRAD_NORM)
        .set(f64::from(s.grad_norm));
    metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_IMPORTANCE_WEIGHT_MEAN)
        .set(f64::from(s.importance_weight));
    metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_POLICY_LAG_MEAN)
        .set(f64::from(s.policy_lag_mean));
}
