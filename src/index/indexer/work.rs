//! The slices being built and written, partition by partition, and the
//! acknowledgements that decide what may be committed.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::clients::{Ack, AckContext, SliceTag};
use super::{lock, IndexError, IndexerConfig};
use crate::counters::IndexSnapshot;
use crate::index::slice::SliceBuilder;
use crate::kafka::codec::decode_key;

/// A slice handed to the producer, waiting for its acknowledgement.
pub(super) struct Pending {
    pub(super) end_offset: i64,
    pub(super) acked: bool,
}

/// Where one partition of the capture topic stands in this member.
#[derive(Default)]
pub(super) struct Part {
    pub(super) building: Option<(SliceBuilder, Instant)>,
    /// Slices produced, in offset order, until acknowledged in order.
    pub(super) pending: VecDeque<Pending>,
    /// Highest capture time indexed (acknowledged or not), µs.
    pub(super) newest_key: Option<u64>,
    /// End offset of the last committed slice.
    pub(super) committed: Option<i64>,
    /// The offset after the last record read (while assigned).
    pub(super) read_to: Option<i64>,
}

/// The slices being built and written: everything but the consumer, so a
/// record borrowed from the consumer can be handed to it.
pub(super) struct Work {
    pub(super) cfg: IndexerConfig,
    pub(super) producer: BaseProducer<AckContext>,
    /// Index topic partitions: a slice of partition p goes to p % this.
    pub(super) index_partitions: i32,
    pub(super) parts: HashMap<i32, Part>,
    pub(super) counts: IndexSnapshot,
    pub(super) encoded: Vec<u8>,
}

impl Work {
    /// Adds one record to its partition's slice.
    pub(super) fn take(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) {
        self.counts.read += 1;
        self.counts.read_bytes += value.map_or(0, |v| v.len() as u64);
        let linktype = self.cfg.linktype;
        // One look-up of the partition per record, a second only on the
        // rare paths that write a slice.
        let part = self.parts.entry(partition).or_default();
        // A record that does not follow the slice being built (the group
        // moved the partition back to an earlier committed offset) starts
        // a new slice; the old one is still a true index of what it holds.
        let part = match part.building.take_if(|(b, _)| offset < b.next_offset()) {
            Some((stale, _)) => {
                self.emit(partition, stale);
                self.parts.entry(partition).or_default()
            }
            None => part,
        };
        let (builder, _) = part.building.get_or_insert_with(|| {
            (
                SliceBuilder::new(partition, offset, linktype),
                Instant::now(),
            )
        });
        builder.push(offset, key, value);
        let full = builder.len() >= self.cfg.slice_records;
        part.read_to = Some(offset + 1);
        if let Some(ts) = decode_key(key) {
            part.newest_key = Some(part.newest_key.map_or(ts, |n| n.max(ts)));
        }
        if full {
            if let Some((builder, _)) = part.building.take() {
                self.emit(partition, builder);
            }
        }
    }

    /// The partition's end is reached: with `--until-caught-up` its slice
    /// is written now rather than when it ages.
    pub(super) fn at_end(&mut self, partition: i32) {
        if self.cfg.until_caught_up {
            self.close(partition);
        }
    }

    /// Closes partition `partition`'s slice, if it has one, and writes it.
    pub(super) fn close(&mut self, partition: i32) {
        if let Some((builder, _)) = self
            .parts
            .get_mut(&partition)
            .and_then(|p| p.building.take())
        {
            self.emit(partition, builder);
        }
    }

    pub(super) fn close_aged(&mut self) {
        let age = self.cfg.slice_age;
        let aged: Vec<i32> = self
            .parts
            .iter()
            .filter(|(_, p)| p.building.as_ref().is_some_and(|(_, t)| t.elapsed() >= age))
            .map(|(&p, _)| p)
            .collect();
        for p in aged {
            self.close(p);
        }
    }

    /// Encodes a slice and hands it to the producer.
    pub(super) fn emit(&mut self, partition: i32, mut builder: SliceBuilder) {
        if builder.is_empty() {
            return;
        }
        self.encoded.clear();
        // Encoded straight from the builder: no bitmap built for the
        // postings written as lists.
        let (meta, unparsed) = builder.encode_and_restart(builder.next_offset(), &mut self.encoded);
        self.counts.unparsed += unparsed;
        // The key names the capture topic too, so a dump pointed at the
        // index of another topic ignores it rather than trust it.
        let mut key = meta.record_key().to_vec();
        key.extend_from_slice(self.cfg.topic.as_bytes());
        let end_offset = meta.end_offset;
        let tag = Box::new(SliceTag {
            partition,
            end_offset,
            records: meta.records,
        });
        let mut record = BaseRecord::with_opaque_to(&self.cfg.index_topic, tag)
            .partition(partition.rem_euclid(self.index_partitions))
            .key(&key[..])
            .payload(&self.encoded[..]);
        // The index is small beside the topic, so a full producer queue
        // means Kafka is away: wait for room rather than lose a slice.
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(100));
                }
                Err((e, _)) => {
                    // A size or setting the broker will never take: settle()
                    // reports it as the failure it is.
                    lock(&self.producer.context().acks).push(Ack {
                        partition,
                        end_offset,
                        records: 0,
                        bytes: 0,
                        error: Some(e.to_string()),
                    });
                    break;
                }
            }
        }
        self.counts.pending += 1;
        self.parts
            .entry(partition)
            .or_default()
            .pending
            .push_back(Pending {
                end_offset,
                acked: false,
            });
    }

    /// Serves the producer's reports; returns, for each partition whose
    /// slices were acknowledged in order up to a point, the offset to commit.
    pub(super) fn settle(&mut self) -> Result<TopicPartitionList, IndexError> {
        self.producer.poll(Duration::ZERO);
        let acks = std::mem::take(&mut *lock(&self.producer.context().acks));
        let mut commit = TopicPartitionList::new();
        for ack in acks {
            self.counts.pending = self.counts.pending.saturating_sub(1);
            if let Some(error) = ack.error {
                return Err(IndexError::Kafka(format!(
                    "cannot write the index of {} partition {} to {}: {error}",
                    self.cfg.topic, ack.partition, self.cfg.index_topic
                )));
            }
            self.counts.slices += 1;
            self.counts.indexed += u64::from(ack.records);
            self.counts.index_bytes += ack.bytes as u64;
            let part = self.parts.entry(ack.partition).or_default();
            if let Some(p) = part
                .pending
                .iter_mut()
                .find(|p| p.end_offset == ack.end_offset && !p.acked)
            {
                p.acked = true;
            }
            let mut upto = None;
            while part.pending.front().is_some_and(|p| p.acked) {
                upto = part.pending.pop_front().map(|p| p.end_offset);
            }
            if let Some(end) = upto {
                part.committed = Some(end);
                let (topic, offset) = (&self.cfg.topic, Offset::Offset(end));
                if commit.find_partition(topic, ack.partition).is_some() {
                    let _ = commit.set_partition_offset(topic, ack.partition, offset);
                } else {
                    let _ = commit.add_partition_offset(topic, ack.partition, offset);
                }
            }
        }
        Ok(commit)
    }
}
