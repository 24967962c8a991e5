//! The writer thread: connects, drains the queue into data frames, reconnects
//! with back-off. While no collector is connected, queued events are discarded
//! (and counted) so that a collector coming back gets current traffic.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::fstrm::{self, FstrmError, Stream};
use super::{Encoder, Event, Target};

/// Reads and writes on the collector's socket give up after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// First and longest wait before reconnecting.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// Events written in one go at most.
const BATCH: usize = 256;

pub(super) struct Writer {
    pub target: Target,
    pub encoder: Encoder,
    pub dropped: metrics::Counter,
    pub stop: Arc<AtomicBool>,
}

impl Writer {
    pub fn run(self, rx: Receiver<Event>) {
        let mut backoff = BACKOFF.0;
        let mut said_down = false;
        while !self.stop.load(Ordering::Acquire) {
            match fstrm::connect(&self.target, IO_TIMEOUT) {
                Ok(mut stream) => {
                    tracing::info!(target = ?self.target, "dnstap collector connected");
                    said_down = false;
                    backoff = BACKOFF.0;
                    match self.pump(&mut stream, &rx) {
                        Ok(()) => {
                            if let Err(e) = fstrm::finish(&mut stream) {
                                tracing::warn!(error = %e, "dnstap collector did not finish");
                            }
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(target = ?self.target, error = %e, "dnstap collector lost")
                        }
                    }
                }
                Err(e) if !said_down => {
                    tracing::warn!(target = ?self.target, error = %e, "dnstap collector unreachable; retrying");
                    said_down = true;
                }
                Err(_) => {}
            }
            self.discard_for(&rx, backoff);
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// Writes queued events until the writer is told to stop (`Ok`) or the
    /// collector fails.
    fn pump(&self, stream: &mut Stream, rx: &Receiver<Event>) -> Result<(), FstrmError> {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        loop {
            let first = match crate::channel::poll_recv(rx, Duration::from_millis(50)) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) if self.stop.load(Ordering::Acquire) => {
                    return Ok(());
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            out.clear();
            self.encoder.frames(&first, &mut out, &mut scratch);
            let mut n = 1;
            while n < BATCH {
                let Ok(ev) = rx.try_recv() else { break };
                self.encoder.frames(&ev, &mut out, &mut scratch);
                n += 1;
            }
            if let Err(e) = stream.write_all(&out).and_then(|()| stream.flush()) {
                self.dropped.increment(n as u64);
                return Err(e.into());
            }
        }
    }

    /// Waits `wait` (or until told to stop), discarding what arrives meanwhile.
    fn discard_for(&self, rx: &Receiver<Event>, wait: Duration) {
        let until = Instant::now() + wait;
        loop {
            let n = rx.try_iter().count();
            self.dropped.increment(n as u64);
            let now = Instant::now();
            if now >= until || self.stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
    }
}
