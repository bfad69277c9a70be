//! Counters and events as the Python layer hands them out: plain dicts and
//! tuples, built from the names in `counters.rs` and the kinds in `events.rs`.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::counters::{RxCounters, TxCounters};
use crate::events::EventLog;

/// `{name: value}` for one block of counters.
fn counter_dict<'py>(
    py: Python<'py>,
    names: &[&str],
    values: &[u64],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, value) in names.iter().zip(values) {
        d.set_item(name, value)?;
    }
    Ok(d)
}

pub fn rx_dict<'py>(py: Python<'py>, counters: &RxCounters) -> PyResult<Bound<'py, PyDict>> {
    counter_dict(py, RxCounters::NAMES, &counters.snapshot().values())
}

pub fn tx_dict<'py>(py: Python<'py>, counters: &TxCounters) -> PyResult<Bound<'py, PyDict>> {
    counter_dict(py, TxCounters::NAMES, &counters.snapshot().values())
}

/// What a worker's `events()` returns.
pub type EventBatch = (Vec<(&'static str, String, u64)>, u64);

/// `([(kind, reason, count)], lost)`: the events queued since the last drain.
pub fn drain_events(log: &EventLog) -> EventBatch {
    let (events, lost) = log.drain();
    let events = events
        .into_iter()
        .map(|e| (e.kind.as_str(), e.reason, e.count))
        .collect();
    (events, lost)
}
