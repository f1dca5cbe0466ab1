//! Routed messages delivered here lately, so that a rerouted copy of one (its ack was lost,
//! and the sender routed it again) is dropped instead of delivered twice.

use std::collections::VecDeque;

use crate::id::NodeId;
use crate::time::Instant;

use super::timers::trimmed;

/// How long a delivered message is remembered: longer than a message can take to be
/// rerouted `max_reroutes` times with the longest ack timeout, and parked meanwhile.
pub(super) const RECENT_WINDOW: core::time::Duration = core::time::Duration::from_secs(30);
/// Delivered messages remembered at most (the oldest are forgotten first).
pub(super) const RECENT_MAX: usize = 4096;

/// Routed messages delivered here lately, by origin and number, oldest first. Kept for
/// [`RECENT_WINDOW`], at most [`RECENT_MAX`] of them.
///
/// The messages are kept in order of delivery in `order`, each with its hash (SipHash of its
/// origin and number, keyed by a secret derived from the node's entropy, so that senders
/// cannot make entries collide); `index` finds one by that hash and holds only its serial
/// number, four bytes. One delivery costs a hash, a probe and an append; forgetting the
/// oldest costs a probe for its serial under the hash it keeps, and growing the index reads
/// the kept hashes rather than computing them again. (The record before this one left the
/// serials of forgotten entries in the index and swept them out in passes: the sweeps, the
/// longer probes past them and the hashes computed again when the index grew were a seventh
/// of a relayed message's cost.)
#[derive(Debug)]
pub(super) struct Recent {
    /// Serial numbers of the entries of `order` (the front's is `base`), by hash.
    index: hashbrown::HashTable<u32>,
    order: VecDeque<Delivered>,
    /// The serial number of `order`'s front (wrapping: at most `RECENT_MAX` are live).
    base: u32,
    /// The hash's secret key.
    key: [u8; 16],
}

/// One message of [`Recent`]: 40 bytes.
#[derive(Clone, Copy, Debug)]
struct Delivered {
    at: Instant,
    origin: NodeId,
    seq: u64,
    /// Its hash, under which `index` files its serial.
    hash: u64,
}

impl Recent {
    /// An empty record, its hash keyed from the node's configuration (its entropy and
    /// identity, through a hash of its own: no generator of the node is drawn from).
    pub(super) fn new(cfg: &crate::config::Config) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::new_with_prefix(b"wendy/recent/v1").chain_update(super::session::crypto_seed(cfg));
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest.finalize()[..16]);
        Recent { index: hashbrown::HashTable::new(), order: VecDeque::new(), base: 0, key }
    }

    /// Bytes it holds.
    pub(super) fn heap_bytes(&self) -> usize {
        self.index.allocation_size() + self.order.capacity() * core::mem::size_of::<Delivered>()
    }

    fn hash(key: &[u8; 16], origin: NodeId, seq: u64) -> u64 {
        use core::hash::Hasher;
        let mut h = siphasher::sip::SipHasher13::new_with_key(key);
        h.write_u128(origin.as_u128());
        h.write_u64(seq);
        h.finish()
    }

    /// Forgets what was delivered [`RECENT_WINDOW`] ago or more, and the oldest beyond
    /// `keep`.
    fn forget(&mut self, now: Instant, keep: usize) {
        let Recent { index, order, base, .. } = self;
        while let Some(front) = order.front() {
            if now - front.at < RECENT_WINDOW && order.len() <= keep {
                break;
            }
            let serial = *base;
            if let Ok(entry) = index.find_entry(front.hash, |&x| x == serial) {
                entry.remove();
            }
            order.pop_front();
            *base = base.wrapping_add(1);
        }
    }

    /// Records `(origin, seq)` delivered at `now`; false if it was delivered already.
    pub(super) fn first(&mut self, now: Instant, origin: NodeId, seq: u64) -> bool {
        self.forget(now, RECENT_MAX - 1);
        let Recent { index, order, base, key } = self;
        let base = *base;
        let at = |x: u32| x.wrapping_sub(base) as usize;
        let hash = Self::hash(key, origin, seq);
        if index.find(hash, |&x| order.get(at(x)).is_some_and(|e| e.origin == origin && e.seq == seq)).is_some() {
            return false;
        }
        let serial = base.wrapping_add(order.len() as u32);
        index.insert_unique(hash, serial, |&x| order.get(at(x)).map_or(0, |e| e.hash));
        order.push_back(Delivered { at: now, origin, seq, hash });
        true
    }

    /// Forgets what the window let go of by `now`, and gives back the room a burst of
    /// deliveries left ([`trimmed`], the rule of the node's other buffers): a node that relayed
    /// a stream and fell quiet holds nothing of it once the window has passed. Called every
    /// tick.
    pub(super) fn trim(&mut self, now: Instant) {
        self.forget(now, RECENT_MAX);
        let len = self.order.len();
        if len == 0 {
            self.order = VecDeque::new();
            self.index = hashbrown::HashTable::new();
        } else if let Some(keep) = trimmed(len, self.order.capacity()) {
            let Recent { index, order, base, .. } = self;
            let base = *base;
            order.shrink_to(keep);
            index.shrink_to(keep, |&x| order.get(x.wrapping_sub(base) as usize).map_or(0, |e| e.hash));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The hashed record answers as a set of the pairs with the same expiry would: forgotten
        /// after the window, or when full, oldest first; and it indexes exactly what it holds.
        #[test]
        fn recent_deliveries_are_remembered_as_by_a_set(
            ops in proptest::collection::vec((0u8..6, 0u64..40, 0u64..6_000_000), 1..3000),
        ) {
            let cfg = crate::config::Config::with_trusted_id(NodeId::from_u128(1), ([127, 0, 0, 1], 1).into());
            let mut r = Recent::new(&cfg);
            let mut seen = std::collections::BTreeSet::new();
            let mut order = VecDeque::new();
            let mut now = Instant::ZERO;
            for (origin, seq, step) in ops {
                // Mostly small steps; a few jump past the window.
                now += core::time::Duration::from_micros(step % 97 * 100 + step / 5_900_000 * 31_000_000);
                let (origin, seq) = (NodeId::from_u128(u128::from(origin) << 120), seq);
                while let Some(&(t, o, s)) = order.front() {
                    if now - t < RECENT_WINDOW && order.len() < RECENT_MAX {
                        break;
                    }
                    order.pop_front();
                    seen.remove(&(o, s));
                }
                let first = seen.insert((origin, seq));
                if first {
                    order.push_back((now, origin, seq));
                }
                proptest::prop_assert_eq!(r.first(now, origin, seq), first);
                proptest::prop_assert_eq!(r.order.len(), seen.len());
                proptest::prop_assert_eq!(r.index.len(), seen.len());
            }
        }
    }

    #[test]
    fn recent_forgets_the_oldest_when_full() {
        let cfg = crate::config::Config::with_trusted_id(NodeId::from_u128(1), ([127, 0, 0, 1], 1).into());
        let mut r = Recent::new(&cfg);
        let origin = NodeId::from_u128(7);
        for round in 0..3u64 {
            // Past the serials' first wrap of the deque's room, several times over.
            for seq in 0..RECENT_MAX as u64 + 10 {
                assert!(r.first(Instant::ZERO, origin, round * 1_000_000 + seq));
            }
            assert_eq!(r.order.len(), RECENT_MAX);
            assert_eq!(r.index.len(), RECENT_MAX);
        }
        assert!(r.first(Instant::ZERO, origin, 2_000_000), "forgotten: the oldest went first");
        assert!(!r.first(Instant::ZERO, origin, 2_000_000 + RECENT_MAX as u64 + 9), "still remembered");
    }

    #[test]
    fn a_record_gives_its_room_back_once_the_window_has_passed() {
        let cfg = crate::config::Config::with_trusted_id(NodeId::from_u128(1), ([127, 0, 0, 1], 1).into());
        let mut r = Recent::new(&cfg);
        let origin = NodeId::from_u128(7);
        for seq in 0..1000 {
            assert!(r.first(Instant::ZERO, origin, seq));
        }
        let burst = r.heap_bytes();
        assert!(burst > 1000 * 40);
        r.trim(Instant::ZERO);
        assert_eq!(r.heap_bytes(), burst, "kept while within the window");
        // Ten more a little later; the burst's thousand leave at the window's end.
        let later = Instant::ZERO + RECENT_WINDOW / 2;
        for seq in 1000..1010 {
            assert!(r.first(later, origin, seq));
        }
        r.trim(Instant::ZERO + RECENT_WINDOW);
        assert_eq!((r.order.len(), r.index.len()), (10, 10));
        assert!(r.heap_bytes() < burst / 8, "{} of {burst} bytes kept for ten", r.heap_bytes());
        assert!(!r.first(Instant::ZERO + RECENT_WINDOW, origin, 1005), "the ten are still remembered");
        assert!(r.first(Instant::ZERO + RECENT_WINDOW, origin, 5), "the burst is forgotten");
        r.trim(later + 2 * RECENT_WINDOW);
        assert_eq!(r.heap_bytes(), 0);
    }
}
