//! The receive side as Python objects, one per piece of the pipeline (a
//! capture file's queues are in `replay.rs`): one `AfPacketQueue` per receive queue (its filter from
//! `filter.rs`),
//! one `RxWorker` (native thread) per queue, and the `RxGroup` they share
//! (the stop, and `--count`). The control plane decides how many, which
//! fanout group, which cores; these only carry that out.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::{ConfigError, FastcapaError};
use super::filter::Filter;
use super::readout::{drain_events, rx_dict, EventBatch};
use super::ring::TxRing;
use super::thread::Thread;
use crate::afpacket::{FanoutMode, PacketQueue, QueueConfig};
use crate::counters::RxCounters;
use crate::events::EventLog;
use crate::ring::RingWriter;
use crate::rx::{Idle, RxConfig, RxShared};

/// One AF_PACKET receive queue: a socket with its mapped TPACKET_V3 ring,
/// capturing from the moment it is made. Its receive worker takes it over.
#[pyclass(frozen, module = "fastcapa._fastcapa")]
pub struct AfPacketQueue {
    queue: Mutex<Option<PacketQueue>>,
    interface: String,
}

#[pymethods]
impl AfPacketQueue {
    /// Opens the queue (CaptureError or ConfigError for what cannot be
    /// opened). `fanout` is `(group id, mode)`: every queue of one run joins
    /// one group, and the id must be unique in the network namespace.
    #[new]
    #[pyo3(signature = (interface, *, frames, snaplen, fanout, filter, promiscuous))]
    fn new(
        interface: &str,
        frames: u32,
        snaplen: u32,
        fanout: Option<(u16, String)>,
        filter: Option<&Bound<'_, Filter>>,
        promiscuous: bool,
    ) -> PyResult<Self> {
        let fanout = match fanout {
            Some((group, mode)) => Some((
                group,
                mode.parse::<FanoutMode>().map_err(ConfigError::new_err)?,
            )),
            None => None,
        };
        let config = QueueConfig {
            interface: interface.to_string(),
            frames,
            snaplen,
            fanout,
            filter: filter.map(|f| f.get().program.clone()),
            promiscuous,
        };
        let queue = PacketQueue::open(&config)?;
        Ok(AfPacketQueue {
            queue: Mutex::new(Some(queue)),
            interface: interface.to_string(),
        })
    }

    #[getter]
    fn interface(&self) -> &str {
        &self.interface
    }

    /// The link-layer header type of what it captures (1 = Ethernet).
    #[getter]
    fn linktype(&self) -> i32 {
        1
    }

    /// Closes the queue now if no worker took it (a worker closes it when it ends).
    fn close(&self) {
        self.queue.lock().unwrap().take();
    }
}

/// What every receive worker of one run shares: the stop and `--count`.
#[pyclass(frozen, module = "fastcapa._fastcapa")]
pub struct RxGroup {
    shared: Arc<RxShared>,
}

#[pymethods]
impl RxGroup {
    /// `count`: stop once the workers together took this many frames (0: never).
    #[new]
    #[pyo3(signature = (*, count))]
    fn new(count: u64) -> Self {
        RxGroup {
            shared: Arc::new(RxShared::new(count)),
        }
    }

    /// Asks every worker of the group to stop (each closes its books first).
    fn stop(&self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A receive queue of any source, as a worker takes it.
enum AnyQueue {
    AfPacket(PacketQueue),
    File(crate::capfile::FileQueue),
    #[cfg(feature = "dpdk")]
    Dpdk(crate::dpdk::DpdkQueue),
}

/// A receive worker: one native thread draining one receive queue into one
/// transmit ring.
#[pyclass(frozen, module = "fastcapa._fastcapa")]
pub struct RxWorker {
    name: String,
    parts: Mutex<Option<(AnyQueue, RingWriter, RxConfig)>>,
    shared: Arc<RxShared>,
    counters: Arc<RxCounters>,
    events: Arc<EventLog>,
    error: Arc<Mutex<Option<String>>>,
    thread: Thread,
}

#[pymethods]
impl RxWorker {
    /// Takes over `queue` and the writing side of `ring`. `cpu`: the core to
    /// pin the thread to. `hash_flows`: compute each frame's flow hash (to
    /// choose a lane of the ring, or a partition by flow).
    #[new]
    #[pyo3(signature = (name, queue, ring, group, *, burst, idle, snaplen, hash_flows, cpu))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        queue: &Bound<'_, PyAny>,
        ring: &Bound<'_, TxRing>,
        group: &Bound<'_, RxGroup>,
        burst: usize,
        idle: &str,
        snaplen: u32,
        hash_flows: bool,
        cpu: Option<usize>,
    ) -> PyResult<Self> {
        if burst == 0 {
            return Err(ConfigError::new_err("receive burst must be at least 1"));
        }
        let idle: Idle = idle.parse().map_err(ConfigError::new_err)?;
        let queue = take_queue(queue)?;
        let config = RxConfig {
            burst,
            idle,
            snaplen,
            hash_flows: hash_flows || ring.get().lanes() > 1,
            cpu,
        };
        let writer = ring.get().take_writer()?;
        Ok(RxWorker {
            name,
            parts: Mutex::new(Some((queue, writer, config))),
            shared: Arc::clone(&group.get().shared),
            counters: Arc::default(),
            events: Arc::default(),
            error: Arc::default(),
            thread: Thread::default(),
        })
    }

    fn start(&self) -> PyResult<()> {
        let (queue, writer, config) =
            self.parts.lock().unwrap().take().ok_or_else(|| {
                FastcapaError::new_err(format!("{} was already started", self.name))
            })?;
        let shared = Arc::clone(&self.shared);
        let counters = Arc::clone(&self.counters);
        let events = Arc::clone(&self.events);
        let error = Arc::clone(&self.error);
        self.thread.spawn(self.name.clone(), move || {
            let result = match queue {
                AnyQueue::AfPacket(q) => {
                    crate::rx::run(q, writer, config, shared, counters, events)
                }
                AnyQueue::File(q) => crate::rx::run(q, writer, config, shared, counters, events),
                #[cfg(feature = "dpdk")]
                AnyQueue::Dpdk(q) => crate::rx::run(q, writer, config, shared, counters, events),
            };
            if let Err(e) = result {
                *error.lock().unwrap() = Some(e.to_string());
            }
        })
    }

    #[pyo3(signature = (timeout = None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> bool {
        self.thread.join(py, timeout)
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Why the worker stopped early, if it did.
    fn error(&self) -> Option<String> {
        self.error.lock().unwrap().clone()
    }

    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        rx_dict(py, &self.counters)
    }

    /// What the worker has to tell the operator since the last call.
    fn events(&self) -> EventBatch {
        drain_events(&self.events)
    }
}

/// Takes the native queue out of a queue object of either backend.
fn take_queue(queue: &Bound<'_, PyAny>) -> PyResult<AnyQueue> {
    if let Ok(q) = queue.cast::<AfPacketQueue>() {
        let taken = q.get().queue.lock().unwrap().take();
        return taken
            .map(AnyQueue::AfPacket)
            .ok_or_else(|| ConfigError::new_err("this queue already has its receive worker"));
    }
    if let Ok(q) = queue.cast::<super::replay::FileQueue>() {
        let taken = q.get().queue.lock().unwrap().take();
        return taken
            .map(AnyQueue::File)
            .ok_or_else(|| ConfigError::new_err("this queue already has its receive worker"));
    }
    #[cfg(feature = "dpdk")]
    if let Ok(q) = queue.cast::<super::dpdk::DpdkQueue>() {
        let taken = q.get().queue.lock().unwrap().take();
        return taken
            .map(AnyQueue::Dpdk)
            .ok_or_else(|| ConfigError::new_err("this queue already has its receive worker"));
    }
    Err(ConfigError::new_err(format!(
        "a receive worker needs a receive queue, not {}",
        queue.get_type().name()?
    )))
}
