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

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext, PurgeConfig};
use rdkafka::ClientContext;

use crate::counters::{bump, TxCounters};
use crate::events::{EventKind, EventLog};
use crate::kafka::codec::{encode_key, encode_orig_len, KEY_LEN, ORIG_LEN_HEADER};
use crate::kafka::config::{self, ClientError};
use crate::kafka::LastError;

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

/// The producer's context: counts delivery reports into the worker's
/// counters, appends librdkafka's statistics to a file when asked, and
/// records client errors and failed deliveries as events for the control
/// plane to report.
pub struct DeliveryCounter {
    counters: Arc<TxCounters>,
    stats_file: Option<Mutex<File>>,
    events: Arc<EventLog>,
    /// While the start-up check runs, errors are kept, not printed: the
    /// last one becomes the reason of a single error line if the check fails.
    checking: AtomicBool,
    last_error: LastError,
}

impl ClientContext for DeliveryCounter {
    fn stats_raw(&self, statistics: &[u8]) {
        if let Some(file) = &self.stats_file {
            if let Ok(mut file) = file.lock() {
                // One JSON object per line, as Metron's fastcapa wrote them, in
                // one write: several producers append to the same file.
                let mut line = Vec::with_capacity(statistics.len() + 1);
                line.extend_from_slice(statistics);
                line.push(b'\n');
                let _ = file.write_all(&line);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.checking.load(Ordering::Relaxed) {
            self.last_error.record(&error, reason);
        } else {
            self.events
                .record(EventKind::Kafka, &format!("{error}: {reason}"));
        }
    }
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    /// Reports that rust-rdkafka serves itself (while `BaseProducer::poll`
    /// runs); the transmit path serves them as events (`serve_reports`).
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => self.count_reports(1, message.payload_len() as u64, 0),
            Err((error, _)) => {
                self.count_reports(0, 0, 1);
                self.delivery_failed(error);
            }
        }
    }
}

impl DeliveryCounter {
    /// Adds delivery reports to the worker's counters: `delivered`
    /// messages of `bytes` payload, and `failed` ones.
    fn count_reports(&self, delivered: u64, bytes: u64, failed: u64) {
        bump(&self.counters.delivered, delivered);
        bump(&self.counters.delivered_bytes, bytes);
        bump(&self.counters.failed, failed);
    }

    /// Why a delivery failed, for the operator.
    fn delivery_failed(&self, error: &KafkaError) {
        self.events
            .record(EventKind::DeliveryFailed, &error.to_string());
    }
}

/// Outcome of offering one frame to the producer.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The producer's queue is full (`queue.buffering.max.messages`/`kbytes`).
    QueueFull,
    /// librdkafka refused the message for good (e.g. larger than `message.max.bytes`).
    Refused(String),
}

/// Most events one `serve_reports` call handles (a delivery report event
/// holds the reports of up to a whole message set).
const REPORT_EVENTS_PER_CALL: usize = 16;
/// How long the start-up check waits for a topic that a cluster creating
/// topics on first use is making (a few hundred ms on a test broker).
const TOPIC_CREATION_WAIT: Duration = Duration::from_secs(5);
const TOPIC_CREATION_PAUSE: Duration = Duration::from_millis(200);

pub struct KafkaProducer {
    producer: BaseProducer<DeliveryCounter>,
    topic: *mut rd::rd_kafka_topic_t,
    /// The client's main queue, where delivery reports, statistics and
    /// errors arrive as events.
    queue: *mut rd::rd_kafka_queue_t,
    topic_name: String,
    bootstrap: String,
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
            bootstrap: config::bootstrap(&config),
        })
    }

    /// Waits up to `timeout` for the cluster to answer a metadata request
    /// about the topic. On failure the reason is librdkafka's last error
    /// (say, a TLS certificate it could not verify) rather than a bare
    /// timeout. The request is the one a first produce would make, so a
    /// cluster that creates topics on first use creates it now; a topic that
    /// does not exist and will not be created, or that this client may not
    /// see, is an error here rather than a producer queue that fills until
    /// librdkafka gives up on the topic (after 30 s, and silently until then).
    pub fn check_connection(&self, timeout: Duration) -> Result<(), ProducerError> {
        let context = self.producer.context();
        context.checking.store(true, Ordering::Relaxed);
        let answer = self
            .producer
            .client()
            .fetch_metadata(Some(&self.topic_name), timeout);
        // Serve the error events the check queued (nothing else is queued yet).
        for _ in 0..64 {
            self.producer.poll(Duration::ZERO);
        }
        context.checking.store(false, Ordering::Relaxed);
        let last_error = context.last_error.take();
        let metadata = answer
            .map_err(|e| ClientError::unreachable(&self.bootstrap, timeout, last_error, &e))?;
        use rd::rd_kafka_resp_err_t::*;
        let topic_error = |metadata: &rdkafka::metadata::Metadata| {
            metadata.topics().first().and_then(|t| t.error())
        };
        let mut error = topic_error(&metadata);
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
                Ok(metadata) => error = topic_error(&metadata),
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
            _ => return Ok(()),
        };
        Err(ProducerError::Topic {
            topic: self.topic_name.clone(),
            reason: reason.to_string(),
        })
    }

    /// Number of partitions of the topic, from the cluster's metadata.
    pub fn partition_count(&self, topic: &str, timeout: Duration) -> Option<usize> {
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(topic), timeout)
            .ok()?;
        let count = metadata.topics().first()?.partitions().len();
        (count > 0).then_some(count)
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
        queued.max(0) as usize
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

/// librdkafka allocates every message it queues and frees it when its
/// delivery report is served: at a million messages a second the transmit
/// thread's malloc heap grows by megabytes and, with glibc's defaults, is
/// trimmed back each time the reports have freed its top, then faulted in
/// again page by page (an eighth of the transmit path's CPU, docs/benchmarks.md).
/// Freed memory up to these sizes stays with the heap instead; the producer
/// queue's bound (`--buffer`) still caps how much is ever in use.
const KEEP_FREED_BYTES: i32 = 64 << 20;
const HEAP_GROWTH_PAD_BYTES: i32 = 16 << 20;

fn keep_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes glibc's trimming thresholds; it is
        // safe to call at any time from any thread.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_FREED_BYTES);
            libc::mallopt(libc::M_TOP_PAD, HEAP_GROWTH_PAD_BYTES);
        }
    });
}

/// librdkafka's "no partition chosen" (`RD_KAFKA_PARTITION_UA`, a macro
/// the bindings leave out): its partitioner hashes the key.
pub const UNASSIGNED: i32 = -1;

/// The messages of one `rd_kafka_produce_batch` call, reused from burst to
/// burst: the keys live here, the values in the ring's slots.
pub struct Batch {
    messages: Vec<rd::rd_kafka_message_t>,
    keys: Box<[[u8; KEY_LEN]]>,
    /// Keys written since `clear` (messages consumed keep theirs in place).
    keys_used: usize,
    per_message_partition: bool,
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
}
