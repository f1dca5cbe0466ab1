//! The outgoing path: a message to a peer (dialling it if needed), its per-connection queue
//! while the connection is set up, and the frames it becomes: plaintext written at once,
//! encrypted frames gathered per connection during an input and sealed together when the
//! outputs are polled, in buffers the node reuses.

use crate::id::NodeId;
use crate::output::{ConnId, NodeError, Output};
use crate::secure;
use crate::time::Instant;
use crate::wire::{self, Message};

use super::connections::{Phase, SendFail};
use super::counters::Counter;
use super::{Node, State};

/// Most plaintext buffers kept for reuse, and the largest capacity kept.
const POOL_BUFFERS: usize = 16;
const POOL_CAPACITY: usize = 1 << 16;
/// A drained output queue gives its room back at most this often: a node that forwards a burst
/// every few milliseconds keeps its queue's room between them (giving it back after each cost
/// a reallocation per doubling and a copy of every output once more), and an idle one holds
/// none.
const OUT_SHRINK_GAP: core::time::Duration = core::time::Duration::from_millis(100);

/// The node's transmit buffers: what lets a node in steady state send and receive without a
/// heap allocation per frame.
///
/// Encrypted connections queue their frames' plaintext in a buffer from `pool`; when the
/// outputs are polled, each connection's frames are sealed together into `sealed`, split off
/// it as one `Transmit` (a reference-counted slice: the driver writes it without copying,
/// and once it drops it the next seal reuses the memory). Received records are opened the
/// same way, into a buffer of their connection's (`ConnIo::rx`).
#[derive(Debug, Default)]
pub(super) struct Tx {
    /// Plaintext buffers not in use by a connection.
    pool: Vec<Vec<u8>>,
    /// Connections with frames in `tx`, in the order they got their first.
    dirty: Vec<ConnId>,
    /// Outputs polled so far: turns the positions in `tx_slot` into queue indices.
    pub(super) polled: u64,
    /// Sealed frames, split off as they are handed out.
    sealed: bytes::BytesMut,
    /// When a drained output queue was last shrunk at once (by `poll_output`).
    out_shrunk: Option<Instant>,
}

impl Tx {
    /// Bytes its buffers hold.
    pub(super) fn heap_bytes(&self) -> usize {
        self.pool.iter().map(Vec::capacity).sum::<usize>()
            + self.dirty.capacity() * core::mem::size_of::<ConnId>()
            + self.sealed.capacity()
    }

    /// True if some connection has frames waiting to be sealed.
    pub(super) fn has_pending(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// True (and remembered) if a drained output queue may give its room back at `now`: the
    /// first time, and then at most once per [`OUT_SHRINK_GAP`].
    pub(super) fn may_shrink_out(&mut self, now: Instant) -> bool {
        if self.out_shrunk.is_some_and(|t| now - t < OUT_SHRINK_GAP) {
            return false;
        }
        self.out_shrunk = Some(now);
        true
    }
}

impl super::connections::Conn {
    /// True if its window has no room for another routed message ([`super::acks::Flight::is_full`]).
    fn window_full(&self, cfg: &crate::Config) -> bool {
        self.flight.as_ref().is_some_and(|f| f.is_full(cfg))
    }
}

impl Node {
    /// Sends `msg` to a known node, dialling it if needed (not once we have left).
    pub(super) fn send_msg(&mut self, now: Instant, to: NodeId, msg: Message) -> Result<(), SendFail> {
        let dial = self.state != State::Left;
        self.send_msg_dialling(now, to, msg, dial)
    }

    /// [`Node::send_msg`], dialling `to` if we have no connection with it only if `dial`. A
    /// node that has left says goodbye on the connections it has, and to leaf-set members
    /// (which take over its keys) on a new one if need be: [`crate::Event::Drained`] waits
    /// for its set-up.
    pub(super) fn send_msg_dialling(
        &mut self,
        now: Instant,
        to: NodeId,
        msg: Message,
        dial: bool,
    ) -> Result<(), SendFail> {
        let Some(peer) = self.peers.get(&to) else { return Err(SendFail::Unknown) };
        let conn = match peer.conn().filter(|c| self.conns.contains_key(c)) {
            Some(c) => c,
            None if !dial => return Err(SendFail::Unknown),
            None => {
                let addr = peer.addr_from(&self.cfg.info.region);
                let Some(c) = self.dial(now, addr, Some(to)) else {
                    // Counted, if it is an application message, where it is dropped.
                    return Err(SendFail::Full);
                };
                if let Some(p) = self.peers.get_mut(&to) {
                    p.set_conn(Some(c));
                }
                c
            }
        };
        if self.enqueue(conn, msg) {
            Ok(())
        } else {
            Err(SendFail::Full)
        }
    }

    /// Transmits on an open connection, or queues until it opens. False if the queue is full.
    pub(super) fn enqueue(&mut self, conn: ConnId, msg: Message) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else { return false };
        if c.closing.is_some() {
            return false;
        }
        let open = matches!(c.phase, Phase::Open);
        if open {
            c.last_active = self.last_now;
            // A routed message waits behind the connection's window (and behind those already
            // waiting, to keep their order); anything else goes out at once.
            if !matches!(msg, Message::Route(_)) || (c.pending_len() == 0 && !c.window_full(&self.cfg)) {
                self.transmit_owned(conn, msg);
                return true;
            }
        }
        if c.pending_len() >= self.cfg.max_pending_per_peer || self.pending_total >= self.cfg.max_pending_total {
            return false;
        }
        if let Message::Route(r) = &msg {
            self.keep_pending_custody(conn, r);
            if !open {
                self.arm_setup_check(conn);
            }
        }
        let Some(c) = self.conns.get_mut(&conn) else { return false };
        c.io().pending.push_back(msg);
        self.pending_total += 1;
        true
    }

    /// True if a routed message for `to` would find its queue full ([`Node::enqueue`] would
    /// refuse it).
    pub(super) fn refuses_route(&self, to: NodeId) -> bool {
        let full_queue = |pending: usize| {
            pending >= self.cfg.max_pending_per_peer || self.pending_total >= self.cfg.max_pending_total
        };
        let Some(c) = self.peers.get(&to).and_then(|p| p.conn()).and_then(|c| self.conns.get(&c)) else {
            // A new connection would queue it while it is set up.
            return self.pending_total >= self.cfg.max_pending_total;
        };
        if c.closing.is_some() {
            return true;
        }
        let pending = c.pending_len();
        if matches!(c.phase, Phase::Open) && pending == 0 && !c.window_full(&self.cfg) {
            return false;
        }
        full_queue(pending)
    }

    /// Writes what waits in open `conn`'s queue, as far as its window allows.
    pub(super) fn flush_window(&mut self, conn: ConnId) {
        while let Some(c) = self.conns.get_mut(&conn) {
            if !matches!(c.phase, Phase::Open) || c.closing.is_some() {
                return;
            }
            let full = c.window_full(&self.cfg);
            let Some(io) = c.io.as_mut() else { return };
            match io.pending.front() {
                Some(Message::Route(_)) if full => return,
                None => return,
                Some(_) => {}
            }
            let Some(m) = io.pending.pop_front() else { return };
            self.pending_total -= 1;
            let token = self.take_pending_custody(conn, &m);
            self.with_custody(token, move |n| n.transmit_owned(conn, m));
        }
    }

    /// Sends `msg` on `conn`: in the clear in plaintext mode (a frame of its own); on an
    /// encrypted connection, queued with the other frames of this input, to be sealed with them
    /// ([`Node::seal_pending`]). On an encrypted connection without keys yet only a refusal goes
    /// out (in the clear: it carries one reason code).
    pub(super) fn transmit(&mut self, conn: ConnId, msg: &Message) {
        if self.write_frame(conn, msg) {
            if let Message::Route(r) = msg {
                self.track_route(conn, r.clone());
            }
        }
    }

    /// [`Node::transmit`] of a message the caller gives up: a routed message moves into its
    /// connection's record of those in flight rather than being copied there (a reference
    /// count taken and given back per hop, on a payload other threads may hold too).
    pub(super) fn transmit_owned(&mut self, conn: ConnId, msg: Message) {
        if self.write_frame(conn, &msg) {
            if let Message::Route(r) = msg {
                self.track_route(conn, r);
            }
        }
    }

    /// Encodes `msg` onto `conn`; false if nothing was written (no such connection, or one
    /// without keys that may carry only a refusal).
    fn write_frame(&mut self, conn: ConnId, msg: &Message) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else { return false };
        let application = msg.is_application();
        if self.cfg.insecure_plaintext {
            self.send_frame(conn, wire::encode(msg), (!application).then(|| msg.kind_index()));
        } else if c.channel.is_some() {
            if !c.in_use {
                c.io();
                self.recheck_idle(conn);
            }
            let Some(io) = self.conns.get_mut(&conn).and_then(|c| c.io.as_deref_mut()) else { return false };
            if io.tx_slot.is_none() {
                io.tx = self.tx.pool.pop().unwrap_or_default();
                io.tx_slot = Some(self.tx.polled + self.out.len() as u64);
                // A placeholder, filled in when the connection's frames are sealed.
                self.out.push_back(Output::Transmit { conn, data: bytes::Bytes::new() });
                self.tx.dirty.push(conn);
            }
            let before = io.tx.len();
            wire::encode_into(msg, &mut io.tx);
            let len = (io.tx.len() - before) as u64;
            self.stats.add(Counter::FramesOut, 1);
            if !application {
                self.stats.add(Counter::ControlFramesOut, 1);
                self.stats.add(Counter::ControlBytesOut, len);
                self.stats.add_kind(msg.kind_index());
            }
        } else if let Message::Reject { reason } = msg {
            self.send_frame(conn, secure::reject_frame(*reason), Some(msg.kind_index()));
        } else {
            return false;
        }
        true
    }

    /// Queues one whole frame for the driver, and counts it: `control` is the kind of a
    /// control frame ([`wire::FRAME_KINDS`]), `None` for an application message.
    pub(super) fn send_frame(&mut self, conn: ConnId, data: bytes::Bytes, control: Option<usize>) {
        // Frames queued for sealing on this connection go first.
        self.seal_conn(conn);
        self.stats.add(Counter::FramesOut, 1);
        self.stats.add(Counter::BytesOut, data.len() as u64);
        if let Some(kind) = control {
            self.stats.add(Counter::ControlFramesOut, 1);
            self.stats.add(Counter::ControlBytesOut, data.len() as u64);
            self.stats.add_kind(kind);
        }
        self.out.push_back(Output::Transmit { conn, data });
    }

    /// Seals the frames every encrypted connection queued (into the `Transmit` each holds a
    /// place for); called before an output is handed out.
    pub(super) fn seal_pending(&mut self) {
        while !self.tx.dirty.is_empty() {
            let mut dirty = std::mem::take(&mut self.tx.dirty);
            for &conn in &dirty {
                self.seal_conn(conn);
            }
            dirty.clear();
            // Keep the list's memory unless sealing queued more (a failed seal reroutes).
            if self.tx.dirty.is_empty() {
                self.tx.dirty = dirty;
            }
        }
    }

    /// Seals the frames `conn` queued, if any, into the `Transmit` that holds their place.
    pub(super) fn seal_conn(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let Some(io) = c.io.as_mut() else { return };
        let Some(slot) = io.tx_slot.take() else { return };
        let mut plain = std::mem::take(&mut io.tx);
        let sealed = match c.channel.as_mut() {
            Some(ch) => ch.seal_frames(&plain, &mut self.tx.sealed).ok(),
            None => None,
        };
        if plain.capacity() <= POOL_CAPACITY && self.tx.pool.len() < POOL_BUFFERS {
            plain.clear();
            self.tx.pool.push(plain);
        }
        if let Some(i) = self.tx.dirty.iter().position(|&d| d == conn) {
            self.tx.dirty.swap_remove(i);
        }
        let Some(data) = sealed else {
            // Only a nonce counter at its end (2^64 messages) gets here; the placeholder
            // stays empty (a write of nothing).
            self.report(NodeError::Protocol { conn, what: "the connection's keys are exhausted" });
            self.out.push_back(Output::Close { conn });
            let now = self.last_now;
            self.drop_conn(now, conn);
            return;
        };
        self.stats.add(Counter::BytesOut, data.len() as u64);
        let at = usize::try_from(slot - self.tx.polled).unwrap_or(usize::MAX);
        if let Some(Output::Transmit { data: d, .. }) = self.out.get_mut(at) {
            *d = data;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drained_output_queue_is_shrunk_at_once_at_most_every_gap() {
        let mut tx = Tx::default();
        let t0 = Instant::from_secs(5);
        assert!(tx.may_shrink_out(t0), "the first burst is given back at once");
        assert!(!tx.may_shrink_out(t0 + OUT_SHRINK_GAP / 2));
        assert!(!tx.may_shrink_out(t0 + (OUT_SHRINK_GAP - core::time::Duration::from_micros(1))));
        assert!(tx.may_shrink_out(t0 + OUT_SHRINK_GAP));
        assert!(!tx.may_shrink_out(t0 + OUT_SHRINK_GAP));
    }
}
