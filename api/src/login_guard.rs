//! Login brute-force protection: failed logins slow further attempts, per account and per
//! client IP, with a delay that doubles per failure up to a cap and is forgotten after a
//! quiet period, so a real user is slowed for at most the cap, never locked out for good.
//!
//! A throttled attempt is answered `429 login-throttled` with `Retry-After` before the
//! password is even hashed (argon2 work is not free either). A successful login clears
//! its account's failures; an IP's failures are only forgotten with time, so an attacker
//! cannot reset his address by logging in to an account of his own between guesses.
//!
//! The counters live in this api node's memory: with N api nodes behind a balancer an
//! attacker gets at most N times the attempts, which the caps keep small.

use crate::config::ApiLimits;
use crate::problem::Problem;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::StatusCode;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tracked keys at most; beyond it keys older than the quiet period are dropped, and new
/// keys are not tracked until there is room (the IP throttle still bounds an attacker).
const ENTRIES_MAX: usize = 100_000;

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    last: Instant,
}

/// The settings of the throttle, from `ApiLimits`.
#[derive(Clone, Debug)]
pub struct Throttle {
    pub account_free: u32,
    pub ip_free: u32,
    pub base: Duration,
    pub account_max: Duration,
    pub ip_max: Duration,
    /// Failures are forgotten this long after the last one.
    pub forget_after: Duration,
}

impl Throttle {
    pub fn from_limits(limits: &ApiLimits) -> Throttle {
        Throttle {
            account_free: limits.login_failures_free_per_account,
            ip_free: limits.login_failures_free_per_ip,
            base: Duration::from_millis(limits.login_backoff_base_ms),
            account_max: Duration::from_millis(limits.login_backoff_account_max_ms),
            ip_max: Duration::from_millis(limits.login_backoff_ip_max_ms),
            forget_after: Duration::from_millis(limits.login_failures_forget_ms),
        }
    }
}

/// The delay a key with `count` failures must wait after its last failure.
fn delay(count: u32, free: u32, base: Duration, max: Duration) -> Duration {
    if count < free {
        return Duration::ZERO;
    }
    let doublings = (count - free).min(30);
    base.saturating_mul(1u32 << doublings).min(max)
}

pub struct LoginGuard {
    throttle: Throttle,
    failures: Mutex<HashMap<String, Failures>>,
}

impl LoginGuard {
    pub fn new(throttle: Throttle) -> LoginGuard {
        LoginGuard {
            throttle,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(account: &str, ip: Option<IpAddr>) -> [(Option<String>, bool); 2] {
        [
            (Some(format!("account:{account}")), true),
            (ip.map(|ip| format!("ip:{ip}")), false),
        ]
    }

    /// `Err(wait)` while `account` or `ip` must wait before another attempt.
    pub fn check(&self, account: &str, ip: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let t = &self.throttle;
        let mut wait = Duration::ZERO;
        for (key, is_account) in Self::keys(account, ip) {
            let Some(entry) = key.and_then(|key| failures.get(&key).copied()) else {
                continue;
            };
            let (free, max) = if is_account {
                (t.account_free, t.account_max)
            } else {
                (t.ip_free, t.ip_max)
            };
            let until = entry.last + delay(entry.count, free, t.base, max);
            wait = wait.max(until.saturating_duration_since(now));
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }

    pub fn failed(&self, account: &str, ip: Option<IpAddr>, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let forget_after = self.throttle.forget_after;
        if failures.len() >= ENTRIES_MAX {
            failures.retain(|_, f| now.saturating_duration_since(f.last) < forget_after);
        }
        for key in Self::keys(account, ip)
            .into_iter()
            .filter_map(|(key, _)| key)
        {
            let room = failures.len() < ENTRIES_MAX;
            match failures.get_mut(&key) {
                Some(entry) => {
                    if now.saturating_duration_since(entry.last) >= forget_after {
                        entry.count = 0;
                    }
                    entry.count = entry.count.saturating_add(1);
                    entry.last = now;
                }
                None if room => {
                    failures.insert(
                        key,
                        Failures {
                            count: 1,
                            last: now,
                        },
                    );
                }
                None => tracing::warn!("login throttle table full; a key is not tracked"),
            }
        }
        metrics::counter!("seat_ledger_api_login_failures_total").increment(1);
    }

    /// A correct password: the account's failures are forgotten (not the IP's).
    pub fn succeeded(&self, account: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&format!("account:{account}"));
    }
}

/// The problem for a throttled login.
pub fn throttled(wait: Duration) -> Problem {
    let seconds = wait.as_millis().div_ceil(1_000).max(1) as u64;
    metrics::counter!("seat_ledger_api_login_throttled_total").increment(1);
    let mut problem = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "login-throttled",
        "Too many failed logins",
        format!(
            "too many failed logins for this account or from this address; \
             retry after {seconds} s"
        ),
    );
    problem.retry_after_s = Some(seconds);
    problem
}

/// The client's IP address, when the server recorded it.
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> LoginGuard {
        LoginGuard::new(Throttle {
            account_free: 3,
            ip_free: 5,
            base: Duration::from_secs(1),
            account_max: Duration::from_secs(8),
            ip_max: Duration::from_secs(60),
            forget_after: Duration::from_secs(600),
        })
    }

    #[test]
    fn failures_slow_the_account_doubling_to_a_cap_and_success_clears_them() {
        let g = guard();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(g.check("a@x", Some(ip), t0).is_ok());
            g.failed("a@x", Some(ip), t0);
        }
        assert_eq!(g.check("a@x", Some(ip), t0), Err(Duration::from_secs(1)));
        // Another account from another address is not affected.
        assert!(g
            .check("b@x", Some("10.0.0.2".parse().unwrap()), t0)
            .is_ok());
        for _ in 0..10 {
            g.failed("a@x", None, t0);
        }
        // Capped at 8 s, never more: the real user is slowed, not locked out.
        assert_eq!(g.check("a@x", None, t0), Err(Duration::from_secs(8)));
        assert!(g.check("a@x", None, t0 + Duration::from_secs(8)).is_ok());
        g.succeeded("a@x");
        assert!(g.check("a@x", None, t0).is_ok());
        // The IP's failures stay after a success elsewhere.
        g.failed("c@x", Some(ip), t0);
        g.failed("d@x", Some(ip), t0);
        assert!(g.check("e@x", Some(ip), t0).is_err(), "5 failures from ip");
    }

    #[test]
    fn failures_are_forgotten_after_the_quiet_period() {
        let g = guard();
        let t0 = Instant::now();
        for _ in 0..6 {
            g.failed("a@x", None, t0);
        }
        let later = t0 + Duration::from_secs(601);
        assert!(g.check("a@x", None, later).is_ok());
        g.failed("a@x", None, later);
        assert!(
            g.check("a@x", None, later).is_ok(),
            "an old streak must not count after the quiet period"
        );
    }
}
