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

use std::ffi::{c_char, c_int, CStr, CString};
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bpf::BpfProgram;
use crate::source::{CaptureError, Frame, RxQueue};

mod kernel;

mod ffi {
    use std::ffi::{c_char, c_int, c_uint};

    /// An `rte_mbuf`, only ever handled by pointer.
    #[repr(C)]
    pub struct Mbuf {
        _private: [u8; 0],
    }

    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    pub struct PortInfo {
        pub max_rx_queues: u16,
        pub nb_desc: u16,
        pub mbufs: u32,
        pub rss_hf: u64,
        pub hw_timestamp: c_int,
        pub ts_offset: c_int,
        pub ts_flag: u64,
        pub driver: [c_char; 64],
    }

    impl Default for PortInfo {
        fn default() -> Self {
            PortInfo {
                max_rx_queues: 0,
                nb_desc: 0,
                mbufs: 0,
                rss_hf: 0,
                hw_timestamp: 0,
                ts_offset: -1,
                ts_flag: 0,
                driver: [0; 64],
            }
        }
    }

    #[repr(C)]
    pub struct Pkt {
        pub data: *const u8,
        pub data_len: u32,
        pub pkt_len: u32,
        pub nb_segs: u32,
        pub hw_ts: u64,
        pub has_hw_ts: c_int,
        pub vlan_stripped: c_int,
        pub vlan_tci: u16,
    }

    extern "C" {
        pub fn fcapa_eal_init(
            argc: c_int,
            argv: *mut *mut c_char,
            err: *mut c_char,
            errlen: usize,
        ) -> c_int;
        pub fn fcapa_log_release(show: c_int);
        pub fn fcapa_log_last(err: *mut c_char, errlen: usize);
        pub fn fcapa_strerror(errnum: c_int) -> *const c_char;
        pub fn fcapa_thread_register() -> c_int;
        pub fn fcapa_thread_unregister();
        pub fn fcapa_port_find(
            devargs: *const c_char,
            port: *mut u16,
            err: *mut c_char,
            errlen: usize,
        ) -> c_int;
        pub fn fcapa_port_setup(
            port: u16,
            nb_rxq: u16,
            nb_desc: u16,
            burst: u16,
            want_timestamp: c_int,
            info: *mut PortInfo,
            err: *mut c_char,
            errlen: usize,
        ) -> c_int;
        pub fn fcapa_port_stats(
            port: u16,
            ipackets: *mut u64,
            imissed: *mut u64,
            nombuf: *mut u64,
        ) -> c_int;
        pub fn fcapa_link_up(port: u16) -> c_int;
        pub fn fcapa_read_clock(port: u16, clock: *mut u64) -> c_int;
        pub fn fcapa_port_close(port: u16);
        pub fn fcapa_rx_burst(port: u16, queue: u16, pkts: *mut *mut Mbuf, n: u16) -> u16;
        pub fn fcapa_pkt_info(m: *mut Mbuf, ts_offset: c_int, ts_flag: u64, out: *mut Pkt);
        pub fn fcapa_pkt_copy(m: *mut Mbuf, buf: *mut u8, len: u32);
        pub fn fcapa_free_bulk(pkts: *mut *mut Mbuf, n: c_uint);
    }
}

/// Room for one line of DPDK's error text.
const ERR_LEN: usize = 512;

fn dpdk_error(what: impl Into<String>, message: String) -> CaptureError {
    CaptureError::Os {
        what: what.into(),
        source: io::Error::other(message),
    }
}

/// `why`, with DPDK's last logged line when it said something more.
fn with_said(why: String) -> String {
    let mut last = [0 as c_char; ERR_LEN];
    // SAFETY: last is ERR_LEN bytes the shim writes a C string into.
    unsafe { ffi::fcapa_log_last(last.as_mut_ptr(), ERR_LEN) };
    match message(&last) {
        said if said.is_empty() || why.contains(&said) => why,
        said => format!("{why} (DPDK: {said})"),
    }
}

fn strerror(errnum: c_int) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string.
    unsafe { CStr::from_ptr(ffi::fcapa_strerror(errnum)) }
        .to_string_lossy()
        .into_owned()
}

/// The text the shim wrote into `buf`: up to its NUL.
fn message(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// The EAL, started at most once per process.
pub struct Eal;

/// The arguments of the one start, and how it went.
static EAL: OnceLock<(Vec<String>, Result<(), String>)> = OnceLock::new();

impl Eal {
    /// Starts the EAL with `args` (as on a DPDK program's command line,
    /// without the program name). Once per process: a later call with the
    /// same arguments returns the first call's outcome; other arguments are
    /// refused.
    pub fn init(args: &[String]) -> Result<(), CaptureError> {
        let (first, outcome) = EAL.get_or_init(|| (args.to_vec(), Eal::start(args)));
        if first != args {
            return Err(dpdk_error(
                "starting the DPDK EAL",
                format!("already started in this process with {first:?}"),
            ));
        }
        outcome
            .clone()
            .map_err(|e| dpdk_error("the DPDK EAL cannot start", e))
    }

    fn start(args: &[String]) -> Result<(), String> {
        let mut owned = Vec::with_capacity(args.len() + 1);
        for arg in std::iter::once("fastcapa").chain(args.iter().map(String::as_str)) {
            owned.push(CString::new(arg).map_err(|_| format!("{arg:?} holds a NUL byte"))?);
        }
        // rte_eal_init may reorder argv and keeps pointers into it: leaked
        // on purpose, the EAL lives as long as the process.
        let owned: &'static mut [CString] = Box::leak(owned.into_boxed_slice());
        let argv: &'static mut [*mut c_char] = Box::leak(
            owned
                .iter_mut()
                .map(|s| s.as_ptr().cast_mut())
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        let mut err = [0 as c_char; ERR_LEN];
        // SAFETY: argv holds argc valid NUL-terminated strings that outlive
        // the process; err is ERR_LEN bytes the shim writes a C string into.
        let ret = unsafe {
            ffi::fcapa_eal_init(
                argv.len() as c_int,
                argv.as_mut_ptr(),
                err.as_mut_ptr(),
                ERR_LEN,
            )
        };
        if ret < 0 {
            return Err(message(&err));
        }
        Ok(())
    }
}

/// What a port's queues are set up with.
#[derive(Clone, Debug)]
pub struct PortConfig {
    /// A PCI address (`0000:03:00.0`) or a virtual device with its arguments.
    pub device: String,
    pub queues: u16,
    pub descriptors: u16,
    pub burst: u16,
    /// Filter run in user space on each frame (there is no kernel to run it).
    pub filter: Option<BpfProgram>,
}

/// Where a packet's capture time comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Timestamps {
    /// The timestamp the driver puts in each mbuf (`offset`, valid when
    /// `flag` is set in its offload flags), read as `clock` says.
    Hardware {
        offset: c_int,
        flag: u64,
        clock: DeviceClock,
    },
    /// The wall clock read as the worker takes each packet.
    Software,
}

/// What the driver's timestamps count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DeviceClock {
    /// Ticks of the NIC's clock at `hz`; `zero_ticks` was `zero_us` of wall time.
    Ticks {
        zero_ticks: u64,
        zero_us: u64,
        hz: f64,
    },
    /// Nanoseconds of wall time (a driver that takes the kernel's time).
    WallNanos,
    /// Microseconds of wall time (`net_pcap`: the capture file's record time).
    WallMicros,
}

/// Drivers without a device clock whose timestamps are wall time, and its unit.
const WALL_CLOCK_DRIVERS: &[(&str, DeviceClock)] = &[
    ("net_af_packet", DeviceClock::WallNanos),
    ("net_pcap", DeviceClock::WallMicros),
];

impl Timestamps {
    pub fn describe(&self) -> &'static str {
        match self {
            Timestamps::Hardware {
                clock: DeviceClock::Ticks { .. },
                ..
            } => "the NIC's hardware receive timestamp",
            Timestamps::Hardware {
                clock: DeviceClock::WallNanos | DeviceClock::WallMicros,
                ..
            } => "the driver's receive timestamp (the kernel's, or the file's)",
            Timestamps::Software => "the time each packet was taken (read per packet)",
        }
    }
}

/// Counters read from the port since the previous read, shared by its queues.
#[derive(Default)]
struct PortCounters {
    missed: u64,
    nombuf: u64,
}

/// A started ethernet port; closed when the last of its queues is dropped.
pub struct Port {
    id: u16,
    name: String,
    config: PortConfig,
    info: ffi::PortInfo,
    timestamps: Timestamps,
    counters: Mutex<PortCounters>,
    /// net_af_packet's sockets, for what the driver does not report.
    sockets: Option<kernel::DriverSockets>,
}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: the port was started by open; no queue is left to poll it.
        unsafe { ffi::fcapa_port_close(self.id) };
    }
}

/// A port and its queues not yet handed to workers.
pub struct DpdkPort {
    port: Arc<Port>,
}

impl DpdkPort {
    /// Finds `config.device` (probing it unless the EAL did), sets up its
    /// receive queues and starts it. The EAL must be started.
    pub fn open(config: PortConfig) -> Result<DpdkPort, CaptureError> {
        let opened = DpdkPort::start(config);
        // What DPDK logged while starting goes to stderr if the port started;
        // otherwise the error says why in one line.
        // SAFETY: plain call; the log stream is the shim's own.
        unsafe { ffi::fcapa_log_release(c_int::from(opened.is_ok())) };
        opened
    }

    fn start(config: PortConfig) -> Result<DpdkPort, CaptureError> {
        if !matches!(EAL.get(), Some((_, Ok(())))) {
            return Err(dpdk_error(
                format!("opening {}", config.device),
                "the DPDK EAL is not started".into(),
            ));
        }
        let device = CString::new(config.device.as_str())
            .map_err(|_| CaptureError::NoSuchInterface(config.device.clone()))?;
        let mut err = [0 as c_char; ERR_LEN];
        let mut id = 0u16;
        // SAFETY: device is a C string; id and err are valid for writing.
        let ret =
            unsafe { ffi::fcapa_port_find(device.as_ptr(), &mut id, err.as_mut_ptr(), ERR_LEN) };
        if ret < 0 {
            return Err(dpdk_error(config.device.clone(), with_said(message(&err))));
        }
        let mut info = ffi::PortInfo::default();
        // SAFETY: id is a valid port; info and err are valid for writing.
        let ret = unsafe {
            ffi::fcapa_port_setup(
                id,
                config.queues,
                config.descriptors,
                config.burst,
                1,
                &mut info,
                err.as_mut_ptr(),
                ERR_LEN,
            )
        };
        let name = config
            .device
            .split(',')
            .next()
            .unwrap_or_default()
            .to_string();
        if ret < 0 {
            let why = with_said(message(&err));
            // The port may be half set up: closing it leaves it clean.
            // SAFETY: id is a valid port.
            unsafe { ffi::fcapa_port_close(id) };
            return Err(dpdk_error(name, why));
        }
        let driver = message(&info.driver);
        let timestamps = if info.hw_timestamp != 0 {
            let own_stamp = || {
                WALL_CLOCK_DRIVERS
                    .iter()
                    .find(|(name, _)| *name == driver)
                    .map(|(_, clock)| *clock)
            };
            // 1: the offload is on, its clock is read; 2: the driver stamps
            // on its own, which only the drivers known to use wall time do.
            let clock = match info.hw_timestamp {
                1 => calibrate(id).or_else(own_stamp),
                _ => own_stamp(),
            };
            match clock {
                Some(clock) => Timestamps::Hardware {
                    offset: info.ts_offset,
                    flag: info.ts_flag,
                    clock,
                },
                None => Timestamps::Software,
            }
        } else {
            Timestamps::Software
        };
        let sockets = (driver == "net_af_packet")
            .then(|| device_arg(&config.device, "iface"))
            .flatten()
            .and_then(|iface| kernel::DriverSockets::find(&iface));
        if let Some(sockets) = &sockets {
            sockets.take_drops(); // the capture starts now
        }
        Ok(DpdkPort {
            port: Arc::new(Port {
                id,
                name,
                config,
                info,
                timestamps,
                counters: Mutex::default(),
                sockets,
            }),
        })
    }

    /// Receive queue `index`, for one worker (each index once).
    pub fn queue(&self, index: u16) -> DpdkQueue {
        let port = &self.port;
        let burst = usize::from(port.config.burst.max(1));
        DpdkQueue {
            port: Arc::clone(port),
            index,
            held: vec![std::ptr::null_mut(); burst],
            held_len: 0,
            next: 0,
            taken: 0,
            drain_left: None,
            registered: false,
            link_was_up: true,
            last_link_look: Instant::now(),
            name: port.name.clone(),
            scratch: Vec::new(),
            nap: POLL_NAP_MIN,
        }
    }

    pub fn queues(&self) -> u16 {
        self.port.config.queues
    }

    /// Descriptors per queue after the driver's limits.
    pub fn descriptors(&self) -> u16 {
        self.port.info.nb_desc
    }

    pub fn driver(&self) -> String {
        message(&self.port.info.driver)
    }

    pub fn rss(&self) -> bool {
        self.port.info.rss_hf != 0
    }

    pub fn timestamps(&self) -> Timestamps {
        self.port.timestamps
    }

    pub fn name(&self) -> &str {
        &self.port.name
    }
}

/// The value of `key=` among a device string's arguments.
fn device_arg(device: &str, key: &str) -> Option<String> {
    device
        .split(',')
        .skip(1)
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

/// Maps the device clock to wall time: two readings 50 ms apart. None when
/// the driver has no clock to read.
fn calibrate(port: u16) -> Option<DeviceClock> {
    let read = || {
        let mut ticks = 0u64;
        // SAFETY: port is a started port; ticks is valid for writing.
        let ret = unsafe { ffi::fcapa_read_clock(port, &mut ticks) };
        (ret == 0).then(|| (ticks, wall_us()))
    };
    let (t0, w0) = read()?;
    std::thread::sleep(Duration::from_millis(50));
    let (t1, w1) = read()?;
    if t1 <= t0 || w1 <= w0 {
        return None;
    }
    Some(DeviceClock::Ticks {
        zero_ticks: t0,
        zero_us: w0,
        hz: (t1 - t0) as f64 * 1e6 / (w1 - w0) as f64,
    })
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// How often an idle worker looks at the link (a system call for some drivers).
const LINK_LOOK: Duration = Duration::from_millis(100);
/// What an idle `--idle poll` worker naps between looks at the queue: 50 µs
/// at first, twice as long after each look that found nothing, up to 400 µs;
/// back to 50 µs as soon as a burst comes.
const POLL_NAP_MIN: Duration = Duration::from_micros(50);
const POLL_NAP_MAX: Duration = Duration::from_micros(400);

/// One receive queue of a started port. Owned by one worker thread.
pub struct DpdkQueue {
    port: Arc<Port>,
    index: u16,
    /// The last burst: `held[next..held_len]` not yet accepted by the worker.
    held: Vec<*mut ffi::Mbuf>,
    held_len: usize,
    next: usize,
    /// Frames taken since the last `take_stats`.
    taken: u64,
    /// After `close_intake`: how many more frames the queue may hand over.
    drain_left: Option<u64>,
    registered: bool,
    link_was_up: bool,
    last_link_look: Instant,
    name: String,
    /// A chained packet, made one.
    scratch: Vec<u8>,
    /// The next nap of an idle `--idle poll` worker.
    nap: Duration,
}

// SAFETY: the mbuf pointers are owned by this queue alone (received by it,
// not yet freed); DPDK allows any single thread to poll a queue and free
// mbufs. The queue is never shared between threads.
unsafe impl Send for DpdkQueue {}

impl DpdkQueue {
    fn frame_time(&self, pkt: &ffi::Pkt) -> u64 {
        match self.port.timestamps {
            Timestamps::Hardware { clock, .. } if pkt.has_hw_ts != 0 => match clock {
                DeviceClock::WallNanos => pkt.hw_ts / 1000,
                DeviceClock::WallMicros => pkt.hw_ts,
                DeviceClock::Ticks {
                    zero_ticks,
                    zero_us,
                    hz,
                } => {
                    let ticks = pkt.hw_ts.wrapping_sub(zero_ticks) as i64 as f64;
                    (zero_us as f64 + ticks * 1e6 / hz) as u64
                }
            },
            _ => wall_us(),
        }
    }

    fn free_accepted(&mut self, from: usize) {
        let n = self.next - from;
        if n > 0 {
            // SAFETY: held[from..next] are mbufs this queue received and
            // nothing refers to any more.
            unsafe { ffi::fcapa_free_bulk(self.held[from..].as_mut_ptr(), n as u32) };
        }
    }
}

impl RxQueue for DpdkQueue {
    fn take<F: FnMut(&Frame<'_>) -> bool>(&mut self, mut each: F) -> usize {
        if !self.registered {
            // SAFETY: registers the calling thread (the worker) with the EAL;
            // failure only costs the mempool cache.
            unsafe { ffi::fcapa_thread_register() };
            self.registered = true;
        }
        if self.next == self.held_len {
            let mut room = self.held.len();
            if let Some(left) = self.drain_left {
                room = room.min(left as usize);
            }
            if room == 0 {
                return 0;
            }
            // SAFETY: the port is started; held has room for `room` pointers.
            let n = unsafe {
                ffi::fcapa_rx_burst(
                    self.port.id,
                    self.index,
                    self.held.as_mut_ptr(),
                    room as u16,
                )
            };
            self.held_len = usize::from(n);
            self.next = 0;
            if n > 0 {
                self.nap = POLL_NAP_MIN;
            }
            if let Some(left) = self.drain_left.as_mut() {
                *left -= u64::from(n);
            }
        }
        let (offset, flag) = match self.port.timestamps {
            Timestamps::Hardware { offset, flag, .. } => (offset, flag),
            Timestamps::Software => (-1, 0),
        };
        let start = self.next;
        let mut accepted = 0;
        while self.next < self.held_len {
            let mut pkt = ffi::Pkt {
                data: std::ptr::null(),
                data_len: 0,
                pkt_len: 0,
                nb_segs: 0,
                hw_ts: 0,
                has_hw_ts: 0,
                vlan_stripped: 0,
                vlan_tci: 0,
            };
            // SAFETY: held[next] is a received mbuf not yet freed.
            unsafe { ffi::fcapa_pkt_info(self.held[self.next], offset, flag, &mut pkt) };
            let data: &[u8] = if pkt.nb_segs > 1 {
                // A chained packet is copied whole, once more.
                let mbuf = self.held[self.next];
                self.scratch.resize(pkt.pkt_len as usize, 0);
                // SAFETY: scratch holds pkt_len bytes; the mbuf is live.
                unsafe { ffi::fcapa_pkt_copy(mbuf, self.scratch.as_mut_ptr(), pkt.pkt_len) };
                &self.scratch
            } else {
                // SAFETY: the segment's data_len bytes at data live until
                // the mbuf is freed, after `each` returned.
                unsafe { std::slice::from_raw_parts(pkt.data, pkt.data_len as usize) }
            };
            // A driver that took the outer VLAN tag out (net_af_packet gets
            // frames from the kernel untagged) says so; write_to puts it back.
            let vlan_tci = (pkt.vlan_stripped != 0).then_some(pkt.vlan_tci);
            if let Some(filter) = &self.port.config.filter {
                if !filter.matches(data, pkt.pkt_len) {
                    self.next += 1;
                    continue;
                }
            }
            let frame = Frame {
                ts_us: self.frame_time(&pkt),
                wire_len: pkt.pkt_len + if vlan_tci.is_some() { 4 } else { 0 },
                data,
                vlan_tci,
                vlan_tpid: None,
            };
            if !each(&frame) {
                break;
            }
            self.next += 1;
            accepted += 1;
        }
        self.free_accepted(start);
        self.taken += accepted as u64;
        accepted
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool, CaptureError> {
        if self.last_link_look.elapsed() >= LINK_LOOK {
            self.last_link_look = Instant::now();
            let up = self.link_up();
            let went_down = self.link_was_up && !up;
            self.link_was_up = up;
            if went_down {
                return Err(CaptureError::InterfaceDown(self.name.clone()));
            }
        }
        if !timeout.is_zero() {
            std::thread::sleep(timeout.min(self.nap));
            self.nap = (self.nap * 2).min(POLL_NAP_MAX);
        }
        Ok(false)
    }

    fn link_up(&self) -> bool {
        if let Some(sockets) = &self.port.sockets {
            return sockets.link_up();
        }
        // SAFETY: the port is started.
        unsafe { ffi::fcapa_link_up(self.port.id) != 0 }
    }

    fn take_stats(&mut self) -> Result<(u64, u64), CaptureError> {
        let taken = std::mem::take(&mut self.taken);
        if self.index != 0 {
            return Ok((taken, 0));
        }
        let (mut ipackets, mut missed, mut nombuf) = (0u64, 0u64, 0u64);
        // SAFETY: the port is started; the three are valid for writing.
        let ret =
            unsafe { ffi::fcapa_port_stats(self.port.id, &mut ipackets, &mut missed, &mut nombuf) };
        if ret != 0 {
            self.taken += taken;
            return Err(dpdk_error(
                format!("reading the counters of {}", self.name),
                strerror(-ret),
            ));
        }
        let mut seen = self.port.counters.lock().unwrap();
        // Counters only grow; a driver that resets them is not trusted backwards.
        let mut drops = missed.saturating_sub(seen.missed) + nombuf.saturating_sub(seen.nombuf);
        if let Some(sockets) = &self.port.sockets {
            drops += sockets.take_drops();
        }
        seen.missed = seen.missed.max(missed);
        seen.nombuf = seen.nombuf.max(nombuf);
        Ok((taken + drops, drops))
    }

    fn close_intake(&mut self) -> Result<Duration, CaptureError> {
        // A DPDK queue cannot refuse frames on its own: the worker drains at
        // most what the ring can hold (and the burst in hand), then stops.
        let ring = u64::from(self.port.info.nb_desc) + self.held.len() as u64;
        self.drain_left = Some(ring);
        Ok(Duration::ZERO)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for DpdkQueue {
    fn drop(&mut self) {
        // Frames received but never accepted (an abort) go back to the pool.
        let from = self.next;
        self.next = self.held_len;
        self.free_accepted(from);
        if self.registered {
            // SAFETY: the same thread registered itself in `take`.
            unsafe { ffi::fcapa_thread_unregister() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::device_arg;

    #[test]
    fn device_arguments_are_found_by_key() {
        let device = "net_af_packet0,iface=veth0,qpairs=2";
        assert_eq!(device_arg(device, "iface").as_deref(), Some("veth0"));
        assert_eq!(device_arg(device, "qpairs").as_deref(), Some("2"));
        assert_eq!(device_arg(device, "if"), None);
        assert_eq!(device_arg("net_af_packet0", "iface"), None);
        // The device's own name is not an argument.
        assert_eq!(device_arg("iface=x,a=1", "iface"), None);
    }
}
