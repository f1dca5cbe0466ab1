//! [`VecMap`]: the sorted-vector map of a node's peers and connections, which remembers where
//! its last lookup found its key.

use std::cmp::Ordering;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use super::timers::trimmed;

/// A map kept as a vector of `(key, value)` sorted by key, as [`litemap::LiteMap`], that
/// remembers the position of the last key it found. One input looks up the same connection
/// or peer several times (each step of a frame's handling finds its record anew): the
/// second and later lookups check one entry instead of searching again. The remembered
/// position is only a guess, checked against the key before use, so it cannot change what
/// a lookup returns; an insertion or removal may make it wrong, and the next lookup simply
/// searches. (An atomic, so that a node stays `Sync`; relaxed loads and stores are plain
/// ones.)
pub(super) struct VecMap<K, V> {
    items: Vec<(K, V)>,
    hint: AtomicU32,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        Self { items: Vec::new(), hint: AtomicU32::new(0) }
    }
}

impl<K: Ord, V> VecMap<K, V> {
    /// An empty map; it allocates at its first insertion.
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// The number of entries.
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds no entry.
    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// `Ok(position)` of `key`, or `Err(position)` where it would be inserted.
    pub(super) fn find_index(&self, key: &K) -> Result<usize, usize> {
        let hint = self.hint.load(Relaxed) as usize;
        if self.items.get(hint).is_some_and(|(k, _)| k == key) {
            return Ok(hint);
        }
        self.items.binary_search_by(|(k, _)| k.cmp(key)).map(|i| self.remember(i))
    }

    /// [`VecMap::find_index`] for a key greater than every entry before position `from`: keys
    /// looked up in increasing order (a leaf set's members listed round the ring from the
    /// farthest counter-clockwise one, a table row's by column) each search on from where the
    /// one before ended ([`gallop`]). A leaf set's members hold the ids closest to ours, so few
    /// other records lie between two of them in the map, and each search starts near its key,
    /// in the cache lines the one before read.
    pub(super) fn find_after(&self, key: &K, from: usize) -> Result<usize, usize> {
        gallop(self.items.len(), Start::After(from), |i| self.items[i].0.cmp(key)).map(|i| self.remember(i))
    }

    /// Remembers position `i` as the last found; gives it back.
    fn remember(&self, i: usize) -> usize {
        // A node holds far fewer than 2^32 entries; a position that does not fit is not
        // remembered.
        if let Ok(r) = u32::try_from(i) {
            self.hint.store(r, Relaxed);
        }
        i
    }

    /// The value of `key`.
    pub(super) fn get(&self, key: &K) -> Option<&V> {
        let i = self.find_index(key).ok()?;
        Some(&self.items[i].1)
    }

    /// The value of `key`, to change.
    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = self.find_index(key).ok()?;
        Some(&mut self.items[i].1)
    }

    /// Whether `key` has an entry.
    pub(super) fn contains_key(&self, key: &K) -> bool {
        self.find_index(key).is_ok()
    }

    /// The entry at `index` in key order.
    pub(super) fn get_indexed(&self, index: usize) -> Option<(&K, &V)> {
        self.items.get(index).map(|(k, v)| (k, v))
    }

    /// Sets `key`'s value; the value it replaces, if any.
    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find_index(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.items[i].1, value)),
            Err(i) => {
                self.items.insert(i, (key, value));
                None
            }
        }
    }

    /// `key`'s value, inserted from `make` if it has none.
    pub(super) fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.find_index(&key) {
            Ok(i) => i,
            Err(i) => {
                self.items.insert(i, (key, make()));
                i
            }
        };
        &mut self.items[i].1
    }

    /// Takes `key`'s entry out; its value, if it had one.
    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.find_index(key).ok()?;
        Some(self.items.remove(i).1)
    }

    /// The entries in key order.
    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + ExactSizeIterator {
        self.items.iter().map(|(k, v)| (k, v))
    }

    /// The keys in order.
    pub(super) fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator {
        self.items.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub(super) fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.items.iter().map(|(_, v)| v)
    }

    /// The entries as a slice, in key order.
    pub(super) fn as_slice(&self) -> &[(K, V)] {
        &self.items
    }

    /// Gives back the room a burst left ([`trimmed`]).
    pub(super) fn trim(&mut self) {
        if let Some(keep) = trimmed(self.items.len(), self.items.capacity()) {
            self.items.shrink_to(keep);
        }
    }
}

impl<K: Ord, V> std::ops::Index<&K> for VecMap<K, V> {
    type Output = V;

    /// `key`'s value; panics if it has none (for callers that hold the key's entry).
    fn index(&self, key: &K) -> &V {
        self.get(key).expect("no entry for the key")
    }
}

/// Where a search by galloping starts among sorted entries ([`gallop`]).
#[derive(Clone, Copy)]
pub(super) enum Start {
    /// At this position, every entry before it being smaller than the key.
    After(usize),
    /// At the last entry, searching backwards.
    Back,
}

/// Where the key is (`Ok`) or would go (`Err`) among `n` distinct sorted entries, `cmp(i)`
/// comparing entry `i` with it: what a binary search answers, found by galloping from `start`
/// (the entries 1, 2, 4, ... away tried in turn until one is past the key), then searching the
/// span found in halves. Cheaper than a binary search over all of them when the key is near
/// the start, and reads the entries near it rather than a line of each half.
pub(super) fn gallop(n: usize, start: Start, cmp: impl Fn(usize) -> Ordering) -> Result<usize, usize> {
    // Entries before `lo` are smaller than the key, entries at `hi` and after greater.
    let (mut lo, mut hi) = match start {
        Start::After(from) => (from.min(n), n),
        Start::Back => (0, n),
    };
    let mut step = 1usize;
    loop {
        let i = match start {
            Start::After(from) => match from.checked_add(step - 1) {
                Some(i) if i < n => i,
                _ => break,
            },
            Start::Back => match n.checked_sub(step) {
                Some(i) => i,
                None => break,
            },
        };
        match (cmp(i), start) {
            (Ordering::Equal, _) => return Ok(i),
            (Ordering::Less, Start::Back) => {
                lo = i + 1;
                break;
            }
            (Ordering::Less, Start::After(_)) => lo = i + 1,
            (Ordering::Greater, Start::After(_)) => {
                hi = i;
                break;
            }
            (Ordering::Greater, Start::Back) => hi = i,
        }
        step *= 2;
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match cmp(mid) {
            Ordering::Equal => return Ok(mid),
            Ordering::Less => lo = mid + 1,
            Ordering::Greater => hi = mid,
        }
    }
    Err(lo)
}

#[cfg(test)]
mod tests {
    use super::VecMap;

    #[test]
    fn behaves_as_a_sorted_map_whatever_it_remembers() {
        let mut m: VecMap<u32, u32> = VecMap::new();
        let mut model = std::collections::BTreeMap::new();
        // A fixed pseudo-random walk of inserts, removals and lookups, several lookups of one
        // key in a row (where the remembered position is used) and lookups after the entries
        // moved (where it is stale).
        let mut x = 12345u32;
        for step in 0..20_000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let key = (x >> 16) % 64;
            match step % 5 {
                0 | 1 => assert_eq!(m.insert(key, step), model.insert(key, step)),
                2 => assert_eq!(m.remove(&key), model.remove(&key)),
                _ => {
                    for _ in 0..3 {
                        assert_eq!(m.get(&key), model.get(&key));
                        assert_eq!(m.contains_key(&key), model.contains_key(&key));
                    }
                    if let Some(v) = m.get_mut(&key) {
                        *v += 1;
                        *model.get_mut(&key).unwrap() += 1;
                    }
                    let v = *m.get_or_insert_with(key + 64, || step);
                    assert_eq!(v, *model.entry(key + 64).or_insert(step));
                }
            }
            assert_eq!(m.len(), model.len());
        }
        assert!(m.iter().map(|(k, v)| (*k, *v)).eq(model.iter().map(|(k, v)| (*k, *v))));
        // Keys in increasing order, each searched from where the one before ended, whatever
        // the map holds: the answers of a search over all of it.
        for start in 0..130u32 {
            let mut from = 0;
            for key in (start..130).step_by(1 + start as usize % 7) {
                let want = m.as_slice().binary_search_by(|(k, _)| k.cmp(&key));
                let got = m.find_after(&key, from);
                assert_eq!(got, want, "key {key} from {from}");
                from = got.unwrap_or_else(|i| i);
            }
        }
        assert_eq!(m.get_indexed(0).map(|(k, _)| *k), model.keys().next().copied());
        assert_eq!(m.is_empty(), model.is_empty());
    }
}
