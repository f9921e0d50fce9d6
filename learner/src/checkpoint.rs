//! Checkpoints: the full learner state on disk, and resuming from it.
//!
//! Layout of `checkpoint_dir`:
//!
//! ```text
//! reference.bpk            the frozen KL reference (θ0 or learner.reference_policy; written once)
//! step-00000050/
//!   policy.bpk             the policy's parameters (burnpack)
//!   optimizer.bpk          Adam's state (burnpack)
//!   state.json             step, counters
//!   config.toml            the whole configuration the run used
//!   PINNED                 (optional) why an experiment chose this checkpoint: never pruned
//! LATEST                   the name of the newest complete step folder
//! ```
//!
//! A step folder is complete before `LATEST` names it, so a crash mid-save resumes from the
//! previous one. The newest `learner.keep_checkpoints` step folders are kept (0: all), and
//! pinned ones besides.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use musicrl_config::Config;
use musicrl_config::fsutil::write_atomic;
use musicrl_policy::melody::params::load_policy;

use crate::error::{LearnerError, Result};
use crate::family::{FamilyTrainer, Learn, load_musicgen};
use crate::musicgen::MusicgenTrainer;
use crate::trainer::Trainer;

/// The file whose presence in a step folder pins it: retention never deletes it.
pub const PIN_FILE: &str = "PINNED";

/// Pins a step folder so that retention keeps it, writing `reason` into the pin.
pub fn pin(folder: &Path, reason: &str) -> Result<()> {
    if !folder.join("policy.bpk").is_file() {
        return Err(ck_err(
            folder,
            "not a checkpoint step folder (no policy.bpk)",
        ));
    }
    Ok(write_atomic(&folder.join(PIN_FILE), reason.as_bytes())?)
}

/// Whether a step folder is pinned.
pub fn is_pinned(folder: &Path) -> bool {
    folder.join(PIN_FILE).exists()
}

/// Counters that continue across a resume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub trajectories_accepted: u64,
    pub trajectories_rejected: u64,
    pub trajectories_dropped_stale: u64,
    pub max_policy_version_seen: u64,
    /// The trajectory ledger at the checkpoint (what was pending then is lost if the
    /// process dies before the next one: `Ledger::restarted`).
    #[serde(default)]
    pub ledger: crate::ledger::Ledger,
    /// The reward seals trained on and still in their window: a restarted learner refuses
    /// them again (`replayed_seal`).
    #[serde(default)]
    pub spent_seals: Vec<musicrl_security::seal::SpentSeal>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    step: u64,
    counters: Counters,
}

fn ck_err(path: &Path, what: impl std::fmt::Display) -> LearnerError {
    LearnerError::Checkpoint(format!("{}: {what}", path.display()))
}

/// Saves the trainer's full state; returns the step folder.
pub fn save(
    dir: &Path,
    trainer: &impl Learn,
    counters: Counters,
    config: &Config,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| ck_err(dir, e))?;
    let reference = dir.join("reference.bpk");
    if !reference.exists()
        && let Some(bytes) = trainer.reference_bytes()?
    {
        write_atomic(&reference, &bytes)?;
    }
    let name = format!("step-{:08}", trainer.step_count());
    let folder = dir.join(&name);
    std::fs::create_dir_all(&folder).map_err(|e| ck_err(&folder, e))?;
    write_atomic(&folder.join("policy.bpk"), &trainer.policy_bytes()?)?;
    write_atomic(&folder.join("optimizer.bpk"), &trainer.optimizer_bytes()?)?;
    let state = State {
        step: trainer.step_count(),
        counters,
    };
    let json = serde_json::to_vec_pretty(&state).expect("State serialises");
    write_atomic(&folder.join("state.json"), &json)?;
    write_atomic(&folder.join("config.toml"), config.to_toml().as_bytes())?;
    write_manifest(&folder)?;
    write_atomic(&dir.join("LATEST"), name.as_bytes())?;
    prune(dir, config.learner.keep_checkpoints);
    Ok(folder)
}

/// Deletes all but the newest `keep` unpinned step folders (`keep` = 0 deletes none).
fn prune(dir: &Path, keep: usize) {
    if keep == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut steps: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-"))
                && !is_pinned(p)
        })
        .collect();
    steps.sort();
    let n = steps.len();
    for old in steps.into_iter().take(n.saturating_sub(keep)) {
        if let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!(path = %old.display(), error = %e, "could not prune an old checkpoint");
        }
    }
}

/// The files of a step folder, each with its BLAKE3 digest in `MANIFEST.json`.
const STEP_FILES: [&str; 4] = ["policy.bpk", "optimizer.bpk", "state.json", "config.toml"];
/// The step folder's manifest: file name → BLAKE3 hex digest, written after the files.
pub const MANIFEST: &str = "MANIFEST.json";

fn digest(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| ck_err(path, e))?;
    Ok(blake3::hash(&bytes).to_hex().to_string())
}

fn write_manifest(folder: &Path) -> Result<()> {
    let mut m = std::collections::BTreeMap::new();
    for f in STEP_FILES {
        m.insert(f.to_string(), digest(&folder.join(f))?);
    }
    let reference = folder
        .parent()
        .map(|d| d.join("reference.bpk"))
        .filter(|p| p.exists());
    if let Some(r) = reference {
        m.insert("../reference.bpk".to_string(), digest(&r)?);
    }
    let json = serde_json::to_vec_pretty(&m).expect("a map of strings serialises");
    write_atomic(&folder.join(MANIFEST), &json)?;
    Ok(())
}

/// Checks every file of a step folder against its manifest: a missing file, or one whose
/// digest differs (overwritten, truncated, corrupted), is refused by name. A folder written
/// before manifests existed is accepted with a warning.
pub fn verify(folder: &Path) -> Result<()> {
    for f in STEP_FILES {
        if !folder.join(f).is_file() {
            return Err(ck_err(
                folder,
                format!("the checkpoint is incomplete: {f} is missing"),
            ));
        }
    }
    let path = folder.join(MANIFEST);
    let Ok(text) = std::fs::read(&path) else {
        tracing::warn!(folder = %folder.display(), "checkpoint has no MANIFEST.json (written by an older musicrl): its files are not verified");
        return Ok(());
    };
    let m: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&text).map_err(|e| ck_err(&path, e))?;
    for (name, want) in &m {
        let file = folder.join(name);
        if !file.is_file() {
            return Err(ck_err(&file, "listed in MANIFEST.json but missing"));
        }
        if &digest(&file)? != want {
            return Err(ck_err(
                &file,
                "does not match its checksum in MANIFEST.json (overwritten or corrupted): \
                 refusing to load it; restore the file or point LATEST at an earlier step",
            ));
        }
    }
    Ok(())
}

/// The step folder `dir/LATEST` names, checked: `None` when there is no LATEST (a fresh
/// run); an error when LATEST names a folder that is missing or incomplete, or whose files
/// fail their checksums — never a silent fresh start over a damaged run.
pub fn resume_point(dir: &Path) -> Result<Option<PathBuf>> {
    let latest_file = dir.join("LATEST");
    let name = match std::fs::read_to_string(&latest_file) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ck_err(&latest_file, e)),
    };
    let name = name.trim();
    let folder = dir.join(name);
    if name.is_empty() || name.contains('/') || !folder.is_dir() {
        return Err(ck_err(
            &latest_file,
            format!(
                "names {name:?}, which is not a step folder in {}: restore it, point LATEST at \
                 another step-NNNNNNNN folder, or delete LATEST to start the run afresh",
                dir.display()
            ),
        ));
    }
    verify(&folder)?;
    Ok(Some(folder))
}

/// The newest complete checkpoint in `dir`, if any.
pub fn latest(dir: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(dir.join("LATEST")).ok()?;
    let folder = dir.join(name.trim());
    folder.is_dir().then_some(folder)
}

/// Restores the configured family's trainer from the newest checkpoint in `dir`; `None`
/// if there is none.
pub fn resume_family(
    dir: &Path,
    config: &Config,
    device: &Device,
) -> Result<Option<(FamilyTrainer, Counters)>> {
    if config.policy.family != musicrl_config::FAMILY_MUSICGEN {
        return Ok(resume(dir, config, device)?.map(|(t, c)| (FamilyTrainer::from_trainer(t), c)));
    }
    let Some((folder, state)) = resume_state(dir, config)? else {
        return Ok(None);
    };
    let read = |path: PathBuf| std::fs::read(&path).map_err(|e| ck_err(&path, e));
    let parameters = read(folder.join("policy.bpk"))?;
    let optimizer = read(folder.join("optimizer.bpk"))?;
    let model = load_musicgen(config)?;
    let trainer = MusicgenTrainer::restore(
        model,
        config.policy.frames,
        config,
        device,
        &parameters,
        optimizer,
        state.step,
    )
    .map_err(|why| ck_err(&folder, why))?;
    Ok(Some((FamilyTrainer::from_trainer(trainer), state.counters)))
}

/// The newest checkpoint's folder and state, checked against `config`'s policy.
fn resume_state(dir: &Path, config: &Config) -> Result<Option<(PathBuf, State)>> {
    let Some(folder) = resume_point(dir)? else {
        return Ok(None);
    };
    let saved_config_path = folder.join("config.toml");
    let saved = Config::from_file(&saved_config_path).map_err(|e| ck_err(&saved_config_path, e))?;
    if saved.policy != config.policy {
        return Err(ck_err(
            &folder,
            format!(
                "the checkpoint's policy architecture {:?} differs from the configured {:?}; \
                 point learner.checkpoint_dir elsewhere to start a new run",
                saved.policy, config.policy
            ),
        ));
    }
    let state_path = folder.join("state.json");
    let state: State =
        serde_json::from_slice(&std::fs::read(&state_path).map_err(|e| ck_err(&state_path, e))?)
            .map_err(|e| ck_err(&state_path, e))?;
    Ok(Some((folder, state)))
}

/// Restores the trainer from the newest checkpoint in `dir`; `None` if there is none.
/// Fails if the checkpoint's policy architecture differs from `config`'s.
pub fn resume(dir: &Path, config: &Config, device: &Device) -> Result<Option<(Trainer, Counters)>> {
    let Some((folder, state)) = resume_state(dir, config)? else {
        return Ok(None);
    };
    let policy = load_policy(&folder.join("policy.bpk"), &config.policy, device)?;
    let reference = load_policy(&dir.join("reference.bpk"), &config.policy, device)?;
    let opt_path = folder.join("optimizer.bpk");
    let optimizer = std::fs::read(&opt_path).map_err(|e| ck_err(&opt_path, e))?;
    let trainer = Trainer::restore(config, device, policy, reference, optimizer, state.step)?;
    Ok(Some((trainer, state.counters)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use musicrl_common::{PolicyVersion, Trajectory};
    use musicrl_config::PolicyConfig;
    use musicrl_policy::melody::params::{encode_policy, save_policy};

    fn tiny(dir: &Path) -> Config {
        let mut c = Config::default();
        c.policy = PolicyConfig {
            vocab_size: 9,
            max_tokens: 5,
            d_model: 16,
            n_heads: 2,
            n_layers: 1,
            d_ff: 32,
            caption_buckets: 32,
            max_caption_words: 6,
            ..PolicyConfig::default()
        };
        c.learner.checkpoint_dir = dir.to_path_buf();
        c.learner.learning_rate = 0.01;
        c.learner.init_policy = PathBuf::new();
        c
    }

    fn batch(version: u64) -> Vec<Trajectory> {
        (0..4u32)
            .map(|i| Trajectory {
                id: Default::default(),
                learner_run: 0,
                seal: None,
                actor_id: "test".into(),
                policy_version: PolicyVersion(version),
                caption: format!("a tune number {i}"),
                tokens: vec![i, (i + 1) % 9, 2, 8, i],
                behaviour_logprobs: vec![-2.2; 5],
                reward: i as f32 / 3.0,
                components: vec![("c".into(), i as f32)],
                scorer_version: "t".into(),
                component_windows: Vec::new(),
            })
            .collect()
    }

    fn params(t: &Trainer) -> Vec<u8> {
        encode_policy(&t.policy().valid()).expect("encode")
    }

    #[test]
    fn resume_restores_policy_optimizer_and_step_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = tiny(dir.path());
        let device = musicrl_policy::device::training_device();
        let mut original = Trainer::new(&config, &device).expect("trainer");
        original.train_step(&batch(0));
        original.train_step(&batch(1));
        let counters = Counters {
            trajectories_accepted: 8,
            trajectories_rejected: 1,
            trajectories_dropped_stale: 2,
            max_policy_version_seen: 1,
            ..Counters::default()
        };
        save(dir.path(), &original, counters.clone(), &config).expect("save");

        let (mut resumed, restored) = resume(dir.path(), &config, &device)
            .expect("resume")
            .expect("a checkpoint");
        assert_eq!(resumed.step_count(), 2);
        assert_eq!(restored, counters);
        assert_eq!(params(&resumed), params(&original));
        assert_eq!(
            encode_policy(resumed.reference()).expect("encode"),
            encode_policy(original.reference()).expect("encode")
        );

        // The next update is identical only if Adam's moments were restored too.
        original.train_step(&batch(2));
        resumed.train_step(&batch(2));
        assert_eq!(params(&resumed), params(&original));

        // A fresh optimiser on the same parameters takes a different step.
        let mut fresh = Trainer::restore(
            &config,
            &device,
            load_policy(
                &latest(dir.path()).expect("latest").join("policy.bpk"),
                &config.policy,
                &device,
            )
            .expect("load"),
            original.reference().clone(),
            Trainer::new(&config, &device)
                .expect("trainer")
                .optimizer_bytes()
                .expect("bytes"),
            2,
        )
        .expect("restore");
        fresh.train_step(&batch(2));
        assert_ne!(params(&fresh), params(&original));
    }

    #[test]
    fn a_different_architecture_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = tiny(dir.path());
        let device = musicrl_policy::device::training_device();
        let t = Trainer::new(&config, &device).expect("trainer");
        save(dir.path(), &t, Counters::default(), &config).expect("save");
        let mut other = config.clone();
        other.policy.d_model = 32;
        let err = resume(dir.path(), &other, &device).expect_err("refused");
        assert!(err.to_string().contains("architecture"), "{err}");
    }

    fn step_folders(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("step-"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn retention_keeps_the_newest_and_every_pinned_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = tiny(dir.path());
        config.learner.keep_checkpoints = 2;
        let device = musicrl_policy::device::training_device();
        let mut t = Trainer::new(&config, &device).expect("trainer");
        for step in 0..5u64 {
            t.train_step(&batch(step));
            let folder = save(dir.path(), &t, Counters::default(), &config).expect("save");
            if step == 1 {
                pin(&folder, "best held-out score").expect("pin");
            }
        }
        assert_eq!(
            step_folders(dir.path()),
            ["step-00000002", "step-00000004", "step-00000005"],
            "the two newest plus the pinned step 2"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("step-00000002").join(PIN_FILE)).expect("pin"),
            "best held-out score"
        );
        assert!(pin(dir.path(), "not a step folder").is_err());

        // keep_checkpoints = 0 keeps every step folder.
        config.learner.keep_checkpoints = 0;
        for step in 5..8u64 {
            t.train_step(&batch(step));
            save(dir.path(), &t, Counters::default(), &config).expect("save");
        }
        assert_eq!(step_folders(dir.path()).len(), 6);
    }

    #[test]
    fn a_dangling_latest_and_a_corrupted_file_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let device = musicrl_policy::device::training_device();
        let config = tiny(dir.path());
        let mut t = Trainer::new(&config, &device).expect("trainer");
        t.train_step(&batch(0));
        let folder = save(dir.path(), &t, Counters::default(), &config).expect("save");
        assert!(folder.join(MANIFEST).is_file());
        assert!(
            resume(dir.path(), &config, &device)
                .expect("resumes")
                .is_some()
        );

        // The policy overwritten in place with the same number of bytes (a bad disk, a
        // half-finished copy): refused, naming the file.
        let policy = folder.join("policy.bpk");
        let mut bytes = std::fs::read(&policy).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&policy, &bytes).expect("write");
        let e = resume(dir.path(), &config, &device)
            .expect_err("corrupted")
            .to_string();
        assert!(e.contains("policy.bpk") && e.contains("checksum"), "{e}");

        // LATEST naming a folder that is not there: refused, not a fresh run at step 0.
        std::fs::write(dir.path().join("LATEST"), "step-00000099").expect("write");
        let e = resume(dir.path(), &config, &device)
            .expect_err("dangling")
            .to_string();
        assert!(e.contains("LATEST") && e.contains("step-00000099"), "{e}");

        // An incomplete folder: refused, naming what is missing.
        std::fs::write(
            dir.path().join("LATEST"),
            folder.file_name().unwrap().to_str().unwrap(),
        )
        .expect("write");
        std::fs::remove_file(folder.join("optimizer.bpk")).expect("remove");
        let e = resume(dir.path(), &config, &device)
            .expect_err("incomplete")
            .to_string();
        assert!(e.contains("optimizer.bpk is missing"), "{e}");

        // No LATEST at all is a fresh run.
        std::fs::remove_file(dir.path().join("LATEST")).expect("remove");
        assert!(
            resume(dir.path(), &config, &device)
                .expect("fresh")
                .is_none()
        );
    }

    #[test]
    fn the_kl_reference_can_be_another_policy_than_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let device = musicrl_policy::device::training_device();
        let mut config = tiny(&dir.path().join("ck"));
        // Two distinct policies on disk: the start and the anchor.
        let mut t = Trainer::new(&config, &device).expect("trainer");
        let start = dir.path().join("start.bpk");
        save_policy(t.policy(), &start).expect("save");
        for step in 0..3 {
            t.train_step(&batch(step));
        }
        let anchor = dir.path().join("anchor.bpk");
        save_policy(t.policy(), &anchor).expect("save");
        let bytes = |p: &Path| {
            encode_policy(&load_policy(p, &config.policy, &device).expect("load")).expect("encode")
        };
        assert_ne!(bytes(&start), bytes(&anchor));

        config.learner.init_policy = start.clone();
        config.learner.reference_policy = anchor.clone();
        let t = Trainer::new(&config, &device).expect("trainer");
        assert_eq!(
            params(&t),
            bytes(&start),
            "the policy starts at init_policy"
        );
        assert_eq!(
            encode_policy(t.reference()).expect("encode"),
            bytes(&anchor),
            "the KL is measured against reference_policy"
        );
        // The anchor is saved with the run and survives a resume, whatever the config says then.
        save(
            &config.learner.checkpoint_dir,
            &t,
            Counters::default(),
            &config,
        )
        .expect("save");
        let mut later = config.clone();
        later.learner.reference_policy = PathBuf::new();
        let (resumed, _) = resume(&config.learner.checkpoint_dir, &later, &device)
            .expect("resume")
            .expect("a checkpoint");
        assert_eq!(
            encode_policy(resumed.reference()).expect("encode"),
            bytes(&anchor)
        );

        // Without reference_policy the anchor is the start.
        config.learner.reference_policy = PathBuf::new();
        let t = Trainer::new(&config, &device).expect("trainer");
        assert_eq!(encode_policy(t.reference()).expect("encode"), bytes(&start));

        config.learner.reference_policy = dir.path().join("missing.bpk");
        let err = Trainer::new(&config, &device).expect_err("a missing anchor is an error");
        assert!(
            err.to_string().contains("learner.reference_policy"),
            "{err}"
        );
    }
}
