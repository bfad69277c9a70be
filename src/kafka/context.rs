//! What a client context keeps of librdkafka's errors while a client
//! connects: the reason to give if connecting fails, and the first refusal
//! (see [`Refusal`]), which ends the wait at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::refusal::Refusal;

/// librdkafka's last error, kept to become the reason of a failure (say, a
/// refused connection, rather than a bare timeout), and the first refusal
/// among them. A client context holds one and records what its
/// `ClientContext::error` receives; whoever waits for the cluster looks at
/// [`LastError::refused`] between slices of the wait, and whoever gives up
/// takes what was kept.
#[derive(Debug, Default)]
pub struct LastError {
    last: Mutex<Option<String>>,
    refusal: Mutex<Option<Refusal>>,
    refused: AtomicBool,
}

impl LastError {
    /// Keeps `reason`, librdkafka's words for `error`. The "n/n brokers are
    /// down" summary follows the error that says why: it only takes the
    /// place of nothing. The first refusal is kept apart, whatever follows.
    pub fn record(&self, error: &KafkaError, reason: &str) {
        let summary = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        if let Ok(mut last) = self.last.lock() {
            if !summary || last.is_none() {
                *last = Some(reason.to_string());
            }
        }
        if let Some(refusal) = Refusal::of(error, reason) {
            if let Ok(mut first) = self.refusal.lock() {
                first.get_or_insert(refusal);
                self.refused.store(true, Ordering::Release);
            }
        }
    }

    /// Whether a refusal was recorded (and not taken yet).
    pub fn refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    /// The first refusal kept, once.
    pub fn take_refusal(&self) -> Option<Refusal> {
        let refusal = self.refusal.lock().ok().and_then(|mut first| first.take());
        self.refused.store(false, Ordering::Release);
        refusal
    }

    /// The error kept, once.
    pub fn take(&self) -> Option<String> {
        self.last.lock().ok().and_then(|mut last| last.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::Global(code)
    }

    #[test]
    fn the_last_error_is_kept_and_taken_once() {
        let last = LastError::default();
        assert_eq!(last.take(), None);
        last.record(&global(RDKafkaErrorCode::BrokerTransportFailure), "refused");
        last.record(&global(RDKafkaErrorCode::Authentication), "bad password");
        assert_eq!(last.take().as_deref(), Some("bad password"));
        assert_eq!(last.take(), None);
    }

    #[test]
    fn all_brokers_down_does_not_hide_the_reason() {
        let down = global(RDKafkaErrorCode::AllBrokersDown);
        let last = LastError::default();
        last.record(&global(RDKafkaErrorCode::SSL), "certificate verify failed");
        last.record(&down, "1/1 brokers are down");
        assert_eq!(last.take().as_deref(), Some("certificate verify failed"));
        // Alone, the summary is better than nothing; a reason replaces it.
        last.record(&down, "1/1 brokers are down");
        assert_eq!(last.take().as_deref(), Some("1/1 brokers are down"));
        last.record(&down, "1/1 brokers are down");
        last.record(&global(RDKafkaErrorCode::Resolve), "no such host");
        assert_eq!(last.take().as_deref(), Some("no such host"));
    }

    #[test]
    fn the_first_refusal_is_kept_whatever_follows() {
        let last = LastError::default();
        let transport = global(RDKafkaErrorCode::BrokerTransportFailure);
        last.record(&transport, "k:9093/bootstrap: Connection refused");
        assert!(!last.refused(), "a broker not up yet is no refusal");
        let ssl = global(RDKafkaErrorCode::SSL);
        last.record(
            &ssl,
            "ssl://k:9093/bootstrap: SSL routines::certificate verify failed",
        );
        last.record(
            &transport,
            "ssl://k:9093/bootstrap: sslv3 alert bad certificate",
        );
        last.record(
            &global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert!(last.refused());
        let refusal = last.take_refusal().unwrap();
        assert!(refusal.is_broker_certificate(), "{refusal:?}");
        assert_eq!(refusal.broker(), "k:9093");
        assert!(!last.refused());
        assert_eq!(last.take_refusal(), None);
    }
}
