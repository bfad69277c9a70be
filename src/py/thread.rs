//! A native worker thread as the Python layer holds it: started once, joined
//! without the GIL, and able to say it has ended without being polled.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use super::errors::FastcapaError;

/// A native thread and the means to wait for it without holding the GIL.
/// The thread raises `ended` as it exits (even by a panic), so a join wakes at
/// once rather than polling.
#[derive(Default)]
pub struct Thread {
    handle: Mutex<Option<JoinHandle<()>>>,
    ended: Arc<Ended>,
}

#[derive(Default)]
struct Ended {
    flag: Mutex<bool>,
    wake: Condvar,
}

/// Raises `Ended` when dropped: at the end of the thread's body, or while a
/// panic unwinds it.
struct EndSignal(Arc<Ended>);

impl Drop for EndSignal {
    fn drop(&mut self) {
        *self.0.flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.0.wake.notify_all();
    }
}

impl Thread {
    pub fn spawn(&self, name: String, body: impl FnOnce() + Send + 'static) -> PyResult<()> {
        let mut slot = self.handle.lock().unwrap();
        if slot.is_some() {
            return Err(FastcapaError::new_err(format!(
                "{name} was already started"
            )));
        }
        let signal = EndSignal(Arc::clone(&self.ended));
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let _signal = signal;
                body()
            })
            .map_err(|e| FastcapaError::new_err(format!("cannot start thread {name}: {e}")))?;
        *slot = Some(handle);
        Ok(())
    }

    /// Waits up to `timeout` seconds (None = forever) for the thread to end;
    /// true once it has ended (or never started).
    pub fn join(&self, py: Python<'_>, timeout: Option<f64>) -> bool {
        if self.handle.lock().unwrap().is_none() {
            return true;
        }
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        let done = py.detach(|| {
            let mut ended = self.ended.flag.lock().unwrap_or_else(|e| e.into_inner());
            while !*ended {
                match deadline {
                    None => {
                        ended = self
                            .ended
                            .wake
                            .wait(ended)
                            .unwrap_or_else(|e| e.into_inner())
                    }
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return false;
                        }
                        ended = (self.ended.wake.wait_timeout(ended, left))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
            }
            true
        });
        if done {
            if let Some(handle) = self.handle.lock().unwrap().take() {
                let _ = handle.join();
            }
        }
        done
    }
}
