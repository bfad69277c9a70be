//! What a worker has to tell the operator, handed to the control plane.
//!
//! Native threads never print: they record an event here, and Python (the
//! control plane) drains the log on its own tick and decides how to say it.
//! A reason that repeats (the same delivery error for every frame of an
//! outage) is queued the 1st, 10th, 100th, ... time only, with its running
//! count, so a flood of identical failures costs one lock per frame at most
//! and a handful of lines on stderr.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Most events held between two drains; older ones are counted as lost.
const CAPACITY: usize = 256;
/// Most distinct reasons whose counts are tracked; past that, a new reason
/// is queued every time it occurs up to `CAPACITY`.
const REASONS: usize = 1024;

/// The kind of an event: what Python keys its wording and severity on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// librdkafka reported a client-level error (broker down, auth failure...).
    Kafka,
    /// A message's delivery failed (counted at [kaf]).
    DeliveryFailed,
    /// The producer refused a message outright (counted at [tx]).
    Refused,
    /// The capture interface went down; the worker waits for it.
    InterfaceDown,
    /// The capture interface is back up.
    InterfaceUp,
}

impl EventKind {
    /// Whether repeats of one reason are queued only at powers of ten.
    /// A link going down and up is said every time.
    fn coalesced(self) -> bool {
        !matches!(self, EventKind::InterfaceDown | EventKind::InterfaceUp)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Kafka => "kafka",
            EventKind::DeliveryFailed => "delivery-failed",
            EventKind::Refused => "refused",
            EventKind::InterfaceDown => "interface-down",
            EventKind::InterfaceUp => "interface-up",
        }
    }
}

/// One thing to tell the operator: its kind, the reason in the words of
/// whoever gave it (librdkafka, the kernel), and how often that reason has
/// occurred so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub reason: String,
    pub count: u64,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Event>,
    counts: HashMap<(EventKind, String), u64>,
    lost: u64,
}

/// A worker's events, shared between the worker (writer) and the control
/// plane (reader). Cheap to record into; never blocks for long.
#[derive(Default)]
pub struct EventLog {
    inner: Mutex<Inner>,
}

impl EventLog {
    /// Records one occurrence of `reason`; queues it when its count is a
    /// power of ten (1, 10, 100, ...), or every time for link changes.
    pub fn record(&self, kind: EventKind, reason: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *inner;
        let key = (kind, reason.to_string());
        let count = match inner.counts.get_mut(&key) {
            Some(count) => {
                *count += 1;
                *count
            }
            None => {
                if inner.counts.len() < REASONS {
                    inner.counts.insert(key, 1);
                }
                1
            }
        };
        if !kind.coalesced() || count == 10u64.pow(count.ilog10()) {
            if inner.queue.len() == CAPACITY {
                inner.queue.pop_front();
                inner.lost += 1;
            }
            inner.queue.push_back(Event {
                kind,
                reason: reason.to_string(),
                count,
            });
        }
    }

    /// Takes every queued event, and how many were lost to a full log since
    /// the last drain.
    pub fn drain(&self) -> (Vec<Event>, u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let events = inner.queue.drain(..).collect();
        (events, std::mem::take(&mut inner.lost))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_queued_at_powers_of_ten() {
        let log = EventLog::default();
        for _ in 0..150 {
            log.record(EventKind::DeliveryFailed, "Broker: Message too large");
        }
        log.record(EventKind::Kafka, "all brokers down");
        let (events, lost) = log.drain();
        let counts: Vec<_> = events.iter().map(|e| (e.kind, e.count)).collect();
        assert_eq!(
            counts,
            [
                (EventKind::DeliveryFailed, 1),
                (EventKind::DeliveryFailed, 10),
                (EventKind::DeliveryFailed, 100),
                (EventKind::Kafka, 1),
            ]
        );
        assert_eq!(lost, 0);
        assert!(log.drain().0.is_empty());
    }

    #[test]
    fn a_full_log_counts_what_it_lost() {
        let log = EventLog::default();
        for i in 0..CAPACITY + 5 {
            log.record(EventKind::Kafka, &format!("reason {i}"));
        }
        let (events, lost) = log.drain();
        assert_eq!(events.len(), CAPACITY);
        assert_eq!(lost, 5);
        assert_eq!(events[0].reason, "reason 5");
    }
}
