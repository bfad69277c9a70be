//! The receive worker of a replay as a Python object: one thread that reads a
//! capture file into the transmit rings.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::{ConfigError, FastcapaError};
use super::readout::{drain_events, rx_dict, EventBatch};
use super::ring::TxRing;
use super::thread::Thread;
use crate::capfile::CaptureFile;
use crate::counters::RxCounters;
use crate::events::EventLog;
use crate::ring::RingWriter;

/// The receive worker of a replay: reads a capture file into the rings.
#[pyclass(frozen, module = "fastcapa._fastcapa")]
pub struct FileSource {
    file: Mutex<Option<(CaptureFile, Vec<RingWriter>)>>,
    linktype: i32,
    snaplen: u32,
    count: u64,
    hash_flows: bool,
    counters: Vec<Arc<RxCounters>>,
    stop: Arc<AtomicBool>,
    events: Arc<EventLog>,
    error: Arc<Mutex<Option<String>>>,
    thread: Thread,
}

#[pymethods]
impl FileSource {
    /// Opens `path` (raising CaptureError when libpcap cannot) and takes the
    /// producer side of each ring: record i goes to ring `flow_hash % len(rings)`.
    /// `hash_flows`: frames go to partitions by flow, so every record needs
    /// its flow hash (otherwise only when there are rings or lanes to choose).
    #[new]
    #[pyo3(signature = (path, rings, *, snaplen, count, hash_flows))]
    fn new(
        path: &str,
        rings: Vec<Bound<'_, TxRing>>,
        snaplen: u32,
        count: u64,
        hash_flows: bool,
    ) -> PyResult<Self> {
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
            hash_flows,
            stop: Arc::default(),
            events: Arc::default(),
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
        let (snaplen, count, hash_flows) = (self.snaplen, self.count, self.hash_flows);
        let stop = Arc::clone(&self.stop);
        let error = Arc::clone(&self.error);
        self.thread.spawn(self.name().into(), move || {
            if let Err(e) = file.replay(&mut writers, &counters, snaplen, count, hash_flows, &stop)
            {
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

    #[getter]
    fn name(&self) -> &'static str {
        "fcapa-file"
    }

    /// What the reader has to tell the operator since the last call.
    fn events(&self) -> EventBatch {
        drain_events(&self.events)
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
