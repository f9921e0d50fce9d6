//! Sessions, rater ids and CSRF tokens.
//!
//! A browser gets a random session cookie (`musicrl_session`, HttpOnly, SameSite=Strict). The
//! rater id stored with votes is a keyed hash of it (`web-…`), so the database holds no
//! personal data and cannot be joined back to a cookie without the server secret. The CSRF
//! token is another keyed hash of the session; every POST must carry it in the
//! `x-csrf-token` header (a cross-site page can send the cookie but cannot read the token).

use axum::http::HeaderMap;

pub const COOKIE: &str = "musicrl_session";

/// The server secret that keys rater ids and CSRF tokens.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// A secret derived from file contents (at least 32 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let trimmed = bytes.trim_ascii();
        (trimmed.len() >= 32).then(|| Self(*blake3::hash(trimmed).as_bytes()))
    }

    pub fn random() -> Self {
        Self(rand::random())
    }

    fn keyed(&self, context: &str, session: &str) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(context.as_bytes());
        h.update(&[0]);
        h.update(session.as_bytes());
        h.finalize().to_hex().to_string()
    }

    /// The opaque rater id of a session.
    pub fn rater_id(&self, session: &str) -> String {
        format!("web-{}", &self.keyed("rater", session)[..20])
    }

    /// The CSRF token of a session.
    pub fn csrf(&self, session: &str) -> String {
        self.keyed("csrf", session)[..32].to_string()
    }

    /// Whether `token` is the session's CSRF token (compared in constant time).
    pub fn csrf_ok(&self, session: &str, token: &str) -> bool {
        let want = self.csrf(session);
        want.len() == token.len()
            && want
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// A new session id: 128 random bits.
pub fn new_session() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The session cookie of a request, if it has a well-formed one.
pub fn session_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value of a session.
pub fn set_cookie(session: &str) -> String {
    format!("{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age=31536000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rater_ids_and_tokens_depend_on_session_and_secret() {
        let (s1, s2) = (Secret([1; 32]), Secret([2; 32]));
        let session = "0123456789abcdef0123456789abcdef";
        assert_eq!(s1.rater_id(session), s1.rater_id(session));
        assert_ne!(s1.rater_id(session), s2.rater_id(session));
        assert_ne!(s1.rater_id(session), s1.rater_id(&new_session()));
        assert!(s1.csrf_ok(session, &s1.csrf(session)));
        assert!(!s1.csrf_ok(session, &s2.csrf(session)));
        assert!(!s1.csrf_ok(session, ""));
        assert!(s1.rater_id(session).starts_with("web-"));
        assert!(Secret::from_bytes(b"short").is_none());
    }

    #[test]
    fn only_a_well_formed_session_cookie_is_read() {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "theme=dark; musicrl_session=0123456789abcdef0123456789abcdef"
                .parse()
                .expect("a header"),
        );
        assert_eq!(
            session_of(&h).as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        h.insert(
            axum::http::header::COOKIE,
            "musicrl_session=../../x".parse().expect("a header"),
        );
        assert_eq!(session_of(&h), None);
    }
}
