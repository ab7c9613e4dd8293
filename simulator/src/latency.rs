//! [`Latency`]: a latency histogram in microseconds on the `hdrhistogram` crate
//! (3 significant digits, 1 µs to 1 hour), so the simulator keeps a fixed amount of
//! memory per metric whatever the fleet size.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The largest latency recorded as itself (1 hour, in µs); longer ones count as this.
const HIGHEST_US: u64 = 3_600_000_000;
/// Significant decimal digits kept: a value is off by at most 0.1 %.
const SIGNIFICANT_DIGITS: u8 = 3;

/// Latencies recorded as whole microseconds.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        // Constant bounds within what hdrhistogram accepts (low >= 1, high >= 2 * low,
        // digits <= 5), exercised by every test below: this cannot fail at run time.
        #[allow(clippy::expect_used)]
        let histogram = Histogram::new_with_bounds(1, HIGHEST_US, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        Self(histogram)
    }

    /// Records one value (longer than an hour: counted as an hour).
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(us);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The largest value (to the histogram's precision), or `None` if empty.
    pub fn max(&self) -> Option<Duration> {
        (!self.0.is_empty()).then(|| Duration::from_micros(self.0.max()))
    }

    /// The `q` quantile (0 < q <= 1): the upper edge of the bucket holding it (so it
    /// errs on the slow side, by at most 0.1 %), never above [`max`](Self::max).
    /// `None` if empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.0.is_empty() {
            return None;
        }
        let v = self.0.value_at_quantile(q).min(self.0.max());
        Some(Duration::from_micros(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Option<Duration>) -> f64 {
        d.unwrap().as_secs_f64() * 1000.0
    }

    #[test]
    fn empty_has_no_quantiles() {
        let h = Latency::new();
        assert_eq!(h.count(), 0);
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.quantile(0.99), None);
        assert_eq!(h.max(), None);
    }

    #[test]
    fn quantiles_of_one_to_a_hundred_ms() {
        let mut h = Latency::new();
        for v in 1..=100u64 {
            h.record(Duration::from_millis(v));
        }
        assert_eq!(h.count(), 100);
        // Exact ranks 50 and 99, each at most 0.1 % high.
        let (p50, p99, max) = (ms(h.quantile(0.5)), ms(h.quantile(0.99)), ms(h.max()));
        assert!((50.0..=50.05).contains(&p50), "{p50}");
        assert!((99.0..=99.1).contains(&p99), "{p99}");
        assert!((100.0..=100.1).contains(&max), "{max}");
        assert_eq!(h.quantile(1.0), h.max());
    }

    #[test]
    fn a_slow_tail_shows_in_p99_not_p50() {
        let mut h = Latency::new();
        for _ in 0..980 {
            h.record(Duration::from_millis(2));
        }
        for _ in 0..20 {
            h.record(Duration::from_millis(700));
        }
        let (p50, p99) = (ms(h.quantile(0.5)), ms(h.quantile(0.99)));
        assert!((2.0..=2.002).contains(&p50), "{p50}");
        assert!((700.0..=700.7).contains(&p99), "{p99}");
    }

    #[test]
    fn quantiles_never_exceed_the_max_and_huge_values_saturate() {
        let mut h = Latency::new();
        h.record(Duration::from_micros(1234));
        assert!(h.quantile(0.99).unwrap() <= h.max().unwrap());
        h.record(Duration::from_secs(10 * 3600));
        assert_eq!(h.count(), 2);
        let max = h.max().unwrap().as_secs_f64();
        assert!((3600.0..=3604.0).contains(&max), "{max}");
        // Zero is a value too.
        let mut z = Latency::new();
        z.record(Duration::ZERO);
        assert_eq!(z.quantile(0.5), Some(Duration::ZERO));
    }
}
