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
    // …and nothing that trains or serves rewards can reach it: of every workspace member, only
    // the orchestration (which measures with it: checkpoint selection, verdicts, on-policy
    // concordance, never a label to train on), the binary above it and the tests may.
    let measures_with_the_judge = [
        "musicrl-judge",
        "musicrl-orchestrate",
        "musicrl",
        "musicrl-tests",
    ];
    for (name, folder) in members() {
        if measures_with_the_judge.contains(&name.as_str()) {
            continue;
        }
        assert!(
            !project_dependencies(&manifest(&folder)).contains(&"musicrl-judge".to_string()),
            "{name} ({folder}) depends on the judge"
        );
    }
}

/// The lines of a manifest that are not comments.
fn manifest_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim_start)
        .filter(|l| !l.starts_with('#'))
}

fn depends_on(text: &str, krate: &str) -> bool {
    manifest_lines(text).any(|l| {
        l.split_once('=')
            .is_some_and(|(k, _)| k.trim() == krate || k.trim().starts_with(&format!("{krate}.")))
    })
}

#[test]
fn the_configuration_is_a_leaf_of_plain_values() {
    // Every crate reads the configuration, so it must pull in nothing heavy: no other
    // project crate, no tensors, no networking.
    let text = manifest("common/config");
    assert_eq!(project_dependencies(&text), Vec::<String>::new());
    for forbidden in ["burn", "tonic", "prost", "tokio", "axum", "metrics"] {
        assert!(
            !depends_on(&text, forbidden),
            "the configuration depends on {forbidden}"
        );
    }
}

#[test]
fn the_policy_crate_knows_no_role_and_no_network() {
    // The model families sit on floor 2: they read the configuration and nothing else of
    // the project, and nothing of gRPC (the wire and the roles convert to and from them,
    // never the reverse).
    let text = manifest("policy");
    assert_eq!(
        project_dependencies(&text),
        vec!["musicrl-config".to_string()]
    );
    for forbidden in ["tonic", "prost", "tokio", "axum"] {
        assert!(
            !depends_on(&text, forbidden),
            "the policy crate depends on {forbidden}"
        );
    }
}

/// A member's `[dependencies]` keys (not dev-dependencies).
fn normal_dependencies(folder: &str) -> Vec<String> {
    let text: toml::Table = manifest(folder)
        .parse()
        .expect("a member's manifest parses");
    text.get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn below_the_roles_only_the_policy_the_reward_models_and_pretraining_build_tensors() {
    // A family's layout lives in the policy crate; the shared plumbing under the roles (the
    // configuration, the wire and gRPC, telemetry, trackers, the music, the judge, the
    // preference database, the clients and scorers) reaches burn only through it. Below the
    // roles, burn is a direct dependency of exactly these three.
    let above = [
        "musicrl-actor",
        "musicrl-learner",
        "musicrl-reward",
        "musicrl-feedback",
        "musicrl-orchestrate",
        "musicrl",
        "musicrl-tests",
    ];
    let mut direct: Vec<String> = members()
        .into_iter()
        .filter(|(name, _)| !above.contains(&name.as_str()))
        .filter(|(_, folder)| normal_dependencies(folder).iter().any(|d| d == "burn"))
        .map(|(name, _)| name)
        .collect();
    direct.sort();
    assert_eq!(
        direct,
        ["musicrl-policy", "musicrl-pretrain", "musicrl-rewards"],
        "the crates below the roles that depend on burn directly"
    );
}

/// Every `.rs` file under `dir` (relative to the workspace root), with its path.
fn rust_sources(dir: &str) -> Vec<(std::path::PathBuf, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    let mut stack = vec![root.join(dir)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file");
                out.push((path, text));
            }
        }
    }
    assert!(!out.is_empty(), "no Rust sources under {dir}");
    out
}

#[test]
fn only_the_music_crate_reads_tokens_as_music() {
    for krate in [
        "policy",
        "actor",
        "common",
        "common/client",
        "common/config",
    ] {
        assert!(
            !depends_on(&manifest(krate), "musicrl-music"),
            "{krate} depends on the music crate"
        );
    }
    // The learner renders clips for the trackers in `run.rs`, and nowhere else reads music.
    for (path, text) in rust_sources("learner/src") {
        if path.ends_with("run.rs") {
            continue;
        }
        assert!(
            !text.contains("musicrl_music"),
            "{} reads tokens as music",
            path.display()
        );
    }
}

#[test]
fn the_actor_samples_every_family_through_one_interface() {
    // The actor holds a `Box<dyn musicrl_policy::Rollout>` made by `musicrl_policy::rollout`
    // from the version's configuration: no family's module is named in its source.
    for (path, text) in rust_sources("actor/src") {
        for family in ["musicrl_policy::melody", "musicrl_policy::musicgen"] {
            assert!(
                !text.contains(family),
                "{} names {family}: sample through musicrl_policy::Rollout",
                path.display()
            );
        }
    }
}

/// The folders of the project's own Rust sources (vendored crates aside).
const SOURCE_FOLDERS: &[&str] = &[
    "proto",
    "common",
    "policy",
    "music",
    "judge",
    "prefdb",
    "feedback",
    "rewards",
    "actor",
    "learner",
    "pretrain",
    "reward-server",
    "orchestrate",
    "cli",
    "tests",
];

#[test]
fn every_source_file_opens_with_what_it_is() {
    // A tidy check: the first line of every project source file (vendored crates aside) is
    // a `//!` line saying what the file is.
    for folder in members().values() {
        assert!(
            SOURCE_FOLDERS
                .iter()
                .any(|f| folder == f || folder.starts_with(&format!("{f}/"))),
            "the member {folder} is in no SOURCE_FOLDERS entry"
        );
    }
    let mut missing = Vec::new();
    for dir in SOURCE_FOLDERS {
        for (path, text) in rust_sources(dir) {
            if path.components().any(|c| c.as_os_str() == "target") {
                continue;
            }
            if !text.starts_with("//!") {
                missing.push(path.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a `//!` first line: {missing:#?}"
    );
}

/// A member's direct project dependencies from its manifest's `[dependencies]` table.
fn normal_project_dependencies(folder: &str) -> Vec<String> {
    let text: toml::Table = manifest(folder)
        .parse()
        .expect("a member's manifest parses");
    text.get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| {
            d.keys()
                .filter(|k| k.starts_with("musicrl-"))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn roles_never_import_roles() {
    // The actor, the learner, the reward server and the feedback service are siblings: what
    // two of them share lives in a library below them (the parameter follower in
    // `musicrl-client`, the in-process reward model in `musicrl-scoring`). Only the
    // orchestration (`musicrl-orchestrate`), the binary and the tests depend on roles.
    let roles = [
        ("actor", "musicrl-actor"),
        ("learner", "musicrl-learner"),
        ("reward-server", "musicrl-reward"),
        ("feedback", "musicrl-feedback"),
    ];
    for (folder, _) in roles {
        let deps = normal_project_dependencies(folder);
        for (_, role) in roles {
            assert!(
                !deps.iter().any(|d| d == role),
                "{folder} depends on the role {role}: move what they share into a library crate"
            );
        }
    }
    // The shared libraries sit below every role.
    for library in ["common/client", "common/scoring"] {
        let deps = normal_project_dependencies(library);
        for (_, role) in roles {
            assert!(
                !deps.iter().any(|d| d == role),
                "{library} depends on {role}"
            );
        }
    }
}

/// The workspace's members: package name → folder.
fn members() -> std::collections::BTreeMap<String, String> {
    let root: toml::Table = manifest(".").parse().expect("the root manifest parses");
    root["workspace"]["members"]
        .as_array()
        .expect("workspace.members is a list")
        .iter()
        .map(|m| {
            let folder = m.as_str().expect("a member is a path").to_string();
            let text: toml::Table = manifest(&folder).parse().expect("a manifest parses");
            let name = text["package"]["name"]
                .as_str()
                .expect("a name")
                .to_string();
            (name, folder)
        })
        .collect()
}

#[test]
fn the_trackers_and_telemetry_are_leaves_without_grpc() {
    // TensorBoard files, the MLflow client, logging and metrics need no project crate, no
    // gRPC and no tensors: anything that runs may log to them.
    for krate in ["common/tracking", "common/telemetry"] {
        let text = manifest(krate);
        assert!(
            normal_project_dependencies(krate).is_empty(),
            "{krate} depends on a project crate"
        );
        for forbidden in ["tonic", "burn", "musicrl-proto"] {
            assert!(
                !depends_on(&text, forbidden),
                "{krate} depends on {forbidden}"
            );
        }
    }
}

#[test]
fn the_binary_is_a_thin_layer_of_flag_parsing() {
    // Orchestration lives in `musicrl-orchestrate`; the binary parses flags into its plans
    // and dispatches. A binary that grows past this has taken orchestration back.
    const MOST_LINES: usize = 1_500;
    let lines: usize = rust_sources("cli/src")
        .iter()
        .map(|(_, text)| text.lines().count())
        .sum();
    assert!(
        lines <= MOST_LINES,
        "cli/src has {lines} lines (at most {MOST_LINES}): move orchestration into orchestrate/"
    );
    assert!(
        normal_project_dependencies("cli")
            .iter()
            .any(|d| d == "musicrl-orchestrate"),
        "the binary dispatches to musicrl-orchestrate"
    );
}

#[test]
fn the_reward_models_build_without_grpc() {
    // `musicrl-rewards` trains and runs the reward models; neither it nor any project crate
    // it builds on depends on tonic or the protobufs (the reward server and
    // `musicrl-scoring` wrap the models for gRPC).
    let members = members();
    let mut seen = Vec::new();
    let mut todo = vec!["rewards".to_string()];
    while let Some(folder) = todo.pop() {
        if seen.contains(&folder) {
            continue;
        }
        let text = manifest(&folder);
        for networking in ["tonic", "tonic-prost", "prost", "musicrl-proto"] {
            assert!(
                !depends_on(&text, networking),
                "{folder}, below the reward models, depends on {networking}"
            );
        }
        todo.extend(
            normal_project_dependencies(&folder)
                .iter()
                .map(|d| members[d].clone()),
        );
        seen.push(folder);
    }
    assert!(seen.len() > 3, "walked {seen:?}");
}

#[test]
fn only_wire_converts_protobuf_types() {
    // A tidy check of the invariant: conversions between generated protobuf types and domain
    // types (`*_to_wire` / `*_from_wire` functions, `From` impls on `pb::` types) are
    // defined in `common/src/wire.rs` and nowhere else. Handlers still build their own
    // response messages from scalars; every domain value crosses through `wire`.
    let mut found = Vec::new();
    for dir in SOURCE_FOLDERS
        .iter()
        .filter(|d| !matches!(**d, "proto" | "tests"))
    {
        for (path, text) in rust_sources(dir) {
            if path.ends_with("common/src/wire.rs") {
                continue;
            }
            for (n, line) in text.lines().enumerate() {
                let l = line.trim_start();
                let defines_conversion =
                    l.contains("fn ") && (l.contains("_to_wire(") || l.contains("_from_wire("));
                let implements_conversion = l.starts_with("impl")
                    && (l.contains("pb::") || l.contains("musicrl_proto::"))
                    && l.contains("From<");
                if defines_conversion || implements_conversion {
                    found.push(format!("{}:{}: {l}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "protobuf conversions outside wire.rs: {found:#?}"
    );
}

#[test]
fn no_reward_component_can_be_the_judge() {
    // The factory knows the rule-based components (a kind it builds without any file)…
    for kind in ["attributes", "form", "token-fraction"] {
        let component = musicrl_config::ComponentConfig {
            kind: kind.into(),
            ..Default::default()
        };
        assert!(
            musicrl_reward::scorer::build(&component).is_ok(),
            "{kind} is a reward kind"
        );
    }
    // …and refuses `judge` as an unknown kind, not for a missing file.
    let component = musicrl_config::ComponentConfig {
        kind: "judge".into(),
        ..Default::default()
    };
    match musicrl_reward::scorer::build(&component) {
        Err(musicrl_reward::RewardError::UnknownScorer(kind)) => assert_eq!(kind, "judge"),
        Err(other) => panic!("judge refused for another reason: {other}"),
        Ok(_) => panic!("judge built as a reward component"),
    }
}

/// The workspace's crates (short names, without `musicrl-`), each with its direct project
/// dependencies from `[dependencies]` (not dev-dependencies) and its floor: 1 for a crate
/// that depends on no other project crate, otherwise one above its highest dependency.
struct CrateGraph {
    deps: std::collections::BTreeMap<String, Vec<String>>,
    floors: std::collections::BTreeMap<String, usize>,
}

fn crate_graph() -> CrateGraph {
    use std::collections::BTreeMap;
    let short = |n: &str| n.trim_start_matches("musicrl-").to_string();
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, folder) in members() {
        let mut project: Vec<String> = normal_project_dependencies(&folder)
            .iter()
            .map(|d| short(d))
            .collect();
        project.sort();
        deps.insert(short(&name), project);
    }
    fn floor(name: &str, deps: &BTreeMap<String, Vec<String>>, seen: &mut Vec<String>) -> usize {
        assert!(
            !seen.iter().any(|s| s == name),
            "a dependency cycle through {name}"
        );
        seen.push(name.to_string());
        let f = 1 + deps[name]
            .iter()
            .map(|d| floor(d, deps, seen))
            .max()
            .unwrap_or(0);
        seen.pop();
        f
    }
    let floors = deps
        .keys()
        .map(|n| (n.clone(), floor(n, &deps, &mut Vec::new())))
        .collect();
    CrateGraph { deps, floors }
}

/// The floors as ARCHITECTURE.md shows them.
fn crate_floors() -> String {
    let g = crate_graph();
    let mut rows: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    for (name, direct) in &g.deps {
        let entry = if direct.is_empty() {
            name.clone()
        } else {
            format!("{name} ← {}", direct.join(", "))
        };
        rows.entry(g.floors[name]).or_default().push(entry);
    }
    rows.iter()
        .map(|(f, crates)| format!("floor {f}: {}\n", crates.join(" · ")))
        .collect()
}

/// The crate graph as an SVG picture (`docs/img/crates.svg`): one row a floor, the top floor
/// first; an arrow from each crate to each dependency that no other of its dependencies
/// already leads to (the transitive reduction, so the picture stays readable).
fn crate_graph_svg() -> String {
    use std::fmt::Write as _;
    let g = crate_graph();
    let top = g.floors.values().copied().max().unwrap_or(1);
    let mut rows: std::collections::BTreeMap<usize, Vec<&String>> = Default::default();
    for (name, f) in &g.floors {
        rows.entry(*f).or_default().push(name);
    }
    let widest = rows.values().map(Vec::len).max().unwrap_or(1);
    let (box_w, box_h, gap_x, gap_y, margin) = (104usize, 30usize, 24usize, 62usize, 20usize);
    let width = 2 * margin + widest * box_w + (widest - 1) * gap_x;
    let height = 2 * margin + top * box_h + (top - 1) * gap_y;
    let mut at: std::collections::BTreeMap<&String, (usize, usize)> = Default::default();
    for (f, names) in &rows {
        let row_w = names.len() * box_w + (names.len() - 1) * gap_x;
        let x0 = (width - row_w) / 2;
        let y = margin + (top - f) * (box_h + gap_y);
        for (i, n) in names.iter().enumerate() {
            at.insert(n, (x0 + i * (box_w + gap_x), y));
        }
    }
    fn reaches(
        from: &str,
        to: &str,
        deps: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> bool {
        deps[from].iter().any(|d| d == to || reaches(d, to, deps))
    }
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <!-- generated by tests/tests/architecture.rs from the workspace manifests -->\n\
         <defs><marker id=\"a\" viewBox=\"0 0 8 8\" refX=\"8\" refY=\"4\" markerWidth=\"7\" \
         markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L8,4 L0,8 z\" fill=\"#777\"/></marker></defs>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    // Each crate's arrows in a colour of its own, so an arrow that passes behind a box is
    // still traced to the crate it leaves.
    let palette = [
        "#c0392b", "#2471a3", "#229954", "#b9770e", "#7d3c98", "#138d75", "#a04000", "#2e4053",
    ];
    for (i, (name, direct)) in g.deps.iter().enumerate() {
        let (x, y) = at[name];
        let colour = palette[i % palette.len()];
        for d in direct {
            let implied = direct.iter().any(|o| o != d && reaches(o, d, &g.deps));
            if implied {
                continue;
            }
            let (dx, dy) = at[d];
            let _ = writeln!(
                svg,
                "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{dy}\" stroke=\"{colour}\" \
                 stroke-opacity=\"0.75\" marker-end=\"url(#a)\"/>",
                x + box_w / 2,
                y + box_h,
                dx + box_w / 2
            );
        }
    }
    for (f, names) in &rows {
        for n in names {
            let (x, y) = at[n];
            let fill = if *f == 1 { "#eef5ee" } else { "#eef2fa" };
            let _ = writeln!(
                svg,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{box_w}\" height=\"{box_h}\" rx=\"5\" \
                 fill=\"{fill}\" stroke=\"#446\"/><text x=\"{}\" y=\"{}\" \
                 text-anchor=\"middle\">{n}</text>",
                x + box_w / 2,
                y + box_h / 2 + 5
            );
        }
    }
    for f in 1..=top {
        let y = margin + (top - f) * (box_h + gap_y) + box_h / 2 + 5;
        let _ = writeln!(
            svg,
            "<text x=\"4\" y=\"{y}\" fill=\"#888\" font-size=\"11\">{f}</text>"
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[test]
fn the_crate_graph_picture_is_the_manifests() {
    // docs/img/crates.svg is generated from the manifests, never drawn by hand:
    // `UPDATE_CRATE_GRAPH=1 cargo test --test architecture` rewrites it.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/img/crates.svg");
    let expected = crate_graph_svg();
    if std::env::var_os("UPDATE_CRATE_GRAPH").is_some() {
        std::fs::write(&path, &expected).expect("docs/img/crates.svg is writable");
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == expected,
        "docs/img/crates.svg is not the manifests' crate graph: \
         run `UPDATE_CRATE_GRAPH=1 cargo test --workspace --test architecture`"
    );
}

#[test]
fn the_crate_graph_in_architecture_md_is_the_manifests() {
    // The picture is generated, never drawn: a moved boundary that is not in the document
    // fails here, and the message is the block to paste.
    let expected = crate_floors();
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md");
    let start = "<!-- crate-floors: generated by tests/tests/architecture.rs -->\n```text\n";
    let block = doc
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block.to_string())
        .unwrap_or_default();
    assert_eq!(
        block, expected,
        "ARCHITECTURE.md's crate floors are out of date; the manifests say:\n{expected}"
    );
}
