//! The indexer's two client contexts: the consumer's (errors, rebalances,
//! and taking each assigned partition's queue for the indexer to serve)
//! and the producer's (delivery reports of slices).

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rdkafka::bindings as rd;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::ClientContext;

use super::lock;
use crate::kafka::LastError;

/// Keeps librdkafka's last error (not the "all brokers down" summary that
/// follows the one saying why) and the partitions a rebalance took away;
/// takes the queues of the partitions it assigns for the indexer.
#[derive(Default)]
pub struct GroupContext {
    pub(super) last_error: LastError,
    pub(super) revoked: Mutex<Vec<i32>>,
    /// Whether assigned partitions' queues are taken (not for the lag probe).
    pub(super) takes_queues: AtomicBool,
    /// The assigned partitions' own queues, served by the indexer.
    pub(super) queues: Mutex<Vec<PartitionQueue>>,
}

/// One assigned partition's queue of fetched records, no longer forwarded
/// to the consumer queue: served on its own, a batch per call, as
/// librdkafka's simple consumer serves a partition. Forwarded to one shared
/// queue instead, every record crossed one more queue under its lock, and
/// reading cost a third more (bench/ceiling's read floor, `--one-queue`).
pub(super) struct PartitionQueue {
    pub(super) partition: i32,
    pub(super) queue: *mut rd::rd_kafka_queue_t,
}

// SAFETY: a librdkafka queue handle may be used and destroyed from any
// thread.
unsafe impl Send for PartitionQueue {}

impl Drop for PartitionQueue {
    fn drop(&mut self) {
        // SAFETY: a handle from rd_kafka_queue_get_partition, released once.
        unsafe { rd::rd_kafka_queue_destroy(self.queue) };
    }
}

impl ClientContext for GroupContext {
    fn log(&self, _: RDKafkaLogLevel, _: &str, _: &str) {}

    fn error(&self, error: KafkaError, reason: &str) {
        self.last_error.record(&error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let gone: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                lock(&self.queues).retain(|q| !gone.contains(&q.partition));
                lock(&self.revoked).extend(gone);
            }
            Rebalance::Assign(list) => {
                if !self.takes_queues.load(Ordering::Acquire) {
                    return;
                }
                // Right after the assignment, before the first fetch lands:
                // the partition's records stay in its own queue rather than
                // reach the consumer queue, where librdkafka hands them over
                // one event per record.
                let mut queues = lock(&self.queues);
                for element in list.elements() {
                    let Ok(topic) = CString::new(element.topic()) else {
                        continue;
                    };
                    let client = consumer.client().native_ptr();
                    // SAFETY: a live client and a NUL-terminated topic; the
                    // handle is released by PartitionQueue's Drop.
                    let queue = unsafe {
                        rd::rd_kafka_queue_get_partition(
                            client,
                            topic.as_ptr(),
                            element.partition(),
                        )
                    };
                    if queue.is_null() {
                        continue;
                    }
                    // SAFETY: a live queue handle; forwarding to null stops
                    // the forwarding to the consumer queue.
                    unsafe { rd::rd_kafka_queue_forward(queue, std::ptr::null_mut()) };
                    queues.retain(|q| q.partition != element.partition());
                    queues.push(PartitionQueue {
                        partition: element.partition(),
                        queue,
                    });
                }
            }
            Rebalance::Error(_) => {}
        }
    }
}

/// One slice's acknowledgement, as the producer reports it.
#[derive(Debug)]
pub(super) struct Ack {
    pub(super) partition: i32,
    pub(super) end_offset: i64,
    pub(super) records: u32,
    pub(super) bytes: usize,
    pub(super) error: Option<String>,
}

/// Collects the index producer's delivery reports for the indexer's thread.
#[derive(Default)]
pub struct AckContext {
    pub(super) acks: Mutex<Vec<Ack>>,
    last_error: LastError,
}

/// What travels with a slice to its delivery report.
pub struct SliceTag {
    pub(super) partition: i32,
    pub(super) end_offset: i64,
    pub(super) records: u32,
}

impl ClientContext for AckContext {
    fn log(&self, _: RDKafkaLogLevel, _: &str, _: &str) {}

    fn error(&self, error: KafkaError, reason: &str) {
        self.last_error.record(&error, reason);
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<SliceTag>;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: Box<SliceTag>) {
        let (bytes, error) = match result {
            Ok(m) => (m.payload_len(), None),
            Err((e, m)) => (m.payload_len(), Some(e.to_string())),
        };
        if let Ok(mut acks) = self.acks.lock() {
            acks.push(Ack {
                partition: tag.partition,
                end_offset: tag.end_offset,
                records: tag.records,
                bytes,
                error,
            });
        }
    }
}
