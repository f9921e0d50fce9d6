//! `musicrl pretrain` then `musicrl generate`, as a user runs them, on a tiny policy.

use std::path::{Path, PathBuf};
use std::process::Command;

const TINY: &str = r#"
[policy]
vocab_size = 64
max_tokens = 32
d_model = 32
n_heads = 2
n_layers = 1
d_ff = 64
caption_buckets = 256
max_caption_words = 16

[pretrain]
epochs = 2
batch_size = 16
learning_rate = 0.01
max_tunes = 96
decode_check_samples = 16
"#;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/corpus/tunes.jsonl.gz")
}

fn musicrl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_musicrl"))
        .args(args)
        .env_remove("MUSICRL_CONFIG")
        .output()
        .expect("musicrl runs")
}

#[test]
fn pretrain_writes_a_policy_that_generate_turns_into_wavs_and_a_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, TINY).expect("write");
    let model = dir.path().join("model");
    let (config_s, model_s, corpus_s) = (
        config.to_str().expect("utf-8"),
        model.to_str().expect("utf-8"),
        corpus(),
    );
    let run = musicrl(&[
        "--config",
        config_s,
        "pretrain",
        "--out",
        model_s,
        "--corpus",
        corpus_s.to_str().expect("utf-8"),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model.join("metrics.json")).expect("metrics.json"),
    )
    .expect("JSON");
    let ppl = metrics["validation_perplexity"].as_f64().expect("ppl");
    let unigram = metrics["unigram_validation_perplexity"]
        .as_f64()
        .expect("unigram");
    assert!(
        ppl.is_finite() && unigram.is_finite() && ppl < unigram,
        "{metrics}"
    );
    assert!(model.join("config.toml").exists());

    let out = dir.path().join("samples");
    let run = musicrl(&[
        "generate",
        "--policy",
        model.join("policy.bpk").to_str().expect("utf-8"),
        "--caption",
        "a lively jig in D major on fiddle",
        "--caption",
        "a slow air on flute",
        "--n",
        "2",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let html = std::fs::read_to_string(out.join("index.html")).expect("index.html");
    assert_eq!(html.matches("<audio controls").count(), 4);
    assert!(html.contains("a lively jig in D major on fiddle") && html.contains("flute"));
    for c in 0..2 {
        for s in 0..2 {
            let wav = out.join(format!("caption{c}-sample{s}.wav"));
            let mut reader = hound::WavReader::open(&wav).expect("a WAV");
            let spec = reader.spec();
            assert_eq!((spec.channels, spec.bits_per_sample), (1, 16));
            assert!(spec.sample_rate >= 16_000);
            let samples: Vec<i16> = reader
                .samples::<i16>()
                .map(|x| x.expect("sample"))
                .collect();
            let peak = samples
                .iter()
                .map(|x| i32::from(*x).abs())
                .max()
                .unwrap_or(0);
            // Not silent unless the model ended at once; never clipped (peak-normalised to 0.8).
            assert!(
                peak <= (0.8 * 32767.0) as i32 + 1,
                "{} clips",
                wav.display()
            );
            assert!(
                out.join(format!("caption{c}-sample{s}.tokens.txt"))
                    .exists()
            );
        }
    }
}
