//! The three pcapng blocks `fastcapa dump` writes: one section header, one
//! interface description per topic, one enhanced packet per frame.
//!
//! Written here rather than through a crate: the one stable pcapng writer
//! on crates.io (pcap-file 2.0) writes a packet's timestamp in nanoseconds
//! whatever resolution its interface states, and its 3.0 line is a release
//! candidate; the blocks themselves are a few fixed fields each, appended to
//! the same large buffer as classic pcap records. libpcap, tshark and
//! capinfos read the result (see the tests and tests/test_dump.py).
//!
//! Blocks are in host byte order (the section header's magic says which),
//! as libpcap and Wireshark write them.

use super::pcap::record_time;

const SECTION_HEADER: u32 = 0x0A0D_0D0A;
const INTERFACE_DESCRIPTION: u32 = 1;
const ENHANCED_PACKET: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

const OPT_END: u16 = 0;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;

/// `if_tsresol` 6: timestamps count microseconds, as the keys do.
const MICROSECONDS: u8 = 6;

/// Bytes `len` takes once padded to 32 bits.
fn padded(len: usize) -> usize {
    (len + 3) & !3
}

fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_ne_bytes());
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_ne_bytes());
}

fn put_option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    // An option's length field is 16 bits: longer text is cut (names are
    // Kafka topic names, at most 249 bytes).
    let value = &value[..value.len().min(u16::MAX as usize - 3)];
    put_u16(buf, code);
    put_u16(buf, value.len() as u16);
    buf.extend_from_slice(value);
    buf.resize(buf.len() + padded(value.len()) - value.len(), 0);
}

/// Wraps what `body` appends in a block of `kind`: type, total length,
/// body, total length again.
fn block(buf: &mut Vec<u8>, kind: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    put_u32(buf, kind);
    put_u32(buf, 0); // total length, filled in below
    body(buf);
    let total = (buf.len() - start + 4) as u32;
    put_u32(buf, total);
    buf[start + 4..start + 8].copy_from_slice(&total.to_ne_bytes());
}

/// The section header: byte order, version 1.0, length unknown, and the
/// application that wrote the file.
pub fn section_header(buf: &mut Vec<u8>, application: &str) {
    block(buf, SECTION_HEADER, |buf| {
        put_u32(buf, BYTE_ORDER_MAGIC);
        put_u16(buf, 1);
        put_u16(buf, 0);
        buf.extend_from_slice(&(-1i64).to_ne_bytes());
        put_option(buf, SHB_USERAPPL, application.as_bytes());
        put_option(buf, OPT_END, &[]);
    });
}

/// One interface: its link type, snapshot length, name, and microsecond
/// timestamps.
pub fn interface_description(buf: &mut Vec<u8>, name: &str, linktype: u32, snaplen: u32) {
    block(buf, INTERFACE_DESCRIPTION, |buf| {
        // The file's link types fit 16 bits (the command line checks).
        put_u16(buf, linktype as u16);
        put_u16(buf, 0);
        put_u32(buf, snaplen);
        put_option(buf, IF_NAME, name.as_bytes());
        put_option(buf, IF_TSRESOL, &[MICROSECONDS]);
        put_option(buf, OPT_END, &[]);
    });
}

/// One frame seen on `interface` at `ts_us` (a time [`record_time`]
/// accepts: the same instant classic pcap writes for it), `wire_len` bytes
/// long on the wire.
#[inline]
pub fn enhanced_packet(buf: &mut Vec<u8>, interface: u32, ts_us: u64, frame: &[u8], wire_len: u32) {
    let (seconds, micros) = record_time(ts_us).unwrap_or_default();
    let ts = u64::from(seconds) * 1_000_000 + u64::from(micros);
    let caplen = frame.len() as u32;
    let total = (28 + padded(frame.len()) + 4) as u32;
    let mut header = [0u8; 28];
    header[0..4].copy_from_slice(&ENHANCED_PACKET.to_ne_bytes());
    header[4..8].copy_from_slice(&total.to_ne_bytes());
    header[8..12].copy_from_slice(&interface.to_ne_bytes());
    header[12..16].copy_from_slice(&((ts >> 32) as u32).to_ne_bytes());
    header[16..20].copy_from_slice(&(ts as u32).to_ne_bytes());
    header[20..24].copy_from_slice(&caplen.to_ne_bytes());
    header[24..28].copy_from_slice(&wire_len.max(caplen).to_ne_bytes());
    buf.extend_from_slice(&header);
    buf.extend_from_slice(frame);
    buf.resize(buf.len() + padded(frame.len()) - frame.len(), 0);
    put_u32(buf, total);
}
