//! A blocking facade over a driver, so that one body of scenarios runs against every driver.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wendy_driver::{Events, Metrics, NodeEvent};
use wendy_proto::{Config, Delivery, Event, ForwardHook, Node, NodeId, Stats, Target};

/// An application event, whichever driver reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    /// A message was delivered here.
    Deliver(Delivery),
    /// A message was forwarded to `next`.
    Forwarded {
        /// Its key.
        key: NodeId,
        /// The next hop.
        next: NodeId,
    },
    /// A protocol event.
    Event(Event),
}

/// Converts a driver event (both drivers share the type) to the facade's.
pub fn convert(ev: NodeEvent) -> Option<Ev> {
    Some(match ev {
        NodeEvent::Deliver(d) => Ev::Deliver(d),
        NodeEvent::Forwarded(f) => Ev::Forwarded { key: f.key, next: f.next },
        NodeEvent::Event(e) => Ev::Event(e),
        _ => return None,
    })
}

/// Passes a node's events on to the test, converted, until either side is gone. Runs as a task
/// of the driver's runtime (both drivers share the event stream's type).
pub async fn pump(mut rx: Events, tx: mpsc::Sender<Ev>) {
    while let Some(ev) = rx.recv().await {
        if !forward(ev, &tx) {
            return;
        }
    }
}

/// Like [`pump`], as a slow application: reads events in batches and awaits `pause()` after
/// each.
pub async fn pump_slowly<F: Future<Output = ()>>(mut rx: Events, tx: mpsc::Sender<Ev>, pause: impl Fn() -> F) {
    let mut batch = Vec::new();
    while rx.recv_batch(&mut batch).await > 0 {
        if !batch.drain(..).all(|ev| forward(ev, &tx)) {
            return;
        }
        pause().await;
    }
}

/// A relaying application that waits for room to send before it reads on: each delivery of
/// `purpose` is routed on towards `to`, the send tried again `pause()` later for as long as the
/// node refuses it with `Backpressure`, and no event is read meanwhile. Other events are passed
/// to the test. A send refused for another reason is passed on as a `QueueFull` error event.
pub async fn relay<F: Future<Output = ()>>(
    mut rx: Events,
    sender: wendy_driver::Sender,
    to: NodeId,
    purpose: u8,
    tx: mpsc::Sender<Ev>,
    pause: impl Fn() -> F,
) {
    let mut batch = Vec::new();
    while rx.recv_batch(&mut batch).await > 0 {
        for ev in batch.drain(..) {
            let NodeEvent::Deliver(d) = ev else {
                if !forward(ev, &tx) {
                    return;
                }
                continue;
            };
            if d.purpose != purpose {
                if !forward(NodeEvent::Deliver(d), &tx) {
                    return;
                }
                continue;
            }
            loop {
                match sender.send(to, purpose, d.payload.clone()).await {
                    Ok(()) => break,
                    Err(wendy_driver::Error::Command(wendy_proto::CommandError::Backpressure)) => pause().await,
                    Err(_) => {
                        let _ = tx.send(Ev::Event(Event::Error(wendy_proto::NodeError::QueueFull { peer: None })));
                        break;
                    }
                }
            }
        }
    }
}

/// Sends `ev` to the test if it is one of the facade's; false once the test is gone.
fn forward(ev: NodeEvent, tx: &mpsc::Sender<Ev>) -> bool {
    convert(ev).is_none_or(|ev| tx.send(ev).is_ok())
}

/// A node started by a driver, driven from a plain thread.
pub trait TestNode: Send {
    /// Its id.
    fn id(&self) -> NodeId;
    /// The address it listens on.
    fn addr(&self) -> SocketAddr;
    /// Joins through `bootstrap` and waits for the outcome (at most `timeout`).
    fn join(&self, bootstrap: SocketAddr, timeout: Duration) -> Result<(), String>;
    /// Routes a message towards `key`.
    fn send(&self, key: NodeId, purpose: u8, payload: Bytes) -> Result<(), String>;
    /// Routes many messages, `(key, purpose, payload)`, in one command.
    fn send_batch(&self, batch: Vec<(NodeId, u8, Bytes)>) -> Result<(), String>;
    /// Sends a message straight to a node.
    fn send_to(&self, target: Target, purpose: u8, payload: Bytes) -> Result<(), String>;
    /// Installs a forward hook.
    fn set_forward_hook(&self, hook: Box<dyn ForwardHook>);
    /// Runs `f` on the node inside its task; false if the node has stopped.
    fn inspect(&self, f: Box<dyn FnOnce(&Node) + Send>) -> bool;
    /// A snapshot of the node's metrics; `None` if it has stopped.
    fn metrics(&self) -> Option<Metrics>;
    /// Leaves gracefully and stops.
    fn leave(&self);
    /// Kills the node's task and sockets at once, as a crash would.
    fn crash(&self);
    /// Freezes the node (as `SIGSTOP` would): its tasks stop, its sockets stay open. Commands
    /// to a frozen node wait until it is thawed; [`crash`](Self::crash) still kills it.
    fn freeze(&self);
    /// Resumes a frozen node.
    fn thaw(&self);
    /// The events reported so far (and not yet taken).
    fn events(&self) -> &mpsc::Receiver<Ev>;
    /// Puts `value` under `key` through the node's store.
    fn put(&self, key: &[u8], value: Bytes) -> Result<(), String>;
    /// Gets the newest value of `key` through the node's store.
    fn get(&self, key: &[u8]) -> Result<Bytes, String>;
}

/// A driver: starts nodes.
pub trait Driver: Sync {
    /// Name shown in failures.
    const NAME: &'static str;
    /// Binds and starts a node.
    fn start(&self, config: Config) -> std::io::Result<Box<dyn TestNode>> {
        self.start_with_options(config, wendy_driver::Options::default())
    }
    /// Starts a node whose application is slow: at most `event_capacity` events in flight,
    /// read in batches with a pause of `pause` after each.
    fn start_slow_app(
        &self,
        config: Config,
        event_capacity: usize,
        pause: Duration,
    ) -> std::io::Result<Box<dyn TestNode>>;
    /// Starts a node with the driver's options `opts`.
    fn start_with_options(&self, config: Config, opts: wendy_driver::Options) -> std::io::Result<Box<dyn TestNode>>;
    /// Starts a node whose application relays what is delivered to it with `purpose` towards
    /// `to` ([`relay`]), through an event queue of `event_capacity`.
    fn start_relay(
        &self,
        config: Config,
        event_capacity: usize,
        to: NodeId,
        purpose: u8,
    ) -> std::io::Result<Box<dyn TestNode>>;
    /// Starts a node that runs the storage layer.
    fn start_with_store(
        &self,
        config: Config,
        store: wendy_driver::StoreOptions,
    ) -> std::io::Result<Box<dyn TestNode>> {
        let mut opts = wendy_driver::Options::default();
        opts.store = Some(store);
        self.start_with_options(config, opts)
    }
}

impl dyn TestNode {
    /// Runs `f` on the node and returns its answer, `None` if the node has stopped.
    pub fn query<T: Send + 'static>(&self, f: impl FnOnce(&Node) -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = mpsc::channel();
        if !self.inspect(Box::new(move |n| {
            let _ = tx.send(f(n));
        })) {
            return None;
        }
        rx.recv_timeout(Duration::from_secs(10)).ok()
    }

    /// The node's counters.
    pub fn stats(&self) -> Option<Stats> {
        self.query(|n| n.stats())
    }

    /// Waits up to `timeout` for an event matching `pred`; other events are passed to `other`.
    pub fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&Ev) -> bool) -> Option<Ev> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            match self.events().recv_timeout(left) {
                Ok(ev) if pred(&ev) => return Some(ev),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Every event already reported, without waiting.
    pub fn drain_events(&self) -> Vec<Ev> {
        self.events().try_iter().collect()
    }
}
