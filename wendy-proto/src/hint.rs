//! Cache hints: ask the processor to start loading memory that is about to be read, without
//! reading it. They change no value and no behaviour; a caller that runs many nodes and knows
//! which one runs next ([`crate::Node::prefetch`]) has the loads overlap its current work.

/// Starts loading the cache lines of a sorted index that its look-ups will read: every line
/// of a small one, and of a larger one (more than 32 lines) the lines a binary search reads
/// first, its middle, quarters and eighths; loading all of a large index at every input cost
/// as much as the misses it saved.
pub(crate) fn warm_index<T>(s: &[T]) {
    let n = s.len();
    if core::mem::size_of_val(s) <= 32 * 64 {
        warm_slice(s);
        return;
    }
    for k in [4, 2, 6, 1, 3, 5, 7] {
        prefetch_index::prefetch_index(s, n * k / 8);
    }
}

/// Starts loading every cache line of `s` (one hint per 64 bytes).
pub(crate) fn warm_slice<T>(s: &[T]) {
    let step = (64 / core::mem::size_of::<T>().max(1)).max(1);
    for i in (0..s.len()).step_by(step) {
        prefetch_index::prefetch_index(s, i);
    }
}

/// Starts loading the cache line that holds `x`.
pub(crate) fn warm<T>(x: &T) {
    prefetch_index::prefetch_index(core::slice::from_ref(x), 0);
}
