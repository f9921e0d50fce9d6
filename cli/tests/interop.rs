//! A trained policy leaves in a format other tools load and comes back unchanged:
//! `musicrl policy export` to safetensors, `musicrl policy import` back to burnpack.

mod common;

use std::process::Command;

use common::{repo, run_to_end};

fn musicrl(args: &[&str]) -> std::process::Output {
    let out = run_to_end(
        Command::new(env!("CARGO_BIN_EXE_musicrl"))
            .args(args)
            .env_remove("MUSICRL_CONFIG"),
    );
    assert!(
        out.status.success(),
        "musicrl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_policy_round_trips_through_safetensors_and_samples_the_same_melodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("theta0.safetensors");
    let back = dir.path().join("back");
    let theta0 = repo("models/base/policy.bpk");
    musicrl(&[
        "policy",
        "export",
        "--policy",
        &theta0,
        "--out",
        file.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&file).expect("the file");
    // A safetensors file: an 8-byte little-endian header length, then a JSON header.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("JSON header");
    assert_eq!(header["__metadata__"]["format"], "musicrl-policy");
    assert_eq!(header["lm_head.weight"]["dtype"], "F32");
    musicrl(&[
        "policy",
        "import",
        file.to_str().unwrap(),
        "--out",
        back.to_str().unwrap(),
    ]);

    // Sampling with the same seed from θ0 and from its round trip gives the same tokens.
    let sample = |policy: &str, out: &str| {
        let out = dir.path().join(out);
        musicrl(&[
            "generate",
            "--policy",
            policy,
            "--caption",
            "a lively reel in G major",
            "--n",
            "2",
            "--seed",
            "5",
            "--out",
            out.to_str().unwrap(),
        ]);
        (0..2)
            .map(|i| {
                std::fs::read_to_string(out.join(format!("caption0-sample{i}.tokens.txt"))).unwrap()
            })
            .collect::<Vec<_>>()
    };
    let imported = back.join("policy.bpk");
    assert_eq!(
        sample(&theta0, "a"),
        sample(imported.to_str().unwrap(), "b")
    );
}
