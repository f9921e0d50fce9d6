//! Rate limits: a token bucket per key (a rater, a client address) and action, refilled
//! continuously. The table forgets keys whose bucket has refilled, so it cannot grow without
//! bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets of one action (votes, pairs, new sessions).
#[derive(Debug)]
pub struct RateLimiter {
    /// The burst allowed, and the tokens a window adds back.
    capacity: f64,
    /// Tokens a second.
    rate: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `per_minute` a minute, in bursts of up to `per_minute`.
    pub fn new(per_minute: u32) -> Self {
        Self::per(per_minute, Duration::from_secs(60))
    }

    /// `n` every `window`, in bursts of up to `n`.
    pub fn per(n: u32, window: Duration) -> Self {
        let capacity = f64::from(n.max(1));
        Self {
            capacity,
            rate: capacity / window.as_secs_f64().max(1e-3),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `who` at `now`; `Err(seconds)` to wait when the bucket is empty.
    pub fn take(&self, who: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            // A bucket that has refilled is the same as no bucket.
            let full = Duration::from_secs_f64(self.capacity / self.rate);
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < full);
        }
        let rate = self.rate;
        let b = buckets.entry(who.to_string()).or_insert(Bucket {
            tokens: self.capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(self.capacity);
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
        // Per hour: 2 at once, then one every 30 minutes.
        let hourly = RateLimiter::per(2, Duration::from_secs(3600));
        assert!(hourly.take("10.0.0.1", t0).is_ok());
        assert!(hourly.take("10.0.0.1", t0).is_ok());
        assert_eq!(hourly.take("10.0.0.1", t0), Err(1800));
    }
}
