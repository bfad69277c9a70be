//! The malloc tuning a high message rate through librdkafka needs.

/// librdkafka allocates every message it queues and frees it when its
/// delivery report is served: at a million messages a second the transmit
/// thread's malloc heap grows by megabytes and, with glibc's defaults, is
/// trimmed back each time the reports have freed its top, then faulted in
/// again page by page (an eighth of the transmit path's CPU, docs/benchmarks.md).
/// Freed memory up to these sizes stays with the heap instead; the producer
/// queue's bound (`--buffer`) still caps how much is ever in use.
const KEEP_FREED_BYTES: i32 = 64 << 20;
const HEAP_GROWTH_PAD_BYTES: i32 = 16 << 20;

pub fn keep_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes glibc's trimming thresholds; it is
        // safe to call at any time from any thread.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_FREED_BYTES);
            libc::mallopt(libc::M_TOP_PAD, HEAP_GROWTH_PAD_BYTES);
        }
    });
}
