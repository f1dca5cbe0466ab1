//! 128-bit node ids and keys, and the ring arithmetic Pastry routes by.

use core::cmp::Ordering;
use core::fmt;
use core::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Number of base-16 digits in an id: also the number of routing-table rows.
pub const DIGITS: usize = 32;
/// Number of values a digit can take: also the number of routing-table columns.
pub const BASE: usize = 16;

/// A 128-bit identifier of a node or a key, on a ring of size 2^128.
///
/// Messages are routed *towards* a key and delivered at the live node whose id is numerically
/// closest to it (the shorter way round the ring).
///
/// Stored as two 64-bit halves, most significant first (so the derived order is the numeric
/// one): a `u128` field would align the id, and every table entry and option holding one, to
/// 16 bytes, which costs a node's tables a third more memory.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct NodeId([u64; 2]);

impl core::hash::Hash for NodeId {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(self.as_u128());
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for NodeId {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        <u128 as arbitrary::Arbitrary>::arbitrary(u).map(NodeId::from_u128)
    }

    fn size_hint(depth: usize) -> (usize, Option<usize>) {
        <u128 as arbitrary::Arbitrary>::size_hint(depth)
    }
}

/// Why bytes or text could not become a [`NodeId`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdError {
    /// Fewer than 16 bytes were given.
    TooShort {
        /// How many bytes were given.
        len: usize,
    },
    /// The text is not exactly 32 hexadecimal digits.
    BadHex,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::TooShort { len } => write!(f, "an id needs at least 16 bytes, got {len}"),
            IdError::BadHex => f.write_str("an id is written as exactly 32 hexadecimal digits"),
        }
    }
}

impl std::error::Error for IdError {}

impl NodeId {
    /// The id 0.
    pub const ZERO: NodeId = NodeId([0, 0]);
    /// The largest id.
    pub const MAX: NodeId = NodeId([u64::MAX, u64::MAX]);

    /// The id with this numeric value.
    pub const fn from_u128(v: u128) -> Self {
        NodeId([(v >> 64) as u64, v as u64])
    }

    /// The numeric value of the id.
    pub const fn as_u128(self) -> u128 {
        (self.0[0] as u128) << 64 | self.0[1] as u128
    }

    /// The id made of the first 16 bytes of `bytes`, big-endian (as the Go wendy did).
    ///
    /// ```
    /// # use wendy_proto::NodeId;
    /// let id = NodeId::from_bytes(b"0123456789abcdefXYZ").unwrap();
    /// assert_eq!(id.to_string(), "30313233343536373839616263646566");
    /// assert!(NodeId::from_bytes(b"short").is_err());
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
        let first: [u8; 16] =
            bytes.get(..16).and_then(|b| b.try_into().ok()).ok_or(IdError::TooShort { len: bytes.len() })?;
        Ok(NodeId::from_u128(u128::from_be_bytes(first)))
    }

    /// The id made by hashing arbitrary bytes (the first 16 bytes of their SHA-256).
    pub fn hash(data: &[u8]) -> Self {
        let digest = Sha256::digest(data);
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        NodeId::from_u128(u128::from_be_bytes(first))
    }

    /// The 16 big-endian bytes of the id.
    pub fn to_bytes(self) -> [u8; 16] {
        self.as_u128().to_be_bytes()
    }

    /// Digit `i` in base 16, counted from the most significant (`i < 32`; larger `i` gives 0).
    pub fn digit(self, i: usize) -> u8 {
        if i >= DIGITS {
            return 0;
        }
        ((self.as_u128() >> (4 * (DIGITS - 1 - i))) & 0xf) as u8
    }

    /// The number of leading base-16 digits `self` and `other` share (32 when equal).
    pub fn common_prefix_len(self, other: NodeId) -> usize {
        ((self.as_u128() ^ other.as_u128()).leading_zeros() / 4) as usize
    }

    /// Distance going clockwise (increasing, wrapping) from `self` to `other`.
    pub fn cw_distance(self, other: NodeId) -> u128 {
        other.as_u128().wrapping_sub(self.as_u128())
    }

    /// Distance the shorter way round the ring.
    pub fn distance(self, other: NodeId) -> u128 {
        let cw = self.cw_distance(other);
        cw.min(cw.wrapping_neg())
    }

    /// Orders `a` and `b` by closeness to `self` (the key): `Less` means `a` is closer.
    ///
    /// Equal distances (the key exactly between the two) are broken in favour of the node
    /// reached first going clockwise from the key, which every node computes the same way.
    pub fn cmp_closeness(self, a: NodeId, b: NodeId) -> Ordering {
        self.distance(a).cmp(&self.distance(b)).then_with(|| self.cw_distance(a).cmp(&self.cw_distance(b)))
    }

    /// True if `a` is strictly closer to `self` (the key) than `b` under [`NodeId::cmp_closeness`].
    pub fn is_closer(self, a: NodeId, b: NodeId) -> bool {
        self.cmp_closeness(a, b) == Ordering::Less
    }
}

/// A clockwise arc of keys, from `start` (included) to `end` (excluded); `start == end` is the
/// whole ring. Returned by [`Node::range`](crate::Node::range).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// The first key of the arc.
    pub start: NodeId,
    /// The first key past the arc (going clockwise).
    pub end: NodeId,
}

impl KeyRange {
    /// True if `key` lies on the arc.
    pub fn contains(&self, key: NodeId) -> bool {
        self.start == self.end || self.start.cw_distance(key) < self.start.cw_distance(self.end)
    }

    /// True if the arc is the whole ring.
    pub fn is_full(&self) -> bool {
        self.start == self.end
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.as_u128())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({:032x})", self.as_u128())
    }
}

impl FromStr for NodeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdError::BadHex);
        }
        u128::from_str_radix(s, 16).map(NodeId::from_u128).map_err(|_| IdError::BadHex)
    }
}

/// On the wire an id is its 16 big-endian bytes (a fixed-size byte string), not a varint:
/// ids are uniformly random, so a varint would take 19 bytes and a loop to write.
impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(IdVisitor)
    }
}

struct IdVisitor;

impl<'de> Visitor<'de> for IdVisitor {
    type Value = NodeId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("16 bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<NodeId, E> {
        let bytes: [u8; 16] = v.try_into().map_err(|_| E::invalid_length(v.len(), &self))?;
        Ok(NodeId::from_u128(u128::from_be_bytes(bytes)))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<NodeId, A::Error> {
        let mut bytes = [0u8; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        Ok(NodeId::from_u128(u128::from_be_bytes(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id() -> impl Strategy<Value = NodeId> {
        any::<u128>().prop_map(NodeId::from_u128)
    }

    #[test]
    fn digits_and_prefixes() {
        let a: NodeId = "0123456789abcdef0123456789abcdef".parse().unwrap();
        assert_eq!(a.digit(0), 0);
        assert_eq!(a.digit(1), 1);
        assert_eq!(a.digit(15), 0xf);
        assert_eq!(a.digit(31), 0xf);
        let b: NodeId = "0123f000000000000000000000000000".parse().unwrap();
        assert_eq!(a.common_prefix_len(b), 4);
        assert_eq!(a.common_prefix_len(a), 32);
        assert_eq!(NodeId::from_bytes(&[1; 15]), Err(IdError::TooShort { len: 15 }));
        assert_eq!("xyz".parse::<NodeId>(), Err(IdError::BadHex));
        assert_eq!("+123456789abcdef0123456789abcdef".parse::<NodeId>(), Err(IdError::BadHex));
    }

    #[test]
    fn an_id_is_aligned_to_eight_bytes() {
        assert_eq!(core::mem::align_of::<NodeId>(), 8);
        assert_eq!(core::mem::size_of::<Option<NodeId>>(), 24);
    }

    #[test]
    fn distance_wraps() {
        assert_eq!(NodeId::MAX.distance(NodeId::ZERO), 1);
        assert_eq!(NodeId::ZERO.distance(NodeId::MAX), 1);
        let half = NodeId::from_u128(1u128 << 127);
        assert_eq!(NodeId::ZERO.distance(half), 1u128 << 127);
    }

    #[test]
    fn tie_break_is_clockwise() {
        let key = NodeId::from_u128(100);
        let (lo, hi) = (NodeId::from_u128(90), NodeId::from_u128(110));
        assert!(key.is_closer(hi, lo));
        assert!(!key.is_closer(lo, hi));
    }

    proptest! {
        #[test]
        fn hex_and_wire_round_trip(a in id()) {
            prop_assert_eq!(a.to_string().parse::<NodeId>().unwrap(), a);
            let wire = postcard::to_allocvec(&a).unwrap();
            prop_assert_eq!(wire.len(), 17);
            prop_assert_eq!(postcard::from_bytes::<NodeId>(&wire).unwrap(), a);
            prop_assert_eq!(NodeId::from_bytes(&a.to_bytes()).unwrap(), a);
        }

        #[test]
        fn order_and_halves_are_the_numbers(a in any::<u128>(), b in any::<u128>()) {
            let (x, y) = (NodeId::from_u128(a), NodeId::from_u128(b));
            prop_assert_eq!(x.as_u128(), a);
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
        }

        #[test]
        fn distance_is_symmetric_and_bounded(a in id(), b in id()) {
            prop_assert_eq!(a.distance(b), b.distance(a));
            prop_assert!(a.distance(b) <= 1u128 << 127);
            prop_assert_eq!(a.distance(b) == 0, a == b);
            prop_assert_eq!(a.cw_distance(b).wrapping_add(b.cw_distance(a)), 0);
        }

        #[test]
        fn prefix_matches_digits(a in id(), b in id()) {
            let p = a.common_prefix_len(b);
            for i in 0..p { prop_assert_eq!(a.digit(i), b.digit(i)); }
            if p < DIGITS { prop_assert_ne!(a.digit(p), b.digit(p)); }
        }

        #[test]
        fn closeness_is_a_strict_total_order(k in id(), a in id(), b in id(), c in id()) {
            // antisymmetric, and equal only for the same node
            prop_assert_eq!(k.cmp_closeness(a, b), k.cmp_closeness(b, a).reverse());
            prop_assert_eq!(k.cmp_closeness(a, b) == Ordering::Equal, a == b);
            // transitive
            if k.is_closer(a, b) && k.is_closer(b, c) { prop_assert!(k.is_closer(a, c)); }
        }
    }
}
