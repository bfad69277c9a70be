//! The Python-facing layer: thin `#[pyclass]` wrappers over the plain Rust
//! stages, so the control plane can build the topology from objects. Nothing
//! below this folder knows about Python.

#[cfg(feature = "dpdk")]
mod dpdk;
mod dump;
pub mod errors;
mod filter;
mod index;
mod live;
mod readout;
mod replay;
mod ring;
mod thread;
mod transmit;

use pyo3::prelude::*;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<ring::TxRing>()?;
    m.add_class::<replay::FileQueue>()?;
    m.add_class::<filter::Filter>()?;
    m.add_class::<live::AfPacketQueue>()?;
    m.add_class::<live::RxGroup>()?;
    m.add_class::<live::RxWorker>()?;
    m.add_class::<transmit::TxWorker>()?;
    m.add_class::<dump::Dump>()?;
    m.add_class::<index::Indexer>()?;
    // Whether this build has the DPDK backend (the `dpdk` feature).
    m.add("DPDK", cfg!(feature = "dpdk"))?;
    #[cfg(feature = "dpdk")]
    {
        m.add_class::<dpdk::DpdkPort>()?;
        m.add_class::<dpdk::DpdkQueue>()?;
        m.add_function(wrap_pyfunction!(dpdk::start_eal, m)?)?;
    }
    m.add_function(wrap_pyfunction!(drop_privileges, m)?)?;
    m.add_function(wrap_pyfunction!(transmit::check_topic, m)?)?;
    m.add_function(wrap_pyfunction!(index::check_kafka, m)?)?;
    m.add("LIBRDKAFKA_VERSION", rdkafka::util::get_rdkafka_version().1)?;
    m.add("RX_COUNTERS", crate::counters::RxCounters::NAMES.to_vec())?;
    m.add("TX_COUNTERS", crate::counters::TxCounters::NAMES.to_vec())?;
    m.add(
        "DUMP_COUNTERS",
        crate::counters::DumpCounters::NAMES.to_vec(),
    )?;
    m.add(
        "INDEX_COUNTERS",
        crate::counters::IndexCounters::NAMES.to_vec(),
    )?;
    m.add(
        "INDEX_SLICE_RECORDS",
        crate::index::slice::DEFAULT_SLICE_RECORDS,
    )?;
    m.add("DUMP_REORDER_BOUND_US", crate::dump::REORDER_BOUND_US)?;
    m.add("MAX_SNAPLEN", crate::bpf::MAX_SNAPLEN)?;
    m.add("SLOT_DATA_BYTES", crate::ring::SLOT_DATA_BYTES)?;
    m.add("SLOT_OVERHEAD_BYTES", crate::ring::SLOT_OVERHEAD_BYTES)?;
    Ok(())
}

/// Switches to `user` (uid, gid) when given, then gives up every capability
/// of the calling thread. Call it while no other thread holds capabilities:
/// after the capture sockets are open, before any worker or producer exists.
#[pyfunction]
#[pyo3(signature = (user=None))]
fn drop_privileges(user: Option<(u32, u32)>) -> PyResult<()> {
    Ok(crate::privileges::drop_privileges(user)?)
}
