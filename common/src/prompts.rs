//! Prompt sets: the captions actors sample for.

use std::path::Path;

use crate::error::{Error, Result};

/// The built-in prompt set of the embedded default (folk-tune style captions).
pub const BUILTIN_PROMPTS: &[&str] = &[
    "a lively reel in D major played on fiddle",
    "a gentle slow air in E minor on flute",
    "a bouncy jig in G major for plucked strings",
    "a stately march in A major on organ",
    "a waltz in three four time in D major",
    "a hornpipe in B minor with a steady swing",
    "a polka in two four time on fiddle",
    "a plaintive air in the dorian mode on flute",
    "a quick slip jig in nine eight time",
    "an Irish reel from O'Neill's collection",
    "a German folk song in F major, moderate tempo",
    "a Scottish strathspey on fiddle",
];

/// Loads a prompt file (one caption a line, blank lines and `#` comments skipped), or the
/// built-in set when `path` is empty.
pub fn load_prompts(path: &Path) -> Result<Vec<String>> {
    if path.as_os_str().is_empty() {
        return Ok(BUILTIN_PROMPTS.iter().map(|s| s.to_string()).collect());
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
