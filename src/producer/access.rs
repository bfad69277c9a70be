//! What the cluster lets this client do with its topic, asked at start.
//!
//! A client that may see a topic (DESCRIBE) but not write it learns so only
//! from the brokers' answers to its frames, every one refused. Kafka says
//! it before any frame is sent: a metadata request may ask for the
//! operations the client is authorized on each topic (KIP-430), which
//! librdkafka's DescribeTopics asks when told to include them
//! (`rd_kafka_AdminOptions_set_include_authorized_operations`). A broker
//! that does not say (no authorizer answers "everything"; one too old
//! answers nothing) leaves the question to the frames.

use std::ffi::CString;
use std::time::Duration;

use rdkafka::bindings as rd;

/// Whether the cluster says the client `rk` may write `topic`: `Some(true)`
/// or `Some(false)` as its metadata's authorized operations say, `None` if
/// it does not say within `timeout` (or cannot be asked).
pub(super) fn may_write(rk: *mut rd::rd_kafka_t, topic: &str, timeout: Duration) -> Option<bool> {
    let name = CString::new(topic).ok()?;
    let millis = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: `rk` is a live client for the whole call; every object made
    // here is destroyed here, once, after its last use; the topic
    // collection copies the names it is given, and the result's strings
    // and arrays are only read before the event is destroyed.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        if queue.is_null() {
            return None;
        }
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        );
        let mut asked = !options.is_null();
        if asked {
            let error = rd::rd_kafka_AdminOptions_set_include_authorized_operations(options, 1);
            if !error.is_null() {
                rd::rd_kafka_error_destroy(error);
                asked = false;
            }
            let mut errstr = [0 as std::ffi::c_char; 256];
            rd::rd_kafka_AdminOptions_set_request_timeout(
                options,
                millis,
                errstr.as_mut_ptr(),
                errstr.len(),
            );
        }
        let mut answer = None;
        if asked {
            let mut names = [name.as_ptr()];
            let topics = rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1);
            rd::rd_kafka_DescribeTopics(rk, topics, options, queue);
            rd::rd_kafka_TopicCollection_destroy(topics);
            let event = rd::rd_kafka_queue_poll(queue, millis);
            if !event.is_null() {
                answer = read_answer(event, topic);
                rd::rd_kafka_event_destroy(event);
            }
        }
        if !options.is_null() {
            rd::rd_kafka_AdminOptions_destroy(options);
        }
        // A result still on its way is dropped with the queue.
        rd::rd_kafka_queue_destroy(queue);
        answer
    }
}

/// What a DescribeTopics result `event` says of `topic`'s WRITE.
///
/// # Safety
///
/// `event` is a live event the caller owns.
unsafe fn read_answer(event: *mut rd::rd_kafka_event_t, topic: &str) -> Option<bool> {
    use rd::rd_kafka_AclOperation_t::*;
    // SAFETY: as the caller promises; the arrays read are the event's, of
    // the lengths librdkafka gives.
    unsafe {
        if rd::rd_kafka_event_error(event) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        let result = rd::rd_kafka_event_DescribeTopics_result(event);
        if result.is_null() {
            return None;
        }
        let mut count = 0usize;
        let described = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
        if described.is_null() {
            return None;
        }
        for &description in std::slice::from_raw_parts(described, count) {
            let name = std::ffi::CStr::from_ptr(rd::rd_kafka_TopicDescription_name(description));
            if name.to_bytes() != topic.as_bytes()
                || !rd::rd_kafka_TopicDescription_error(description).is_null()
            {
                continue;
            }
            let mut n = 0usize;
            let operations =
                rd::rd_kafka_TopicDescription_authorized_operations(description, &mut n);
            // No array: the broker did not say.
            if operations.is_null() {
                return None;
            }
            let operations = std::slice::from_raw_parts(operations, n);
            return Some(operations.iter().any(|op| {
                matches!(
                    op,
                    RD_KAFKA_ACL_OPERATION_WRITE | RD_KAFKA_ACL_OPERATION_ALL
                )
            }));
        }
        None
    }
}
