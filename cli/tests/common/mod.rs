//! Helpers shared by the CLI's scenario tests: running the binary with a deadline, and the
//! tiny policy their configurations use.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `[policy]` of every tiny test configuration, as TOML.
pub const TINY_POLICY: &str = r#"
[policy]
vocab_size = 16
max_tokens = 12
d_model = 32
n_heads = 2
n_layers = 1
d_ff = 64
caption_buckets = 64
max_caption_words = 8
end_token = 16   # none: sequences run to max_tokens, as the token-fraction scorer assumes
"#;

/// The same policy as a `PolicyConfig` (to load its checkpoints).
pub fn tiny_policy() -> musicrl_config::PolicyConfig {
    musicrl_config::Config::from_toml(TINY_POLICY)
        .expect("TINY_POLICY parses")
        .policy
}

/// A path inside the repository (tests run from the crate's folder).
pub fn repo(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
        .display()
        .to_string()
}

/// Runs the binary to completion, killing it (and failing) if it hangs.
pub fn run_to_end(cmd: &mut Command) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("musicrl starts");
    let deadline = Instant::now() + Duration::from_secs(900);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "musicrl hung; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}
