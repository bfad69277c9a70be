//! A capture filter compiled by libpcap from tcpdump syntax, as the live
//! queues of either backend take it.

use pyo3::prelude::*;

use crate::bpf::BpfProgram;

/// A capture filter compiled by libpcap from tcpdump syntax.
#[pyclass(frozen, module = "fastcapa._fastcapa")]
pub struct Filter {
    pub program: BpfProgram,
}

#[pymethods]
impl Filter {
    /// Compiles `expr` for live capture on `interface` (so `vlan` tests see
    /// the tag the kernel takes off, as tcpdump's do); needs CAP_NET_RAW.
    /// FilterError for an expression libpcap refuses.
    #[staticmethod]
    fn compile_live(expr: &str, snaplen: u32, interface: &str) -> PyResult<Filter> {
        let program = BpfProgram::compile_live(expr, snaplen, interface)?;
        Ok(Filter { program })
    }

    /// Compiles `expr` for Ethernet frames as they are on the wire, to be
    /// run in user space on each frame (DPDK: there is no kernel to run
    /// it). FilterError for an expression libpcap refuses.
    #[staticmethod]
    fn compile_user(expr: &str) -> PyResult<Filter> {
        let program = BpfProgram::compile_offline(expr, 1)?;
        Ok(Filter { program })
    }

    /// Instructions in the program.
    fn __len__(&self) -> usize {
        self.program.len()
    }
}
