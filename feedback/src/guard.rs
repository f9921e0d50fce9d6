//! What binds votes to real listeners beyond the session: limits per client address (all of
//! its sessions together, and the new sessions it may be issued), a daily cap per rater, the
//! bot told apart by a token rather than by what it says it is, and a detector that flags a
//! run of same-side votes from one address (issue 35: one client once stored 500 votes for
//! one side by minting its own sessions).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use musicrl_prefdb::Outcome;

use crate::error::{ApiError, Error, Result};

/// An answer or the refusal to send instead.
type Refusal<T> = std::result::Result<T, ApiError>;
use crate::limits::RateLimiter;

/// The header the bot's token travels in.
pub const BOT_TOKEN_HEADER: &str = "x-musicrl-bot-token";

/// Per-address limits, the bot's token and the same-side detector.
#[derive(Debug)]
pub struct Guard {
    votes: RateLimiter,
    pairs: RateLimiter,
    sessions: RateLimiter,
    /// Votes a rater may cast in any 24 hours.
    pub votes_per_rater_per_day: i64,
    address_header: Option<HeaderName>,
    bot_token: Option<Vec<u8>>,
    flag_run: u32,
    /// Per address: the side of its last decisive votes and how many in a row.
    runs: Mutex<HashMap<IpAddr, (Outcome, u32)>>,
}

/// Who is asking: the client's address, and whether it is the bot (with its token).
#[derive(Debug, Clone)]
pub struct Client {
    pub address: IpAddr,
    pub bot: bool,
    /// `bot` or `web`.
    pub channel: &'static str,
}

impl Guard {
    pub fn from_config(f: &musicrl_config::FeedbackConfig) -> Result<Self> {
        let address_header = if f.client_address_header.is_empty() {
            None
        } else {
            Some(
                HeaderName::from_bytes(f.client_address_header.as_bytes())
                    .map_err(|e| Error::Config(format!("feedback.client_address_header: {e}")))?,
            )
        };
        let bot_token = if f.bot_token_file.as_os_str().is_empty() {
            None
        } else {
            let bytes = std::fs::read(&f.bot_token_file).map_err(|e| {
                Error::Config(format!(
                    "feedback.bot_token_file {}: {e}",
                    f.bot_token_file.display()
                ))
            })?;
            let token = bytes.trim_ascii().to_vec();
            if token.len() < 32 {
                return Err(Error::Config(format!(
                    "feedback.bot_token_file {}: the token must be at least 32 bytes",
                    f.bot_token_file.display()
                )));
            }
            Some(token)
        };
        Ok(Self {
            votes: RateLimiter::new(f.votes_per_minute_per_address),
            pairs: RateLimiter::new(f.pairs_per_minute_per_address),
            sessions: RateLimiter::per(f.sessions_per_hour_per_address, Duration::from_secs(3600)),
            votes_per_rater_per_day: i64::from(f.votes_per_rater_per_day),
            address_header,
            bot_token,
            flag_run: f.flag_same_side_run,
            runs: Mutex::new(HashMap::new()),
        })
    }

    /// The client of a request: its address (the TCP peer, or the trusted proxy's header),
    /// and whether it is the bot. A request that claims to be the bot (its token header, or
    /// the bot's User-Agent while a token is configured) without the right token is refused.
    pub fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Refusal<Client> {
        let from_header = self.address_header.as_ref().and_then(|h| {
            // Behind one proxy, the last entry is the one it appended: whatever the client
            // wrote before it is not trusted.
            let value = headers.get_all(h).iter().next_back()?.to_str().ok()?;
            value.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
        });
        let address = from_header
            .or(peer.map(|p| p.ip()))
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let claimed_ua = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ua| ua.starts_with(crate::bot::USER_AGENT_PREFIX));
        let token = headers.get(BOT_TOKEN_HEADER).map(|v| v.as_bytes());
        let bot = match (&self.bot_token, token) {
            (Some(want), Some(got)) if constant_time_eq(want, got) => true,
            (_, Some(_)) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "bot_token",
                    format!("wrong {BOT_TOKEN_HEADER} (feedback.bot_token_file)"),
                ));
            }
            (Some(_), None) if claimed_ua => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "bot_token",
                    format!(
                        "this service trusts only the bot with its token: send {BOT_TOKEN_HEADER}"
                    ),
                ));
            }
            _ => false,
        };
        // Without a configured token the bot's User-Agent still labels its votes (a local
        // `feedback bot`), but it is limited like anyone.
        let channel = if bot || (self.bot_token.is_none() && claimed_ua) {
            "bot"
        } else {
            "web"
        };
        Ok(Client {
            address,
            bot,
            channel,
        })
    }

    /// A new session for `client` (the bot is exempt).
    pub fn new_session(&self, client: &Client, now: Instant) -> Refusal<()> {
        Self::take(
            &self.sessions,
            client,
            now,
            "too many new sessions from this address",
        )
    }

    /// A pair for `client`.
    pub fn pair(&self, client: &Client, now: Instant) -> Refusal<()> {
        Self::take(
            &self.pairs,
            client,
            now,
            "too many pairs requested from this address",
        )
    }

    /// A vote from `client`.
    pub fn vote(&self, client: &Client, now: Instant) -> Refusal<()> {
        Self::take(&self.votes, client, now, "too many votes from this address")
    }

    /// One token of `limiter` for `client`'s address; the bot is exempt.
    fn take(limiter: &RateLimiter, client: &Client, now: Instant, what: &str) -> Refusal<()> {
        if client.bot {
            return Ok(());
        }
        limiter
            .take(&client.address.to_string(), now)
            .map_err(|wait| ApiError::rate_limited(format!("{what}; try again in {wait} s"), wait))
    }

    /// Records a stored vote's side for `client`'s address; true when it extends a run of
    /// at least `flag_same_side_run` same-side votes (the vote is then flagged). Ties and
    /// "both bad" end a run. The bot is exempt.
    pub fn same_side_run(&self, client: &Client, outcome: Outcome) -> bool {
        if client.bot || self.flag_run == 0 {
            return false;
        }
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if runs.len() > 100_000 {
            runs.clear();
        }
        if !matches!(outcome, Outcome::A | Outcome::B) {
            runs.remove(&client.address);
            return false;
        }
        let run = runs.entry(client.address).or_insert((outcome, 0));
        if run.0 == outcome {
            run.1 += 1;
        } else {
            *run = (outcome, 1);
        }
        run.1 >= self.flag_run
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(f: impl FnOnce(&mut musicrl_config::FeedbackConfig)) -> Guard {
        let mut c = musicrl_config::FeedbackConfig::default();
        f(&mut c);
        Guard::from_config(&c).expect("a guard")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("a name"),
                v.parse().expect("a value"),
            );
        }
        h
    }

    #[test]
    fn the_address_is_the_peer_unless_one_proxy_is_trusted() {
        let peer: SocketAddr = "10.1.2.3:5555".parse().expect("addr");
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1")]);
        let g = guard(|_| {});
        let c = g.client(Some(peer), &spoofed).expect("a client");
        assert_eq!(c.address, peer.ip(), "no header is trusted by default");
        let g = guard(|c| c.client_address_header = "x-forwarded-for".into());
        let proxied = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7")]);
        let c = g.client(Some(peer), &proxied).expect("a client");
        assert_eq!(c.address, "203.0.113.7".parse::<IpAddr>().expect("ip"));
        assert_eq!(c.channel, "web");
    }

    #[test]
    fn the_bot_is_told_apart_by_its_token_not_its_user_agent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bot.token");
        std::fs::write(&file, "b".repeat(40)).expect("write");
        let g = guard(|c| c.bot_token_file = file.clone());
        let ua = ("user-agent", "musicrl-bot/1 listener-3");
        let token = "b".repeat(40);
        let bot = g
            .client(None, &headers(&[ua, (BOT_TOKEN_HEADER, &token)]))
            .expect("the bot");
        assert!(bot.bot && bot.channel == "bot");
        let e = g
            .client(None, &headers(&[ua]))
            .expect_err("claims to be the bot");
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let e = g
            .client(None, &headers(&[(BOT_TOKEN_HEADER, "wrong")]))
            .expect_err("a wrong token");
        assert_eq!(e.reason, "bot_token");
        // Without a token configured, the User-Agent labels the votes but exempts nothing.
        let g = guard(|_| {});
        let c = g.client(None, &headers(&[ua])).expect("a client");
        assert!(!c.bot && c.channel == "bot");
    }

    #[test]
    fn a_run_of_same_side_votes_from_one_address_is_flagged() {
        let g = guard(|c| c.flag_same_side_run = 3);
        let g2 = g
            .client(Some("10.0.0.2:1".parse().expect("a")), &HeaderMap::new())
            .expect("c");
        let c = g
            .client(Some("10.0.0.1:1".parse().expect("a")), &HeaderMap::new())
            .expect("c");
        assert!(!g.same_side_run(&c, Outcome::A));
        assert!(!g.same_side_run(&c, Outcome::A));
        assert!(!g.same_side_run(&g2, Outcome::A), "runs are per address");
        assert!(g.same_side_run(&c, Outcome::A), "the third in a row");
        assert!(g.same_side_run(&c, Outcome::A));
        assert!(
            !g.same_side_run(&c, Outcome::B),
            "the other side ends the run"
        );
        assert!(!g.same_side_run(&c, Outcome::Tie));
        assert!(!g.same_side_run(&c, Outcome::B));
    }

    #[test]
    fn new_sessions_are_limited_per_address_and_the_bot_is_exempt() {
        let g = guard(|c| c.sessions_per_hour_per_address = 2);
        let c = g
            .client(Some("10.0.0.1:1".parse().expect("a")), &HeaderMap::new())
            .expect("c");
        let now = Instant::now();
        assert!(g.new_session(&c, now).is_ok());
        assert!(g.new_session(&c, now).is_ok());
        let e = g.new_session(&c, now).expect_err("a third");
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        let bot = Client { bot: true, ..c };
        assert!(g.new_session(&bot, now).is_ok());
    }
}
