//! `fastcapa dump` as a Python object: Python holds the command line, the
//! progress line and the report; the query runs here, without the GIL, a
//! bounded time per call so that Ctrl-C is seen between calls.

use std::fs::File;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::{ConfigError, FastcapaError, KafkaError};
use crate::counters::DumpCounters;
use crate::dump::{DumpConfig, DumpError, MAX_HELD_BYTES, REORDER_BOUND_US};

/// One dump: opened (connected, topic found, filter compiled) when made.
#[pyclass(frozen, module = "fastcapa._fastcapa")]
pub struct Dump {
    engine: Mutex<Option<crate::dump::Dump>>,
}

fn to_py(error: DumpError) -> PyErr {
    match error {
        DumpError::Io(e) => e.into(),
        DumpError::Client(e) => e.into(),
        DumpError::NoTopic(_) | DumpError::Filter(_) => ConfigError::new_err(error.to_string()),
        DumpError::Kafka(_) => KafkaError::new_err(error.to_string()),
    }
}

impl Dump {
    fn with<T>(&self, f: impl FnOnce(&mut crate::dump::Dump) -> T) -> PyResult<T> {
        let mut guard = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        let engine = guard
            .as_mut()
            .ok_or_else(|| FastcapaError::new_err("the dump is closed"))?;
        Ok(f(engine))
    }
}

#[pymethods]
impl Dump {
    /// Compiles the filter for `linktype`, connects (waiting up to `timeout`
    /// seconds for each answer), finds the topic and its offsets. Writes to a
    /// duplicate of `output_fd`. Raises ConfigError (setting, topic, filter)
    /// or KafkaError (unreachable).
    #[new]
    #[pyo3(signature = (topic, settings, output_fd, *, start=None, end=None, count=0,
                        linktype=1, follow=false, filter=None, timeout=10.0,
                        index_topic=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        topic: String,
        settings: Vec<(String, String)>,
        output_fd: i32,
        start: Option<u64>,
        end: Option<u64>,
        count: u64,
        linktype: u32,
        follow: bool,
        filter: Option<String>,
        timeout: f64,
        index_topic: Option<String>,
    ) -> PyResult<Self> {
        if !(timeout.is_finite() && timeout > 0.0) {
            return Err(ConfigError::new_err(format!(
                "timeout must be above 0 s, got {timeout}"
            )));
        }
        if output_fd < 0 {
            return Err(ConfigError::new_err("no output file"));
        }
        // SAFETY: the caller keeps `output_fd` open during this call; the
        // dump writes to its own duplicate, closed when the dump is.
        let fd = unsafe { BorrowedFd::borrow_raw(output_fd) };
        let output: OwnedFd = fd.try_clone_to_owned()?;
        let cfg = DumpConfig {
            topic,
            settings,
            start,
            end,
            count,
            linktype,
            follow,
            filter,
            timeout: Duration::from_secs_f64(timeout),
            reorder_bound_us: REORDER_BOUND_US,
            max_held_bytes: MAX_HELD_BYTES,
            index_topic,
        };
        let engine = py
            .detach(|| crate::dump::Dump::open(cfg, File::from(output)))
            .map_err(to_py)?;
        Ok(Dump {
            engine: Mutex::new(Some(engine)),
        })
    }

    /// Works for up to `seconds`; True once the query is answered (every
    /// frame written and flushed). Raises KafkaError if Kafka fails while
    /// reading, OSError if writing fails (BrokenPipeError: the reader left).
    fn run(&self, py: Python<'_>, seconds: f64) -> PyResult<bool> {
        let budget = Duration::from_secs_f64(seconds.clamp(0.0, 3600.0));
        py.detach(|| self.with(|engine| engine.step(budget)))?
            .map_err(to_py)
    }

    /// Writes what still waits (after an interrupted run), in time order,
    /// and flushes.
    fn finish(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.with(|engine| engine.finish()))?
            .map_err(to_py)
    }

    /// `{name: value}` of the dump's counters (see DUMP_COUNTERS).
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let values = self.with(|engine| engine.counters().values())?;
        let d = PyDict::new(py);
        for (name, value) in DumpCounters::NAMES.iter().zip(values) {
            d.set_item(name, value)?;
        }
        Ok(d)
    }

    /// What the index made of the query: `{"index": bool, "predicate":
    /// str, "partitions": [{partition, low, high, slices, in_window,
    /// selected, selected_records, indexed_reads, gaps, tail_from}]}` (`slices` is None for a
    /// partition no slice covers).
    fn plan<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let explain = self.with(|engine| engine.explain())?;
        let d = PyDict::new(py);
        d.set_item("index", explain.index)?;
        d.set_item("predicate", explain.predicate)?;
        let mut parts = Vec::with_capacity(explain.partitions.len());
        for (id, low, high, plan) in explain.partitions {
            let part = PyDict::new(py);
            part.set_item("partition", id)?;
            part.set_item("low", low)?;
            part.set_item("high", high)?;
            let plan = plan.unwrap_or_default();
            let planned = plan.slices > 0;
            part.set_item("slices", planned.then_some(plan.slices))?;
            part.set_item("in_window", plan.in_window)?;
            part.set_item("selected", plan.selected)?;
            part.set_item("selected_records", plan.selected_records)?;
            part.set_item("indexed_reads", plan.indexed_reads)?;
            part.set_item("gaps", plan.gaps)?;
            part.set_item("tail_from", plan.tail_from)?;
            parts.push(part);
        }
        d.set_item("partitions", parts)?;
        Ok(d)
    }

    /// The topic's partition count.
    #[getter]
    fn partitions(&self) -> PyResult<usize> {
        self.with(|engine| engine.partitions())
    }

    /// Disconnects and closes the output (always safe to call).
    fn close(&self, py: Python<'_>) {
        let engine = self.engine.lock().unwrap_or_else(|e| e.into_inner()).take();
        py.detach(|| drop(engine));
    }
}
