//! The trajectory log: the provenance of every trajectory the learner trained on — the step
//! it entered, the actor, the policy version that sampled it, its caption and the tokens
//! trained on (up to its first END), its reward, every component's score and the scores of
//! the windows it averaged, and the scorer configuration's version — as JSON lines in the run folder, so a result can be traced back
//! to what was scored by what.
//!
//! Size is bounded by rotation: when the file passes `learner.trajectory_log_max_mb`, it is
//! renamed to `<file>.1` (replacing the previous one) and a new file starts, so at most about
//! twice the limit is on disk. (A trajectory is ~0.6 KB: 16 a step for 300 steps is ~3 MB.)

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use musicrl_common::Trajectory;

use crate::error::Result;

#[derive(Serialize)]
struct Entry<'a> {
    step: u64,
    actor: &'a str,
    policy_version: u64,
    caption: &'a str,
    tokens: &'a [u32],
    reward: f32,
    components: &'a [(String, f32)],
    /// Per component, the scores of the windows it averaged (empty: none reported).
    windows: &'a [Vec<f32>],
    scorer_version: &'a str,
}

/// An open trajectory log.
#[derive(Debug)]
pub struct TrajectoryLog {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    bytes: u64,
    max_bytes: u64,
}

fn open_append(path: &Path) -> Result<(std::fs::File, u64)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let bytes = file.metadata()?.len();
    Ok((file, bytes))
}

impl TrajectoryLog {
    /// Opens (appending to) the log at `path`; `None` when `path` is empty.
    pub fn open(path: &Path, max_mb: u64) -> Result<Option<TrajectoryLog>> {
        if path.as_os_str().is_empty() {
            return Ok(None);
        }
        let (file, bytes) = open_append(path)?;
        Ok(Some(TrajectoryLog {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
            bytes,
            max_bytes: max_mb.max(1) << 20,
        }))
    }

    /// Appends the batch trained at `step`; `end` is the END token (tokens after the first
    /// END were never trained on and are not logged).
    pub fn append(&mut self, step: u64, batch: &[Trajectory], end: u32) -> Result<()> {
        for t in batch {
            let n = crate::trainer::trained_len(&t.tokens, end);
            let line = serde_json::to_string(&Entry {
                step,
                actor: &t.actor_id,
                policy_version: t.policy_version.0,
                caption: &t.caption,
                tokens: &t.tokens[..n],
                reward: t.reward,
                components: &t.components,
                windows: &t.component_windows,
                scorer_version: &t.scorer_version,
            })
            .expect("an entry serialises");
            writeln!(self.file, "{line}")?;
            self.bytes += line.len() as u64 + 1;
        }
        self.file.flush()?;
        if self.bytes > self.max_bytes {
            let old = self.path.with_extension(format!(
                "{}.1",
                self.path.extension().and_then(|e| e.to_str()).unwrap_or("")
            ));
            std::fs::rename(&self.path, &old)?;
            let (file, bytes) = open_append(&self.path)?;
            self.file = std::io::BufWriter::new(file);
            self.bytes = bytes;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use musicrl_common::PolicyVersion;

    fn traj(scorer: &str, tokens: Vec<u32>) -> Trajectory {
        Trajectory {
            id: Default::default(),
            learner_run: 0,
            seal: None,
            actor_id: "actor-0".into(),
            policy_version: PolicyVersion(3),
            caption: "a jig in D major".into(),
            behaviour_logprobs: vec![-1.0; tokens.len()],
            tokens,
            reward: 0.5,
            components: vec![("text".into(), 0.25), ("quality".into(), 0.75)],
            scorer_version: scorer.into(),
            component_windows: Vec::new(),
        }
    }

    #[test]
    fn logs_provenance_up_to_end_and_rotates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("trajectories.jsonl");
        let mut log = TrajectoryLog::open(&path, 1).expect("open").expect("a log");
        log.append(7, &[traj("text@a*1+quality@b*1", vec![5, 6, 0, 9, 9])], 0)
            .expect("append");
        let text = std::fs::read_to_string(&path).expect("read");
        let v: serde_json::Value = serde_json::from_str(text.trim()).expect("JSON");
        assert_eq!(v["step"], 7);
        assert_eq!(v["policy_version"], 3);
        assert_eq!(v["actor"], "actor-0");
        assert_eq!(
            v["tokens"],
            serde_json::json!([5, 6, 0]),
            "nothing after END"
        );
        assert_eq!(v["scorer_version"], "text@a*1+quality@b*1");
        assert_eq!(v["components"][1], serde_json::json!(["quality", 0.75]));
        // Past 1 MiB the file rotates to .1 and a new one starts.
        let big: Vec<Trajectory> = (0..4000).map(|_| traj("s", vec![7; 100])).collect();
        log.append(8, &big, 0).expect("append");
        assert!(dir.path().join("trajectories.jsonl.1").is_file());
        log.append(9, &big[..1], 0).expect("append");
        let fresh = std::fs::read_to_string(&path).expect("read");
        assert_eq!(fresh.lines().count(), 1);
        assert!(
            TrajectoryLog::open(Path::new(""), 1)
                .expect("open")
                .is_none()
        );
    }

    #[test]
    fn counts_scorer_versions_in_a_batch() {
        let batch = vec![
            traj("v1", vec![1]),
            traj("v1", vec![2]),
            traj("v2", vec![3]),
        ];
        assert_eq!(crate::trainer::scorer_versions(&batch), 2);
        assert_eq!(crate::trainer::scorer_versions(&batch[..2]), 1);
    }
}
