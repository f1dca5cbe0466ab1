//! The wire format: length-prefixed frames carrying a versioned, postcard-encoded message.
//!
//! ```text
//! frame   = length:u32be  body
//! body    = version:u8  message:postcard  payload:bytes*
//! ```
//! `length` counts the body. The application payload of [`Route`] and [`Direct`] messages is not
//! inside the postcard value: it is the rest of the body after it, so decoding hands it out as a
//! [`Bytes`] slice of the received frame without copying. The maximum frame size is checked on
//! the length prefix, before anything is buffered for the body.

use core::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::info::NodeInfo;

mod decoder;
mod kinds;
pub use decoder::FrameDecoder;
pub use kinds::{FRAME_KINDS, NOISE_HANDSHAKE_KIND};

/// The protocol version this crate speaks; a frame with another version is rejected (v3: the
/// handshake carries the probe or announcement its connection was dialled for, [`Probe`]).
pub const PROTOCOL_VERSION: u8 = 3;
/// Bytes before the body: the `u32` length prefix.
pub const LENGTH_PREFIX: usize = 4;
/// Default largest body accepted: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;
/// Largest frame body accepted before a connection's handshake completes: handshake messages
/// are small, so a stranger cannot make the node buffer a full-size frame.
pub const MAX_HANDSHAKE_FRAME: usize = 4096;
/// Largest number of node entries one state message may carry.
pub const MAX_ENTRIES: usize = 1024;
/// Largest credential proof accepted, in bytes.
pub const MAX_PROOF: usize = 1024;
/// Size of a handshake nonce.
pub const NONCE_LEN: usize = 16;

/// Every message wendy nodes exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum Message {
    /// Handshake, dialler to acceptor: who I am and a fresh nonce.
    Hello {
        /// The dialler.
        info: NodeInfo,
        /// Fresh nonce chosen by the dialler.
        nonce: [u8; NONCE_LEN],
    },
    /// Handshake, acceptor to dialler: who I am, a fresh nonce, and my proof over both nonces.
    HelloAck {
        /// The acceptor.
        info: NodeInfo,
        /// Fresh nonce chosen by the acceptor.
        nonce: [u8; NONCE_LEN],
        /// The acceptor's credential proof.
        proof: Vec<u8>,
        /// Whether the acceptor is a ready member of the ring (what a [`Message::Pong`]
        /// says): the answer to a [`Probe`] the dialler's `Auth` carries.
        ready: bool,
    },
    /// Handshake, dialler to acceptor: my proof over both nonces, and the probe or
    /// announcement this connection was dialled for, if any.
    Auth {
        /// The dialler's credential proof.
        proof: Vec<u8>,
        /// What the handshake stands for besides authentication ([`Probe`]).
        probe: Option<Probe>,
    },
    /// An application message routed towards a key.
    Route(Route),
    /// An application message sent straight to one node.
    Direct(Direct),
    /// A node asks to join; routed towards the joiner's id.
    JoinRequest {
        /// The joining node.
        joiner: NodeInfo,
        /// Hops taken so far: 0 from a joiner to the node whose address it was given (or that
        /// its nearest-node discovery chose), at least 1 once a ring's tables chose the node.
        hops: u8,
    },
    /// State sent to a joiner by each node on its join route.
    JoinState {
        /// Routing-table entries useful to the joiner.
        rows: Vec<NodeInfo>,
        /// The sender's neighbourhood set (from the first hop only).
        hood: Vec<NodeInfo>,
        /// The root's leaf set; present only when the sender is the joiner's root.
        leaves: Option<Vec<NodeInfo>>,
    },
    /// The sender is ready and wants to be known; the receiver answers [`Message::Welcome`].
    /// Over a connection dialled for it, the handshake carries it instead ([`Probe::Announce`]).
    Announce {
        /// Echoed in the answer, to measure the round trip.
        seq: u32,
    },
    /// Answer to [`Message::Announce`].
    Welcome {
        /// The announce's sequence number.
        seq: u32,
        /// Whether the sender is a ready member of the ring.
        ready: bool,
        /// The sender's leaf set, when the announcer falls in its range.
        leaves: Vec<NodeInfo>,
    },
    /// Asks for the receiver's leaf set (repair and periodic exchange).
    LeafSetRequest,
    /// A leaf set.
    LeafSet {
        /// The sender's leaf-set members.
        leaves: Vec<NodeInfo>,
    },
    /// Asks for one row of the receiver's routing table (repair).
    RowRequest {
        /// The row wanted.
        row: u8,
    },
    /// One row of a routing table.
    Row {
        /// Which row.
        row: u8,
        /// Its entries.
        entries: Vec<NodeInfo>,
    },
    /// Liveness probe (or a table member's first contact); answered by [`Message::Pong`].
    /// Over a connection dialled for it, the handshake stands for it instead ([`Probe::Ping`]).
    Ping {
        /// Echoed in the answer.
        seq: u32,
    },
    /// Answer to [`Message::Ping`].
    Pong {
        /// The ping's sequence number.
        seq: u32,
        /// Whether the sender is a ready member of the ring.
        ready: bool,
    },
    /// The sender is leaving the ring gracefully.
    Leaving,
    /// The sender wants to close this idle connection and will send nothing more on it. The
    /// receiver stops using it and closes its end, after what it had written: the end of the
    /// stream is the answer, so no frame is lost in a close race. (Earlier nodes also answered
    /// `Closing` before they closed; the answer is still understood.)
    Closing,
    /// The sender refuses this connection's handshake and closes it; `reason` is a
    /// [`RejectReason`](crate::RejectReason) code, so the refused side learns why at once.
    Reject {
        /// The reason's code ([`RejectReason::code`](crate::RejectReason::code)).
        reason: u8,
    },
    /// Routed towards `origin`'s own id, skipping `origin`: the node it reaches believes it
    /// is the closest to that id, so it must have `origin` in its leaf set. If it has not, it
    /// learns it and probes it. This mends leaf sets that concurrent joins left disjoint
    /// (two interleaved rings that each look consistent from inside).
    Locate {
        /// The node looking for its neighbours.
        origin: NodeInfo,
        /// Hops taken so far.
        hops: u8,
    },
    /// The sender declared `id` failed (it stopped answering): the receiver, if it has `id` in
    /// its tables, suspects it and probes it (so a false report costs one probe, nothing more).
    /// A receiver whose neighbour `id` is, told so by `id`'s other neighbour, tells only the
    /// farthest members of its own leaf set when it finds `id` dead too: the rest heard it
    /// from that neighbour (a neighbour that lies about it delays their finding, no more).
    Failed {
        /// The node that stopped answering.
        id: NodeId,
    },
    /// Per-hop acknowledgement: the sender has received `count` routed messages on this
    /// connection in all, and has handed on the first `passed` of them (cumulative, so a lost
    /// or merged ack loses nothing). A message is handed on once it is delivered, dropped, or
    /// acknowledged as received by the next hop: until then the node that sent it to us keeps
    /// a copy, so that a hop that crashes holding it does not take it away (custody, see
    /// `node/acks.rs`).
    Ack {
        /// Routed messages received on this connection so far.
        count: u64,
        /// Of those, the first `passed` have been handed on (at most `count`).
        passed: u64,
    },
    /// A routed message given up on where it was: routed back towards its origin, which
    /// reports it to its application as [`crate::NodeError::Undeliverable`].
    Bounce {
        /// The message's origin; the bounce is routed towards its id.
        origin: NodeId,
        /// The message's key.
        key: NodeId,
        /// Its purpose.
        purpose: u8,
        /// Its number ([`Route::seq`]).
        seq: u64,
        /// Hops the bounce has taken.
        hops: u8,
    },
    /// `by` gets no answer from `id` and is about to declare it failed. Sent by `by` to a
    /// few members of its leaf set near `id`, which pass it on to `id`; `id`, if alive,
    /// contacts `by` itself (a ping over a connection of its own), which ends the suspicion.
    /// So a node is not declared failed because the one path between two nodes lost its
    /// frames, while a crashed node costs one extra frame per helper.
    Unreachable {
        /// The suspected node.
        id: NodeId,
        /// The node that cannot reach it (the sender, on the first leg).
        by: NodeId,
    },
    /// A heartbeat to the sender's nearest counter-clockwise leaf-set member; answered by
    /// [`Message::Pong`], as a ping is. Once every leaf-set exchange interval it carries the
    /// sender's leaf set, which replaces the periodic exchange of leaf sets: the receiver
    /// learns from it, and also answers with its own [`Message::LeafSet`], but only if it
    /// knows nodes that belong in the sender's leaf set and are missing from it.
    Heartbeat {
        /// Echoed in the answer.
        seq: u32,
        /// The sender's leaf-set members, or nothing.
        leaves: Vec<NodeInfo>,
    },
}

/// What a handshake stands for when its connection was dialled for a probe or an
/// announcement: the completed handshake proves the acceptor alive (its proof is bound to the
/// dialler's fresh nonce) and measures the round trip, so the `Ping` and its `Pong`, or the
/// `Announce` (and, where the dialler needs none, the `Welcome`), would add nothing but frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Probe {
    /// A liveness probe ([`Message::Ping`]): the acceptor's `HelloAck` was its answer; the
    /// acceptor hears from the dialler and answers nothing more.
    Ping,
    /// The dialler announces itself ([`Message::Announce`]). The acceptor learns it, and
    /// answers [`Message::Welcome`] if `answer` is set (the dialler waits for it: a leaf-set
    /// member it must know has heard of it) or if it holds leaves for the dialler.
    Announce {
        /// The dialler waits for a `Welcome`.
        answer: bool,
    },
}

/// An application message on its way towards `key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Route {
    /// The key it is routed towards.
    pub key: NodeId,
    /// Application-defined purpose, 16..=255.
    pub purpose: u8,
    /// The node that sent it.
    pub origin: NodeId,
    /// Hops taken so far.
    pub hops: u8,
    /// The origin's number for this message (from a random start): a root that has already
    /// delivered a message with this origin and number drops a rerouted copy of it. Eight
    /// fixed bytes on the wire.
    #[serde(with = "fixed_u64")]
    pub seq: u64,
    /// The application payload (carried after the postcard value).
    #[serde(skip)]
    #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_bytes))]
    pub payload: Bytes,
}

/// A `u64` as 8 big-endian bytes (postcard writes a byte array as is), so that a routed
/// message's head has a fixed layout.
mod fixed_u64 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        v.to_be_bytes().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        <[u8; 8]>::deserialize(d).map(u64::from_be_bytes)
    }
}

/// An application message sent straight to one node (the Go wendy's SendToIP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Direct {
    /// Application-defined purpose, 16..=255.
    pub purpose: u8,
    /// The node that sent it.
    pub origin: NodeId,
    /// The application payload (carried after the postcard value).
    #[serde(skip)]
    #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_bytes))]
    pub payload: Bytes,
}

#[cfg(feature = "arbitrary")]
fn arbitrary_bytes(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Bytes> {
    let v: Vec<u8> = u.arbitrary()?;
    Ok(Bytes::from(v))
}

impl Message {
    /// True for the application messages ([`Message::Route`], [`Message::Direct`]).
    pub fn is_application(&self) -> bool {
        matches!(self, Message::Route(_) | Message::Direct(_))
    }

    /// True for the three handshake messages.
    pub fn is_handshake(&self) -> bool {
        matches!(self, Message::Hello { .. } | Message::HelloAck { .. } | Message::Auth { .. })
    }

    /// About how many bytes this message's frame takes, so that its buffer is reserved once:
    /// the head and the payload, and 40 bytes a node it names (an id, two IPv4 addresses and
    /// no region encode in 31 to 34, by the ports' varints; larger addresses grow the buffer as
    /// before). A leaf set of 32 (1,095 bytes) grew a buffer from 64 bytes in five steps.
    fn size_hint(&self) -> usize {
        let nodes = match self {
            Message::JoinState { rows, hood, leaves } => rows.len() + hood.len() + leaves.as_ref().map_or(0, Vec::len),
            Message::Welcome { leaves, .. } | Message::LeafSet { leaves } | Message::Heartbeat { leaves, .. } => {
                leaves.len()
            }
            Message::Row { entries, .. } => entries.len(),
            _ => 0,
        };
        64 + self.payload().len() + 40 * nodes
    }

    fn payload(&self) -> &[u8] {
        match self {
            Message::Route(r) => &r.payload,
            Message::Direct(d) => &d.payload,
            _ => &[],
        }
    }

    fn set_payload(&mut self, p: Bytes) -> Result<(), WireError> {
        match self {
            Message::Route(r) => r.payload = p,
            Message::Direct(d) => d.payload = p,
            _ if p.is_empty() => {}
            _ => return Err(WireError::TrailingBytes),
        }
        Ok(())
    }

    /// Checks the bounds a decoded message must respect (entry counts, proof and name sizes).
    pub fn validate(&self) -> Result<(), WireError> {
        let infos_ok = |v: &[NodeInfo]| v.len() <= MAX_ENTRIES && v.iter().all(NodeInfo::is_valid);
        let ok = match self {
            Message::Hello { info, .. } => info.is_valid(),
            Message::HelloAck { info, proof, .. } => info.is_valid() && proof.len() <= MAX_PROOF,
            Message::Auth { proof, .. } => proof.len() <= MAX_PROOF,
            Message::JoinRequest { joiner, .. } => joiner.is_valid(),
            Message::JoinState { rows, hood, leaves } => {
                infos_ok(rows) && infos_ok(hood) && leaves.as_deref().is_none_or(infos_ok)
            }
            Message::Welcome { leaves, .. } | Message::LeafSet { leaves } | Message::Heartbeat { leaves, .. } => {
                infos_ok(leaves)
            }
            Message::Row { entries, .. } => infos_ok(entries),
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(WireError::OutOfBounds)
        }
    }
}

/// Why bytes from a peer could not be decoded. The connection they came on is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The length prefix announces a body larger than the maximum frame size.
    FrameTooLarge {
        /// The announced body length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The body is empty (no version byte).
    Empty,
    /// The frame is of a protocol version this node does not speak.
    Version(u8),
    /// The body is not a valid postcard-encoded message.
    Malformed,
    /// A message without a payload is followed by extra bytes.
    TrailingBytes,
    /// A message exceeds a bound (entries, proof size, region name).
    OutOfBounds,
    /// An encrypted frame or handshake message failed authentication: tampered with,
    /// replayed, reordered, or not from the peer that completed the handshake.
    Unauthenticated,
    /// A frame of a kind this connection does not accept at this point (a plaintext frame on
    /// an encrypted connection: one side runs with `insecure_plaintext`, the other not).
    FrameKind(u8),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max}")
            }
            WireError::Empty => f.write_str("empty frame"),
            WireError::Version(v) => {
                write!(f, "protocol version {v} is not supported (this node speaks {PROTOCOL_VERSION})")
            }
            WireError::Malformed => f.write_str("malformed message"),
            WireError::TrailingBytes => f.write_str("unexpected bytes after the message"),
            WireError::OutOfBounds => f.write_str("message exceeds a protocol bound"),
            WireError::Unauthenticated => {
                f.write_str("frame failed authentication (tampered with, replayed or forged)")
            }
            WireError::FrameKind(k) => write!(
                f,
                "unexpected frame kind {k:#04x} (is one side running with insecure plaintext and the other encrypted?)"
            ),
        }
    }
}

impl std::error::Error for WireError {}

/// Appends the frame of `msg` to `out`.
pub fn encode_into(msg: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, PROTOCOL_VERSION]);
    if let Message::Route(r) = msg {
        // The hot path: the same bytes postcard would write, without going through serde.
        out.reserve(ROUTE_HEAD + r.payload.len());
        out.extend_from_slice(&[ROUTE_TAG, 16]);
        out.extend_from_slice(&r.key.to_bytes());
        out.extend_from_slice(&[r.purpose, 16]);
        out.extend_from_slice(&r.origin.to_bytes());
        out.push(r.hops);
        out.extend_from_slice(&r.seq.to_be_bytes());
    } else {
        // Serialising into a Vec cannot fail for these types: every field is a plain value.
        out.reserve(msg.size_hint());
        let mut buf = core::mem::take(out);
        buf = postcard::to_extend(msg, buf).unwrap_or_else(|_| unreachable!("postcard into a Vec is infallible"));
        *out = buf;
    }
    out.extend_from_slice(msg.payload());
    let body = out.len() - start - LENGTH_PREFIX;
    let len = u32::try_from(body).unwrap_or(u32::MAX);
    out[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
}

/// The frame of `msg`, ready to transmit.
pub fn encode(msg: &Message) -> Bytes {
    let mut out = Vec::with_capacity(msg.size_hint());
    encode_into(msg, &mut out);
    Bytes::from(out)
}

/// Decodes one frame body (the bytes after the length prefix). The payload, if any, is a
/// zero-copy slice of `body`.
pub fn decode_body(body: Bytes) -> Result<Message, WireError> {
    let (&version, rest) = body.split_first().ok_or(WireError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(WireError::Version(version));
    }
    if let Some(route) = decode_route_head(rest) {
        return Ok(Message::Route(Route { payload: body.slice(1 + ROUTE_HEAD..), ..route }));
    }
    let (mut msg, tail) = postcard::take_from_bytes::<Message>(rest).map_err(|_| WireError::Malformed)?;
    let payload_start = body.len() - tail.len();
    msg.set_payload(body.slice(payload_start..))?;
    msg.validate()?;
    Ok(msg)
}

/// Postcard's variant index of [`Message::Route`] (a one-byte varint).
const ROUTE_TAG: u8 = 3;
/// Bytes of a `Route` before its payload: tag, key (length 16 + 16 bytes), purpose, origin,
/// hops, seq.
const ROUTE_HEAD: usize = 1 + 17 + 1 + 17 + 1 + 8;

/// The fixed-layout fast path for the one message on the data path, byte for byte what
/// postcard writes for it (a test holds the two together); `None` sends the caller to postcard.
fn decode_route_head(rest: &[u8]) -> Option<Route> {
    let head: &[u8; ROUTE_HEAD] = rest.get(..ROUTE_HEAD)?.try_into().ok()?;
    if head[0] != ROUTE_TAG || head[1] != 16 || head[19] != 16 {
        return None;
    }
    let id = |at: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&head[at..at + 16]);
        NodeId::from_u128(u128::from_be_bytes(b))
    };
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&head[37..45]);
    let seq = u64::from_be_bytes(seq);
    Some(Route { key: id(2), purpose: head[18], origin: id(20), hops: head[36], seq, payload: Bytes::new() })
}

/// Decodes one whole frame (length prefix included), as produced by [`encode`].
pub fn decode_frame(frame: Bytes, max_frame: usize) -> Result<Message, WireError> {
    let mut d = FrameDecoder::new(max_frame);
    d.push(&frame);
    match d.next_frame()? {
        Some(body) if d.buffered() == 0 => decode_body(body),
        Some(_) => Err(WireError::TrailingBytes),
        None => Err(WireError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn info(n: u128) -> NodeInfo {
        NodeInfo::new(NodeId::from_u128(n), SocketAddr::from(([127, 0, 0, 1], 4000)))
    }

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello { info: info(1), nonce: [7; 16] },
            Message::Route(Route {
                key: NodeId::from_u128(99),
                purpose: 16,
                origin: NodeId::from_u128(3),
                hops: 2,
                seq: 0x0102_0304_0506_0708,
                payload: Bytes::from_static(b"hello world"),
            }),
            Message::Direct(Direct { purpose: 200, origin: NodeId::from_u128(5), payload: Bytes::new() }),
            Message::JoinState { rows: vec![info(1), info(2)], hood: vec![], leaves: Some(vec![info(3)]) },
            Message::Leaving,
        ]
    }

    #[test]
    fn round_trip_in_any_chunking() {
        let mut stream = Vec::new();
        for m in samples() {
            encode_into(&m, &mut stream);
        }
        for chunk in [1, 2, 3, 7, 64, stream.len()] {
            let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                d.push(c);
                while let Some(body) = d.next_frame().unwrap() {
                    got.push(decode_body(body).unwrap());
                }
            }
            assert_eq!(got, samples());
            assert_eq!(d.buffered(), 0);
        }
    }

    proptest::proptest! {
        #[test]
        fn route_fast_path_is_postcard(key: u128, origin: u128, purpose: u8, hops: u8, seq: u64, payload: Vec<u8>) {
            let r = Route { key: NodeId::from_u128(key), purpose, origin: NodeId::from_u128(origin), hops, seq, payload: Bytes::from(payload.clone()) };
            let msg = Message::Route(r);
            let mut fast = Vec::new();
            encode_into(&msg, &mut fast);
            let mut slow = vec![0, 0, 0, 0, PROTOCOL_VERSION];
            slow = postcard::to_extend(&msg, slow).unwrap();
            slow.extend_from_slice(&payload);
            let len = (slow.len() - LENGTH_PREFIX) as u32;
            slow[..4].copy_from_slice(&len.to_be_bytes());
            proptest::prop_assert_eq!(&fast, &slow);
            let body = Bytes::from(fast).slice(LENGTH_PREFIX..);
            let (via_serde, tail) = postcard::take_from_bytes::<Message>(&body[1..]).unwrap();
            proptest::prop_assert_eq!(tail, &payload[..]);
            let decoded = decode_body(body.clone()).unwrap();
            let Message::Route(d) = &decoded else { panic!("not a route") };
            let Message::Route(s) = via_serde else { panic!("not a route") };
            proptest::prop_assert_eq!((d.key, d.purpose, d.origin, d.hops), (s.key, s.purpose, s.origin, s.hops));
            proptest::prop_assert_eq!(decoded, msg);
        }
    }

    #[test]
    fn a_frame_naming_nodes_fits_the_room_reserved_for_it() {
        let nodes: Vec<NodeInfo> = (0..32).map(|i| info(1000 + i)).collect();
        let many = [
            Message::Welcome { seq: 1, ready: true, leaves: nodes.clone() },
            Message::LeafSet { leaves: nodes.clone() },
            Message::Row { row: 3, entries: nodes[..15].to_vec() },
            Message::Heartbeat { seq: u32::MAX, leaves: nodes.clone() },
            Message::JoinState { rows: nodes.clone(), hood: nodes[..8].to_vec(), leaves: Some(nodes.clone()) },
        ];
        for m in many.iter().chain(&samples()) {
            let frame = encode(m);
            assert!(frame.len() <= m.size_hint(), "{} bytes, {} reserved: {m:?}", frame.len(), m.size_hint());
            // Not wasteful either: at most the head and a third again.
            assert!(m.size_hint() <= 64 + frame.len() * 4 / 3, "{} bytes, {} reserved", frame.len(), m.size_hint());
            // Appended to a buffer, the frame is written into the room reserved once.
            let mut out = Vec::new();
            encode_into(m, &mut out);
            let room = out.capacity();
            assert_eq!(out.len(), frame.len());
            assert!(room >= out.len() && room <= 5 + m.size_hint(), "capacity {room}");
        }
    }

    #[test]
    fn payload_is_not_copied() {
        let m = &samples()[1];
        let frame = encode(m);
        let body = frame.slice(LENGTH_PREFIX..);
        let range = body.as_ptr_range();
        let Message::Route(r) = decode_body(body.clone()).unwrap() else { panic!("not a route") };
        assert!(range.contains(&r.payload.as_ptr()), "payload must point into the frame");
    }

    #[test]
    fn hostile_frames_are_typed_errors() {
        let mut d = FrameDecoder::new(1024);
        d.push(&u32::MAX.to_be_bytes());
        assert_eq!(d.next_frame(), Err(WireError::FrameTooLarge { len: u32::MAX as usize, max: 1024 }));
        assert_eq!(d.buffered(), 0);
        assert_eq!(decode_body(Bytes::new()), Err(WireError::Empty));
        assert_eq!(decode_body(Bytes::from_static(&[9, 0])), Err(WireError::Version(9)));
        assert_eq!(decode_body(Bytes::from_static(&[PROTOCOL_VERSION, 0xff, 0xff])), Err(WireError::Malformed));
        let mut leaving = encode(&Message::Leaving).to_vec();
        leaving.push(1);
        leaving[3] += 1;
        assert_eq!(decode_frame(Bytes::from(leaving), 1024), Err(WireError::TrailingBytes));
        let too_many = Message::LeafSet { leaves: vec![info(1); MAX_ENTRIES + 1] };
        assert_eq!(decode_frame(encode(&too_many), DEFAULT_MAX_FRAME), Err(WireError::OutOfBounds));
    }
}
