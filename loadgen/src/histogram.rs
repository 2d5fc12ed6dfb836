//! Latency recording: one HDR histogram per operation kind, in microseconds, merged
//! across client tasks at the end of a run. It owns the bounds and the summary that
//! reports print; it knows nothing of targets or scenarios.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Smallest latency recorded, in microseconds (anything faster counts as 1 us).
const LATENCY_US_MIN: u64 = 1;
/// Largest latency recorded exactly (10 minutes); longer ones saturate to it.
const LATENCY_US_MAX: u64 = 600_000_000;
/// Significant decimal digits kept: 0.1 % relative error.
const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    pub fn new() -> Latency {
        let histogram =
            Histogram::new_with_bounds(LATENCY_US_MIN, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
                .expect("constant histogram bounds are valid");
        Latency { histogram }
    }

    pub fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros.max(LATENCY_US_MIN));
    }

    /// Adds every sample of `other`. Both share the same bounds, so this cannot fail;
    /// a failure would be a bug, and it is reported rather than hidden.
    pub fn merge(&mut self, other: &Latency) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms with equal bounds merge");
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The latency at `quantile` (0..=1), in microseconds; 0 when empty.
    pub fn quantile_us(&self, quantile: f64) -> u64 {
        if self.histogram.is_empty() {
            return 0;
        }
        self.histogram.value_at_quantile(quantile)
    }

    pub fn summary(&self) -> Summary {
        let empty = self.histogram.is_empty();
        Summary {
            count: self.count(),
            mean_us: if empty { 0.0 } else { self.histogram.mean() },
            p50_us: self.quantile_us(0.50),
            p90_us: self.quantile_us(0.90),
            p99_us: self.quantile_us(0.99),
            p999_us: self.quantile_us(0.999),
            max_us: if empty { 0 } else { self.histogram.max() },
        }
    }
}

/// What a report shows of one histogram.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// Histograms by operation kind (`lock`, `confirm`, `read_stale`, ...).
#[derive(Clone, Debug, Default)]
pub struct LatencySet {
    by_kind: BTreeMap<&'static str, Latency>,
}

impl LatencySet {
    pub fn record(&mut self, kind: &'static str, elapsed: Duration) {
        self.by_kind.entry(kind).or_default().record(elapsed);
    }

    pub fn merge(&mut self, other: &LatencySet) {
        for (kind, latency) in &other.by_kind {
            self.by_kind.entry(kind).or_default().merge(latency);
        }
    }

    pub fn get(&self, kind: &str) -> Option<&Latency> {
        self.by_kind.get(kind)
    }

    pub fn summaries(&self) -> BTreeMap<String, Summary> {
        self.by_kind
            .iter()
            .map(|(kind, latency)| (kind.to_string(), latency.summary()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(range: std::ops::Range<u64>) -> Latency {
        let mut latency = Latency::new();
        for micros in range {
            latency.record(Duration::from_micros(micros));
        }
        latency
    }

    #[test]
    fn merge_adds_counts_and_moves_quantiles() {
        let mut low = filled(1..1_001);
        let high = filled(10_001..11_001);
        assert_eq!(low.quantile_us(0.99), 990);
        low.merge(&high);
        assert_eq!(low.count(), 2_000);
        // Half the samples are now around 10 ms: the median sits at the boundary and
        // the p99 among the high ones.
        let p99 = low.quantile_us(0.99);
        assert!((10_970..=10_995).contains(&p99), "p99 {p99}");
        let summary = low.summary();
        assert!(
            (11_000..=11_011).contains(&summary.max_us),
            "max {}",
            summary.max_us
        );
        assert!(summary.p50_us <= 1_001, "p50 {}", summary.p50_us);
    }

    #[test]
    fn set_merge_keeps_kinds_apart() {
        let mut a = LatencySet::default();
        a.record("lock", Duration::from_millis(2));
        let mut b = LatencySet::default();
        b.record("lock", Duration::from_millis(4));
        b.record("confirm", Duration::from_millis(8));
        a.merge(&b);
        assert_eq!(a.get("lock").map(Latency::count), Some(2));
        assert_eq!(a.get("confirm").map(Latency::count), Some(1));
        let summaries = a.summaries();
        let confirm_p50 = summaries["confirm"].p50_us;
        assert!((7_992..=8_008).contains(&confirm_p50), "p50 {confirm_p50}");
        assert!(summaries["lock"].max_us >= 4_000);
    }

    #[test]
    fn empty_histogram_summarises_to_zeroes() {
        assert_eq!(Latency::new().summary(), Summary::default());
    }

    #[test]
    fn sub_microsecond_and_huge_latencies_saturate() {
        let mut latency = Latency::new();
        latency.record(Duration::from_nanos(10));
        latency.record(Duration::from_secs(3_600));
        assert_eq!(latency.count(), 2);
        assert_eq!(latency.quantile_us(0.0), 1);
        assert!(latency.summary().max_us >= LATENCY_US_MAX / 2);
    }
}
