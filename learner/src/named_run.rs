//! Named runs on a shared volume: `run.root/run.name/` holds one run's checkpoints, history
//! and trajectory log, and `run.toml`, the configuration it was started with.
//!
//! A learner that starts under an existing name resumes it when its training configuration
//! is the one saved (a restarted pod), and refuses, naming the keys that differ, when it is
//! not — unless `run.resume` asks to continue with the changes. A fresh run is a new name,
//! never a deleted volume.

use std::path::PathBuf;

use musicrl_config::Config;

use crate::error::{LearnerError, Result};

/// The file in a run's folder that records the configuration it was started with.
pub const RUN_CONFIG: &str = "run.toml";

/// A run's folder, when the configuration names one.
pub fn folder(config: &Config) -> Option<PathBuf> {
    (!config.run.name.is_empty()).then(|| config.run.root.join(&config.run.name))
}

/// Opens the named run (creating its folder) and returns the configuration with the run's
/// paths filled in; a configuration without `run.name` comes back unchanged.
pub fn open(config: &Config) -> Result<Config> {
    let Some(dir) = folder(config) else {
        return Ok(config.clone());
    };
    let mut c = config.clone();
    c.learner.checkpoint_dir = dir.join("checkpoints");
    c.learner.history_path = dir.join("history.jsonl");
    c.learner.trajectory_log = dir.join("trajectories.jsonl");
    let io =
        |e: std::io::Error| LearnerError::Checkpoint(format!("run folder {}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let saved_path = dir.join(RUN_CONFIG);
    if saved_path.exists() {
        let saved = Config::from_file(&saved_path)
            .map_err(|e| LearnerError::Checkpoint(format!("{}: {e}", saved_path.display())))?;
        let diff = saved.training_differences(&c);
        if !diff.is_empty() {
            if !c.run.resume {
                return Err(LearnerError::Checkpoint(format!(
                    "run {:?} in {} was started with another configuration ({}, saved vs now): \
                     start a new run under another run.name, or set run.resume = true to \
                     continue this one with the changes",
                    c.run.name,
                    dir.display(),
                    diff.join(", ")
                )));
            }
            tracing::warn!(run = %c.run.name, changed = %diff.join(", "), "continuing the run with a changed configuration (run.resume)");
        } else {
            tracing::info!(run = %c.run.name, dir = %dir.display(), "continuing the named run");
            return Ok(c);
        }
    } else {
        tracing::info!(run = %c.run.name, dir = %dir.display(), "starting the named run");
    }
    musicrl_config::fsutil::write_atomic(&saved_path, c.to_toml().as_bytes())
        .map_err(|e| LearnerError::Checkpoint(format!("{}: {e}", saved_path.display())))?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(root: &std::path::Path, name: &str) -> Config {
        let mut c = Config::default();
        c.run.name = name.into();
        c.run.root = root.to_path_buf();
        c
    }

    #[test]
    fn a_named_run_resumes_as_it_was_and_refuses_another_configuration() {
        let root = tempfile::tempdir().expect("tempdir");
        let c = named(root.path(), "rl-r");
        let opened = open(&c).expect("a new run");
        assert_eq!(
            opened.learner.checkpoint_dir,
            root.path().join("rl-r/checkpoints")
        );
        assert_eq!(
            opened.learner.history_path,
            root.path().join("rl-r/history.jsonl")
        );
        assert!(root.path().join("rl-r/run.toml").exists());
        // The same configuration (a restarted pod, more steps) resumes.
        let mut same = c.clone();
        same.learner.steps = 500;
        open(&same).expect("resumes");
        // Another configuration under the same name is refused, naming the key.
        let mut other = c.clone();
        other.learner.kl_coef = 0.2;
        let e = open(&other).unwrap_err().to_string();
        assert!(e.contains("learner.kl_coef (0.0"), "{e}");
        assert!(e.contains("run.resume"), "{e}");
        // Under another name it is a new run.
        let mut renamed = other.clone();
        renamed.run.name = "rl-r-kl02".into();
        open(&renamed).expect("a new run");
        // Asked to resume, it continues and records the new configuration.
        other.run.resume = true;
        open(&other).expect("resume with changes");
        other.run.resume = false;
        open(&other).expect("the changed configuration is now the run's");
    }

    #[test]
    fn without_a_name_nothing_changes() {
        let c = Config::default();
        assert_eq!(open(&c).unwrap(), c);
    }
}
