//! Opening a query: the filter compiled, each topic's partitions and
//! offsets found, its readers connected, its index read and planned, and
//! the `--from` search set up (or reading started).

use super::*;

/// The librdkafka settings of a topic's probe: it finds the partitions and
/// their offsets, and serves the `--from` search: one fetch per probe, no
/// prefetch.
const PROBE_SETTINGS: [(&str, &str); 8] = [
    ("enable.partition.eof", "true"),
    ("consume.callback.max.messages", "0"),
    ("enable.auto.commit", "false"),
    ("auto.offset.reset", "earliest"),
    ("queued.min.messages", "1"),
    ("queued.max.messages.kbytes", "1024"),
    ("max.partition.fetch.bytes", "65536"),
    // A probe's queue is never emptied, only moved: no waiting a second
    // (librdkafka's backoff for a full queue) before the next.
    ("fetch.queue.backoff.ms", "0"),
];

impl Dump {
    /// Compiles the filter, connects, finds the topics and their offsets.
    /// Waits up to `cfg.timeout` for each of Kafka's answers.
    pub fn open(cfg: DumpConfig, output: File) -> Result<Dump, DumpError> {
        let filter = match &cfg.filter {
            Some(expr) => {
                Some(BpfProgram::compile_offline(expr, cfg.linktype).map_err(DumpError::Filter)?)
            }
            None => None,
        };
        let mut probes = Vec::with_capacity(cfg.topics.len());
        // Per partition of the query: its topic, and its offsets at start.
        let mut ends: Vec<(usize, (i64, i64))> = Vec::new();
        for (t, topic) in cfg.topics.iter().enumerate() {
            let probe = Reader::connect(
                &cfg.settings,
                &PROBE_SETTINGS,
                &[],
                &topic.name,
                cfg.timeout,
            )?;
            for p in 0..probe.partitions.len() {
                ends.push((t, probe.watermarks(p, cfg.timeout)?));
            }
            probes.push(probe);
        }
        // The readers: the prefetch budget spread over every partition.
        let batch = READ_BATCH.to_string();
        let ours = [
            // Each partition's end is a signal the engine needs.
            ("enable.partition.eof", "true"),
            ("consume.callback.max.messages", batch.as_str()),
            // No group: nothing to commit.
            ("enable.auto.commit", "false"),
            // An offset gone by retention means: from what is left.
            ("auto.offset.reset", "earliest"),
        ];
        let per_queue = (PREFETCH_KBYTES / ends.len())
            .clamp(1 << 10, 8 << 10)
            .to_string();
        let mut defaults = vec![
            ("queued.max.messages.kbytes", per_queue.as_str()),
            // librdkafka's default keeps 100000 records queued per partition
            // whatever their bytes, each with a few hundred bytes of
            // bookkeeping; a few read batches' worth keeps up (docs/dump.md).
            ("queued.min.messages", "5000"),
            // A partition's fetcher, finding its queue full, looks again
            // only after this (a whole second by default). The engine
            // empties the queues in turn, a few thousand records at a time,
            // and waits for a queue it has emptied: at 10 ms those waits
            // were half of a whole dump's time (docs/performance.md).
            ("fetch.queue.backoff.ms", "1"),
        ];
        if !cfg.follow {
            // Below the end offsets seen at start the broker always has
            // records; a fetch that finds none (a partition moved to its
            // next range) must not wait librdkafka's half second for more.
            defaults.push(("fetch.wait.max.ms", "1"));
        }
        // Each topic's index: per partition, the ranges it selects and where
        // its coverage ends (`None`: no usable slice, the partition is
        // scanned).
        let predicate = Plan::parse(cfg.filter.as_deref());
        let window = (cfg.start.unwrap_or(0), cfg.end.unwrap_or(u64::MAX));
        let mut sources = Vec::with_capacity(cfg.topics.len());
        let mut plans: Vec<Option<indexed::PartPlan>> = Vec::with_capacity(ends.len());
        for (t, topic) in cfg.topics.iter().enumerate() {
            let reader =
                Reader::connect(&cfg.settings, &ours, &defaults, &topic.name, cfg.timeout)?;
            let catalog = match &topic.index_topic {
                Some(index) => Catalog::read(&cfg.settings, &topic.name, index, cfg.timeout)?,
                None => None,
            };
            let topic_ends = ends.iter().filter(|(of, _)| *of == t).map(|(_, e)| e);
            for (&(low, high), id) in topic_ends.zip(&probes[t].partitions) {
                plans.push(catalog.as_ref().and_then(|catalog| {
                    let slices = catalog.slices.get(id)?;
                    plan_partition(slices, low, high, window, &predicate, cfg.linktype)
                }));
            }
            sources.push(Source {
                name: topic.name.clone(),
                reader,
                index_read: catalog.as_ref().is_some_and(|c| !c.slices.is_empty()),
                counts: DumpSnapshot::default(),
            });
        }
        // Where the rest of each partition (what no slice covers at its
        // end, or all of it) is read from: found by searching the keys for
        // `--from`, as without an index.
        let rest_from: Vec<i64> = ends
            .iter()
            .zip(&plans)
            .map(|(&(_, (low, high)), plan)| match plan {
                None => low,
                Some(plan) => plan.explain.tail_from.unwrap_or(high),
            })
            .collect();
        let mut parts = Vec::with_capacity(ends.len());
        let mut local = 0;
        for (i, (&(source, (low, high)), plan)) in ends.iter().zip(&plans).enumerate() {
            if i > 0 && ends[i - 1].0 != source {
                local = 0;
            }
            parts.push(Part {
                source,
                local,
                stop: if cfg.follow { i64::MAX } else { high },
                past_end: 0,
                ranges: VecDeque::new(),
                position: low,
                moving: false,
                low,
                high,
                plan: plan.as_ref().map(|p| p.explain.clone()),
            });
            local += 1;
        }
        let seeking = match cfg.start {
            Some(start) if start > 0 => {
                let target = start.saturating_sub(cfg.reorder_bound_us);
                let target_ms = i64::try_from(target / 1000).unwrap_or(i64::MAX);
                let hints: Vec<Option<i64>> = probes
                    .iter()
                    .flat_map(|probe| probe.offsets_for_time(target_ms, cfg.timeout))
                    .collect();
                let brackets = parts
                    .iter()
                    .zip(&rest_from)
                    .zip(hints)
                    .map(|((part, &from), hint)| {
                        Bracket::new(from, part.high, target).with_hint(hint.filter(|&h| h >= from))
                    })
                    .collect();
                Some(Seeking { probes, brackets })
            }
            _ => None,
        };
        let writer = match cfg.format {
            Format::Pcap => CaptureWriter::pcap(output, cfg.linktype),
            Format::Pcapng => {
                let interfaces: Vec<(String, u32)> = cfg
                    .topics
                    .iter()
                    .map(|t| (t.name.clone(), cfg.linktype))
                    .collect();
                let application = concat!("fastcapa ", env!("CARGO_PKG_VERSION"));
                CaptureWriter::pcapng(output, application, &interfaces)
            }
        };
        let settle = cfg.follow.then_some(SETTLE_MS);
        let mut dump = Dump {
            writer,
            merge: Merge::new(
                parts.len(),
                cfg.reorder_bound_us,
                settle,
                cfg.max_held_bytes,
            ),
            cfg,
            sources,
            seeking,
            filter,
            parts,
            written: 0,
            last_written: 0,
            epoch: Instant::now(),
            progress_at: Instant::now(),
            done: false,
            planned_any: plans.iter().any(Option::is_some),
            planned: plans.into_iter().map(|p| p.map(|p| p.ranges)).collect(),
            predicate: predicate.to_string(),
        };
        if dump.seeking.is_none() {
            dump.start_reading(&rest_from)?;
        }
        Ok(dump)
    }
    /// Starts each partition at its first range: those the index
    /// selected, then the rest from `starts` on (or marks it finished if
    /// there is nothing to read there).
    pub(super) fn start_reading(&mut self, starts: &[i64]) -> Result<(), DumpError> {
        for (p, &start) in starts.iter().enumerate() {
            let part = &mut self.parts[p];
            part.ranges = self.planned[p].take().unwrap_or_default().into();
            if start < part.stop {
                part.ranges.push_back((start, part.stop));
            }
            match part.ranges.front() {
                None => self.merge.finish(p),
                Some(&(first, _)) => {
                    part.position = first;
                    part.moving = true;
                    self.sources[part.source].reader.start(part.local, first)?;
                }
            }
        }
        self.progress_at = Instant::now();
        Ok(())
    }
}
