//! The producer against librdkafka's built-in mock cluster
//! (`test.mock.num.brokers`): the start-up check, batches, cut frames,
//! delivery reports, a refused permission and the effective settings,
//! without a real broker (the integration tests use a real one).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::Producer;

use super::{Batch, KafkaProducer, Offer, UNASSIGNED};
use crate::counters::TxCounters;
use crate::events::EventLog;

fn mock_producer(extra: &[(&str, &str)]) -> (KafkaProducer, Arc<TxCounters>) {
    let mut settings = vec![
        ("test.mock.num.brokers".to_string(), "1".to_string()),
        ("linger.ms".to_string(), "1".to_string()),
    ];
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let counters = Arc::new(TxCounters::default());
    let producer = KafkaProducer::new(
        &settings,
        "mocked",
        Arc::clone(&counters),
        Arc::new(EventLog::default()),
        None,
    )
    .unwrap();
    (producer, counters)
}

#[test]
fn the_check_finds_the_topic_and_a_batch_is_delivered() {
    let (producer, counters) = mock_producer(&[]);
    let partitions = producer.check_connection(Duration::from_secs(10)).unwrap();
    assert!(partitions > 0);
    let values: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 60 + i as usize]).collect();
    let mut batch = Batch::new(128);
    for (i, value) in values.iter().enumerate() {
        batch.push(1_700_000_000_000_000 + i as u64, value, None);
    }
    assert_eq!(producer.produce_batch(UNASSIGNED, &mut batch), 100);
    assert!((0..100).all(|i| batch.outcome(i) == Offer::Queued));
    // A cut frame goes alone, with its wire length in a header.
    assert_eq!(producer.offer(1, 0, &[0u8; 96], 1514), Offer::Queued);
    assert!(producer.flush(Duration::from_secs(10), || false));
    let c = counters.snapshot();
    assert_eq!((c.delivered, c.failed), (101, 0));
    let bytes: usize = values.iter().map(Vec::len).sum::<usize>() + 96;
    assert_eq!(c.delivered_bytes, bytes as u64);
}

#[test]
fn a_message_larger_than_allowed_is_refused_for_good() {
    let (producer, _) = mock_producer(&[("message.max.bytes", "1000")]);
    assert!(matches!(
        producer.offer(1, 0, &[0u8; 5000], 5000),
        Offer::Refused(_)
    ));
    let big = vec![0u8; 5000];
    let mut batch = Batch::new(2);
    batch.push(1, &[0u8; 60], None);
    batch.push(2, &big, None);
    assert_eq!(producer.produce_batch(0, &mut batch), 1);
    assert_eq!(batch.outcome(0), Offer::Queued);
    assert!(matches!(batch.outcome(1), Offer::Refused(_)));
}

#[test]
fn the_message_set_is_the_clients_own() {
    let (producer, _) = mock_producer(&[]);
    assert_eq!(
        producer.message_set(),
        (10_000, 1_000_000),
        "librdkafka's defaults"
    );
    let (producer, _) = mock_producer(&[("batch.num.messages", "500"), ("batch.size", "65536")]);
    assert_eq!(producer.message_set(), (500, 65536));
}

#[test]
fn a_frame_refused_for_want_of_a_permission_says_the_producer_is_done() {
    let (producer, counters) = mock_producer(&[
        ("security.protocol", "sasl_plaintext"),
        ("sasl.mechanism", "PLAIN"),
        ("sasl.username", "alice"),
        ("sasl.password", "secret"),
    ]);
    producer.check_connection(Duration::from_secs(10)).unwrap();
    assert_eq!(producer.denied(), None);
    // The brokers refuse the next produce requests: the topic's WRITE is gone.
    let denied =
        rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED;
    // SAFETY: the client is alive and has a mock cluster (test.mock.num.brokers).
    unsafe {
        let cluster = rdkafka::bindings::rd_kafka_handle_mock_cluster(
            producer.producer.client().native_ptr(),
        );
        assert!(!cluster.is_null());
        let errors = [denied; 8];
        // ApiKey 0: Produce.
        rdkafka::bindings::rd_kafka_mock_push_request_errors_array(
            cluster,
            0,
            errors.len(),
            errors.as_ptr(),
        );
    }
    let mut batch = Batch::new(8);
    for i in 0..4u64 {
        batch.push(i, &[7u8; 60], None);
    }
    assert_eq!(producer.produce_batch(0, &mut batch), 4);
    producer.flush(Duration::from_secs(10), || false);
    assert!(counters.snapshot().failed > 0);
    let said = producer.denied().expect("the refusal is kept");
    assert!(
        said.starts_with("topic mocked: the brokers refused user alice a frame"),
        "{said}"
    );
    assert!(
        said.contains("a permission (Broker: Topic authorization failed); "),
        "{said}"
    );
    assert!(
        said.ends_with("Kafka's ACLs must allow WRITE on the topic"),
        "{said}"
    );
    assert!(!said.contains('\n'));
}
