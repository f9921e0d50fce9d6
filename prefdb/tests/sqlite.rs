//! The database scenario on a real SQLite file (and in memory).

mod common;

#[tokio::test]
async fn sqlite_file_passes_the_scenario() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("sqlite:{}", dir.path().join("prefs.db").display());
    common::scenario(&url).await;
    assert!(dir.path().join("prefs.db").exists());
}

#[tokio::test]
async fn rlhf_rows_move_between_sqlite_databases() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = |name: &str| format!("sqlite:{}", dir.path().join(name).display());
    common::rlhf_round_trip(&url("a.db"), &url("b.db")).await;
}

#[tokio::test]
async fn an_unknown_url_is_refused_with_what_is_spoken() {
    let e = musicrl_prefdb::Db::open("mysql://u:pw@h/db")
        .await
        .expect_err("not spoken");
    let text = e.to_string();
    assert!(text.contains("sqlite:") && !text.contains("pw@"), "{text}");
}

#[tokio::test]
async fn a_vote_on_an_unknown_pair_is_refused_by_the_schema() {
    let db = musicrl_prefdb::Db::open("sqlite::memory:")
        .await
        .expect("opens");
    db.ensure_rater("r", "web", 0).await.expect("rater");
    let vote = musicrl_prefdb::NewVote {
        pair_id: "000000000000000000000000",
        rater_id: "r",
        outcome: musicrl_prefdb::Outcome::A,
        comment: None,
        channel: "web",
        at_ms: 0,
    };
    assert!(db.record_vote(&vote).await.is_err(), "foreign keys are on");
    assert_eq!(db.last_vote_id().await.expect("reads"), 0);
}

/// The write probe behind the feedback service's health: a database that takes writes
/// passes; one opened read-only, or whose file was deleted or replaced, fails with the
/// reason.
#[tokio::test]
async fn the_write_probe_tells_a_writable_database_from_one_that_is_not() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("prefs.db");
    let url = format!("sqlite:{}", path.display());
    let db = musicrl_prefdb::Db::open(&url).await.expect("opens");
    db.probe_write()
        .await
        .expect("a fresh database takes writes");

    let ro = musicrl_prefdb::Db::connect(&format!("{url}?mode=ro"))
        .await
        .expect("opens read-only");
    let e = ro.probe_write().await.expect_err("read-only").to_string();
    assert!(e.contains("health probe"), "{e}");
    ro.close().await;

    std::fs::remove_file(&path).expect("delete");
    let e = db.probe_write().await.expect_err("deleted").to_string();
    assert!(e.contains("is gone"), "{e}");
    // Another file in its place is not the database the service opened.
    let _other = musicrl_prefdb::Db::open(&url).await.expect("a new file");
    let e = db.probe_write().await.expect_err("replaced").to_string();
    assert!(e.contains("was replaced"), "{e}");
    db.close().await;
}
