//! A capture file's receive queue as a Python object: opened here, taken
//! over by an `RxWorker` like a live queue.

use std::sync::Mutex;

use pyo3::prelude::*;

use crate::capfile;

/// One receive queue of a capture file: the file read from its start, the
/// records of this queue's share of the flows (`index` of `queues`).
#[pyclass(frozen, module = "fastcapa._fastcapa")]
pub struct FileQueue {
    pub(super) queue: Mutex<Option<capfile::FileQueue>>,
    linktype: i32,
}

#[pymethods]
impl FileQueue {
    /// Opens `path` (CaptureError when libpcap cannot). `limit`: stop after
    /// this many records of the file (0: all; exact with one queue).
    #[new]
    #[pyo3(signature = (path, *, index, queues, limit))]
    fn new(path: &str, index: u32, queues: u32, limit: u64) -> PyResult<Self> {
        let queue = capfile::FileQueue::open(path, (index, queues), limit)?;
        Ok(FileQueue {
            linktype: queue.linktype(),
            queue: Mutex::new(Some(queue)),
        })
    }

    /// The file's link-layer header type (1 = Ethernet).
    #[getter]
    fn linktype(&self) -> i32 {
        self.linktype
    }

    /// Closes the file now if no worker took it (a worker closes it when it ends).
    fn close(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}
