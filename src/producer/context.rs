//! The producer's librdkafka context: delivery reports into the worker's
//! counters, statistics into their file, client errors into events (or kept
//! as the reason of a failed start-up check), and the first delivery the
//! brokers refused for want of a permission, which stops the worker.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::ClientContext;

use crate::counters::{bump, TxCounters};
use crate::events::{EventKind, EventLog};
use crate::kafka::LastError;

/// The producer's context: counts delivery reports into the worker's
/// counters, appends librdkafka's statistics to a file when asked, and
/// records client errors and failed deliveries as events for the control
/// plane to report.
pub struct DeliveryCounter {
    pub(super) counters: Arc<TxCounters>,
    pub(super) stats_file: Option<Mutex<File>>,
    pub(super) events: Arc<EventLog>,
    /// While the start-up check runs, errors are kept, not printed: the
    /// last one becomes the reason of a single error line if the check fails.
    pub(super) checking: AtomicBool,
    pub(super) last_error: LastError,
    /// librdkafka's words ("Broker: Topic authorization failed") for the
    /// first frame the brokers refused for want of a permission (an ACL removed while running): no frame after it
    /// can be delivered either.
    pub(super) denied: OnceLock<String>,
}

impl ClientContext for DeliveryCounter {
    fn stats_raw(&self, statistics: &[u8]) {
        if let Some(file) = &self.stats_file {
            if let Ok(mut file) = file.lock() {
                // One JSON object per line, as Metron's fastcapa wrote them, in
                // one write: several producers append to the same file.
                let mut line = Vec::with_capacity(statistics.len() + 1);
                line.extend_from_slice(statistics);
                line.push(b'\n');
                let _ = file.write_all(&line);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.checking.load(Ordering::Relaxed) {
            self.last_error.record(&error, reason);
        } else {
            self.events
                .record(EventKind::Kafka, &format!("{error}: {reason}"));
        }
    }
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    /// Reports that rust-rdkafka serves itself (while `BaseProducer::poll`
    /// runs); the transmit path serves them as events (`serve_reports`).
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => self.count_reports(1, message.payload_len() as u64, 0),
            Err((error, _)) => {
                self.count_reports(0, 0, 1);
                self.delivery_failed(error);
            }
        }
    }
}

impl DeliveryCounter {
    /// Adds delivery reports to the worker's counters: `delivered`
    /// messages of `bytes` payload, and `failed` ones.
    pub(super) fn count_reports(&self, delivered: u64, bytes: u64, failed: u64) {
        bump(&self.counters.delivered, delivered);
        bump(&self.counters.delivered_bytes, bytes);
        bump(&self.counters.failed, failed);
    }

    /// Why a delivery failed, for the operator; kept as the reason to stop
    /// if the brokers refused it for want of a permission.
    pub(super) fn delivery_failed(&self, error: &KafkaError) {
        if let Some(code) = error.rdkafka_error_code().filter(|&code| is_denial(code)) {
            self.deny(code);
        }
        self.events
            .record(EventKind::DeliveryFailed, &error.to_string());
    }

    /// Keeps `code` (in librdkafka's words) as the first refusal for want
    /// of a permission.
    pub(super) fn deny(&self, code: RDKafkaErrorCode) {
        use rdkafka::bindings as rd;
        self.denied
            .get_or_init(|| match rd::rd_kafka_resp_err_t::try_from(code as i32) {
                Ok(raw) => {
                    // SAFETY: rd_kafka_err2str returns a static string for any code.
                    let words = unsafe { std::ffi::CStr::from_ptr(rd::rd_kafka_err2str(raw)) };
                    words.to_string_lossy().into_owned()
                }
                Err(_) => code.to_string(),
            });
    }
}

impl DeliveryCounter {
    /// Whether errors are being kept for the start-up check.
    pub(super) fn set_checking(&self, on: bool) {
        self.checking.store(on, Ordering::Relaxed);
    }
}

/// Whether a frame's refusal says the client lacks a permission: every
/// frame after it would be refused alike until an operator grants it.
pub(super) fn is_denial(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed
    )
}
