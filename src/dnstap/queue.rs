//! The hand-off between the threads that see DNS traffic and the writer: a ring
//! of `slots` [`Event`]s that stay where they are. A sender claims the next free
//! slot (one compare-and-swap), fills it in place — copying bytes into the
//! buffer the slot keeps — and publishes it (one store); the writer encodes
//! the slot where it lies and frees it (one store). No allocation once the
//! buffers have grown, no lock, no event moved, never a wait: when every slot
//! is queued or being written, the event is dropped (the caller counts it).
//!
//! This is Dmitry Vyukov's bounded queue, each slot's stamp saying whose turn it
//! is: `n` when it is free for the `n`th claim, `n + 1` once that claim is
//! filled, `n + slots` once the writer is done with it. A sender interrupted
//! between its claim and its publication holds up the slots behind it until
//! it publishes; meanwhile the ring fills and drops, as with a slow writer.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::Event;

/// A buffer grown past this (a large TCP answer) is shrunk back to it when its
/// slot is freed, so `slots` full-size answers are never kept.
const KEEP: usize = 4096;

struct Slot {
    stamp: AtomicUsize,
    event: UnsafeCell<Event>,
}

struct Ring {
    slots: Box<[Slot]>,
    /// The next claim's number.
    tail: AtomicUsize,
    /// The senders' side is gone.
    closed: AtomicBool,
}

// SAFETY: a slot's event is reached only through a `Claim` or a `Taken`, and
// the stamp protocol gives each slot to one of them at a time: a `Claim` of
// number `n` exists only after its compare-and-swap won `n` while the stamp
// said `n` (the writer's release of the slot happened before), a `Taken` only
// after the stamp said `n + 1` (the claim's writes happened before), and
// each hands the slot on with a release store.
unsafe impl Sync for Ring {}

/// The senders' side.
pub(super) struct Queue {
    ring: Arc<Ring>,
}

/// The writer's side (one writer).
pub(super) struct Drain {
    ring: Arc<Ring>,
    /// The next slot number to write.
    head: usize,
}

/// A queue of `slots` events, at least two: with one, a filled slot's stamp
/// (`n + 1`) would read as free for the next claim.
pub(super) fn queue(slots: usize) -> (Queue, Drain) {
    let slots = (0..slots.max(2))
        .map(|i| Slot {
            stamp: AtomicUsize::new(i),
            event: UnsafeCell::new(Event::default()),
        })
        .collect();
    let ring = Arc::new(Ring {
        slots,
        tail: AtomicUsize::new(0),
        closed: AtomicBool::new(false),
    });
    (Queue { ring: ring.clone() }, Drain { ring, head: 0 })
}

impl Queue {
    /// The next free slot to fill, published to the writer when dropped; `None`
    /// when every slot is taken (the writer is behind or gone).
    pub fn slot(&self) -> Option<Claim<'_>> {
        let ring = &*self.ring;
        let mut tail = ring.tail.load(Ordering::Relaxed);
        loop {
            let slot = &ring.slots[tail % ring.slots.len()];
            let stamp = slot.stamp.load(Ordering::Acquire);
            // Wrapping difference: 0 free for this claim, negative still held
            // from the lap before (full), positive taken by another sender.
            let ahead = stamp.wrapping_sub(tail) as isize;
            if ahead == 0 {
                match ring.tail.compare_exchange_weak(
                    tail,
                    tail.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(Claim { slot, number: tail }),
                    Err(now) => tail = now,
                }
            } else if ahead < 0 {
                return None;
            } else {
                tail = ring.tail.load(Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.ring.closed.store(true, Ordering::Release);
    }
}

/// A claimed slot: its event, to fill; handed to the writer when dropped.
pub(super) struct Claim<'a> {
    slot: &'a Slot,
    number: usize,
}

impl Deref for Claim<'_> {
    type Target = Event;

    fn deref(&self) -> &Event {
        // SAFETY: the slot is this claim's alone (see `Ring`).
        unsafe { &*self.slot.event.get() }
    }
}

impl DerefMut for Claim<'_> {
    fn deref_mut(&mut self) -> &mut Event {
        // SAFETY: the slot is this claim's alone (see `Ring`).
        unsafe { &mut *self.slot.event.get() }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.slot
            .stamp
            .store(self.number.wrapping_add(1), Ordering::Release);
    }
}

impl Drain {
    /// The next filled slot, if it is ready; it is freed when dropped.
    pub fn next(&mut self) -> Option<Taken<'_>> {
        let ring = &*self.ring;
        let number = self.head;
        let slot = &ring.slots[number % ring.slots.len()];
        if slot.stamp.load(Ordering::Acquire) != number.wrapping_add(1) {
            return None;
        }
        self.head = number.wrapping_add(1);
        Some(Taken {
            slot,
            next: number.wrapping_add(ring.slots.len()),
        })
    }

    /// Whether the senders' side is gone: once this says so, [`Drain::next`]
    /// sees every event that was sent.
    pub fn closed(&self) -> bool {
        self.ring.closed.load(Ordering::Acquire)
    }
}

/// A filled slot the writer holds: its event, to write; freed when dropped.
pub(super) struct Taken<'a> {
    slot: &'a Slot,
    /// The claim number the slot is free for next.
    next: usize,
}

impl Deref for Taken<'_> {
    type Target = Event;

    fn deref(&self) -> &Event {
        // SAFETY: the slot is the writer's until dropped (see `Ring`).
        unsafe { &*self.slot.event.get() }
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        // SAFETY: as above; the slot is handed back only by the store below.
        let ev = unsafe { &mut *self.slot.event.get() };
        // The texts are let go here, off the DNS path, which only clones them.
        ev.texts = None;
        if ev.wire.capacity() > KEEP {
            ev.wire.clear();
            ev.wire.shrink_to(KEEP);
        }
        self.slot.stamp.store(self.next, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_come_back_with_their_buffer() {
        let (q, mut d) = queue(2);
        let mut a = q.slot().unwrap();
        a.fill(b"query", b"response");
        let b = q.slot().unwrap();
        assert!(q.slot().is_none(), "a third slot while two are out");
        assert!(d.next().is_none(), "a claim not yet filled is not sent");
        drop(a);
        drop(b);
        assert!(q.slot().is_none(), "queued slots are not free");
        let a = d.next().unwrap();
        assert_eq!(a.response(), b"response");
        let cap = a.wire.capacity();
        drop(a);
        let mut again = q.slot().expect("the freed slot");
        assert_eq!(again.wire.capacity(), cap, "the buffer is kept");
        again.fill(b"", b"second lap");
        drop(again);
        // A big buffer is shrunk on its way back.
        {
            let big = d.next().unwrap();
            // SAFETY in the test's terms: the writer holds the slot.
            unsafe { (*big.slot.event.get()).wire.reserve(100_000) };
        }
        assert!(q.slot().unwrap().wire.capacity() < 100_000);
        assert_eq!(d.next().unwrap().response(), b"second lap");
        assert!(!d.closed());
        drop(q);
        assert!(d.next().is_some(), "what was sent is still there");
        assert!(d.next().is_none() && d.closed(), "senders gone");
    }

    /// The query log's strings an event shares are let go once it is
    /// written, not kept by the slot until its next lap.
    #[test]
    fn a_written_event_lets_go_of_its_texts() {
        let (q, mut d) = queue(2);
        let name: Arc<str> = Arc::from("ads.example");
        q.slot().unwrap().texts = Some(super::super::Texts {
            name: name.clone(),
            list: Arc::from("mine"),
            rule: Arc::from("line 9"),
        });
        assert_eq!(Arc::strong_count(&name), 2);
        let ev = d.next().unwrap();
        assert_eq!(ev.name(), "ads.example");
        drop(ev);
        assert_eq!(Arc::strong_count(&name), 1);
    }

    #[test]
    fn a_queued_event_is_never_handed_out_again_before_it_is_written() {
        // One slot asked for: the ring still tells a filled slot from a free one.
        let (q, mut d) = queue(1);
        q.slot().unwrap().fill(b"first", b"");
        let mut claims = 0;
        while let Some(mut later) = q.slot() {
            later.fill(b"later", b"");
            claims += 1;
            assert!(claims < 10, "the ring never fills");
        }
        assert_eq!(d.next().unwrap().query(), b"first");
    }

    #[test]
    fn many_senders_lose_nothing_that_was_queued() {
        const SENDERS: u64 = 4;
        const EACH: u64 = 20_000;
        let (q, mut d) = queue(64);
        let q = Arc::new(q);
        let dropped = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..SENDERS)
            .map(|t| {
                let (q, dropped) = (q.clone(), dropped.clone());
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        match q.slot() {
                            Some(mut ev) => {
                                let v = t * EACH + i;
                                ev.query_us = v;
                                ev.fill(&v.to_le_bytes(), b"");
                            }
                            None => {
                                dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        let mut seen = vec![false; (SENDERS * EACH) as usize];
        let mut got = 0;
        let mut drain = |d: &mut Drain| {
            while let Some(ev) = d.next() {
                // Each event arrives whole: its fixed field matches its bytes.
                let v = u64::from_le_bytes(ev.query().try_into().unwrap());
                assert_eq!(v, ev.query_us);
                assert!(!seen[v as usize], "event {v} twice");
                seen[v as usize] = true;
                got += 1;
            }
        };
        while !threads.iter().all(|t| t.is_finished()) {
            drain(&mut d);
            std::thread::yield_now();
        }
        for t in threads {
            t.join().unwrap();
        }
        drain(&mut d);
        let dropped = dropped.load(Ordering::Relaxed) as u64;
        assert_eq!(
            got + dropped,
            SENDERS * EACH,
            "every event written or counted"
        );
        assert!(got > 0);
    }
}
