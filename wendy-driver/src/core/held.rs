//! Sends that wait for room.
//!
//! A node refuses a routed message with [`CommandError::Backpressure`] when its window and
//! queue towards the next hop are full (`Config::max_pending_per_peer`). The driver does not
//! pass that on at once: it holds the send (the rest of a batch, in order) and tries it again
//! after every round of input, since an acknowledgement read in that round may have made room.
//! Meanwhile it takes no other command, so memory stays bounded and order is kept, but it
//! goes on reading the network. A send that has waited [`Options::send_wait`](crate::Options::send_wait) is answered with
//! `Backpressure` after all.

use std::collections::VecDeque;

use bytes::Bytes;
use wendy_proto::{CommandError, NodeId, Target};

use super::{Core, Io, SEND_BATCH_DRAIN};
use crate::command::Reply;

/// A send the node refused for want of room, and since when it waits.
pub(super) struct Held {
    send: HeldSend,
    since: std::time::Instant,
}

/// Where a single message goes: routed towards a key, or straight to a node.
#[derive(Clone, Copy)]
pub(super) enum Dest {
    Key(NodeId),
    Direct(Target),
}

enum HeldSend {
    One {
        dest: Dest,
        purpose: u8,
        payload: Bytes,
        reply: Reply<Result<(), CommandError>>,
    },
    /// What is left of a batch, its front being message `next` of it, and the messages
    /// refused so far for other reasons.
    Batch {
        rest: VecDeque<(NodeId, u8, Bytes)>,
        next: usize,
        refused: Vec<(usize, CommandError)>,
        reply: Reply<Vec<(usize, CommandError)>>,
    },
}

impl<R: Io> Core<R> {
    /// Sends one message, or holds it while the node has no room for it.
    pub(super) fn send_one(
        &mut self,
        rt: &mut R,
        dest: Dest,
        purpose: u8,
        payload: Bytes,
        reply: Reply<Result<(), CommandError>>,
    ) {
        self.attempt(rt, HeldSend::One { dest, purpose, payload, reply }, std::time::Instant::now());
    }

    /// Routes a batch in order, holding what is left of it from the first message the node
    /// has no room for.
    pub(super) fn send_many(
        &mut self,
        rt: &mut R,
        batch: Vec<(NodeId, u8, Bytes)>,
        reply: Reply<Vec<(usize, CommandError)>>,
    ) {
        let send = HeldSend::Batch { rest: batch.into(), next: 0, refused: Vec::new(), reply };
        self.attempt(rt, send, std::time::Instant::now());
    }

    /// True while a send waits for room: take no command until it is answered.
    pub fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    /// When the send that waits is answered with `Backpressure` if it still finds no room.
    pub(super) fn held_deadline(&self) -> Option<std::time::Instant> {
        self.held.as_ref().map(|h| h.since + self.opts.send_wait)
    }

    /// Tries the send that waits again (after a round of input).
    pub(super) fn retry_held(&mut self, rt: &mut R) {
        if let Some(h) = self.held.take() {
            self.tick();
            self.attempt(rt, h.send, h.since);
        }
    }

    /// Hands `send` to the node; holds it (from `since`) if the node has no room for it, unless
    /// it has waited [`Options::send_wait`](crate::Options::send_wait) already.
    fn attempt(&mut self, rt: &mut R, send: HeldSend, since: std::time::Instant) {
        let now = self.clock;
        let patient = since.elapsed() < self.opts.send_wait;
        let full = |r: &Result<(), CommandError>| patient && *r == Err(CommandError::Backpressure);
        let held = match send {
            HeldSend::One { dest, purpose, payload, reply } => {
                let r = match dest {
                    Dest::Key(key) => self.node.send(now, key, purpose, payload.clone()),
                    Dest::Direct(target) => self.node.send_to(now, target, purpose, payload.clone()),
                };
                if full(&r) {
                    Some(HeldSend::One { dest, purpose, payload, reply })
                } else {
                    reply.send(r);
                    None
                }
            }
            HeldSend::Batch { mut rest, mut next, mut refused, reply } => {
                let mut held = None;
                while let Some((key, purpose, payload)) = rest.pop_front() {
                    let r = self.node.send(now, key, purpose, payload.clone());
                    if full(&r) {
                        rest.push_front((key, purpose, payload));
                        break;
                    }
                    if let Err(e) = r {
                        refused.push((next, e));
                    }
                    next += 1;
                    // Drain now and then: the node's output queue stays small, and the frames
                    // of a run of sends are sealed together (one record per connection per
                    // drain, not one per message).
                    if next % SEND_BATCH_DRAIN == 0 {
                        self.drain(rt);
                    }
                }
                if rest.is_empty() {
                    reply.send(refused);
                } else {
                    held = Some(HeldSend::Batch { rest, next, refused, reply });
                }
                held
            }
        };
        self.drain(rt);
        self.held = held.map(|send| Held { send, since });
    }
}

/// [`Options::send_wait`](crate::Options::send_wait)'s default.
pub(crate) const SEND_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
