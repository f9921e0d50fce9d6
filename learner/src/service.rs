//! The learner's gRPC service: trajectory push in, parameter broadcast out, status.
//!
//! Handlers convert wire → domain (validating through `musicrl_common::wire`), hand the
//! result to the training loop over a bounded queue (back-pressure reaches the actors),
//! and never block the executor.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use musicrl_common::wire::{self, Rejection, TokenLimits};
use musicrl_common::{PolicyVersion, Trajectory};
use musicrl_policy::melody::params::{ParameterBlob, ParameterEncoding};
use musicrl_proto::v1 as pb;
use musicrl_proto::v1::learner_service_server::LearnerService;
use musicrl_security::{Permission, RewardKeys, SealedContent, SpentSeals, TokenStore};

use crate::ledger::{Accounting, Ledger};

/// Training progress, shared with the Status RPC.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub step: u64,
    pub target_steps: u64,
    pub policy_version: u64,
    pub trajectories_accepted: u64,
    pub trajectories_rejected: u64,
    pub trajectories_dropped_stale: u64,
    pub reward_mean_last: f64,
    pub kl_last: f64,
    pub max_policy_version_seen: u64,
    pub training_complete: bool,
    /// Trajectories the training loop has taken off the queue for the batch it is filling.
    pub gathered: usize,
    /// Why the learner cannot train, when it cannot (None: serving).
    pub not_serving: Option<String>,
    /// Where every trajectory went (saved with every checkpoint).
    pub ledger: Ledger,
}

/// State shared by the handlers and the training loop.
#[derive(Debug)]
pub struct Shared {
    pub progress: Mutex<Progress>,
    pub params: watch::Receiver<Option<Arc<ParameterBlob>>>,
    pub queue: mpsc::Sender<Trajectory>,
    pub limits: TokenLimits,
    pub max_push: usize,
    pub chunk_bytes: usize,
    pub subscribers: AtomicUsize,
    /// Most parameter subscribers at once (`learner.max_subscribers`).
    pub max_subscribers: usize,
    /// Trajectories received and waiting for room in the queue.
    pub admitting: AtomicU64,
    /// This learner incarnation (random, non-zero).
    pub run_id: u64,
    /// The step this incarnation resumed from: versions up to it are the same parameters in
    /// every incarnation.
    pub resumed_step: u64,
    pub tokens: TokenStore,
    /// The reward keys; when not empty, every trajectory needs a valid seal.
    pub reward_keys: RewardKeys,
    pub seal_max_age_ms: u64,
    /// The seals trained on, each refused a second time within its window.
    pub spent_seals: Mutex<SpentSeals>,
    /// KiB the pushes being received may hold together (`learner.max_push_mb_in_flight`):
    /// each push holds permits for what it has read until it is queued or refused.
    pub push_memory: tokio::sync::Semaphore,
    /// The whole budget, in KiB.
    pub push_memory_kib: usize,
    /// Becomes true when the server starts shutting down: parameter streams end, so a
    /// graceful shutdown never waits on a subscriber.
    pub closing: watch::Receiver<bool>,
    /// The newest version's bf16 form, for the subscribers that ask for it.
    pub compact: CompactForm,
}

/// The bf16 wire form of the newest version, made on the first subscriber's demand: one
/// conversion per version however many subscribers ask (they wait for the one under way),
/// on a blocking thread, so neither the training thread nor the executor pays for it, and
/// nothing at all while every subscriber takes f32.
#[derive(Debug, Default)]
pub struct CompactForm {
    /// The version it was made from (weak: it never keeps an old version's bytes alive, and
    /// the allocation it points to cannot be reused while it is held) and its bf16 form.
    newest: tokio::sync::Mutex<Option<(std::sync::Weak<ParameterBlob>, Arc<ParameterBlob>)>>,
}

impl CompactForm {
    /// `blob` in `encoding`. When the conversion fails (a parameter beyond bf16's range)
    /// the subscriber gets the f32 version, whose chunks say so, and the failure is logged:
    /// a version is never withheld for want of its compact form.
    pub async fn get(
        &self,
        blob: &Arc<ParameterBlob>,
        encoding: ParameterEncoding,
    ) -> Arc<ParameterBlob> {
        if encoding == blob.encoding {
            return blob.clone();
        }
        let mut newest = self.newest.lock().await;
        if let Some((source, form)) = newest.as_ref()
            && std::ptr::eq(source.as_ptr(), Arc::as_ptr(blob))
            && form.encoding == encoding
        {
            return form.clone();
        }
        let started = Instant::now();
        let source = blob.clone();
        let converted = tokio::task::spawn_blocking(move || source.encoded_as(encoding)).await;
        match converted {
            Ok(Ok(form)) => {
                metrics::histogram!(
                    musicrl_telemetry::metrics_catalog::LEARNER_BROADCAST_COMPACT_SECONDS
                )
                .record(started.elapsed().as_secs_f64());
                let form = Arc::new(form);
                *newest = Some((Arc::downgrade(blob), form.clone()));
                form
            }
            Ok(Err(e)) => {
                tracing::warn!(version = %blob.version, %encoding, error = %e, "no compact form of this version; sending it as f32");
                blob.clone()
            }
            Err(e) => {
                tracing::error!(version = %blob.version, %encoding, error = %e, "the compact-form conversion panicked; sending this version as f32");
                blob.clone()
            }
        }
    }
}

impl Shared {
    pub(crate) fn spent_seals(&self) -> std::sync::MutexGuard<'_, SpentSeals> {
        self.spent_seals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The progress, even if a panicking thread poisoned the lock (it only holds counters).
    pub fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Trajectories waiting to be trained on: in the queue plus in the batch being filled.
    pub fn queue_depth(&self) -> usize {
        (self.queue.max_capacity() - self.queue.capacity()) + self.progress().gathered
    }

    /// Received and not yet settled, as measured: waiting to enter the queue, in it, or in
    /// the batch being filled.
    pub fn pending(&self) -> u64 {
        self.admitting.load(Ordering::SeqCst) + self.queue_depth() as u64
    }

    /// The ledger's totals now.
    pub fn accounting(&self) -> Accounting {
        let pending = self.pending();
        self.progress().ledger.snapshot(pending)
    }

    /// Publishes the ledger's gauges.
    pub fn publish_ledger(&self) {
        let pending = self.pending();
        self.progress().ledger.publish(pending);
    }

    fn current_version(&self) -> PolicyVersion {
        PolicyVersion(self.progress().policy_version)
    }
}

pub use musicrl_common::wire::TRAINING_COMPLETE;

/// Why the items before a malformed one are refused with it.
pub const REFUSED_PUSH: &str = "refused_push";

/// INVALID_ARGUMENT for a push whose item `index` is malformed (counted by reason). `ids`
/// are the ids of the items read (None where unreadable), the bad one last: each new one is
/// received and rejected in the ledger, the bad one with its reason, the others as
/// `refused_push`.
fn invalid_push(
    shared: &Shared,
    r: Rejection,
    index: usize,
    ids: &[(String, Option<musicrl_common::types::TrajectoryId>)],
) -> Status {
    {
        let mut p = shared.progress();
        // Every item received so far is refused with it.
        p.trajectories_rejected += index as u64 + 1;
        for (i, (actor, id)) in ids.iter().enumerate() {
            let reason = if i + 1 == ids.len() {
                r.reason
            } else {
                REFUSED_PUSH
            };
            match id {
                Some(id) => {
                    if p.ledger.receive(actor, id) {
                        p.ledger.reject(reason);
                    }
                }
                None => p.ledger.unidentified += 1,
            }
        }
    }
    shared.publish_ledger();
    tracing::warn!(reason = r.reason, detail = %r.detail, index, "refused a push with a malformed trajectory");
    metrics::counter!(musicrl_telemetry::metrics_catalog::LEARNER_TRAJECTORIES_REJECTED_TOTAL, "reason" => r.reason)
        .increment(1);
    Status::invalid_argument(format!(
        "trajectory {index}: {r}; nothing of this push was used"
    ))
}

/// A trajectory received and waiting for room in the queue. If the push is cancelled while
/// it waits (its caller left, or the server is stopping), the drop takes the receipt back,
/// so the ledger never counts a trajectory that went nowhere and a retry is admitted.
struct Admitting<'a> {
    shared: &'a Shared,
    actor: String,
    id: musicrl_common::types::TrajectoryId,
    /// The seal spent for it, given back if the push is cut off before it is queued.
    seal: Option<musicrl_common::types::RewardSeal>,
    settled: bool,
}

impl<'a> Admitting<'a> {
    fn new(shared: &'a Shared, t: &Trajectory, spent: bool) -> Self {
        shared.admitting.fetch_add(1, Ordering::SeqCst);
        Self {
            shared,
            actor: t.actor_id.clone(),
            id: t.id.clone(),
            seal: if spent { t.seal.clone() } else { None },
            settled: false,
        }
    }

    /// Queued, or refused and counted: nothing to take back.
    fn settled(&mut self) {
        self.settled = true;
    }
}

impl Drop for Admitting<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.progress().ledger.forget(&self.actor, &self.id);
            if let Some(seal) = &self.seal {
                self.shared.spent_seals().refund(seal);
            }
        }
        self.shared.admitting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The tonic service.
#[derive(Debug, Clone)]
pub struct Learner {
    shared: Arc<Shared>,
}

impl Learner {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ParameterChunk, Status>> + Send>>;

#[tonic::async_trait]
impl LearnerService for Learner {
    #[tracing::instrument(skip_all, name = "push_trajectories")]
    async fn push_trajectories(
        &self,
        request: Request<Streaming<pb::Trajectory>>,
    ) -> Result<Response<pb::PushSummary>, Status> {
        self.shared.tokens.check(&request, Permission::Push)?;
        // Validate the whole push before queueing any of it: a push is all or nothing. The
        // memory it holds of the budget for pushes in flight is released when this returns.
        let (batch, _memory) = receive_push(&self.shared, request.into_inner()).await?;
        let mut tally = PushTally::default();
        let now_ms = musicrl_security::seal::now_unix_ms();
        for t in batch {
            if !self.shared.progress().ledger.receive(&t.actor_id, &t.id) {
                // Already received (a push retried after its answer was lost): once only.
                tally.duplicates += 1;
                metrics::counter!(
                    musicrl_telemetry::metrics_catalog::LEARNER_TRAJECTORIES_DUPLICATE_TOTAL
                )
                .increment(1);
                continue;
            }
            let spent = match admissible(&self.shared, &t, now_ms) {
                Ok(spent) => spent,
                Err(r) => {
                    tally.reject(&self.shared, r);
                    continue;
                }
            };
            let version = t.policy_version.0;
            let mut admitting = Admitting::new(&self.shared, &t, spent);
            let sent = self.shared.queue.send(t).await;
            admitting.settled();
            if sent.is_err() {
                tally.reject(
                    &self.shared,
                    Rejection::new(TRAINING_COMPLETE, "the learner no longer trains".into()),
                );
                continue;
            }
            tally.accepted += 1;
            metrics::counter!(
                musicrl_telemetry::metrics_catalog::LEARNER_TRAJECTORIES_ACCEPTED_TOTAL
            )
            .increment(1);
            let mut p = self.shared.progress();
            p.trajectories_accepted += 1;
            p.max_policy_version_seen = p.max_policy_version_seen.max(version);
        }
        Ok(Response::new(tally.summary(&self.shared)))
    }

    type SubscribeParametersStream = ChunkStream;

    #[tracing::instrument(skip_all, name = "subscribe_parameters")]
    async fn subscribe_parameters(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeParametersStream>, Status> {
        self.shared.tokens.check(&request, Permission::Subscribe)?;
        let request = request.into_inner();
        let actor = request.actor_id;
        if actor.len() > wire::MAX_NAME_BYTES {
            return Err(Status::invalid_argument("actor id longer than 256 bytes"));
        }
        let encoding = wire::encoding_from_wire(request.encoding)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Take a subscriber slot now, or refuse: each subscriber holds a copy of a version
        // in flight.
        let max = self.shared.max_subscribers;
        let n = self
            .shared
            .subscribers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .map_err(|_| {
                metrics::counter!(musicrl_telemetry::metrics_catalog::LEARNER_REQUESTS_REFUSED_TOTAL, "reason" => "too_many_subscribers").increment(1);
                tracing::warn!(actor = %actor, max, "refused a parameter subscriber: too many");
                Status::resource_exhausted(format!(
                    "the learner already serves {max} parameter subscribers (learner.max_subscribers)"
                ))
            })?
            + 1;
        let mut params = self.shared.params.clone();
        let chunk_bytes = self.shared.chunk_bytes;
        let shared = self.shared.clone();
        // A slow subscriber holds back only itself and skips to the newest version (see
        // below). The buffered chunks are slices of the version's shared buffer, so a
        // deeper queue costs no memory; 16 keeps the sender ahead of the transport.
        let (tx, rx) = mpsc::channel(16);
        let mut closing = self.shared.closing.clone();
        tokio::spawn(async move {
            metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_SUBSCRIBERS).set(n as f64);
            tracing::info!(actor = %actor, %encoding, "parameter subscriber connected");
            loop {
                let blob = params.borrow_and_update().clone();
                if let Some(blob) = blob {
                    let blob = shared.compact.get(&blob, encoding).await;
                    let started = Instant::now();
                    // A subscriber slower than the learner skips straight to the newest
                    // version: when one is published mid-send, the rest of this one is
                    // dropped and the newest starts at its chunk 0 (the assembler discards
                    // the partial version). The final version is the newest, so it is
                    // always sent whole.
                    let mut superseded = false;
                    for (i, chunk) in wire::blob_to_chunks(&blob, chunk_bytes).enumerate() {
                        if i > 0 && params.has_changed().unwrap_or(false) {
                            superseded = true;
                            break;
                        }
                        if tx.send(Ok(chunk)).await.is_err() {
                            break;
                        }
                    }
                    if superseded && !tx.is_closed() {
                        metrics::counter!(
                            musicrl_telemetry::metrics_catalog::LEARNER_BROADCAST_SUPERSEDED_TOTAL
                        )
                        .increment(1);
                        continue;
                    }
                    metrics::histogram!(
                        musicrl_telemetry::metrics_catalog::LEARNER_BROADCAST_SEND_SECONDS
                    )
                    .record(started.elapsed().as_secs_f64());
                    if tx.is_closed() {
                        break;
                    }
                }
                // The stream stays open after the final version (an actor that outlives the
                // run keeps listening for the next one); it ends when the server closes.
                tokio::select! {
                    changed = params.changed() => if changed.is_err() { break },
                    () = tx.closed() => break,
                    _ = closing.wait_for(|c| *c) => break,
                }
            }
            let n = shared.subscribers.fetch_sub(1, Ordering::Relaxed) - 1;
            metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_SUBSCRIBERS).set(n as f64);
            tracing::info!(actor = %actor, "parameter subscriber left");
        });
        Ok(Response::new(
            Box::pin(ReceiverStream::new(rx)) as ChunkStream
        ))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.shared.tokens.check(&request, Permission::Read)?;
        let queue_depth = self.shared.queue_depth() as u64;
        let accounting = self.shared.accounting();
        let p = self.shared.progress().clone();
        Ok(Response::new(pb::StatusResponse {
            step: p.step,
            target_steps: p.target_steps,
            policy_version: p.policy_version,
            trajectories_accepted: p.trajectories_accepted,
            trajectories_rejected: p.trajectories_rejected,
            trajectories_dropped_stale: p.trajectories_dropped_stale,
            reward_mean_last: p.reward_mean_last,
            kl_last: p.kl_last,
            max_policy_version_seen: p.max_policy_version_seen,
            training_complete: p.training_complete,
            queue_depth,
            learner_run: self.shared.run_id,
            serving: p.not_serving.is_none(),
            not_serving_reason: p.not_serving.unwrap_or_default(),
            accounting: Some(musicrl_common::wire::accounting_to_wire(&accounting)),
        }))
    }
}

/// Reads a whole push, each message counted against the learner's budget for pushes in flight
/// (all connections together) and decoded and validated; the first invalid trajectory refuses
/// the push. Returns the trajectories and the budget they hold.
async fn receive_push<'a>(
    shared: &'a Shared,
    mut inbound: Streaming<pb::Trajectory>,
) -> Result<(Vec<Trajectory>, Option<tokio::sync::SemaphorePermit<'a>>), Status> {
    let mut batch = Vec::new();
    let mut ids = Vec::new();
    let mut memory: Option<tokio::sync::SemaphorePermit<'a>> = None;
    let mut held_kib = 0usize;
    while let Some(item) = inbound.next().await {
        let item = item?;
        let index = batch.len();
        // The wire message and the trajectory decoded from it, in KiB.
        let kib =
            u32::try_from(2 * prost::Message::encoded_len(&item) / 1024 + 1).unwrap_or(u32::MAX);
        held_kib += kib as usize;
        match shared.push_memory.try_acquire_many(kib) {
            Ok(p) => match memory.as_mut() {
                Some(held) => held.merge(p),
                None => memory = Some(p),
            },
            Err(_) if held_kib > shared.push_memory_kib => {
                // This push alone is larger than the whole budget: a retry cannot help.
                return Err(Status::invalid_argument(format!(
                    "a push of more than {} MiB, the learner's whole budget for pushes in \
                     flight (learner.max_push_mb_in_flight): push fewer trajectories at once",
                    shared.push_memory_kib >> 10
                )));
            }
            Err(_) => {
                metrics::counter!(musicrl_telemetry::metrics_catalog::LEARNER_REQUESTS_REFUSED_TOTAL, "reason" => "push_memory_budget").increment(1);
                tracing::warn!(
                    actor = %item.actor_id,
                    read = index,
                    "refused a push: the pushes in flight hold the whole learner.max_push_mb_in_flight"
                );
                return Err(Status::resource_exhausted(
                    "the learner is receiving as many pushes as its memory budget \
                     (learner.max_push_mb_in_flight) allows; nothing of this push was \
                     taken: retry it later",
                ));
            }
        }
        ids.push((item.actor_id.clone(), wire::trajectory_id(&item).ok()));
        if index >= shared.max_push {
            return Err(invalid_push(
                shared,
                Rejection::new(
                    "push_too_large",
                    format!("more than {} trajectories in one push", shared.max_push),
                ),
                index,
                &ids,
            ));
        }
        match wire::trajectory_from_wire(item, &shared.limits) {
            Ok(t) => batch.push(t),
            Err(r) => return Err(invalid_push(shared, r, index, &ids)),
        }
    }
    if batch.is_empty() {
        metrics::counter!(musicrl_telemetry::metrics_catalog::LEARNER_TRAJECTORIES_REJECTED_TOTAL, "reason" => "empty_push").increment(1);
        return Err(Status::invalid_argument(
            "empty push: at least one trajectory is needed",
        ));
    }
    Ok((batch, memory))
}

/// Whether a received trajectory may be queued: its reward seal valid, its version one this
/// incarnation published, its seal not trained on before. `Ok(true)` when it spent a seal.
fn admissible(shared: &Shared, t: &Trajectory, now_ms: u64) -> Result<bool, Rejection> {
    shared.reward_keys.verify(
        &SealedContent {
            caption: &t.caption,
            tokens: &t.tokens,
            reward: t.reward,
            components: &t.components,
            scorer_version: &t.scorer_version,
        },
        t.seal.as_ref(),
        now_ms,
        shared.seal_max_age_ms,
    )?;
    let current = shared.current_version();
    if t.policy_version > current {
        return Err(Rejection::new(
            "future_version",
            format!(
                "sampled by {} but the learner is at {current}",
                t.policy_version
            ),
        ));
    }
    if t.learner_run != shared.run_id && t.policy_version.0 > shared.resumed_step {
        return Err(Rejection::new(
            "other_incarnation",
            format!(
                "sampled by {} of learner incarnation {:016x}, which this incarnation \
                 ({:016x}, resumed at step {}) never published",
                t.policy_version, t.learner_run, shared.run_id, shared.resumed_step
            ),
        ));
    }
    // Trained once: a genuine score pushed again under fresh ids is a replay.
    match (&t.seal, shared.reward_keys.is_empty()) {
        (Some(seal), false) => {
            if shared
                .spent_seals()
                .spend(seal, now_ms, shared.seal_max_age_ms)
            {
                Ok(true)
            } else {
                Err(Rejection::new(
                    "replayed_seal",
                    "this reward seal was already trained on (a genuine score pushed again \
                     under another trajectory id)"
                        .into(),
                ))
            }
        }
        _ => Ok(false),
    }
}

/// What one push came to: accepted, duplicates, and rejections by reason.
#[derive(Default)]
struct PushTally {
    accepted: u64,
    duplicates: u64,
    rejections: BTreeMap<&'static str, u64>,
}

impl PushTally {
    fn reject(&mut self, shared: &Shared, r: Rejection) {
        shared.progress().ledger.reject(r.reason);
        if r.reason == TRAINING_COMPLETE {
            // Not bad data: the actor simply had not heard yet that training ended.
            tracing::debug!(detail = %r.detail, "refused a trajectory after training ended");
        } else {
            tracing::warn!(reason = r.reason, detail = %r.detail, "rejected a trajectory");
        }
        metrics::counter!(musicrl_telemetry::metrics_catalog::LEARNER_TRAJECTORIES_REJECTED_TOTAL, "reason" => r.reason)
            .increment(1);
        *self.rejections.entry(r.reason).or_default() += 1;
    }

    /// The push's answer; the invalid trajectories (not those refused because training
    /// ended) counted as rejected, the ledger published.
    fn summary(self, shared: &Shared) -> pb::PushSummary {
        let rejected: u64 = self.rejections.values().sum();
        let invalid: u64 = self
            .rejections
            .iter()
            .filter(|(r, _)| **r != TRAINING_COMPLETE)
            .map(|(_, n)| n)
            .sum();
        let learner_version = {
            let mut p = shared.progress();
            p.trajectories_rejected += invalid;
            p.policy_version
        };
        metrics::gauge!(musicrl_telemetry::metrics_catalog::LEARNER_QUEUE_DEPTH)
            .set(shared.queue_depth() as f64);
        shared.publish_ledger();
        pb::PushSummary {
            duplicates: self.duplicates,
            learner_run: shared.run_id,
            accepted: self.accepted,
            rejected,
            rejections: musicrl_common::wire::rejection_counts(self.rejections),
            learner_version,
        }
    }
}
