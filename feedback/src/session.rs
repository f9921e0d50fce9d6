//! Sessions, rater ids and CSRF tokens.
//!
//! A browser gets a session the server issued and signed (`musicrl_session`, HttpOnly,
//! SameSite=Strict): `ID.MAC`, the MAC a keyed hash of the random id under the server
//! secret, so a client cannot make up sessions of its own (a cookie that does not verify is
//! ignored and a new session issued, which is rate-limited per client address). The rater id
//! stored with votes is another keyed hash of the session (`web-…`), so the database holds
//! no personal data and cannot be joined back to a cookie without the server secret. The
//! CSRF token is a third; every POST must carry it in the `x-csrf-token` header (a
//! cross-site page can send the cookie but cannot read the token).

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
        same(&self.csrf(session), token)
    }

    /// The cookie value of a session this server issues: `ID.MAC`.
    pub fn session_cookie(&self, session: &str) -> String {
        format!("{session}.{}", &self.keyed("session", session)[..32])
    }

    /// The session of a request: its `musicrl_session` cookie, if well formed and signed
    /// by this server's secret (None for a made-up or tampered cookie).
    pub fn session_of(&self, headers: &HeaderMap) -> Option<String> {
        let value = cookie(headers)?;
        let (id, mac) = value.split_once('.')?;
        let hex32 = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
        (hex32(id) && hex32(mac) && same(&self.keyed("session", id)[..32], mac))
            .then(|| id.to_string())
    }
}

/// Equal strings, compared in constant time for equal lengths.
fn same(want: &str, got: &str) -> bool {
    want.len() == got.len()
        && want
            .bytes()
            .zip(got.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A new session id: 128 random bits.
pub fn new_session() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The raw `musicrl_session` cookie of a request.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The `Set-Cookie` header of a session's signed cookie value.
pub fn set_cookie(cookie_value: &str) -> String {
    format!("{COOKIE}={cookie_value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=31536000")
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
    fn only_a_session_this_server_signed_is_read() {
        let secret = Secret([1; 32]);
        let id = "0123456789abcdef0123456789abcdef";
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                axum::http::header::COOKIE,
                format!("theme=dark; musicrl_session={value}")
                    .parse()
                    .expect("a header"),
            );
            h
        };
        let signed = secret.session_cookie(id);
        assert_eq!(secret.session_of(&with(&signed)).as_deref(), Some(id));
        // Made up by the client: an unsigned id, another id under this MAC, another
        // server's signature, junk.
        assert_eq!(secret.session_of(&with(id)), None);
        let other = "f123456789abcdef0123456789abcdef";
        let (_, mac) = signed.split_once('.').expect("ID.MAC");
        assert_eq!(secret.session_of(&with(&format!("{other}.{mac}"))), None);
        assert_eq!(
            secret.session_of(&with(&Secret([2; 32]).session_cookie(id))),
            None
        );
        assert_eq!(secret.session_of(&with("../../x")), None);
        assert_eq!(secret.session_of(&HeaderMap::new()), None);
    }
}
