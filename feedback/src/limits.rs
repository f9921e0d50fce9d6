//! Per-rater rate limits: a token bucket per rater and action, refilled continuously. The
//! table forgets raters idle for ten minutes, so it cannot grow without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets of one action (votes, pairs).
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `who` at `now`; `Err(seconds)` to wait when the bucket is empty.
    pub fn take(&self, who: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(600));
        }
        let rate = self.per_minute / 60.0;
        let b = buckets.entry(who.to_string()).or_insert(Bucket {
            tokens: self.per_minute,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(self.per_minute);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_rate() {
        let limiter = RateLimiter::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take("r", t0).is_ok());
        }
        // Empty: one token comes back every 20 s.
        assert_eq!(limiter.take("r", t0), Err(20));
        assert!(limiter.take("other", t0).is_ok(), "buckets are per rater");
        assert_eq!(limiter.take("r", t0 + Duration::from_secs(10)), Err(10));
        assert!(limiter.take("r", t0 + Duration::from_secs(21)).is_ok());
    }
}
