//! Dynamic batching: concurrent Score calls are merged into one batch (up to
//! `batch_max_samples` samples, waiting at most `batch_max_wait` after the first call) and
//! scored together, so the models see batches instead of many small calls. Calls that arrive
//! while a batch is being scored form the next batch. Each call gets back exactly its own
//! samples' scores, in order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use musicrl_common::types::SampleScore;
use musicrl_common::wire::ScoreInput;

use crate::combine::RewardModel;
use crate::error::{Result, RewardError};

struct Job {
    inputs: Vec<ScoreInput>,
    reply: oneshot::Sender<Result<Vec<SampleScore>>>,
}

/// The handle calls go through; the batching task stops when every handle is dropped.
#[derive(Debug, Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("samples", &self.inputs.len())
            .finish()
    }
}

impl Batcher {
    /// Starts the batching task on the current runtime.
    pub fn spawn(model: Arc<RewardModel>, max_samples: usize, max_wait: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(1024);
        tokio::spawn(run(model, rx, max_samples.max(1), max_wait));
        Self { tx }
    }

    /// Scores `inputs` as part of whichever batch they join.
    pub async fn score(&self, inputs: Vec<ScoreInput>) -> Result<Vec<SampleScore>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { inputs, reply })
            .await
            .map_err(|_| RewardError::Internal("the batching task has stopped".into()))?;
        answer
            .await
            .map_err(|_| RewardError::Internal("the batching task dropped a call".into()))?
    }
}

async fn run(
    model: Arc<RewardModel>,
    mut rx: mpsc::Receiver<Job>,
    max_samples: usize,
    max_wait: Duration,
) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut samples = first.inputs.len();
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + max_wait;
        while samples < max_samples {
            // Calls already queued join at once; then wait for more until the deadline.
            let next = match rx.try_recv() {
                Ok(job) => Some(job),
                Err(mpsc::error::TryRecvError::Empty) if !max_wait.is_zero() => {
                    tokio::time::timeout_at(deadline, rx.recv())
                        .await
                        .ok()
                        .flatten()
                }
                Err(_) => None,
            };
            let Some(job) = next else { break };
            if samples + job.inputs.len() > max_samples {
                carried = Some(job);
                break;
            }
            samples += job.inputs.len();
            jobs.push(job);
        }
        metrics::histogram!(musicrl_common::metrics_catalog::REWARD_SCORED_BATCH_SIZE)
            .record(samples as f64);
        let merged: Vec<ScoreInput> = jobs.iter().flat_map(|j| j.inputs.iter().cloned()).collect();
        match model.score(&merged).await {
            Ok(scores) => {
                let mut scores = scores.into_iter();
                for job in jobs {
                    let mine: Vec<SampleScore> = scores.by_ref().take(job.inputs.len()).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for job in jobs {
                    let _ = job.reply.send(Err(RewardError::Internal(message.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::combine::Component;
    use crate::scorer::TokenFraction;

    fn model() -> Arc<RewardModel> {
        Arc::new(RewardModel::new(vec![Component {
            scorer: Box::new(TokenFraction::new("low", 2)),
            weight: 1.0,
            shift: 0.0,
            scale: 1.0,
        }]))
    }

    fn input(tokens: Vec<u32>) -> ScoreInput {
        ScoreInput {
            caption: "c".into(),
            tokens,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_are_merged_and_each_gets_its_own_scores() {
        let batcher = Batcher::spawn(model(), 64, Duration::from_millis(200));
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
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_larger_than_the_batch_is_scored_alone() {
        let batcher = Batcher::spawn(model(), 2, Duration::ZERO);
        let scores = batcher
            .score((0..5).map(|_| input(vec![0, 9])).collect())
            .await
            .expect("scores");
        assert_eq!(scores.len(), 5);
        assert!(scores.iter().all(|s| (s.reward - 0.5).abs() < 1e-6));
    }
}
