//! Small filesystem helpers.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A file that could not be written, and why.
#[derive(Debug, thiserror::Error)]
#[error("io error at {path}: {error}")]
pub struct FileError {
    pub path: PathBuf,
    pub error: std::io::Error,
}

fn io(path: &Path, error: std::io::Error) -> FileError {
    FileError {
        path: path.to_path_buf(),
        error,
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// crash never leaves a half-written file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    Ok(())
}

/// A wall-clock time as RFC 3339 in UTC with milliseconds (`2026-12-01T18:40:05.123Z`), and
/// as seconds since the Unix epoch; what `history.jsonl` rows carry.
pub fn wall_clock(now: std::time::SystemTime) -> (String, f64) {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days: the proleptic Gregorian date of a day number.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    );
    (text, since.as_secs_f64())
}

#[cfg(test)]
mod clock_tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn wall_clock_formats_known_instants() {
        assert_eq!(super::wall_clock(UNIX_EPOCH).0, "1970-01-01T00:00:00.000Z");
        // 2024-02-29T12:34:56.789Z (a leap day) = 1709210096.789 s.
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        let (text, secs) = super::wall_clock(t);
        assert_eq!(text, "2024-02-29T12:34:56.789Z");
        assert!((secs - 1_709_210_096.789).abs() < 1e-6);
        let t = UNIX_EPOCH + Duration::from_secs(1_798_761_599); // 2026-12-31T23:59:59Z
        assert_eq!(super::wall_clock(t).0, "2026-12-31T23:59:59.000Z");
    }
}
