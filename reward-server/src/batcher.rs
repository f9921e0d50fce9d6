//! Dynamic batching with fair slicing and load shedding.
//!
//! Concurrent Score calls are merged into batches of up to `max_samples` samples (waiting at
//! most `max_wait` after the first call for others to join), so the models see batches
//! instead of many small calls. Each call is cut into slices of at most `slice` samples and
//! a batch takes one slice from every waiting call in turn (round robin, in arrival order),
//! so a small call waits for at most one batch of other calls' slices however large they
//! are, instead of for all of a large call. A call whose caller has gone (cancelled, or past
//! its deadline, which drops the handler) is removed before its next slice is scored and its
//! remaining samples are counted as abandoned. Calls that would take the queue past
//! `max_queued` samples are refused at once with RESOURCE_EXHAUSTED. Each call gets back
//! exactly its own samples' scores, in order.
//!
//! Hot swap: the scoring configuration is read from an [`ArcSwap`] once per call, when the
//! call arrives, and the call is scored by that snapshot only. A batch merges only calls that
//! hold the same snapshot, so a new reward model published mid-call never scores part of a
//! call: every call is scored by exactly one version, which it gets back with its scores.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use musicrl_common::types::SampleScore;
use musicrl_common::wire::ScoreInput;

use crate::combine::RewardModel;
use crate::error::{Result, RewardError};

/// The scoring configuration in force; a reload stores a new one.
pub type ModelHandle = Arc<ArcSwap<RewardModel>>;

struct Job {
    inputs: Vec<ScoreInput>,
    /// The snapshot this call is scored by, from start to end.
    model: Arc<RewardModel>,
    reply: oneshot::Sender<Result<Vec<SampleScore>>>,
}

/// A call being scored slice by slice.
struct Pending {
    job: Job,
    /// Samples scored so far (the prefix `inputs[..next]`).
    next: usize,
    scores: Vec<SampleScore>,
}

/// The batcher's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most samples scored together.
    pub max_samples: usize,
    /// How long the first call of a batch waits for others.
    pub max_wait: Duration,
    /// Largest slice of one call in a batch.
    pub slice: usize,
    /// Most samples accepted and not yet answered; past it calls are shed.
    pub max_queued: usize,
}

/// The handle calls go through; the batching task stops when every handle is dropped.
#[derive(Debug, Clone)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<Job>,
    model: ModelHandle,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
}

/// Releases a call's share of the queue however the call ends.
struct Queued {
    queued: Arc<AtomicUsize>,
    n: usize,
}

impl Drop for Queued {
    fn drop(&mut self) {
        let left = self.queued.fetch_sub(self.n, Ordering::SeqCst) - self.n;
        metrics::gauge!(musicrl_telemetry::metrics_catalog::REWARD_QUEUED_SAMPLES).set(left as f64);
    }
}

impl Batcher {
    /// Starts the batching task on the current runtime.
    pub fn spawn(model: Arc<RewardModel>, limits: Limits) -> Self {
        Self::spawn_swappable(Arc::new(ArcSwap::new(model)), limits)
    }

    /// Starts the batching task over a model that may be swapped while it serves.
    pub fn spawn_swappable(model: ModelHandle, limits: Limits) -> Self {
        // Unbounded channel: the queue is bounded in samples by `max_queued` instead.
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        let limits = Limits {
            max_samples: limits.max_samples.max(1),
            slice: limits.slice.max(1),
            ..limits
        };
        tokio::spawn(run(rx, limits));
        Self {
            tx,
            model,
            queued: Arc::new(AtomicUsize::new(0)),
            max_queued: limits.max_queued,
        }
    }

    /// Samples accepted and not yet answered.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Scores `inputs` as slices of whichever batches they join; refused with
    /// [`RewardError::Overloaded`] when the queue has no room for them.
    pub async fn score(&self, inputs: Vec<ScoreInput>) -> Result<Vec<SampleScore>> {
        Ok(self.score_versioned(inputs).await?.0)
    }

    /// As [`Batcher::score`], with the scoring configuration that scored the whole call.
    pub async fn score_versioned(
        &self,
        inputs: Vec<ScoreInput>,
    ) -> Result<(Vec<SampleScore>, Arc<RewardModel>)> {
        let n = inputs.len();
        let max = self.max_queued;
        self.queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                (q + n <= max).then_some(q + n)
            })
            .map_err(|q| {
                RewardError::Overloaded(format!(
                    "the reward server's queue is full ({q} of {max} samples waiting; reward.max_queued_samples): retry later"
                ))
            })?;
        let _queued = Queued {
            queued: self.queued.clone(),
            n,
        };
        metrics::gauge!(musicrl_telemetry::metrics_catalog::REWARD_QUEUED_SAMPLES)
            .set(self.queued() as f64);
        let (reply, answer) = oneshot::channel();
        let model = self.model.load_full();
        self.tx
            .send(Job {
                inputs,
                model: model.clone(),
                reply,
            })
            .map_err(|_| RewardError::Internal("the batching task has stopped".into()))?;
        let scores = answer
            .await
            .map_err(|_| RewardError::Internal("the batching task dropped a call".into()))??;
        Ok((scores, model))
    }
}

/// Takes calls that have arrived into `pending`; false once every handle is gone and
/// nothing is pending.
fn drain(rx: &mut mpsc::UnboundedReceiver<Job>, pending: &mut VecDeque<Pending>) {
    while let Ok(job) = rx.try_recv() {
        pending.push_back(Pending {
            next: 0,
            scores: Vec::with_capacity(job.inputs.len()),
            job,
        });
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Job>, limits: Limits) {
    let mut pending: VecDeque<Pending> = VecDeque::new();
    loop {
        if pending.is_empty() {
            let Some(job) = rx.recv().await else { return };
            pending.push_back(Pending {
                next: 0,
                scores: Vec::with_capacity(job.inputs.len()),
                job,
            });
            // Let others join the first call, up to the deadline or a full batch.
            let deadline = tokio::time::Instant::now() + limits.max_wait;
            loop {
                drain(&mut rx, &mut pending);
                let waiting: usize = pending.iter().map(|p| p.job.inputs.len()).sum();
                if waiting >= limits.max_samples || limits.max_wait.is_zero() {
                    break;
                }
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => pending.push_back(Pending {
                        next: 0,
                        scores: Vec::with_capacity(job.inputs.len()),
                        job,
                    }),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        drain(&mut rx, &mut pending);
        // Calls whose caller has gone are not scored further.
        pending.retain(|p| {
            if p.job.reply.is_closed() {
                let left = p.job.inputs.len() - p.next;
                metrics::counter!(
                    musicrl_telemetry::metrics_catalog::REWARD_ABANDONED_SAMPLES_TOTAL
                )
                .increment(left as u64);
                tracing::debug!(samples = left, "dropped a call whose caller has gone");
                false
            } else {
                true
            }
        });
        if pending.is_empty() {
            continue;
        }

        // One slice from each call in turn until the batch is full, among the calls that
        // hold the oldest call's snapshot of the model (calls that arrived after a swap wait
        // for the calls before it to finish).
        let model = pending[0].job.model.clone();
        let mut plan: Vec<(usize, usize, usize)> = Vec::new(); // (call, start, end)
        let mut cursor: Vec<usize> = pending.iter().map(|p| p.next).collect();
        let mut samples = 0;
        'fill: loop {
            let mut took = false;
            for (i, p) in pending.iter().enumerate() {
                if !Arc::ptr_eq(&p.job.model, &model) {
                    continue;
                }
                let room = limits.max_samples - samples;
                if room == 0 {
                    break 'fill;
                }
                let start = cursor[i];
                let end = (start + limits.slice.min(room)).min(p.job.inputs.len());
                if end > start {
                    plan.push((i, start, end));
                    cursor[i] = end;
                    samples += end - start;
                    took = true;
                }
            }
            if !took {
                break;
            }
        }
        metrics::histogram!(musicrl_telemetry::metrics_catalog::REWARD_SCORED_BATCH_SIZE)
            .record(samples as f64);
        let merged: Vec<ScoreInput> = plan
            .iter()
            .flat_map(|&(i, s, e)| pending[i].job.inputs[s..e].iter().cloned())
            .collect();
        match model.score(&merged).await {
            Ok(scores) => {
                let mut scores = scores.into_iter();
                for &(i, s, e) in &plan {
                    let p = &mut pending[i];
                    p.scores.extend(scores.by_ref().take(e - s));
                    p.next = e;
                }
                // Answer the calls that are complete, keeping the others in order.
                let mut rest = VecDeque::with_capacity(pending.len());
                for p in pending.drain(..) {
                    if p.next == p.job.inputs.len() {
                        let _ = p.job.reply.send(Ok(p.scores));
                    } else {
                        rest.push_back(p);
                    }
                }
                pending = rest;
            }
            Err(e) => {
                // Every call with a slice in the failed batch fails.
                let message = e.to_string();
                let failed: std::collections::BTreeSet<usize> =
                    plan.iter().map(|&(i, _, _)| i).collect();
                let mut rest = VecDeque::with_capacity(pending.len());
                for (i, p) in pending.drain(..).enumerate() {
                    if failed.contains(&i) {
                        let _ = p
                            .job
                            .reply
                            .send(Err(RewardError::Internal(message.clone())));
                    } else {
                        rest.push_back(p);
                    }
                }
                pending = rest;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::combine::Component;
    use crate::scorer::{Batch, Scorer, TokenFraction};

    fn model() -> Arc<RewardModel> {
        Arc::new(RewardModel::new(vec![Component {
            scorer: Box::new(TokenFraction::new("low", 2)),
            weight: 1.0,
            shift: 0.0,
            scale: 1.0,
        }]))
    }

    fn limits(max_samples: usize, wait_ms: u64) -> Limits {
        Limits {
            max_samples,
            max_wait: Duration::from_millis(wait_ms),
            slice: 16,
            max_queued: 4096,
        }
    }

    fn input(tokens: Vec<u32>) -> ScoreInput {
        ScoreInput {
            caption: "c".into(),
            tokens,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_are_merged_and_each_gets_its_own_scores() {
        let batcher = Batcher::spawn(model(), limits(64, 200));
        // Call k sends k+1 samples whose score is recognisable: [0]*k + [5]*(4−k) → k/4.
        let calls = (0..4u32).map(|k| {
            let b = batcher.clone();
            tokio::spawn(async move {
                let inputs: Vec<ScoreInput> = (0..=k)
                    .map(|_| input((0..4).map(|i| if i < k { 0 } else { 5 }).collect()))
                    .collect();
                (k, b.score(inputs).await.expect("scores"))
            })
        });
        for call in calls {
            let (k, scores) = call.await.expect("joins");
            assert_eq!(scores.len(), k as usize + 1);
            assert!(
                scores
                    .iter()
                    .all(|s| (s.reward - k as f32 / 4.0).abs() < 1e-6),
                "call {k}: {scores:?}"
            );
        }
        assert_eq!(batcher.queued(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_larger_than_the_batch_is_scored_in_slices_in_order() {
        let batcher = Batcher::spawn(model(), limits(2, 0));
        // Sample i has i zeros of 7 tokens: its score is i/7, so order is checkable.
        let inputs: Vec<ScoreInput> = (0..7u32)
            .map(|i| input((0..7).map(|j| if j < i { 0 } else { 9 }).collect()))
            .collect();
        let scores = batcher.score(inputs).await.expect("scores");
        assert_eq!(scores.len(), 7);
        for (i, s) in scores.iter().enumerate() {
            assert!((s.reward - i as f32 / 7.0).abs() < 1e-6, "{i}: {s:?}");
        }
    }

    /// Records every batch it scores (its size), and waits on a gate before each batch, so
    /// a test controls exactly when batches happen.
    struct Recording {
        batches: Arc<std::sync::Mutex<Vec<usize>>>,
        gate: Arc<tokio::sync::Semaphore>,
    }

    #[tonic::async_trait]
    impl Scorer for Recording {
        fn name(&self) -> &str {
            "recording"
        }
        fn version(&self) -> String {
            "recording-1".into()
        }
        async fn score(&self, batch: Arc<Batch>) -> crate::error::Result<Vec<f32>> {
            self.gate.acquire().await.expect("gate open").forget();
            self.batches.lock().unwrap().push(batch.inputs.len());
            Ok(batch.inputs.iter().map(|i| i.tokens.len() as f32).collect())
        }
    }

    fn recording() -> (
        Arc<RewardModel>,
        Arc<std::sync::Mutex<Vec<usize>>>,
        Arc<tokio::sync::Semaphore>,
    ) {
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let model = Arc::new(RewardModel::new(vec![Component {
            scorer: Box::new(Recording {
                batches: batches.clone(),
                gate: gate.clone(),
            }),
            weight: 1.0,
            shift: 0.0,
            scale: 1.0,
        }]));
        (model, batches, gate)
    }

    async fn until(mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition never held");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_call_behind_a_large_one_waits_for_at_most_one_batch() {
        // Bound: with batches of 64 and slices of 16, a call of ≤ 16 samples that arrives
        // while a 512-sample call is being scored is answered by the next batch, i.e. after
        // at most 2 batches, not after the 512 / 64 = 8 the large call needs.
        let (model, batches, gate) = recording();
        let batcher = Batcher::spawn(model, limits(64, 0));
        let big = {
            let b = batcher.clone();
            tokio::spawn(async move { b.score(vec![input(vec![1; 3]); 512]).await })
        };
        // The large call's first batch is in the scorer (waiting on the gate).
        until(|| batcher.queued() == 512).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let small = {
            let b = batcher.clone();
            tokio::spawn(async move { b.score(vec![input(vec![1; 2]); 8]).await })
        };
        until(|| batcher.queued() == 520).await;
        gate.add_permits(2);
        let small = small.await.expect("joins").expect("scores");
        assert_eq!(small.len(), 8);
        assert!(small.iter().all(|s| s.reward == 2.0));
        assert!(!big.is_finished(), "the large call is still being scored");
        let seen = batches.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "answered after the second batch: {seen:?}");
        assert_eq!(seen, vec![64, 64]);
        gate.add_permits(100);
        let big = big.await.expect("joins").expect("scores");
        assert_eq!(big.len(), 512);
        assert!(big.iter().all(|s| s.reward == 3.0));
        // 512 + 8 samples in batches of 64: 9 batches (the second held 8 of the small call).
        assert_eq!(batches.lock().unwrap().iter().sum::<usize>(), 520);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_call_is_not_scored_and_a_full_queue_sheds() {
        let (model, batches, gate) = recording();
        let batcher = Batcher::spawn(
            model,
            Limits {
                max_queued: 100,
                ..limits(8, 0)
            },
        );
        let first = {
            let b = batcher.clone();
            tokio::spawn(async move { b.score(vec![input(vec![1]); 8]).await })
        };
        until(|| batcher.queued() == 8).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A second call arrives while the first is scored, and its caller gives up.
        let gone = {
            let b = batcher.clone();
            tokio::spawn(async move { b.score(vec![input(vec![1, 1]); 40]).await })
        };
        until(|| batcher.queued() == 48).await;
        // The queue is nearly full: a call of 60 more is shed at once.
        let shed = batcher.score(vec![input(vec![1]); 60]).await.unwrap_err();
        assert!(matches!(shed, RewardError::Overloaded(_)), "{shed}");
        gone.abort();
        until(|| batcher.queued() == 8).await;
        gate.add_permits(10);
        assert_eq!(first.await.expect("joins").expect("scores").len(), 8);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            batches.lock().unwrap().clone(),
            vec![8],
            "only the first call was ever scored"
        );
    }
}
