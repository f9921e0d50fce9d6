//! Reward seals: a keyed BLAKE3 MAC the reward server attaches to every score and the
//! learner verifies, so a trajectory's reward is known to come from a reward server, for
//! exactly that caption, those tokens and that scorer version.
//!
//! The MAC covers a canonical, length-prefixed encoding of (caption, tokens, reward, each
//! component's name and raw score, scorer version, time of signing, a random nonce); the
//! learner refuses a seal older than `security.reward_seal_max_age_seconds` (an old genuine
//! score replayed), and within that window trains on each seal once ([`SpentSeals`]): a
//! genuine score pushed again under fresh trajectory ids is refused as `replayed_seal`.
//! Keys are symmetric and shared by the reward servers and the learner only (never actors).
//! What a seal does not cover: the behaviour log-probabilities and the policy version,
//! which an actor reports (the importance weights are truncated, so a forged log-probability
//! moves an update by a bounded amount), and the window scores (logged, never trained on).

use std::path::Path;

use musicrl_common::Error;
use musicrl_common::types::RewardSeal;
use musicrl_common::wire::Rejection;

/// What a seal vouches for.
#[derive(Debug, Clone, Copy)]
pub struct SealedContent<'a> {
    pub caption: &'a str,
    pub tokens: &'a [u32],
    pub reward: f32,
    pub components: &'a [(String, f32)],
    pub scorer_version: &'a str,
}

impl SealedContent<'_> {
    fn canonical(&self, signed_at_unix_ms: u64, nonce: &[u8; 16]) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.caption.len() + 4 * self.tokens.len());
        let mut put = |bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        put(b"musicrl.reward-seal.v2");
        put(self.caption.as_bytes());
        let tokens: Vec<u8> = self.tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        put(&tokens);
        put(&self.reward.to_bits().to_le_bytes());
        put(&(self.components.len() as u64).to_le_bytes());
        for (name, value) in self.components {
            put(name.as_bytes());
            put(&value.to_bits().to_le_bytes());
        }
        put(self.scorer_version.as_bytes());
        put(&signed_at_unix_ms.to_le_bytes());
        put(nonce);
        out
    }
}

/// The reward keys: the first seals, every one verifies (rotation: add the new key second,
/// then first on every server, then drop the old one).
#[derive(Debug, Clone, Default)]
pub struct RewardKeys {
    keys: Vec<(String, [u8; 32])>,
}

/// The key id of a key: the first 8 bytes of its BLAKE3 hash, in hex.
fn key_id(key: &[u8; 32]) -> String {
    blake3::hash(key).as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl RewardKeys {
    /// Keys from secrets (each at least 32 bytes), derived with BLAKE3's key derivation.
    pub fn from_secrets<'a>(
        secrets: impl IntoIterator<Item = &'a [u8]>,
    ) -> musicrl_common::Result<Self> {
        let mut keys = Vec::new();
        for (i, s) in secrets.into_iter().enumerate() {
            if s.len() < 32 {
                return Err(Error::invalid(format!(
                    "reward key {} has {} bytes; at least 32 are needed",
                    i + 1,
                    s.len()
                )));
            }
            let key = blake3::derive_key("musicrl reward seal v1", s);
            keys.push((key_id(&key), key));
        }
        Ok(Self { keys })
    }

    /// `security.reward_keys_file`: one secret a line (empty path: no keys).
    pub fn load(path: &Path) -> musicrl_common::Result<Self> {
        if path.as_os_str().is_empty() {
            return Ok(Self::default());
        }
        let text = super::read_secret("security.reward_keys_file", path)?;
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if lines.is_empty() {
            return Err(Error::invalid(format!(
                "security.reward_keys_file {}: no keys",
                path.display()
            )));
        }
        Self::from_secrets(lines.iter().map(|l| l.as_bytes())).map_err(|e| {
            Error::invalid(format!("security.reward_keys_file {}: {e}", path.display()))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seals `content` at `signed_at_unix_ms` with the first key and a fresh random nonce
    /// (None without keys).
    pub fn seal(&self, content: &SealedContent<'_>, signed_at_unix_ms: u64) -> Option<RewardSeal> {
        let (id, key) = self.keys.first()?;
        let nonce: [u8; 16] = rand::random();
        let mac = blake3::keyed_hash(key, &content.canonical(signed_at_unix_ms, &nonce));
        Some(RewardSeal {
            signed_at_unix_ms,
            mac: *mac.as_bytes(),
            key_id: id.clone(),
            nonce,
        })
    }

    /// Checks a seal: made by one of the keys, over exactly `content`, no older than
    /// `max_age_ms` at `now_ms` (and not from more than a minute in the future).
    pub fn verify(
        &self,
        content: &SealedContent<'_>,
        seal: Option<&RewardSeal>,
        now_ms: u64,
        max_age_ms: u64,
    ) -> Result<(), Rejection> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let Some(seal) = seal else {
            return Err(Rejection::new(
                "unsealed_reward",
                "the reward carries no reward-server seal".into(),
            ));
        };
        let Some((_, key)) = self.keys.iter().find(|(id, _)| *id == seal.key_id) else {
            return Err(Rejection::new(
                "unknown_seal_key",
                format!(
                    "sealed with key {:?}, which this learner does not hold",
                    seal.key_id
                ),
            ));
        };
        let expected =
            blake3::keyed_hash(key, &content.canonical(seal.signed_at_unix_ms, &seal.nonce));
        // blake3::Hash compares in constant time.
        if expected != blake3::Hash::from_bytes(seal.mac) {
            return Err(Rejection::new(
                "forged_reward",
                "the seal does not match the caption, tokens, reward and scores".into(),
            ));
        }
        if seal.signed_at_unix_ms.saturating_add(max_age_ms) < now_ms {
            return Err(Rejection::new(
                "expired_seal",
                format!(
                    "sealed {} s ago, more than the {} s allowed",
                    (now_ms - seal.signed_at_unix_ms) / 1000,
                    max_age_ms / 1000
                ),
            ));
        }
        if seal.signed_at_unix_ms > now_ms.saturating_add(60_000) {
            return Err(Rejection::new(
                "expired_seal",
                "sealed more than a minute in the future".into(),
            ));
        }
        Ok(())
    }
}

/// The seals a learner has trained on, each remembered until it would no longer verify
/// (`max_age_ms` after signing), so that a genuine score is trained on once: a replay under
/// fresh trajectory ids is refused. Keyed by the MAC, which covers the seal's random nonce,
/// so two honest trajectories never share one. Saved with every checkpoint
/// ([`SpentSeals::unexpired`]) and restored on resume, so a restarted learner remembers
/// what it trained on up to its checkpoint.
#[derive(Debug, Default)]
pub struct SpentSeals {
    expires_at_ms: std::collections::HashMap<[u8; 32], u64>,
    since_prune: usize,
}

impl SpentSeals {
    /// Spends `seal` (checked by [`RewardKeys::verify`] first): false if it was spent
    /// before and has not expired.
    pub fn spend(&mut self, seal: &RewardSeal, now_ms: u64, max_age_ms: u64) -> bool {
        if self.since_prune >= 4096.max(self.expires_at_ms.len() / 2) {
            self.expires_at_ms.retain(|_, at| *at >= now_ms);
            self.since_prune = 0;
        }
        match self.expires_at_ms.entry(seal.mac) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(seal.signed_at_unix_ms.saturating_add(max_age_ms));
                self.since_prune += 1;
                true
            }
        }
    }

    /// Gives a seal back: its trajectory was not taken after all (the push was cut off
    /// before it was queued, and the actor will send it again under the same id).
    pub fn refund(&mut self, seal: &RewardSeal) {
        self.expires_at_ms.remove(&seal.mac);
    }

    /// The seals still in their window at `now_ms`, for a checkpoint.
    pub fn unexpired(&self, now_ms: u64) -> Vec<SpentSeal> {
        let mut out: Vec<SpentSeal> = self
            .expires_at_ms
            .iter()
            .filter(|(_, at)| **at >= now_ms)
            .map(|(mac, at)| SpentSeal {
                mac: mac.iter().map(|b| format!("{b:02x}")).collect(),
                expires_at_ms: *at,
            })
            .collect();
        out.sort_by(|a, b| a.mac.cmp(&b.mac));
        out
    }

    /// The seals a checkpoint remembered (an entry that is not 32 bytes of hex is skipped).
    pub fn restore(saved: &[SpentSeal]) -> Self {
        let expires_at_ms = saved
            .iter()
            .filter_map(|s| {
                let bytes: Vec<u8> = (0..s.mac.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(s.mac.get(i..i + 2)?, 16).ok())
                    .collect::<Option<_>>()?;
                Some((<[u8; 32]>::try_from(bytes).ok()?, s.expires_at_ms))
            })
            .collect();
        Self {
            expires_at_ms,
            since_prune: 0,
        }
    }

    /// Seals remembered now.
    pub fn len(&self) -> usize {
        self.expires_at_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.expires_at_ms.is_empty()
    }
}

/// A spent seal as a checkpoint keeps it: its MAC in hex and when it expires.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpentSeal {
    pub mac: String,
    pub expires_at_ms: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> RewardKeys {
        RewardKeys::from_secrets([secret.as_bytes()]).unwrap()
    }

    #[test]
    fn a_seal_verifies_only_over_what_it_sealed() {
        let k = keys("0123456789abcdef0123456789abcdef-one");
        let components = vec![("text".to_string(), 0.25f32)];
        let content = SealedContent {
            caption: "a reel in D major",
            tokens: &[3, 4, 5],
            reward: 0.5,
            components: &components,
            scorer_version: "v1",
        };
        let seal = k.seal(&content, 1_000_000).unwrap();
        assert_eq!(k.verify(&content, Some(&seal), 1_000_500, 60_000), Ok(()));
        let reason = |c: &SealedContent<'_>, s: Option<&RewardSeal>, now| {
            k.verify(c, s, now, 60_000).map_err(|r| r.reason)
        };
        let higher = SealedContent {
            reward: 0.51,
            ..content
        };
        assert_eq!(
            reason(&higher, Some(&seal), 1_000_500),
            Err("forged_reward")
        );
        let other_tokens = SealedContent {
            tokens: &[3, 4, 6],
            ..content
        };
        assert_eq!(
            reason(&other_tokens, Some(&seal), 1_000_500),
            Err("forged_reward")
        );
        let other_caption = SealedContent {
            caption: "a jig",
            ..content
        };
        assert_eq!(
            reason(&other_caption, Some(&seal), 1_000_500),
            Err("forged_reward")
        );
        let forged_components = vec![("text".to_string(), 0.9f32)];
        let c = SealedContent {
            components: &forged_components,
            ..content
        };
        assert_eq!(reason(&c, Some(&seal), 1_000_500), Err("forged_reward"));
        assert_eq!(reason(&content, None, 1_000_500), Err("unsealed_reward"));
        assert_eq!(
            reason(&content, Some(&seal), 1_070_001),
            Err("expired_seal")
        );
        // Another server's key: unknown here.
        let other = keys("another-secret-of-at-least-32-bytes!!");
        let foreign = other.seal(&content, 1_000_000).unwrap();
        assert_eq!(
            reason(&content, Some(&foreign), 1_000_500),
            Err("unknown_seal_key")
        );
        // The same key id with a MAC from elsewhere: forged.
        let mut tampered = seal.clone();
        tampered.mac[0] ^= 1;
        assert_eq!(
            reason(&content, Some(&tampered), 1_000_500),
            Err("forged_reward")
        );
    }

    #[test]
    fn a_seal_is_spent_once_and_forgotten_once_expired() {
        let k = keys("0123456789abcdef0123456789abcdef-one");
        let content = SealedContent {
            caption: "a reel",
            tokens: &[3, 4],
            reward: 0.5,
            components: &[],
            scorer_version: "v1",
        };
        // The same content sealed twice at the same instant: two different seals (the
        // nonce), each spendable once.
        let (a, b) = (
            k.seal(&content, 1_000).unwrap(),
            k.seal(&content, 1_000).unwrap(),
        );
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.mac, b.mac);
        assert_eq!(k.verify(&content, Some(&b), 1_001, 60_000), Ok(()));
        let mut spent = SpentSeals::default();
        assert!(spent.spend(&a, 1_001, 60_000));
        assert!(spent.spend(&b, 1_001, 60_000));
        assert!(!spent.spend(&a, 1_002, 60_000), "a replay");
        // A refunded seal (its push was cut off) can be spent again, once.
        spent.refund(&a);
        assert!(spent.spend(&a, 1_003, 60_000));
        assert!(!spent.spend(&a, 1_004, 60_000));
        // Changing the nonce to dodge the memory breaks the MAC.
        let mut renonced = a.clone();
        renonced.nonce[0] ^= 1;
        assert_eq!(
            k.verify(&content, Some(&renonced), 1_001, 60_000)
                .map_err(|r| r.reason),
            Err("forged_reward")
        );
        // Expired seals are pruned as new ones arrive: memory stays bounded by the window.
        let late = 1_000 + 60_000 + 1;
        for i in 0..5000u64 {
            let s = k.seal(&content, late + i).unwrap();
            assert!(spent.spend(&s, late + i, 60_000));
        }
        assert_eq!(spent.len(), 5000, "the two expired seals were dropped");
        // What a checkpoint keeps comes back whole, and a restored seal is still spent.
        let saved = spent.unexpired(late);
        assert_eq!(saved.len(), 5000);
        let mut restored = SpentSeals::restore(&saved);
        assert_eq!(restored.unexpired(late), saved);
        let replay = k.seal(&content, late).unwrap();
        assert!(spent.spend(&replay, late, 60_000));
        let mut again = SpentSeals::restore(&spent.unexpired(late));
        assert!(
            !again.spend(&replay, late + 1, 60_000),
            "remembered across a restart"
        );
        assert!(restored.spend(&replay, late + 1, 60_000));
    }

    #[test]
    fn rotation_keeps_old_seals_valid_and_signs_with_the_first_key() {
        let old = keys("the-old-secret-of-at-least-32-bytes!");
        let both = RewardKeys::from_secrets([
            "the-new-secret-of-at-least-32-bytes!".as_bytes(),
            "the-old-secret-of-at-least-32-bytes!".as_bytes(),
        ])
        .unwrap();
        let content = SealedContent {
            caption: "c",
            tokens: &[1],
            reward: 1.0,
            components: &[],
            scorer_version: "v",
        };
        let by_old = old.seal(&content, 5).unwrap();
        assert_eq!(both.verify(&content, Some(&by_old), 6, 1000), Ok(()));
        let by_both = both.seal(&content, 5).unwrap();
        assert_ne!(by_both.key_id, by_old.key_id);
        assert!(RewardKeys::from_secrets(["short".as_bytes()]).is_err());
    }
}
