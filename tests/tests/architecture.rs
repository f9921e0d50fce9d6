//! Architecture invariants that a dependency or a configuration could silently break.

use std::path::Path;

fn manifest(krate: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("Cargo.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `musicrl-*` crates a manifest depends on, in any section.
fn project_dependencies(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().split_once('=').map(|(k, _)| k.trim().to_string()))
        .filter(|k| k.starts_with("musicrl-"))
        .collect()
}

#[test]
fn the_judge_reads_only_the_music_domain_and_no_reward_path_reads_the_judge() {
    // The gold standard shares no code with the proxies it checks…
    assert_eq!(
        project_dependencies(&manifest("judge")),
        vec!["musicrl-music".to_string()]
    );
    assert!(
        !manifest("judge")
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.trim_start().starts_with("burn")),
        "the judge depends on burn"
    );
    // …and nothing that trains or serves rewards can reach it.
    for krate in [
        "rewards",
        "reward-server",
        "learner",
        "actor",
        "common",
        "music",
        "proto",
    ] {
        assert!(
            !project_dependencies(&manifest(krate)).contains(&"musicrl-judge".to_string()),
            "{krate} depends on the judge"
        );
    }
}

#[test]
fn the_policy_crate_is_a_leaf_that_knows_no_role_and_no_network() {
    // The model families sit on floor 2: they depend on no other project crate, and nothing
    // of gRPC (the wire and the roles convert to and from them, never the reverse).
    let text = manifest("policy");
    assert_eq!(project_dependencies(&text), Vec::<String>::new());
    for forbidden in ["tonic", "prost", "tokio", "axum"] {
        assert!(
            !text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .any(|l| l.trim_start().starts_with(forbidden)),
            "the policy crate depends on {forbidden}"
        );
    }
}

#[test]
fn no_reward_component_can_be_the_judge() {
    let component = musicrl_common::config::ComponentConfig {
        kind: "judge".into(),
        ..Default::default()
    };
    let err = musicrl_reward::scorer::build(&component)
        .err()
        .expect("judge is not a reward kind")
        .to_string();
    assert!(err.contains("judge"), "{err}");
}
