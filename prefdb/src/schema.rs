//! The schema, as versioned migrations. Each migration is written once per dialect where the
//! dialects differ (identity columns); everything else is the SQL both SQLite and PostgreSQL
//! speak. A migration is applied in one transaction together with its row in
//! `schema_migrations`, so a database is always at exactly one version; on PostgreSQL an
//! advisory lock serialises replicas that start at the same time.
//!
//! Invariant: migrations are append-only. A released migration is never edited; a change is
//! a new migration with the next version.

/// The SQL dialect of a database URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// One migration: its version, a name, and its statements (`;`-separated, no `;` inside).
#[derive(Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

impl Migration {
    pub fn sql(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
        }
    }

    /// The statements, in order.
    pub fn statements(&self, dialect: Dialect) -> impl Iterator<Item = &'static str> {
        self.sql(dialect)
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
}

/// The tables of version 1 that do not depend on the dialect, with `{ID}` for an
/// auto-incrementing 64-bit primary key.
macro_rules! v1 {
    ($id:literal) => {
        concat!(
            "CREATE TABLE raters (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                created_at BIGINT NOT NULL
            );
            CREATE TABLE prompts (
                id TEXT PRIMARY KEY,
                caption TEXT NOT NULL UNIQUE,
                created_at BIGINT NOT NULL
            );
            CREATE TABLE clips (
                id TEXT PRIMARY KEY,
                prompt_id TEXT NOT NULL REFERENCES prompts(id),
                tokens TEXT NOT NULL,
                source TEXT NOT NULL,
                policy_version BIGINT,
                seed BIGINT,
                scores TEXT NOT NULL,
                created_at BIGINT NOT NULL
            );
            CREATE TABLE pairs (
                id TEXT PRIMARY KEY,
                prompt_id TEXT NOT NULL REFERENCES prompts(id),
                clip_a TEXT NOT NULL REFERENCES clips(id),
                clip_b TEXT NOT NULL REFERENCES clips(id),
                rater_id TEXT REFERENCES raters(id),
                served_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL
            );
            CREATE TABLE listening (
                id ",
            $id,
            ",
                pair_id TEXT NOT NULL REFERENCES pairs(id),
                side TEXT NOT NULL CHECK (side IN ('a', 'b')),
                seconds DOUBLE PRECISION NOT NULL,
                at BIGINT NOT NULL
            );
            CREATE INDEX listening_pair ON listening(pair_id);
            CREATE TABLE votes (
                id ",
            $id,
            ",
                pair_id TEXT NOT NULL UNIQUE REFERENCES pairs(id),
                rater_id TEXT NOT NULL REFERENCES raters(id),
                outcome TEXT NOT NULL CHECK (outcome IN ('a', 'b', 'tie', 'both_bad')),
                comment TEXT,
                channel TEXT NOT NULL,
                created_at BIGINT NOT NULL
            );
            CREATE INDEX votes_created ON votes(created_at);
            CREATE TABLE model_versions (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                path TEXT NOT NULL,
                parent TEXT,
                votes_used BIGINT NOT NULL,
                last_vote_id BIGINT NOT NULL,
                metrics TEXT NOT NULL,
                created_at BIGINT NOT NULL
            )"
        )
    };
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "prompts, clips, pairs, listening, votes, raters, model versions",
        sqlite: v1!("INTEGER PRIMARY KEY AUTOINCREMENT"),
        postgres: v1!("BIGSERIAL PRIMARY KEY"),
    },
    Migration {
        version: 2,
        name: "votes by rater and time (the daily cap per rater counts them on every vote)",
        sqlite: "CREATE INDEX votes_rater ON votes(rater_id, created_at)",
        postgres: "CREATE INDEX votes_rater ON votes(rater_id, created_at)",
    },
    Migration {
        version: 3,
        name: "audio-token clips: the codebooks a clip's tokens hold (NULL: a melody)",
        sqlite: "ALTER TABLE clips ADD COLUMN codebooks BIGINT",
        postgres: "ALTER TABLE clips ADD COLUMN codebooks BIGINT",
    },
];

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

pub(crate) const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_by_one_and_dialects_have_the_same_tables() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            let count = |d| m.statements(d).count();
            assert_eq!(
                count(Dialect::Sqlite),
                count(Dialect::Postgres),
                "{}",
                m.name
            );
            for s in m.statements(Dialect::Sqlite) {
                assert!(!s.contains("SERIAL"), "{s}");
            }
            for s in m.statements(Dialect::Postgres) {
                assert!(!s.contains("AUTOINCREMENT"), "{s}");
            }
        }
        assert_eq!(latest_version(), MIGRATIONS.len() as i64);
    }
}
