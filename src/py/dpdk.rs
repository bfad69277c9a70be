//! The DPDK backend as Python objects (built with the `dpdk` feature only):
//! `start_eal` once per process, a `DpdkPort` per device, a `DpdkQueue` per
//! receive queue, which an `RxWorker` takes over as it does an
//! `AfPacketQueue`.

use std::sync::Mutex;

use pyo3::prelude::*;

use super::errors::ConfigError;
use super::filter::Filter;
use crate::dpdk::{self, Eal, PortConfig};

/// Starts DPDK's EAL with `args` (the words of `--eal`); once per process.
#[pyfunction]
pub fn start_eal(args: Vec<String>) -> PyResult<()> {
    Ok(Eal::init(&args)?)
}

/// One started ethernet port: its receive queues are configured, RSS
/// spreads flows over them, and it is promiscuous.
#[pyclass(frozen, module = "fastcapa._fastcapa")]
pub struct DpdkPort {
    port: Mutex<Option<dpdk::DpdkPort>>,
    name: String,
    driver: String,
    descriptors: u16,
    rss: bool,
    timestamps: &'static str,
    queues: u16,
}

#[pymethods]
impl DpdkPort {
    /// Finds `device` (a PCI address or a virtual device string), sets up
    /// `queues` receive queues of `descriptors` each and starts it.
    /// CaptureError when the device is not there or cannot give that.
    #[new]
    #[pyo3(signature = (device, *, queues, descriptors, burst, filter))]
    fn new(
        device: &str,
        queues: u32,
        descriptors: u32,
        burst: u32,
        filter: Option<&Bound<'_, Filter>>,
    ) -> PyResult<Self> {
        let small = |what: &str, value: u32| {
            u16::try_from(value).map_err(|_| {
                ConfigError::new_err(format!("{what} {value} is more than DPDK takes (65535)"))
            })
        };
        let config = PortConfig {
            device: device.to_string(),
            queues: small("receive queues", queues)?,
            descriptors: small("descriptors", descriptors)?,
            burst: small("burst", burst)?,
            filter: filter.map(|f| f.get().program.clone()),
        };
        let port = dpdk::DpdkPort::open(config)?;
        Ok(DpdkPort {
            name: port.name().to_string(),
            driver: port.driver(),
            descriptors: port.descriptors(),
            rss: port.rss(),
            timestamps: port.timestamps().describe(),
            queues: port.queues(),
            port: Mutex::new(Some(port)),
        })
    }

    /// Receive queue `index` (0 .. queues - 1), for one receive worker.
    fn queue(&self, index: u16) -> PyResult<DpdkQueue> {
        if index >= self.queues {
            return Err(ConfigError::new_err(format!(
                "{} has {} receive queue(s), no queue {index}",
                self.name, self.queues
            )));
        }
        let guard = self.port.lock().unwrap();
        let port = guard
            .as_ref()
            .ok_or_else(|| ConfigError::new_err(format!("{} is closed", self.name)))?;
        Ok(DpdkQueue {
            queue: Mutex::new(Some(port.queue(index))),
            name: self.name.clone(),
        })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The poll-mode driver's name (`net_af_packet`, `net_ixgbe`, ...).
    #[getter]
    fn driver(&self) -> &str {
        &self.driver
    }

    /// Descriptors per queue, after the driver's limits.
    #[getter]
    fn descriptors(&self) -> u16 {
        self.descriptors
    }

    /// Whether the NIC spreads flows by RSS (else the driver spreads them
    /// its own way, or there is one queue).
    #[getter]
    fn rss(&self) -> bool {
        self.rss
    }

    /// Where capture times come from, in words.
    #[getter]
    fn timestamps(&self) -> &str {
        self.timestamps
    }

    /// Lets go of the port: it stops and closes once no queue is left.
    fn close(&self) {
        self.port.lock().unwrap().take();
    }
}

/// One receive queue of a `DpdkPort`; an `RxWorker` takes it over.
#[pyclass(frozen, module = "fastcapa._fastcapa")]
pub struct DpdkQueue {
    pub(super) queue: Mutex<Option<dpdk::DpdkQueue>>,
    name: String,
}

#[pymethods]
impl DpdkQueue {
    #[getter]
    fn interface(&self) -> &str {
        &self.name
    }

    #[getter]
    fn linktype(&self) -> i32 {
        1
    }

    /// Closes the queue now if no worker took it.
    fn close(&self) {
        self.queue.lock().unwrap().take();
    }
}
