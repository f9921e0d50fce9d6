//! `musicrl pretrain` and `musicrl generate`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;

use musicrl_config::Config;
use musicrl_music::captions;
use musicrl_music::render;
use musicrl_music::tokens::{self, Event};
use musicrl_policy::melody::params::load_policy;
use musicrl_policy::melody::sampling::Sampler;
use musicrl_pretrain::{self as pretrain, EpochStats, PretrainReport};

use crate::plan::{GeneratePlan, PretrainPlan};
use crate::progress::EpochBar;

struct Bar(EpochBar);

impl pretrain::Progress for Bar {
    fn epoch_started(&mut self, epoch: usize, batches: usize) {
        self.0.epoch_started(epoch, batches);
    }
    fn batch_done(&mut self, loss: f64) {
        self.0.batch_done(loss);
    }
    fn epoch_done(&mut self, s: &EpochStats) {
        self.0.epoch_done();
        eprintln!(
            "epoch {}: train loss {:.4}, validation loss {:.4}, validation perplexity {:.3} ({:.0} s)",
            s.epoch, s.train_loss, s.validation_loss, s.validation_perplexity, s.seconds
        );
    }
}

pub fn pretrain(mut config: Config, args: &PretrainPlan) -> anyhow::Result<PretrainReport> {
    args.apply(&mut config);
    config.validate()?;
    let p = &config.pretrain;
    let tunes = musicrl_music::corpus::load(&p.corpus).with_context(|| {
        format!(
            "cannot read the corpus (pretrain.corpus = {})",
            p.corpus.display()
        )
    })?;
    eprintln!(
        "pretraining a policy (d_model {}, {} layers, {} tokens) on {} tunes for {} epochs into {}",
        config.policy.d_model,
        config.policy.n_layers,
        config.policy.max_tokens,
        tunes.len(),
        p.epochs,
        p.out.display()
    );
    let report = pretrain::pretrain(&config, &tunes, &p.out, &mut Bar(EpochBar::default()))?;
    eprintln!(
        "validation perplexity {:.3} (unigram baseline {:.3}); {:.1}% of {} samples decode without repair; wrote {}",
        report.validation_perplexity,
        report.unigram_validation_perplexity,
        100.0 * report.decode_without_repair,
        report.samples_checked,
        p.out.join("policy.bpk").display()
    );
    Ok(report)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn describe(events: &[Event]) -> String {
    const NAMES: [&str; 12] = [
        "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
    ];
    events
        .iter()
        .map(|e| match *e {
            Event::Bar => "|".to_string(),
            Event::Note {
                pitch: None,
                twelfths,
            } => format!("rest/{twelfths}"),
            Event::Note {
                pitch: Some(p),
                twelfths,
            } => format!(
                "{}{}/{twelfths}",
                NAMES[(p % 12) as usize],
                i32::from(p / 12) - 1
            ),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Takes the policy architecture from the `config.toml` saved beside a policy's weights, when
/// there is one (checkpoints and `models/base/` have it).
fn adopt_saved_architecture(config: &mut Config, policy: &std::path::Path) -> anyhow::Result<()> {
    if let Some(saved) = policy
        .parent()
        .map(|d| d.join("config.toml"))
        .filter(|p| p.exists())
    {
        config.policy = Config::from_file(&saved)?.policy;
    }
    Ok(())
}

pub fn generate(mut config: Config, args: &GeneratePlan) -> anyhow::Result<PathBuf> {
    let policy_path = args
        .policy
        .clone()
        .or_else(|| {
            let base = &config.learner.init_policy;
            (!base.as_os_str().is_empty()).then(|| base.clone())
        })
        .unwrap_or_else(|| config.pretrain.out.join("policy.bpk"));
    // The architecture comes from the config saved beside the weights, when there is one.
    adopt_saved_architecture(&mut config, &policy_path)?;
    config.validate()?;
    let device = musicrl_policy::device::inference_device();
    let policy = load_policy(&policy_path, &config.policy, &device).with_context(|| {
        format!(
            "cannot load the policy {} (run `musicrl pretrain` first, or pass --policy)",
            policy_path.display()
        )
    })?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut sampler = Sampler::new(args.seed, config.sampling.temperature);
    let mut html = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>musicrl samples</title>\n\
         <style>body{font-family:sans-serif;max-width:60em;margin:2em auto}li{margin:.6em 0}\
         code{color:#555;font-size:.8em}</style></head><body>\n<h1>musicrl samples</h1>\n",
    );
    let _ = writeln!(
        html,
        "<p>Policy: <code>{}</code></p>",
        html_escape(&policy_path.display().to_string())
    );
    for (c_idx, caption) in args.caption.iter().enumerate() {
        let (instrument, bpm) = captions::rendering_for(caption);
        let captions = vec![caption.as_str(); args.n];
        let samples = sampler.sample(
            &policy,
            &config.policy,
            &captions,
            config.policy.max_tokens,
            &device,
        );
        let _ = writeln!(
            html,
            "<h2>{}</h2>\n<p>{} at {bpm} quarter notes per minute</p>\n<ol>",
            html_escape(caption),
            instrument.caption_name()
        );
        for (i, s) in samples.iter().enumerate() {
            let decoded = tokens::decode(&s.tokens);
            let audio = render::render(
                &decoded.events,
                bpm,
                instrument,
                render::DEFAULT_SAMPLE_RATE,
                args.seed + i as u64,
            );
            let stem = format!("caption{c_idx}-sample{i}");
            let wav = args.out.join(format!("{stem}.wav"));
            render::write_wav(&wav, &audio, render::DEFAULT_SAMPLE_RATE)?;
            let ids: Vec<String> = s.tokens.iter().map(u32::to_string).collect();
            std::fs::write(
                args.out.join(format!("{stem}.tokens.txt")),
                format!("{}\n{}\n", ids.join(" "), describe(&decoded.events)),
            )?;
            // The melody for other tools: a standard MIDI file and ABC notation.
            let title = format!("{caption} (sample {i})");
            std::fs::write(
                args.out.join(format!("{stem}.mid")),
                musicrl_music::export::to_midi(&decoded.events, bpm, instrument, &title),
            )?;
            let abc = musicrl_music::export::to_abc(&decoded.events, &title, None, bpm);
            std::fs::write(args.out.join(format!("{stem}.abc")), &abc)?;
            let seconds = audio.len() as f32 / render::DEFAULT_SAMPLE_RATE as f32;
            let _ = writeln!(
                html,
                "<li><audio controls src=\"{stem}.wav\"></audio> {seconds:.1} s, {} notes{} \
                 (<a href=\"{stem}.mid\">MIDI</a>, <a href=\"{stem}.abc\">ABC</a>){}<code>{}</code></li>",
                decoded.notes().count(),
                if decoded.repairs > 0 {
                    format!(", {} repairs", decoded.repairs)
                } else {
                    String::new()
                },
                crate::sheet::score(&abc),
                html_escape(&describe(&decoded.events))
            );
            eprintln!(
                "{}: {seconds:.1} s, {} notes, {} repairs",
                wav.display(),
                decoded.notes().count(),
                decoded.repairs
            );
        }
        html.push_str("</ol>\n");
    }
    html.push_str(crate::sheet::RENDER);
    html.push_str("</body></html>\n");
    crate::sheet::write_script(&args.out)?;
    let index = args.out.join("index.html");
    std::fs::write(&index, html)?;
    Ok(index)
}

/// `musicrl policy export|import`.
pub fn policy(mut config: Config, command: &crate::plan::PolicyCommand) -> anyhow::Result<()> {
    use musicrl_policy::melody::safetensors;
    let device = musicrl_policy::device::inference_device();
    match command {
        crate::plan::PolicyCommand::Export { policy, out } => {
            let path = policy
                .clone()
                .unwrap_or_else(|| config.learner.init_policy.clone());
            adopt_saved_architecture(&mut config, &path)?;
            config.validate()?;
            if config.policy.family == musicrl_config::FAMILY_MUSICGEN {
                return crate::musicgen::export(&config, &path, out, &device);
            }
            let p = load_policy(&path, &config.policy, &device)
                .with_context(|| format!("cannot load the policy {}", path.display()))?;
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            safetensors::save(&p, &config.policy, out)?;
            let n = safetensors::named_parameters(&p);
            eprintln!(
                "wrote {} ({} tensors, {} parameters) from {}",
                out.display(),
                n.len(),
                n.iter().map(|t| t.2.len()).sum::<usize>(),
                path.display()
            );
            Ok(())
        }
        crate::plan::PolicyCommand::Score {
            policy,
            caption,
            tokens,
            codes,
        } => {
            let path = policy
                .clone()
                .unwrap_or_else(|| config.learner.init_policy.clone());
            if path.is_file()
                && let Some(codes) = codes.as_deref()
            {
                adopt_saved_architecture(&mut config, &path)?;
                if config.policy.family == musicrl_config::FAMILY_MUSICGEN {
                    config.validate()?;
                    return crate::musicgen::score_trained(&config, &path, caption, codes, &device);
                }
            }
            if path.is_dir() || codes.is_some() {
                let codes = codes.as_deref().ok_or_else(|| {
                    anyhow::anyhow!(
                        "{} is a model folder: give the clip with --codes FILE ({{\"codes\": [[…], …]}})",
                        path.display()
                    )
                })?;
                return crate::musicgen::score(&path, caption, codes, &device);
            }
            let tokens = tokens.as_deref().unwrap_or_default();
            let (p, policy_config) = if path.extension().is_some_and(|e| e == "safetensors") {
                safetensors::load(&path, &device)?
            } else {
                adopt_saved_architecture(&mut config, &path)?;
                let p = load_policy(&path, &config.policy, &device)
                    .with_context(|| format!("cannot load the policy {}", path.display()))?;
                (p, config.policy.clone())
            };
            let ids: Vec<u32> = tokens
                .split_whitespace()
                .map(|t| {
                    t.parse::<u32>()
                        .with_context(|| format!("token {t:?} is not an id"))
                })
                .collect::<anyhow::Result<_>>()?;
            let limits = musicrl_common::wire::TokenLimits::of(&policy_config);
            limits
                .check_tokens(&ids)
                .map_err(|r| anyhow::anyhow!("--tokens: {r}"))?;
            let captions =
                musicrl_policy::melody::caption_batch(&[caption.as_str()], &policy_config, &device);
            let t = ids.len();
            let out = p.forward(
                &captions,
                musicrl_policy::melody::token_tensor(&ids, 1, t, &device),
            );
            let logp = burn::tensor::activation::log_softmax(out.logits, 2);
            let logp = musicrl_policy::melody::to_vec_f32(logp);
            let vocab = policy_config.vocab_size;
            let logprobs: Vec<f32> = ids
                .iter()
                .enumerate()
                .map(|(i, &a)| logp[i * vocab + a as usize])
                .collect();
            let values = musicrl_policy::melody::to_vec_f32(out.values);
            println!(
                "{}",
                serde_json::json!({"caption": caption, "tokens": ids, "logprobs": logprobs, "values": values})
            );
            Ok(())
        }
        crate::plan::PolicyCommand::Generate {
            policy,
            caption,
            frames,
            greedy,
            temperature,
            top_k,
            guidance,
            seed,
            out,
        } => {
            let decoding = if *greedy {
                musicrl_policy::musicgen::Decoding::Greedy
            } else {
                musicrl_policy::musicgen::Decoding::Sample {
                    temperature: *temperature,
                    top_k: *top_k,
                }
            };
            let options = musicrl_policy::musicgen::SamplingOptions {
                decoding,
                guidance: Some(*guidance),
                seed: *seed,
            };
            crate::musicgen::generate(policy, caption, *frames, &options, out, &device)
        }
        crate::plan::PolicyCommand::Import { file, out } => {
            let (p, policy_config) = safetensors::load(file, &device)?;
            std::fs::create_dir_all(out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            musicrl_policy::melody::params::save_policy(&p, &out.join("policy.bpk"))?;
            let saved = Config {
                policy: policy_config,
                ..Config::default()
            };
            musicrl_config::fsutil::write_atomic(
                &out.join("config.toml"),
                saved.to_toml().as_bytes(),
            )?;
            eprintln!(
                "wrote {} and config.toml from {}",
                out.join("policy.bpk").display(),
                file.display()
            );
            Ok(())
        }
    }
}
