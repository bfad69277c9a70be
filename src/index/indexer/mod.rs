//! The index builder: one consumer-group member reading a capture topic and
//! writing its slices to the index topic.
//!
//! Scale-out and fail-over are Kafka's: every indexer of a topic joins one
//! consumer group, the group spreads the partitions over its members and
//! moves them when one leaves or dies. Nothing here coordinates members.
//!
//! Crash safety comes from one rule: a partition's offset is committed only
//! once every slice up to it has been acknowledged by the index topic. A
//! member killed at any moment leaves, at worst, slices written whose
//! offsets were not committed; whoever takes the partition over reads them
//! again and writes them again, and readers treat repeated and overlapping
//! slices as one (they merge the offset ranges covered).
//!
//! A slice is closed when it holds `slice_records` records or its first
//! record was read `slice_age` ago, so a quiet topic is queryable seconds
//! after capture and a busy one gets full slices. Python drives the member
//! with [`Indexer::step`] for a bounded time per call (Ctrl-C stays
//! responsive) and [`Indexer::finish`] at a stop.

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

mod clients;
mod lag;
mod release;
mod work;

use self::clients::{AckContext, GroupContext};
use self::release::{Batch, Releaser};
use self::work::Work;
use crate::counters::IndexSnapshot;
use crate::kafka::config::{bootstrap, client_config, create};
use crate::kafka::message::Msg;
use crate::kafka::{reach, ClientError};

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct IndexerConfig {
    pub topic: String,
    pub index_topic: String,
    pub group: String,
    /// librdkafka settings (from -c, -X, -k), for both clients.
    pub settings: Vec<(String, String)>,
    /// How the values are parsed (1: Ethernet).
    pub linktype: u32,
    pub slice_records: u32,
    pub slice_age: Duration,
    /// How long to wait for Kafka's answers.
    pub timeout: Duration,
    /// Stop once every partition is indexed up to its end seen at start.
    pub until_caught_up: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("topic {0:?} does not exist")]
    NoTopic(String),
    /// Kafka failed while indexing.
    #[error("{0}")]
    Kafka(String),
}

/// One member of the group, from joining to its last commit.
pub struct Indexer {
    consumer: BaseConsumer<GroupContext>,
    /// The partition whose queue is served first next time (round robin).
    next_queue: usize,
    /// The messages of one queue's serving.
    batch: Batch,
    releaser: Releaser,
    /// Reads the newest record of lagging partitions (`measure_lag`).
    probe: Option<BaseConsumer<GroupContext>>,
    work: Work,
    /// Each partition's end when the member started (`--until-caught-up`).
    targets: Vec<(i32, i64)>,
    bootstrap: String,
    last_caught_up_check: Instant,
    done: bool,
}

/// Most records one serving of a partition's queue hands over.
const READ_BATCH: usize = 4096;

/// Longest wait on one partition's queue when none had records.
const IDLE_WAIT: Duration = Duration::from_millis(10);

impl Indexer {
    /// Connects both clients, finds both topics, joins the group.
    pub fn open(cfg: IndexerConfig) -> Result<Indexer, IndexError> {
        let consumer_config = client_config(
            &cfg.settings,
            &[
                ("group.id", cfg.group.as_str()),
                // Offsets are committed by hand, once the slices covering
                // them are acknowledged.
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("enable.partition.eof", "true"),
            ],
            // Each partition's queue is served on its own (see
            // PartitionQueue), so these are per partition. librdkafka's
            // fetch sizes; fewer records held than its 100000 (5000 starved
            // the reader, 100000 read slower); and a partition's fetcher that
            // found its queue full looks again after 1 ms, not a second
            // (docs/performance.md).
            &[
                ("queued.max.messages.kbytes", "16384"),
                ("queued.min.messages", "20000"),
                ("fetch.queue.backoff.ms", "1"),
                // A fetch holding only partitions at their end (the others
                // held back while the queue is full) waits this long for
                // new records before the others are asked for again:
                // librdkafka's 500 ms made a third of the reading time.
                ("fetch.wait.max.ms", "100"),
            ],
        );
        let consumer: BaseConsumer<GroupContext> =
            create(&consumer_config, GroupContext::default(), "consumer")?;
        let bootstrap = bootstrap(&consumer_config);
        let producer_config = client_config(
            &cfg.settings,
            // Acknowledged means on the brokers the topic's settings ask
            // for, in order, once: the commit rule rests on it.
            &[("enable.idempotence", "true"), ("acks", "all")],
            // The index is read back whole by every query: compress it.
            &[("compression.type", "zstd"), ("linger.ms", "50")],
        );
        let producer: BaseProducer<AckContext> =
            create(&producer_config, AckContext::default(), "producer")?;
        // Before the group is joined nothing but errors waits on its queue.
        let serve = || {
            for _ in 0..64 {
                let _ = consumer.poll(Duration::ZERO);
            }
        };
        let metadata = reach::answer(
            consumer.client(),
            &consumer_config,
            Some(&cfg.topic),
            cfg.timeout,
            &consumer.context().last_error,
            serve,
        )?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .find(|t| t.name() == cfg.topic && t.error().is_none())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        if partitions.is_empty() {
            return Err(IndexError::NoTopic(cfg.topic.clone()));
        }
        let index_partitions = producer
            .client()
            .fetch_metadata(Some(&cfg.index_topic), cfg.timeout)
            .ok()
            .and_then(|m| {
                m.topics()
                    .iter()
                    .find(|t| t.name() == cfg.index_topic && t.error().is_none())
                    .map(|t| t.partitions().len() as i32)
            })
            .filter(|&n| n > 0)
            .ok_or_else(|| IndexError::NoTopic(cfg.index_topic.clone()))?;
        let mut targets = Vec::with_capacity(partitions.len());
        for &p in &partitions {
            let (_, high) = consumer
                .fetch_watermarks(&cfg.topic, p, cfg.timeout)
                .map_err(|e| {
                    IndexError::Kafka(format!(
                        "cannot read the offsets of {} partition {p}: {e}",
                        cfg.topic
                    ))
                })?;
            targets.push((p, high));
        }
        let releaser = Releaser::start(READ_BATCH).map_err(|e| {
            IndexError::Kafka(format!("cannot start the indexer's releasing thread: {e}"))
        })?;
        consumer
            .context()
            .takes_queues
            .store(true, Ordering::Release);
        consumer
            .subscribe(&[&cfg.topic])
            .map_err(|e| IndexError::Kafka(format!("cannot join group {}: {e}", cfg.group)))?;
        Ok(Indexer {
            consumer,
            next_queue: 0,
            batch: Batch(Vec::with_capacity(READ_BATCH)),
            releaser,
            probe: None,
            work: Work {
                cfg,
                producer,
                index_partitions,
                parts: HashMap::new(),
                counts: IndexSnapshot::default(),
                encoded: Vec::new(),
            },
            targets,
            bootstrap,
            last_caught_up_check: Instant::now(),
            done: false,
        })
    }

    /// Works for up to `budget`; true once the member is done
    /// (`--until-caught-up` only: otherwise it runs until stopped).
    pub fn step(&mut self, budget: Duration) -> Result<bool, IndexError> {
        let deadline = Instant::now() + budget;
        loop {
            // The consumer queue: rebalances, errors, and records fetched
            // before their partition's queue was taken.
            while let Some(event) = self.consumer.poll(Duration::ZERO) {
                match event {
                    Ok(message) => self.work.take(
                        message.partition(),
                        message.offset(),
                        message.key(),
                        message.payload(),
                    ),
                    Err(KafkaError::PartitionEOF(partition)) => self.work.at_end(partition),
                    Err(e) if e.rdkafka_error_code().is_some_and(is_fatal) => {
                        return Err(self.read_error(&e.to_string()))
                    }
                    // Transient (a broker that went away and comes back):
                    // librdkafka retries by itself.
                    Err(_) => {}
                }
            }
            self.forget_revoked();
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            self.serve_records(wait)?;
            self.work.close_aged();
            self.settle()?;
            if self.work.cfg.until_caught_up && self.caught_up() {
                self.done = true;
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    /// Hands a batch of each assigned partition's queued records to the
    /// slices, waiting up to `wait` if none had any; how many it handed.
    fn serve_records(&mut self, wait: Duration) -> Result<usize, IndexError> {
        // The handles stay valid through the calls: only a rebalance (served
        // in consumer.poll) or Drop releases them.
        let queues: Vec<*mut rd::rd_kafka_queue_t> = lock(&self.consumer.context().queues)
            .iter()
            .map(|q| q.queue)
            .collect();
        let mut served = 0;
        let mut error = None;
        let first = self.next_queue % queues.len().max(1);
        for &queue in queues[first..].iter().chain(&queues[..first]) {
            served += self.serve_queue(queue, 0, &mut error);
        }
        self.next_queue = first + 1;
        if served == 0 && !wait.is_zero() {
            // Nothing queued anywhere: wait on one partition's queue, a
            // different one each time, briefly enough that records landing
            // in another wait no longer than a step.
            match queues.get(first) {
                Some(&queue) => {
                    let millis = wait.min(IDLE_WAIT).as_millis() as i32;
                    served = self.serve_queue(queue, millis, &mut error);
                }
                None => std::thread::sleep(wait.min(IDLE_WAIT)),
            }
        }
        match error {
            Some(error) => Err(self.read_error(&error)),
            None => Ok(served),
        }
    }

    /// Takes up to a batch of one queue's records (waiting up to `millis`
    /// for the first), hands them to the slices, then releases them.
    fn serve_queue(
        &mut self,
        queue: *mut rd::rd_kafka_queue_t,
        millis: i32,
        error: &mut Option<String>,
    ) -> usize {
        let batch = &mut self.batch.0;
        debug_assert!(batch.is_empty());
        // SAFETY: a live queue handle and room for READ_BATCH pointers,
        // which librdkafka fills with messages the caller owns.
        let taken = unsafe {
            rd::rd_kafka_consume_batch_queue(queue, millis, batch.as_mut_ptr(), READ_BATCH)
        };
        let taken = taken.max(0) as usize;
        // SAFETY: the first `taken` entries were written by librdkafka.
        unsafe { batch.set_len(taken) };
        if taken == 0 {
            return 0;
        }
        for &message in &self.batch.0 {
            // SAFETY: a message we own until released below.
            let m = unsafe { &*message };
            use rd::rd_kafka_resp_err_t::*;
            match m.err {
                RD_KAFKA_RESP_ERR_NO_ERROR => {
                    // SAFETY: alive until released below.
                    let record = unsafe { Msg::borrow(m) };
                    self.work.take(
                        record.partition(),
                        record.offset(),
                        record.key(),
                        record.value(),
                    );
                }
                RD_KAFKA_RESP_ERR__PARTITION_EOF => self.work.at_end(m.partition),
                err => {
                    if is_fatal(err.into()) && error.is_none() {
                        // SAFETY: librdkafka's description of an error message.
                        let text = unsafe { CStr::from_ptr(rd::rd_kafka_message_errstr(m)) };
                        *error = Some(text.to_string_lossy().into_owned());
                    }
                }
            }
        }
        let done = std::mem::replace(&mut self.batch, self.releaser.empty());
        self.releaser.release(done);
        taken
    }

    fn read_error(&self, reason: &str) -> IndexError {
        let kept = self.consumer.context().last_error.take();
        IndexError::Kafka(format!(
            "reading {}: {}",
            self.work.cfg.topic,
            kept.as_deref().unwrap_or(reason)
        ))
    }

    /// Serves the producer's reports and commits what they allow.
    fn settle(&mut self) -> Result<(), IndexError> {
        let commit = self.work.settle()?;
        if commit.count() > 0 {
            // A commit refused because the partition moved to another member
            // is harmless: the new owner re-reads from the older commit.
            if self.consumer.commit(&commit, CommitMode::Async).is_ok() {
                self.work.counts.commits += 1;
            }
        }
        Ok(())
    }

    /// Drops what was being built for partitions the group took away.
    fn forget_revoked(&mut self) {
        let revoked = std::mem::take(&mut *lock(&self.consumer.context().revoked));
        for p in revoked {
            if let Some(part) = self.work.parts.get_mut(&p) {
                part.building = None;
                part.read_to = None;
            }
        }
    }

    /// True once every partition is indexed, by this member or another of
    /// the group, up to its end seen at start (asked of the group once a
    /// second).
    fn caught_up(&mut self) -> bool {
        let ours = self.targets.iter().all(|(p, target)| {
            self.work
                .parts
                .get(p)
                .and_then(|part| part.committed)
                .is_some_and(|c| c >= *target)
        });
        if ours {
            return true;
        }
        if self.last_caught_up_check.elapsed() < Duration::from_secs(1) {
            return false;
        }
        self.last_caught_up_check = Instant::now();
        let topic = self.work.cfg.topic.clone();
        let mut wanted = TopicPartitionList::new();
        for (p, _) in &self.targets {
            wanted.add_partition(&topic, *p);
        }
        let timeout = self.work.cfg.timeout;
        let Ok(committed) = self.consumer.committed_offsets(wanted, timeout) else {
            return false;
        };
        let behind: Vec<(i32, i64)> = self
            .targets
            .iter()
            .filter(|&&(p, target)| {
                // An empty partition has nothing to wait for.
                target > 0
                    && committed
                        .find_partition(&topic, p)
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        })
                        .is_none_or(|done| done < target)
            })
            .copied()
            .collect();
        if behind.is_empty() {
            return true;
        }
        // A partition whose records before the target are gone (retention)
        // is done too. Asked of the probe: on the consumer's connection the
        // question would wait behind a fetch waiting for new records.
        let Some(probe) = self.probe() else {
            return false;
        };
        behind.iter().all(|&(p, target)| {
            probe
                .fetch_watermarks(&topic, p, timeout)
                .is_ok_and(|(low, _)| low >= target)
        })
    }

    /// At a stop: closes every slice, waits (up to `timeout`) for their
    /// acknowledgements, commits what they cover, leaves the group.
    pub fn finish(&mut self, timeout: Duration) -> Result<(), IndexError> {
        let partitions: Vec<i32> = self.work.parts.keys().copied().collect();
        for p in partitions {
            self.work.close(p);
        }
        let deadline = Instant::now() + timeout;
        while self.work.counts.pending > 0 && Instant::now() < deadline {
            self.work.producer.poll(Duration::from_millis(50));
            let commit = self.work.settle()?;
            if commit.count() > 0 && self.consumer.commit(&commit, CommitMode::Sync).is_ok() {
                self.work.counts.commits += 1;
            }
        }
        self.consumer.unsubscribe();
        if self.work.counts.pending > 0 {
            return Err(IndexError::Kafka(format!(
                "{} slice(s) not acknowledged by {} within {} s: their records will be indexed again",
                self.work.counts.pending,
                self.work.cfg.index_topic,
                timeout.as_secs_f64()
            )));
        }
        Ok(())
    }

    pub fn counters(&self) -> IndexSnapshot {
        self.work.counts
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub fn is_done(&self) -> bool {
        self.done
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Errors after which reading cannot go on: the topic or the group is gone
/// or refused. Everything else librdkafka retries by itself.
fn is_fatal(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        TopicAuthorizationFailed
            | GroupAuthorizationFailed
            | UnknownTopicOrPartition
            | UnknownTopic
            | Fatal
    )
}

impl Drop for Indexer {
    fn drop(&mut self) {
        // The messages and the partitions' queue handles go before the
        // client they belong to.
        self.releaser.stop();
        lock(&self.consumer.context().queues).clear();
    }
}

// SAFETY: librdkafka's client and queue handles may be used from any
// thread; the indexer is used by one thread at a time (behind a Mutex).
unsafe impl Send for Indexer {}
