//! Cache hints: ask the processor to start loading memory that is about to be read, without
//! reading it. They change no value and no behaviour; a caller that runs many nodes and knows
//! which one runs next ([`crate::Node::prefetch`]) has the loads overlap its current work.

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
