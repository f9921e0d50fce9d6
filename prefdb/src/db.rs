//! The preference database: one API over SQLite (the embedded default, one file) and
//! PostgreSQL (a cluster), chosen by the URL. Every query is written once, in the SQL both
//! speak, with `$N` parameters; aggregates are cast to the column types so both backends
//! return the same Rust types.
//!
//! This module never decides policy (what a pair is, when a vote counts): the feedback
//! service does; it stores and reads what it is given, and enforces only what the schema
//! promises (one vote a pair, known outcomes, existing references).

use std::collections::BTreeMap;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::error::{Error, Result, query};
use crate::jsonl::{Choice, RlhfPair, clip_text, validate_clip};
use crate::schema::{self, Dialect, MIGRATIONS};

/// What a listener said of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The clip shown as A is better.
    A,
    /// The clip shown as B is better.
    B,
    /// Equally good.
    Tie,
    /// Neither is acceptable.
    BothBad,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::A => "a",
            Outcome::B => "b",
            Outcome::Tie => "tie",
            Outcome::BothBad => "both_bad",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "a" => Outcome::A,
            "b" => Outcome::B,
            "tie" => Outcome::Tie,
            "both_bad" => Outcome::BothBad,
            _ => return None,
        })
    }
}

/// A clip to store: a melody or an audio-token clip of a caption, and where it came from.
#[derive(Debug, Clone)]
pub struct NewClip<'a> {
    pub caption: &'a str,
    pub tokens: &'a [u32],
    /// Audio tokens: the codebooks `tokens` holds, row after row (`None`: a melody).
    pub codebooks: Option<usize>,
    /// A policy version (`policy-v12`), a checkpoint name, or `import`.
    pub source: &'a str,
    pub policy_version: Option<i64>,
    pub seed: Option<i64>,
    /// Reward-model scores by name (`text`, `quality`, `preference`, …).
    pub scores: BTreeMap<String, f64>,
}

/// A stored clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    pub id: String,
    pub prompt_id: String,
    pub caption: String,
    pub tokens: Vec<u32>,
    /// Audio tokens: the codebooks `tokens` holds, row after row (`None`: a melody).
    pub codebooks: Option<usize>,
    pub source: String,
    pub policy_version: Option<i64>,
    pub seed: Option<i64>,
    pub scores: BTreeMap<String, f64>,
    pub created_at_ms: i64,
}

/// A pair of clips of one caption, as served to one rater (A on the left).
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub id: String,
    pub prompt_id: String,
    pub caption: String,
    pub clip_a: String,
    pub clip_b: String,
    pub rater_id: Option<String>,
    pub served_at_ms: i64,
    pub expires_at_ms: i64,
}

/// A vote to store.
#[derive(Debug, Clone)]
pub struct NewVote<'a> {
    pub pair_id: &'a str,
    pub rater_id: &'a str,
    pub outcome: Outcome,
    pub comment: Option<&'a str>,
    /// `web`, `bot` or `import`.
    pub channel: &'a str,
    pub at_ms: i64,
}

/// Which votes an export or a retraining reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct VoteFilter {
    /// Only votes cast at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only votes with an id above this one (the `last_vote_id` of a model version).
    pub after_vote_id: Option<i64>,
    /// Also the votes the feedback service flagged as stuffing (channel [`FLAGGED`]);
    /// training leaves them out by default.
    pub include_flagged: bool,
}

/// The channel of a vote the feedback service stored but flagged: part of a burst of
/// same-side votes from one client address (`feedback.flag_same_side_run`). Exported with
/// the rest, never trained on unless asked (`VoteFilter::include_flagged`).
pub const FLAGGED: &str = "flagged";

/// A decisive vote with both clips, in vote order.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisiveVote {
    pub vote_id: i64,
    pub caption: String,
    pub a: Clip,
    pub b: Clip,
    /// True when A won.
    pub a_won: bool,
    pub rater_id: String,
    pub comment: Option<String>,
    pub created_at_ms: i64,
    /// How the vote arrived: `web`, `bot`, `import`, … (`votes.channel`).
    pub channel: String,
}

/// A reward-model version the database knows (trained on its votes or registered).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersion {
    pub id: String,
    pub kind: String,
    pub path: String,
    pub parent: Option<String>,
    pub votes_used: i64,
    /// The newest vote the model saw; "votes after this version" means ids above it.
    pub last_vote_id: i64,
    pub metrics: serde_json::Value,
    pub created_at_ms: i64,
}

/// One vote of an import file, in either format, with the line it came from.
#[derive(Debug)]
struct Imported<'a> {
    line: String,
    caption: &'a str,
    /// (tokens, source) of the clips shown as A and B.
    a: (&'a [u32], &'a str),
    b: (&'a [u32], &'a str),
    /// Audio tokens: both clips' codebooks.
    codebooks: Option<usize>,
    rater: &'a str,
    outcome: Outcome,
    comment: Option<&'a str>,
    at_ms: i64,
    /// The channel the vote first arrived by, kept through an export and import.
    channel: &'a str,
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    pub inserted: usize,
    /// Rows already in the database (an import is idempotent).
    pub already_present: usize,
}

/// Vote counts by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VoteCounts {
    pub a: i64,
    pub b: i64,
    pub tie: i64,
    pub both_bad: i64,
}

impl VoteCounts {
    pub fn total(&self) -> i64 {
        self.a + self.b + self.tie + self.both_bad
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A short stable id: the first 24 hex digits of blake3 over the parts.
fn stable_id(parts: &[&str]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().to_hex().as_str()[..24].to_string()
}

/// A fresh random id (24 hex digits, 96 bits).
pub fn random_id() -> String {
    let bits: u128 = rand::random();
    format!("{:024x}", bits >> 32)
}

/// The id of a prompt (stable: the same caption always has the same id).
pub fn prompt_id(caption: &str) -> String {
    stable_id(&["prompt", caption])
}

/// The id of a clip (stable over caption, tokens, source and seed).
pub fn clip_id(caption: &str, tokens: &[u32], source: &str, seed: Option<i64>) -> String {
    let tokens = tokens_text(tokens);
    let seed = seed.map(|s| s.to_string()).unwrap_or_default();
    stable_id(&["clip", caption, &tokens, source, &seed])
}

/// Whether `s` has the shape of an id this module makes (24 lowercase hex digits).
pub fn is_id(s: &str) -> bool {
    s.len() == 24
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn tokens_text(tokens: &[u32]) -> String {
    serde_json::to_string(tokens).expect("token ids serialise")
}

fn parse_tokens(text: &str, at: &str) -> Result<Vec<u32>> {
    serde_json::from_str(text).map_err(|e| Error::Data(format!("{at}: tokens: {e}")))
}

/// The dialect a URL names: `sqlite:…` or `postgres://…` / `postgresql://…`.
pub fn dialect_of(url: &str) -> Result<Dialect> {
    if url.starts_with("sqlite:") {
        Ok(Dialect::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Dialect::Postgres)
    } else {
        Err(Error::Open {
            url: redact(url),
            message: "expected sqlite:PATH or postgres://USER@HOST/DB".into(),
        })
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}://{}:***@{}",
                    &url[..scheme],
                    &userinfo[..colon],
                    &url[at + 1..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The preference database.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
    /// A SQLite file's path and identity when opened: a file deleted or replaced under a
    /// running server is noticed by [`Db::probe_write`] (SQLite itself would go on writing
    /// to the deleted file, and every vote would be lost).
    file: Option<(std::path::PathBuf, FileId)>,
}

/// What identifies a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

fn file_id(path: &std::path::Path) -> std::io::Result<FileId> {
    let m = std::fs::metadata(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        Ok(FileId { dev: 0, ino: 0 })
    }
}

/// The file a `sqlite:` URL names (None for an in-memory database).
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.contains(":memory:")).then(|| path.into())
}

impl Db {
    /// Opens the database at `url` and migrates it to the newest schema. A SQLite file is
    /// created if missing (`sqlite:prefs.db`, `sqlite::memory:`).
    pub async fn open(url: &str) -> Result<Db> {
        let db = Self::connect(url).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Opens without migrating (to inspect a database).
    pub async fn connect(url: &str) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let dialect = dialect_of(url)?;
        let (url, max) = match dialect {
            // One writer: SQLite serialises writes anyway, and an in-memory database exists
            // per connection.
            Dialect::Sqlite if url.contains('?') || url.contains(":memory:") => {
                (url.to_string(), 1)
            }
            Dialect::Sqlite => (format!("{url}?mode=rwc"), 1),
            Dialect::Postgres => (url.to_string(), 8),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(&url)
            .await
            .map_err(|e| Error::Open {
                url: redact(&url),
                message: e.to_string(),
            })?;
        let file = match dialect {
            Dialect::Sqlite => sqlite_path(&url).and_then(|p| Some((p.clone(), file_id(&p).ok()?))),
            Dialect::Postgres => None,
        };
        let db = Db {
            pool,
            dialect,
            file,
        };
        if dialect == Dialect::Sqlite {
            for pragma in ["PRAGMA foreign_keys = ON", "PRAGMA busy_timeout = 5000"] {
                sqlx::query(pragma)
                    .execute(&db.pool)
                    .await
                    .map_err(query("setting SQLite pragmas"))?;
            }
        }
        Ok(db)
    }

    /// Whether the database takes writes now: a committed write (a row rewritten with its
    /// own value), and for a SQLite file, that the file at its path is still the one opened.
    /// The feedback service runs it at start-up (an unwritable database is an error there)
    /// and on a short cadence behind `/healthz`.
    pub async fn probe_write(&self) -> Result<()> {
        if let Some((path, opened)) = &self.file {
            match file_id(path) {
                Ok(id) if id == *opened => {}
                Ok(_) => {
                    return Err(Error::Data(format!(
                        "the database file {} was replaced since it was opened; restart to use the new one",
                        path.display()
                    )));
                }
                Err(e) => {
                    return Err(Error::Data(format!(
                        "the database file {} is gone ({e}); votes cannot be stored",
                        path.display()
                    )));
                }
            }
        }
        sqlx::query(
            "UPDATE schema_migrations SET applied_at = applied_at
             WHERE version = (SELECT MAX(version) FROM schema_migrations)",
        )
        .execute(&self.pool)
        .await
        .map_err(query("writing (health probe)"))?;
        Ok(())
    }

    /// Closes the pool (waits for connections to return).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Applies every migration not yet applied; returns the versions it applied.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        sqlx::query(schema::CREATE_MIGRATIONS_TABLE)
            .execute(&self.pool)
            .await
            .map_err(query("creating schema_migrations"))?;
        let mut applied = Vec::new();
        for m in MIGRATIONS {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(query("beginning a migration"))?;
            if self.dialect == Dialect::Postgres {
                // Replicas starting together: one migrates, the others wait and then see it.
                sqlx::query("SELECT pg_advisory_xact_lock(7318554417)")
                    .execute(&mut *tx)
                    .await
                    .map_err(query("locking for a migration"))?;
            }
            let done: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations WHERE version = $1")
                    .bind(m.version)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(query("reading schema_migrations"))?;
            if done > 0 {
                continue;
            }
            for stmt in m.statements(self.dialect) {
                sqlx::query(stmt)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| Error::Migration {
                        version: m.version,
                        name: m.name,
                        message: e.to_string(),
                    })?;
            }
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(query("recording a migration"))?;
            tx.commit().await.map_err(query("committing a migration"))?;
            tracing::info!(
                version = m.version,
                name = m.name,
                "preference database migrated"
            );
            applied.push(m.version);
        }
        let found = self.schema_version().await?;
        if found > schema::latest_version() {
            return Err(Error::SchemaTooNew {
                found,
                known: schema::latest_version(),
            });
        }
        Ok(applied)
    }

    /// The newest applied migration (0 for an empty database).
    pub async fn schema_version(&self) -> Result<i64> {
        let exists_sql = match self.dialect {
            Dialect::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            }
            Dialect::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_name = 'schema_migrations' AND table_schema = current_schema()"
            }
        };
        let exists: i64 = sqlx::query_scalar(exists_sql)
            .fetch_one(&self.pool)
            .await
            .map_err(query("looking for schema_migrations"))?;
        if exists == 0 {
            return Ok(0);
        }
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&self.pool)
            .await
            .map_err(query("reading the schema version"))?;
        Ok(v.unwrap_or(0))
    }

    /// Adds a rater if new (`kind`: `web`, `bot`, `import`, …). The id is opaque.
    pub async fn ensure_rater(&self, id: &str, kind: &str, at_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO raters (id, kind, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(kind)
        .bind(at_ms)
        .execute(&self.pool)
        .await
        .map_err(query("adding a rater"))?;
        Ok(())
    }

    /// Adds a prompt if new; returns its id.
    pub async fn put_prompt(&self, caption: &str, at_ms: i64) -> Result<String> {
        let id = prompt_id(caption);
        sqlx::query(
            "INSERT INTO prompts (id, caption, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&id)
        .bind(caption)
        .bind(at_ms)
        .execute(&self.pool)
        .await
        .map_err(query("adding a prompt"))?;
        Ok(id)
    }

    /// Stores a clip (and its prompt) if new; returns its id.
    pub async fn put_clip(&self, clip: &NewClip<'_>, at_ms: i64) -> Result<String> {
        validate_clip(clip.tokens, clip.codebooks, "clip")?;
        if let Some((name, v)) = clip.scores.iter().find(|(_, v)| !v.is_finite()) {
            return Err(Error::Data(format!("clip score {name} is not finite: {v}")));
        }
        let prompt = self.put_prompt(clip.caption, at_ms).await?;
        let id = clip_id(clip.caption, clip.tokens, clip.source, clip.seed);
        sqlx::query(
            "INSERT INTO clips (id, prompt_id, tokens, source, policy_version, seed, scores, created_at, codebooks)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&id)
        .bind(&prompt)
        .bind(tokens_text(clip.tokens))
        .bind(clip.source)
        .bind(clip.policy_version)
        .bind(clip.seed)
        .bind(serde_json::to_string(&clip.scores).expect("scores serialise"))
        .bind(at_ms)
        .bind(clip.codebooks.map(|k| k as i64))
        .execute(&self.pool)
        .await
        .map_err(query("adding a clip"))?;
        Ok(id)
    }

    /// A clip by id.
    pub async fn clip(&self, id: &str) -> Result<Option<Clip>> {
        let row = sqlx::query(
            "SELECT c.id, c.prompt_id, p.caption, c.tokens, c.source, c.policy_version, c.seed,
                    c.scores, c.created_at, c.codebooks
             FROM clips c JOIN prompts p ON p.id = c.prompt_id WHERE c.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query("reading a clip"))?;
        row.map(|r| clip_from_row(&r, "")).transpose()
    }

    /// Serves a new pair of stored clips of one caption to a rater; returns it.
    pub async fn create_pair(
        &self,
        caption: &str,
        clip_a: &str,
        clip_b: &str,
        rater_id: Option<&str>,
        at_ms: i64,
        ttl_ms: i64,
    ) -> Result<Pair> {
        let prompt = self.put_prompt(caption, at_ms).await?;
        let pair = Pair {
            id: random_id(),
            prompt_id: prompt,
            caption: caption.to_string(),
            clip_a: clip_a.to_string(),
            clip_b: clip_b.to_string(),
            rater_id: rater_id.map(str::to_string),
            served_at_ms: at_ms,
            expires_at_ms: at_ms.saturating_add(ttl_ms),
        };
        self.insert_pair(&pair, false).await?;
        Ok(pair)
    }

    async fn insert_pair(&self, pair: &Pair, ignore_existing: bool) -> Result<bool> {
        let sql = if ignore_existing {
            "INSERT INTO pairs (id, prompt_id, clip_a, clip_b, rater_id, served_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING"
        } else {
            "INSERT INTO pairs (id, prompt_id, clip_a, clip_b, rater_id, served_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        };
        let done = sqlx::query(sql)
            .bind(&pair.id)
            .bind(&pair.prompt_id)
            .bind(&pair.clip_a)
            .bind(&pair.clip_b)
            .bind(pair.rater_id.as_deref())
            .bind(pair.served_at_ms)
            .bind(pair.expires_at_ms)
            .execute(&self.pool)
            .await
            .map_err(query("adding a pair"))?;
        Ok(done.rows_affected() > 0)
    }

    /// A pair by id.
    pub async fn pair(&self, id: &str) -> Result<Option<Pair>> {
        let row = sqlx::query(
            "SELECT pr.id, pr.prompt_id, p.caption, pr.clip_a, pr.clip_b, pr.rater_id,
                    pr.served_at, pr.expires_at
             FROM pairs pr JOIN prompts p ON p.id = pr.prompt_id WHERE pr.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query("reading a pair"))?;
        row.map(|r| -> Result<Pair> {
            Ok(Pair {
                id: r.try_get(0).map_err(query("decoding a pair"))?,
                prompt_id: r.try_get(1).map_err(query("decoding a pair"))?,
                caption: r.try_get(2).map_err(query("decoding a pair"))?,
                clip_a: r.try_get(3).map_err(query("decoding a pair"))?,
                clip_b: r.try_get(4).map_err(query("decoding a pair"))?,
                rater_id: r.try_get(5).map_err(query("decoding a pair"))?,
                served_at_ms: r.try_get(6).map_err(query("decoding a pair"))?,
                expires_at_ms: r.try_get(7).map_err(query("decoding a pair"))?,
            })
        })
        .transpose()
    }

    /// Records that a rater listened to one side of a pair for `seconds`.
    pub async fn record_listening(
        &self,
        pair_id: &str,
        side: Outcome,
        seconds: f64,
        at_ms: i64,
    ) -> Result<()> {
        let side = match side {
            Outcome::A | Outcome::B => side.as_str(),
            _ => return Err(Error::Data("a listening side is a or b".into())),
        };
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(Error::Data(format!(
                "listening seconds must be >= 0, not {seconds}"
            )));
        }
        sqlx::query("INSERT INTO listening (pair_id, side, seconds, at) VALUES ($1, $2, $3, $4)")
            .bind(pair_id)
            .bind(side)
            .bind(seconds)
            .bind(at_ms)
            .execute(&self.pool)
            .await
            .map_err(query("recording listening"))?;
        Ok(())
    }

    /// Seconds listened to sides A and B of a pair, in total.
    pub async fn listened(&self, pair_id: &str) -> Result<(f64, f64)> {
        let rows = sqlx::query(
            "SELECT side, CAST(SUM(seconds) AS DOUBLE PRECISION) FROM listening
             WHERE pair_id = $1 GROUP BY side",
        )
        .bind(pair_id)
        .fetch_all(&self.pool)
        .await
        .map_err(query("reading listening"))?;
        let (mut a, mut b) = (0.0, 0.0);
        for r in rows {
            let side: String = r.try_get(0).map_err(query("decoding listening"))?;
            let s: f64 = r.try_get(1).map_err(query("decoding listening"))?;
            if side == "a" {
                a = s;
            } else {
                b = s;
            }
        }
        Ok((a, b))
    }

    /// Stores a vote; [`Error::DuplicateVote`] if the pair already has one.
    pub async fn record_vote(&self, vote: &NewVote<'_>) -> Result<i64> {
        let id: std::result::Result<i64, sqlx::Error> = sqlx::query_scalar(
            "INSERT INTO votes (pair_id, rater_id, outcome, comment, channel, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(vote.pair_id)
        .bind(vote.rater_id)
        .bind(vote.outcome.as_str())
        .bind(vote.comment)
        .bind(vote.channel)
        .bind(vote.at_ms)
        .fetch_one(&self.pool)
        .await;
        match id {
            Ok(id) => Ok(id),
            // One vote a pair: the UNIQUE constraint decides, also between racing votes.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(Error::DuplicateVote(vote.pair_id.to_string()))
            }
            Err(e) => Err(Error::Query {
                what: "adding a vote",
                source: e,
            }),
        }
    }

    /// The outcome of a pair's vote, if it has one.
    pub async fn vote_for_pair(&self, pair_id: &str) -> Result<Option<Outcome>> {
        let o: Option<String> = sqlx::query_scalar("SELECT outcome FROM votes WHERE pair_id = $1")
            .bind(pair_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("reading a vote"))?;
        Ok(o.as_deref().and_then(Outcome::parse))
    }

    /// Votes by outcome.
    /// Votes `rater` cast at or after `since_ms` (the daily cap per rater).
    pub async fn votes_by_rater_since(&self, rater: &str, since_ms: i64) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM votes WHERE rater_id = $1 AND created_at >= $2",
        )
        .bind(rater)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(query("counting a rater's votes"))
    }

    pub async fn vote_counts(&self, filter: VoteFilter) -> Result<VoteCounts> {
        let rows = sqlx::query(
            "SELECT outcome, COUNT(*) FROM votes WHERE created_at >= $1 AND id > $2 GROUP BY outcome",
        )
        .bind(filter.since_ms.unwrap_or(i64::MIN))
        .bind(filter.after_vote_id.unwrap_or(i64::MIN))
        .fetch_all(&self.pool)
        .await
        .map_err(query("counting votes"))?;
        let mut c = VoteCounts::default();
        for r in rows {
            let o: String = r.try_get(0).map_err(query("decoding vote counts"))?;
            let n: i64 = r.try_get(1).map_err(query("decoding vote counts"))?;
            match Outcome::parse(&o) {
                Some(Outcome::A) => c.a = n,
                Some(Outcome::B) => c.b = n,
                Some(Outcome::Tie) => c.tie = n,
                Some(Outcome::BothBad) => c.both_bad = n,
                None => {}
            }
        }
        Ok(c)
    }

    /// The id of the newest vote (0 when there is none).
    pub async fn last_vote_id(&self) -> Result<i64> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM votes")
            .fetch_one(&self.pool)
            .await
            .map_err(query("reading the newest vote"))?;
        Ok(v.unwrap_or(0))
    }

    /// Decisive votes (A or B) with both clips, oldest first.
    pub async fn decisive_votes(&self, filter: VoteFilter) -> Result<Vec<DecisiveVote>> {
        let rows = sqlx::query(
            "SELECT v.id, p.caption, v.outcome, v.rater_id, v.comment, v.created_at,
                    ca.id, ca.prompt_id, ca.tokens, ca.source, ca.policy_version, ca.seed, ca.scores, ca.created_at,
                    cb.id, cb.prompt_id, cb.tokens, cb.source, cb.policy_version, cb.seed, cb.scores, cb.created_at,
                    v.channel, ca.codebooks, cb.codebooks
             FROM votes v
             JOIN pairs pr ON pr.id = v.pair_id
             JOIN prompts p ON p.id = pr.prompt_id
             JOIN clips ca ON ca.id = pr.clip_a
             JOIN clips cb ON cb.id = pr.clip_b
             WHERE v.outcome IN ('a', 'b') AND v.created_at >= $1 AND v.id > $2
               AND (v.channel <> $3 OR $4 = 1)
             ORDER BY v.id",
        )
        .bind(filter.since_ms.unwrap_or(i64::MIN))
        .bind(filter.after_vote_id.unwrap_or(i64::MIN))
        .bind(FLAGGED)
        .bind(i64::from(filter.include_flagged))
        .fetch_all(&self.pool)
        .await
        .map_err(query("reading votes"))?;
        rows.iter()
            .map(|r| {
                let vote_id: i64 = r.try_get(0).map_err(query("decoding a vote"))?;
                let caption: String = r.try_get(1).map_err(query("decoding a vote"))?;
                let outcome: String = r.try_get(2).map_err(query("decoding a vote"))?;
                let clip = |base: usize, codebooks: usize| -> Result<Clip> {
                    let at = format!("vote {vote_id}");
                    let d = |_: sqlx::Error| Error::Data(format!("{at}: a clip column"));
                    Ok(Clip {
                        id: r.try_get(base).map_err(d)?,
                        prompt_id: r.try_get(base + 1).map_err(d)?,
                        caption: caption.clone(),
                        tokens: parse_tokens(&r.try_get::<String, _>(base + 2).map_err(d)?, &at)?,
                        codebooks: codebooks_of(r.try_get(codebooks).map_err(d)?, &at)?,
                        source: r.try_get(base + 3).map_err(d)?,
                        policy_version: r.try_get(base + 4).map_err(d)?,
                        seed: r.try_get(base + 5).map_err(d)?,
                        scores: parse_scores(&r.try_get::<String, _>(base + 6).map_err(d)?, &at)?,
                        created_at_ms: r.try_get(base + 7).map_err(d)?,
                    })
                };
                Ok(DecisiveVote {
                    vote_id,
                    a: clip(6, 23)?,
                    b: clip(14, 24)?,
                    caption: caption.clone(),
                    a_won: outcome == "a",
                    rater_id: r.try_get(3).map_err(query("decoding a vote"))?,
                    comment: r.try_get(4).map_err(query("decoding a vote"))?,
                    created_at_ms: r.try_get(5).map_err(query("decoding a vote"))?,
                    channel: r.try_get(22).map_err(query("decoding a vote"))?,
                })
            })
            .collect()
    }

    /// Decisive votes as musicrl store choices (A/B as shown, `when` in seconds).
    pub async fn export_choices(&self, filter: VoteFilter) -> Result<Vec<Choice>> {
        Ok(self
            .decisive_votes(filter)
            .await?
            .into_iter()
            .map(|v| Choice {
                caption: v.caption,
                a: v.a.tokens,
                codebooks: v.a.codebooks,
                b: v.b.tokens,
                choice: if v.a_won { "a" } else { "b" }.into(),
                who: v.rater_id,
                when: (v.created_at_ms / 1000).max(0) as u64,
            })
            .collect())
    }

    /// Decisive votes as RLHF prompt/chosen/rejected rows.
    pub async fn export_rlhf(&self, filter: VoteFilter) -> Result<Vec<RlhfPair>> {
        Ok(self
            .decisive_votes(filter)
            .await?
            .into_iter()
            .map(|v| {
                let (chosen, rejected) = if v.a_won { (&v.a, &v.b) } else { (&v.b, &v.a) };
                RlhfPair {
                    chosen: clip_text(&v.caption, &chosen.tokens, chosen.codebooks),
                    rejected: clip_text(&v.caption, &rejected.tokens, rejected.codebooks),
                    codebooks: chosen.codebooks,
                    chosen_tokens: chosen.tokens.clone(),
                    rejected_tokens: rejected.tokens.clone(),
                    chosen_source: chosen.source.clone(),
                    rejected_source: rejected.source.clone(),
                    prompt: v.caption.clone(),
                    rater: v.rater_id.clone(),
                    created_at_ms: v.created_at_ms,
                    comment: v.comment.clone(),
                    chosen_was_a: v.a_won,
                    channel: v.channel.clone(),
                }
            })
            .collect())
    }

    /// Imports musicrl store choices. Idempotent: the n-th copy of the same line always
    /// makes the same pair, so importing a file twice adds nothing the second time.
    pub async fn import_choices(&self, choices: &[Choice]) -> Result<ImportReport> {
        let mut rows = Vec::with_capacity(choices.len());
        for (i, c) in choices.iter().enumerate() {
            c.validate(&format!("choice {}", i + 1))?;
            rows.push(Imported {
                line: serde_json::to_string(c).expect("a choice serialises"),
                caption: &c.caption,
                a: (&c.a, "import"),
                b: (&c.b, "import"),
                codebooks: c.codebooks,
                rater: &c.who,
                outcome: if c.choice == "a" {
                    Outcome::A
                } else {
                    Outcome::B
                },
                comment: None,
                at_ms: (c.when as i64).saturating_mul(1000),
                channel: "import",
            });
        }
        self.import_rows("import", &rows).await
    }

    /// Imports RLHF rows (side A is the chosen clip when `chosen_was_a`). Idempotent.
    pub async fn import_rlhf(&self, pairs: &[RlhfPair]) -> Result<ImportReport> {
        fn or_import(s: &str) -> &str {
            if s.is_empty() { "import" } else { s }
        }
        let mut rows = Vec::with_capacity(pairs.len());
        for (i, p) in pairs.iter().enumerate() {
            p.validate(&format!("row {}", i + 1))?;
            let chosen = (&p.chosen_tokens[..], or_import(&p.chosen_source));
            let rejected = (&p.rejected_tokens[..], or_import(&p.rejected_source));
            let (a, b, outcome) = if p.chosen_was_a {
                (chosen, rejected, Outcome::A)
            } else {
                (rejected, chosen, Outcome::B)
            };
            rows.push(Imported {
                line: serde_json::to_string(p).expect("a pair serialises"),
                caption: &p.prompt,
                a,
                b,
                codebooks: p.codebooks,
                rater: or_import(&p.rater),
                outcome,
                comment: p.comment.as_deref(),
                at_ms: p.created_at_ms,
                channel: or_import(&p.channel),
            });
        }
        self.import_rows("import-rlhf", &rows).await
    }

    /// Stores imported votes. The n-th copy of the same line always makes the same pair id, so
    /// a second import of the same rows finds them present.
    async fn import_rows(&self, kind: &str, rows: &[Imported<'_>]) -> Result<ImportReport> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut report = ImportReport::default();
        for r in rows {
            let n = seen.entry(&r.line).or_default();
            *n += 1;
            let pair_id = stable_id(&[kind, &r.line, &n.to_string()]);
            if self.import_one(r, &pair_id).await? {
                report.inserted += 1;
            } else {
                report.already_present += 1;
            }
        }
        Ok(report)
    }

    async fn import_one(&self, r: &Imported<'_>, pair_id: &str) -> Result<bool> {
        self.ensure_rater(r.rater, "import", r.at_ms).await?;
        let clip = |(tokens, source)| NewClip {
            caption: r.caption,
            tokens,
            codebooks: r.codebooks,
            source,
            policy_version: None,
            seed: None,
            scores: BTreeMap::new(),
        };
        let clip_a = self.put_clip(&clip(r.a), r.at_ms).await?;
        let clip_b = self.put_clip(&clip(r.b), r.at_ms).await?;
        let pair = Pair {
            id: pair_id.to_string(),
            prompt_id: prompt_id(r.caption),
            caption: r.caption.to_string(),
            clip_a,
            clip_b,
            rater_id: Some(r.rater.to_string()),
            served_at_ms: r.at_ms,
            expires_at_ms: r.at_ms,
        };
        if !self.insert_pair(&pair, true).await? {
            return Ok(false);
        }
        self.record_vote(&NewVote {
            pair_id,
            rater_id: r.rater,
            outcome: r.outcome,
            comment: r.comment,
            channel: r.channel,
            at_ms: r.at_ms,
        })
        .await?;
        Ok(true)
    }

    /// Records a reward-model version (replacing a row of the same id).
    pub async fn record_model_version(&self, m: &ModelVersion) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query("beginning a model version"))?;
        sqlx::query("DELETE FROM model_versions WHERE id = $1")
            .bind(&m.id)
            .execute(&mut *tx)
            .await
            .map_err(query("replacing a model version"))?;
        sqlx::query(
            "INSERT INTO model_versions (id, kind, path, parent, votes_used, last_vote_id, metrics, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&m.id)
        .bind(&m.kind)
        .bind(&m.path)
        .bind(m.parent.as_deref())
        .bind(m.votes_used)
        .bind(m.last_vote_id)
        .bind(m.metrics.to_string())
        .bind(m.created_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(query("adding a model version"))?;
        tx.commit()
            .await
            .map_err(query("committing a model version"))?;
        Ok(())
    }

    /// A model version by id.
    pub async fn model_version(&self, id: &str) -> Result<Option<ModelVersion>> {
        let rows = self.model_versions_where("WHERE id = $1", Some(id)).await?;
        Ok(rows.into_iter().next())
    }

    /// Every model version, oldest first.
    pub async fn model_versions(&self) -> Result<Vec<ModelVersion>> {
        self.model_versions_where("", None).await
    }

    async fn model_versions_where(
        &self,
        clause: &str,
        id: Option<&str>,
    ) -> Result<Vec<ModelVersion>> {
        let sql = format!(
            "SELECT id, kind, path, parent, votes_used, last_vote_id, metrics, created_at
             FROM model_versions {clause} ORDER BY created_at, id"
        );
        let mut q = sqlx::query(&sql);
        if let Some(id) = id {
            q = q.bind(id);
        }
        let rows = q
            .fetch_all(&self.pool)
            .await
            .map_err(query("reading model versions"))?;
        rows.iter()
            .map(|r| {
                let d = |_: sqlx::Error| Error::Data("a model_versions column".into());
                let metrics: String = r.try_get(6).map_err(d)?;
                Ok(ModelVersion {
                    id: r.try_get(0).map_err(d)?,
                    kind: r.try_get(1).map_err(d)?,
                    path: r.try_get(2).map_err(d)?,
                    parent: r.try_get(3).map_err(d)?,
                    votes_used: r.try_get(4).map_err(d)?,
                    last_vote_id: r.try_get(5).map_err(d)?,
                    metrics: serde_json::from_str(&metrics)
                        .map_err(|e| Error::Data(format!("model version metrics: {e}")))?,
                    created_at_ms: r.try_get(7).map_err(d)?,
                })
            })
            .collect()
    }

    /// Row counts of every table, for `musicrl prefs status`.
    pub async fn table_counts(&self) -> Result<BTreeMap<&'static str, i64>> {
        let mut out = BTreeMap::new();
        for table in [
            "raters",
            "prompts",
            "clips",
            "pairs",
            "listening",
            "votes",
            "model_versions",
        ] {
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&self.pool)
                .await
                .map_err(query("counting rows"))?;
            out.insert(table, n);
        }
        Ok(out)
    }
}

fn parse_scores(text: &str, at: &str) -> Result<BTreeMap<String, f64>> {
    serde_json::from_str(text).map_err(|e| Error::Data(format!("{at}: scores: {e}")))
}

/// The `codebooks` column: NULL for a melody, else a positive count.
fn codebooks_of(value: Option<i64>, at: &str) -> Result<Option<usize>> {
    match value {
        None => Ok(None),
        Some(k) if (1..=64).contains(&k) => Ok(Some(k as usize)),
        Some(k) => Err(Error::Data(format!("{at}: codebooks {k} is not 1 to 64"))),
    }
}

fn clip_from_row(r: &AnyRow, at: &str) -> Result<Clip> {
    let d = |_: sqlx::Error| Error::Data(format!("{at}: a clip column"));
    let id: String = r.try_get(0).map_err(d)?;
    let at = format!("clip {id}");
    Ok(Clip {
        prompt_id: r.try_get(1).map_err(d)?,
        caption: r.try_get(2).map_err(d)?,
        tokens: parse_tokens(&r.try_get::<String, _>(3).map_err(d)?, &at)?,
        codebooks: codebooks_of(r.try_get(9).map_err(d)?, &at)?,
        source: r.try_get(4).map_err(d)?,
        policy_version: r.try_get(5).map_err(d)?,
        seed: r.try_get(6).map_err(d)?,
        scores: parse_scores(&r.try_get::<String, _>(7).map_err(d)?, &at)?,
        created_at_ms: r.try_get(8).map_err(d)?,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_dialect_and_passwords_are_hidden() {
        assert_eq!(dialect_of("sqlite:prefs.db").ok(), Some(Dialect::Sqlite));
        assert_eq!(
            dialect_of("postgresql://u@h/db").ok(),
            Some(Dialect::Postgres)
        );
        let e = dialect_of("mysql://u:secret@h/db").expect_err("not spoken");
        assert!(!e.to_string().contains("secret"), "{e}");
        assert_eq!(
            redact("postgres://app:hunter2@db:5432/prefs"),
            "postgres://app:***@db:5432/prefs"
        );
        assert_eq!(redact("sqlite:x.db"), "sqlite:x.db");
    }

    #[test]
    fn ids_are_stable_and_shaped() {
        let a = clip_id("jig", &[1, 2], "import", None);
        assert_eq!(a, clip_id("jig", &[1, 2], "import", None));
        assert_ne!(a, clip_id("jig", &[1, 2], "import", Some(0)));
        assert_ne!(a, clip_id("jig", &[12], "import", None));
        assert!(is_id(&a) && is_id(&random_id()) && is_id(&prompt_id("x")));
        assert!(!is_id("../../etc/passwd") && !is_id(&a.to_uppercase()));
    }
}
