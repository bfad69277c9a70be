//! The DPDK receive backend: a port's receive queues polled straight from
//! user space, the way Metron's fastcapa runs. Every DPDK call goes through
//! the C shim in `shim.c` (DPDK's receive call and mbuf accessors are inline C)
//! and is wrapped here in three safe types:
//!
//! * [`Eal`]: the Environment Abstraction Layer, started once per process
//!   from the operator's arguments (`--eal`), never again: DPDK cannot
//!   start it twice, so a second start with other arguments is refused.
//! * [`DpdkPort`]: one ethernet port found by its device string (a PCI
//!   address, or a virtual device such as `net_af_packet0,iface=eth1`),
//!   configured with N receive queues spread by RSS over IP addresses and
//!   ports with a symmetric key (both directions of a flow on one queue),
//!   D descriptors each, one mbuf pool, promiscuous, started. It stops and
//!   closes when its last queue is dropped.
//! * [`DpdkQueue`]: one receive queue of a port, an [`RxQueue`] for the
//!   backend-neutral worker in `rx.rs`. `take` is one `rte_eth_rx_burst`;
//!   the worker copies each frame into its transmit ring and the mbufs go
//!   back to the pool at once. Frames the worker could not place yet are
//!   held and offered again.
//!
//! # Timestamps
//!
//! The port's hardware receive timestamp when the driver offers one
//! (`RTE_ETH_RX_OFFLOAD_TIMESTAMP`), converted from the device clock to
//! wall time by a calibration at start; otherwise the wall clock read for
//! each packet as the worker takes it, never one reading for a whole burst.
//!
//! # Accounting
//!
//! `[nic]` for queue q: the frames it took (after the filter), plus on queue
//! 0 the port's `imissed` (no room on the NIC's ring) and `rx_nombuf` (no
//! mbuf to receive into), which are also the drops. These are counted per
//! port, not per queue, by every driver, so one queue reports them. A stop
//! drains each queue (at most a ring's worth of frames more) before the port
//! is closed.

mod clock;
mod eal;
mod ffi;
mod kernel;
mod port;
mod queue;

pub use self::clock::{DeviceClock, Timestamps};
pub use self::eal::Eal;
pub use self::port::{DpdkPort, Port, PortConfig};
pub use self::queue::DpdkQueue;
