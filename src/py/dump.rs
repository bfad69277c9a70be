//! `fastcapa dump` as a Python object: Python holds the command line, the
//! progress line and the report; the query runs here, without the GIL, a
//! bounded time per call so that Ctrl-C is seen between calls.

use std::fs::File;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::{ConfigError, FastcapaError};
use crate::counters::{DumpCounters, DumpSnapshot};
use crate::dump::pcap::Format;
use crate::dump::{DumpConfig, TopicQuery, MAX_HELD_BYTES, REORDER_BOUND_US};

/// One dump: opened (connected, topic found, filter compiled) when made.
#[pyclass(frozen, module = "fastcapa._fastcapa")]
pub struct Dump {
    engine: Mutex<Option<crate::dump::Dump>>,
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
    /// seconds for each answer), finds the topics and their offsets. Writes
    /// to a duplicate of `output_fd`, as `format` ("pcap" or "pcapng").
    /// `index_topics`: one per topic, or None to read no index. Raises
    /// ConfigError (setting, topic, filter) or KafkaError (unreachable).
    #[new]
    #[pyo3(signature = (topics, settings, output_fd, *, start=None, end=None, count=0,
                        linktype=1, follow=false, filter=None, timeout=10.0,
                        index_topics=None, format="pcap"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        topics: Vec<String>,
        settings: Vec<(String, String)>,
        output_fd: i32,
        start: Option<u64>,
        end: Option<u64>,
        count: u64,
        linktype: u32,
        follow: bool,
        filter: Option<String>,
        timeout: f64,
        index_topics: Option<Vec<String>>,
        format: &str,
    ) -> PyResult<Self> {
        let format = match format {
            "pcap" => Format::Pcap,
            "pcapng" => Format::Pcapng,
            other => {
                return Err(ConfigError::new_err(format!(
                    "format must be pcap or pcapng, got {other:?}"
                )))
            }
        };
        if topics.is_empty() {
            return Err(ConfigError::new_err("no topic to read"));
        }
        if index_topics
            .as_ref()
            .is_some_and(|i| i.len() != topics.len())
        {
            return Err(ConfigError::new_err("one index topic per topic"));
        }
        let mut index_topics = index_topics.map(Vec::into_iter);
        let topics = topics
            .into_iter()
            .map(|name| TopicQuery {
                name,
                index_topic: index_topics.as_mut().and_then(Iterator::next),
            })
            .collect();
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
            topics,
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
            format,
        };
        let engine = py.detach(|| crate::dump::Dump::open(cfg, File::from(output)))?;
        Ok(Dump {
            engine: Mutex::new(Some(engine)),
        })
    }

    /// Works for up to `seconds`; True once the query is answered (every
    /// frame written and flushed). Raises KafkaError if Kafka fails while
    /// reading, OSError if writing fails (BrokenPipeError: the reader left).
    fn run(&self, py: Python<'_>, seconds: f64) -> PyResult<bool> {
        let budget = Duration::from_secs_f64(seconds.clamp(0.0, 3600.0));
        Ok(py.detach(|| self.with(|engine| engine.step(budget)))??)
    }

    /// Writes what still waits (after an interrupted run), in time order,
    /// and flushes.
    fn finish(&self, py: Python<'_>) -> PyResult<()> {
        Ok(py.detach(|| self.with(|engine| engine.finish()))??)
    }

    /// `{name: value}` of the dump's counters (see DUMP_COUNTERS), every
    /// topic's added up.
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let counts = self.with(|engine| engine.counters())?;
        counts_dict(py, &counts)
    }

    /// `[(topic, {name: value})]`: each topic's counters, in the query's order.
    fn topic_counters<'py>(&self, py: Python<'py>) -> PyResult<Vec<(String, Bound<'py, PyDict>)>> {
        let per_topic: Vec<(String, _)> = self.with(|engine| {
            engine
                .topic_counters()
                .into_iter()
                .map(|(name, counts)| (name.to_string(), counts))
                .collect()
        })?;
        per_topic
            .into_iter()
            .map(|(name, counts)| Ok((name, counts_dict(py, &counts)?)))
            .collect()
    }

    /// What the index made of the query: `{"predicate": str, "topics":
    /// [{"topic": str, "index": bool, "partitions": [{partition, low, high,
    /// slices, in_window, selected, selected_records, indexed_reads, gaps,
    /// tail_from}]}]}` (`slices` is None for a partition no slice covers).
    fn plan<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let explain = self.with(|engine| engine.explain())?;
        let d = PyDict::new(py);
        d.set_item("predicate", explain.predicate)?;
        let mut topics = Vec::with_capacity(explain.topics.len());
        for topic in explain.topics {
            let t = PyDict::new(py);
            t.set_item("topic", topic.topic)?;
            t.set_item("index", topic.index)?;
            let mut parts = Vec::with_capacity(topic.partitions.len());
            for (id, low, high, plan) in topic.partitions {
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
            t.set_item("partitions", parts)?;
            topics.push(t);
        }
        d.set_item("topics", topics)?;
        Ok(d)
    }

    /// The partition count of every topic of the query.
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

fn counts_dict<'py>(py: Python<'py>, counts: &DumpSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, value) in DumpCounters::NAMES.iter().zip(counts.values()) {
        d.set_item(name, value)?;
    }
    Ok(d)
}
