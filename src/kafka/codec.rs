//! The record format of a capture topic, in one place: the producer encodes
//! it, the dump (and the index builder) decode it.
//!
//! - **Key**: the frame's capture time in µs since the epoch, 8 bytes,
//!   big-endian (a record's Kafka timestamp is the time of production, so
//!   the key is what tells when the frame was seen).
//! - **Value**: the frame's bytes as captured (perhaps cut by the snapshot
//!   length).
//! - **`orig_len` header**: only on a cut frame, its length on the wire, 4
//!   bytes, big-endian. A whole frame carries no header at all.
//!
//! Everything here is a few instructions and allocates nothing: it runs once
//! per record on both the transmit and the read path.

use std::ffi::CStr;

/// Bytes of a key.
pub const KEY_LEN: usize = 8;

/// The record header that carries a cut frame's length on the wire, so that
/// `fastcapa dump` can write it back as the pcap record's original length.
pub const ORIG_LEN_HEADER: &CStr = c"orig_len";

/// The key of a frame captured at `ts_us`.
#[inline]
pub fn encode_key(ts_us: u64) -> [u8; KEY_LEN] {
    ts_us.to_be_bytes()
}

/// The capture time a key holds; `None` for no key, or one that is not
/// [`KEY_LEN`] bytes.
#[inline]
pub fn decode_key(key: Option<&[u8]>) -> Option<u64> {
    let bytes: [u8; KEY_LEN] = key?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The `orig_len` header's value for a frame of `wire_len` bytes on the wire
/// of which `captured` bytes were kept; `None` (no header) for a whole frame.
#[inline]
pub fn encode_orig_len(captured: usize, wire_len: u32) -> Option<[u8; 4]> {
    (wire_len as usize > captured).then(|| wire_len.to_be_bytes())
}

/// What a record's `orig_len` header said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrigLen {
    /// No header: the frame is whole.
    Absent,
    /// A header of 4 bytes, big-endian.
    Given(u32),
    /// A header that is not 4 bytes.
    Malformed,
}

/// Reads the `orig_len` header's bytes (`None`: the record has none).
#[inline]
pub fn decode_orig_len(header: Option<&[u8]>) -> OrigLen {
    match header {
        None => OrigLen::Absent,
        Some(bytes) => match <[u8; 4]>::try_from(bytes) {
            Ok(be) => OrigLen::Given(u32::from_be_bytes(be)),
            Err(_) => OrigLen::Malformed,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_eight_bytes_big_endian_both_ways() {
        let ts = 1_700_000_000_123_456u64;
        let key = encode_key(ts);
        assert_eq!(key, [0x00, 0x06, 0x0a, 0x24, 0x18, 0x20, 0x22, 0x40]);
        assert_eq!(decode_key(Some(&key)), Some(ts));
        for ts in [0, 1, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            assert_eq!(decode_key(Some(&encode_key(ts))), Some(ts));
        }
    }

    #[test]
    fn a_key_that_is_not_eight_bytes_holds_no_time() {
        assert_eq!(decode_key(None), None);
        for key in [&[][..], &[0u8; 7][..], &[0u8; 9][..], &[0u8; 16][..]] {
            assert_eq!(decode_key(Some(key)), None, "{key:?}");
        }
    }

    #[test]
    fn only_a_cut_frame_carries_its_wire_length() {
        assert_eq!(encode_orig_len(96, 1514), Some(1514u32.to_be_bytes()));
        assert_eq!(encode_orig_len(1514, 1514), None);
        assert_eq!(encode_orig_len(60, 0), None);
        assert_eq!(encode_orig_len(0, 1), Some([0, 0, 0, 1]));
        let header = encode_orig_len(96, u32::MAX).unwrap();
        assert_eq!(decode_orig_len(Some(&header)), OrigLen::Given(u32::MAX));
        assert_eq!(ORIG_LEN_HEADER.to_bytes(), b"orig_len");
    }

    #[test]
    fn a_header_that_is_not_four_bytes_is_malformed() {
        assert_eq!(decode_orig_len(None), OrigLen::Absent);
        assert_eq!(
            decode_orig_len(Some(&1514u32.to_be_bytes())),
            OrigLen::Given(1514)
        );
        for header in [&[][..], &[0, 5, 234][..], &[0u8; 5][..], &[0u8; 8][..]] {
            assert_eq!(
                decode_orig_len(Some(header)),
                OrigLen::Malformed,
                "{header:?}"
            );
        }
    }
}
