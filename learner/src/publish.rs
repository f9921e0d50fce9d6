//! Publishing parameter versions off the training thread.
//!
//! After an update the training thread hands a frozen copy of the policy (burn's
//! `valid()`: the tensors are shared, nothing is copied) to the publisher thread and goes
//! on to the next batch. The publisher serialises it, checksums it and makes it the newest
//! version in the `watch` every subscriber follows. When the training thread outruns it,
//! only the newest waiting version is encoded (a version nobody could see in time is
//! never serialised). The last version handed over (the final one, `training_complete`)
//! is always published: [`Publisher::finish`] waits for it.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::watch;

use musicrl_common::types::PolicyVersion;
use musicrl_config::PolicyConfig;
use musicrl_policy::melody::params::ParameterBlob;
use musicrl_telemetry::metrics_catalog as mc;

use crate::family::{Learn, Snapshot};

struct Job {
    snapshot: Snapshot,
    version: PolicyVersion,
    training_complete: bool,
}

/// The handle the training thread publishes through.
pub struct Publisher {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Publisher {
    /// Starts the publisher thread, which writes into `params` every version it encodes.
    pub fn spawn(
        params: watch::Sender<Option<Arc<ParameterBlob>>>,
        config: PolicyConfig,
        temperature: f32,
        learner_run: u64,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("musicrl-publish".into())
            .spawn(move || {
                while let Ok(mut job) = rx.recv() {
                    // Latest wins: skip versions superseded while the last one encoded.
                    while let Ok(newer) = rx.try_recv() {
                        job = newer;
                    }
                    let started = Instant::now();
                    match job.snapshot.blob(job.version, &config, temperature) {
                        Ok(mut blob) => {
                            blob.learner_run = learner_run;
                            blob.training_complete = job.training_complete;
                            let bytes = blob.bytes.len();
                            params.send_replace(Some(Arc::new(blob)));
                            metrics::histogram!(mc::LEARNER_BROADCAST_SECONDS)
                                .record(started.elapsed().as_secs_f64());
                            metrics::gauge!(mc::LEARNER_BROADCAST_BYTES).set(bytes as f64);
                        }
                        Err(e) => {
                            tracing::error!(version = %job.version, error = %e, "could not serialise a parameter version; actors keep the previous one");
                        }
                    }
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands the trainer's current parameters over for publishing and returns at once.
    pub fn publish(&self, trainer: &impl Learn, training_complete: bool) {
        let started = Instant::now();
        let job = Job {
            snapshot: trainer.snapshot(),
            version: trainer.version(),
            training_complete,
        };
        if let Some(tx) = &self.tx
            && tx.send(job).is_err()
        {
            tracing::error!("the publisher thread has stopped; this version is not broadcast");
        }
        metrics::histogram!(mc::LEARNER_PUBLISH_HANDOFF_SECONDS)
            .record(started.elapsed().as_secs_f64());
    }

    /// Waits until every version handed over has been published (or skipped for a newer
    /// one) and stops the thread.
    pub fn finish(mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the publisher thread panicked");
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::Trainer;
    use musicrl_common::{PolicyVersion as V, Trajectory};
    use musicrl_config::Config;

    fn config() -> Config {
        let mut c = Config::default();
        c.policy = PolicyConfig {
            vocab_size: 9,
            max_tokens: 8,
            d_model: 16,
            n_heads: 2,
            n_layers: 1,
            d_ff: 32,
            caption_buckets: 32,
            max_caption_words: 6,
            end_token: 0,
            ..PolicyConfig::default()
        };
        c.learner.init_policy = std::path::PathBuf::new();
        c.learner.value_warmup_steps = 0;
        c.learner.learning_rate = 0.05;
        c
    }

    fn batch() -> Vec<Trajectory> {
        (0..4)
            .map(|i| Trajectory {
                id: Default::default(),
                learner_run: 0,
                seal: None,
                actor_id: "t".into(),
                policy_version: V(0),
                caption: "a jig".into(),
                behaviour_logprobs: vec![-2.0; 3],
                tokens: vec![1 + i, 2, 3],
                reward: i as f32,
                components: vec![],
                scorer_version: "v".into(),
                component_windows: Vec::new(),
            })
            .collect()
    }

    /// Versions are published off the training thread with the parameters they were handed
    /// (not the trainer's later ones), and the final, `training_complete` one always arrives.
    #[test]
    fn published_versions_carry_the_parameters_of_their_step_and_the_last_always_arrives() {
        let config = config();
        let device = musicrl_policy::device::training_device();
        let mut trainer = Trainer::new(&config, &device).unwrap();
        let (tx, rx) = watch::channel(None);
        let publisher =
            Publisher::spawn(tx, config.policy.clone(), 0.99, 42).expect("publisher thread");
        let expected_v1 = {
            trainer.train_step(&batch());
            let want = trainer.blob(0.99).unwrap();
            publisher.publish(&trainer, false);
            want
        };
        // Wait for version 1, then train on: the published bytes stay version 1's.
        while rx.borrow().as_ref().map(|b| b.version) != Some(V(1)) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        trainer.train_step(&batch());
        let got = rx.borrow().clone().unwrap();
        assert_eq!(got.bytes, expected_v1.bytes);
        assert_eq!(got.learner_run, 42);
        assert!(!got.training_complete);
        // A burst: the newest wins and the final one is published before finish returns.
        for _ in 0..3 {
            trainer.train_step(&batch());
            publisher.publish(&trainer, false);
        }
        publisher.publish(&trainer, true);
        let final_bytes = trainer.blob(0.99).unwrap().bytes;
        publisher.finish();
        let last = rx.borrow().clone().unwrap();
        assert_eq!(last.version, V(5));
        assert!(last.training_complete);
        assert_eq!(last.bytes, final_bytes);
        assert_ne!(last.bytes, expected_v1.bytes);
    }
}
