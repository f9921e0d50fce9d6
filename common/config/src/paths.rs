//! Where the files a configuration names are found, so the binary works from any directory.
//!
//! A relative input path (`models/base/policy.bpk`, `data/prompts/train.txt`,
//! `config/rl-u.toml`) is looked up in the working directory first, then in the
//! installation: `$MUSICRL_HOME` (the image sets it to its data folder), the binary's own
//! folder, `<bin>/../share/musicrl`, and the folders above the binary (a `target/release`
//! build inside the repository finds the repository's files). Outputs are never moved: they
//! stay relative to the working directory.

use std::path::{Path, PathBuf};

use super::Config;
use crate::ConfigError;

/// The environment variable naming the installation's data folder.
pub const HOME_VAR: &str = "MUSICRL_HOME";

/// The installation folders searched after the working directory, in order.
pub fn install_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(home) = std::env::var_os(HOME_VAR).filter(|h| !h.is_empty()) {
        roots.push(PathBuf::from(home));
    }
    if let Ok(exe) = std::env::current_exe() {
        let exe = exe.canonicalize().unwrap_or(exe);
        if let Some(dir) = exe.parent() {
            roots.push(dir.to_path_buf());
            roots.push(dir.join("../share/musicrl"));
            // target/release/musicrl, target/debug/deps/x: the repository is a few levels up.
            roots.extend(dir.ancestors().skip(1).take(3).map(Path::to_path_buf));
        }
    }
    roots
}

/// Where `path` is: itself if it exists (or is absolute), else the first installation root
/// that has it. `None` when nothing has it.
pub fn find(path: &Path) -> Option<PathBuf> {
    if path.as_os_str().is_empty() {
        return None;
    }
    if path.exists() {
        return Some(path.to_path_buf());
    }
    if path.is_absolute() {
        return None;
    }
    install_roots()
        .into_iter()
        .map(|r| r.join(path))
        .find(|p| p.exists())
}

/// `path` if found (see [`find`]), else `path` unchanged (its user reports it missing).
pub fn resolve(path: &Path) -> PathBuf {
    find(path).unwrap_or_else(|| path.to_path_buf())
}

/// The error for a missing input, naming the key and every place that was tried.
pub fn missing(key: &str, path: &Path) -> ConfigError {
    let mut tried = vec![
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf()),
    ];
    if !path.is_absolute() {
        tried.extend(install_roots().into_iter().map(|r| r.join(path)));
    }
    ConfigError::Missing {
        key: key.to_string(),
        path: path.to_path_buf(),
        tried: tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// `path` found, or the [`missing`] error naming `key`.
pub fn require(key: &str, path: &Path) -> Result<PathBuf, ConfigError> {
    find(path).ok_or_else(|| missing(key, path))
}

impl Config {
    /// Rewrites every relative input path that the working directory lacks but the
    /// installation has to the installation's copy. Paths found nowhere stay as they are, for
    /// the role that needs them to report with [`missing`] (a role never fails for an input
    /// another role reads).
    pub fn locate_inputs(&mut self) {
        let fix = |p: &mut PathBuf| {
            if !p.as_os_str().is_empty() && !p.exists() {
                *p = resolve(p);
            }
        };
        fix(&mut self.learner.init_policy);
        fix(&mut self.learner.reference_policy);
        fix(&mut self.actor.prompts);
        fix(&mut self.feedback.prompts);
        fix(&mut self.feedback.policy);
        fix(&mut self.policy.folder);
        fix(&mut self.pretrain.corpus);
        fix(&mut self.experiment.eval_prompts);
        fix(&mut self.experiment.judge_prompts);
        for c in &mut self.reward.components {
            fix(&mut c.checkpoint);
        }
        for r in &mut self.experiment.recipes {
            fix(&mut r.config);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_input_names_its_key_and_the_places_tried() {
        let e = require("actor.prompts", Path::new("no/such/prompts.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("actor.prompts = no/such/prompts.txt"), "{e}");
        assert!(e.contains("tried"), "{e}");
        let here = std::env::current_dir().unwrap().join("no/such/prompts.txt");
        assert!(e.contains(&here.display().to_string()), "{e}");
    }

    #[test]
    fn an_existing_path_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.txt");
        std::fs::write(&f, "x").unwrap();
        assert_eq!(find(&f), Some(f.clone()));
        assert_eq!(find(&dir.path().join("y.txt")), None);
        assert_eq!(find(Path::new("")), None);
    }
}
