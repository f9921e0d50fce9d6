//! What every long-running role shares: shutdown signals, the ready file, the outcome file.

use std::net::SocketAddr;
use std::path::Path;

use serde::Serialize;

use crate::plan::Supervision;

/// Resolves on Ctrl-C, SIGTERM (what Kubernetes sends), or — with `--stop-on-stdin-close` —
/// when standard input reaches end of file.
pub async fn shutdown_signal(stop_on_stdin_close: bool) {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    };
    let stdin_closed = async {
        if !stop_on_stdin_close {
            return std::future::pending::<()>().await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // A plain thread (not tokio's blocking pool) so a pending read never delays exit.
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
        let _ = rx.await;
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("interrupted; shutting down"),
        () = term => tracing::info!("SIGTERM; shutting down"),
        () = stdin_closed => tracing::info!("supervisor closed stdin; shutting down"),
    }
}

/// The addresses a process bound, as written to `--ready-file`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Ready {
    pub grpc: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub pid: u32,
}

pub fn write_ready(
    args: &Supervision,
    grpc: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
) -> anyhow::Result<()> {
    if let Some(path) = &args.ready_file {
        let ready = Ready {
            grpc,
            metrics,
            pid: std::process::id(),
        };
        write_json(path, &ready)?;
    }
    Ok(())
}

pub fn write_outcome<T: Serialize>(args: &Supervision, outcome: &T) -> anyhow::Result<()> {
    if let Some(path) = &args.outcome_file {
        write_json(path, outcome)?;
    }
    Ok(())
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    musicrl_config::fsutil::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Makes `out` an empty folder for `command` (e.g. "musicrl experiment"): refuses a non-empty
/// folder without `marker` (one the command did not write), otherwise replaces it and writes
/// the marker.
pub fn replace_output_folder(out: &Path, marker: &str, command: &str) -> anyhow::Result<()> {
    let occupied = out.exists() && std::fs::read_dir(out)?.next().is_some();
    if occupied && !out.join(marker).exists() {
        anyhow::bail!(
            "{} exists, is not empty and was not written by `{command}`; choose another --out",
            out.display()
        );
    }
    if out.exists() {
        std::fs::remove_dir_all(out)
            .map_err(|e| anyhow::anyhow!("cannot clear {}: {e}", out.display()))?;
    }
    std::fs::create_dir_all(out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    std::fs::write(
        out.join(marker),
        format!("written by `{command}`; a rerun replaces this folder\n"),
    )?;
    Ok(())
}

/// Keeps freed heap memory in the process instead of handing it back to the kernel at every
/// free (glibc only; elsewhere a no-op). burn's CPU backend allocates a fresh buffer for
/// every tensor, megabytes each at the learner's shape; under glibc's defaults those come
/// from `mmap` and go back at once, so every update page-faulted its whole working set
/// again: 10–20% of the learner's profile (`docs/performance.md`). With one threshold fixed
/// at 256 MiB (only larger buffers, such as a 100 M-parameter blob, are mapped) and
/// trimming above 1 GiB of free heap, the process keeps its peak working set.
#[allow(unsafe_code)]
pub fn keep_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocator parameters; it is called before any
    // thread of ours starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
