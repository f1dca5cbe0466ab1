//! The event stream from the node task to the application, handed over in batches.
//!
//! The node task collects every event one round of inputs produces and hands them over as one
//! `Vec` (one lock and at most one wake-up per round, not per event). The number of events
//! handed over and not yet taken is bounded by [`Options::event_capacity`](crate::Options);
//! past it the node task keeps them (and stops reading the network) until the application
//! catches up.
//!
//! Built on `std` alone (a mutex and two wakers), so any executor can wait on either end.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;

use crate::NodeEvent;

/// The application's end of a node's events (see
/// [`NodeHandle::take_events`](crate::NodeHandle::take_events)); also a
/// [`Stream`] of them.
#[derive(Debug)]
pub struct Events {
    ready: std::vec::IntoIter<NodeEvent>,
    shared: Arc<Shared>,
}

/// The node task's end of the event stream.
#[derive(Debug)]
pub struct EventSender {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    capacity: usize,
}

#[derive(Debug)]
struct State {
    batches: VecDeque<Vec<NodeEvent>>,
    /// Events handed over and not yet taken.
    queued: usize,
    sender_gone: bool,
    receiver_gone: bool,
    /// The application, waiting for events.
    receiver: Option<Waker>,
    /// The node task, waiting for room.
    room: Option<Waker>,
}

/// What became of a batch offered with [`EventSender::offer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Handed over.
    Sent,
    /// The application has no room: the batch is kept.
    Full,
    /// The application dropped its end.
    Closed,
}

/// A bounded, batched event channel holding up to `capacity` events in flight.
pub(crate) fn channel(capacity: usize) -> (EventSender, Events) {
    let state = State {
        batches: VecDeque::new(),
        queued: 0,
        sender_gone: false,
        receiver_gone: false,
        receiver: None,
        room: None,
    };
    let shared = Arc::new(Shared { state: Mutex::new(state), capacity: capacity.max(1) });
    (EventSender { shared: shared.clone() }, Events { ready: Vec::new().into_iter(), shared })
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent: every update is one step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EventSender {
    /// True while fewer than `capacity` events are in flight.
    pub fn has_room(&self) -> bool {
        self.shared.lock().queued < self.shared.capacity
    }

    /// Hands over a batch (it may overshoot the capacity by its own length). `Err` gives the
    /// batch back once the application dropped its end.
    pub fn send(&self, batch: Vec<NodeEvent>) -> Result<(), Vec<NodeEvent>> {
        let waker = {
            let mut s = self.shared.lock();
            if s.receiver_gone {
                return Err(batch);
            }
            s.queued += batch.len();
            s.batches.push_back(batch);
            s.receiver.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Hands over `batch` (leaving it empty) if the application has room for events: one lock
    /// where [`has_room`](Self::has_room) and [`send`](Self::send) take two.
    pub(crate) fn offer(&self, batch: &mut Vec<NodeEvent>) -> Offered {
        let waker = {
            let mut s = self.shared.lock();
            if s.receiver_gone {
                return Offered::Closed;
            }
            if s.queued >= self.shared.capacity {
                return Offered::Full;
            }
            s.queued += batch.len();
            s.batches.push_back(std::mem::take(batch));
            s.receiver.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Offered::Sent
    }

    /// Ready when the application has made room (or dropped its end).
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.shared.lock();
        if s.queued < self.shared.capacity || s.receiver_gone {
            Poll::Ready(())
        } else {
            s.room = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// True once the application dropped its end.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().receiver_gone
    }
}

impl Drop for EventSender {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.shared.lock();
            s.sender_gone = true;
            s.receiver.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Events {
    /// The next event; `None` once the node has stopped and every event was read.
    pub async fn recv(&mut self) -> Option<NodeEvent> {
        loop {
            if let Some(ev) = self.ready.next() {
                return Some(ev);
            }
            let batch = poll_fn(|cx| self.poll_batch(cx)).await?;
            self.ready = batch.into_iter();
        }
    }

    /// Waits for at least one event, then appends to `out` every event already available,
    /// without waiting again. Returns how many were appended; 0 once the node has stopped and
    /// every event was read.
    ///
    /// This is the cheap way to read a busy node: one wake-up per batch, not per event.
    pub async fn recv_batch(&mut self, out: &mut Vec<NodeEvent>) -> usize {
        let start = out.len();
        out.extend(self.ready.by_ref());
        if out.len() == start {
            let Some(batch) = poll_fn(|cx| self.poll_batch(cx)).await else { return 0 };
            if out.is_empty() {
                *out = batch;
            } else {
                out.extend(batch);
            }
        }
        self.take_all(out);
        out.len() - start
    }

    /// An event if one is available now, without waiting.
    pub fn try_recv(&mut self) -> Option<NodeEvent> {
        loop {
            if let Some(ev) = self.ready.next() {
                return Some(ev);
            }
            let batch = self.take(|s| {
                let batch = s.batches.pop_front();
                let n = batch.as_ref().map_or(0, Vec::len);
                (batch, n)
            })?;
            self.ready = batch.into_iter();
        }
    }

    fn poll_batch(&self, cx: &mut Context<'_>) -> Poll<Option<Vec<NodeEvent>>> {
        let mut s = self.shared.lock();
        if let Some(batch) = s.batches.pop_front() {
            let room = self.took(&mut s, batch.len());
            drop(s);
            if let Some(w) = room {
                w.wake();
            }
            return Poll::Ready(Some(batch));
        }
        if s.sender_gone {
            return Poll::Ready(None);
        }
        s.receiver = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Appends every batch available now to `out`.
    fn take_all(&self, out: &mut Vec<NodeEvent>) {
        self.take(|s| {
            let mut n = 0;
            for batch in s.batches.drain(..) {
                n += batch.len();
                out.extend(batch);
            }
            ((), n)
        });
    }

    /// Takes from the queue with `f`, which says how many events it took; wakes the node task
    /// if that made room.
    fn take<T>(&self, f: impl FnOnce(&mut State) -> (T, usize)) -> T {
        let mut s = self.shared.lock();
        let (r, n) = f(&mut s);
        let room = self.took(&mut s, n);
        drop(s);
        if let Some(w) = room {
            w.wake();
        }
        r
    }

    /// Counts `n` events as taken; the node task's waker if it now has room.
    fn took(&self, s: &mut State, n: usize) -> Option<Waker> {
        s.queued = s.queued.saturating_sub(n);
        if s.queued < self.shared.capacity {
            s.room.take()
        } else {
            None
        }
    }
}

impl Stream for Events {
    type Item = NodeEvent;

    /// The next event; `None` once the node has stopped and every event was read.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<NodeEvent>> {
        loop {
            if let Some(ev) = self.ready.next() {
                return Poll::Ready(Some(ev));
            }
            match self.poll_batch(cx) {
                Poll::Ready(Some(batch)) => self.ready = batch.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.shared.lock();
            s.receiver_gone = true;
            s.batches.clear();
            s.queued = 0;
            s.room.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use wendy_proto::Event;

    use super::*;

    fn batch(n: usize) -> Vec<NodeEvent> {
        (0..n).map(|_| NodeEvent::Event(Event::Joined)).collect()
    }

    #[test]
    fn an_offer_is_taken_below_capacity_kept_at_it_and_refused_once_the_application_is_gone() {
        let (tx, mut rx) = channel(4);
        let mut b = batch(3);
        assert_eq!(tx.offer(&mut b), Offered::Sent);
        assert!(b.is_empty());
        // Below capacity a batch may overshoot it; at capacity it is kept.
        let mut b = batch(2);
        assert_eq!(tx.offer(&mut b), Offered::Sent);
        let mut b = batch(1);
        assert_eq!(tx.offer(&mut b), Offered::Full);
        assert_eq!(b.len(), 1);
        let mut got = 0;
        while rx.try_recv().is_some() {
            got += 1;
        }
        assert_eq!(got, 5);
        assert_eq!(tx.offer(&mut b), Offered::Sent);
        drop(rx);
        let mut b = batch(1);
        assert_eq!(tx.offer(&mut b), Offered::Closed);
        assert_eq!(b.len(), 1);
    }
}
