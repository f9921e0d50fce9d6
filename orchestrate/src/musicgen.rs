//! `musicrl policy score|generate` for a MusicGen folder and `musicrl codec decode`: codes in
//! and out as JSON `{"codes": [[…], …]}` (K rows of T frames, undelayed, as the codec takes
//! them), so that anyone can check the numbers against transformers on a model of their own.

use std::path::Path;

use anyhow::Context;
use burn::tensor::Device;
use musicrl_policy::musicgen::rl::Trainable;
use musicrl_policy::musicgen::{MusicGen, SamplingOptions};

/// Reads `{"codes": [[…], …]}`.
pub fn read_codes(file: &Path) -> anyhow::Result<Vec<Vec<u32>>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the codes file {}", file.display()))?;
    #[derive(serde::Deserialize)]
    struct Codes {
        codes: Vec<Vec<u32>>,
    }
    let parsed: Codes = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected {{\"codes\": [[…], …]}} (K rows of T non-negative integer codes)",
            file.display()
        )
    })?;
    Ok(parsed.codes)
}

fn load(folder: &Path, device: &Device) -> anyhow::Result<MusicGen> {
    let started = std::time::Instant::now();
    let model = MusicGen::load(folder, device)
        .with_context(|| format!("cannot load the MusicGen folder {}", folder.display()))?;
    tracing::info!(
        folder = %folder.display(),
        seconds = started.elapsed().as_secs_f64(),
        "MusicGen loaded"
    );
    Ok(model)
}

/// `musicrl policy score --policy DIR --caption TEXT --codes FILE`: prints
/// `{"logprob": [[…], …]}` in the codes' shape.
pub fn score(folder: &Path, caption: &str, codes: &Path, device: &Device) -> anyhow::Result<()> {
    let codes = read_codes(codes)?;
    let model = load(folder, device)?;
    let logprob = model
        .score(caption, &codes)
        .with_context(|| format!("cannot score the codes for {caption:?}"))?;
    println!("{}", serde_json::json!({ "logprob": logprob }));
    Ok(())
}

/// A MusicGen run's trained part from `policy.bpk` (a checkpoint step's, with the
/// `config.toml` beside it naming the folder and `policy.lora`), over the loaded folder.
fn load_trained(
    config: &musicrl_config::Config,
    policy: &Path,
    device: &Device,
) -> anyhow::Result<(MusicGen, Trainable)> {
    let folder = musicrl_config::paths::require("policy.folder", &config.policy.folder)?;
    let model = load(Path::new(&folder), device)?;
    let bytes = std::fs::read(policy)
        .with_context(|| format!("cannot read the policy {}", policy.display()))?;
    let template = Trainable::for_policy(&model, &config.policy.lora, device)?;
    let trained = Trainable::from_bytes(template, &bytes).with_context(|| {
        format!(
            "{} is not a version of {} with policy.lora {:?}",
            policy.display(),
            folder.display(),
            config.policy.lora
        )
    })?;
    Ok((model, trained))
}

/// `musicrl policy score --policy STEP/policy.bpk --caption TEXT --codes FILE` for a
/// MusicGen run: log p of every code under the trained policy as the learner computes it
/// (adapters unmerged), guidance off, temperature 1; `{"logprob": [[…], …]}`.
pub fn score_trained(
    config: &musicrl_config::Config,
    policy: &Path,
    caption: &str,
    codes: &Path,
    device: &Device,
) -> anyhow::Result<()> {
    let codes = read_codes(codes)?;
    let (model, trained) = load_trained(config, policy, device)?;
    model
        .check_codes(&codes)
        .with_context(|| format!("{}: not a clip of this model", policy.display()))?;
    let cond = model.encode(&[caption])?;
    let clips = vec![codes];
    let logits = trained.forward(&model, &cond, &clips)?.logits;
    let logp = burn::tensor::activation::log_softmax(logits, 3);
    let picked = musicrl_policy::musicgen::gather_codes(logp, &clips, device);
    let [_, k, t] = picked.dims();
    let values = musicrl_policy::musicgen::to_vec(picked);
    let logprob: Vec<Vec<f64>> = (0..k)
        .map(|i| {
            values[i * t..(i + 1) * t]
                .iter()
                .map(|&x| f64::from(x))
                .collect()
        })
        .collect();
    println!("{}", serde_json::json!({ "logprob": logprob }));
    Ok(())
}

/// `musicrl policy export --policy STEP/policy.bpk --out DIR` for a MusicGen run: the
/// folder it was trained from with the trained decoder (adapters merged) in place of the
/// source's, loadable by transformers; prints what was written as one JSON line.
pub fn export(
    config: &musicrl_config::Config,
    policy: &Path,
    out: &Path,
    device: &Device,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let (model, trained) = load_trained(config, policy, device)?;
    let lora = &config.policy.lora;
    let metadata = [
        ("musicrl_source", model.folder().display().to_string()),
        ("musicrl_policy", policy.display().to_string()),
        (
            "musicrl_lora",
            if lora.enabled() {
                format!(
                    "rank={} alpha={} targets={} (merged)",
                    lora.rank,
                    lora.alpha,
                    lora.targets.join(",")
                )
            } else {
                "none".into()
            },
        ),
    ];
    let written = musicrl_policy::musicgen::export::write_folder(
        model.folder(),
        &trained.merged_decoder(),
        out,
        &metadata,
    )
    .with_context(|| format!("cannot export {} to {}", policy.display(), out.display()))?;
    println!(
        "{}",
        serde_json::json!({
            "out": out,
            "weights": written.weights,
            "tensors": written.tensors,
            "trained_tensors": written.replaced,
            "copied": written.copied,
            "adapters_merged": lora.enabled(),
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

/// `musicrl policy generate --policy DIR --caption TEXT --frames N --out FILE`.
pub fn generate(
    folder: &Path,
    caption: &str,
    frames: usize,
    options: &SamplingOptions,
    out: &Path,
    device: &Device,
) -> anyhow::Result<()> {
    let model = load(folder, device)?;
    let started = std::time::Instant::now();
    let codes = model
        .generate(&[caption], frames, options)
        .with_context(|| format!("cannot generate for {caption:?}"))?
        .pop()
        .context("one caption gives one clip")?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(
        out,
        serde_json::json!({ "codes": codes }).to_string() + "\n",
    )
    .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "wrote {} ({} codebooks × {frames} frames, {:.1} s)",
        out.display(),
        codes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `musicrl codec decode --codec DIR --codes FILE --out OUT.wav`: writes a 32-bit float WAV
/// at the codec's rate and prints one JSON line saying what was decoded and how fast.
pub fn codec_decode(
    folder: &Path,
    codes: &Path,
    out: &Path,
    device: &Device,
) -> anyhow::Result<()> {
    let codes = read_codes(codes)?;
    let started = std::time::Instant::now();
    let codec = musicrl_policy::encodec::Encodec::load(folder, device)
        .with_context(|| format!("cannot load the codec of {}", folder.display()))?;
    let load_seconds = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let pcm = codec
        .decode(&codes)
        .with_context(|| format!("cannot decode the codes with {}", folder.display()))?;
    let decode_seconds = started.elapsed().as_secs_f64();
    let samples = pcm.channels.first().map_or(0, Vec::len);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let spec = hound::WavSpec {
        channels: pcm.channels.len() as u16,
        sample_rate: pcm.sample_rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut wav = hound::WavWriter::create(out, spec)
        .with_context(|| format!("cannot write {}", out.display()))?;
    for i in 0..samples {
        for channel in &pcm.channels {
            wav.write_sample(channel[i])?;
        }
    }
    wav.finalize()
        .with_context(|| format!("cannot write {}", out.display()))?;
    let seconds = samples as f64 / f64::from(pcm.sample_rate);
    println!(
        "{}",
        serde_json::json!({
            "out": out,
            "codec": codec.version(),
            "sample_rate": pcm.sample_rate,
            "channels": pcm.channels.len(),
            "samples": samples,
            "seconds": seconds,
            "load_seconds": load_seconds,
            "decode_seconds": decode_seconds,
            "realtime_factor": seconds / decode_seconds.max(1e-9),
        })
    );
    eprintln!(
        "wrote {} ({seconds:.2} s at {} Hz) in {decode_seconds:.2} s ({:.1}× real time)",
        out.display(),
        pcm.sample_rate,
        seconds / decode_seconds.max(1e-9)
    );
    Ok(())
}
