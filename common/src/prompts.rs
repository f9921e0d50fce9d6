//! Prompt sets: the captions actors sample for, read from a prompt file.
//!
//! The embedded default's files are `data/prompts/train.txt` (RL: one caption for each
//! training-split tune of the corpus) and `data/prompts/test.txt` (evaluation: test-split
//! tunes only), written by `musicrl prompts`.

use std::path::Path;

use crate::error::{Error, Result};

/// Loads a prompt file: one caption a line, blank lines and `#` comments skipped.
pub fn load_prompts(path: &Path) -> Result<Vec<String>> {
    if path.as_os_str().is_empty() {
        return Err(Error::invalid(
            "no prompt file given: name one (one caption a line), e.g. data/prompts/train.txt"
                .to_string(),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if prompts.is_empty() {
        return Err(Error::invalid(format!(
            "prompt file {} has no captions",
            path.display()
        )));
    }
    Ok(prompts)
}
