//! The messages of one `rd_kafka_produce_batch` call, and what became of
//! each.

use rdkafka::bindings as rd;

use crate::kafka::codec::{encode_key, KEY_LEN};

/// Outcome of offering one frame to the producer.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The producer's queue is full (`queue.buffering.max.messages`/`kbytes`).
    QueueFull,
    /// librdkafka refused the message for good (e.g. larger than `message.max.bytes`).
    Refused(String),
}

/// librdkafka's "no partition chosen" (`RD_KAFKA_PARTITION_UA`, a macro
/// the bindings leave out): its partitioner hashes the key.
pub const UNASSIGNED: i32 = -1;

/// The messages of one `rd_kafka_produce_batch` call, reused from burst to
/// burst: the keys live here, the values in the ring's slots.
pub struct Batch {
    pub(super) messages: Vec<rd::rd_kafka_message_t>,
    keys: Box<[[u8; KEY_LEN]]>,
    /// Keys written since `clear` (messages consumed keep theirs in place).
    keys_used: usize,
    pub(super) per_message_partition: bool,
}

// SAFETY: the raw pointers a batch holds are only dereferenced by librdkafka
// inside `produce_batch`, on the thread that owns the batch; between bursts
// they are stale and never read.
unsafe impl Send for Batch {}

impl Batch {
    /// Room for `capacity` messages (the transmit burst).
    pub fn new(capacity: usize) -> Batch {
        Batch {
            messages: Vec::with_capacity(capacity),
            keys: vec![[0; KEY_LEN]; capacity].into_boxed_slice(),
            keys_used: 0,
            per_message_partition: false,
        }
    }

    pub fn clear(&mut self) {
        self.messages.clear();
        self.keys_used = 0;
        self.per_message_partition = false;
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.keys_used == self.keys.len()
    }

    /// Adds a whole frame: key = capture time in µs, `partition` its own
    /// (any value when the whole batch goes to one partition). `value` must
    /// stay where it is until the batch is produced or cleared (it is a slot
    /// the transmit worker holds for the burst).
    #[inline]
    pub fn push(&mut self, ts_us: u64, value: &[u8], partition: Option<i32>) {
        let i = self.keys_used;
        assert!(i < self.keys.len(), "batch full");
        self.keys_used += 1;
        self.keys[i] = encode_key(ts_us);
        if partition.is_some() {
            self.per_message_partition = true;
        }
        self.messages.push(rd::rd_kafka_message_t {
            err: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
            rkt: std::ptr::null_mut(),
            partition: partition.unwrap_or(UNASSIGNED),
            payload: value.as_ptr() as *mut _,
            len: value.len(),
            key: self.keys[i].as_ptr() as *mut _,
            key_len: KEY_LEN,
            offset: 0,
            _private: std::ptr::null_mut(),
        });
    }

    /// What became of message `i` in the last `produce_batch`.
    pub fn outcome(&self, i: usize) -> Offer {
        use rd::rd_kafka_resp_err_t::*;
        match self.messages[i].err {
            RD_KAFKA_RESP_ERR_NO_ERROR => Offer::Queued,
            RD_KAFKA_RESP_ERR__QUEUE_FULL => Offer::QueueFull,
            // SAFETY: rd_kafka_err2str returns a static string for any code.
            err => Offer::Refused(
                unsafe { std::ffi::CStr::from_ptr(rd::rd_kafka_err2str(err)) }
                    .to_string_lossy()
                    .into_owned(),
            ),
        }
    }

    /// Payload length of message `i`.
    pub fn value_len(&self, i: usize) -> usize {
        self.messages[i].len
    }

    /// Drops the first `n` messages (those done with), keeping the rest in
    /// order for another call.
    pub fn consume(&mut self, n: usize) {
        self.messages.drain(..n);
    }

    /// The key (capture time) of message `i`.
    #[cfg(test)]
    pub fn key(&self, i: usize) -> u64 {
        // SAFETY: `key` points at KEY_LEN bytes of `self.keys`, alive with the batch.
        let key = unsafe { std::slice::from_raw_parts(self.messages[i].key as *const u8, KEY_LEN) };
        crate::kafka::codec::decode_key(Some(key)).unwrap_or_default()
    }

    /// Sets what became of message `i`, as a producer does (tests' fakes).
    #[cfg(test)]
    pub fn mark(&mut self, i: usize, outcome: &Offer) {
        use rd::rd_kafka_resp_err_t::*;
        self.messages[i].err = match outcome {
            Offer::Queued => RD_KAFKA_RESP_ERR_NO_ERROR,
            Offer::QueueFull => RD_KAFKA_RESP_ERR__QUEUE_FULL,
            Offer::Refused(_) => RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
        };
    }
}
