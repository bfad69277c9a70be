//! `fastcapa index` as a Python object: Python holds the command line, the
//! index topic's creation, the statistics and the signals; the member runs
//! here, without the GIL, a bounded time per call.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::{ConfigError, FastcapaError};
use crate::counters::IndexCounters;
use crate::index::indexer::IndexerConfig;

/// Checks that the cluster answers a metadata request about `topic` within
/// `timeout` seconds, refusing at once a certificate or a password the
/// connection fails on (KafkaError, ConfigError for a refused setting).
#[pyfunction]
pub fn check_kafka(
    py: Python<'_>,
    settings: Vec<(String, String)>,
    topic: &str,
    timeout: f64,
) -> PyResult<()> {
    let timeout = Duration::from_secs_f64(timeout.max(0.0));
    Ok(py.detach(|| crate::kafka::reach::check(&settings, topic, timeout))?)
}

/// One member of an indexing group: joined when made.
#[pyclass(frozen, module = "fastcapa._fastcapa")]
pub struct Indexer {
    engine: Mutex<Option<crate::index::indexer::Indexer>>,
}

impl Indexer {
    fn with<T>(&self, f: impl FnOnce(&mut crate::index::indexer::Indexer) -> T) -> PyResult<T> {
        let mut guard = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        let engine = guard
            .as_mut()
            .ok_or_else(|| FastcapaError::new_err("the indexer is closed"))?;
        Ok(f(engine))
    }
}

#[pymethods]
impl Indexer {
    /// Connects, finds both topics (the index topic must exist), joins
    /// `group`. Raises ConfigError (setting, topic) or KafkaError.
    #[new]
    #[pyo3(signature = (topic, index_topic, group, settings, *, linktype, slice_records,
                        slice_seconds, timeout, until_caught_up))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        topic: String,
        index_topic: String,
        group: String,
        settings: Vec<(String, String)>,
        linktype: u32,
        slice_records: u32,
        slice_seconds: f64,
        timeout: f64,
        until_caught_up: bool,
    ) -> PyResult<Self> {
        for (name, value) in [("timeout", timeout), ("slice_seconds", slice_seconds)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::new_err(format!(
                    "{name} must be above 0 s, got {value}"
                )));
            }
        }
        if slice_records == 0 {
            return Err(ConfigError::new_err("slice_records must be at least 1"));
        }
        let cfg = IndexerConfig {
            topic,
            index_topic,
            group,
            settings,
            linktype,
            slice_records,
            slice_age: Duration::from_secs_f64(slice_seconds),
            timeout: Duration::from_secs_f64(timeout),
            until_caught_up,
        };
        let engine = py.detach(|| crate::index::indexer::Indexer::open(cfg))?;
        Ok(Indexer {
            engine: Mutex::new(Some(engine)),
        })
    }

    /// Works for up to `seconds`; True once done (`until_caught_up` only).
    /// Raises KafkaError if Kafka fails for good.
    fn run(&self, py: Python<'_>, seconds: f64) -> PyResult<bool> {
        let budget = Duration::from_secs_f64(seconds.clamp(0.0, 3600.0));
        Ok(py.detach(|| self.with(|engine| engine.step(budget)))??)
    }

    /// Reads the lag (records and capture time behind the newest records
    /// of the member's partitions) into the counters.
    fn measure_lag(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.with(|engine| engine.measure_lag()))
    }

    /// Closes every slice, waits up to `seconds` for Kafka to acknowledge
    /// them, commits, leaves the group.
    fn finish(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        let timeout = Duration::from_secs_f64(seconds.clamp(0.0, 3600.0));
        Ok(py.detach(|| self.with(|engine| engine.finish(timeout)))??)
    }

    /// `{name: value}` of the indexer's counters (see INDEX_COUNTERS).
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let values = self.with(|engine| engine.counters().values())?;
        let d = PyDict::new(py);
        for (name, value) in IndexCounters::NAMES.iter().zip(values) {
            d.set_item(name, value)?;
        }
        Ok(d)
    }

    /// Disconnects (always safe to call).
    fn close(&self, py: Python<'_>) {
        let engine = self.engine.lock().unwrap_or_else(|e| e.into_inner()).take();
        py.detach(|| drop(engine));
    }
}
