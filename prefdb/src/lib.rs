//! The preference database: who listened to what and which clip they chose. Prompts, clips
//! (with their provenance: source, policy version, seed, reward-model scores), the pairs served
//! to raters, listening events, votes (A, B, tie, both bad, with an optional comment), raters
//! (opaque ids, no personal data) and reward-model versions. SQLite by default (one file, zero
//! set-up), PostgreSQL for a cluster: the same schema, versioned migrations, chosen by the URL.
//! Also the file formats: musicrl's JSONL store (migrated in losslessly), RLHF
//! prompt/chosen/rejected JSONL, and a Hugging Face `datasets` folder with each clip's audio.
//!
//! Architecture invariant: this crate stores and reads preferences. It knows nothing of the
//! reward models, the simulated listeners, HTTP or gRPC; the feedback service, the simulator and
//! the reward trainer all sit above it.

pub mod db;
pub mod error;
pub mod hf;
pub mod jsonl;
pub mod schema;

pub use db::{
    Clip, Db, DecisiveVote, FLAGGED, ImportReport, ModelVersion, NewClip, NewVote, Outcome, Pair,
    VoteCounts, VoteFilter, now_ms,
};
pub use error::{Error, Result};
pub use jsonl::{Choice, RlhfPair, append_store, read_rlhf, read_store};
pub use schema::Dialect;
