//! The Kafka side of the way back: one librdkafka client reading each
//! partition as its own stream.
//!
//! librdkafka's simple consumer (`rd_kafka_consume_start` and
//! `rd_kafka_consume_callback`) keeps one fetch queue per partition and
//! serves it on demand: the engine asks the partition it needs for its next
//! records, so a partition with a long backlog cannot crowd the others out of
//! one shared queue, and what each queue prefetches is bounded
//! (`queued.max.messages.kbytes` applies per partition here). No consumer
//! group: nothing is committed, nothing is rebalanced.

use std::ffi::{c_void, CStr, CString};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;

use super::DumpError;
use crate::kafka::config::{self, ClientError};
use crate::kafka::message::Msg;
use crate::kafka::{reach, LastError};

/// How errors name this client.
const CLIENT: &str = "consumer";

/// Keeps librdkafka's last error as the reason of a failure; logs nothing
/// (what matters reaches the operator as fastcapa's own line).
#[derive(Default)]
pub struct ReadContext {
    last_error: LastError,
}

impl ClientContext for ReadContext {
    fn log(&self, _: RDKafkaLogLevel, _: &str, _: &str) {}

    fn error(&self, error: KafkaError, reason: &str) {
        self.last_error.record(&error, reason);
    }
}

impl ConsumerContext for ReadContext {}

/// What one read of a partition's queue delivered besides records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Signals {
    /// The partition's end was reached at this offset (nothing more for now).
    pub end_at: Option<i64>,
}

/// The client and its topic handle.
pub struct Reader {
    consumer: BaseConsumer<ReadContext>,
    topic: *mut rd::rd_kafka_topic_t,
    name: String,
    /// Partition ids, in the order the engine numbers them.
    pub partitions: Vec<i32>,
    started: Vec<bool>,
}

// SAFETY: librdkafka's client and topic handles may be used from any thread;
// the topic handle is destroyed once, in Drop, by the owner.
unsafe impl Send for Reader {}

impl Reader {
    /// Connects (waiting up to `timeout` for the cluster's answer, or until
    /// the first refusal) and finds the topic's partitions. `settings` are the operator's; `ours` are
    /// set after them, and `defaults` only where the operator set nothing.
    pub fn connect(
        settings: &[(String, String)],
        ours: &[(&str, &str)],
        defaults: &[(&str, &str)],
        topic: &str,
        timeout: Duration,
    ) -> Result<Reader, DumpError> {
        let config = config::client_config(settings, ours, defaults);
        let consumer: BaseConsumer<ReadContext> =
            config::create(&config, ReadContext::default(), CLIENT)?;
        let name = CString::new(topic)
            .map_err(|_| DumpError::NoTopic(topic.escape_debug().to_string()))?;
        let mut reader = Reader {
            consumer,
            topic: std::ptr::null_mut(),
            name: topic.to_string(),
            partitions: Vec::new(),
            started: Vec::new(),
        };
        let metadata = reach::answer(
            reader.consumer.client(),
            &config,
            Some(topic),
            timeout,
            &reader.consumer.context().last_error,
            || reader.serve_events(),
        )?;
        let described = metadata.topics().iter().find(|t| t.name() == topic);
        let mut partitions: Vec<i32> = match described {
            Some(t) if t.error().is_none() => t.partitions().iter().map(|p| p.id()).collect(),
            _ => Vec::new(),
        };
        if partitions.is_empty() {
            return Err(DumpError::NoTopic(topic.to_string()));
        }
        partitions.sort_unstable();
        // SAFETY: the client lives as long as the reader; a null topic conf
        // takes the topic defaults from the client's configuration.
        let handle = unsafe {
            rd::rd_kafka_topic_new(
                reader.consumer.client().native_ptr(),
                name.as_ptr(),
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
        reader.topic = handle;
        reader.started = vec![false; partitions.len()];
        reader.partitions = partitions;
        Ok(reader)
    }

    /// The first and the next-to-be-written offsets of partition `index`.
    pub fn watermarks(&self, index: usize, timeout: Duration) -> Result<(i64, i64), DumpError> {
        let partition = self.partitions[index];
        self.consumer
            .client()
            .fetch_watermarks(&self.name, partition, timeout)
            .map_err(|e| {
                DumpError::Kafka(format!(
                    "cannot read the offsets of {} partition {partition}: {}",
                    self.name,
                    self.take_error().unwrap_or_else(|| e.to_string())
                ))
            })
    }

    /// For each partition, the first offset whose record timestamp is at or
    /// after `ts_ms` by the broker's time index (`None`: no such record, or
    /// no answer). Only a guess: the timestamps may not be capture times.
    pub fn offsets_for_time(&self, ts_ms: i64, timeout: Duration) -> Vec<Option<i64>> {
        use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
        let mut wanted = TopicPartitionList::new();
        for &p in &self.partitions {
            if wanted
                .add_partition_offset(&self.name, p, Offset::Offset(ts_ms))
                .is_err()
            {
                return vec![None; self.partitions.len()];
            }
        }
        let found = self.consumer.offsets_for_times(wanted, timeout).ok();
        self.partitions
            .iter()
            .map(|&p| {
                let element = found.as_ref()?.find_partition(&self.name, p)?;
                match (element.error(), element.offset()) {
                    (Ok(()), Offset::Offset(o)) => Some(o),
                    _ => None,
                }
            })
            .collect()
    }

    /// Starts reading partition `index` at `offset`, or moves there.
    pub fn start(&mut self, index: usize, offset: i64) -> Result<(), DumpError> {
        let partition = self.partitions[index];
        if self.started[index] {
            // SAFETY: the topic handle is valid; a zero timeout asks for the
            // move without waiting, and records fetched before it are
            // discarded by librdkafka (it versions each partition's ops).
            let err = unsafe { rd::rd_kafka_seek(self.topic, partition, offset, 0) };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(self.partition_error(partition, "seek", err));
            }
            return Ok(());
        }
        // SAFETY: the topic handle is valid; stopped in `stop` or Drop.
        if unsafe { rd::rd_kafka_consume_start(self.topic, partition, offset) } == -1 {
            // SAFETY: reads the calling thread's last librdkafka error.
            let err = unsafe { rd::rd_kafka_last_error() };
            return Err(self.partition_error(partition, "start reading", err));
        }
        self.started[index] = true;
        Ok(())
    }

    /// Stops fetching partition `index` (nothing more is wanted from it).
    pub fn stop(&mut self, index: usize) {
        if std::mem::take(&mut self.started[index]) {
            // SAFETY: the partition was started on this valid topic handle.
            unsafe { rd::rd_kafka_consume_stop(self.topic, self.partitions[index]) };
        }
    }

    /// Hands the records partition `index` has ready to `each` (waiting up
    /// to `timeout` for the first one), at most `consume.callback.max.messages`
    /// of them. Returns how many records it handed over and what else it saw.
    pub fn read<F: FnMut(&Msg<'_>)>(
        &self,
        index: usize,
        timeout: Duration,
        mut each: F,
    ) -> Result<(usize, Signals), DumpError> {
        struct Visit<'f, F> {
            each: &'f mut F,
            records: usize,
            signals: Signals,
            error: Option<(rd::rd_kafka_resp_err_t, String)>,
        }
        unsafe extern "C" fn visit<G: FnMut(&Msg<'_>)>(
            message: *mut rd::rd_kafka_message_t,
            opaque: *mut c_void,
        ) {
            // SAFETY: `opaque` is the `Visit` below, alive and not otherwise
            // borrowed during the call; librdkafka lends `message` for the
            // duration of this callback only.
            let (visit, message) = unsafe { (&mut *(opaque as *mut Visit<'_, G>), &*message) };
            use rd::rd_kafka_resp_err_t::*;
            match message.err {
                RD_KAFKA_RESP_ERR_NO_ERROR => {
                    visit.records += 1;
                    // SAFETY: a record librdkafka lends for this callback.
                    (visit.each)(&unsafe { Msg::borrow(message) });
                }
                RD_KAFKA_RESP_ERR__PARTITION_EOF => visit.signals.end_at = Some(message.offset),
                err => {
                    if visit.error.is_none() {
                        // SAFETY: librdkafka's description of an error message.
                        let text = unsafe { CStr::from_ptr(rd::rd_kafka_message_errstr(message)) };
                        visit.error = Some((err, text.to_string_lossy().into_owned()));
                    }
                }
            }
        }
        let partition = self.partitions[index];
        let mut state = Visit {
            each: &mut each,
            records: 0,
            signals: Signals::default(),
            error: None,
        };
        let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: the partition was started; `visit::<F>` matches the type
        // behind the opaque pointer, which outlives the call.
        let served = unsafe {
            rd::rd_kafka_consume_callback(
                self.topic,
                partition,
                millis,
                Some(visit::<F>),
                &mut state as *mut Visit<'_, F> as *mut c_void,
            )
        };
        if served < 0 {
            // SAFETY: reads the calling thread's last librdkafka error.
            let err = unsafe { rd::rd_kafka_last_error() };
            return Err(self.partition_error(partition, "read", err));
        }
        if let Some((_, text)) = state.error {
            return Err(DumpError::Kafka(format!(
                "reading {} partition {partition}: {text}",
                self.name
            )));
        }
        Ok((state.records, state.signals))
    }

    /// Serves what waits on the client's main queue (errors, logs). A
    /// served log event reads as "nothing" too, so this does not stop at
    /// the first empty answer.
    pub fn serve_events(&self) {
        for _ in 0..64 {
            let _ = self.consumer.poll(Duration::ZERO);
        }
    }

    /// librdkafka's last error, once.
    pub fn take_error(&self) -> Option<String> {
        self.serve_events();
        self.consumer.context().last_error.take()
    }

    fn partition_error(
        &self,
        partition: i32,
        what: &str,
        err: rd::rd_kafka_resp_err_t,
    ) -> DumpError {
        // SAFETY: rd_kafka_err2str returns a static string for any code.
        let text = unsafe { CStr::from_ptr(rd::rd_kafka_err2str(err)) };
        DumpError::Kafka(format!(
            "cannot {what} {} partition {partition}: {}",
            self.name,
            text.to_string_lossy()
        ))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        for index in 0..self.started.len() {
            self.stop(index);
        }
        if !self.topic.is_null() {
            // SAFETY: the handle came from rd_kafka_topic_new and is destroyed
            // once, before the client that owns it.
            unsafe { rd::rd_kafka_topic_destroy(self.topic) };
        }
    }
}
