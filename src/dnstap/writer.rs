//! The writer thread: connects, drains the queue into data frames, reconnects
//! with back-off. While no collector is connected, queued events are discarded
//! (and counted) so that a collector coming back gets current traffic.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Target;
use super::encode::Encoder;
use super::fstrm::{self, FstrmError, Stream};
use super::queue::Drain;

/// Reads and writes on the collector's socket give up after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// First and longest wait before reconnecting.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// Events written in one go at most.
const BATCH: usize = 512;

pub(super) struct Writer {
    pub target: Target,
    pub encoder: Encoder,
    pub dropped: metrics::Counter,
    pub stop: Arc<AtomicBool>,
}

impl Writer {
    pub fn run(mut self, mut rx: Drain) {
        let mut backoff = BACKOFF.0;
        let mut said_down = false;
        while !self.stop.load(Ordering::Acquire) {
            match fstrm::connect(&self.target, IO_TIMEOUT) {
                Ok(mut stream) => {
                    tracing::info!(target = ?self.target, "dnstap collector connected");
                    said_down = false;
                    backoff = BACKOFF.0;
                    match self.pump(&mut stream, &mut rx) {
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
            self.discard_for(&mut rx, backoff);
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// Writes queued events, a batch per write, until the writer is told to
    /// stop (`Ok`) or the collector fails. The writer does not sleep on the
    /// queue but looks at it between short naps (see `crate::channel`): a
    /// sender never pays for waking it, and a nap's worth of events goes out
    /// in one write.
    fn pump(&mut self, stream: &mut Stream, rx: &mut Drain) -> Result<(), FstrmError> {
        let mut out = Vec::new();
        loop {
            // Read first: once the senders are gone, what they sent is queued.
            let gone = rx.closed();
            out.clear();
            let mut n = 0;
            while n < BATCH {
                let Some(ev) = rx.next() else { break };
                self.encoder.frames(&ev, &mut out);
                n += 1;
            }
            if n > 0 {
                if let Err(e) = stream.write_all(&out).and_then(|()| stream.flush()) {
                    self.dropped.increment(n as u64);
                    return Err(e.into());
                }
                continue;
            }
            // Told to stop: what was queued is written (the loop above ran dry).
            if gone || self.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            std::thread::sleep(crate::channel::NAP);
        }
    }

    /// Waits `wait` (or until told to stop), discarding what arrives meanwhile.
    fn discard_for(&self, rx: &mut Drain, wait: Duration) {
        let until = Instant::now() + wait;
        loop {
            while rx.next().is_some() {
                self.dropped.increment(1);
            }
            let now = Instant::now();
            if now >= until || self.stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
    }
}
