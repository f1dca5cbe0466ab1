//! Routed messages delivered here lately, so that a rerouted copy of one (its ack was lost,
//! and the sender routed it again) is dropped instead of delivered twice.

use crate::config::Config;
use crate::id::NodeId;
use crate::time::Instant;

use super::timers::trimmed;

/// How long a delivered message is remembered at least (unless [`RECENT_MAX`] later ones
/// push it out): longer than a message can take to be rerouted `max_reroutes` times with the
/// longest ack timeout, and parked meanwhile.
pub(super) const RECENT_WINDOW: core::time::Duration = core::time::Duration::from_secs(30);
/// The number of later deliveries that a delivered message is remembered through at least
/// (within [`RECENT_WINDOW`]); at most twice as many are kept.
pub(super) const RECENT_MAX: usize = 4096;

/// Routed messages delivered here lately, by origin and number: each is remembered for
/// [`RECENT_WINDOW`] or through the next [`RECENT_MAX`] deliveries, whichever ends first, and
/// possibly longer (up to twice either).
///
/// Nothing is held until a message is delivered, and nothing once the window has passed over
/// the last one ([`Recent::trim`]): most nodes of a large network deliver a message now and
/// then, and the record costs them two words. Up to [`FEW`] deliveries within a window are
/// kept in a small list (104 bytes, jemalloc's 112-byte class), the next turns it into the
/// two hash sets (a 112-byte box and a 128-byte table at least).
#[derive(Debug, Default)]
pub(super) enum Recent {
    /// Nothing delivered within the window.
    #[default]
    Empty,
    /// At most [`FEW`] deliveries, each forgotten a window after it.
    Few(Box<Few>),
    /// More: the two sets.
    Many(Box<Generations>),
}

/// The most deliveries [`Recent::Few`] holds.
const FEW: usize = 3;

/// A few deliveries and when each came, oldest first.
#[derive(Debug)]
pub(super) struct Few {
    entries: [Delivered; FEW],
    at: [Instant; FEW],
    len: u8,
}

impl Few {
    fn one(now: Instant, d: Delivered) -> Self {
        Few { entries: [d; FEW], at: [now; FEW], len: 1 }
    }

    fn held(&self) -> impl Iterator<Item = (&Delivered, Instant)> {
        self.entries.iter().zip(self.at).take(usize::from(self.len))
    }

    /// Forgets the deliveries a window old or older at `now`.
    fn age(&mut self, now: Instant) {
        let gone = self.held().take_while(|e| now - e.1 >= RECENT_WINDOW).count();
        if gone > 0 {
            self.entries.copy_within(gone.., 0);
            self.at.copy_within(gone.., 0);
            self.len -= gone as u8;
        }
    }
}

/// Two sets of delivered messages, the current one and the one before it, each keyed by a
/// SipHash of origin and number under a secret derived from the node's entropy (so that
/// senders cannot make entries collide). A delivery is looked up in both and added to the
/// current set; when the current set is full, or its first entry has aged past the window,
/// the older set is dropped whole and the current one takes its place. Nothing is removed one
/// by one: the record before this one kept the deliveries in order and removed the oldest from
/// its index at each delivery; it took 13 % of the samples of a profile of the in-memory chain
/// (`examples/chain.rs`, encrypted and plaintext), this one 9 %.
#[derive(Debug)]
pub(super) struct Generations {
    sets: [hashbrown::HashTable<Delivered>; 2],
    /// When each set's newest entry was delivered.
    newest: [Instant; 2],
    /// When the current set's first entry was delivered.
    started: Instant,
    /// Which of `sets` is the current one.
    current: usize,
    /// The hash's secret key.
    key: [u8; 16],
}

/// One delivered message: 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Delivered {
    origin: [u64; 2],
    seq: u64,
}

impl Delivered {
    fn new(origin: NodeId, seq: u64) -> Self {
        let o = origin.as_u128();
        Delivered { origin: [o as u64, (o >> 64) as u64], seq }
    }
}

impl Generations {
    /// An empty record, its hash keyed from the node's configuration (its entropy and
    /// identity, through a hash of its own: no generator of the node is drawn from).
    fn new(cfg: &Config, now: Instant) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::new_with_prefix(b"wendy/recent/v1").chain_update(super::session::crypto_seed(cfg));
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest.finalize()[..16]);
        let sets = [hashbrown::HashTable::new(), hashbrown::HashTable::new()];
        Generations { sets, newest: [now; 2], started: now, current: 0, key }
    }

    fn hash(key: &[u8; 16], d: &Delivered) -> u64 {
        use core::hash::Hasher;
        let mut h = siphasher::sip::SipHasher13::new_with_key(key);
        h.write_u64(d.origin[0]);
        h.write_u64(d.origin[1]);
        h.write_u64(d.seq);
        h.finish()
    }

    /// Makes a fresh current set: the older set is dropped (its room kept for reuse) and the
    /// current one becomes the older.
    fn rotate(&mut self) {
        let older = 1 - self.current;
        self.sets[older].clear();
        self.current = older;
    }

    /// Lets go of what the window has passed over by `now`: the older set once its newest
    /// entry is a window old, and the current set becomes the older once its first is.
    fn age(&mut self, now: Instant) {
        let current = self.current;
        if !self.sets[current].is_empty() && now - self.started >= RECENT_WINDOW {
            // Every entry of the older set came before the current set's first.
            self.rotate();
        }
        let older = 1 - self.current;
        if !self.sets[older].is_empty() && now - self.newest[older] >= RECENT_WINDOW {
            self.sets[older].clear();
        }
    }

    fn first(&mut self, now: Instant, d: Delivered) -> bool {
        self.age(now);
        let key = self.key;
        let hash = Self::hash(&key, &d);
        if self.sets[1 - self.current].find(hash, |x| *x == d).is_some() {
            return false;
        }
        let current = &mut self.sets[self.current];
        if current.find(hash, |x| *x == d).is_some() {
            return false;
        }
        if current.len() >= RECENT_MAX {
            self.rotate();
        }
        let current = &mut self.sets[self.current];
        if current.is_empty() {
            self.started = now;
        }
        current.insert_unique(hash, d, |x| Self::hash(&key, x));
        self.newest[self.current] = now;
        true
    }

    fn heap_bytes(&self) -> usize {
        size_of::<Self>() + self.sets.iter().map(hashbrown::HashTable::allocation_size).sum::<usize>()
    }
}

impl Recent {
    /// Bytes it holds.
    pub(super) fn heap_bytes(&self) -> usize {
        match self {
            Recent::Empty => 0,
            Recent::Few(_) => size_of::<Few>(),
            Recent::Many(g) => g.heap_bytes(),
        }
    }

    /// Records `(origin, seq)` delivered at `now`; false if it was delivered already. `cfg` is
    /// the node's configuration, from which the sets' hash is keyed.
    pub(super) fn first(&mut self, now: Instant, cfg: &Config, origin: NodeId, seq: u64) -> bool {
        let d = Delivered::new(origin, seq);
        match self {
            Recent::Empty => {
                *self = Recent::Few(Box::new(Few::one(now, d)));
                true
            }
            Recent::Few(few) => {
                few.age(now);
                if few.held().any(|e| *e.0 == d) {
                    return false;
                }
                let n = usize::from(few.len);
                if n < FEW {
                    (few.entries[n], few.at[n]) = (d, now);
                    few.len += 1;
                    return true;
                }
                // Full: the sets take the few in the order they came, as if they had held
                // them from the first, then this one.
                let mut g = Box::new(Generations::new(cfg, few.at[0]));
                for (e, at) in few.held() {
                    g.first(at, *e);
                }
                let first = g.first(now, d);
                *self = Recent::Many(g);
                first
            }
            Recent::Many(g) => g.first(now, d),
        }
    }

    /// Forgets what the window let go of by `now`, and gives back the room a burst of
    /// deliveries left ([`trimmed`], the rule of the node's other buffers): a node that
    /// delivered a stream and fell quiet holds nothing of it once the window has passed over
    /// its last message. Called every tick.
    pub(super) fn trim(&mut self, now: Instant) {
        let g = match self {
            Recent::Empty => return,
            Recent::Few(few) => {
                few.age(now);
                if few.len == 0 {
                    *self = Recent::Empty;
                }
                return;
            }
            Recent::Many(g) => g,
        };
        g.age(now);
        if g.sets.iter().all(hashbrown::HashTable::is_empty) {
            *self = Recent::Empty;
            return;
        }
        let key = g.key;
        for set in &mut g.sets {
            if set.is_empty() {
                *set = hashbrown::HashTable::new();
            } else if let Some(keep) = trimmed(set.len(), set.capacity()) {
                set.shrink_to(keep, |x| Generations::hash(&key, x));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::with_trusted_id(NodeId::from_u128(1), ([127, 0, 0, 1], 1).into())
    }

    fn held(r: &Recent) -> usize {
        match r {
            Recent::Empty => 0,
            Recent::Few(few) => usize::from(few.len),
            Recent::Many(g) => g.sets.iter().map(hashbrown::HashTable::len).sum(),
        }
    }

    proptest::proptest! {
        /// The record answers within its bounds: a pair delivered less than a window ago and
        /// fewer than `RECENT_MAX` deliveries ago is remembered; one never delivered, or last
        /// delivered two windows or `2 * RECENT_MAX` deliveries ago, is not; at most
        /// `2 * RECENT_MAX` are held.
        #[test]
        fn recent_deliveries_are_remembered_within_their_bounds(
            ops in proptest::collection::vec((0u8..6, 0u64..40, 0u64..6_000_000), 1..3000),
        ) {
            let cfg = cfg();
            let mut r = Recent::default();
            // Each pair's last recording: when, and the number of recordings before it.
            let mut last = std::collections::BTreeMap::new();
            let mut recorded = 0usize;
            let mut now = Instant::ZERO;
            for (origin, seq, step) in ops {
                // Mostly small steps; a few jump past the window.
                now += core::time::Duration::from_micros(step % 97 * 100 + step / 5_900_000 * 31_000_000);
                let (origin, seq) = (NodeId::from_u128(u128::from(origin) << 120), seq);
                let first = r.first(now, &cfg, origin, seq);
                match last.get(&(origin, seq)) {
                    None => proptest::prop_assert!(first, "never delivered, yet remembered"),
                    Some(&(t, n)) => {
                        let (age, later) = (now - t, recorded - n - 1);
                        if age < RECENT_WINDOW && later < RECENT_MAX {
                            proptest::prop_assert!(!first, "forgotten after {age:?} and {later} deliveries");
                        }
                        if age >= 2 * RECENT_WINDOW || later >= 2 * RECENT_MAX {
                            proptest::prop_assert!(first, "remembered after {age:?} and {later} deliveries");
                        }
                    }
                }
                if first {
                    last.insert((origin, seq), (now, recorded));
                    recorded += 1;
                }
                proptest::prop_assert!(held(&r) <= 2 * RECENT_MAX);
            }
        }
    }

    /// Three deliveries within a window cost a 104-byte list; the fourth moves them all into
    /// the sets, each still remembered; a list forgets each entry a window after it came, and
    /// is freed at the tick once it holds none.
    #[test]
    fn a_few_deliveries_are_held_in_a_small_list() {
        assert_eq!(size_of::<Few>(), 104);
        assert_eq!(size_of::<Recent>(), 16);
        let cfg = cfg();
        let mut r = Recent::default();
        let o = NodeId::from_u128(7);
        let t = |ms: u64| Instant::ZERO + core::time::Duration::from_millis(ms);
        for seq in 0..3 {
            assert!(r.first(t(seq), &cfg, o, seq));
        }
        assert!(matches!(r, Recent::Few(_)));
        assert_eq!(r.heap_bytes(), 104);
        assert!(!r.first(t(5), &cfg, o, 1), "held in the list");
        assert!(r.first(t(6), &cfg, o, 3));
        assert!(matches!(r, Recent::Many(_)), "the fourth fills the sets");
        // What one delivery costs in the sets, where the list is 104 bytes: the 112-byte box
        // and a table of four slots (116 bytes, jemalloc's 128-byte class, where hashbrown
        // reads its control bytes 16 at a time).
        assert_eq!(size_of::<Generations>(), 112);
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        {
            let mut g = Generations::new(&cfg, t(0));
            g.first(t(0), Delivered::new(o, 1));
            assert_eq!(g.heap_bytes(), 112 + 116);
        }
        for seq in 0..4 {
            assert!(!r.first(t(7), &cfg, o, seq), "{seq} remembered through the move");
        }

        let mut r = Recent::default();
        let w = RECENT_WINDOW.as_millis() as u64;
        assert!(r.first(t(0), &cfg, o, 1));
        assert!(r.first(t(10), &cfg, o, 2));
        assert!(!r.first(t(w - 1), &cfg, o, 1), "within the window");
        assert!(r.first(t(w), &cfg, o, 1), "a window after it: forgotten, and held again");
        assert_eq!(held(&r), 2);
        assert!(!r.first(t(w + 9), &cfg, o, 2));
        r.trim(t(2 * w - 1));
        assert_eq!(held(&r), 1, "the second 1 is a window old only at {}", 2 * w);
        r.trim(t(2 * w));
        assert!(matches!(r, Recent::Empty));
        assert_eq!(r.heap_bytes(), 0);
    }

    #[test]
    fn recent_forgets_the_oldest_when_full() {
        let cfg = cfg();
        let mut r = Recent::default();
        let origin = NodeId::from_u128(7);
        let n = 3 * RECENT_MAX as u64 + 5;
        for seq in 0..n {
            assert!(r.first(Instant::ZERO, &cfg, origin, seq));
            assert!(held(&r) <= 2 * RECENT_MAX);
        }
        for seq in n - RECENT_MAX as u64..n {
            assert!(!r.first(Instant::ZERO, &cfg, origin, seq), "{seq} of the last {RECENT_MAX} forgotten");
        }
        assert!(r.first(Instant::ZERO, &cfg, origin, n - 2 * RECENT_MAX as u64 - 1), "the oldest went first");
    }

    /// Quiet after its last delivery, a node holds nothing of the record from the first tick a
    /// window after that delivery on, however long before it the stream began.
    #[test]
    fn nothing_is_held_once_the_window_has_passed_over_the_last_delivery() {
        let cfg = cfg();
        let mut r = Recent::default();
        let origin = NodeId::from_u128(7);
        let last = Instant::ZERO + core::time::Duration::from_secs(10);
        assert!(r.first(Instant::ZERO, &cfg, origin, 1));
        assert!(r.first(last, &cfg, origin, 2));
        r.trim(last + (RECENT_WINDOW - core::time::Duration::from_micros(1)));
        assert!(r.heap_bytes() > 0, "the last delivery is still within the window");
        r.trim(last + RECENT_WINDOW);
        assert_eq!(r.heap_bytes(), 0);
    }

    #[test]
    fn a_record_gives_its_room_back_once_the_window_has_passed() {
        let cfg = cfg();
        let mut r = Recent::default();
        assert_eq!(r.heap_bytes(), 0, "nothing held before a delivery");
        let origin = NodeId::from_u128(7);
        for seq in 0..1000 {
            assert!(r.first(Instant::ZERO, &cfg, origin, seq));
        }
        let burst = r.heap_bytes();
        assert!(burst > 1000 * 24);
        r.trim(Instant::ZERO);
        assert_eq!(r.heap_bytes(), burst, "kept while within the window");
        // Ten more half a window later, and ten a window later: the burst's thousand leave
        // once the window has passed over the first ten.
        let w = RECENT_WINDOW;
        for seq in 1000..1010 {
            assert!(r.first(Instant::ZERO + w / 2, &cfg, origin, seq));
        }
        for seq in 2000..2010 {
            assert!(r.first(Instant::ZERO + w, &cfg, origin, seq));
        }
        assert!(!r.first(Instant::ZERO + w, &cfg, origin, 1005), "the first ten are still remembered");
        let later = Instant::ZERO + w + w / 2;
        r.trim(later);
        assert_eq!(held(&r), 10);
        assert!(r.heap_bytes() < burst / 8, "{} of {burst} bytes kept for ten", r.heap_bytes());
        assert!(!r.first(later, &cfg, origin, 2005), "the last ten are still remembered");
        assert!(r.first(later, &cfg, origin, 5), "the burst is forgotten");
        r.trim(later + 2 * w);
        assert_eq!(r.heap_bytes(), 0);
    }
}
