//! What a client context keeps of librdkafka's errors while a client
//! connects: the reason to give if connecting fails.

use std::sync::Mutex;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// librdkafka's last error, kept to become the reason of a failure (say, a
/// TLS certificate it could not verify, rather than a bare timeout). A
/// client context holds one and records what its `ClientContext::error`
/// receives; whoever gives up on the cluster takes it.
#[derive(Debug, Default)]
pub struct LastError(Mutex<Option<String>>);

impl LastError {
    /// Keeps `reason`, librdkafka's words for `error`. The "n/n brokers are
    /// down" summary follows the error that says why: it only takes the
    /// place of nothing.
    pub fn record(&self, error: &KafkaError, reason: &str) {
        let summary = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        if let Ok(mut last) = self.0.lock() {
            if !summary || last.is_none() {
                *last = Some(reason.to_string());
            }
        }
    }

    /// The error kept, once.
    pub fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut last| last.take())
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
}
