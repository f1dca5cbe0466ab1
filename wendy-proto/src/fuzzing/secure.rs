//! The node target's encrypted half: a node on the default (Noise) transport, and a peer that
//! completes the handshake with it under a fixed key ([`SecurePeer`]), then feeds it fuzzed
//! messages and bytes sealed with the real transport keys, so that the decoder and the
//! protocol behind the encryption are reached; and tampered, unsealed and replayed records.
//!
//! Checks after every step: the node's invariants; every record the node sends on an open
//! connection opens at the peer (authenticates, in order) and decodes; a record that fails to
//! authenticate closes the connection with [`WireError::Unauthenticated`], and none of its
//! application messages is delivered or forwarded. A closed connection
//! is replaced by a fresh handshake, so one input explores many sessions.

use std::net::SocketAddr;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use crate::config::Config;
use crate::harness::secure_peer::SecurePeer;
use crate::id::NodeId;
use crate::identity::Identity;
use crate::node::Node;
use crate::output::{ConnId, Event, NodeError, Output};
use crate::time::Instant;
use crate::wire::{Message, WireError};

/// The origin of the application messages of a tampered record: nothing from it may show.
/// (Messages the node had sent on the connection and gets back unacknowledged when it closes
/// are rerouted, rightly: they have other origins.)
const FORGED: NodeId = NodeId::from_u128(0xf0f0_f0f0_dead_beef_f0f0_f0f0_dead_beef);

/// Most steps one input runs.
const MAX_STEPS: usize = 512;
/// Most fresh sessions one input opens.
const MAX_SESSIONS: u8 = 4;

/// One step of the encrypted half.
#[derive(Arbitrary, Debug)]
enum Step {
    /// Well-formed messages, sealed together as the node would seal them.
    Messages(Vec<Message>),
    /// Any plaintext, sealed as one record (frames that do not decode, cut-off frames, an
    /// empty record).
    Record(Vec<u8>),
    /// Messages sealed, then one byte of the sealed bytes flipped.
    Tampered { msgs: Vec<Message>, at: u16, bit: u8 },
    /// Messages sealed, and the record sent twice.
    Replayed(Vec<Message>),
    /// Bytes not sealed at all.
    Unsealed(Vec<u8>),
    /// Time passes (milliseconds), timers fire.
    Advance(u16),
}

/// What was sent in a step, for the checks.
#[derive(PartialEq)]
enum Sent {
    Honest,
    /// The peer stays in sync: the node may close, but not for authentication.
    Hostile,
    /// The record cannot authenticate: the node must close with `Unauthenticated`, and no
    /// application message of it (its origin [`FORGED`]) may be delivered or forwarded.
    Forged,
    /// Not sealed: anything may happen but a panic; the session is given up after it.
    Unsealed,
}

/// The encrypted half of the node target: `data` read as a sequence of [`Step`]s.
///
/// # Panics
/// When the node panics, breaks an invariant, sends a record the peer cannot open, or lets
/// anything of a record that failed to authenticate through.
pub fn node_secure(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let steps = std::iter::from_fn(|| if u.is_empty() { None } else { Step::arbitrary(&mut u).ok() });
    run_secure(steps.take(MAX_STEPS));
}

/// Runs `steps` against a fresh encrypted node; returns it, for tests to inspect.
fn run_secure(steps: impl IntoIterator<Item = Step>) -> Node {
    let mut now = Instant::from_secs(1);
    let addr = SocketAddr::from(([10, 9, 0, 1], 7000));
    let mut config = Config::new(Identity::from_secret([0x11; 32]), addr).with_entropy([0x22; 32]);
    config.max_frame_size = 64 * 1024;
    let mut node = Node::new(config, now).expect("the fuzz harness config is valid");
    let mut sessions = 0u8;
    let mut session = connect(&mut node, now, &mut sessions);
    for step in steps {
        let Some((peer, conn)) = session.as_mut() else { break };
        let conn = *conn;
        let (bytes, sent) = match step {
            Step::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms));
                if node.poll_timeout().is_some_and(|t| t <= now) {
                    node.handle_timeout(now);
                }
                (None, Sent::Honest)
            }
            Step::Messages(msgs) => (peer.seal(&msgs).ok(), Sent::Hostile),
            Step::Record(plain) => (peer.seal_raw(&plain).ok(), Sent::Hostile),
            Step::Replayed(msgs) => match peer.seal(&msgs) {
                Ok(b) if !b.is_empty() => {
                    node.handle_bytes(now, conn, b.clone());
                    if !check_outputs(&mut node, peer, conn, Sent::Hostile) {
                        session = connect(&mut node, now, &mut sessions);
                        continue;
                    }
                    (Some(b), Sent::Forged)
                }
                _ => (None, Sent::Honest),
            },
            Step::Tampered { mut msgs, at, bit } => match peer.seal(mark(&mut msgs)) {
                Ok(b) if b.len() > 5 => {
                    let mut v = b.to_vec();
                    // Inside the first record's sealed chunks (past its length prefix and kind
                    // byte): a later record would let the earlier ones through, rightly.
                    let first = 4 + u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize;
                    let i = 5 + usize::from(at) % (first.min(v.len()) - 5);
                    v[i] ^= 1 << (bit % 8);
                    (Some(Bytes::from(v)), Sent::Forged)
                }
                _ => (None, Sent::Honest),
            },
            Step::Unsealed(raw) => (Some(Bytes::from(raw)), Sent::Unsealed),
        };
        if let Some(b) = bytes {
            node.handle_bytes(now, conn, b);
        }
        let unsealed = sent == Sent::Unsealed;
        let open = check_outputs(&mut node, peer, conn, sent);
        if open && unsealed {
            // The stream may now hold part of a frame: the session is lost either way.
            node.handle_closed(now, conn);
            check_outputs(&mut node, peer, conn, Sent::Unsealed);
        }
        if !open || unsealed {
            session = connect(&mut node, now, &mut sessions);
        }
    }
    node
}

/// Marks the application messages of `msgs` as forged ([`FORGED`]).
fn mark(msgs: &mut [Message]) -> &[Message] {
    for m in msgs.iter_mut() {
        match m {
            Message::Route(r) => r.origin = FORGED,
            Message::Direct(d) => d.origin = FORGED,
            _ => {}
        }
    }
    msgs
}

/// A fresh session, unless the input has had its share.
fn connect(node: &mut Node, now: Instant, sessions: &mut u8) -> Option<(SecurePeer, ConnId)> {
    if *sessions >= MAX_SESSIONS {
        return None;
    }
    *sessions += 1;
    let addr = SocketAddr::from(([10, 9, 1, *sessions], 7000));
    let peer = Identity::from_secret([0x33 + *sessions; 32]);
    // An error: the node is full of connections, or has left; nothing more to explore.
    SecurePeer::connect(node, now, peer, addr).ok()
}

/// Drains the node and checks what it did; false if it closed the peer's connection.
fn check_outputs(node: &mut Node, peer: &mut SecurePeer, conn: ConnId, sent: Sent) -> bool {
    let outs: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
    if let Err(e) = node.check_invariants() {
        panic!("invariant broken: {e}");
    }
    let closed = outs.iter().any(|o| matches!(o, Output::Close { conn: c } if *c == conn));
    let unauthenticated = outs.iter().any(|o| {
        matches!(o, Output::Event(Event::Error(NodeError::Decode { conn: c, error: WireError::Unauthenticated })) if *c == conn)
    });
    if sent == Sent::Forged {
        assert!(closed && unauthenticated, "a forged record did not close the connection: {outs:?}");
        for o in &outs {
            let leaked = matches!(o, Output::Deliver(d) if d.origin == FORGED)
                || matches!(o, Output::Forwarded { origin, .. } if *origin == FORGED);
            assert!(!leaked, "something of a forged record got through: {o:?}");
        }
        return false;
    }
    if sent == Sent::Unsealed {
        return !closed;
    }
    assert!(!unauthenticated, "an honestly sealed record failed to authenticate: {outs:?}");
    // What the node sends opens at the peer, in order, up to the close.
    let mut bytes = Vec::new();
    for o in &outs {
        if let Output::Transmit { conn: c, data } = o {
            if *c == conn {
                bytes.extend_from_slice(data);
            }
        }
    }
    if let Err(e) = peer.open(&bytes) {
        panic!("the node sent a record its peer cannot open: {e}");
    }
    !closed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Direct, Route};

    fn route(key: u128) -> Message {
        let origin = Identity::from_secret([0x34; 32]).node_id();
        Message::Route(Route {
            key: NodeId::from_u128(key),
            purpose: 16,
            origin,
            hops: 0,
            seq: 0,
            payload: Bytes::new(),
        })
    }

    #[test]
    fn reaches_the_protocol_behind_the_encryption() {
        let direct = Message::Direct(Direct { purpose: 20, origin: NodeId::from_u128(9), payload: Bytes::new() });
        let node = run_secure([
            Step::Messages(vec![Message::Ping { seq: 1 }, route(5), route(u128::MAX / 3), direct.clone()]),
            Step::Advance(100),
            Step::Record(vec![0, 0, 0, 2, 1]),
            Step::Messages(vec![Message::Ping { seq: 2 }]),
            Step::Tampered { msgs: vec![direct.clone()], at: 3, bit: 2 },
            Step::Messages(vec![Message::LeafSetRequest]),
            Step::Replayed(vec![Message::Ping { seq: 3 }]),
            Step::Messages(vec![Message::Ping { seq: 4 }]),
            Step::Unsealed(vec![0, 0, 0, 1, 0xE2]),
            Step::Messages(vec![Message::Ping { seq: 5 }]),
        ]);
        let st = node.stats();
        // Decoded behind the encryption: the pings, routes and direct message of honest records.
        assert!(st.frames_in >= 8, "{st:?}");
        assert!(st.delivered >= 1, "{st:?}");
        // The tampered and the replayed record; the cut-off frame; the unsealed bytes.
        assert_eq!(st.auth_failures, 3, "{st:?}");
        assert!(st.decode_errors >= 4, "{st:?}");
    }
}
