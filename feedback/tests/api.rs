//! The feedback service over real HTTP on loopback, with a real SQLite file: the page, the
//! clips, the API, and every refusal (with nothing stored).

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use common::{error_of, raw, start};
use musicrl_config::FeedbackConfig;
use musicrl_feedback::api::PairView;
use musicrl_feedback::bot::{BotClient, BotError};
use musicrl_prefdb::{Outcome, VoteFilter};

fn config() -> FeedbackConfig {
    FeedbackConfig {
        min_listen_seconds: 0.6,
        max_comment_chars: 40,
        ..FeedbackConfig::default()
    }
}

/// A pair fetched raw: its view and the session cookie.
async fn raw_pair(url: &str, cookie: Option<&str>) -> (PairView, String) {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let (status, h, body) = raw(Method::GET, url, &headers, "").await;
    assert_eq!(status, StatusCode::OK, "{}", error_of(&body));
    let cookie = h
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").to_string())
        .or_else(|| cookie.map(str::to_string))
        .expect("a session cookie");
    (serde_json::from_slice(&body).expect("a pair"), cookie)
}

async fn post(
    url: &str,
    cookie: &str,
    csrf: &str,
    body: serde_json::Value,
) -> (StatusCode, String) {
    let body = serde_json::to_vec(&body).expect("serialises");
    let (status, _, answer) = raw(
        Method::POST,
        url,
        &[
            ("cookie", cookie),
            ("x-csrf-token", csrf),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await;
    (status, error_of(&answer))
}

#[tokio::test]
async fn the_page_and_its_files_are_served_and_nothing_outside_the_cache() {
    let s = start(config()).await;
    let (status, h, body) = raw(Method::GET, &s.url("/"), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8_lossy(&body);
    assert!(
        page.contains("<meta name=\"csrf-token\" content=\""),
        "{page}"
    );
    assert!(!page.contains("{{CSRF}}"));
    assert!(page.contains("/static/abcjs-basic-min.js"));
    assert!(
        h.get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("HttpOnly") && c.contains("SameSite=Strict"))
    );
    assert!(h.get(header::CONTENT_SECURITY_POLICY).is_some());
    for name in ["app.js", "style.css", "abcjs-basic-min.js"] {
        let (status, _, body) = raw(Method::GET, &s.url(&format!("/static/{name}")), &[], "").await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert!(body.len() > 100, "{name}");
    }
    let (_, _, abcjs) = raw(Method::GET, &s.url("/static/abcjs-basic-min.js"), &[], "").await;
    assert!(String::from_utf8_lossy(&abcjs).contains("renderAbc"));

    // A pair, its clips in three formats.
    let (view, _) = raw_pair(&s.url("/api/pair"), None).await;
    assert_ne!(view.a.id, view.b.id);
    assert!(view.a.abc.starts_with("X:"), "{}", view.a.abc);
    let (status, h, wav) = raw(Method::GET, &s.url(&view.a.wav), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "audio/wav");
    let reader = hound::WavReader::new(std::io::Cursor::new(wav.to_vec())).expect("a WAV");
    let seconds = reader.duration() as f64 / f64::from(reader.spec().sample_rate);
    assert!(
        (seconds - view.a.seconds - 0.5).abs() < 0.05,
        "the WAV plays {seconds} s, the melody {} s plus the 0.5 s release",
        view.a.seconds
    );
    let (status, h, midi) = raw(Method::GET, &s.url(&view.a.midi), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(midi.starts_with(b"MThd"));
    assert!(
        h[header::CONTENT_DISPOSITION]
            .to_str()
            .expect("ascii")
            .starts_with("attachment")
    );
    let (status, _, abc) = raw(Method::GET, &s.url(&view.b.abc_file), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(String::from_utf8_lossy(&abc), view.b.abc);
    assert!(
        s.dir
            .path()
            .join("clips")
            .join(format!("{}.wav", view.a.id))
            .exists()
    );

    // Nothing but a known clip id with a known extension is served.
    for path in [
        "/clips/..%2F..%2Fetc%2Fpasswd",
        "/clips/../../Cargo.toml",
        "/clips/000000000000000000000000.wav",
        &format!("/clips/{}.txt", view.a.id),
        &format!("/clips/{}.wav.wav", view.a.id),
        "/static/..%2Fsrc%2Flib.rs",
        "/static/index.html",
        "/nowhere",
    ] {
        let (status, _, body) = raw(Method::GET, &s.url(path), &[], "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {}", error_of(&body));
    }
    let (status, _, _) = raw(Method::GET, &s.url("/healthz"), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn a_vote_counts_only_after_listening_once_on_this_raters_own_pair() {
    let s = start(config()).await;
    let (view, cookie) = raw_pair(&s.url("/api/pair"), None).await;
    let vote = |outcome: &str| serde_json::json!({"pair": view.pair, "outcome": outcome});
    let url = s.url("/api/vote");

    // Before listening.
    let (status, e) = post(&url, &cookie, &view.csrf, vote("a")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e.contains("listen to both clips first"), "{e}");

    // Listening is capped by the time since the pair was served.
    let listen = |side: &str, seconds: f64| serde_json::json!({"pair": view.pair, "side": side, "seconds": seconds});
    let (status, _, body) = raw(
        Method::POST,
        &s.url("/api/listen"),
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &view.csrf),
            ("content-type", "application/json"),
        ],
        serde_json::to_vec(&listen("a", 100.0)).expect("json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let heard: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let credited = heard["a"].as_f64().expect("a number");
    assert!(
        credited < 1.0,
        "100 s claimed at once, {credited} s credited"
    );
    let (a, b) = s.db.listened(&view.pair).await.expect("reads");
    assert!((a - credited).abs() < 1e-9 && b == 0.0);
    let (status, e) = post(&url, &cookie, &view.csrf, vote("a")).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "B is unheard: {e}"
    );

    // Another rater may not act on this pair (with its own valid session and token).
    let (other, other_cookie) = raw_pair(&s.url("/api/pair"), None).await;
    let (status, e) = post(&url, &other_cookie, &other.csrf, vote("a")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
    assert!(e.contains("another rater"), "{e}");

    // After time has passed, listening to both sides is credited and the vote counts.
    tokio::time::sleep(Duration::from_millis(1400)).await;
    for side in ["a", "b"] {
        let (status, e) = post(
            &s.url("/api/listen"),
            &cookie,
            &view.csrf,
            listen(side, 0.7),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{e}");
    }
    let with_comment =
        serde_json::json!({"pair": view.pair, "outcome": "b", "comment": "  sways more  "});
    let (status, e) = post(&url, &cookie, &view.csrf, with_comment.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{e}");
    assert_eq!(
        s.db.vote_for_pair(&view.pair).await.expect("reads"),
        Some(Outcome::B)
    );
    let votes =
        s.db.decisive_votes(VoteFilter::default())
            .await
            .expect("reads");
    assert_eq!(votes.len(), 1);
    assert_eq!(votes[0].comment.as_deref(), Some("sways more"));
    assert!(votes[0].rater_id.starts_with("web-"));
    assert!(votes[0].a.seed.is_some());
    assert_eq!(votes[0].a.source, "tiny");

    // Once only.
    let (status, e) = post(&url, &cookie, &view.csrf, with_comment).await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    let (status, _) = post(&s.url("/api/listen"), &cookie, &view.csrf, listen("a", 1.0)).await;
    assert_eq!(status, StatusCode::CONFLICT, "no listening on a voted pair");
    assert_eq!(
        s.db.vote_counts(VoteFilter::default())
            .await
            .expect("counts")
            .total(),
        1
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_requests_get_a_clear_4xx_and_store_nothing() {
    let s = start(config()).await;
    let (view, cookie) = raw_pair(&s.url("/api/pair"), None).await;
    tokio::time::sleep(Duration::from_millis(1400)).await;
    for side in ["a", "b"] {
        let body = serde_json::json!({"pair": view.pair, "side": side, "seconds": 0.7});
        let (status, e) = post(&s.url("/api/listen"), &cookie, &view.csrf, body).await;
        assert_eq!(status, StatusCode::OK, "{e}");
    }
    let url = s.url("/api/vote");
    let json = ("content-type", "application/json");
    let cases: Vec<(&str, Vec<(&str, &str)>, Vec<u8>, StatusCode, &str)> = vec![
        ("malformed JSON", vec![("cookie", &cookie), ("x-csrf-token", &view.csrf), json], b"{\"pair\": ".to_vec(), StatusCode::BAD_REQUEST, "malformed JSON"),
        ("unknown field", vec![("cookie", &cookie), ("x-csrf-token", &view.csrf), json], format!("{{\"pair\":\"{}\",\"outcome\":\"a\",\"admin\":true}}", view.pair).into_bytes(), StatusCode::BAD_REQUEST, "unknown field"),
        ("not JSON", vec![("cookie", &cookie), ("x-csrf-token", &view.csrf), ("content-type", "application/x-www-form-urlencoded")], b"pair=x&outcome=a".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "must be JSON"),
        ("no session", vec![("x-csrf-token", &view.csrf), json], serde_json::to_vec(&serde_json::json!({"pair": view.pair, "outcome": "a"})).expect("json"), StatusCode::FORBIDDEN, "no session"),
        ("no CSRF token", vec![("cookie", &cookie), json], serde_json::to_vec(&serde_json::json!({"pair": view.pair, "outcome": "a"})).expect("json"), StatusCode::FORBIDDEN, "x-csrf-token"),
        ("wrong CSRF token", vec![("cookie", &cookie), ("x-csrf-token", "0123456789abcdef0123456789abcdef"), json], serde_json::to_vec(&serde_json::json!({"pair": view.pair, "outcome": "a"})).expect("json"), StatusCode::FORBIDDEN, "x-csrf-token"),
        ("unknown pair", vec![("cookie", &cookie), ("x-csrf-token", &view.csrf), json], serde_json::to_vec(&serde_json::json!({"pair": "ffffffffffffffffffffffff", "outcome": "a"})).expect("json"), StatusCode::NOT_FOUND, "no pair"),
        ("malformed pair id", vec![("cookie", &cookie), ("x-csrf-token", &view.csrf), json], serde_json::to_vec(&serde_json::json!({"pair": "'; DROP TABLE votes; --", "outcome": "a"})).expect("json"), StatusCode::NOT_FOUND, "no pair"),
        ("unknown outcome", vec![("cookie", &cookie), ("x-csrf-token", &view.csrf), json], serde_json::to_vec(&serde_json::json!({"pair": view.pair, "outcome": "c"})).expect("json"), StatusCode::UNPROCESSABLE_ENTITY, "outcome must be"),
        ("oversized comment", vec![("cookie", &cookie), ("x-csrf-token", &view.csrf), json], serde_json::to_vec(&serde_json::json!({"pair": view.pair, "outcome": "a", "comment": "é".repeat(41)})).expect("json"), StatusCode::UNPROCESSABLE_ENTITY, "41 characters"),
        ("oversized body", vec![("cookie", &cookie), ("x-csrf-token", &view.csrf), json], serde_json::to_vec(&serde_json::json!({"pair": view.pair, "outcome": "a", "comment": "x".repeat(20_000)})).expect("json"), StatusCode::PAYLOAD_TOO_LARGE, "cannot be read"),
    ];
    for (what, headers, body, want, says) in cases {
        let (status, _, answer) = raw(Method::POST, &url, &headers, body).await;
        let e = error_of(&answer);
        assert_eq!(status, want, "{what}: {e}");
        assert!(e.contains(says), "{what}: {e:?} should say {says:?}");
    }
    let (status, _, _) = raw(Method::GET, &url, &[], "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let bad_listen = serde_json::json!({"pair": view.pair, "side": "c", "seconds": 1.0});
    let (status, e) = post(&s.url("/api/listen"), &cookie, &view.csrf, bad_listen).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let nan_listen = serde_json::json!({"pair": view.pair, "side": "a", "seconds": -1.0});
    let (status, e) = post(&s.url("/api/listen"), &cookie, &view.csrf, nan_listen).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");

    // Nothing was stored, and the pair can still be voted on properly.
    assert_eq!(s.db.last_vote_id().await.expect("reads"), 0);
    let ok = serde_json::json!({"pair": view.pair, "outcome": "tie"});
    let (status, e) = post(&url, &cookie, &view.csrf, ok).await;
    assert_eq!(status, StatusCode::CREATED, "{e}");
    s.stop().await;
}

#[tokio::test]
async fn expired_pairs_and_rate_limits_are_refused() {
    let s = start(FeedbackConfig {
        pair_ttl_seconds: 1,
        pairs_per_minute: 2,
        min_listen_seconds: 0.0,
        ..config()
    })
    .await;
    let (view, cookie) = raw_pair(&s.url("/api/pair"), None).await;
    let (_, cookie2) = raw_pair(&s.url("/api/pair"), Some(&cookie)).await;
    assert_eq!(cookie, cookie2, "the session is kept");
    let (status, h, body) = raw(Method::GET, &s.url("/api/pair"), &[("cookie", &cookie)], "").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{}", error_of(&body));
    assert!(h.get(header::RETRY_AFTER).is_some());
    // Another rater is not limited by this one.
    let _ = raw_pair(&s.url("/api/pair"), None).await;

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let vote = serde_json::json!({"pair": view.pair, "outcome": "a"});
    let (status, e) = post(&s.url("/api/vote"), &cookie, &view.csrf, vote).await;
    assert_eq!(status, StatusCode::GONE, "{e}");
    assert!(e.contains("expired"), "{e}");
    assert_eq!(s.db.last_vote_id().await.expect("reads"), 0);
    s.stop().await;
}

/// Against a server that requires listening, the bot listens (in real time) for as long as
/// it must, and its votes count.
#[tokio::test]
async fn the_bot_listens_as_long_as_the_server_requires() {
    let s = start(FeedbackConfig {
        min_listen_seconds: 0.3,
        ..config()
    })
    .await;
    let mut bot = BotClient::new(&format!("http://{}", s.addr));
    // The server credits no more listening than the time since it served the pair, so a
    // counted vote is one the bot waited for.
    let (view, outcome, _) = bot
        .turn(0, 0.0, |_| Outcome::B)
        .await
        .expect("a vote that counts");
    assert_eq!(
        s.db.vote_for_pair(&view.pair).await.expect("reads"),
        Some(outcome)
    );
    s.stop().await;
}

#[tokio::test]
async fn the_bot_votes_through_the_api_as_its_own_raters() {
    let s = start(FeedbackConfig {
        min_listen_seconds: 0.0,
        ..config()
    })
    .await;
    let mut bot = BotClient::new(&format!("http://{}", s.addr));
    for i in 0..6 {
        let (view, outcome, _) = bot
            .turn(i % 3, 0.0, |v| {
                if v.a.tokens.len() >= v.b.tokens.len() {
                    Outcome::A
                } else {
                    Outcome::B
                }
            })
            .await
            .expect("a turn");
        assert_eq!(
            s.db.vote_for_pair(&view.pair).await.expect("reads"),
            Some(outcome)
        );
    }
    let votes =
        s.db.decisive_votes(VoteFilter::default())
            .await
            .expect("reads");
    assert_eq!(votes.len(), 6);
    let raters: std::collections::BTreeSet<_> = votes.iter().map(|v| v.rater_id.clone()).collect();
    assert_eq!(raters.len(), 3, "one rater per simulated listener");
    // The bot's votes are marked as the bot's.
    let n: i64 =
        s.db.vote_counts(VoteFilter::default())
            .await
            .expect("counts")
            .total();
    assert_eq!(n, 6);
    // A refused call surfaces the server's message.
    let view = bot.pair(0).await.expect("a pair");
    let mut forged = view.clone();
    forged.pair = "ffffffffffffffffffffffff".into();
    match bot.vote(0, &forged, Outcome::A, None).await {
        Err(BotError::Refused {
            status, message, ..
        }) => {
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert!(message.contains("no pair"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn every_clip_is_stored_with_its_reward_model_scores_and_the_listener_never_sees_them() {
    // A test scorer: the share of tokens below 40, weighted 2 and shifted by 0.25.
    let reward = musicrl_config::RewardConfig {
        components: vec![musicrl_config::ComponentConfig {
            kind: "token-fraction".into(),
            name: "low".into(),
            target_below: 40,
            weight: 2.0,
            shift: 0.25,
            ..Default::default()
        }],
        ..Default::default()
    };
    let scorer = musicrl_scoring::RewardModel::from_config(&reward).expect("a scorer");
    let s = common::start_scored(config(), Some(scorer)).await;
    let (status, _, body) = raw(Method::GET, &s.url("/api/pair"), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    assert!(
        !text.contains("scores") && !text.contains("\"low\""),
        "{text}"
    );
    let view: PairView = serde_json::from_slice(&body).expect("a pair");
    let reference = musicrl_scoring::scorer::TokenFraction::new("low", 40);
    for clip in [&view.a, &view.b] {
        let stored = s.db.clip(&clip.id).await.expect("reads").expect("stored");
        let low = f64::from(reference.score_one(&stored.tokens));
        assert!(
            (stored.scores["low"] - low).abs() < 1e-6,
            "{:?}",
            stored.scores
        );
        // reward = weight · (score − shift) · scale, with scale 1.
        let expected = 2.0 * (low - 0.25);
        assert!(
            (stored.scores["reward"] - expected).abs() < 1e-5,
            "{:?}",
            stored.scores
        );
        assert_eq!(
            stored.policy_version, None,
            "an in-memory model has no learner step"
        );
    }
    s.stop().await;
}

/// `/healthz` tells the truth: once the database file is deleted under the running service
/// (every vote would now be lost or refused), it answers 503 NOT_SERVING with the reason,
/// within the health cadence.
#[tokio::test]
async fn health_goes_not_serving_when_the_database_is_deleted() {
    let s = start(FeedbackConfig {
        health_check_seconds: 0.1,
        ..config()
    })
    .await;
    let (status, _, body) = raw(Method::GET, &s.url("/healthz"), &[], "").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    std::fs::remove_file(s.dir.path().join("feedback.db")).expect("delete the database");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, _, body) = raw(Method::GET, &s.url("/healthz"), &[], "").await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break body;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(std::time::Instant::now() < deadline, "still healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let why = error_of(&body);
    assert!(
        why.contains("NOT_SERVING") && why.contains("is gone"),
        "{why}"
    );
    s.stop().await;
}

/// Issue 35's ballot stuffing: one client casting vote after vote for one side, each time
/// with a session of its own making (a made-up cookie, or none at all). Sessions are the
/// server's (a made-up cookie is not one), new sessions are limited per client address, and
/// a run of same-side votes from one address is stored flagged and never trained on: of 20
/// tries, a handful of votes are stored and one of them counts for training.
#[tokio::test]
async fn minted_sessions_cannot_stuff_the_ballot() {
    let s = start(FeedbackConfig {
        min_listen_seconds: 0.0,
        sessions_per_hour_per_address: 3,
        flag_same_side_run: 2,
        ..config()
    })
    .await;
    let (mut stored, mut refused) = (0, 0);
    for i in 0..20 {
        // A cookie of the client's own making, in the old format and in the signed one's.
        let minted = match i % 2 {
            0 => format!("musicrl_session={:032x}", i + 1),
            _ => format!("musicrl_session={:032x}.{:032x}", i + 1, i + 7),
        };
        let (status, h, body) =
            raw(Method::GET, &s.url("/api/pair"), &[("cookie", &minted)], "").await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(
                error_of(&body).contains("new sessions"),
                "{}",
                error_of(&body)
            );
            refused += 1;
            continue;
        }
        assert_eq!(status, StatusCode::OK, "{}", error_of(&body));
        let view: PairView = serde_json::from_slice(&body).expect("a pair");
        // The minted cookie was not taken: the answer issues a session of the server's.
        let issued = h
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").to_string())
            .expect("a new session is issued");
        assert_ne!(issued, minted);
        // Voting with the minted cookie and the issued session's token: no session.
        let vote = serde_json::json!({"pair": view.pair, "outcome": "a"});
        let (status, e) = post(&s.url("/api/vote"), &minted, &view.csrf, vote.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
        let (status, e) = post(&s.url("/api/vote"), &issued, &view.csrf, vote).await;
        assert_eq!(status, StatusCode::CREATED, "{e}");
        stored += 1;
    }
    assert_eq!((stored, refused), (3, 17));
    assert_eq!(s.db.last_vote_id().await.expect("reads"), 3);
    // The second and third same-side votes in a row were flagged: exported with their
    // channel, not trained on.
    let trained =
        s.db.decisive_votes(VoteFilter::default())
            .await
            .expect("reads");
    assert_eq!(trained.len(), 1);
    let all =
        s.db.decisive_votes(VoteFilter {
            include_flagged: true,
            ..VoteFilter::default()
        })
        .await
        .expect("reads");
    let channels: Vec<&str> = all.iter().map(|v| v.channel.as_str()).collect();
    assert_eq!(channels, ["web", "flagged", "flagged"]);
    s.stop().await;
}

/// A rater's votes are capped per 24 hours, whatever the per-minute limits allow.
#[tokio::test]
async fn a_rater_has_a_daily_cap() {
    let s = start(FeedbackConfig {
        min_listen_seconds: 0.0,
        votes_per_rater_per_day: 2,
        ..config()
    })
    .await;
    let (_, mut cookie) = raw_pair(&s.url("/api/pair"), None).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let (view, c) = raw_pair(&s.url("/api/pair"), Some(&cookie)).await;
        cookie = c;
        let vote = serde_json::json!({"pair": view.pair, "outcome": "tie"});
        answers.push(post(&s.url("/api/vote"), &cookie, &view.csrf, vote).await);
    }
    assert_eq!(answers[0].0, StatusCode::CREATED, "{}", answers[0].1);
    assert_eq!(answers[1].0, StatusCode::CREATED, "{}", answers[1].1);
    assert_eq!(answers[2].0, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        answers[2].1.contains("votes_per_rater_per_day"),
        "{}",
        answers[2].1
    );
    s.stop().await;
}

/// Item 4 of "Hear it": a MusicGen source draws pairs of audio-token clips; the page gets
/// their WAV decoded by the policy's codec (no notation), the vote stores the codes with
/// their codebooks, and the export hands them to the preference model's training as they
/// were heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_musicgen_source_serves_codec_audio_and_its_votes_keep_the_codes() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let source = common::musicgen_source(&config(), 8, dir.path());
    let codec = common::musicgen_codec();
    let s = common::start_source(config(), None, None, source).await;
    let (view, cookie) = raw_pair(&s.url("/api/pair"), None).await;
    for clip in [&view.a, &view.b] {
        assert_eq!(clip.codebooks, Some(4));
        assert_eq!(clip.tokens.len(), 32);
        assert!(clip.tokens.iter().all(|&c| c < 32));
        assert!(clip.abc.is_empty() && clip.midi.is_empty() && clip.abc_file.is_empty());
        // 8 frames at the codec's 50 frames a second.
        assert!((clip.seconds - 0.16).abs() < 1e-9, "{}", clip.seconds);
    }
    assert_ne!(view.a.tokens, view.b.tokens, "two draws");

    // The WAV is the codec's decoding of the codes (8 frames × 32 samples at 1,600 Hz),
    // resampled to 16 kHz, which browsers play (they refuse 1,600 Hz).
    let (status, h, body) = raw(Method::GET, &s.url(&view.a.wav), &[], "").await;
    assert_eq!(status, StatusCode::OK, "{}", error_of(&body));
    assert_eq!(h[header::CONTENT_TYPE], "audio/wav");
    let wav = hound::WavReader::new(std::io::Cursor::new(body.to_vec())).expect("a WAV");
    assert_eq!((wav.spec().sample_rate, wav.spec().channels), (16_000, 1));
    let samples: Vec<i16> = wav.into_samples().map(|s| s.expect("a sample")).collect();
    assert_eq!(samples.len(), 8 * 32 * 10);
    let codec = musicrl_scoring::audio::Codec::load(&codec).expect("the codec");
    assert_eq!(codec.sample_rate(), 1600);
    let decoded = musicrl_rewards::resample::resample(
        &codec.decode(&view.a.tokens).expect("decodes"),
        1600,
        16_000,
    )
    .expect("resamples");
    assert_eq!(decoded.len(), samples.len());
    let worst = samples
        .iter()
        .zip(&decoded)
        .map(|(&s, &d)| (f32::from(s) / 32767.0 - d.clamp(-1.0, 1.0)).abs())
        .fold(0f32, f32::max);
    assert!(worst < 2e-4, "the page plays something else: {worst}");
    assert!(samples.iter().any(|&s| s != 0), "not silence");
    // Each clip's own audio (this codec's codebooks are not all alike, unlike the tiny
    // MusicGen folder's own, which decodes every clip to the same sound).
    let (_, _, other) = raw(Method::GET, &s.url(&view.b.wav), &[], "").await;
    assert_ne!(other, body, "B plays A's audio");
    // No notation for audio tokens: a clear 404.
    let (status, _, body) = raw(
        Method::GET,
        &s.url(&format!("/clips/{}.mid", view.a.id)),
        &[],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        error_of(&body).contains("ask for .wav"),
        "{}",
        error_of(&body)
    );

    // Listened to (0.16 s each), voted, stored with the codes.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for side in ["a", "b"] {
        let listen = serde_json::json!({"pair": view.pair, "side": side, "seconds": 0.2});
        let (status, e) = post(&s.url("/api/listen"), &cookie, &view.csrf, listen).await;
        assert_eq!(status, StatusCode::OK, "{e}");
    }
    let vote = serde_json::json!({"pair": view.pair, "outcome": "b"});
    let (status, e) = post(&s.url("/api/vote"), &cookie, &view.csrf, vote).await;
    assert_eq!(status, StatusCode::CREATED, "{e}");
    let votes =
        s.db.decisive_votes(VoteFilter::default())
            .await
            .expect("reads");
    assert_eq!(votes[0].a.codebooks, Some(4));
    assert_eq!(votes[0].a.tokens, view.a.tokens);
    assert_eq!(votes[0].a.source, "tiny");
    let choices =
        s.db.export_choices(VoteFilter::default())
            .await
            .expect("exports");
    assert_eq!(choices[0].codebooks, Some(4));
    assert_eq!(choices[0].ordered().0, view.b.tokens.as_slice());
    let rlhf =
        s.db.export_rlhf(VoteFilter::default())
            .await
            .expect("exports");
    assert_eq!(rlhf[0].chosen, "audio tokens: 4 codebooks x 8 frames");
    assert_eq!(rlhf[0].codebooks, Some(4));
    s.stop().await;
}
