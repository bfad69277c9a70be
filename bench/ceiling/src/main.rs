//! The librdkafka ceiling: loads every record of a capture file into memory,
//! then produces them to one topic the cheapest way librdkafka offers, with
//! the same key (capture time in µs, 8 bytes big-endian), value (the frame)
//! and producer settings as fastcapa:
//!
//! - a topic handle made once (`rd_kafka_topic_new`): no lookup by name;
//! - `rd_kafka_produce_batch`, 256 messages per call (fastcapa's `-w`), with
//!   `RD_KAFKA_MSG_F_COPY`: one topic lock, one partition lookup and one
//!   clock read per call, one allocation and copy per message;
//! - an explicit partition per call, sticky for a message set
//!   (`batch.num.messages` messages or `batch.size` bytes) then the next
//!   one, so partitions stay balanced and no key is hashed (what fastcapa's
//!   default partitioning does);
//! - delivery reports counted by a `dr_msg_cb`, served by `rd_kafka_poll`
//!   after every call (what frees room in the queue; an accounting probe
//!   needs them).
//!
//! Prints one JSON line: frames, bytes, seconds from the first produce to the
//! last delivery report, delivered, failed, librdkafka's version, and the
//! CPU seconds spent loading the file (`load_cpu_s`), which the benchmark
//! takes off: the ceiling's figure is the cost of producing alone.
//!
//!     fastcapa-ceiling FILE BOOTSTRAP TOPIC [key=value ...]

use std::ffi::{c_void, CStr};
use std::time::{Duration, Instant};

use fastcapa_ceiling::{client, config, cpu_seconds};
use rdkafka_sys::bindings as rd;

const BATCH: usize = 256;

#[derive(Default)]
struct Counts {
    delivered: u64,
    failed: u64,
}

unsafe extern "C" fn on_delivery(
    _: *mut rd::rd_kafka_t,
    message: *const rd::rd_kafka_message_t,
    opaque: *mut c_void,
) {
    // SAFETY: `opaque` is the `Counts` given to rd_kafka_conf_set_opaque,
    // alive for the whole run; callbacks run on this thread (rd_kafka_poll).
    let counts = unsafe { &mut *(opaque as *mut Counts) };
    // SAFETY: librdkafka passes a valid message for the call.
    if unsafe { (*message).err } == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        counts.delivered += 1;
    } else {
        counts.failed += 1;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: fastcapa-ceiling FILE BOOTSTRAP TOPIC [key=value ...]");
        std::process::exit(2);
    }
    // The same glibc setting fastcapa's producers make (src/producer/memory.rs,
    // keep_freed_memory): librdkafka frees each message when its report is
    // served, and glibc would trim the heap back and fault it in again after
    // every wave. A ceiling that paid for that would be beatable.
    // SAFETY: mallopt only changes glibc's trimming thresholds.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
    }
    // Load: one buffer for all frames, one key per frame.
    let mut capture = pcap::Capture::from_file_with_precision(&args[1], pcap::Precision::Micro)
        .expect("open capture");
    let (mut data, mut spans, mut keys) = (Vec::<u8>::new(), Vec::new(), Vec::<[u8; 8]>::new());
    while let Ok(packet) = capture.next_packet() {
        let ts = packet.header.ts;
        let ts_us = (ts.tv_sec as u64) * 1_000_000 + ts.tv_usec as u64;
        spans.push((data.len(), packet.data.len()));
        data.extend_from_slice(packet.data);
        keys.push(ts_us.to_be_bytes());
    }
    let mut counts = Box::new(Counts::default());
    // SAFETY: plain librdkafka C API use; every pointer passed is valid for
    // the call, and `counts` outlives the client (destroyed before it).
    unsafe {
        // The caller's settings: bench/run.py passes fastcapa's defaults
        // (python/fastcapa/config.py), so both produce alike.
        let mut settings = vec![("bootstrap.servers", args[2].as_str())];
        let (mut batch_messages, mut batch_bytes) = (10_000usize, 1_000_000usize);
        for setting in &args[4..] {
            let (key, value) = setting.split_once('=').expect("key=value");
            settings.push((key, value));
            match key {
                "batch.num.messages" => batch_messages = value.parse().expect("a number"),
                "batch.size" => batch_bytes = value.parse().expect("a number"),
                _ => {}
            }
        }
        let conf = config(&settings);
        rd::rd_kafka_conf_set_dr_msg_cb(conf, Some(on_delivery));
        rd::rd_kafka_conf_set_opaque(conf, &mut *counts as *mut Counts as *mut c_void);
        // The partition count, and the topic's leaders known before the clock starts.
        let (rk, rkt, partitions) = client(rd::rd_kafka_type_t::RD_KAFKA_PRODUCER, conf, &args[3]);
        let partitions = partitions.max(1);

        let load_cpu_s = cpu_seconds();
        let started = Instant::now();
        let mut bytes = 0u64;
        let mut messages: Vec<rd::rd_kafka_message_t> = Vec::with_capacity(BATCH);
        let (mut partition, mut stint, mut stint_bytes) = (0i32, 0usize, 0usize);
        for (chunk_spans, chunk_keys) in spans.chunks(BATCH).zip(keys.chunks(BATCH)) {
            messages.clear();
            for (&(start, len), key) in chunk_spans.iter().zip(chunk_keys) {
                let mut message: rd::rd_kafka_message_t = std::mem::zeroed();
                message.payload = data.as_ptr().add(start) as *mut c_void;
                message.len = len;
                message.key = key.as_ptr() as *mut c_void;
                message.key_len = key.len();
                messages.push(message);
                bytes += len as u64;
                stint_bytes += len;
            }
            let mut pending = &mut messages[..];
            while !pending.is_empty() {
                rd::rd_kafka_produce_batch(
                    rkt,
                    partition,
                    rd::RD_KAFKA_MSG_F_COPY,
                    pending.as_mut_ptr(),
                    pending.len() as i32,
                );
                // A full queue fails the rest of the call: serve delivery
                // reports (they free room), pause, and offer the rest again.
                let taken = pending
                    .iter()
                    .position(|m| m.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
                    .unwrap_or(pending.len());
                if taken < pending.len()
                    && pending[taken].err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__QUEUE_FULL
                {
                    panic!("produce: {:?}", pending[taken].err);
                }
                pending = &mut pending[taken..];
                rd::rd_kafka_poll(rk, 0);
                if !pending.is_empty() {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            stint += chunk_spans.len();
            if stint >= batch_messages || stint_bytes >= batch_bytes {
                (stint, stint_bytes) = (0, 0);
                partition = (partition + 1) % partitions;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while rd::rd_kafka_outq_len(rk) > 0 && Instant::now() < deadline {
            rd::rd_kafka_poll(rk, 1);
        }
        let seconds = started.elapsed().as_secs_f64();
        let version = CStr::from_ptr(rd::rd_kafka_version_str()).to_string_lossy();
        println!(
            "{{\"frames\": {}, \"bytes\": {}, \"seconds\": {:.6}, \"delivered\": {}, \
             \"failed\": {}, \"librdkafka\": \"{}\", \"partitions\": {}, \"load_cpu_s\": {:.4}}}",
            spans.len(),
            bytes,
            seconds,
            counts.delivered,
            counts.failed,
            version,
            partitions,
            load_cpu_s
        );
        rd::rd_kafka_topic_destroy(rkt);
        rd::rd_kafka_destroy(rk);
    }
}
