//! `musicrl feedback loop --quick` as a user runs it: two on-policy rounds and one off-policy
//! round, every vote cast through the feedback service's HTTP API by the bot, each round's
//! preference model trained on that round's votes (the second continuing from the first),
//! RL resumed on it, and both arms judged. The database is read back to check what the loop
//! claims: the second round's pairs were sampled from the first round's RL policy and scored
//! by the first round's model.

mod common;

use std::process::Command;

use common::{TINY_POLICY, repo, run_to_end};

#[test]
fn quick_loop_votes_through_the_api_retrains_on_new_votes_and_continues_rl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    let config = p.join("loop.toml");
    std::fs::write(
        &config,
        format!(
            r#"{TINY_POLICY}
[learner]
init_policy = ""
value_warmup_steps = 1
lr_warmup_steps = 0
batch_size = 8
learning_rate = 0.01
seed = 7

[actor]
batch_size = 8
max_backoff_seconds = 0.5
prompts = {prompts:?}

[pretrain]
corpus = {corpus:?}

[experiment]
judge_prompts = {test:?}
"#,
            prompts = repo("data/prompts/train.txt"),
            corpus = repo("data/corpus/tunes.jsonl.gz"),
            test = repo("data/prompts/test.txt"),
        ),
    )
    .expect("write");
    let out = p.join("loop");
    let run = run_to_end(
        Command::new(env!("CARGO_BIN_EXE_musicrl"))
            .arg("--config")
            .arg(&config)
            .args(["feedback", "loop", "--quick", "--population"])
            .arg(repo("models/rewards/preference/population.json"))
            .arg("--out")
            .arg(&out)
            .current_dir(p),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "musicrl feedback loop failed:\n{stderr}"
    );

    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("results.json"),
    )
    .expect("JSON");
    let arms = results["arms"].as_array().expect("arms");
    assert_eq!(arms.len(), 2, "{results}");
    let (on, off) = (&arms[0], &arms[1]);
    assert_eq!(on["name"], "on-policy");
    assert_eq!(off["name"], "off-policy");
    let on_rounds = on["rounds"].as_array().expect("rounds");
    let off_rounds = off["rounds"].as_array().expect("rounds");
    assert_eq!((on_rounds.len(), off_rounds.len()), (2, 1));
    // The same budget: 24 votes and 4 steps an arm.
    let votes =
        |rs: &[serde_json::Value]| rs.iter().map(|r| r["votes"].as_u64().unwrap()).sum::<u64>();
    assert_eq!(votes(on_rounds), 24);
    assert_eq!(votes(off_rounds), 24);
    assert_eq!(on_rounds[1]["steps_to"], 4);
    assert_eq!(off_rounds[0]["steps_to"], 4);
    // Round 2 voted on round 1's RL policy, and its model continued from round 1's.
    assert_eq!(on_rounds[0]["policy_step"], 0);
    assert_eq!(on_rounds[1]["policy_step"], on_rounds[0]["steps_to"]);
    assert_eq!(on_rounds[1]["model_parent"], on_rounds[0]["model_version"]);
    assert_ne!(on_rounds[1]["model_version"], on_rounds[0]["model_version"]);
    // The first round had no model to agree with; the second's is a share.
    assert!(on_rounds[0]["previous_model_agreement"].is_null());
    let agreed = on_rounds[1]["previous_model_agreement"]
        .as_f64()
        .expect("round 2 agreement");
    assert!((0.0..=1.0).contains(&agreed), "{agreed}");
    for arm in arms {
        let a = arm["probe_agreement"].as_f64().expect("probe agreement");
        assert!((0.0..=1.0).contains(&a), "{arm}");
        assert_eq!(arm["probe_votes"], 8);
    }
    // Three listener verdicts, each over 4 prompts × 2 pairs; one panel report of 3 models.
    let listeners = results["listeners"].as_array().expect("listeners");
    assert_eq!(listeners.len(), 3);
    for v in listeners {
        assert_eq!(v["pairs"], 8, "{v}");
    }
    assert_eq!(
        results["panel"][0]["models"].as_array().map(Vec::len),
        Some(3)
    );
    assert!(out.join("samples").join("on-policy-1.jsonl").is_file());

    // The on-policy database, read back.
    let db_url = on["db"].as_str().expect("db").to_string();
    let (votes, versions) = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let db = musicrl_prefdb::Db::open(&db_url).await.expect("opens");
            let votes = db
                .decisive_votes(musicrl_prefdb::VoteFilter::default())
                .await
                .expect("votes");
            let versions = db.model_versions().await.expect("versions");
            db.close().await;
            (votes, versions)
        });
    assert_eq!(votes.len(), 24, "every bot vote is decisive and stored");
    let round_one = on_rounds[0]["votes"].as_u64().unwrap() as usize;
    let step_one = on_rounds[0]["steps_to"].as_i64().unwrap();
    for (i, v) in votes.iter().enumerate() {
        for clip in [&v.a, &v.b] {
            if i < round_one {
                assert_eq!(clip.policy_version, None, "θ0's clips have no learner step");
                assert!(clip.scores.is_empty(), "no model scored round 1");
            } else {
                assert_eq!(
                    clip.policy_version,
                    Some(step_one),
                    "round 2 samples round 1's policy"
                );
                assert!(clip.scores.contains_key("preference"), "{:?}", clip.scores);
                assert!(clip.scores.contains_key("reward"));
            }
        }
    }
    assert!(votes.iter().all(|v| v.rater_id.starts_with("web-")));
    assert_eq!(versions.len(), 2, "one model version a round");
    let ids: Vec<&str> = versions.iter().map(|m| m.id.as_str()).collect();
    assert!(ids.contains(&on_rounds[0]["model_version"].as_str().unwrap()));
    let second = versions
        .iter()
        .find(|m| m.id == on_rounds[1]["model_version"].as_str().unwrap())
        .expect("round 2's version");
    assert_eq!(
        second.parent.as_deref(),
        on_rounds[0]["model_version"].as_str()
    );
    assert_eq!(
        second.votes_used as usize,
        24 - round_one,
        "round 2 trained on its own votes only"
    );
}
