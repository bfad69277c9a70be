//! The C shim's functions (`shim.c`: DPDK's inline calls made callable)
//! and how their errors read.

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

use std::ffi::CStr;
use std::io;

use crate::source::CaptureError;

/// Room for one line of DPDK's error text.
pub(super) const ERR_LEN: usize = 512;

pub(super) fn dpdk_error(what: impl Into<String>, message: String) -> CaptureError {
    CaptureError::Os {
        what: what.into(),
        source: io::Error::other(message),
    }
}

/// `why`, with DPDK's last logged line when it said something more.
pub(super) fn with_said(why: String) -> String {
    let mut last = [0 as c_char; ERR_LEN];
    // SAFETY: last is ERR_LEN bytes the shim writes a C string into.
    unsafe { fcapa_log_last(last.as_mut_ptr(), ERR_LEN) };
    match message(&last) {
        said if said.is_empty() || why.contains(&said) => why,
        said => format!("{why} (DPDK: {said})"),
    }
}

pub(super) fn strerror(errnum: c_int) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string.
    unsafe { CStr::from_ptr(fcapa_strerror(errnum)) }
        .to_string_lossy()
        .into_owned()
}

/// The text the shim wrote into `buf`: up to its NUL.
pub(super) fn message(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}
