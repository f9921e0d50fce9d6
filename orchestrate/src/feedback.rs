//! `musicrl feedback` (serve, bot) and `musicrl preferences import|export|status`.

use std::path::Path;

use anyhow::Context;
use musicrl_config::Config;
use musicrl_feedback::bot::BotClient;
use musicrl_prefdb::{Db, Outcome, VoteFilter};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::plan::{
    BotPlan, FeedbackPlan, PrefsDbPlan, PrefsExportPlan, PrefsFormat, PrefsImportPlan,
};
use crate::process::{shutdown_signal, write_ready};

/// `musicrl feedback`: serves the page and the API until stopped.
pub async fn serve(mut config: Config, args: &FeedbackPlan) -> anyhow::Result<()> {
    args.apply(&mut config);
    config.validate()?;
    let f = &config.feedback;
    let listener = tokio::net::TcpListener::bind(&f.listen)
        .await
        .with_context(|| format!("cannot listen on feedback.listen = {:?}", f.listen))?;
    let metrics_addr = musicrl_telemetry::serve_metrics(&f.metrics_listen)
        .with_context(|| format!("feedback.metrics_listen = {:?}", f.metrics_listen))?;
    eprintln!(
        "loading the pair source ({}) and opening {}",
        f.source,
        musicrl_prefdb::db::redact(&f.db)
    );
    let state = musicrl_feedback::state_from_config(&config).await?;
    let addr = listener.local_addr()?;
    write_ready(&args.process, Some(addr), metrics_addr)?;
    match metrics_addr {
        Some(m) => eprintln!("feedback service on http://{addr}/ (metrics at http://{m}/metrics)"),
        None => eprintln!("feedback service on http://{addr}/ (metrics off)"),
    }
    tracing::info!(%addr, "feedback service listening");
    musicrl_feedback::serve(
        listener,
        state,
        f.max_body_bytes,
        shutdown_signal(args.process.stop_on_stdin_close),
    )
    .await?;
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct BotReport {
    pub votes: usize,
    pub a: usize,
    pub b: usize,
    pub listeners: usize,
    pub first_vote: i64,
    pub last_vote: i64,
}

/// `musicrl feedback bot`: the simulated listeners vote through the API.
pub async fn bot(args: &BotPlan) -> anyhow::Result<BotReport> {
    let population = musicrl_rewards::preference::Population::load(
        &musicrl_config::paths::resolve(&args.population),
    )?;
    let mut client = BotClient::new(&args.url);
    if let Some(file) = &args.token_file {
        let token = std::fs::read_to_string(file)
            .with_context(|| format!("--token-file {}", file.display()))?;
        client = client.with_token(&token);
    }
    // The simulated listeners judge melodies: a service drawing audio-token clips (MusicGen)
    // needs people, so the bot stops before it votes.
    let first = client.pair(0).await.context("the first pair")?;
    if first.a.codebooks.is_some() {
        anyhow::bail!(
            "{} serves audio-token clips (MusicGen): the simulated listeners judge melodies, so \
             their votes on codes would mean nothing; people vote on this service",
            args.url
        );
    }
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut report = BotReport {
        votes: 0,
        a: 0,
        b: 0,
        listeners: population.listeners(),
        first_vote: 0,
        last_vote: 0,
    };
    for i in 0..args.votes {
        let listener = rng.random_range(0..population.listeners());
        let u: f32 = rng.random();
        let (_, outcome, id) = client
            .turn(listener, args.listen_seconds, |view| {
                if u < population.p_a(listener, &view.caption, &view.a.tokens, &view.b.tokens) {
                    Outcome::A
                } else {
                    Outcome::B
                }
            })
            .await
            .with_context(|| format!("vote {} of {}", i + 1, args.votes))?;
        if report.votes == 0 {
            report.first_vote = id;
        }
        report.last_vote = id;
        report.votes += 1;
        match outcome {
            Outcome::A => report.a += 1,
            _ => report.b += 1,
        }
        if (i + 1) % 25 == 0 || i + 1 == args.votes {
            eprintln!("{} of {} votes", i + 1, args.votes);
        }
    }
    Ok(report)
}

fn db_url(config: &Config, args: &PrefsDbPlan) -> String {
    args.db
        .clone()
        .unwrap_or_else(|| config.feedback.db.clone())
}

/// `musicrl preferences import`.
pub async fn import(
    config: &Config,
    args: &PrefsImportPlan,
) -> anyhow::Result<musicrl_prefdb::ImportReport> {
    let format = match args.format {
        Some(f) => f,
        None => import_format(&args.file)?,
    };
    // Read (and validate) the whole file before the database is touched.
    enum Rows {
        Store(Vec<musicrl_prefdb::Choice>),
        Pairs(Vec<musicrl_prefdb::RlhfPair>),
    }
    let rows = match format {
        PrefsFormat::Store => Rows::Store(musicrl_prefdb::read_store(&args.file)?),
        PrefsFormat::Rlhf => Rows::Pairs(musicrl_prefdb::read_rlhf(&args.file)?),
        PrefsFormat::Hf => Rows::Pairs(musicrl_prefdb::hf::read_hf(&args.file)?),
    };
    let db = Db::open(&db_url(config, &args.db)).await?;
    let report = match rows {
        Rows::Store(c) => db.import_choices(&c).await?,
        Rows::Pairs(p) => db.import_rlhf(&p).await?,
    };
    db.close().await;
    Ok(report)
}

/// The format of an import read off the input: a folder is a `datasets` folder; a file's
/// first row says whether it is RLHF rows (`prompt`) or a store (`caption`).
fn import_format(path: &Path) -> anyhow::Result<PrefsFormat> {
    if path.is_dir() {
        return Ok(PrefsFormat::Hf);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let Some((n, line)) = text.lines().enumerate().find(|(_, l)| !l.trim().is_empty()) else {
        anyhow::bail!("{} has no rows to import", path.display());
    };
    let row: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("{}:{}: not a JSON object", path.display(), n + 1))?;
    if row.get("prompt").is_some() {
        Ok(PrefsFormat::Rlhf)
    } else if row.get("caption").is_some() {
        Ok(PrefsFormat::Store)
    } else {
        anyhow::bail!(
            "{}:{}: neither an RLHF row (\"prompt\") nor a store row (\"caption\"); pass --format",
            path.display(),
            n + 1
        )
    }
}

/// `musicrl preferences export`.
pub async fn export(config: &Config, args: &PrefsExportPlan) -> anyhow::Result<()> {
    let db = Db::open(&db_url(config, &args.db)).await?;
    let after_vote_id = match &args.after_version {
        Some(v) => Some(
            db.model_version(v)
                .await?
                .with_context(|| format!("the database knows no model version {v:?}"))?
                .last_vote_id,
        ),
        None => None,
    };
    // An export keeps every vote, flagged ones too, with its channel.
    let filter = VoteFilter {
        since_ms: args.since_ms,
        after_vote_id,
        include_flagged: true,
    };
    let (text, n) = match args.format {
        PrefsFormat::Store => {
            let rows = db.export_choices(filter).await?;
            (musicrl_prefdb::jsonl::store_text(&rows), rows.len())
        }
        PrefsFormat::Rlhf => {
            let rows = db.export_rlhf(filter).await?;
            (musicrl_prefdb::jsonl::rlhf_text(&rows), rows.len())
        }
        PrefsFormat::Hf => {
            if args.file == Path::new("-") {
                anyhow::bail!("--format hf writes a folder; name one instead of \"-\"");
            }
            let rows = db.export_rlhf(filter).await?;
            let mut bar: Option<crate::progress::Progress> = None;
            let done = musicrl_prefdb::hf::write_hf(&args.file, &rows, |_, total| {
                bar.get_or_insert_with(|| {
                    crate::progress::Progress::new("rendering clips", total as u64, "clips")
                })
                .inc(1);
            })?;
            if let Some(bar) = bar {
                bar.finish();
            }
            eprintln!(
                "{} votes with their clips' audio in {} ({:.1} MB); load it with datasets.load_dataset({:?})",
                done.rows,
                args.file.join(musicrl_prefdb::hf::DATA).display(),
                done.bytes as f64 / 1e6,
                args.file.display().to_string()
            );
            (String::new(), rows.len())
        }
    };
    let counts = db.vote_counts(filter).await?;
    db.close().await;
    if args.format == PrefsFormat::Hf {
        // Written above.
    } else if args.file == Path::new("-") {
        print!("{text}");
    } else {
        musicrl_config::fsutil::write_atomic(&args.file, text.as_bytes())
            .with_context(|| format!("cannot write {}", args.file.display()))?;
    }
    eprintln!(
        "exported {n} decisive votes ({} ties and {} both-bad votes are kept in the database, not exported as pairs)",
        counts.tie, counts.both_bad
    );
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub db: String,
    pub schema_version: i64,
    pub rows: std::collections::BTreeMap<&'static str, i64>,
    pub votes: musicrl_prefdb::VoteCounts,
    pub model_versions: Vec<String>,
}

/// `musicrl preferences status`.
pub async fn status(config: &Config, args: &PrefsDbPlan) -> anyhow::Result<StatusReport> {
    let url = db_url(config, args);
    let db = Db::open(&url).await?;
    let report = StatusReport {
        db: musicrl_prefdb::db::redact(&url),
        schema_version: db.schema_version().await?,
        rows: db.table_counts().await?,
        votes: db.vote_counts(VoteFilter::default()).await?,
        model_versions: db
            .model_versions()
            .await?
            .into_iter()
            .map(|m| m.id)
            .collect(),
    };
    db.close().await;
    Ok(report)
}
