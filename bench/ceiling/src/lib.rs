//! What the benchmark's librdkafka baselines (the produce ceiling and the
//! read floor) share.

use std::ffi::{c_char, CStr, CString};

use rdkafka_sys::bindings as rd;

pub fn cstring(text: &str) -> CString {
    CString::new(text).expect("no NUL")
}

/// CPU seconds (user + system) this process has used so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// This process's peak resident memory in MB (`VmHWM`), 0 if unknown.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A librdkafka configuration holding `settings`, in order.
///
/// # Safety
///
/// Plain librdkafka C API use; the caller owns the configuration until it
/// hands it to [`new_client`].
pub unsafe fn config(settings: &[(&str, &str)]) -> *mut rd::rd_kafka_conf_t {
    let mut error = [0 as c_char; 512];
    // SAFETY: every pointer passed is valid for the call.
    unsafe {
        let conf = rd::rd_kafka_conf_new();
        for (key, value) in settings {
            let (k, v) = (cstring(key), cstring(value));
            let result =
                rd::rd_kafka_conf_set(conf, k.as_ptr(), v.as_ptr(), error.as_mut_ptr(), 512);
            if result != rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK {
                panic!("{key}={value}: {:?}", CStr::from_ptr(error.as_ptr()));
            }
        }
        conf
    }
}

/// A client of `kind` made of `conf`, a handle on `topic` and the topic's
/// partition count (its metadata read, so its leaders are known before a
/// clock starts).
///
/// # Safety
///
/// `conf` comes from [`config`] and is not used again.
pub unsafe fn client(
    kind: rd::rd_kafka_type_t,
    conf: *mut rd::rd_kafka_conf_t,
    topic: &str,
) -> (*mut rd::rd_kafka_t, *mut rd::rd_kafka_topic_t, i32) {
    let mut error = [0 as c_char; 512];
    // SAFETY: every pointer passed is valid for the call; librdkafka owns
    // `conf` once the client is made.
    unsafe {
        let rk = rd::rd_kafka_new(kind, conf, error.as_mut_ptr(), 512);
        assert!(!rk.is_null(), "{:?}", CStr::from_ptr(error.as_ptr()));
        let name = cstring(topic);
        let rkt = rd::rd_kafka_topic_new(rk, name.as_ptr(), std::ptr::null_mut());
        let mut metadata: *const rd::rd_kafka_metadata = std::ptr::null();
        let err = rd::rd_kafka_metadata(rk, 0, rkt, &mut metadata, 10_000);
        assert_eq!(
            err,
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
            "metadata"
        );
        let partitions = (*(*metadata).topics).partition_cnt;
        rd::rd_kafka_metadata_destroy(metadata);
        (rk, rkt, partitions)
    }
}
