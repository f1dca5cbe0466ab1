//! A scripted peer that speaks the encrypted transport: it dials a [`Node`], completes the
//! Noise handshake with a key of its own, then seals messages with the real transport keys
//! and opens what the node sends back. For tests (and the fuzz harness) that must reach what
//! lies behind the encryption: [`script`](super::script) speaks only the plaintext handshake.
//!
//! ```
//! use wendy_proto::harness::secure_peer::SecurePeer;
//! use wendy_proto::harness::script;
//! use wendy_proto::wire::Message;
//! use wendy_proto::{Config, Identity, Instant, Node};
//!
//! let now = Instant::from_secs(1);
//! let mut node = Node::new(Config::new(Identity::from_secret([1; 32]), script::addr(1, 1)), now).unwrap();
//! let (mut peer, conn) = SecurePeer::connect(&mut node, now, Identity::from_secret([2; 32]), script::addr(2, 2)).unwrap();
//! // The peer joins through the node (a ring of one), which welcomes it.
//! node.handle_bytes(now, conn, peer.seal(&[Message::Announce { seq: 7 }]).unwrap());
//! let answers = peer.open_outputs(&script::drain(&mut node), conn).unwrap();
//! assert!(answers.iter().any(|m| matches!(m, Message::Welcome { seq: 7, ready: true, .. })));
//! ```

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

use crate::identity::Identity;
use crate::info::NodeInfo;
use crate::node::Node;
use crate::output::{ConnId, Output};
use crate::secure::{Channel, Handshake, Payload, DEFAULT_REKEY, KIND_DATA};
use crate::time::Instant;
use crate::wire::{self, FrameDecoder, Message, WireError, LENGTH_PREFIX};

/// The other end of one encrypted connection to a node, played by a test.
pub struct SecurePeer {
    info: NodeInfo,
    channel: Channel,
    sealed: BytesMut,
    opened: BytesMut,
    plain: Vec<u8>,
}

impl core::fmt::Debug for SecurePeer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SecurePeer").field("id", &self.info.id).finish_non_exhaustive()
    }
}

/// Why [`SecurePeer::connect`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// The node sent something other than its handshake message, or closed the connection.
    NoAnswer,
    /// The node's handshake message failed (or Noise refused ours).
    Handshake,
}

impl SecurePeer {
    /// Dials `node` from `addr` as the peer with key `identity` (its id derived from the key,
    /// no credentials, its ephemeral key drawn from a generator seeded with the key: the run
    /// is deterministic) and completes the handshake. Returns the peer and the node's name for
    /// the connection; the node's outputs of the handshake are drained and dropped.
    pub fn connect(
        node: &mut Node,
        now: Instant,
        identity: Identity,
        addr: SocketAddr,
    ) -> Result<(SecurePeer, ConnId), ConnectError> {
        let info = NodeInfo::new(identity.node_id(), addr);
        let mut hs = Handshake::new(true, &identity, None, *identity.secret()).map_err(|_| ConnectError::Handshake)?;
        let conn = node.handle_accepted(now, addr);
        let first = hs.write(&[]).map_err(|_| ConnectError::Handshake)?;
        node.handle_bytes(now, conn, first);
        let mut answer = None;
        while let Some(out) = node.poll_output() {
            match out {
                Output::Transmit { conn: c, data } if c == conn => answer = Some(data),
                Output::Close { conn: c } if c == conn => return Err(ConnectError::NoAnswer),
                _ => {}
            }
        }
        let answer = answer.ok_or(ConnectError::NoAnswer)?;
        if answer.len() <= LENGTH_PREFIX + 1 {
            return Err(ConnectError::NoAnswer);
        }
        hs.read(&answer[LENGTH_PREFIX + 1..]).map_err(|_| ConnectError::Handshake)?;
        let payload = Payload { info: info.clone(), proof: Vec::new(), ready: true, probe: None }.encode();
        let last = hs.write(&payload).map_err(|_| ConnectError::Handshake)?;
        let channel = hs.finish(DEFAULT_REKEY).map_err(|_| ConnectError::Handshake)?;
        node.handle_bytes(now, conn, last);
        while let Some(out) = node.poll_output() {
            if matches!(out, Output::Close { conn: c } if c == conn) {
                return Err(ConnectError::Handshake);
            }
        }
        let peer = SecurePeer { info, channel, sealed: BytesMut::new(), opened: BytesMut::new(), plain: Vec::new() };
        Ok((peer, conn))
    }

    /// The peer's id, addresses and region.
    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// `msgs`, encoded and sealed together, as the node would seal one input's frames: the
    /// bytes to feed to [`Node::handle_bytes`] on the connection.
    pub fn seal(&mut self, msgs: &[Message]) -> Result<Bytes, WireError> {
        self.plain.clear();
        for m in msgs {
            wire::encode_into(m, &mut self.plain);
        }
        let plain = std::mem::take(&mut self.plain);
        let sealed = self.seal_raw(&plain);
        self.plain = plain;
        sealed
    }

    /// Seals `plaintext` as one record, whatever it holds (for hostile tests: frames that do
    /// not decode, cut-off frames, an empty record).
    pub fn seal_raw(&mut self, plaintext: &[u8]) -> Result<Bytes, WireError> {
        if plaintext.is_empty() {
            return self.channel.seal_empty(&mut self.sealed).map_err(|_| WireError::Unauthenticated);
        }
        self.channel.seal_frames(plaintext, &mut self.sealed).map_err(|_| WireError::Unauthenticated)
    }

    /// The messages in the bytes the node sent on the connection (its `Transmit`s, in order).
    pub fn open(&mut self, data: &[u8]) -> Result<Vec<Message>, WireError> {
        let mut d = FrameDecoder::new(usize::MAX);
        d.push(data);
        let mut msgs = Vec::new();
        while let Some(rec) = d.next_frame()? {
            if rec.first() != Some(&KIND_DATA) {
                return Err(WireError::FrameKind(rec.first().copied().unwrap_or(0)));
            }
            let plain = self.channel.open(&rec[1..], &mut self.opened)?;
            let mut inner = FrameDecoder::new(usize::MAX);
            inner.push_bytes(plain);
            while let Some(body) = inner.next_frame()? {
                msgs.push(wire::decode_body(body)?);
            }
            if inner.buffered() != 0 {
                return Err(WireError::Malformed);
            }
        }
        if d.buffered() != 0 {
            return Err(WireError::Malformed);
        }
        Ok(msgs)
    }

    /// The messages the node sent on `conn` among `outs`.
    pub fn open_outputs(&mut self, outs: &[Output], conn: ConnId) -> Result<Vec<Message>, WireError> {
        let mut all = Vec::new();
        for o in outs {
            if let Output::Transmit { conn: c, data } = o {
                if *c == conn {
                    all.extend_from_slice(data);
                }
            }
        }
        self.open(&all)
    }
}

/// A node (key `[1; 32]` at `script::addr(1, 1)`) with two encrypted peers, `a` (key `[2; 32]`)
/// and `b` (key `[3; 32]`), that joined through it: each announced itself and read the node's
/// welcome, so that the node routes a message for `b`'s id to `b`. The setup of the tests in
/// which a node forwards from one open connection to another.
#[derive(Debug)]
pub struct Relay {
    /// The node in the middle.
    pub node: Node,
    /// The sending peer, and the node's name for its connection.
    pub a: SecurePeer,
    /// See `a`.
    pub conn_a: ConnId,
    /// The next hop, and the node's name for its connection.
    pub b: SecurePeer,
    /// See `b`.
    pub conn_b: ConnId,
}

impl Relay {
    /// Sets it up at `now`; panics if a step fails (it is for tests).
    pub fn new(now: Instant) -> Relay {
        let cfg = crate::config::Config::new(Identity::from_secret([1; 32]), super::script::addr(1, 1));
        let mut node = Node::new(cfg, now).expect("valid config");
        let peer = |node: &mut Node, k: u8| {
            SecurePeer::connect(node, now, Identity::from_secret([k; 32]), super::script::addr(k, k)).expect("connects")
        };
        let (mut a, conn_a) = peer(&mut node, 2);
        let (mut b, conn_b) = peer(&mut node, 3);
        node.handle_bytes(now, conn_a, a.seal(&[Message::Announce { seq: 1 }]).expect("seal"));
        node.handle_bytes(now, conn_b, b.seal(&[Message::Announce { seq: 1 }]).expect("seal"));
        let welcomes = super::script::drain(&mut node);
        // The peers read the node's welcomes (their receive nonces move on).
        a.open_outputs(&welcomes, conn_a).expect("a opens its welcome");
        b.open_outputs(&welcomes, conn_b).expect("b opens its welcome");
        let bid = b.info().id;
        assert_eq!(node.next_hop(bid), Some(bid), "the node forwards towards B to B");
        Relay { node, a, conn_a, b, conn_b }
    }
}
