//! The event stream from the node task to the application, handed over in batches.
//!
//! The node task collects every event one round of inputs produces and hands them over as one
//! `Vec` (one channel operation and at most one wake-up per round, not per event). The number
//! of events handed over and not yet taken is bounded by [`Options::event_capacity`](crate::Options);
//! past it the node task keeps them (and stops reading the network) until the application
//! catches up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use smol::channel;

use crate::NodeEvent;

/// The application's end of a node's events. See [`NodeHandle::take_events`](crate::NodeHandle::take_events).
#[derive(Debug)]
pub struct Events {
    rx: channel::Receiver<Vec<NodeEvent>>,
    ready: std::vec::IntoIter<NodeEvent>,
    gate: Arc<Gate>,
}

/// What both ends share: the count of events in flight.
#[derive(Debug)]
struct Gate {
    /// Events handed over and not yet taken.
    queued: AtomicUsize,
    capacity: usize,
    /// Signalled when events are taken while the count was at or above capacity (a
    /// one-permit channel).
    room_tx: channel::Sender<()>,
    room_rx: channel::Receiver<()>,
}

/// The node task's end.
pub(crate) struct EventSender {
    tx: channel::Sender<Vec<NodeEvent>>,
    gate: Arc<Gate>,
}

/// A bounded, batched event channel holding up to `capacity` events in flight.
pub(crate) fn channel(capacity: usize) -> (EventSender, Events) {
    let (room_tx, room_rx) = channel::bounded(1);
    let gate = Arc::new(Gate { queued: AtomicUsize::new(0), capacity: capacity.max(1), room_tx, room_rx });
    let (tx, rx) = channel::unbounded();
    (EventSender { tx, gate: gate.clone() }, Events { rx, ready: Vec::new().into_iter(), gate })
}

impl EventSender {
    /// True while fewer than `capacity` events are in flight.
    pub(crate) fn has_room(&self) -> bool {
        self.gate.queued.load(Ordering::Acquire) < self.gate.capacity
    }

    /// Hands over a batch (it may overshoot the capacity by its own length). `Err` once the
    /// application dropped its end.
    pub(crate) fn send(&self, batch: Vec<NodeEvent>) -> Result<(), ()> {
        let n = batch.len();
        self.gate.queued.fetch_add(n, Ordering::AcqRel);
        self.tx.try_send(batch).map_err(|_| {
            self.gate.queued.fetch_sub(n, Ordering::AcqRel);
        })
    }

    /// Resolves when the application may have made room (check [`has_room`](Self::has_room) again).
    pub(crate) async fn room(&self) {
        let _ = self.gate.room_rx.recv().await;
    }

    /// True once the application dropped its end.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl Events {
    /// The next event; `None` once the node has stopped and every event was read.
    pub async fn recv(&mut self) -> Option<NodeEvent> {
        loop {
            if let Some(ev) = self.ready.next() {
                return Some(ev);
            }
            let batch = self.rx.recv().await.ok()?;
            self.took(batch.len());
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
            let Ok(batch) = self.rx.recv().await else { return 0 };
            self.took(batch.len());
            if out.is_empty() {
                *out = batch;
            } else {
                out.extend(batch);
            }
        }
        while let Ok(batch) = self.rx.try_recv() {
            self.took(batch.len());
            out.extend(batch);
        }
        out.len() - start
    }

    /// An event if one is available now, without waiting.
    pub fn try_recv(&mut self) -> Option<NodeEvent> {
        loop {
            if let Some(ev) = self.ready.next() {
                return Some(ev);
            }
            let batch = self.rx.try_recv().ok()?;
            self.took(batch.len());
            self.ready = batch.into_iter();
        }
    }

    fn took(&self, n: usize) {
        let before = self.gate.queued.fetch_sub(n, Ordering::AcqRel);
        if before >= self.gate.capacity {
            let _ = self.gate.room_tx.try_send(());
        }
    }
}
