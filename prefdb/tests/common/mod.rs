//! The database scenario every backend must pass: migrations from empty, the JSONL store's
//! lossless round trip, RLHF export and import, a served pair with listening and a vote,
//! duplicate votes, vote filters and model versions.

use std::collections::BTreeMap;

use musicrl_prefdb::jsonl::{rlhf_text, store_text};
use musicrl_prefdb::{Choice, Db, Error, ModelVersion, NewClip, NewVote, Outcome, VoteFilter};

/// Choices shaped like the simulator's: two of them identical (a listener can make the same
/// choice twice), one with `b` chosen.
pub fn choices() -> Vec<Choice> {
    let c = |caption: &str, a: Vec<u32>, b: Vec<u32>, choice: &str, who: &str, when: u64| Choice {
        caption: caption.into(),
        a,
        b,
        choice: choice.into(),
        who: who.into(),
        when,
        codebooks: None,
    };
    vec![
        c(
            "a lively jig in d major",
            vec![28, 53, 30, 53, 1],
            vec![30, 53, 2],
            "a",
            "listener-17",
            1_764_460_800,
        ),
        c(
            "a slow air, flute",
            vec![5, 6, 7],
            vec![8, 9, 10, 11],
            "b",
            "listener-3",
            1_764_460_801,
        ),
        c(
            "a slow air, flute",
            vec![5, 6, 7],
            vec![8, 9, 10, 11],
            "b",
            "listener-3",
            1_764_460_801,
        ),
        c(
            "a reel \"with\" quotes, ünïcode",
            vec![63, 0],
            vec![1],
            "a",
            "listener-0",
            1_764_460_900,
        ),
    ]
}

pub async fn scenario(url: &str) {
    // Migrations from empty, then idempotent.
    let db = Db::connect(url).await.expect("connects");
    assert_eq!(db.schema_version().await.expect("reads"), 0);
    assert_eq!(db.migrate().await.expect("migrates"), vec![1, 2, 3]);
    assert_eq!(
        db.migrate().await.expect("migrates again"),
        Vec::<i64>::new()
    );
    assert_eq!(db.schema_version().await.expect("reads"), 3);
    let counts = db.table_counts().await.expect("counts");
    assert!(counts.values().all(|&n| n == 0), "{counts:?}");

    // The JSONL store migrates in losslessly: exporting gives the same bytes back.
    let original = choices();
    let report = db.import_choices(&original).await.expect("imports");
    assert_eq!((report.inserted, report.already_present), (4, 0));
    let exported = db
        .export_choices(VoteFilter::default())
        .await
        .expect("exports");
    assert_eq!(exported, original);
    assert_eq!(store_text(&exported), store_text(&original));
    // Importing the same file again adds nothing.
    let again = db.import_choices(&original).await.expect("imports again");
    assert_eq!((again.inserted, again.already_present), (0, 4));
    assert_eq!(
        db.vote_counts(VoteFilter::default())
            .await
            .expect("counts")
            .total(),
        4
    );

    // RLHF rows: chosen/rejected as ABC text, tokens beside; they import into an empty
    // database and export the same choices.
    let rlhf = db
        .export_rlhf(VoteFilter::default())
        .await
        .expect("exports rlhf");
    assert_eq!(rlhf.len(), 4);
    assert_eq!(rlhf[1].chosen_tokens, vec![8, 9, 10, 11]);
    assert!(!rlhf[1].chosen_was_a);
    assert!(rlhf[0].chosen.starts_with("X:"), "{}", rlhf[0].chosen);
    let line = rlhf_text(&rlhf[..1]);
    for key in [
        "\"prompt\"",
        "\"chosen\"",
        "\"rejected\"",
        "\"chosen_tokens\"",
        "\"rater\"",
    ] {
        assert!(line.contains(key), "{line}");
    }

    // A served pair: clips with provenance, listening, a vote, and a refused second vote.
    let now = 1_800_000_000_000i64;
    db.ensure_rater("r-1", "web", now).await.expect("rater");
    let scores = BTreeMap::from([("text".to_string(), 0.25), ("quality".to_string(), -1.5)]);
    let clip = |tokens: &'static [u32], seed| NewClip {
        caption: "a waltz in three",
        tokens,
        codebooks: None,
        source: "policy-v7",
        policy_version: Some(7),
        seed: Some(seed),
        scores: scores.clone(),
    };
    let a = db
        .put_clip(&clip(&[3, 4, 5], 11), now)
        .await
        .expect("clip a");
    let b = db.put_clip(&clip(&[6, 7], 12), now).await.expect("clip b");
    assert_eq!(
        a,
        db.put_clip(&clip(&[3, 4, 5], 11), now)
            .await
            .expect("same clip")
    );
    let stored = db.clip(&a).await.expect("reads").expect("exists");
    assert_eq!((stored.policy_version, stored.seed), (Some(7), Some(11)));
    assert_eq!(stored.scores, scores);
    assert_eq!(stored.caption, "a waltz in three");
    assert!(
        db.clip("000000000000000000000000")
            .await
            .expect("reads")
            .is_none()
    );
    let pair = db
        .create_pair("a waltz in three", &a, &b, Some("r-1"), now, 60_000)
        .await
        .expect("pair");
    assert_eq!(db.pair(&pair.id).await.expect("reads"), Some(pair.clone()));
    assert_eq!(pair.expires_at_ms, now + 60_000);
    db.record_listening(&pair.id, Outcome::A, 1.5, now + 1)
        .await
        .expect("listen");
    db.record_listening(&pair.id, Outcome::A, 2.0, now + 2)
        .await
        .expect("listen");
    db.record_listening(&pair.id, Outcome::B, 0.5, now + 3)
        .await
        .expect("listen");
    assert_eq!(db.listened(&pair.id).await.expect("reads"), (3.5, 0.5));
    assert!(
        db.record_listening(&pair.id, Outcome::Tie, 1.0, now)
            .await
            .is_err()
    );
    let before = db.last_vote_id().await.expect("reads");
    let vote = NewVote {
        pair_id: &pair.id,
        rater_id: "r-1",
        outcome: Outcome::B,
        comment: Some("the second one sways"),
        channel: "web",
        at_ms: now + 10,
    };
    let id = db.record_vote(&vote).await.expect("votes");
    assert!(id > before);
    assert_eq!(
        db.vote_for_pair(&pair.id).await.expect("reads"),
        Some(Outcome::B)
    );
    match db.record_vote(&vote).await {
        Err(Error::DuplicateVote(p)) => assert_eq!(p, pair.id),
        other => panic!("a second vote must be refused, got {other:?}"),
    }
    // Votes after a model version: only the new one.
    let after = VoteFilter {
        after_vote_id: Some(before),
        ..VoteFilter::default()
    };
    let newer = db.decisive_votes(after).await.expect("reads");
    assert_eq!(newer.len(), 1);
    assert_eq!(newer[0].comment.as_deref(), Some("the second one sways"));
    assert_eq!(newer[0].b.tokens, vec![6, 7]);
    let since = VoteFilter {
        since_ms: Some(now),
        ..VoteFilter::default()
    };
    assert_eq!(db.vote_counts(since).await.expect("counts").b, 1);

    // A tie is stored and counted but is no preference pair.
    let tie_pair = db
        .create_pair("a waltz in three", &b, &a, Some("r-1"), now, 60_000)
        .await
        .expect("pair");
    db.record_vote(&NewVote {
        pair_id: &tie_pair.id,
        outcome: Outcome::Tie,
        ..vote.clone()
    })
    .await
    .expect("a tie");
    assert_eq!(db.vote_counts(after).await.expect("counts").tie, 1);
    assert_eq!(db.decisive_votes(after).await.expect("reads").len(), 1);

    // Model versions.
    let m = ModelVersion {
        id: "preference-0123456789ab".into(),
        kind: "preference".into(),
        path: "models/rewards/preference".into(),
        parent: None,
        votes_used: 5,
        last_vote_id: id,
        metrics: serde_json::json!({"held_out_accuracy": 0.61}),
        created_at_ms: now + 20,
    };
    db.record_model_version(&m).await.expect("records");
    db.record_model_version(&m)
        .await
        .expect("records again (replaces)");
    assert_eq!(
        db.model_version(&m.id).await.expect("reads"),
        Some(m.clone())
    );
    assert_eq!(db.model_versions().await.expect("reads"), vec![m]);
    db.close().await;

    // Reopening an existing database migrates nothing and keeps everything.
    let db = Db::open(url).await.expect("reopens");
    assert_eq!(db.table_counts().await.expect("counts")["votes"], 6);

    // A pair of audio-token clips (MusicGen's codes: 2 rows of 3) keeps its codebooks
    // through the column migration 3 added, in both exports.
    let audio = Choice {
        caption: "lo-fi piano".into(),
        a: vec![0, 2047, 5, 6, 7, 8],
        b: vec![1, 2, 3, 4, 5, 6],
        choice: "b".into(),
        who: "web-9".into(),
        when: 1_800_000_100,
        codebooks: Some(2),
    };
    let before = db.last_vote_id().await.expect("reads");
    db.import_choices(std::slice::from_ref(&audio))
        .await
        .expect("imports");
    let after = VoteFilter {
        after_vote_id: Some(before),
        ..VoteFilter::default()
    };
    let back = db.export_choices(after).await.expect("exports");
    assert_eq!(back, vec![audio.clone()]);
    let row = db.export_rlhf(after).await.expect("exports");
    let row = row.last().expect("a row");
    assert_eq!(row.codebooks, Some(2));
    assert_eq!(row.chosen_tokens, audio.b);
    db.close().await;
}

/// RLHF rows exported from one database import into another and export the same choices.
pub async fn rlhf_round_trip(from: &str, to: &str) {
    let db = Db::open(from).await.expect("opens");
    db.import_choices(&choices()).await.expect("imports");
    let rows = db
        .export_rlhf(VoteFilter::default())
        .await
        .expect("exports");
    let other = Db::open(to).await.expect("opens");
    let report = other.import_rlhf(&rows).await.expect("imports rlhf");
    assert_eq!(report.inserted, 4);
    let back = other
        .export_choices(VoteFilter::default())
        .await
        .expect("exports");
    assert_eq!(back, choices());
    assert_eq!(
        other
            .export_rlhf(VoteFilter::default())
            .await
            .expect("exports"),
        rows
    );
}
