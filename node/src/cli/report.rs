//! Latency summaries for the benchmarks: percentiles from an HDR histogram.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::output::ms;

/// A histogram of microseconds, from 1 µs to 1 hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// Records a duration (clamped to the histogram's range).
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

/// The numbers a benchmark reports, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: u64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary {
                count: 0,
                p50: 0,
                p99: 0,
                p999: 0,
                max: 0,
                mean: 0,
            };
        }
        Summary {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean().round() as u64,
        }
    }

    /// `p50 3.12 ms · p99 12.0 ms · p99.9 20.1 ms · max 40.2 ms`
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {} · p99 {} · p99.9 {} · max {} · mean {}",
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            ms(self.mean)
        )
    }

    /// For small samples (failover rounds) p99.9 says nothing more than max.
    pub fn short_line(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {} · p99 {} · max {}",
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )
    }

    pub fn json_ms(&self) -> Value {
        let f = |us: u64| us as f64 / 1000.0;
        json!({
            "count": self.count,
            "p50": f(self.p50),
            "p99": f(self.p99),
            "p99_9": f(self.p999),
            "max": f(self.max),
            "mean": f(self.mean),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = histogram();
        for i in 1..=1000 {
            record(&mut h, Duration::from_micros(i * 10));
        }
        let s = Summary::of(&h);
        assert_eq!(s.count, 1000);
        assert!((4990..=5010).contains(&s.p50), "{s:?}");
        assert!((9890..=9910).contains(&s.p99), "{s:?}");
        assert!((9980..=10010).contains(&s.max), "{s:?}");
        assert!(
            s.line().starts_with("p50 5.00 ms · p99 9.90 ms"),
            "{}",
            s.line()
        );
        assert_eq!(s.json_ms()["count"], 1000);
    }

    #[test]
    fn nothing_measured_says_so() {
        let s = Summary::of(&histogram());
        assert_eq!(s.line(), "no samples");
    }
}
