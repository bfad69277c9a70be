//! The transmit ring as a Python object: made by the control plane, then
//! taken apart by the workers (the receive side takes the writer, each
//! transmit worker one lane's reader).

use std::sync::Mutex;

use pyo3::prelude::*;

use super::errors::ConfigError;
use crate::ring::{ring, LaneReader, RingGauge, RingWriter};

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
    #[pyo3(signature = (size, *, lanes, slot_bytes))]
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
    pub fn lanes(&self) -> usize {
        self.readers.lock().unwrap().len()
    }
}

impl TxRing {
    pub fn take_writer(&self) -> PyResult<RingWriter> {
        self.writer
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| ConfigError::new_err("this ring already has its receive worker"))
    }

    pub fn take_reader(&self, lane: usize) -> PyResult<LaneReader> {
        let mut readers = self.readers.lock().unwrap();
        let count = readers.len();
        readers
            .get_mut(lane)
            .ok_or_else(|| ConfigError::new_err(format!("ring has {count} lanes, no lane {lane}")))?
            .take()
            .ok_or_else(|| ConfigError::new_err(format!("lane {lane} already has its worker")))
    }
}
