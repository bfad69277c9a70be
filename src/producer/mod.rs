//! One Kafka producer, as a transmit worker uses it.
//!
//! Built on `rdkafka`'s `BaseProducer` (its own librdkafka) for the client's
//! life cycle (settings, the start-up check, purge), with the hot path on
//! librdkafka's C API through a topic handle made once:
//!
//! - a burst of whole frames is one `rd_kafka_produce_batch` call: one topic
//!   lock, one partition lookup and one clock read per burst, one allocation
//!   and copy per frame inside librdkafka (`RD_KAFKA_MSG_F_COPY`), nothing
//!   allocated on our side; the slots go back to the ring at once;
//! - a frame cut by the snapshot length carries its wire length in a record
//!   header, which the batch call cannot carry: it goes alone through
//!   `rd_kafka_produceva`;
//! - delivery reports are served as librdkafka's events
//!   (`rd_kafka_queue_poll` on the main queue, `rd_kafka_event_message_next`),
//!   counted per event rather than through a callback per message.
//!
//! The record's Kafka timestamp is the time of production (the batch call
//! sets no other); the capture time is the key (docs/performance.md).

mod access;
mod batch;
mod context;
mod memory;

use std::ffi::CString;
use std::fs::File;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer, PurgeConfig};
use rdkafka::ClientContext;

pub use self::batch::{Batch, Offer, UNASSIGNED};
pub use self::context::DeliveryCounter;
use self::memory::keep_freed_memory;
use crate::counters::TxCounters;
use crate::events::EventLog;
use crate::kafka::codec::{encode_key, encode_orig_len, ORIG_LEN_HEADER};
use crate::kafka::config::{self, ClientError};
use crate::kafka::{reach, LastError};

/// How errors name this client.
const CLIENT: &str = "producer";

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The cluster answered, but the topic cannot be used at all.
    #[error("topic {topic} {reason}")]
    Topic { topic: String, reason: String },
}

/// Most events one `serve_reports` call handles (a delivery report event
/// holds the reports of up to a whole message set).
const REPORT_EVENTS_PER_CALL: usize = 16;
/// How long the start-up check waits for a topic that a cluster creating
/// topics on first use is making (a few hundred ms on a test broker).
const TOPIC_CREATION_WAIT: Duration = Duration::from_secs(5);
const TOPIC_CREATION_PAUSE: Duration = Duration::from_millis(200);
/// Longest the start-up check waits for the brokers to say whether the
/// client may write the topic: one metadata round trip, in practice, but
/// librdkafka sends the question to the controller a broker names, and a
/// cluster that names none (librdkafka's mock cluster) never answers. Not
/// told, the probe learns it from the first frames (see `denied`).
const WRITE_CHECK_WAIT: Duration = Duration::from_secs(2);

pub struct KafkaProducer {
    producer: BaseProducer<DeliveryCounter>,
    topic: *mut rd::rd_kafka_topic_t,
    /// The client's main queue, where delivery reports, statistics and
    /// errors arrive as events.
    queue: *mut rd::rd_kafka_queue_t,
    topic_name: String,
    /// The settings it was made of (for the words of its errors).
    config: ClientConfig,
}

// SAFETY: the topic and queue handles are reference-counted and thread-safe
// in librdkafka; they are only destroyed in Drop, once, by the owner.
unsafe impl Send for KafkaProducer {}
// SAFETY: librdkafka's client and topic handles may be used from any thread.
unsafe impl Sync for KafkaProducer {}

impl KafkaProducer {
    /// Creates a producer from librdkafka settings (global and topic-level
    /// properties mixed; librdkafka sorts them) for one topic.
    pub fn new(
        settings: &[(String, String)],
        topic: &str,
        counters: Arc<TxCounters>,
        events: Arc<EventLog>,
        stats_file: Option<File>,
    ) -> Result<KafkaProducer, ProducerError> {
        keep_freed_memory();
        // Python merges defaults and the operator's settings (config.py):
        // nothing to add here.
        let config = config::client_config(settings, &[], &[]);
        let context = DeliveryCounter {
            counters,
            stats_file: stats_file.map(Mutex::new),
            events,
            checking: AtomicBool::new(false),
            last_error: LastError::default(),
            denied: OnceLock::new(),
        };
        let producer: BaseProducer<DeliveryCounter> = config::create(&config, context, CLIENT)?;
        let topic_name = CString::new(topic).map_err(|_| ClientError::Create {
            client: CLIENT,
            reason: format!("topic name {topic:?} holds a NUL"),
        })?;
        // SAFETY: the client pointer is valid for the producer's lifetime; a
        // null topic conf means the defaults from the global configuration.
        let handle = unsafe {
            rd::rd_kafka_topic_new(
                producer.client().native_ptr(),
                topic_name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        if handle.is_null() {
            return Err(ClientError::Create {
                client: CLIENT,
                reason: format!("cannot open topic {topic:?}"),
            }
            .into());
        }
        // SAFETY: as above; the reference is released in Drop.
        let queue = unsafe { rd::rd_kafka_queue_get_main(producer.client().native_ptr()) };
        Ok(KafkaProducer {
            producer,
            topic: handle,
            queue,
            topic_name: topic.to_string(),
            config,
        })
    }

    /// Waits up to `timeout` for the cluster to answer a metadata request
    /// about the topic; returns its partition count. A refusal (a
    /// certificate, a password: see [`crate::kafka::Refusal`]) ends the wait
    /// at its first occurrence, in the operator's words; a cluster that
    /// does not answer gives librdkafka's last error (a refused connection)
    /// rather than a bare timeout. The request is the one a first produce would make, so a
    /// cluster that creates topics on first use creates it now; a topic that
    /// does not exist and will not be created, or that this client may not
    /// see, is an error here rather than a producer queue that fills until
    /// librdkafka gives up on the topic (after 30 s, and silently until then).
    pub fn check_connection(&self, timeout: Duration) -> Result<usize, ProducerError> {
        let context = self.producer.context();
        context.set_checking(true);
        // Serves the error events the check queued (nothing else is queued yet).
        let serve = || {
            for _ in 0..64 {
                self.producer.poll(Duration::ZERO);
            }
        };
        let answer = reach::answer(
            self.producer.client(),
            &self.config,
            Some(&self.topic_name),
            timeout,
            &context.last_error,
            serve,
        );
        context.set_checking(false);
        let metadata = answer?;
        use rd::rd_kafka_resp_err_t::*;
        let topic_error = |metadata: &rdkafka::metadata::Metadata| {
            metadata.topics().first().and_then(|t| t.error())
        };
        let partitions = |metadata: &rdkafka::metadata::Metadata| {
            metadata
                .topics()
                .first()
                .map_or(0, |t| t.partitions().len())
        };
        let deadline = Instant::now() + timeout;
        let mut error = topic_error(&metadata);
        let mut count = partitions(&metadata);
        // A cluster that creates topics on first use answers the request that
        // creates one with "unknown topic" all the same (Kafka 4): ask again
        // until it is there or it is plain that it will not be.
        let settle = Instant::now() + TOPIC_CREATION_WAIT.min(timeout);
        while error == Some(RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) && Instant::now() < settle {
            std::thread::sleep(TOPIC_CREATION_PAUSE);
            match self
                .producer
                .client()
                .fetch_metadata(Some(&self.topic_name), timeout)
            {
                Ok(metadata) => {
                    error = topic_error(&metadata);
                    count = partitions(&metadata);
                }
                Err(_) => break,
            }
        }
        let reason = match error {
            Some(RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
                "does not exist and was not created on first use (the brokers' \
                 auto.create.topics.enable, or allow.auto.create.topics here, is false): \
                 create it first"
            }
            Some(RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) => {
                "is not authorized for this client (Kafka's ACLs must allow it \
                 DESCRIBE and WRITE on the topic)"
            }
            // Fine, or passing: being created (LEADER_NOT_AVAILABLE), a leader
            // moving. Production waits for it or reports what goes wrong.
            _ if count > 0 => {
                let left = deadline.saturating_duration_since(Instant::now());
                let rk = self.producer.client().native_ptr();
                if access::may_write(rk, &self.topic_name, left.min(WRITE_CHECK_WAIT))
                    == Some(false)
                {
                    return Err(ProducerError::Topic {
                        topic: self.topic_name.clone(),
                        reason: format!(
                            "may be described but not written by {} (Kafka's ACLs must allow \
                             WRITE on the topic)",
                            config::principal(&self.config)
                        ),
                    });
                }
                return Ok(count);
            }
            _ => "has no partitions the cluster describes",
        };
        Err(ProducerError::Topic {
            topic: self.topic_name.clone(),
            reason: reason.to_string(),
        })
    }

    /// Why this producer can deliver nothing more, once the brokers refused
    /// one of its frames for want of a permission (an ACL removed while
    /// running): the operator's line, naming the topic, the user and the
    /// permission. `None` while nothing of the kind happened.
    pub fn denied(&self) -> Option<String> {
        let reason = self.producer.context().denied.get()?;
        Some(format!(
            "topic {}: the brokers refused {} a frame for want of a permission ({reason}); \
             Kafka's ACLs must allow WRITE on the topic",
            self.topic_name,
            config::principal(&self.config)
        ))
    }

    /// Messages and bytes of one message set, as this producer's
    /// librdkafka has them (`batch.num.messages`, `batch.size`: the
    /// operator's or librdkafka's own defaults).
    pub fn message_set(&self) -> (usize, usize) {
        (
            self.setting("batch.num.messages").unwrap_or(1),
            self.setting("batch.size").unwrap_or(1),
        )
    }

    /// A numeric setting as the client holds it.
    fn setting(&self, name: &str) -> Option<usize> {
        let name = CString::new(name).ok()?;
        let mut value = [0u8; 64];
        let mut size = value.len();
        // SAFETY: the client is alive; rd_kafka_conf returns its own
        // configuration (not a copy, not to be freed), and conf_get writes at
        // most `size` bytes, NUL-terminated, into `value`.
        let status = unsafe {
            let conf = rd::rd_kafka_conf(self.producer.client().native_ptr());
            rd::rd_kafka_conf_get(conf, name.as_ptr(), value.as_mut_ptr().cast(), &mut size)
        };
        if status != rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK {
            return None;
        }
        let text = std::ffi::CStr::from_bytes_until_nul(&value).ok()?;
        text.to_str().ok()?.trim().parse().ok()
    }

    /// Offers one frame alone: key = capture time in µs (see
    /// [`crate::kafka::codec`]), `partition` < 0 lets librdkafka's
    /// partitioner choose by key. A frame cut short of its `wire_len` carries that length in an
    /// `orig_len` header; a whole frame carries no header at all (whole
    /// frames normally go by [`KafkaProducer::produce_batch`]). The record's
    /// timestamp is the time of production, as for a batch.
    #[inline]
    pub fn offer(&self, ts_us: u64, partition: i32, value: &[u8], wire_len: u32) -> Offer {
        let key = encode_key(ts_us);
        let orig_len = encode_orig_len(value.len(), wire_len);
        let header = orig_len.unwrap_or_default();
        let vu = |vtype, u| rd::rd_kafka_vu_t { vtype, u };
        use rd::rd_kafka_vtype_t::*;
        use rd::rd_kafka_vu_s__bindgen_ty_1 as U;
        let mem = |ptr: *const u8, size: usize| U {
            mem: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
                ptr: ptr as *mut _,
                size,
            },
        };
        let args = [
            vu(RD_KAFKA_VTYPE_RKT, U { rkt: self.topic }),
            vu(RD_KAFKA_VTYPE_PARTITION, U { i32_: partition }),
            vu(
                RD_KAFKA_VTYPE_MSGFLAGS,
                U {
                    i: rd::RD_KAFKA_MSG_F_COPY,
                },
            ),
            vu(RD_KAFKA_VTYPE_KEY, mem(key.as_ptr(), key.len())),
            vu(RD_KAFKA_VTYPE_VALUE, mem(value.as_ptr(), value.len())),
            vu(
                RD_KAFKA_VTYPE_HEADER,
                U {
                    header: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_2 {
                        name: ORIG_LEN_HEADER.as_ptr(),
                        val: header.as_ptr().cast(),
                        size: header.len() as isize,
                    },
                },
            ),
        ];
        // A whole frame stops before the header.
        let used = if orig_len.is_some() {
            args.len()
        } else {
            args.len() - 1
        };
        // SAFETY: every pointer in `args` is valid for the call; with
        // RD_KAFKA_MSG_F_COPY librdkafka copies key, value and header before
        // it returns, and it keeps no reference to `args`.
        let error = unsafe {
            rd::rd_kafka_produceva(self.producer.client().native_ptr(), args.as_ptr(), used)
        };
        if error.is_null() {
            return Offer::Queued;
        }
        // SAFETY: `error` is a valid error object that we own and destroy once.
        unsafe {
            let code = rd::rd_kafka_error_code(error);
            let outcome = if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__QUEUE_FULL {
                Offer::QueueFull
            } else {
                let text = std::ffi::CStr::from_ptr(rd::rd_kafka_error_string(error));
                if context::is_denial(code.into()) {
                    self.producer.context().deny(code.into());
                }
                Offer::Refused(text.to_string_lossy().into_owned())
            };
            rd::rd_kafka_error_destroy(error);
            outcome
        }
    }

    /// Offers the messages of `batch` in one call, to `partition`, or to
    /// each message's own partition when the batch holds several (`partition`
    /// is then ignored), or by librdkafka's partitioner on the key when
    /// `partition` is [`UNASSIGNED`]. Sets each message's outcome (see
    /// [`Batch::outcome`]); returns how many were queued.
    #[inline]
    pub fn produce_batch(&self, partition: i32, batch: &mut Batch) -> usize {
        if batch.messages.is_empty() {
            return 0;
        }
        let mut flags = rd::RD_KAFKA_MSG_F_COPY;
        let partition = if batch.per_message_partition {
            flags |= rd::RD_KAFKA_MSG_F_PARTITION;
            UNASSIGNED
        } else {
            partition
        };
        // SAFETY: every message points at a key in `batch.keys` and a value
        // the caller keeps alive for the call (see `Batch::push`); with
        // RD_KAFKA_MSG_F_COPY librdkafka copies both before it returns and
        // only writes each message's `err` back.
        let queued = unsafe {
            rd::rd_kafka_produce_batch(
                self.topic,
                partition,
                flags,
                batch.messages.as_mut_ptr(),
                batch.messages.len() as i32,
            )
        };
        let queued = queued.max(0) as usize;
        if queued < batch.messages.len() {
            // A topic whose metadata says the client may not use it fails
            // every message at once (librdkafka knows before it sends).
            let denial = batch
                .messages
                .iter()
                .map(|m| m.err.into())
                .find(|&code| context::is_denial(code));
            if let Some(code) = denial {
                self.producer.context().deny(code);
            }
        }
        queued
    }

    /// Serves the events that are waiting, without blocking: delivery
    /// reports counted per event, statistics written to their file, client
    /// errors recorded as events.
    pub fn serve_reports(&self) {
        let context = self.producer.context();
        for _ in 0..REPORT_EVENTS_PER_CALL {
            // SAFETY: the queue lives as long as `self`; a zero timeout never blocks.
            let event = unsafe { rd::rd_kafka_queue_poll(self.queue, 0) };
            if event.is_null() {
                break;
            }
            // SAFETY: `event` is a valid event we own until the destroy below;
            // the messages and strings it lends are only read before that.
            unsafe {
                match rd::rd_kafka_event_type(event) {
                    rd::RD_KAFKA_EVENT_DR => {
                        let (mut delivered, mut bytes, mut failed) = (0u64, 0u64, 0u64);
                        loop {
                            let message = rd::rd_kafka_event_message_next(event);
                            if message.is_null() {
                                break;
                            }
                            let err = (*message).err;
                            if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                                delivered += 1;
                                bytes += (*message).len as u64;
                            } else {
                                failed += 1;
                                context.delivery_failed(&KafkaError::MessageProduction(err.into()));
                            }
                        }
                        context.count_reports(delivered, bytes, failed);
                    }
                    rd::RD_KAFKA_EVENT_STATS => {
                        let json = std::ffi::CStr::from_ptr(rd::rd_kafka_event_stats(event));
                        context.stats_raw(json.to_bytes());
                    }
                    rd::RD_KAFKA_EVENT_ERROR => {
                        let code = rd::rd_kafka_event_error(event);
                        let reason =
                            std::ffi::CStr::from_ptr(rd::rd_kafka_event_error_string(event));
                        context.error(
                            KafkaError::Global(code.into()),
                            reason.to_string_lossy().trim(),
                        );
                    }
                    // Logs: fastcapa installs no logger (rust-rdkafka would
                    // drop them too).
                    _ => {}
                }
                rd::rd_kafka_event_destroy(event);
            }
        }
    }

    /// Messages in the producer not yet acknowledged or failed.
    pub fn in_flight(&self) -> usize {
        self.producer.in_flight_count().max(0) as usize
    }

    /// Waits up to `timeout` for everything queued to be acknowledged, or
    /// until `stop()` says to give up (checked every millisecond: a second
    /// signal must stop a drain at once, whatever its timeout).
    pub fn flush(&self, timeout: Duration, stop: impl Fn() -> bool) -> bool {
        // Not `BaseProducer::flush`: it polls with a deadline, which spins
        // (see `serve_reports`) for as long as a broker stays away.
        let deadline = Instant::now() + timeout;
        loop {
            self.serve_reports();
            if self.in_flight() == 0 {
                return true;
            }
            if Instant::now() >= deadline || stop() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Fails everything still queued or in flight; their delivery reports
    /// (counted as failed) are served before this returns.
    pub fn purge(&self) {
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        // Purged messages report through the delivery callback; serve them.
        for _ in 0..1000 {
            self.serve_reports();
            if self.in_flight() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for KafkaProducer {
    fn drop(&mut self) {
        // SAFETY: the handle came from rd_kafka_topic_new and is destroyed
        // once, before the client that owns it.
        unsafe {
            rd::rd_kafka_queue_destroy(self.queue);
            rd::rd_kafka_topic_destroy(self.topic);
        }
    }
}

#[cfg(test)]
mod tests;
