//! Where a frame's capture time comes from: the NIC's clock mapped to
//! wall time, or the wall clock as the worker takes the frame.

use std::ffi::c_int;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ffi;

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
pub(super) const WALL_CLOCK_DRIVERS: &[(&str, DeviceClock)] = &[
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

/// Maps the device clock to wall time: two readings 50 ms apart. None when
/// the driver has no clock to read.
pub(super) fn calibrate(port: u16) -> Option<DeviceClock> {
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

pub(super) fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
