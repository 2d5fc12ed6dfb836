//! The open-loop arrival schedule: operation `i` is due at `start + i / rate`, whatever
//! happened to the operations before it. Latency is measured from that intended time,
//! so a stalled system is charged for the whole wait of every request it delayed (no
//! coordinated omission). Pure arithmetic; the runner does the waiting.

use std::time::{Duration, Instant};

/// Fixed-rate arrivals from `start`.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    start: Instant,
    /// Nanoseconds between two arrivals; at least 1.
    interval_ns: u128,
}

impl Schedule {
    /// Arrivals at `rate_per_second` (> 0) from `start`.
    pub fn new(start: Instant, rate_per_second: f64) -> Result<Schedule, String> {
        if !(rate_per_second.is_finite() && rate_per_second > 0.0) {
            return Err(format!(
                "the open-loop rate must be a positive number, not {rate_per_second}"
            ));
        }
        let interval_ns = (1e9 / rate_per_second).round().max(1.0) as u128;
        Ok(Schedule { start, interval_ns })
    }

    /// When operation `index` (from 0) is due.
    pub fn intended(&self, index: u64) -> Instant {
        let offset = self.interval_ns.saturating_mul(u128::from(index));
        self.start + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
    }

    /// How many operations fall due in `[start, start + elapsed)`.
    pub fn due_within(&self, elapsed: Duration) -> u64 {
        let count = elapsed.as_nanos().div_ceil(self.interval_ns);
        u64::try_from(count).unwrap_or(u64::MAX)
    }

    /// Latency of an operation due at `index` that completed at `done`; zero if it
    /// (impossibly) completed before it was due.
    pub fn latency(&self, index: u64, done: Instant) -> Duration {
        done.saturating_duration_since(self.intended(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_evenly_spaced_from_the_start() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 1_000.0).unwrap();
        assert_eq!(schedule.intended(0), start);
        assert_eq!(schedule.intended(1) - start, Duration::from_millis(1));
        assert_eq!(
            schedule.intended(1_500) - start,
            Duration::from_millis(1_500)
        );
    }

    #[test]
    fn due_counts_match_rate_times_duration() {
        let schedule = Schedule::new(Instant::now(), 250.0).unwrap();
        assert_eq!(schedule.due_within(Duration::ZERO), 0);
        // Due at 0 ms: one arrival within the first nanosecond.
        assert_eq!(schedule.due_within(Duration::from_nanos(1)), 1);
        assert_eq!(schedule.due_within(Duration::from_secs(2)), 500);
        assert_eq!(schedule.due_within(Duration::from_millis(2_001)), 501);
    }

    #[test]
    fn latency_counts_from_the_intended_time_not_the_send_time() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 100.0).unwrap();
        // Operation 10 was due at 100 ms; the system answered at 350 ms, so its latency
        // is 250 ms even if the generator only managed to send it at 340 ms.
        let done = start + Duration::from_millis(350);
        assert_eq!(schedule.latency(10, done), Duration::from_millis(250));
        assert_eq!(schedule.latency(50, done), Duration::ZERO);
    }

    #[test]
    fn bad_rates_are_refused() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Schedule::new(Instant::now(), rate).is_err(), "{rate}");
        }
    }
}
