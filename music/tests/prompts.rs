//! The prompt sets: RL prompts from training-split tunes only, evaluation prompts from
//! test-split tunes only, and the shipped files equal to what the generator writes.

use std::path::Path;

use musicrl_music::corpus::{self, Split};
use musicrl_music::prompts::{
    EVALUATION_PROMPTS, SEED, evaluation_prompts, selection_prompts, states_key_or_meter,
    training_prompts,
};

fn shipped(name: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/prompts")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn rl_prompts_come_from_the_training_split_and_evaluation_prompts_from_the_test_split() {
    let tunes = corpus::load(&corpus::repo_path()).expect("the corpus loads");
    let train = training_prompts(&tunes, SEED);
    assert_eq!(
        train.len(),
        tunes.iter().filter(|t| t.split == Split::Train).count()
    );
    let distinct: std::collections::BTreeSet<&String> = train.iter().collect();
    assert!(
        distinct.len() > 5000,
        "{} distinct RL prompts",
        distinct.len()
    );
    let test = evaluation_prompts(&tunes, EVALUATION_PROMPTS, SEED);
    assert_eq!(test.len(), EVALUATION_PROMPTS);

    // Split discipline: without training tunes there are no RL prompts, without test tunes
    // no evaluation prompts, whatever else the corpus holds.
    let only = |s: Split| -> Vec<corpus::Tune> {
        tunes.iter().filter(|t| t.split == s).cloned().collect()
    };
    let not_train: Vec<corpus::Tune> = tunes
        .iter()
        .filter(|t| t.split != Split::Train)
        .cloned()
        .collect();
    assert!(training_prompts(&not_train, SEED).is_empty());
    let not_test: Vec<corpus::Tune> = tunes
        .iter()
        .filter(|t| t.split != Split::Test)
        .cloned()
        .collect();
    assert!(evaluation_prompts(&not_test, EVALUATION_PROMPTS, SEED).is_empty());
    // Every evaluation prompt states its tune's key or meter (what the judge can check).
    let test_tunes = only(Split::Test);
    for p in &test {
        assert!(
            test_tunes.iter().any(|t| states_key_or_meter(t, p)),
            "{p} states no key or meter of a test tune"
        );
    }

    // The shipped files are exactly the generator's output (regenerate: `musicrl prompts`).
    assert_eq!(
        shipped("train.txt"),
        train,
        "data/prompts/train.txt is stale"
    );
    assert_eq!(shipped("test.txt"), test, "data/prompts/test.txt is stale");

    // The selection prompts caption other test-split tunes than the judge's, and come from
    // the same generator (its first EVALUATION_PROMPTS are the judge's).
    let select = selection_prompts(&tunes, EVALUATION_PROMPTS, SEED);
    assert_eq!(select.len(), EVALUATION_PROMPTS);
    let both = evaluation_prompts(&tunes, 2 * EVALUATION_PROMPTS, SEED);
    assert_eq!(&both[..EVALUATION_PROMPTS], &test[..]);
    assert_eq!(&both[EVALUATION_PROMPTS..], &select[..]);
    for p in &select {
        assert!(
            test_tunes.iter().any(|t| states_key_or_meter(t, p)),
            "{p} states no key or meter of a test tune"
        );
    }
    assert_eq!(
        shipped("select.txt"),
        select,
        "data/prompts/select.txt is stale"
    );
}
