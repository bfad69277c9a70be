//! The librdkafka ceiling: loads every record of a capture file into memory,
//! then produces them to one topic as fast as librdkafka takes them, with the
//! same key (capture time in µs, 8 bytes big-endian), value (the frame),
//! record timestamp (capture time in ms) and producer settings as fastcapa.
//! Prints one JSON line: frames, bytes, seconds from the first produce to the
//! last delivery report, delivered, failed.
//!
//!     fastcapa-ceiling FILE BOOTSTRAP TOPIC [key=value ...]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

#[derive(Default)]
struct Counts {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Counts {
    /// With `statistics.interval.ms` set, librdkafka's statistics go to
    /// stderr, one JSON object per line (batch sizes, request counts: what
    /// fastcapa's `-s` file holds), to compare how the two batch.
    fn stats_raw(&self, statistics: &[u8]) {
        eprintln!("{}", String::from_utf8_lossy(statistics));
    }
}

impl ProducerContext for Counts {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Every delivery-report event waiting, without blocking (`poll` with a
/// timeout below 1 ms spins).
fn serve_reports(producer: &BaseProducer<Counts>) {
    for _ in 0..16 {
        let before = producer.in_flight_count();
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() == before {
            break;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: fastcapa-ceiling FILE BOOTSTRAP TOPIC [key=value ...]");
        std::process::exit(2);
    }
    // Load: one buffer for all frames, (ts_us, start, end) per frame.
    let mut capture = pcap::Capture::from_file_with_precision(&args[1], pcap::Precision::Micro)
        .expect("open capture");
    let (mut data, mut frames) = (Vec::<u8>::new(), Vec::<(u64, usize, usize)>::new());
    while let Ok(packet) = capture.next_packet() {
        let ts = packet.header.ts;
        let ts_us = (ts.tv_sec as u64) * 1_000_000 + ts.tv_usec as u64;
        let start = data.len();
        data.extend_from_slice(packet.data);
        frames.push((ts_us, start, data.len()));
    }
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &args[2]);
    // The caller's settings: bench/run.py passes fastcapa's defaults
    // (python/fastcapa/config.py), so both produce alike.
    for setting in &args[4..] {
        let (key, value) = setting.split_once('=').expect("key=value");
        config.set(key, value);
    }
    let producer: BaseProducer<Counts> = config
        .create_with_context(Counts::default())
        .expect("producer");
    producer
        .client()
        .fetch_metadata(Some(&args[3]), Duration::from_secs(10))
        .expect("metadata");
    let started = Instant::now();
    let mut bytes = 0u64;
    for (i, &(ts_us, start, end)) in frames.iter().enumerate() {
        let key = ts_us.to_be_bytes();
        let value = &data[start..end];
        let mut record = BaseRecord::to(&args[3])
            .key(&key[..])
            .payload(value)
            .timestamp((ts_us / 1000) as i64);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // As fastcapa's transmit worker does: serve delivery
                    // reports, then sleep briefly. (`poll` with a timeout
                    // below 1 ms spins; so does `flush`, hence the loop below.)
                    record = back;
                    serve_reports(&producer);
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
        bytes += value.len() as u64;
        // Serve delivery reports as fastcapa's transmit worker does, once per
        // burst of 256 (its default -w): each served report frees room in
        // the producer queue.
        if i % 256 == 255 {
            serve_reports(&producer);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1));
    }
    let seconds = started.elapsed().as_secs_f64();
    let counts = producer.context();
    println!(
        "{{\"frames\": {}, \"bytes\": {}, \"seconds\": {:.6}, \"delivered\": {}, \"failed\": {}}}",
        frames.len(),
        bytes,
        seconds,
        counts.delivered.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed)
    );
}
