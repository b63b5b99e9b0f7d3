//! A per-buyer limit on order attempts: a token bucket per buyer (`rate`
//! attempts per second, up to `burst` at once). A buyer over the limit is
//! answered 429 `rate_limited` with `Retry-After`, before any layer spends
//! work on the attempt. Replays count as attempts.
//!
//! Buckets live in this process (each instance limits on its own) and are
//! swept once a minute: a bucket that has refilled is the same as no bucket,
//! so memory follows the buyers active in the last minute.

use app::domain::BuyerId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
struct Buckets {
    by_buyer: HashMap<BuyerId, Bucket>,
    swept: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<Buckets>,
}

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(Buckets {
                by_buyer: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    /// Takes one attempt from the buyer's bucket, or says how long to wait.
    ///
    /// # Errors
    /// The wait until the next attempt is allowed.
    pub fn check(&self, buyer: &BuyerId, now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.saturating_duration_since(buckets.swept) >= SWEEP_EVERY {
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.by_buyer.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second < burst
            });
            buckets.swept = now;
        }
        let bucket = buckets.by_buyer.entry(buyer.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refilled = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refilled).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }

    pub fn tracked_buyers(&self) -> usize {
        self.buckets
            .lock()
            .map(|b| b.by_buyer.len())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buyer(n: u32) -> BuyerId {
        BuyerId::parse(&format!("00000000-0000-4000-8000-{n:012}")).expect("buyer")
    }

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let limiter = RateLimiter::new(10, 3);
        let t = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(&buyer(1), t).is_ok());
        }
        let wait = limiter.check(&buyer(1), t).expect_err("over the burst");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(
            limiter
                .check(&buyer(1), t + Duration::from_millis(100))
                .is_ok(),
            "one token back after 100 ms"
        );
        assert!(
            limiter.check(&buyer(2), t).is_ok(),
            "buyers do not share a bucket"
        );
    }

    #[test]
    fn idle_buckets_are_swept() {
        let limiter = RateLimiter::new(10, 3);
        let t = Instant::now();
        for n in 0..100 {
            let _ = limiter.check(&buyer(n), t);
        }
        assert_eq!(limiter.tracked_buyers(), 100);
        let _ = limiter.check(&buyer(1_000), t + SWEEP_EVERY);
        assert_eq!(limiter.tracked_buyers(), 1, "only the active buyer is kept");
    }
}
