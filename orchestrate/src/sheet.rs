//! Sheet music on the static pages musicrl writes (`generate`'s index, the run and experiment
//! reports): abcjs — the copy the voting page bundles, from npm — is written beside the page
//! and draws each melody's ABC notation in the browser; without JavaScript the ABC text shows.

use std::path::Path;

use anyhow::Context;

/// The script's file name beside a page.
pub const SCRIPT: &str = "abcjs-basic-min.js";

/// What a page appends before `</body>`: the script, then one call per score.
pub const RENDER: &str = "<script src=\"abcjs-basic-min.js\"></script>\n<script>\
if (window.ABCJS) { for (const d of document.querySelectorAll(\"div.score\")) { \
window.ABCJS.renderAbc(d, d.dataset.abc, { responsive: \"resize\" }); } }</script>\n";

/// Writes abcjs into `dir`, beside a page that uses [`score`].
pub fn write_script(dir: &Path) -> anyhow::Result<()> {
    let (_, body) =
        musicrl_feedback::assets::file(SCRIPT).context("the voting page bundles abcjs")?;
    let path = dir.join(SCRIPT);
    musicrl_config::fsutil::write_atomic(&path, body.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A score for a page: the tune without its title line (the page says what it is), drawn by
/// [`RENDER`], its ABC text until then.
pub fn score(abc: &str) -> String {
    let untitled: Vec<&str> = abc.lines().filter(|l| !l.starts_with("T:")).collect();
    let text = esc(&untitled.join("\n"));
    format!("<div class=\"score\" data-abc=\"{text}\"><pre>{text}</pre></div>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_score_keeps_the_tune_and_drops_the_title() {
        let html = score("X:1\nT:a \"jig\" <b>\nM:6/8\nK:D\nd2e|]\n");
        assert!(!html.contains("jig"), "{html}");
        assert!(
            html.contains("data-abc=\"X:1\nM:6/8\nK:D\nd2e|]\""),
            "{html}"
        );
        let dir = tempfile::tempdir().expect("a temp dir");
        write_script(dir.path()).expect("writes");
        let js = std::fs::read_to_string(dir.path().join(SCRIPT)).expect("reads");
        assert!(js.contains("renderAbc"), "abcjs itself");
    }
}
