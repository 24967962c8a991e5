//! The hand-off between the threads that see DNS traffic and the writer: at most
//! `slots` [`Event`]s exist; they travel from a free list to the writer and
//! back, each keeping its byte buffer. Recording an event thus moves a slot and
//! copies bytes into memory the slot already has: no allocation once the slots
//! exist, no lock (crossbeam's bounded array channels), never a wait. When
//! every slot is queued or being written, the event is dropped (the caller
//! counts it).

use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded};

use super::Event;

/// A buffer grown past this (a large TCP answer) is shrunk back to it when its
/// slot returns, so `slots` full-size answers are never kept.
const KEEP: usize = 4096;

/// The senders' side.
pub(super) struct Queue {
    free: Receiver<Event>,
    full: Sender<Event>,
    /// Slots made so far (at most `slots`).
    made: AtomicUsize,
    slots: usize,
}

/// The writer's side.
pub(super) struct Drain {
    full: Receiver<Event>,
    free: Sender<Event>,
}

/// A queue of at most `slots` events.
pub(super) fn queue(slots: usize) -> (Queue, Drain) {
    let (free_tx, free_rx) = bounded(slots);
    let (full_tx, full_rx) = bounded(slots);
    (
        Queue {
            free: free_rx,
            full: full_tx,
            made: AtomicUsize::new(0),
            slots,
        },
        Drain {
            full: full_rx,
            free: free_tx,
        },
    )
}

impl Queue {
    /// A free slot, or a new one while fewer than `slots` exist; `None` when
    /// every slot is taken (the writer is behind or gone).
    pub fn slot(&self) -> Option<Event> {
        if let Ok(ev) = self.free.try_recv() {
            return Some(ev);
        }
        self.made
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.slots).then_some(n + 1)
            })
            .ok()
            .map(|_| Event::default())
    }

    /// Hands a filled slot to the writer; `false` when the writer is gone.
    pub fn send(&self, ev: Event) -> bool {
        // Never full: there are no more slots than room.
        self.full.try_send(ev).is_ok()
    }
}

impl Drain {
    /// The next filled slot, if one is waiting; `Err(())` once no sender is left.
    pub fn try_recv(&self) -> Result<Option<Event>, ()> {
        match self.full.try_recv() {
            Ok(ev) => Ok(Some(ev)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(()),
        }
    }

    /// Gives a written (or discarded) slot back to the senders.
    pub fn recycle(&self, mut ev: Event) {
        ev.buf.clear();
        ev.buf.shrink_to(KEEP);
        // Never full either: a slot comes back only once.
        let _ = self.free.try_send(ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_come_back_with_their_buffer() {
        let (q, d) = queue(2);
        let mut a = q.slot().unwrap();
        a.fill([b"", b"", b"", b"query", b"response"]);
        let b = q.slot().unwrap();
        assert!(q.slot().is_none(), "a third slot while two are out");
        assert!(q.send(a) && q.send(b));
        assert!(q.slot().is_none(), "queued slots are not free");
        let a = d.try_recv().unwrap().unwrap();
        assert_eq!(a.part(super::super::Part::Response), b"response");
        let cap = a.buf.capacity();
        d.recycle(a);
        let again = q.slot().expect("the recycled slot");
        assert!(again.buf.is_empty());
        assert_eq!(again.buf.capacity(), cap, "the buffer is kept");
        // A big buffer is shrunk on its way back.
        let mut big = d.try_recv().unwrap().unwrap();
        big.buf.reserve(100_000);
        d.recycle(big);
        assert!(q.slot().unwrap().buf.capacity() < 100_000);
        assert!(d.try_recv().unwrap().is_none());
        drop(q);
        assert!(d.try_recv().is_err(), "senders gone");
    }
}
