//! Releases the messages the indexer has read, on a thread of its own.
//!
//! Every message librdkafka hands over was allocated by its fetcher thread,
//! and releasing it frees that memory under the fetcher's malloc arena lock
//! (glibc). Released on the reading thread, each release that met the
//! fetcher allocating the next messages put the reader to sleep until the
//! lock was free, and reading took about a third longer than with an
//! allocator without that lock (jemalloc, preloaded, measured side by side;
//! docs/performance.md). Here the reader hands each batch over and goes on;
//! only this thread waits for the lock.

use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use rdkafka::bindings as rd;

/// Batches in flight: beyond this the reader waits for the releaser, so
/// at most this many batches of messages are held.
const DEPTH: usize = 4;

/// Messages owned by the indexer until released.
pub(super) struct Batch(pub(super) Vec<*mut rd::rd_kafka_message_t>);

// SAFETY: a librdkafka message may be destroyed on any thread.
unsafe impl Send for Batch {}

pub(super) struct Releaser {
    full: Option<SyncSender<Batch>>,
    empty: Receiver<Batch>,
    thread: Option<JoinHandle<()>>,
    capacity: usize,
}

impl Releaser {
    /// Starts the releasing thread, with batches of room for `capacity`.
    pub(super) fn start(capacity: usize) -> std::io::Result<Releaser> {
        let (full, to_release) = sync_channel::<Batch>(DEPTH);
        let (emptied, empty) = channel::<Batch>();
        for _ in 0..DEPTH {
            let _ = emptied.send(Batch(Vec::with_capacity(capacity)));
        }
        let thread = std::thread::Builder::new()
            .name("fastcapa-release".into())
            .spawn(move || {
                for mut batch in to_release {
                    destroy(&mut batch);
                    if emptied.send(batch).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Releaser {
            full: Some(full),
            empty,
            thread: Some(thread),
            capacity,
        })
    }

    /// An empty batch to fill (waits while every batch is being released).
    pub(super) fn empty(&self) -> Batch {
        self.empty
            .recv()
            .unwrap_or_else(|_| Batch(Vec::with_capacity(self.capacity)))
    }

    /// Hands `batch` over to be released.
    pub(super) fn release(&self, mut batch: Batch) {
        if let Some(Err(failed)) = self.full.as_ref().map(|f| f.send(batch)) {
            // The thread is gone: released here instead.
            batch = failed.0;
            destroy(&mut batch);
        }
    }

    /// Releases everything handed over and stops the thread.
    pub(super) fn stop(&mut self) {
        self.full = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Releaser {
    fn drop(&mut self) {
        self.stop();
    }
}

fn destroy(batch: &mut Batch) {
    for message in batch.0.drain(..) {
        // SAFETY: a message the consumer handed over, destroyed once.
        unsafe { rd::rd_kafka_message_destroy(message) };
    }
}
