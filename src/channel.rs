//! Receiving from a bounded channel that the DNS path feeds, without making the
//! DNS path pay for the wake-up.
//!
//! A receiver blocked inside `std::sync::mpsc` makes every `try_send` wake it: a
//! futex call and, on a busy core, a context switch per query. Measured on one
//! pinned core with the query log on, that was most of the log's cost (blocked
//! names: 80k → 135k queries/s per core when the log thread polled instead).
//! Background threads therefore drain their queue, then nap briefly: senders never
//! see a waiting receiver, and a burst is taken in one go.
//!
//! The same concern decides who gets a shared core first: background threads run
//! at a lower priority ([`spawn_background`]) and threads that answer queries ask
//! for a short time slice ([`latency_sensitive`]).

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The nice value of background threads (see [`spawn_background`]).
const BACKGROUND_NICE: i32 = 5;

/// Starts a background thread (query log, egress guard, metrics upkeep) at a
/// lower scheduling priority than the DNS workers: when a query arrives while
/// such a thread works through a batch on the same core, the worker gets the
/// core at once (measured on one pinned core at 10k queries/s: p99 0.21 ms
/// with the log threads at the same priority, 0.07 ms without the log). Nice 5
/// still leaves them about a quarter of a saturated core, more than the query
/// log needs to keep up.
pub fn spawn_background<F, T>(name: &str, f: F) -> std::io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            #[cfg(target_os = "linux")]
            // SAFETY: setpriority on this thread's own id; integer arguments only.
            unsafe {
                libc::setpriority(
                    libc::PRIO_PROCESS,
                    libc::gettid() as libc::id_t,
                    BACKGROUND_NICE,
                );
            }
            f()
        })
}

/// Asks the kernel for a short time slice (EEVDF's custom slice, Linux 6.12+)
/// for the calling thread, which answers queries: when a query arrives while a
/// background thread works on the same core, the thread with the shorter slice
/// has the earlier deadline and preempts it at once instead of waiting for the
/// background thread's slice to run out (measured on one pinned core at 10k
/// blocked queries/s with the log on: p99 0.14 → 0.08–0.12 ms). Older kernels
/// accept and ignore the request; policy and nice value stay as they were. A
/// refusal (a seccomp filter) is logged and changes nothing else.
pub fn latency_sensitive() {
    if let Err(e) = sched_attr::set_slice(LATENCY_SLICE) {
        tracing::debug!(error = %e, "short scheduler slice refused");
    }
}

/// The slice [`latency_sensitive`] asks for (the kernel's minimum is 0.1 ms).
const LATENCY_SLICE: Duration = Duration::from_micros(100);

#[cfg(target_os = "linux")]
mod sched_attr {
    use std::time::Duration;

    /// `struct sched_attr`, first version (48 bytes), from `linux/sched/types.h`.
    #[repr(C)]
    #[derive(Default)]
    pub(super) struct SchedAttr {
        pub size: u32,
        pub policy: u32,
        pub flags: u64,
        pub nice: i32,
        pub priority: u32,
        pub runtime: u64,
        pub deadline: u64,
        pub period: u64,
    }

    /// This thread's scheduling attributes.
    pub(super) fn get() -> std::io::Result<SchedAttr> {
        let mut attr = SchedAttr::default();
        let size = std::mem::size_of::<SchedAttr>() as u32;
        // SAFETY: the kernel writes at most `size` bytes into `attr`, which is that big.
        let r = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut SchedAttr,
                size,
                0,
            )
        };
        if r == 0 {
            Ok(attr)
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Sets this thread's requested slice, keeping its policy and nice value.
    pub(super) fn set_slice(slice: Duration) -> std::io::Result<()> {
        let mut attr = get()?;
        if attr.policy != libc::SCHED_OTHER as u32 {
            return Ok(()); // not a fair-class thread: nothing to ask for
        }
        attr.size = std::mem::size_of::<SchedAttr>() as u32;
        attr.flags = 0;
        attr.runtime = slice.as_nanos() as u64;
        // SAFETY: a fully initialised attribute of the size it states, for this thread.
        let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sched_attr {
    pub(super) fn set_slice(_: std::time::Duration) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` on a background-priority thread and waits for it: for work that
/// starts threads of its own which should inherit the lower priority (sled's
/// I/O pool and log flusher, started when a database opens).
pub fn in_background<F, T>(name: &str, f: F) -> std::io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn_background(name, f)?
        .join()
        .map_err(|_| std::io::Error::other(format!("{name} thread panicked")))
}

/// Longest nap between polls of an empty queue (bounds the added latency).
pub const NAP: Duration = Duration::from_millis(5);

/// The next message, waiting at most `wait` (polling with naps of at most [`NAP`]).
pub fn poll_recv<T>(rx: &Receiver<T>, wait: Duration) -> Result<T, RecvTimeoutError> {
    let until = Instant::now() + wait;
    loop {
        match rx.try_recv() {
            Ok(m) => return Ok(m),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= until {
                    return Err(RecvTimeoutError::Timeout);
                }
                std::thread::sleep(NAP.min(until - now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_times_out_and_sees_disconnects() {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        tx.send(7).unwrap();
        assert_eq!(poll_recv(&rx, Duration::from_millis(50)), Ok(7));
        let t = Instant::now();
        assert_eq!(
            poll_recv(&rx, Duration::from_millis(20)),
            Err(RecvTimeoutError::Timeout)
        );
        assert!(t.elapsed() >= Duration::from_millis(20));
        let sender = std::thread::spawn(move || tx.send(9).unwrap());
        assert_eq!(poll_recv(&rx, Duration::from_secs(5)), Ok(9));
        sender.join().unwrap();
        assert_eq!(
            poll_recv(&rx, Duration::from_secs(5)),
            Err(RecvTimeoutError::Disconnected)
        );
    }

    /// `(major, minor)` of the running kernel.
    fn kernel_version() -> (u32, u32) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next().unwrap().parse().unwrap();
        let minor = parts.next().unwrap().parse().unwrap();
        (major, minor)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_latency_sensitive_thread_gets_a_short_slice_and_keeps_its_nice_value() {
        let (before, after) = std::thread::spawn(|| {
            // SAFETY: setpriority on this thread's own id; integer arguments only.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 3) };
            let before = sched_attr::get().unwrap();
            latency_sensitive();
            (before, sched_attr::get().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(after.policy, libc::SCHED_OTHER as u32);
        assert_eq!((before.nice, after.nice), (3, 3), "nice value kept");
        if kernel_version() >= (6, 12) {
            // Custom slices (and reading them back) exist since Linux 6.12.
            assert_eq!(after.runtime, LATENCY_SLICE.as_nanos() as u64);
            assert_ne!(before.runtime, after.runtime);
        } else {
            eprintln!(
                "kernel {:?} predates custom slices: only the unchanged policy and nice value are checked",
                kernel_version()
            );
        }
    }
}
