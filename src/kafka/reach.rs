//! Waiting for the cluster's first answer: a metadata request, asked in
//! short slices while no broker is up, so that a refusal (see [`Refusal`])
//! ends the wait at once rather than at the timeout.
//!
//! librdkafka's metadata call first waits for a broker that is up, then
//! asks it. While none is (connecting, or failing to: TLS, SASL), a slice
//! ends with "no broker": the client's errors are served (they reach its
//! context's [`LastError`]), and the wait goes on unless one of them was a
//! refusal. Once a broker took the request, the rest of the timeout is
//! its to answer in (a broker is up: nothing more can be refused).

use std::time::{Duration, Instant};

use rdkafka::client::Client;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::ClientContext;

use super::config::ClientError;
use super::context::LastError;
use super::refusal::{checks_host_names, Refusal};

/// How long one slice of the wait lasts while no broker is up: how late,
/// at most, a refusal ends it.
const SLICE: Duration = Duration::from_millis(100);
/// Longest second look at a broker whose certificate did not verify (see
/// [`second_look`]).
const SECOND_LOOK: Duration = Duration::from_secs(5);

/// Why the cluster gave no answer.
#[derive(Debug)]
pub enum Unanswered {
    /// A broker refused the client, or the client the broker.
    Refused(Refusal),
    /// No answer in time: librdkafka's last error if it said anything,
    /// and the request's own.
    Silent {
        last_error: Option<String>,
        error: KafkaError,
    },
}

/// Asks `client` for the metadata of `topic` (all topics: `None`) for up
/// to `timeout`, giving up at the first refusal `last` records. `serve`
/// serves the client's events, so that its errors reach `last`.
pub fn metadata<C: ClientContext>(
    client: &Client<C>,
    topic: Option<&str>,
    timeout: Duration,
    last: &LastError,
    mut serve: impl FnMut(),
) -> Result<Metadata, Unanswered> {
    let deadline = Instant::now() + timeout;
    let mut slice = SLICE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = client.fetch_metadata(topic, left.min(slice));
        serve();
        let error = match answer {
            Ok(metadata) => return Ok(metadata),
            Err(error) => error,
        };
        if let Some(refusal) = last.take_refusal() {
            return Err(Unanswered::Refused(refusal));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match error.rdkafka_error_code() {
            // No broker up within the slice: ask again.
            Some(RDKafkaErrorCode::BrokerTransportFailure) if !left.is_zero() => {}
            // A broker took the request and did not answer within the
            // slice: the rest of the time is its own.
            Some(RDKafkaErrorCode::OperationTimedOut) if !left.is_zero() => slice = left,
            _ => {
                return Err(Unanswered::Silent {
                    last_error: last.take(),
                    error,
                })
            }
        }
    }
}

/// [`metadata`], its failure in the operator's words: a refusal with what
/// was refused and the settings to look at, or a cluster that did not
/// answer within `timeout`. `config` made the client.
pub fn answer<C: ClientContext>(
    client: &Client<C>,
    config: &ClientConfig,
    topic: Option<&str>,
    timeout: Duration,
    last: &LastError,
    serve: impl FnMut(),
) -> Result<Metadata, ClientError> {
    metadata(client, topic, timeout, last, serve)
        .map_err(|unanswered| failure(config, topic, timeout, unanswered))
}

/// The error an operator reads for `unanswered`.
pub fn failure(
    config: &ClientConfig,
    topic: Option<&str>,
    timeout: Duration,
    unanswered: Unanswered,
) -> ClientError {
    let bootstrap = super::config::bootstrap(config);
    match unanswered {
        Unanswered::Refused(refusal) => {
            let name_wrong = if refusal.is_broker_certificate() && checks_host_names(config) {
                second_look(config, topic, timeout.min(SECOND_LOOK))
            } else {
                None
            };
            ClientError::Refused {
                bootstrap,
                reason: refusal.explain(config, name_wrong),
            }
        }
        Unanswered::Silent { last_error, error } => {
            ClientError::unreachable(&bootstrap, timeout, last_error, &error)
        }
    }
}

/// Checks that the cluster `settings` name answers a consumer's metadata
/// request about `topic` within `timeout`, or refuses it (see [`answer`]);
/// for a command whose first contact with Kafka is not one of fastcapa's
/// own clients (`fastcapa index`'s Python admin client).
pub fn check(
    settings: &[(String, String)],
    topic: &str,
    timeout: Duration,
) -> Result<(), ClientError> {
    let config = super::config::client_config(settings, &[], &[]);
    let consumer: BaseConsumer<Quiet> =
        super::config::create(&config, Quiet::default(), "consumer")?;
    let serve = || {
        for _ in 0..64 {
            let _ = consumer.poll(Duration::ZERO);
        }
    };
    let last = &consumer.context().last_error;
    answer(
        consumer.client(),
        &config,
        Some(topic),
        timeout,
        last,
        serve,
    )
    .map(|_| ())
}

/// OpenSSL says "certificate verify failed" alike for a certificate no
/// trusted CA signed and for one that names another host. A second client,
/// its settings the same but host names unchecked, tells them apart:
/// `Some(true)` if its handshake passes (the name was wrong), `Some(false)`
/// if the certificate still does not verify (the CA), `None` if it cannot
/// tell within `budget`.
fn second_look(config: &ClientConfig, topic: Option<&str>, budget: Duration) -> Option<bool> {
    let mut unchecked = config.clone();
    unchecked.set("ssl.endpoint.identification.algorithm", "none");
    let looker: BaseConsumer<Quiet> = unchecked.create_with_context(Quiet::default()).ok()?;
    let last = &looker.context().last_error;
    let serve = || {
        for _ in 0..64 {
            let _ = looker.poll(Duration::ZERO);
        }
    };
    match metadata(looker.client(), topic, budget, last, serve) {
        Ok(_) => Some(true),
        Err(Unanswered::Refused(refusal)) => Some(!refusal.is_broker_certificate()),
        Err(Unanswered::Silent { .. }) => None,
    }
}

/// A client context that keeps librdkafka's errors and logs nothing.
#[derive(Default)]
struct Quiet {
    last_error: LastError,
}

impl ClientContext for Quiet {
    fn log(&self, _: RDKafkaLogLevel, _: &str, _: &str) {}

    fn error(&self, error: KafkaError, reason: &str) {
        self.last_error.record(&error, reason);
    }
}

impl ConsumerContext for Quiet {}

#[cfg(test)]
mod tests {
    use rdkafka::consumer::BaseConsumer;

    use super::*;

    fn quiet_consumer(pairs: &[(&str, &str)]) -> (BaseConsumer<Quiet>, ClientConfig) {
        let mut config = ClientConfig::new();
        for (key, value) in pairs {
            config.set(*key, *value);
        }
        let consumer = config.create_with_context(Quiet::default()).unwrap();
        (consumer, config)
    }

    #[test]
    fn a_broker_that_is_not_there_is_waited_for_until_the_timeout() {
        // Nothing listens on port 1: refused, again and again, never a refusal.
        let (consumer, config) = quiet_consumer(&[("bootstrap.servers", "127.0.0.1:1")]);
        let timeout = Duration::from_millis(700);
        let started = Instant::now();
        let serve = || {
            let _ = consumer.poll(Duration::ZERO);
        };
        let last = &consumer.context().last_error;
        let error = answer(consumer.client(), &config, None, timeout, last, serve).unwrap_err();
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
        assert!(started.elapsed() < timeout * 4, "{:?}", started.elapsed());
        let text = error.to_string();
        assert!(
            text.starts_with("cannot reach Kafka at 127.0.0.1:1 within 0.7 s: "),
            "{text}"
        );
    }

    #[test]
    fn a_refusal_ends_the_wait_at_once() {
        let (consumer, config) = quiet_consumer(&[("bootstrap.servers", "127.0.0.1:1")]);
        let last = &consumer.context().last_error;
        // As a context records it from a serving of the client's events.
        let refused = "sasl_plaintext://127.0.0.1:1/bootstrap: SASL authentication error: \
                       Authentication failed: Invalid username or password";
        let started = Instant::now();
        let serve = || {
            last.record(
                &KafkaError::Global(RDKafkaErrorCode::Authentication),
                refused,
            )
        };
        let timeout = Duration::from_secs(30);
        let error = answer(consumer.client(), &config, None, timeout, last, serve).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let text = error.to_string();
        assert!(
            text.starts_with("cannot connect to Kafka at 127.0.0.1:1: the broker refused"),
            "{text}"
        );
        assert!(text.ends_with("(SASL: Authentication failed: Invalid username or password)"));
    }

    #[test]
    fn a_cluster_that_answers_is_answered() {
        let (consumer, config) = quiet_consumer(&[("test.mock.num.brokers", "1")]);
        let last = &consumer.context().last_error;
        let serve = || {
            let _ = consumer.poll(Duration::ZERO);
        };
        let timeout = Duration::from_secs(10);
        let metadata = answer(consumer.client(), &config, None, timeout, last, serve).unwrap();
        assert_eq!(metadata.brokers().len(), 1);
    }
}
