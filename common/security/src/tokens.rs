//! Bearer tokens with roles, checked by every RPC handler.
//!
//! A server's `security.tokens_file` lists `ROLE TOKEN` lines; a call carries
//! `authorization: Bearer TOKEN`. Tokens are kept only as BLAKE3 hashes and compared as
//! hashes (constant time). The file is re-read when it changes (checked at most every two
//! seconds), so a token is rotated by adding the new one, moving clients over, and removing
//! the old one, without restarting anything. Health and reflection stay open (probes, and
//! schemas that are public anyway); the metrics port is a separate listener.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tonic::Status;
use tonic::metadata::MetadataValue;

/// Who a caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Samples, scores, pushes and follows the parameters.
    Actor,
    /// Reads progress and the server's description: dashboards, `musicrl local`, scripts.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "actor" => Some(Self::Actor),
            "operator" => Some(Self::Operator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Actor => "actor",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

/// What an RPC does, and so which roles may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// LearnerService.PushTrajectories.
    Push,
    /// LearnerService.SubscribeParameters (the full weights).
    Subscribe,
    /// RewardService.Score.
    Score,
    /// LearnerService.Status, RewardService.Info.
    Read,
}

impl Permission {
    pub fn allows(self, role: Role) -> bool {
        matches!(
            (self, role),
            (_, Role::Admin)
                | (Self::Push | Self::Subscribe | Self::Score, Role::Actor)
                | (Self::Read, Role::Actor | Role::Operator)
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Push => "push trajectories",
            Self::Subscribe => "subscribe to parameters",
            Self::Score => "score",
            Self::Read => "read status",
        }
    }
}

#[derive(Debug)]
struct Loaded {
    entries: Vec<(Role, blake3::Hash)>,
    modified: Option<SystemTime>,
    checked: Instant,
}

/// A server's accepted tokens. An empty path accepts every call.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    /// The counter of refused calls (the role's `*_auth_failures_total`).
    metric: &'static str,
    loaded: Mutex<Loaded>,
}

/// How often the file's modification time is looked at.
const RECHECK: Duration = Duration::from_secs(2);

fn parse_tokens(path: &Path, text: &str) -> musicrl_common::Result<Vec<(Role, blake3::Hash)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(role), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(musicrl_common::Error::invalid(format!(
                "{}:{}: expected `ROLE TOKEN`",
                path.display(),
                i + 1
            )));
        };
        let role = Role::parse(role).ok_or_else(|| {
            musicrl_common::Error::invalid(format!(
                "{}:{}: unknown role {role:?} (actor, operator or admin)",
                path.display(),
                i + 1
            ))
        })?;
        if token.len() < 16 {
            return Err(musicrl_common::Error::invalid(format!(
                "{}:{}: a token needs at least 16 characters",
                path.display(),
                i + 1
            )));
        }
        out.push((role, blake3::hash(token.as_bytes())));
    }
    if out.is_empty() {
        return Err(musicrl_common::Error::invalid(format!(
            "{}: no tokens (an empty file would lock every client out)",
            path.display()
        )));
    }
    Ok(out)
}

impl TokenStore {
    /// Loads `path` (empty: no authentication). A bad file is an error at start-up; later,
    /// a bad edit is logged and the previous tokens stay in force.
    pub fn open(path: &Path, metric: &'static str) -> musicrl_common::Result<Self> {
        let (entries, modified) = if path.as_os_str().is_empty() {
            (Vec::new(), None)
        } else {
            let text = super::read_secret("security.tokens_file", path)?;
            let text = String::from_utf8_lossy(&text);
            (parse_tokens(path, &text)?, modified(path))
        };
        Ok(Self {
            metric,
            path: path.to_path_buf(),
            loaded: Mutex::new(Loaded {
                entries,
                modified,
                checked: Instant::now(),
            }),
        })
    }

    /// Whether calls need a token.
    pub fn enabled(&self) -> bool {
        !self.path.as_os_str().is_empty()
    }

    /// The caller's role, or UNAUTHENTICATED / PERMISSION_DENIED.
    pub fn check<T>(&self, request: &tonic::Request<T>, need: Permission) -> Result<(), Status> {
        if !self.enabled() {
            return Ok(());
        }
        let Some(value) = request.metadata().get("authorization") else {
            metrics::counter!(self.metric, "reason" => "missing").increment(1);
            return Err(Status::unauthenticated(
                "this server needs a bearer token: send `authorization: Bearer TOKEN`",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = token else {
            metrics::counter!(self.metric, "reason" => "malformed").increment(1);
            return Err(Status::unauthenticated(
                "the authorization header must be `Bearer TOKEN`",
            ));
        };
        let hash = blake3::hash(token.as_bytes());
        let role = {
            let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            self.reload_if_changed(&mut loaded);
            // Hash equality is constant time; every entry is compared.
            loaded
                .entries
                .iter()
                .filter(|(_, h)| *h == hash)
                .map(|(r, _)| *r)
                .max()
        };
        match role {
            None => {
                metrics::counter!(self.metric, "reason" => "unknown_token").increment(1);
                Err(Status::unauthenticated("unknown or revoked token"))
            }
            Some(role) if !need.allows(role) => {
                metrics::counter!(self.metric, "reason" => "permission").increment(1);
                Err(Status::permission_denied(format!(
                    "a token of role {} may not {}",
                    role.name(),
                    need.name()
                )))
            }
            Some(_) => Ok(()),
        }
    }

    fn reload_if_changed(&self, loaded: &mut Loaded) {
        if loaded.checked.elapsed() < RECHECK {
            return;
        }
        loaded.checked = Instant::now();
        let now = modified(&self.path);
        if now == loaded.modified {
            return;
        }
        match std::fs::read_to_string(&self.path)
            .map_err(|e| musicrl_common::Error::io(&self.path, e))
            .and_then(|t| parse_tokens(&self.path, &t))
        {
            Ok(entries) => {
                tracing::info!(path = %self.path.display(), tokens = entries.len(), "reloaded tokens");
                loaded.entries = entries;
                loaded.modified = now;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot reload tokens; keeping the previous ones");
                loaded.modified = now;
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A client's token, read from `security.token_file` (empty: none).
pub fn client_token(
    path: &Path,
) -> musicrl_common::Result<Option<MetadataValue<tonic::metadata::Ascii>>> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let text = super::read_secret("security.token_file", path)?;
    let text = String::from_utf8_lossy(&text);
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(musicrl_common::Error::invalid(format!(
            "security.token_file {}: the first line holds no token",
            path.display()
        )));
    }
    MetadataValue::try_from(format!("Bearer {token}"))
        .map(Some)
        .map_err(|_| {
            musicrl_common::Error::invalid(format!(
                "security.token_file {}: the token is not printable ASCII",
                path.display()
            ))
        })
}

/// Adds the client's token (if any) to a request.
pub fn authorize<T>(
    request: &mut tonic::Request<T>,
    token: Option<&MetadataValue<tonic::metadata::Ascii>>,
) {
    if let Some(t) = token {
        request.metadata_mut().insert("authorization", t.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(token: Option<&str>) -> tonic::Request<()> {
        let mut r = tonic::Request::new(());
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    }

    #[test]
    fn roles_grant_exactly_their_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            "# comment\nactor actor-token-0123456789\noperator ops-token-0123456789\n",
        )
        .unwrap();
        let store = TokenStore::open(&path, "t").unwrap();
        let code = |t: Option<&str>, p| store.check(&request(t), p).map_err(|s| s.code());
        assert_eq!(
            code(Some("actor-token-0123456789"), Permission::Push),
            Ok(())
        );
        assert_eq!(
            code(Some("actor-token-0123456789"), Permission::Read),
            Ok(())
        );
        assert_eq!(
            code(Some("ops-token-0123456789"), Permission::Push),
            Err(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            code(Some("ops-token-0123456789"), Permission::Subscribe),
            Err(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            code(None, Permission::Read),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code(Some("forged-token-0123456789"), Permission::Read),
            Err(tonic::Code::Unauthenticated)
        );
        let open = TokenStore::open(Path::new(""), "t").unwrap();
        assert!(open.check(&request(None), Permission::Push).is_ok());
    }

    #[test]
    fn a_rotated_tokens_file_takes_effect_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "actor old-token-0123456789\n").unwrap();
        let store = TokenStore::open(&path, "t").unwrap();
        let ok = |t: &str| store.check(&request(Some(t)), Permission::Push).is_ok();
        assert!(ok("old-token-0123456789") && !ok("new-token-0123456789"));
        // Rotate: the new token in, the old one out; a broken edit keeps what was in force.
        std::fs::write(&path, "actor new-token-0123456789\n").unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(100));
        assert!(ok("new-token-0123456789") && !ok("old-token-0123456789"));
        std::fs::write(&path, "nonsense\n").unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(100));
        assert!(
            ok("new-token-0123456789"),
            "a bad edit keeps the previous tokens"
        );
    }

    #[test]
    fn a_bad_tokens_file_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            "actor ok-token-0123456789\nroot x-0123456789abcdef\n",
        )
        .unwrap();
        let e = TokenStore::open(&path, "t").unwrap_err().to_string();
        assert!(e.contains(":2: unknown role \"root\""), "{e}");
        std::fs::write(&path, "actor short\n").unwrap();
        let e = TokenStore::open(&path, "t").unwrap_err().to_string();
        assert!(e.contains("at least 16"), "{e}");
    }
}
