//! `musicrl bench` on a tiny policy: every workload runs and the JSON report says what it
//! measured (the numbers themselves belong in docs/performance.md, never in a test).

mod common;

use std::process::Command;

use common::{TINY_POLICY, run_to_end};

#[test]
fn bench_runs_every_workload_and_reports_tokens_and_flops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tiny.toml");
    std::fs::write(
        &config,
        format!("{TINY_POLICY}\n[learner]\ninit_policy = \"\"\nbatch_size = 4\n\n[actor]\nbatch_size = 2\n\n[[reward.components]]\nkind = \"token-fraction\"\ntarget_below = 8\n"),
    )
    .expect("write config");
    let json = dir.path().join("bench.json");
    let out = run_to_end(
        Command::new(env!("CARGO_BIN_EXE_musicrl"))
            .arg("--config")
            .arg(&config)
            .args([
                "bench",
                "--iters",
                "1",
                "--tokens",
                "6",
                "--batches",
                "1,3",
                "--workloads",
                "engine,burn,uncached,learner,broadcast,reward",
                "--broadcast-d-model",
                "16",
                "--broadcast-layers",
                "1",
                "--json",
            ])
            .arg(&json)
            .env_remove("MUSICRL_CONFIG"),
    );
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("bench.json")).expect("JSON");
    let kinds: Vec<(String, u64, u64)> = report["measurements"]
        .as_array()
        .expect("measurements")
        .iter()
        .map(|m| {
            assert!(m["tokens_per_second"].as_f64().expect("rate") > 0.0);
            assert!(m["gflops_per_second"].as_f64().expect("flops") > 0.0);
            (
                m["kind"].as_str().expect("kind").to_string(),
                m["batch"].as_u64().expect("batch"),
                m["tokens_per_iteration"].as_u64().expect("tokens"),
            )
        })
        .collect();
    let want: Vec<(String, u64, u64)> = [
        ("engine", 1, 6),
        ("engine", 3, 18),
        ("burn", 2, 12),
        ("uncached", 2, 12),
        ("learner", 4, 24),
    ]
    .iter()
    .map(|(k, b, t)| (k.to_string(), *b, *t))
    .collect();
    assert_eq!(kinds, want);
    let b = &report["broadcast"];
    assert_eq!(b["policy"]["d_model"], 16);
    assert!(b["blob_bytes"].as_u64().expect("bytes") > 0);
    assert!(b["learner_stream_mib_per_second"].as_f64().expect("rate") > 0.0);
    assert!(b["raw_stream_mib_per_second"].as_f64().expect("rate") > 0.0);
    // The compact form of the same version is smaller, and arrived.
    let (f32_bytes, bf16_bytes) = (
        b["blob_bytes"].as_u64().expect("bytes"),
        b["bf16_blob_bytes"].as_u64().expect("bf16 bytes"),
    );
    assert!(
        bf16_bytes > 0 && bf16_bytes < f32_bytes,
        "{bf16_bytes} vs {f32_bytes}"
    );
    assert!(b["bf16_version_seconds"].as_f64().expect("bf16 time") > 0.0);
    // The reward workload: the same clips in process and over gRPC, at each batch.
    let r = &report["reward"];
    assert_eq!(r["components"], serde_json::json!(["token-fraction"]));
    let rows = r["rows"].as_array().expect("reward rows");
    assert_eq!(
        rows.iter()
            .map(|x| x["batch"].as_u64().expect("batch"))
            .collect::<Vec<_>>(),
        [1, 3]
    );
    for row in rows {
        for key in [
            "in_process_samples_per_second",
            "grpc_samples_per_second",
            "grpc_two_clients_samples_per_second",
        ] {
            assert!(row[key].as_f64().expect(key) > 0.0, "{key}: {row}");
        }
        assert!(row["request_bytes"].as_u64().expect("bytes") > 0);
    }

    // A workload that does not exist is refused with the list of those that do.
    let bad = run_to_end(
        Command::new(env!("CARGO_BIN_EXE_musicrl"))
            .arg("--config")
            .arg(&config)
            .args(["bench", "--workloads", "engine,warp"])
            .env_remove("MUSICRL_CONFIG"),
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"warp\" is not one of"));
}

/// The `lora` workload on the tiny MusicGen: a version whole and as adapters, through a real
/// learner, each with its bytes and times.
#[test]
fn the_lora_workload_sends_the_adapters_instead_of_the_decoder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let out = run_to_end(
        Command::new(env!("CARGO_BIN_EXE_musicrl"))
            .args([
                "bench",
                "--iters",
                "1",
                "--workloads",
                "lora",
                "--musicgen",
                "policy/tests/fixtures/musicgen/tiny",
                "--json",
            ])
            .arg(&json)
            .current_dir(common::repo(""))
            .env_remove("MUSICRL_CONFIG"),
    );
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("bench.json")).expect("JSON");
    let rows = report["lora"]["measurements"].as_array().expect("rows");
    let kinds: Vec<&str> = rows
        .iter()
        .map(|r| r["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["full", "lora"]);
    let (full, lora) = (&rows[0], &rows[1]);
    assert_eq!(full["lora"]["rank"], 0);
    assert_eq!(
        lora["lora"]["rank"], 16,
        "rank 16 when the configuration has none"
    );
    let bytes = |r: &serde_json::Value| r["version_bytes"].as_u64().expect("bytes");
    assert!(
        bytes(lora) > 0 && bytes(lora) < bytes(full),
        "{lora} vs {full}"
    );
    assert!(lora["values"].as_u64() < full["values"].as_u64());
    for r in rows {
        for key in [
            "transfer_seconds",
            "apply_seconds",
            "subscribe_to_policy_seconds",
        ] {
            assert!(r[key].as_f64().expect(key) > 0.0, "{key}: {r}");
        }
    }
}
