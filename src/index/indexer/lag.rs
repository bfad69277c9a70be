//! How far behind the newest records of its partitions a member is.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::clients::GroupContext;
use super::Indexer;
use crate::kafka::codec::decode_key;
use crate::kafka::config::{client_config, create};

impl Indexer {
    /// Reads how far behind the newest records of its partitions the member
    /// is: records not read yet, and capture time between the newest record
    /// and the newest indexed (reading each lagging partition's last record).
    pub fn measure_lag(&mut self) {
        let topic = self.work.cfg.topic.clone();
        let timeout = self.work.cfg.timeout.min(Duration::from_secs(2));
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        // Where the member stands in each partition: what it read, or, for
        // a partition it has read nothing of yet, where the group stands.
        let mut unread = TopicPartitionList::new();
        for element in assignment.elements() {
            let p = element.partition();
            if self
                .work
                .parts
                .get(&p)
                .and_then(|part| part.read_to)
                .is_none()
            {
                unread.add_partition(&topic, p);
            }
        }
        let committed = if unread.count() > 0 {
            self.consumer.committed_offsets(unread, timeout).ok()
        } else {
            None
        };
        let mut records = 0u64;
        let mut lagging = Vec::new();
        // The broker's answer, not librdkafka's cache (a partition just
        // taken over has none cached yet, and the cache trails a fetch),
        // asked by the probe: on the consumer's connection the question
        // would wait behind a fetch waiting for new records.
        let Some(probe) = self.probe() else {
            return;
        };
        let mut ends = Vec::new();
        for element in assignment.elements() {
            let p = element.partition();
            if let Ok(marks) = probe.fetch_watermarks(&topic, p, timeout) {
                ends.push((p, marks));
            }
        }
        for (p, (low, high)) in ends {
            let position =
                self.work
                    .parts
                    .get(&p)
                    .and_then(|part| part.read_to)
                    .or_else(|| {
                        committed.as_ref()?.find_partition(&topic, p).and_then(|e| {
                            match e.offset() {
                                Offset::Offset(o) => Some(o),
                                _ => None,
                            }
                        })
                    })
                    .unwrap_or(low);
            let behind = (high - position.max(low)).max(0) as u64;
            records += behind;
            if behind > 0 {
                lagging.push((p, high - 1));
            }
        }
        let mut lag_us = 0u64;
        for (p, newest) in self.newest_keys(&lagging) {
            // A partition with nothing indexed yet has no capture time to
            // be behind from; its records say how far behind it is.
            if let Some(indexed) = self.work.parts.get(&p).and_then(|part| part.newest_key) {
                lag_us = lag_us.max(newest.saturating_sub(indexed));
            }
        }
        let counts = &mut self.work.counts;
        counts.partitions = assignment.count() as u64;
        counts.lag_records = records;
        counts.lag_us = lag_us;
    }

    /// A client of the indexer's own outside the group (made at the first
    /// need), for the questions the lag needs answered.
    pub(super) fn probe(&mut self) -> Option<&BaseConsumer<GroupContext>> {
        if self.probe.is_none() {
            let cfg = &self.work.cfg;
            // librdkafka's assign needs a group id; this one never commits.
            let group = format!("{}.lag", cfg.group);
            let config = client_config(
                &cfg.settings,
                &[
                    ("group.id", group.as_str()),
                    ("enable.auto.commit", "false"),
                    // It reads records known to exist; a fetch that waits
                    // for more (librdkafka's 500 ms) holds back the next
                    // one, and the indexer with it.
                    ("fetch.wait.max.ms", "10"),
                ],
                &[("max.partition.fetch.bytes", "65536")],
            );
            self.probe = create(&config, GroupContext::default(), "consumer").ok();
        }
        self.probe.as_ref()
    }

    /// The keys of the given records (partition, offset), read by the probe.
    fn newest_keys(&mut self, wanted: &[(i32, i64)]) -> HashMap<i32, u64> {
        let mut keys = HashMap::new();
        if wanted.is_empty() {
            return keys;
        }
        let topic = self.work.cfg.topic.clone();
        let Some(probe) = self.probe() else {
            return keys;
        };
        let mut list = TopicPartitionList::new();
        for &(p, offset) in wanted {
            if list
                .add_partition_offset(&topic, p, Offset::Offset(offset))
                .is_err()
            {
                return keys;
            }
        }
        if probe.assign(&list).is_err() {
            return keys;
        }
        let mut answered = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while answered.len() < wanted.len() && Instant::now() < deadline {
            if let Some(Ok(m)) = probe.poll(Duration::from_millis(100)) {
                answered.insert(m.partition());
                if let Some(ts) = decode_key(m.key()) {
                    keys.entry(m.partition())
                        .and_modify(|k: &mut u64| *k = (*k).max(ts))
                        .or_insert(ts);
                }
            }
        }
        let _ = probe.unassign();
        keys
    }
}
