//! One record of a capture topic as librdkafka lends it to a callback:
//! the dump's readers and the indexer read records through this.

use std::ffi::c_void;

use rdkafka::bindings as rd;

use super::codec::ORIG_LEN_HEADER;

/// One record as librdkafka hands it over, borrowed for the callback.
pub struct Msg<'a> {
    raw: &'a rd::rd_kafka_message_t,
}

impl<'a> Msg<'a> {
    /// The record librdkafka lends for the duration of a callback.
    ///
    /// # Safety
    ///
    /// `raw` is a message librdkafka handed over (its key, payload and
    /// headers pointers valid) and lives for `'a`.
    pub unsafe fn borrow(raw: &'a rd::rd_kafka_message_t) -> Msg<'a> {
        Msg { raw }
    }

    pub fn partition(&self) -> i32 {
        self.raw.partition
    }

    pub fn offset(&self) -> i64 {
        self.raw.offset
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        // SAFETY: librdkafka keeps `key_len` bytes at `key` for as long as
        // the message lives, which outlasts the callback that lends it.
        (!self.raw.key.is_null()).then(|| unsafe {
            std::slice::from_raw_parts(self.raw.key as *const u8, self.raw.key_len)
        })
    }

    pub fn value(&self) -> Option<&'a [u8]> {
        // SAFETY: as for the key, `len` bytes at `payload`.
        (!self.raw.payload.is_null()).then(|| unsafe {
            std::slice::from_raw_parts(self.raw.payload as *const u8, self.raw.len)
        })
    }

    /// The bytes of the last `orig_len` header, if the record has one.
    pub fn orig_len_header(&self) -> Option<&'a [u8]> {
        let mut headers: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
        // SAFETY: the message is valid; librdkafka parses its headers once,
        // keeps them with the message and returns NOENT when there are none
        // (whole frames: the cheap, common case).
        let err = unsafe { rd::rd_kafka_message_headers(self.raw, &mut headers) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
            return None;
        }
        let (mut value, mut size): (*const c_void, usize) = (std::ptr::null(), 0);
        // SAFETY: `headers` belongs to the message; the value it points to
        // lives as long as the message.
        let err = unsafe {
            rd::rd_kafka_header_get_last(headers, ORIG_LEN_HEADER.as_ptr(), &mut value, &mut size)
        };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        if value.is_null() {
            return Some(&[]);
        }
        // SAFETY: `size` bytes at `value`, owned by the message.
        Some(unsafe { std::slice::from_raw_parts(value as *const u8, size) })
    }
}
