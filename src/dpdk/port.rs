//! One ethernet port: found, configured with its receive queues, started;
//! closed when the last of its queues is dropped.

use std::ffi::{c_char, c_int, CString};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::clock::{calibrate, Timestamps, WALL_CLOCK_DRIVERS};
use super::eal::EAL;
use super::ffi::{self, dpdk_error, message, with_said, ERR_LEN};
use super::kernel;
use super::queue::{DpdkQueue, POLL_NAP_MIN};
use crate::bpf::BpfProgram;
use crate::source::CaptureError;

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

/// Counters read from the port since the previous read, shared by its queues.
#[derive(Default)]
pub(super) struct PortCounters {
    pub(super) missed: u64,
    pub(super) nombuf: u64,
}

/// A started ethernet port; closed when the last of its queues is dropped.
pub struct Port {
    pub(super) id: u16,
    pub(super) name: String,
    pub(super) config: PortConfig,
    pub(super) info: ffi::PortInfo,
    pub(super) timestamps: Timestamps,
    pub(super) counters: Mutex<PortCounters>,
    /// net_af_packet's sockets, for what the driver does not report.
    pub(super) sockets: Option<kernel::DriverSockets>,
}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: the port was started by open; no queue is left to poll it.
        unsafe { ffi::fcapa_port_close(self.id) };
    }
}

/// A port and its queues not yet handed to workers.
pub struct DpdkPort {
    pub(super) port: Arc<Port>,
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
pub(super) fn device_arg(device: &str, key: &str) -> Option<String> {
    device
        .split(',')
        .skip(1)
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
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
