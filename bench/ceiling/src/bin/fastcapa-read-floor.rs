//! The librdkafka floor of the way back: reads every record of a topic the
//! cheapest way librdkafka offers and does nothing with them, so that
//! `fastcapa dump` and `fastcapa index` can be put beside what the library
//! itself costs to read the same records from the same broker.
//!
//! - no consumer group (nothing joined, nothing committed): librdkafka's
//!   simple consumer, started on every partition at its first offset;
//! - each partition's own queue served in turn by
//!   `rd_kafka_consume_callback`: one call hands over every record the
//!   queue holds, lent to the callback and freed by librdkafka, with no
//!   `rd_kafka_message_t` built for the caller to destroy;
//! - the callback counts the record, its key and value bytes, and nothing
//!   else: no key decoded, no header parsed, nothing copied.
//!
//! `--one-queue` forwards every partition to one queue served by
//! `rd_kafka_consume_callback_queue` instead (what the indexer does). It
//! measured a third slower here, in CPU and time: each record is moved
//! once more, between queues, under their locks.
//!
//! The clock runs from the first start to the last record: connecting and
//! the offsets (read before) are outside it, as for the dump's figure.
//! Prints one JSON line: frames, bytes, seconds, cpu_s (the whole process),
//! peak_rss_mb, partitions, mode and librdkafka's version.
//!
//!     fastcapa-read-floor BOOTSTRAP TOPIC [--one-queue] [key=value ...]

use std::ffi::{c_void, CStr};
use std::time::{Duration, Instant};

use fastcapa_ceiling::{client, config, cpu_seconds, cstring, peak_rss_mb};
use rdkafka_sys::bindings as rd;

#[derive(Default)]
struct Counts {
    records: u64,
    bytes: u64,
    /// Per partition: the next offset wanted (the partition is done once
    /// it reaches its end offset).
    next: Vec<i64>,
    error: Option<String>,
}

unsafe extern "C" fn on_record(message: *mut rd::rd_kafka_message_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Counts` passed to the consume call, alive and
    // not otherwise borrowed during it; librdkafka lends `message` for the
    // call.
    let (counts, message) = unsafe { (&mut *(opaque as *mut Counts), &*message) };
    use rd::rd_kafka_resp_err_t::*;
    match message.err {
        RD_KAFKA_RESP_ERR_NO_ERROR => {
            counts.records += 1;
            counts.bytes += (message.len + message.key_len) as u64;
            counts.next[message.partition as usize] = message.offset + 1;
        }
        RD_KAFKA_RESP_ERR__PARTITION_EOF => {}
        err => counts.error = Some(format!("{err:?}")),
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let one_queue = args.iter().any(|a| a == "--one-queue");
    args.retain(|a| a != "--one-queue");
    if args.len() < 2 {
        eprintln!("usage: fastcapa-read-floor BOOTSTRAP TOPIC [--one-queue] [key=value ...]");
        std::process::exit(2);
    }
    // SAFETY: plain librdkafka C API use; every pointer passed is valid for
    // the call, and `counts` outlives every consume call that is given it.
    unsafe {
        let mut settings = vec![
            ("bootstrap.servers", args[0].as_str()),
            ("enable.auto.commit", "false"),
            // The callback is handed everything a call has ready.
            ("consume.callback.max.messages", "0"),
        ];
        for setting in &args[2..] {
            settings.push(setting.split_once('=').expect("key=value"));
        }
        let (rk, rkt, partitions) = client(
            rd::rd_kafka_type_t::RD_KAFKA_CONSUMER,
            config(&settings),
            &args[1],
        );
        let name = cstring(&args[1]);
        assert!(partitions > 0, "no such topic");

        let mut counts = Box::new(Counts {
            next: vec![0; partitions as usize],
            ..Counts::default()
        });
        let mut ends = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let (mut low, mut high) = (0i64, 0i64);
            let err = rd::rd_kafka_query_watermark_offsets(
                rk,
                name.as_ptr(),
                p,
                &mut low,
                &mut high,
                10_000,
            );
            assert_eq!(
                err,
                rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                "watermarks"
            );
            counts.next[p as usize] = low;
            ends.push(high);
        }
        let opaque = &mut *counts as *mut Counts as *mut c_void;
        let done = |counts: &Counts| counts.next.iter().zip(&ends).all(|(n, e)| n >= e);
        let deadline = Instant::now() + Duration::from_secs(600);
        let started = Instant::now();
        if !one_queue {
            for p in 0..partitions {
                let low = counts.next[p as usize];
                assert_eq!(rd::rd_kafka_consume_start(rkt, p, low), 0, "start");
            }
            while !done(&counts) && counts.error.is_none() && Instant::now() < deadline {
                for p in 0..partitions {
                    if counts.next[p as usize] < ends[p as usize] {
                        rd::rd_kafka_consume_callback(rkt, p, 100, Some(on_record), opaque);
                    }
                }
            }
            for p in 0..partitions {
                rd::rd_kafka_consume_stop(rkt, p);
            }
        } else {
            let queue = rd::rd_kafka_queue_new(rk);
            for p in 0..partitions {
                let low = counts.next[p as usize];
                assert_eq!(
                    rd::rd_kafka_consume_start_queue(rkt, p, low, queue),
                    0,
                    "start"
                );
            }
            while !done(&counts) && counts.error.is_none() && Instant::now() < deadline {
                rd::rd_kafka_consume_callback_queue(queue, 100, Some(on_record), opaque);
            }
            for p in 0..partitions {
                rd::rd_kafka_consume_stop(rkt, p);
            }
            rd::rd_kafka_queue_destroy(queue);
        }
        let seconds = started.elapsed().as_secs_f64();
        if let Some(error) = &counts.error {
            panic!("reading: {error}");
        }
        assert!(done(&counts), "not every record read within 600 s");
        let version = CStr::from_ptr(rd::rd_kafka_version_str()).to_string_lossy();
        println!(
            "{{\"frames\": {}, \"bytes\": {}, \"seconds\": {:.6}, \"cpu_s\": {:.4}, \
             \"peak_rss_mb\": {:.1}, \"partitions\": {}, \"mode\": \"{}\", \
             \"librdkafka\": \"{}\"}}",
            counts.records,
            counts.bytes,
            seconds,
            cpu_seconds(),
            peak_rss_mb(),
            partitions,
            if one_queue {
                "one-queue"
            } else {
                "per-partition"
            },
            version
        );
        rd::rd_kafka_topic_destroy(rkt);
        rd::rd_kafka_destroy(rk);
    }
}
