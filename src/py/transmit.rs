//! A transmit worker as a Python object: its own Kafka producer and thread,
//! serving one or more ring lanes.

use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::{ConfigError, FastcapaError};
use super::readout::{drain_events, tx_dict, EventBatch};
use super::ring::TxRing;
use super::thread::Thread;
use crate::counters::TxCounters;
use crate::events::EventLog;
use crate::producer::KafkaProducer;
use crate::ring::LaneReader;
use crate::tx::{PartitionMode, Partitioning, TxConfig, TxControl};

/// Checks that the cluster answers within `timeout` seconds and that the
/// topic can be used (KafkaError if not); returns its partition count. One
/// short-lived producer with the workers' settings asks, once for the run.
#[pyfunction]
pub fn check_topic(
    py: Python<'_>,
    topic: &str,
    settings: Vec<(String, String)>,
    timeout: f64,
) -> PyResult<usize> {
    let producer = KafkaProducer::new(&settings, topic, Arc::default(), Arc::default(), None)?;
    let timeout = Duration::from_secs_f64(timeout.max(0.0));
    Ok(py.detach(|| producer.check_connection(timeout))?)
}

/// A transmit worker with its own Kafka producer, serving one or more lanes.
#[pyclass(frozen, module = "fastcapa._fastcapa")]
pub struct TxWorker {
    name: String,
    parts: Mutex<Option<(Vec<LaneReader>, KafkaProducer, TxConfig)>>,
    control: Arc<TxControl>,
    counters: Arc<TxCounters>,
    events: Arc<EventLog>,
    thread: Thread,
}

#[pymethods]
impl TxWorker {
    /// Creates the producer (raising ConfigError for a setting librdkafka
    /// refuses) and takes the given `(ring, lane)` consumers. Frames go to
    /// partitions by `partition_by` (`--partition-by`: "key", librdkafka's
    /// partitioner on the key; "batch", this worker's own partitions, a
    /// burst at a time, it being worker `worker` of `workers`; "flow",
    /// `flow_hash % partitions`) on a topic of `partitions` (see
    /// `check_topic`). `stats_fd` is an open file (the caller's, duplicated
    /// here) for librdkafka's statistics: the caller opens it before giving
    /// up its privileges.
    #[new]
    #[pyo3(signature = (name, lanes, topic, settings, *, burst, queue_full_wait, partition_by,
                        partitions, worker, workers, stats_fd = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        lanes: Vec<(Bound<'_, TxRing>, usize)>,
        topic: &str,
        settings: Vec<(String, String)>,
        burst: usize,
        queue_full_wait: Option<f64>,
        partition_by: &str,
        partitions: u32,
        worker: usize,
        workers: usize,
        stats_fd: Option<i32>,
    ) -> PyResult<Self> {
        if burst == 0 {
            return Err(ConfigError::new_err("transmit burst must be at least 1"));
        }
        let mode = partition_by
            .parse::<PartitionMode>()
            .map_err(ConfigError::new_err)?;
        let counters = Arc::<TxCounters>::default();
        let events = Arc::<EventLog>::default();
        let stats_file = match stats_fd {
            Some(fd) if fd < 0 => {
                return Err(ConfigError::new_err(format!(
                    "statistics file: {fd} is not a file descriptor"
                )))
            }
            // SAFETY: `fd` is not negative (checked above) and only borrowed
            // for the duration of the dup; the caller keeps its descriptor
            // open while this call runs (a closed one fails the dup, EBADF).
            Some(fd) => Some(std::fs::File::from(
                unsafe { BorrowedFd::borrow_raw(fd) }
                    .try_clone_to_owned()
                    .map_err(|e| ConfigError::new_err(format!("statistics file: {e}")))?,
            )),
            None => None,
        };
        let producer = KafkaProducer::new(
            &settings,
            topic,
            Arc::clone(&counters),
            Arc::clone(&events),
            stats_file,
        )?;
        let readers = lanes
            .iter()
            .map(|(ring, lane)| ring.get().take_reader(*lane))
            .collect::<PyResult<Vec<_>>>()?;
        let config = TxConfig {
            burst,
            queue_full_wait: queue_full_wait.map(|s| Duration::from_secs_f64(s.max(0.0))),
            partitioning: Partitioning::new(
                mode,
                partitions,
                worker,
                workers,
                producer.message_set(),
            ),
        };
        Ok(TxWorker {
            name,
            parts: Mutex::new(Some((readers, producer, config))),
            control: Arc::default(),
            counters,
            events,
            thread: Thread::default(),
        })
    }

    /// Starts the worker's thread, pinned to core `cpu` when given.
    #[pyo3(signature = (cpu = None))]
    fn start(&self, cpu: Option<usize>) -> PyResult<()> {
        let (lanes, producer, config) = self
            .parts
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| FastcapaError::new_err("the worker was already started"))?;
        let control = Arc::clone(&self.control);
        let counters = Arc::clone(&self.counters);
        let events = Arc::clone(&self.events);
        self.thread.spawn(self.name.clone(), move || {
            if let Some(cpu) = cpu {
                crate::rx::pin_to_cpu(cpu);
            }
            crate::tx::run(lanes, producer, config, control, counters, events)
        })
    }

    /// No more frames will come: drain the lanes, flush, and stop within `drain_timeout` s.
    fn finish(&self, drain_timeout: f64) {
        self.control
            .finish(Duration::from_secs_f64(drain_timeout.max(0.0)));
    }

    /// Stop at once; what is left is counted as dropped.
    fn abort(&self) {
        self.control.abort();
    }

    #[pyo3(signature = (timeout = None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> bool {
        self.thread.join(py, timeout)
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        tx_dict(py, &self.counters)
    }

    /// Why the worker can deliver nothing more (the brokers refused its
    /// frames for want of a permission), or None while it can.
    fn error(&self) -> Option<String> {
        self.control.failure().map(str::to_string)
    }

    /// What the worker has to tell the operator since the last call.
    fn events(&self) -> EventBatch {
        drain_events(&self.events)
    }
}
