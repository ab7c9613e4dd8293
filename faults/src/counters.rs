//! [`CallCounters`]: a [`metrics`] recorder for member processes that keeps exactly
//! what the fault matrix reports: driver calls by `operation:kind` (from
//! `servicegroup_driver_calls_total`), members fenced (`servicegroup_superseded_total`)
//! and the slowest heartbeat batch since the last look
//! (`servicegroup_heartbeat_batch_seconds`). Everything else is dropped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use servicegroup::metrics as names;

/// The counters a member process reports; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct CallCounters {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    calls: Mutex<BTreeMap<String, Arc<Cell>>>,
    superseded: Arc<Cell>,
    slowest_heartbeat: Arc<Slowest>,
}

#[derive(Debug, Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

/// The largest value recorded since the last [`Slowest::take`], as f64 bits (values
/// are non-negative, so their bit patterns order like the values).
#[derive(Debug, Default)]
struct Slowest(AtomicU64);

impl Slowest {
    fn take(&self) -> f64 {
        f64::from_bits(self.0.swap(0, Ordering::Relaxed))
    }
}

impl HistogramFn for Slowest {
    fn record(&self, value: f64) {
        if value.is_finite() && value > 0.0 {
            self.0.fetch_max(value.to_bits(), Ordering::Relaxed);
        }
    }
}

impl CallCounters {
    /// New, empty counters (install them with [`CallCounters::install`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes these counters the process's metrics recorder. Fails if one is set already.
    pub fn install(&self) -> Result<(), String> {
        metrics::set_global_recorder(self.clone()).map_err(|e| e.to_string())
    }

    /// Driver calls so far, keyed `operation:kind` (`heartbeat:ok`, `list:timeout`).
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.inner
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.0.load(Ordering::Relaxed)))
            .collect()
    }

    /// Members fenced so far because another instance took them over.
    pub fn superseded(&self) -> u64 {
        self.inner.superseded.0.load(Ordering::Relaxed)
    }

    /// The slowest heartbeat batch since the last call, in seconds (0 when none).
    pub fn take_slowest_heartbeat(&self) -> f64 {
        self.inner.slowest_heartbeat.take()
    }

    fn call_cell(&self, key: &Key) -> Arc<Cell> {
        let label = |name: &str| {
            key.labels()
                .find(|l| l.key() == name)
                .map(|l| l.value().to_owned())
                .unwrap_or_default()
        };
        let name = format!("{}:{}", label("operation"), label("kind"));
        self.inner
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name)
            .or_default()
            .clone()
    }
}

impl Recorder for CallCounters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match key.name() {
            names::DRIVER_CALLS_TOTAL => Counter::from_arc(self.call_cell(key)),
            names::SUPERSEDED_TOTAL => Counter::from_arc(self.inner.superseded.clone()),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() == names::HEARTBEAT_BATCH_SECONDS {
            Histogram::from_arc(self.inner.slowest_heartbeat.clone())
        } else {
            Histogram::noop()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_calls_by_operation_and_kind() {
        let counters = CallCounters::new();
        metrics::with_local_recorder(&counters, || {
            servicegroup::metrics::driver_call(
                "db",
                "heartbeat",
                std::time::Duration::from_millis(5),
                Err(servicegroup::ErrorKind::Timeout),
            );
            servicegroup::metrics::driver_call(
                "db",
                "heartbeat",
                std::time::Duration::from_millis(5),
                Ok(()),
            );
            servicegroup::metrics::driver_call(
                "db",
                "heartbeat",
                std::time::Duration::from_millis(5),
                Ok(()),
            );
        });
        let calls = counters.calls();
        assert_eq!(calls.get("heartbeat:ok"), Some(&2));
        assert_eq!(calls.get("heartbeat:timeout"), Some(&1));
    }
}
