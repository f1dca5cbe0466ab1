//! The storage layer's messages: a version byte, then a postcard-encoded [`StoreMsg`].
//!
//! They travel as node messages with the reserved purpose [`STORE_PURPOSE`](super::STORE_PURPOSE),
//! so they are framed, bounded and (with a session layer) encrypted like every other. The
//! payload is at most a frame, so nothing here allocates more than the frame that carries it;
//! lists are then checked against [`MAX_STORE_ENTRIES`].

use core::fmt;

use bytes::Bytes;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::NodeId;

use super::record::Version;

/// The version of the storage layer's messages; another version is refused.
pub const STORE_WIRE_VERSION: u8 = 2;
/// Largest number of entries (keys, records) one storage message may carry.
pub const MAX_STORE_ENTRIES: usize = 4096;
/// Number of buckets of a digest.
pub const DIGEST_BUCKETS: usize = 16;

/// A value's bytes on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob(pub Bytes);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(Bytes::copy_from_slice(v)))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(Bytes::from(v)))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// A record on the wire: its expiry is carried as the time it has left, since nodes share no clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRecord {
    /// Its version.
    pub version: Version,
    /// The value; `None` for a tombstone.
    pub value: Option<Blob>,
    /// Milliseconds it has left to live, if it expires.
    pub ttl_ms: Option<u64>,
}

/// How an operation or a transfer ended, on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Code {
    /// Done.
    Ok,
    /// Not found (get).
    NotFound,
    /// The receiver is not a replica of the key, or the sender is not one.
    NotReplica,
    /// The receiver's quota is full.
    Full,
    /// The sender exceeded its rate at the receiver.
    RateLimited,
    /// The value is larger than the receiver accepts.
    TooLarge,
    /// Some replicas did not take the write.
    Partial,
    /// The receiver's backend failed.
    Backend,
}

/// Every message of the storage layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreMsg {
    /// Client to the key's root (routed by key): write `value` (`None`: delete).
    Put {
        /// The client's operation number.
        op: u64,
        /// The value, or `None` for a delete.
        value: Option<Blob>,
        /// Time to live in milliseconds.
        ttl_ms: Option<u64>,
    },
    /// Root to client (routed towards the client's id): how the write ended.
    PutDone {
        /// The client's operation number.
        op: u64,
        /// The operation's key.
        key: NodeId,
        /// How it ended.
        code: Code,
        /// Replicas that took it.
        stored: u8,
        /// Replicas wanted.
        wanted: u8,
        /// The version written.
        version: Version,
    },
    /// Client to the key's root (routed by key): read.
    Get {
        /// The client's operation number.
        op: u64,
    },
    /// Root to client (routed towards the client's id): the newest record the replicas had.
    GetDone {
        /// The client's operation number.
        op: u64,
        /// The operation's key.
        key: NodeId,
        /// How it ended.
        code: Code,
        /// The record, when found.
        record: Option<WireRecord>,
        /// Hops the request took to the root.
        hops: u8,
    },
    /// Records for a replica (a write, a read repair or maintenance); answered by `Stored`.
    Replicate {
        /// Echoed in the answer.
        tag: u64,
        /// The records.
        records: Vec<(NodeId, WireRecord)>,
    },
    /// Answer to `Replicate`: the versions now held, key by key.
    Stored {
        /// The `Replicate`'s tag.
        tag: u64,
        /// `Ok`, or why the records were refused.
        code: Code,
        /// Version held of each key after the transfer.
        held: Vec<(NodeId, Version)>,
    },
    /// Asks a replica for records.
    Fetch {
        /// Echoed in the answer.
        tag: u64,
        /// The keys wanted.
        keys: Vec<NodeId>,
    },
    /// Answer to `Fetch`: the records the sender holds (keys it does not hold are absent).
    Fetched {
        /// The `Fetch`'s tag.
        tag: u64,
        /// The records.
        records: Vec<(NodeId, WireRecord)>,
    },
    /// Anti-entropy, first step: hashes of the keys and versions both nodes should hold, in
    /// [`DIGEST_BUCKETS`] buckets by key.
    Digest {
        /// One hash per bucket.
        buckets: Vec<u64>,
    },
    /// Anti-entropy, second step: the keys and versions in the buckets that differed.
    KeyList {
        /// The buckets listed, one bit each.
        mask: u16,
        /// Key, version, tombstone.
        entries: Vec<(NodeId, Version, bool)>,
    },
    /// Hand-off: keys a node holds but is no longer a replica of, offered to a replica.
    Offer {
        /// Key and version.
        entries: Vec<(NodeId, Version)>,
    },
    /// Answer to `Offer`: the keys held at the offered version or newer.
    Have {
        /// The keys.
        keys: Vec<NodeId>,
    },
}

/// Why a storage message could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MsgError {
    /// Empty payload.
    Empty,
    /// Another version of the storage layer.
    Version(u8),
    /// Not a valid message.
    Malformed,
    /// A list longer than [`MAX_STORE_ENTRIES`], or a digest of the wrong size.
    OutOfBounds,
}

impl fmt::Display for MsgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsgError::Empty => f.write_str("empty storage message"),
            MsgError::Version(v) => write!(f, "storage message of version {v}"),
            MsgError::Malformed => f.write_str("malformed storage message"),
            MsgError::OutOfBounds => f.write_str("storage message out of bounds"),
        }
    }
}

impl std::error::Error for MsgError {}

impl StoreMsg {
    /// Encodes the message with its version byte.
    pub fn encode(&self) -> Bytes {
        let mut out = vec![STORE_WIRE_VERSION];
        // Serialising into a Vec cannot fail for these types.
        let body = postcard::to_allocvec(self).unwrap_or_default();
        out.extend_from_slice(&body);
        Bytes::from(out)
    }

    /// Decodes and bounds-checks a payload.
    pub fn decode(payload: &[u8]) -> Result<StoreMsg, MsgError> {
        let (&v, body) = payload.split_first().ok_or(MsgError::Empty)?;
        if v != STORE_WIRE_VERSION {
            return Err(MsgError::Version(v));
        }
        let (msg, rest): (StoreMsg, &[u8]) = postcard::take_from_bytes(body).map_err(|_| MsgError::Malformed)?;
        if !rest.is_empty() {
            return Err(MsgError::Malformed);
        }
        let n = match &msg {
            StoreMsg::Replicate { records, .. } | StoreMsg::Fetched { records, .. } => records.len(),
            StoreMsg::Stored { held, .. } => held.len(),
            StoreMsg::Fetch { keys, .. } | StoreMsg::Have { keys } => keys.len(),
            StoreMsg::Digest { buckets } if buckets.len() != DIGEST_BUCKETS => return Err(MsgError::OutOfBounds),
            StoreMsg::KeyList { entries, .. } => entries.len(),
            StoreMsg::Offer { entries } => entries.len(),
            _ => 0,
        };
        if n > MAX_STORE_ENTRIES {
            return Err(MsgError::OutOfBounds);
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_bytes_are_typed_errors() {
        let rec = WireRecord {
            version: Version { counter: 7, writer: NodeId::from_u128(3) },
            value: Some(Blob(Bytes::from_static(b"v"))),
            ttl_ms: Some(5),
        };
        let m = StoreMsg::Replicate { tag: 9, records: vec![(NodeId::from_u128(1), rec)] };
        assert_eq!(StoreMsg::decode(&m.encode()), Ok(m.clone()));
        assert_eq!(StoreMsg::decode(&[]), Err(MsgError::Empty));
        assert_eq!(StoreMsg::decode(&[1, 0]), Err(MsgError::Version(1)));
        assert_eq!(StoreMsg::decode(&[STORE_WIRE_VERSION, 200, 200]), Err(MsgError::Malformed));
        let mut trailing = m.encode().to_vec();
        trailing.push(0);
        assert_eq!(StoreMsg::decode(&trailing), Err(MsgError::Malformed));
        let bad = StoreMsg::Digest { buckets: vec![0; 3] };
        assert_eq!(StoreMsg::decode(&bad.encode()), Err(MsgError::OutOfBounds));
        let long = StoreMsg::Have { keys: vec![NodeId::ZERO; MAX_STORE_ENTRIES + 1] };
        assert_eq!(StoreMsg::decode(&long.encode()), Err(MsgError::OutOfBounds));
        // A length prefix claiming far more than the payload holds allocates nothing big.
        assert_eq!(StoreMsg::decode(&[STORE_WIRE_VERSION, 6, 0xff, 0xff, 0xff, 0xff, 0x0f]), Err(MsgError::Malformed));
    }
}
