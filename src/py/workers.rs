//! Rings and workers as Python objects. Each worker's loop runs on a named
//! native thread that never attaches to Python; these wrappers only start,
//! steer, join and read counters.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::{ConfigError, FastcapaError};
use crate::afpacket::{BpfProgram, FanoutMode, PacketQueue, QueueConfig};
use crate::capfile::CaptureFile;
use crate::counters::{RxCounters, TxCounters};
use crate::events::EventLog;
use crate::producer::KafkaProducer;
use crate::ring::{ring, LaneReader, RingGauge, RingWriter};
use crate::rx::{Idle, RxConfig, RxShared};
use crate::tx::{TxConfig, TxControl};

/// A native thread and the means to wait for it without holding the GIL.
/// The thread raises `ended` as it exits (even by a panic), so a join wakes at
/// once rather than polling.
#[derive(Default)]
struct Thread {
    handle: Mutex<Option<JoinHandle<()>>>,
    ended: Arc<Ended>,
}

#[derive(Default)]
struct Ended {
    flag: Mutex<bool>,
    wake: Condvar,
}

/// Raises `Ended` when dropped: at the end of the thread's body, or while a
/// panic unwinds it.
struct EndSignal(Arc<Ended>);

impl Drop for EndSignal {
    fn drop(&mut self) {
        *self.0.flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.0.wake.notify_all();
    }
}

impl Thread {
    fn spawn(&self, name: String, body: impl FnOnce() + Send + 'static) -> PyResult<()> {
        let mut slot = self.handle.lock().unwrap();
        if slot.is_some() {
            return Err(FastcapaError::new_err(format!(
                "{name} was already started"
            )));
        }
        let signal = EndSignal(Arc::clone(&self.ended));
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let _signal = signal;
                body()
            })
            .map_err(|e| FastcapaError::new_err(format!("cannot start thread {name}: {e}")))?;
        *slot = Some(handle);
        Ok(())
    }

    /// Waits up to `timeout` seconds (None = forever) for the thread to end;
    /// true once it has ended (or never started).
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> bool {
        if self.handle.lock().unwrap().is_none() {
            return true;
        }
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        let done = py.detach(|| {
            let mut ended = self.ended.flag.lock().unwrap_or_else(|e| e.into_inner());
            while !*ended {
                match deadline {
                    None => {
                        ended = self
                            .ended
                            .wake
                            .wait(ended)
                            .unwrap_or_else(|e| e.into_inner())
                    }
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return false;
                        }
                        ended = (self.ended.wake.wait_timeout(ended, left))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
            }
            true
        });
        if done {
            if let Some(handle) = self.handle.lock().unwrap().take() {
                let _ = handle.join();
            }
        }
        done
    }
}

/// A transmit ring: `size` preallocated slots per lane, one lane per
/// transmit worker that serves it.
#[pyclass(frozen, module = "fastcapa._fastcapa")]
pub struct TxRing {
    writer: Mutex<Option<RingWriter>>,
    readers: Mutex<Vec<Option<LaneReader>>>,
    gauge: RingGauge,
}

#[pymethods]
impl TxRing {
    #[new]
    #[pyo3(signature = (size, lanes = 1, slot_bytes = 2048))]
    fn new(size: usize, lanes: usize, slot_bytes: usize) -> PyResult<Self> {
        let (writer, readers, gauge) = ring(size, lanes, slot_bytes)?;
        Ok(TxRing {
            writer: Mutex::new(Some(writer)),
            readers: Mutex::new(readers.into_iter().map(Some).collect()),
            gauge,
        })
    }

    /// Frames waiting in the ring.
    fn fill(&self) -> usize {
        self.gauge.fill()
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.gauge.capacity()
    }

    #[getter]
    fn lanes(&self) -> usize {
        self.readers.lock().unwrap().len()
    }
}

impl TxRing {
    fn take_writer(&self) -> PyResult<RingWriter> {
        self.writer
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| ConfigError::new_err("this ring already has its receive worker"))
    }

    fn take_reader(&self, lane: usize) -> PyResult<LaneReader> {
        let mut readers = self.readers.lock().unwrap();
        let count = readers.len();
        readers
            .get_mut(lane)
            .ok_or_else(|| ConfigError::new_err(format!("ring has {count} lanes, no lane {lane}")))?
            .take()
            .ok_or_else(|| ConfigError::new_err(format!("lane {lane} already has its worker")))
    }
}

fn rx_dict<'py>(py: Python<'py>, counters: &RxCounters) -> PyResult<Bound<'py, PyDict>> {
    counter_dict(py, RxCounters::NAMES, &counters.snapshot().values())
}

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

/// `([(kind, reason, count)], lost)`: the events queued since the last drain.
fn drain_events(log: &EventLog) -> (Vec<(&'static str, String, u64)>, u64) {
    let (events, lost) = log.drain();
    let events = events
        .into_iter()
        .map(|e| (e.kind.as_str(), e.reason, e.count))
        .collect();
    (events, lost)
}

/// The receive worker of a replay: reads a capture file into the rings.
#[pyclass(frozen, module = "fastcapa._fastcapa")]
pub struct FileSource {
    file: Mutex<Option<(CaptureFile, Vec<RingWriter>)>>,
    linktype: i32,
    snaplen: u32,
    count: u64,
    counters: Vec<Arc<RxCounters>>,
    stop: Arc<AtomicBool>,
    error: Arc<Mutex<Option<String>>>,
    thread: Thread,
}

#[pymethods]
impl FileSource {
    /// Opens `path` (raising CaptureError when libpcap cannot) and takes the
    /// producer side of each ring: record i goes to ring `flow_hash % len(rings)`.
    #[new]
    #[pyo3(signature = (path, rings, snaplen = 0, count = 0))]
    fn new(path: &str, rings: Vec<Bound<'_, TxRing>>, snaplen: u32, count: u64) -> PyResult<Self> {
        if rings.is_empty() {
            return Err(ConfigError::new_err("a source needs at least one ring"));
        }
        let file = CaptureFile::open(path)?;
        let writers = rings
            .iter()
            .map(|r| r.get().take_writer())
            .collect::<PyResult<Vec<_>>>()?;
        Ok(FileSource {
            linktype: file.linktype(),
            counters: (0..writers.len()).map(|_| Arc::default()).collect(),
            file: Mutex::new(Some((file, writers))),
            snaplen,
            count,
            stop: Arc::default(),
            error: Arc::default(),
            thread: Thread::default(),
        })
    }

    /// The file's link-layer header type (1 = Ethernet).
    #[getter]
    fn linktype(&self) -> i32 {
        self.linktype
    }

    fn start(&self) -> PyResult<()> {
        let (file, mut writers) = self
            .file
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| FastcapaError::new_err("the file source was already started"))?;
        let counters = self.counters.clone();
        let (snaplen, count) = (self.snaplen, self.count);
        let stop = Arc::clone(&self.stop);
        let error = Arc::clone(&self.error);
        self.thread.spawn("fcapa-file".into(), move || {
            if let Err(e) = file.replay(&mut writers, &counters, snaplen, count, &stop) {
                *error.lock().unwrap() = Some(e.to_string());
            }
        })
    }

    /// Asks the worker to stop reading; `join` waits for it.
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    #[pyo3(signature = (timeout = None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> bool {
        self.thread.join(py, timeout)
    }

    /// Why reading stopped early (a damaged file), if it did.
    fn error(&self) -> Option<String> {
        self.error.lock().unwrap().clone()
    }

    /// One dict of counters per receive queue.
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.counters.iter().map(|c| rx_dict(py, c)).collect()
    }
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
    /// refuses) and takes the given `(ring, lane)` consumers. `stats_fd` is
    /// an open file (the caller's, duplicated here) for librdkafka's
    /// statistics: the caller opens it before giving up its privileges.
    #[new]
    #[pyo3(signature = (name, lanes, topic, settings, burst = 256, queue_full_wait = Some(0.1), stats_fd = None))]
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
            // SAFETY: only borrowed for the duration of the dup; the caller
            // keeps its descriptor open while this call runs.
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
            flow_partitions: None,
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

    /// Waits up to `timeout` seconds for the cluster to answer (KafkaError if not).
    fn check_connection(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let parts = self.parts.lock().unwrap();
        let (_, producer, _) = parts
            .as_ref()
            .ok_or_else(|| FastcapaError::new_err("the worker is already running"))?;
        py.detach(|| producer.check_connection(Duration::from_secs_f64(timeout.max(0.0))))?;
        Ok(())
    }

    /// Sends each frame to partition `flow_hash % partitions` of the topic
    /// (`--partition-by flow`) instead of hashing the key. Reads the
    /// partition count from the cluster; call before `start`.
    fn partition_by_flow(&self, py: Python<'_>, topic: &str, timeout: f64) -> PyResult<u32> {
        let mut parts = self.parts.lock().unwrap();
        let (_, producer, config) = parts
            .as_mut()
            .ok_or_else(|| FastcapaError::new_err("the worker is already running"))?;
        let count = py
            .detach(|| producer.partition_count(topic, Duration::from_secs_f64(timeout)))
            .ok_or_else(|| {
                super::errors::KafkaError::new_err(format!(
                    "cannot read the partitions of topic {topic}"
                ))
            })?;
        config.flow_partitions = Some(count as u32);
        Ok(count as u32)
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
        counter_dict(py, TxCounters::NAMES, &self.counters.snapshot().values())
    }

    /// What the worker has to tell the operator since the last call.
    fn events(&self) -> (Vec<(&'static str, String, u64)>, u64) {
        drain_events(&self.events)
    }
}

/// The receive workers of a live capture: one AF_PACKET queue (socket with
/// its mapped ring) and one native thread per transmit ring, all in one
/// fanout group.
#[pyclass(frozen, module = "fastcapa._fastcapa")]
pub struct LiveSource {
    queues: Mutex<Option<Vec<(PacketQueue, RingWriter, RxConfig)>>>,
    counters: Vec<Arc<RxCounters>>,
    shared: Arc<RxShared>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<Thread>,
}

#[pymethods]
impl LiveSource {
    /// Opens one queue per ring on `interface` (raising CaptureError or
    /// ConfigError for what cannot be opened) and takes each ring's producer side.
    #[new]
    #[pyo3(signature = (
        interface, rings, *, frames = 4096, snaplen = 0, fanout = "hash", fanout_group = None,
        filter = None, promiscuous = true, burst = 32, idle = "poll", count = 0, cpus = vec![],
        hash_flows = false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        interface: &str,
        rings: Vec<Bound<'_, TxRing>>,
        frames: u32,
        snaplen: u32,
        fanout: &str,
        fanout_group: Option<u16>,
        filter: Option<&str>,
        promiscuous: bool,
        burst: usize,
        idle: &str,
        count: u64,
        cpus: Vec<usize>,
        hash_flows: bool,
    ) -> PyResult<Self> {
        if rings.is_empty() {
            return Err(ConfigError::new_err("a source needs at least one ring"));
        }
        let mode = match fanout {
            "hash" => FanoutMode::Hash,
            "qm" => FanoutMode::Qm,
            "cpu" => FanoutMode::Cpu,
            "lb" => FanoutMode::Lb,
            other => {
                return Err(ConfigError::new_err(format!(
                    "unknown fanout mode {other:?}"
                )))
            }
        };
        let idle = match idle {
            "spin" => Idle::Spin,
            "poll" => Idle::Poll,
            other => return Err(ConfigError::new_err(format!("unknown idle mode {other:?}"))),
        };
        if burst == 0 {
            return Err(ConfigError::new_err("receive burst must be at least 1"));
        }
        let program = filter
            .map(|expr| BpfProgram::compile_live(expr, snaplen, interface))
            .transpose()
            .map_err(capture_error)?;
        // A fanout group id is shared by the whole network namespace: derive
        // it from our pid so that two probes on one host do not collide.
        let group = fanout_group.unwrap_or((std::process::id() & 0xffff) as u16);
        let mut queues = Vec::with_capacity(rings.len());
        for (i, ring) in rings.iter().enumerate() {
            let config = QueueConfig {
                interface: interface.to_string(),
                frames,
                snaplen,
                fanout: Some((group, mode)),
                filter: program.clone(),
                promiscuous,
            };
            let queue = PacketQueue::open(&config).map_err(capture_error)?;
            let rx = RxConfig {
                burst,
                idle,
                snaplen,
                hash_flows: hash_flows || ring.get().lanes() > 1,
                count,
                cpu: (!cpus.is_empty()).then(|| cpus[i % cpus.len()]),
            };
            queues.push((queue, ring.get().take_writer()?, rx));
        }
        Ok(LiveSource {
            counters: (0..queues.len()).map(|_| Arc::default()).collect(),
            threads: (0..queues.len()).map(|_| Thread::default()).collect(),
            queues: Mutex::new(Some(queues)),
            shared: Arc::default(),
            errors: Arc::default(),
        })
    }

    fn start(&self) -> PyResult<()> {
        let queues = self
            .queues
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| FastcapaError::new_err("the live source was already started"))?;
        for (i, (queue, writer, config)) in queues.into_iter().enumerate() {
            let shared = Arc::clone(&self.shared);
            let counters = Arc::clone(&self.counters[i]);
            let errors = Arc::clone(&self.errors);
            self.threads[i].spawn(format!("fcapa-rx-{i}"), move || {
                if let Err(e) = crate::rx::run(queue, writer, config, shared, counters) {
                    errors.lock().unwrap().push(e.to_string());
                }
            })?;
        }
        Ok(())
    }

    /// Asks every receive worker to stop; `join` waits for them.
    fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }

    /// Waits up to `timeout` seconds for every receive worker to end.
    #[pyo3(signature = (timeout = None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        self.threads.iter().all(|thread| {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()).as_secs_f64());
            thread.join(py, left)
        })
    }

    /// Why a worker stopped early, if one did.
    fn error(&self) -> Option<String> {
        let errors = self.errors.lock().unwrap();
        (!errors.is_empty()).then(|| errors.join("; "))
    }

    /// The link-layer header type of what is captured (1 = Ethernet).
    #[getter]
    fn linktype(&self) -> i32 {
        1
    }

    /// One dict of counters per receive queue.
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.counters.iter().map(|c| rx_dict(py, c)).collect()
    }
}

fn capture_error(error: crate::afpacket::CaptureError) -> PyErr {
    use crate::afpacket::CaptureError as E;
    match error {
        E::InvalidFilter { .. } => ConfigError::new_err(error.to_string()),
        other => super::errors::CaptureError::new_err(other.to_string()),
    }
}
