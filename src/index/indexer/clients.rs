//! The indexer's two client contexts: the consumer's (errors, rebalances,
//! and sending each assigned partition's records to the indexer's queue)
//! and the producer's (delivery reports of slices).

use std::ffi::CString;
use std::sync::atomic::{AtomicPtr, Ordering};
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
/// sends the records of the partitions it assigns to the indexer's own
/// queue.
#[derive(Default)]
pub struct GroupContext {
    pub(super) last_error: LastError,
    pub(super) revoked: Mutex<Vec<i32>>,
    /// The indexer's record queue (null until made, and for the lag probe).
    pub(super) records: AtomicPtr<rd::rd_kafka_queue_t>,
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
                lock(&self.revoked).extend(list.elements().iter().map(|e| e.partition()));
            }
            Rebalance::Assign(list) => {
                let records = self.records.load(Ordering::Acquire);
                if records.is_null() {
                    return;
                }
                // Right after the assignment, before the first fetch lands:
                // the partition's records bypass the consumer queue (where
                // librdkafka hands them over one event per record) for the
                // indexer's queue, served a batch per call.
                for element in list.elements() {
                    let Ok(topic) = CString::new(element.topic()) else {
                        continue;
                    };
                    let client = consumer.client().native_ptr();
                    // SAFETY: a live client and a NUL-terminated topic; the
                    // partition's queue handle is released at once, the
                    // forwarding stays with the partition.
                    unsafe {
                        let queue = rd::rd_kafka_queue_get_partition(
                            client,
                            topic.as_ptr(),
                            element.partition(),
                        );
                        if !queue.is_null() {
                            rd::rd_kafka_queue_forward(queue, records);
                            rd::rd_kafka_queue_destroy(queue);
                        }
                    }
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
