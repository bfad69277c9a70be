//! The classic pcap file `fastcapa dump` writes, and what a Kafka record must
//! be to become one of its records.
//!
//! Writing the format is a fixed 24-byte file header and a 16-byte header per
//! record (host byte order and microseconds, as libpcap writes it); the hard
//! part, reading capture files, is left to libpcap on the capture side. What
//! matters here is that every record is one libpcap accepts, whatever the
//! topic holds: libpcap stops reading a file at the first record whose
//! captured length passes its limit, so one bad record would hide every later
//! one from tcpdump and tshark.

use std::io::{self, Write};

use super::pcapng;
use crate::kafka::codec::{decode_key, OrigLen};

/// The snapshot length of the file, and the most bytes a record may carry:
/// libpcap refuses a record with a longer captured length (its
/// `MAXIMUM_SNAPLEN`), and tcpdump's default snap length is the same.
pub const PCAP_SNAPLEN: u32 = crate::bpf::MAX_SNAPLEN;

/// The latest capture time a record can hold: its seconds field is an
/// unsigned 32-bit number (1970 to 2106-02-07).
pub const LATEST_KEY_US: u64 = (u32::MAX as u64 + 1) * 1_000_000 - 1;

/// A record's seconds and microseconds for a key, if a record can hold it.
///
/// Keys up to [`LATEST_KEY_US`] are times from 1970 to 2106. A key from
/// 2^63 up is a negative time that wrapped: libpcap builds that read a
/// record's seconds as a signed number give a capture file dated 2038-2106
/// (or before 1970) such times, and the probe carries them as they are. They
/// are written as the same 32-bit field, so the file reads back as the one
/// captured, by every reader. Anything else cannot be written as it is.
#[inline]
pub fn record_time(ts_us: u64) -> Option<(u32, u32)> {
    if ts_us <= LATEST_KEY_US {
        return Some(((ts_us / 1_000_000) as u32, (ts_us % 1_000_000) as u32));
    }
    let signed = ts_us as i64;
    if signed >= 0 {
        return None;
    }
    let seconds = signed.div_euclid(1_000_000);
    let micros = signed.rem_euclid(1_000_000) as u32;
    i32::try_from(seconds).ok().map(|s| (s as u32, micros))
}

/// How much the writer gathers before one `write` to the output.
const WRITE_BUFFER: usize = 1 << 20;

/// Why a record was left out of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// No key at all.
    NoKey,
    /// A key that is not 8 bytes.
    BadKey,
    /// No value at all (a null value, Kafka's tombstone). An empty value is
    /// written as an empty record: a capture file can hold one, and a
    /// replayed file comes back whole.
    NoValue,
    /// A capture time a pcap record cannot hold (see [`record_time`]).
    BadTime,
}

/// One record as it goes into the file.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    pub ts_us: u64,
    /// Bytes of the value to write: all of it, or [`PCAP_SNAPLEN`].
    pub caplen: u32,
    /// The frame's length on the wire.
    pub wire_len: u32,
    /// The value was longer than [`PCAP_SNAPLEN`] and is written cut.
    pub cut: bool,
    /// The `orig_len` header was there but unusable (not 4 bytes, or shorter
    /// than the value): the value's own length stands in for it.
    pub bad_orig_len: bool,
}

/// Decides what becomes of one Kafka record: written (perhaps cut) or skipped.
pub fn accept(key: Option<&[u8]>, value: Option<&[u8]>, orig: OrigLen) -> Result<Accepted, Skip> {
    let key = key.ok_or(Skip::NoKey)?;
    let ts_us = decode_key(Some(key)).ok_or(Skip::BadKey)?;
    let value = value.ok_or(Skip::NoValue)?;
    if record_time(ts_us).is_none() {
        return Err(Skip::BadTime);
    }
    // A value past 4 GiB cannot come from Kafka; saturate rather than wrap.
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    let (wire_len, bad_orig_len) = match orig {
        OrigLen::Absent => (len, false),
        OrigLen::Given(wire) if wire >= len => (wire, false),
        OrigLen::Given(_) | OrigLen::Malformed => (len, true),
    };
    Ok(Accepted {
        ts_us,
        caplen: len.min(PCAP_SNAPLEN),
        wire_len,
        cut: len > PCAP_SNAPLEN,
        bad_orig_len,
    })
}

/// The file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap: one link type, no interfaces.
    Pcap,
    /// pcapng: one interface per topic, named after it.
    Pcapng,
}

/// Writes a capture file (classic pcap or pcapng) through one large buffer.
pub struct CaptureWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    format: Format,
}

impl<W: Write> CaptureWriter<W> {
    /// Starts a classic pcap file: the header is written with the first flush.
    pub fn pcap(out: W, linktype: u32) -> CaptureWriter<W> {
        let mut buf = Vec::with_capacity(WRITE_BUFFER + PCAP_SNAPLEN as usize + 64);
        buf.extend_from_slice(&0xA1B2_C3D4u32.to_ne_bytes());
        buf.extend_from_slice(&2u16.to_ne_bytes());
        buf.extend_from_slice(&4u16.to_ne_bytes());
        buf.extend_from_slice(&0i32.to_ne_bytes()); // thiszone: UTC
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sigfigs
        buf.extend_from_slice(&PCAP_SNAPLEN.to_ne_bytes());
        buf.extend_from_slice(&linktype.to_ne_bytes());
        CaptureWriter {
            out,
            buf,
            format: Format::Pcap,
        }
    }

    /// Starts a pcapng file: a section naming `application`, then one
    /// interface per `(name, linktype)`, in order (a record's `interface`
    /// is its index there).
    pub fn pcapng(out: W, application: &str, interfaces: &[(String, u32)]) -> CaptureWriter<W> {
        let mut buf = Vec::with_capacity(WRITE_BUFFER + PCAP_SNAPLEN as usize + 64);
        pcapng::section_header(&mut buf, application);
        for (name, linktype) in interfaces {
            pcapng::interface_description(&mut buf, name, *linktype, PCAP_SNAPLEN);
        }
        CaptureWriter {
            out,
            buf,
            format: Format::Pcapng,
        }
    }

    /// Appends one record: `frame` (at most [`PCAP_SNAPLEN`] bytes, the
    /// caller cuts) captured on `interface` (pcapng only) at `ts_us` (a
    /// time [`record_time`] accepts), `wire_len` bytes long on the wire.
    #[inline]
    pub fn write(
        &mut self,
        interface: u32,
        ts_us: u64,
        frame: &[u8],
        wire_len: u32,
    ) -> io::Result<()> {
        debug_assert!(frame.len() <= PCAP_SNAPLEN as usize);
        match self.format {
            Format::Pcap => {
                let (seconds, micros) = record_time(ts_us).unwrap_or_default();
                let caplen = frame.len() as u32;
                let mut header = [0u8; 16];
                header[0..4].copy_from_slice(&seconds.to_ne_bytes());
                header[4..8].copy_from_slice(&micros.to_ne_bytes());
                header[8..12].copy_from_slice(&caplen.to_ne_bytes());
                header[12..16].copy_from_slice(&wire_len.max(caplen).to_ne_bytes());
                self.buf.extend_from_slice(&header);
                self.buf.extend_from_slice(frame);
            }
            Format::Pcapng => {
                pcapng::enhanced_packet(&mut self.buf, interface, ts_us, frame, wire_len)
            }
        }
        if self.buf.len() >= WRITE_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands everything gathered to the output.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            // On a failure nothing is kept: a reader that went away (EPIPE)
            // or a full disk ends the dump, and a retry must not repeat bytes.
            let result = self.out.write_all(&self.buf);
            self.buf.clear();
            result?;
        }
        self.out.flush()
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::codec::decode_orig_len;

    const KEY: [u8; 8] = 1_700_000_000_123_456u64.to_be_bytes();

    #[test]
    fn records_are_accepted_cut_or_skipped_by_kind() {
        let frame = [7u8; 60];
        let ok = accept(Some(&KEY), Some(&frame), OrigLen::Absent).unwrap();
        assert_eq!(
            ok,
            Accepted {
                ts_us: 1_700_000_000_123_456,
                caplen: 60,
                wire_len: 60,
                cut: false,
                bad_orig_len: false
            }
        );
        assert_eq!(
            accept(None, Some(&frame), OrigLen::Absent),
            Err(Skip::NoKey)
        );
        for key in [&[][..], &KEY[..7], &[0u8; 9][..], &[0u8; 16][..]] {
            assert_eq!(
                accept(Some(key), Some(&frame), OrigLen::Absent),
                Err(Skip::BadKey)
            );
        }
        assert_eq!(
            accept(Some(&KEY), None, OrigLen::Absent),
            Err(Skip::NoValue)
        );
        let empty = accept(Some(&KEY), Some(&[]), OrigLen::Absent).unwrap();
        assert_eq!((empty.caplen, empty.wire_len), (0, 0));
        // The last microsecond of 2106-02-07T06:28:15 is the latest time.
        let last = LATEST_KEY_US.to_be_bytes();
        assert!(accept(Some(&last), Some(&frame), OrigLen::Absent).is_ok());
        for bad in [LATEST_KEY_US + 1, 1 << 62, (1 << 63) - 1, 1 << 63] {
            assert_eq!(
                accept(Some(&bad.to_be_bytes()), Some(&frame), OrigLen::Absent),
                Err(Skip::BadTime)
            );
        }
        // Negative times that wrapped, down to the 32-bit field's -2^31 s.
        let earliest = (i64::from(i32::MIN) * 1_000_000) as u64;
        for wrapped in [u64::MAX, earliest] {
            assert!(accept(Some(&wrapped.to_be_bytes()), Some(&frame), OrigLen::Absent).is_ok());
        }
        assert_eq!(
            accept(
                Some(&(earliest - 1).to_be_bytes()),
                Some(&frame),
                OrigLen::Absent
            ),
            Err(Skip::BadTime)
        );
        assert_eq!(record_time(u64::MAX), Some((u32::MAX, 999_999)));
        // 2039-01-01 as a signed 32-bit reader gives it: the field comes back.
        let field = 2_177_452_800u32;
        let as_read = (i64::from(field as i32) * 1_000_000) as u64;
        assert_eq!(record_time(as_read), Some((field, 0)));
        assert!(accept(Some(&[0u8; 8]), Some(&frame), OrigLen::Absent).is_ok());
    }

    #[test]
    fn long_values_are_cut_and_wire_lengths_restored() {
        let big = vec![1u8; PCAP_SNAPLEN as usize + 1];
        let a = accept(Some(&KEY), Some(&big), OrigLen::Absent).unwrap();
        assert_eq!(
            (a.caplen, a.wire_len, a.cut),
            (PCAP_SNAPLEN, PCAP_SNAPLEN + 1, true)
        );
        let a = accept(Some(&KEY), Some(&big), OrigLen::Given(1 << 20)).unwrap();
        assert_eq!((a.caplen, a.wire_len, a.cut), (PCAP_SNAPLEN, 1 << 20, true));
        let exact = vec![1u8; PCAP_SNAPLEN as usize];
        assert!(
            !accept(Some(&KEY), Some(&exact), OrigLen::Absent)
                .unwrap()
                .cut
        );

        let cut = [0u8; 96];
        let a = accept(
            Some(&KEY),
            Some(&cut),
            decode_orig_len(Some(&1514u32.to_be_bytes())),
        )
        .unwrap();
        assert_eq!((a.caplen, a.wire_len, a.bad_orig_len), (96, 1514, false));
        let a = accept(
            Some(&KEY),
            Some(&cut),
            decode_orig_len(Some(&96u32.to_be_bytes())),
        )
        .unwrap();
        assert_eq!((a.wire_len, a.bad_orig_len), (96, false));
        // Shorter than what was captured, or not 4 bytes: the value's length.
        for header in [
            &50u32.to_be_bytes()[..],
            &[0, 5, 234][..],
            &[0u8; 8][..],
            &[][..],
        ] {
            let a = accept(Some(&KEY), Some(&cut), decode_orig_len(Some(header))).unwrap();
            assert_eq!((a.wire_len, a.bad_orig_len), (96, true), "{header:?}");
        }
    }

    /// libpcap reads the file at `path` as exactly `records` (time, frame,
    /// wire length), Ethernet, to its end.
    fn assert_libpcap_reads<'a>(
        path: &std::path::Path,
        records: impl Iterator<Item = (u64, &'a [u8], u32)>,
    ) {
        let mut cap = pcap::Capture::from_file(path).unwrap();
        assert_eq!(cap.get_datalink(), pcap::Linktype::ETHERNET);
        for (ts, frame, wire) in records {
            let p = cap.next_packet().unwrap();
            let secs = p.header.ts.tv_sec as u32;
            assert_eq!((secs, p.header.ts.tv_usec as u32), record_time(ts).unwrap());
            assert_eq!((p.header.caplen, p.header.len), (frame.len() as u32, wire));
            assert_eq!(p.data, frame);
        }
        assert!(matches!(cap.next_packet(), Err(pcap::Error::NoMorePackets)));
    }

    #[test]
    fn the_file_is_what_libpcap_reads() {
        let dir = std::env::temp_dir().join(format!("fcapa-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.pcap");
        let records: Vec<(u64, Vec<u8>, u32)> = vec![
            (1_700_000_000_000_001, vec![1; 60], 60),
            (1_700_000_000_999_999, vec![2; 96], 1514),
            (0, vec![3; 14], 14),
            (
                LATEST_KEY_US,
                vec![4; PCAP_SNAPLEN as usize],
                PCAP_SNAPLEN + 10,
            ),
            (u64::MAX, vec![5; 20], 20),
        ];
        {
            let file = std::fs::File::create(&path).unwrap();
            let mut w = CaptureWriter::pcap(file, 1);
            for (ts, frame, wire) in &records {
                w.write(0, *ts, frame, *wire).unwrap();
            }
            w.flush().unwrap();
        }
        assert_libpcap_reads(&path, records.iter().map(|(ts, f, w)| (*ts, &f[..], *w)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_pcapng_file_is_what_libpcap_reads() {
        let dir = std::env::temp_dir().join(format!("fcapa-pcapng-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.pcapng");
        // Odd lengths exercise the padding; the last time is one a signed
        // reader wrapped, written as classic pcap writes it.
        let records: Vec<(u32, u64, Vec<u8>, u32)> = vec![
            (0, 1_700_000_000_000_001, vec![1; 61], 61),
            (1, 1_700_000_000_999_999, vec![2; 97], 1514),
            (0, 0, vec![], 0),
            (
                1,
                LATEST_KEY_US,
                vec![4; PCAP_SNAPLEN as usize],
                PCAP_SNAPLEN + 10,
            ),
            (0, u64::MAX, vec![5; 22], 22),
        ];
        let interfaces = [
            ("east".to_string(), 1),
            ("a-much-longer-name".to_string(), 1),
        ];
        {
            let file = std::fs::File::create(&path).unwrap();
            let mut w = CaptureWriter::pcapng(file, "fastcapa test", &interfaces);
            for (interface, ts, frame, wire) in &records {
                w.write(*interface, *ts, frame, *wire).unwrap();
            }
            w.flush().unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() % 4, 0, "blocks are padded to 32 bits");
        assert!(bytes.windows(13).any(|w| w == b"fastcapa test"));
        assert_libpcap_reads(&path, records.iter().map(|(_, ts, f, w)| (*ts, &f[..], *w)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_large_buffer_reaches_the_output_in_few_writes() {
        struct Counting(Vec<u8>, usize);
        impl Write for Counting {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.1 += 1;
                self.0.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = CaptureWriter::pcap(Counting(Vec::new(), 0), 1);
        for i in 0..100_000u64 {
            w.write(0, i, &[0u8; 64], 64).unwrap();
        }
        w.flush().unwrap();
        let out = w.get_ref();
        assert_eq!(out.0.len(), 24 + 100_000 * 80);
        assert!(out.1 <= 9, "{} writes", out.1);
    }

    #[test]
    fn a_reader_that_went_away_is_an_error_once() {
        struct Gone;
        impl Write for Gone {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = CaptureWriter::pcap(Gone, 1);
        w.write(0, 1, &[0u8; 64], 64).unwrap();
        assert_eq!(w.flush().unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        assert!(w.flush().is_ok(), "nothing left to write");
    }
}
