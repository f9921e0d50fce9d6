//! The voting page in real headless Chromium (Debian's `chromium` and `chromium-driver`),
//! driven over WebDriver: the page loads a pair and draws both clips as sheet music, a vote
//! before listening is refused, the keyboard plays both clips, the vote buttons open, a click
//! votes, and the vote is in the database. With `FEEDBACK_TEST_SCREENSHOTS=DIR` it also writes
//! desktop and phone screenshots of the page.
//!
//! Needs `chromedriver` (`FEEDBACK_TEST_CHROMEDRIVER`, default `/usr/bin/chromedriver`) and
//! `chromium` (`FEEDBACK_TEST_CHROMIUM`, default `/usr/bin/chromium`); `.ci/run` installs both and
//! runs it with `--ignored`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use musicrl_config::FeedbackConfig;
use musicrl_prefdb::VoteFilter;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn browser(profile: &std::path::Path) -> (Driver, fantoccini::Client) {
    let driver = std::env::var("FEEDBACK_TEST_CHROMEDRIVER")
        .unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    let chromium =
        std::env::var("FEEDBACK_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&driver).exists() && std::path::Path::new(&chromium).exists(),
        "this test needs {driver} and {chromium} (Debian: apt-get install chromium chromium-driver)"
    );
    let port = free_port();
    let child = Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts chromedriver");
    let guard = Driver(child);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--mute-audio", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    let started = Instant::now();
    let client = loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(_) if started.elapsed() < Duration::from_secs(20) => {
                // chromedriver is still starting.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start a browser session: {e}"),
        }
    };
    (guard, client)
}

/// Polls a JavaScript expression until it is true.
async fn wait_for(client: &fantoccini::Client, what: &str, script: &str, timeout: Duration) {
    let started = Instant::now();
    loop {
        let v = client.execute(script, vec![]).await.expect("runs a script");
        if v.as_bool() == Some(true) {
            return;
        }
        if started.elapsed() >= timeout {
            let said = client
                .execute(
                    "return document.getElementById('status').textContent",
                    vec![],
                )
                .await
                .ok();
            panic!("timed out waiting for {what} ({script}); the page's status says {said:?}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// With `FEEDBACK_TEST_SCREENSHOTS=DIR`, the page as it is now, written to DIR/NAME.
async fn screenshot_if_asked(c: &fantoccini::Client, name: &str) {
    if let Ok(dir) = std::env::var("FEEDBACK_TEST_SCREENSHOTS") {
        let png = c.screenshot().await.expect("a screenshot");
        std::fs::write(std::path::Path::new(&dir).join(name), png).expect("writes");
    }
}

/// Clicks the vote button of `side` ("a" or "b") and waits for the page's thank-you. The
/// deadline is generous: in a debug build on two cores the vote is answered behind the
/// server drawing the next pairs (for MusicGen, sampling and decoding through the codec).
async fn vote_for(c: &fantoccini::Client, side: &str) {
    c.find(Locator::Id(&format!("vote-{side}")))
        .await
        .expect("the vote button")
        .click()
        .await
        .expect("clicks");
    wait_for(
        c,
        "the thank-you",
        "return document.getElementById('status').textContent.indexOf('Thank you') >= 0",
        Duration::from_secs(30),
    )
    .await;
}

/// The keyboard plays A, then B (keys 1 and 2), each until the page reports it heard; then
/// the vote buttons open.
async fn play_both(c: &fantoccini::Client) {
    let body = c.find(Locator::Css("body")).await.expect("the body");
    for (key, side) in [("1", "a"), ("2", "b")] {
        body.send_keys(key).await.expect("types");
        wait_for(
            c,
            &format!("clip {side} heard"),
            &format!(
                "return document.getElementById('heard-{side}').textContent.indexOf('✓') >= 0"
            ),
            Duration::from_secs(20),
        )
        .await;
    }
    wait_for(
        c,
        "the vote buttons",
        "return !document.getElementById('vote-a').disabled && !document.getElementById('vote-b').disabled",
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
#[ignore = "needs chromium and chromedriver; .ci/run installs them and runs it"]
async fn a_listener_plays_both_clips_and_votes_in_a_real_browser() {
    let s = common::start(FeedbackConfig {
        min_listen_seconds: 1.0,
        ..FeedbackConfig::default()
    })
    .await;
    let profile = tempfile::tempdir().expect("a profile dir");
    let (_driver, c) = browser(profile.path()).await;
    c.goto(&s.url("/")).await.expect("opens the page");
    wait_for(
        &c,
        "a pair",
        "return document.getElementById('caption').textContent.indexOf('Loading') < 0",
        Duration::from_secs(20),
    )
    .await;
    let caption = c
        .find(Locator::Id("caption"))
        .await
        .expect("the caption")
        .text()
        .await
        .expect("text");
    assert!(
        caption == "a lively jig in d major" || caption == "a slow air in e minor, flute",
        "{caption}"
    );
    // Both clips drawn as sheet music by the bundled abcjs (SVG), nothing from elsewhere.
    wait_for(
        &c,
        "sheet music",
        "return document.querySelectorAll('#score-a svg').length > 0 && document.querySelectorAll('#score-b svg').length > 0",
        Duration::from_secs(10),
    )
    .await;
    // Before listening the buttons are closed, and a vote sent anyway is refused.
    let disabled = c
        .execute("return document.getElementById('vote-a').disabled", vec![])
        .await
        .expect("runs");
    assert_eq!(disabled.as_bool(), Some(true));
    let refused = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               const csrf = document.querySelector('meta[name="csrf-token"]').content;
               fetch('/api/pair').then(r => r.json()).then(p =>
                 fetch('/api/vote', {method: 'POST', credentials: 'same-origin',
                   headers: {'Content-Type': 'application/json', 'x-csrf-token': csrf},
                   body: JSON.stringify({pair: p.pair, outcome: 'a'})}))
               .then(r => r.json().then(b => done([r.status, b.error])));"#,
            vec![],
        )
        .await
        .expect("runs");
    assert_eq!(refused[0].as_u64(), Some(422), "{refused:?}");
    assert!(
        refused[1]
            .as_str()
            .unwrap_or("")
            .contains("listen to both clips first"),
        "{refused:?}"
    );
    assert_eq!(s.db.last_vote_id().await.expect("reads"), 0);

    screenshot_if_asked(&c, "feedback-desktop.png").await;

    play_both(&c).await;
    c.find(Locator::Id("comment"))
        .await
        .expect("the comment box")
        .send_keys("B has the better lilt")
        .await
        .expect("types");
    vote_for(&c, "b").await;

    let votes =
        s.db.decisive_votes(VoteFilter::default())
            .await
            .expect("reads");
    assert_eq!(votes.len(), 1, "one vote stored");
    assert!(!votes[0].a_won);
    assert_eq!(votes[0].comment.as_deref(), Some("B has the better lilt"));
    assert!(votes[0].rater_id.starts_with("web-"));
    assert_eq!(
        s.db.vote_counts(VoteFilter::default())
            .await
            .expect("counts")
            .b,
        1
    );

    if let Ok(dir) = std::env::var("FEEDBACK_TEST_SCREENSHOTS") {
        c.set_window_size(390, 844).await.expect("resizes");
        wait_for(
            &c,
            "the next pair",
            "return document.querySelectorAll('#score-b svg').length > 0",
            Duration::from_secs(10),
        )
        .await;
        let png = c.screenshot().await.expect("a screenshot");
        std::fs::write(std::path::Path::new(&dir).join("feedback-phone.png"), png).expect("writes");
    }
    c.close().await.expect("closes the browser");
    s.stop().await;
}

/// A MusicGen source in the browser (issue "Hear it", item 4): the page offers each clip's
/// decoded WAV instead of sheet music, MIDI and ABC, the player loads it (16 kHz from the
/// graded test codec), the keyboard plays both, and the vote is stored with the clips' codes.
#[tokio::test]
#[ignore = "needs chromium and chromedriver; .ci/run installs them and runs it"]
async fn a_listener_votes_on_musicgen_clips_heard_through_the_codec() {
    let f = FeedbackConfig {
        min_listen_seconds: 1.0,
        ..FeedbackConfig::default()
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    // Two-second clips (100 frames at 50 a second).
    let source = common::musicgen_source(&f, 100, dir.path());
    let s = common::start_source(f, None, None, source).await;
    let profile = tempfile::tempdir().expect("a profile dir");
    let (_driver, c) = browser(profile.path()).await;
    c.goto(&s.url("/")).await.expect("opens the page");
    wait_for(
        &c,
        "a pair",
        "return document.getElementById('caption').textContent.indexOf('Loading') < 0",
        Duration::from_secs(30),
    )
    .await;
    // No notation; the WAV is offered and the player knows its length.
    let layout = c
        .execute(
            "const hidden = id => document.getElementById(id).hidden;
             return [hidden('score-a'), hidden('notation-a'), hidden('wav-a'), hidden('score-b'),
                     document.getElementById('wav-b').getAttribute('href')];",
            vec![],
        )
        .await
        .expect("runs");
    assert_eq!(layout[0].as_bool(), Some(true), "{layout:?}");
    assert_eq!(layout[1].as_bool(), Some(true), "{layout:?}");
    assert_eq!(layout[2].as_bool(), Some(false), "{layout:?}");
    assert_eq!(layout[3].as_bool(), Some(true), "{layout:?}");
    assert!(
        layout[4].as_str().unwrap_or("").ends_with(".wav"),
        "{layout:?}"
    );
    wait_for(
        &c,
        "the players to load both WAVs",
        "const a = document.getElementById('audio-a'), b = document.getElementById('audio-b');
         return Math.abs(a.duration - 2) < 0.01 && Math.abs(b.duration - 2) < 0.01;",
        Duration::from_secs(20),
    )
    .await;
    let disabled = c
        .execute("return document.getElementById('vote-a').disabled", vec![])
        .await
        .expect("runs");
    assert_eq!(disabled.as_bool(), Some(true));
    screenshot_if_asked(&c, "feedback-musicgen.png").await;

    play_both(&c).await;
    vote_for(&c, "a").await;
    let votes =
        s.db.decisive_votes(VoteFilter::default())
            .await
            .expect("reads");
    assert_eq!(votes.len(), 1, "one vote stored");
    assert!(votes[0].a_won);
    assert_eq!(votes[0].a.codebooks, Some(4));
    assert_eq!(votes[0].a.tokens.len(), 400);
    c.close().await.expect("closes the browser");
    s.stop().await;
}
