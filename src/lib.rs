//! fastcapa's data plane. Each module is one stage of the pipeline
//! (docs/architecture.md): capture sources, the transmit ring, the transmit
//! worker and its producer, the counters they share, and the way back (the
//! dump and the index). `py` is the only module that knows about Python.

pub mod afpacket;
pub mod bpf;
pub mod capfile;
pub mod counters;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod dump;
pub mod events;
pub mod flow;
pub mod index;
pub mod kafka;
pub mod privileges;
pub mod producer;
pub mod ring;
pub mod rx;
pub mod source;
pub mod tx;

#[cfg(test)]
mod testnet;

mod py;

use pyo3::prelude::*;

#[pymodule]
fn _fastcapa(m: &Bound<'_, PyModule>) -> PyResult<()> {
    py::register(m)
}
