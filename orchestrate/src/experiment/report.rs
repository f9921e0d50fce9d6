//! `musicrl report`: one HTML page for an experiment (`results.json`) or for one run
//! (`history.jsonl`, and `curve.jsonl` when an experiment evaluated it), with plots drawn by
//! `plotters` ([`super::plot`]), the panel's win-rate table, and side-by-side players for
//! example pairs with their scores. Everything the page shows is read from the folder, so the
//! page can be rebuilt at any time (`musicrl report DIR`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use musicrl_judge::{Panel, PanelConfig, Sample, assess};
use musicrl_music::render;

use super::evaluate::EvalPoint;
use super::plot::{Series, line_chart};
use super::{MeanSd, Results, RunRecord, model_name};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:74em;margin:1.5em auto;padding:0 1em;color:#222}\
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}\
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}\
.charts{display:flex;flex-wrap:wrap;gap:.6em}.charts svg{max-width:100%;height:auto;border:1px solid #eee}\
.pair{display:flex;flex-wrap:wrap;gap:1em;margin:.8em 0;padding:.6em;border:1px solid #ddd;border-radius:6px}\
.clip{flex:1 1 20em}.clip audio{width:100%}.note{color:#555;font-size:.9em}code{font-size:.85em}";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn f3(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "–".into()
    }
}

/// A p-value with two significant digits.
fn p_text(p: f64) -> String {
    if !p.is_finite() {
        "–".into()
    } else if p >= 0.01 {
        format!("{p:.2}")
    } else {
        format!("{p:.1e}")
    }
}

fn pm(MeanSd { mean: m, sd }: MeanSd) -> String {
    if m.is_finite() {
        format!("{m:.2} ± {sd:.2}")
    } else {
        "–".into()
    }
}

/// The win-rate table as plain text (printed at the end of `musicrl experiment`).
pub fn table_text(r: &Results) -> String {
    let mut out = format!(
        "rater panel over {} seed(s): win rate = wins / (wins + losses), mean ± sd over seeds\n{:<10} {:<10} {:>7} {:>7} {:>7} {:>15} {:>12}\n",
        r.seeds.len(),
        "model",
        "against",
        "win%",
        "tie%",
        "loss%",
        "win rate",
        "p<0.05 +/−"
    );
    for row in &r.table {
        let _ = writeln!(
            out,
            "{:<10} {:<10} {:>7.1} {:>7.1} {:>7.1} {:>15} {:>12}",
            row.a,
            row.b,
            row.win_pct,
            row.tie_pct,
            row.loss_pct,
            pm(MeanSd {
                mean: row.win_rate,
                sd: row.win_rate_sd
            }),
            format!("{}/{}", row.significant_wins, row.significant_losses)
        );
    }
    out
}

/// One line per run, coloured by recipe; the legend names each recipe once (its seeds share
/// the colour).
fn by_recipe(
    runs: &[&RunRecord],
    x: impl Fn(&EvalPoint) -> f64,
    y: impl Fn(&EvalPoint) -> f64,
    mark: bool,
) -> Vec<Series> {
    let mut recipes: Vec<&str> = Vec::new();
    runs.iter()
        .map(|r| {
            let first = !recipes.contains(&r.recipe.as_str());
            if first {
                recipes.push(&r.recipe);
            }
            let color = recipes.iter().position(|n| *n == r.recipe);
            let label = if first {
                format!(
                    "{} ({} seeds)",
                    r.recipe,
                    runs.iter().filter(|o| o.recipe == r.recipe).count()
                )
            } else {
                String::new()
            };
            let mut s = Series::new(label, r.curve.iter().map(|p| (x(p), y(p))).collect());
            s.color = color;
            if mark {
                s.mark = r
                    .curve
                    .iter()
                    .find(|p| p.step == r.selection.best_step)
                    .map(|p| (x(p), y(p)));
            }
            s
        })
        .collect()
}

fn curve_series(runs: &[&RunRecord], y: impl Fn(&EvalPoint) -> f64) -> Vec<Series> {
    by_recipe(runs, |p| p.kl, y, true)
}

fn step_series(runs: &[&RunRecord], y: fn(&EvalPoint) -> f64) -> Vec<Series> {
    by_recipe(runs, |p| p.step as f64, y, false)
}

/// Every line of a run's `history.jsonl` (none when it has no history).
fn history(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("history.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `(step, value)` of a numeric field of history lines.
fn field_of(lines: &[serde_json::Value], field: &str) -> Vec<(f64, f64)> {
    lines
        .iter()
        .filter_map(|v| Some((v.get("step")?.as_f64()?, v.get(field)?.as_f64()?)))
        .collect()
}

/// Moving mean over `w` points (training curves are noisy step to step).
fn smooth(points: Vec<(f64, f64)>, w: usize) -> Vec<(f64, f64)> {
    if w <= 1 || points.len() <= w {
        return points;
    }
    (0..points.len())
        .map(|i| {
            let lo = i.saturating_sub(w - 1);
            let ys = &points[lo..=i];
            (
                points[i].0,
                ys.iter().map(|p| p.1).sum::<f64>() / ys.len() as f64,
            )
        })
        .collect()
}

fn history_charts(runs: &[(String, PathBuf)], html: &mut String) -> anyhow::Result<()> {
    let fields = [
        ("reward_mean", "training reward (batch mean)"),
        ("kl", "KL to the reference per token (batch)"),
        ("entropy", "entropy per token"),
        ("policy_loss", "policy loss"),
        ("value_loss", "value loss"),
        ("policy_lag_mean", "policy lag (versions)"),
    ];
    // Each run's history is read once, for every chart.
    let histories: Vec<(&String, Vec<serde_json::Value>)> = runs
        .iter()
        .map(|(name, dir)| (name, history(dir)))
        .collect();
    html.push_str("<div class=\"charts\">\n");
    for (field, title) in fields {
        let series: Vec<Series> = histories
            .iter()
            .map(|(name, lines)| {
                let h = field_of(lines, field);
                let w = (h.len() / 20).max(1);
                Series::new((*name).clone(), smooth(h, w))
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        html.push_str(&line_chart(
            title,
            "learner step",
            field,
            &series,
            (420, 280),
        )?);
        html.push('\n');
    }
    html.push_str("</div>\n");
    Ok(())
}

fn read_samples(path: &Path) -> Vec<Sample> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Renders one clip to `audio/NAME.wav` under `out`, with its melody as `audio/NAME.mid` and
/// `audio/NAME.abc`; returns the relative path of the WAV and the ABC text.
fn render_clip(out: &Path, name: &str, s: &Sample) -> anyhow::Result<(String, String)> {
    // Rendered exactly as the audio reward models heard it (instrument and tempo from the
    // caption, the synthesizer seeded by the tokens).
    let audio =
        musicrl_rewards::clips::sample_audio(&s.caption, &s.tokens, render::DEFAULT_SAMPLE_RATE);
    let rel = format!("audio/{name}.wav");
    let path = out.join(&rel);
    std::fs::create_dir_all(path.parent().expect("audio/ has a parent"))?;
    render::write_wav(&path, &audio, render::DEFAULT_SAMPLE_RATE)?;
    let events = musicrl_music::tokens::decode(&s.tokens).events;
    let (instrument, bpm) = musicrl_music::captions::rendering_for(&s.caption);
    let title = format!("{} / {}", s.model, s.caption);
    std::fs::write(
        path.with_extension("mid"),
        musicrl_music::export::to_midi(&events, bpm, instrument, &title),
    )?;
    let abc = musicrl_music::export::to_abc(&events, &title, None, bpm);
    std::fs::write(path.with_extension("abc"), &abc)?;
    Ok((rel, abc))
}

fn clip_html(
    out: &Path,
    panel: &Panel,
    label: &str,
    file: &str,
    s: &Sample,
) -> anyhow::Result<String> {
    let a = assess(&s.caption, &s.tokens);
    let e = panel.expected(&a);
    let (rel, abc) = render_clip(out, file, s)?;
    let opt = |x: Option<f64>| x.map_or("–".to_string(), f3);
    Ok(format!(
        "<div class=\"clip\"><b>{}</b><br><audio controls preload=\"none\" src=\"{}\"></audio>{}\
         <div class=\"note\"><a href=\"{}\">MIDI</a> · <a href=\"{}\">ABC</a><br>panel (expected, 1–5): overall {}, adherence {}, quality {}, appeal {}<br>\
         measured: key {}, meter {}, well-formed {}, {} tokens{}</div></div>",
        esc(label),
        esc(&rel),
        crate::sheet::score(&abc),
        esc(&rel.replace(".wav", ".mid")),
        esc(&rel.replace(".wav", ".abc")),
        f3(e.overall),
        opt(e.adherence),
        f3(e.quality),
        f3(e.appeal),
        opt(a.adherence.key),
        opt(a.adherence.meter),
        f3(a.well_formed.overall),
        a.length,
        if a.ended {
            ""
        } else {
            ", cut at the token limit"
        }
    ))
}

/// A chart's title, y label and the evaluation measure it plots.
type Axis = (&'static str, &'static str, fn(&EvalPoint) -> f64);

/// One chart per axis, its series built by `series`.
fn push_charts(
    html: &mut String,
    x_label: &str,
    axes: &[Axis],
    series: impl Fn(fn(&EvalPoint) -> f64) -> Vec<Series>,
) -> anyhow::Result<()> {
    for &(title, y, f) in axes {
        html.push_str(&line_chart(title, x_label, y, &series(f), (440, 300))?);
        html.push('\n');
    }
    Ok(())
}

/// Writes `out/report.html` for an experiment, section by section; returns its path.
pub fn write_experiment(out: &Path, r: &Results) -> anyhow::Result<PathBuf> {
    let mut html = experiment_header(r);
    side_by_side_tables(&mut html, r);
    held_out_curves(&mut html, r)?;
    selection_table(&mut html, r);
    training_charts(&mut html, r)?;
    example_pairs(&mut html, out, r)?;
    html.push_str(crate::sheet::RENDER);
    html.push_str("</body></html>\n");
    crate::sheet::write_script(out)?;
    let page = out.join("report.html");
    musicrl_config::fsutil::write_atomic(&page, html.as_bytes())?;
    Ok(page)
}

/// The page's head and the experiment's one-paragraph description.
fn experiment_header(r: &Results) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>musicrl experiment</title><style>{STYLE}</style></head><body>\n\
         <h1>musicrl experiment</h1>\n<p class=\"note\">{} recipe(s) × {} seed(s) ({}), held-out \
         evaluation every {} steps; θ0 <code>{}</code>; {:.0} s in all{}. Every number is the \
         rater panel's (<code>musicrl judge</code>), an independent judge that is never a reward.</p>\n",
        r.plan.recipes.len(),
        r.seeds.len(),
        r.seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        r.plan.eval_every,
        esc(&r.theta0.display().to_string()),
        r.wall_seconds,
        if r.quick {
            " — a --quick run: too short to mean anything"
        } else {
            ""
        }
    )
}

/// Every comparison's win rate (mean ± sd over seeds, and per seed) and the models' mean
/// panel scores.
fn side_by_side_tables(html: &mut String, r: &Results) {
    html.push_str("<h2>Side by side</h2>\n<table><tr><th>model</th><th>against</th><th>win %</th><th>tie %</th><th>loss %</th><th>win rate (mean ± sd)</th><th>per seed: win rate (p)</th></tr>\n");
    for row in &r.table {
        let per: Vec<String> = row
            .runs
            .iter()
            .map(|c| format!("{} (p {})", f3(c.win_rate), p_text(c.p_value)))
            .collect();
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            esc(&row.a),
            esc(&row.b),
            row.win_pct,
            row.tie_pct,
            row.loss_pct,
            pm(MeanSd {
                mean: row.win_rate,
                sd: row.win_rate_sd
            }),
            per.join(", ")
        );
    }
    html.push_str("</table>\n<table><tr><th>model</th><th>overall</th><th>adherence</th><th>quality</th><th>appeal</th><th>key</th><th>meter</th><th>well-formed</th></tr>\n");
    for s in &r.scores {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.recipe),
            pm(s.overall),
            pm(s.adherence),
            pm(s.quality),
            pm(s.appeal),
            pm(s.key),
            pm(s.meter),
            pm(s.well_formed)
        );
    }
    html.push_str("</table>\n<p class=\"note\">Mean panel scores (1–5) and measured key, meter and well-formedness (0–1), mean ± sd over seeds.</p>\n");
}

/// The held-out curves: every recipe's runs against KL to their reference, each reward
/// component, and the measures over steps.
fn held_out_curves(html: &mut String, r: &Results) -> anyhow::Result<()> {
    html.push_str("<h2 id=\"curves\">Held-out curves</h2>\n<p class=\"note\">Each point is one checkpoint evaluated on the held-out prompts; the circled point is the checkpoint chosen. KL is Σ<sub>t</sub> KL(π‖π<sub>ref</sub>) along a clip, averaged over clips, against each run's own reference (RL-RU's is RL-R's chosen checkpoint).</p>\n<div class=\"charts\">\n");
    let all: Vec<&RunRecord> = r.runs.iter().collect();
    let by_kl: [Axis; 4] = [
        ("training reward against KL", "train reward", |p| {
            p.train_reward
        }),
        (
            "panel overall (expected) against KL",
            "overall 1–5",
            |p| p.judge_overall,
        ),
        ("panel adherence against KL", "adherence 1–5", |p| {
            p.judge_adherence
        }),
        ("panel appeal against KL", "appeal 1–5", |p| {
            p.judge_appeal
        }),
    ];
    push_charts(html, "KL to reference", &by_kl, |f| curve_series(&all, f))?;
    let names: Vec<String> = r
        .runs
        .first()
        .map(|x| {
            x.curve
                .first()
                .map(|p| p.components.keys().cloned().collect())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    for name in &names {
        let series = curve_series(&all, |p| {
            p.components.get(name).copied().unwrap_or(f64::NAN)
        });
        html.push_str(&line_chart(
            &format!("reward component {name} against KL"),
            "KL to reference",
            name,
            &series,
            (440, 300),
        )?);
        html.push('\n');
    }
    let by_step: [Axis; 4] = [
        (
            "panel quality (expected) over steps",
            "quality 1–5",
            |p| p.judge_quality,
        ),
        ("distinct note 4-grams across clips", "distinct-4", |p| {
            p.distinct_4
        }),
        (
            "longest run copied from a training tune",
            "notes (mean)",
            |p| p.copy_mean,
        ),
        ("clip length", "tokens", |p| p.mean_length),
    ];
    push_charts(html, "learner step", &by_step, |f| step_series(&all, f))?;
    html.push_str("</div>\n");
    Ok(())
}

/// Checkpoint selection and the over-optimisation rule, run by run.
fn selection_table(html: &mut String, r: &Results) {
    html.push_str("<h2 id=\"selection\">Checkpoint selection</h2>\n<table><tr><th>run</th><th>steps</th><th>start's held-out overall</th><th>chosen step</th><th>its held-out overall</th><th>lead over the runner-up (± s.e.)</th><th>over-optimisation rule</th></tr>\n");
    for run in &r.runs {
        let start = run.curve.first().map_or(f64::NAN, |p| p.judge_overall);
        let below = if run.selection.best_held_out < start {
            " (below the start: no checkpoint of this run beat where it began)"
        } else {
            ""
        };
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
            esc(&model_name(&run.recipe, run.seed)),
            run.steps,
            f3(start),
            run.selection.best_step,
            f3(run.selection.best_held_out),
            below,
            match (
                run.selection.runner_up_step,
                run.selection.margin,
                run.selection.margin_se
            ) {
                (Some(step), Some(m), Some(se)) => format!(
                    "{} ± {} over step {step}{}{}",
                    f3(m),
                    f3(se),
                    if run.selection.close() { ", close" } else { "" },
                    if run.second_draws.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; {} candidates drawn twice and pooled",
                            run.second_draws.len()
                        )
                    }
                ),
                _ => "one candidate".to_string(),
            },
            run.selection
                .fired
                .as_ref()
                .map_or("did not fire".to_string(), |f| esc(&f.reason))
        );
    }
    html.push_str("</table>\n");
}

/// Training: loss parts, entropy, lag, per recipe.
fn training_charts(html: &mut String, r: &Results) -> anyhow::Result<()> {
    html.push_str("<h2 id=\"training\">Training</h2>\n");
    for recipe in &r.plan.recipes {
        let runs: Vec<(String, PathBuf)> = r
            .runs
            .iter()
            .filter(|x| x.recipe == recipe.name)
            .map(|x| (model_name(&x.recipe, x.seed), x.dir.clone()))
            .collect();
        let _ = writeln!(html, "<h3>{}</h3>", esc(&recipe.name));
        history_charts(&runs, html)?;
    }
    Ok(())
}

/// Example pairs: the model most preferred to θ0 against θ0, first seed.
fn example_pairs(html: &mut String, out: &Path, r: &Results) -> anyhow::Result<()> {
    if let (Some(&seed), Some(best)) = (
        r.seeds.first(),
        r.table
            .iter()
            .filter(|row| row.b == musicrl_config::START_THETA0)
            .max_by(|x, y| x.win_rate.total_cmp(&y.win_rate)),
    ) {
        let a_name = model_name(&best.a, seed);
        let b_name = model_name(&best.b, seed);
        let samples_dir = out.join("samples");
        let a = read_samples(&samples_dir.join(format!("{a_name}.jsonl")));
        let b = read_samples(&samples_dir.join(format!("{b_name}.jsonl")));
        let _ = writeln!(
            html,
            "<h2 id=\"examples\">Example pairs</h2>\n<p class=\"note\">{} against {} on the first held-out prompts (seed {seed}), rendered as the audio reward models hear them; every judged clip is in <code>samples/</code>.</p>",
            esc(&best.a),
            esc(&best.b)
        );
        side_by_side(out, html, (&a_name, &a_name, &a), (&b_name, &b_name, &b))?;
    }
    Ok(())
}

/// One model's clips on a page: its label, the prefix of its rendered files, its samples.
type Side<'a> = (&'a str, &'a str, &'a [Sample]);

/// The first four prompts' clips of two models side by side, `left` on the left: a player,
/// sheet music and the panel's scores each, rendered under `out`.
fn side_by_side(
    out: &Path,
    html: &mut String,
    left: Side<'_>,
    right: Side<'_>,
) -> anyhow::Result<()> {
    let panel = Panel::new(PanelConfig::default()).map_err(anyhow::Error::msg)?;
    let mut prompts: Vec<usize> = left.2.iter().map(|s| s.prompt).collect();
    prompts.dedup();
    for p in prompts.into_iter().take(4) {
        let (Some(sl), Some(sr)) = (
            left.2.iter().find(|s| s.prompt == p),
            right.2.iter().find(|s| s.prompt == p),
        ) else {
            continue;
        };
        let _ = writeln!(
            html,
            "<div class=\"pair\"><div style=\"flex-basis:100%\"><b>“{}”</b></div>{}{}</div>",
            esc(&sl.caption),
            clip_html(out, &panel, left.0, &format!("{}-p{p}", left.1), sl)?,
            clip_html(out, &panel, right.0, &format!("{}-p{p}", right.1), sr)?
        );
    }
    Ok(())
}

/// "Did the music get better?": the simulated panel's verdict on the final policy against θ0
/// (`verdict/`), its scores, and the first captions' clips side by side.
fn verdict_section(
    dir: &Path,
    v: &crate::verdict::Verdict,
    html: &mut String,
) -> anyhow::Result<()> {
    use crate::verdict::{AFTER, BEFORE, DIR};
    let _ = writeln!(
        html,
        "<h2 id=\"verdict\">Did the music get better?</h2>\n<p><b>{}</b>.</p>\n\
         <p class=\"note\">The rater panel is <b>simulated</b>: listeners who read the key, meter and \
         form of each melody off its score and rate adherence to the caption, quality and appeal \
         (<code>musicrl judge</code>, docs/judge.md). It is never a reward the run trained on, but it is \
         not people either: the voting app (<code>musicrl feedback</code>) asks people. θ0 is the \
         run's KL reference (<code>{}</code>), the final policy <code>{}</code>; {} held-out captions \
         × {} clips is a small set, so read the p-value; <code>musicrl judge</code> on all 101 test \
         captions, or <code>musicrl experiment</code> over seeds, measures it properly.</p>",
        esc(&v.sentence()),
        esc(&v.before.display().to_string()),
        esc(&v.after.display().to_string()),
        v.prompts,
        v.samples_per_prompt
    );
    let text = std::fs::read_to_string(dir.join(DIR).join("results.json"))?;
    let results: serde_json::Value = serde_json::from_str(&text)?;
    let report: musicrl_judge::Report = serde_json::from_value(results["report"].clone())?;
    html.push_str(
        "<table><tr><th>model</th><th>clips</th><th>panel overall</th><th>adherence</th>\
         <th>quality</th><th>appeal</th><th>key</th><th>meter</th><th>well-formed</th></tr>\n",
    );
    for m in &report.models {
        let label = if m.model == AFTER {
            "final policy"
        } else {
            "θ0"
        };
        let _ = writeln!(
            html,
            "<tr><td>{label}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            m.clips,
            f3(m.overall),
            f3(m.adherence),
            f3(m.quality),
            f3(m.appeal),
            f3(m.measured_key),
            f3(m.measured_meter),
            f3(m.measured_well_formed)
        );
    }
    html.push_str("</table>\n");
    let samples = dir.join(DIR).join("samples");
    let after = read_samples(&samples.join(format!("{AFTER}.jsonl")));
    let before = read_samples(&samples.join(format!("{BEFORE}.jsonl")));
    side_by_side(
        dir,
        html,
        ("θ0", "verdict-before", &before),
        ("final policy", "verdict-after", &after),
    )
}

/// Writes `dir/report.html` for one `musicrl local` run (or an experiment's run folder).
pub fn write_run(dir: &Path) -> anyhow::Result<PathBuf> {
    if !dir.join("history.jsonl").is_file() {
        anyhow::bail!(
            "{} has neither results.json (an experiment) nor history.jsonl (a run)",
            dir.display()
        );
    }
    let name = dir
        .file_name()
        .map_or("run".to_string(), |n| n.to_string_lossy().to_string());
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>musicrl run {n}</title><style>{STYLE}</style></head><body>\n<h1>musicrl run {n}</h1>\n",
        n = esc(&name)
    );
    if let Some(v) = crate::verdict::read(dir) {
        verdict_section(dir, &v, &mut html)?;
    }
    let curve: Vec<EvalPoint> = std::fs::read_to_string(dir.join("curve.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if !curve.is_empty() {
        html.push_str("<h2>Held-out curves</h2>\n<div class=\"charts\">\n");
        type Axis = (&'static str, fn(&EvalPoint) -> f64);
        let axes: [Axis; 4] = [
            ("training reward", |p| p.train_reward),
            ("panel overall (expected)", |p| p.judge_overall),
            ("panel adherence", |p| p.judge_adherence),
            ("panel appeal", |p| p.judge_appeal),
        ];
        for (title, f) in axes {
            let s = Series::new(name.clone(), curve.iter().map(|p| (p.kl, f(p))).collect());
            html.push_str(&line_chart(
                &format!("{title} against KL"),
                "KL to reference",
                title,
                &[s],
                (440, 300),
            )?);
            html.push('\n');
        }
        html.push_str("</div>\n");
    }
    html.push_str("<h2>Training</h2>\n");
    history_charts(&[(name.clone(), dir.to_path_buf())], &mut html)?;
    html.push_str(crate::sheet::RENDER);
    html.push_str("</body></html>\n");
    crate::sheet::write_script(dir)?;
    let page = dir.join("report.html");
    musicrl_config::fsutil::write_atomic(&page, html.as_bytes())?;
    Ok(page)
}

/// `musicrl report DIR`: an experiment's page when DIR has `results.json`, else a run's.
pub fn write(dir: &Path) -> anyhow::Result<PathBuf> {
    let results = dir.join("results.json");
    if results.is_file() {
        let text = std::fs::read_to_string(&results)
            .with_context(|| format!("reading {}", results.display()))?;
        let r: Results = serde_json::from_str(&text).with_context(|| {
            format!("{} is not an experiment's results.json", results.display())
        })?;
        return write_experiment(dir, &r);
    }
    write_run(dir)
}
