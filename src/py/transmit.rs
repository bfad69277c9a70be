//! A transmit worker as a Python object: its own Kafka producer and thread,
//! serving one or more ring lanes.

use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::{ConfigError, FastcapaError, KafkaError};
use super::readout::{drain_events, tx_dict, EventBatch};
use super::ring::TxRing;
use super::thread::Thread;
use crate::counters::TxCounters;
use crate::events::EventLog;
use crate::producer::KafkaProducer;
use crate::ring::LaneReader;
use crate::tx::{PartitionMode, Partitioning, TxConfig, TxControl};

/// librdkafka's defaults for the size of one message set, which a batch
/// partitioning worker fills before it moves to its next partition.
const BATCH_NUM_MESSAGES: usize = 10_000;
const BATCH_SIZE: usize = 1_000_000;

/// A transmit worker with its own Kafka producer, serving one or more lanes.
#[pyclass(frozen, module = "fastcapa._fastcapa")]
pub struct TxWorker {
    name: String,
    parts: Mutex<Option<(Vec<LaneReader>, KafkaProducer, TxConfig)>>,
    /// Messages and bytes of one message set (`batch.num.messages`, `batch.size`).
    message_set: (usize, usize),
    control: Arc<TxControl>,
    counters: Arc<TxCounters>,
    events: Arc<EventLog>,
    thread: Thread,
}

#[pymethods]
impl TxWorker {
    /// Creates the producer (raising ConfigError for a setting librdkafka
    /// refuses) and takes the given `(ring, lane)` consumers. `stats_fd` is
    /// an open file (the caller's, duplicated here) for librdkafka's
    /// statistics: the caller opens it before giving up its privileges.
    #[new]
    #[pyo3(signature = (name, lanes, topic, settings, *, burst, queue_full_wait, stats_fd = None))]
    fn new(
        name: String,
        lanes: Vec<(Bound<'_, TxRing>, usize)>,
        topic: &str,
        settings: Vec<(String, String)>,
        burst: usize,
        queue_full_wait: Option<f64>,
        stats_fd: Option<i32>,
    ) -> PyResult<Self> {
        if burst == 0 {
            return Err(ConfigError::new_err("transmit burst must be at least 1"));
        }
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
            partitioning: Partitioning::Key,
        };
        let setting = |key: &str, default: usize| {
            settings
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(default)
        };
        let message_set = (
            setting("batch.num.messages", BATCH_NUM_MESSAGES),
            setting("batch.size", BATCH_SIZE),
        );
        Ok(TxWorker {
            name,
            message_set,
            parts: Mutex::new(Some((readers, producer, config))),
            control: Arc::default(),
            counters,
            events,
            thread: Thread::default(),
        })
    }

    /// Waits up to `timeout` seconds for the cluster to answer (KafkaError if not).
    fn check_connection(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let parts = self.parts.lock().unwrap();
        let (_, producer, _) = parts
            .as_ref()
            .ok_or_else(|| FastcapaError::new_err("the worker is already running"))?;
        py.detach(|| producer.check_connection(Duration::from_secs_f64(timeout.max(0.0))))?;
        Ok(())
    }

    /// Chooses how frames go to partitions (`--partition-by`): "key"
    /// (librdkafka's partitioner on the key), "batch" (this worker's own
    /// partitions, one per burst, see `Partitioning::batch`; it is worker
    /// `worker` of `workers`) or "flow" (`flow_hash % partitions`). Reads the
    /// partition count from the cluster; call before `start`. Returns it
    /// (0 for "key", which does not need it).
    #[pyo3(signature = (mode, topic, timeout, *, worker, workers))]
    fn set_partitioning(
        &self,
        py: Python<'_>,
        mode: &str,
        topic: &str,
        timeout: f64,
        worker: usize,
        workers: usize,
    ) -> PyResult<u32> {
        let mut parts = self.parts.lock().unwrap();
        let (_, producer, config) = parts
            .as_mut()
            .ok_or_else(|| FastcapaError::new_err("the worker is already running"))?;
        let mode = mode
            .parse::<PartitionMode>()
            .map_err(ConfigError::new_err)?;
        if mode == PartitionMode::Key {
            config.partitioning = Partitioning::Key;
            return Ok(0);
        }
        let count = py
            .detach(|| producer.partition_count(topic, Duration::from_secs_f64(timeout.max(0.0))))
            .ok_or_else(|| {
                KafkaError::new_err(format!("cannot read the partitions of topic {topic}"))
            })? as u32;
        config.partitioning = if mode == PartitionMode::Flow {
            Partitioning::Flow { partitions: count }
        } else {
            let (messages, bytes) = self.message_set;
            Partitioning::batch(count, worker, workers, messages, bytes)
        };
        Ok(count)
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

    /// What the worker has to tell the operator since the last call.
    fn events(&self) -> EventBatch {
        drain_events(&self.events)
    }
}
