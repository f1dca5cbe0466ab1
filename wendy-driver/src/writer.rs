//! What a connection's writer task does apart from writing: coalescing queued chunks.

use bytes::Bytes;

/// Most bytes joined into one write.
const MAX_WRITE: usize = 1 << 20;

/// The bytes of one write: `first`, joined with whatever `next` has ready (up to about 1 MiB)
/// in `joined` if there is more, so that many queued chunks cost one syscall.
pub fn coalesce<'a>(first: &'a Bytes, mut next: impl FnMut() -> Option<Bytes>, joined: &'a mut Vec<u8>) -> &'a [u8] {
    let Some(second) = next() else { return first };
    joined.clear();
    joined.extend_from_slice(first);
    joined.extend_from_slice(&second);
    while joined.len() < MAX_WRITE {
        match next() {
            Some(more) => joined.extend_from_slice(&more),
            None => break,
        }
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_what_is_ready() {
        let first = Bytes::from_static(b"ab");
        let mut rest = vec![Bytes::from_static(b"cd"), Bytes::from_static(b"e")].into_iter();
        let mut joined = Vec::new();
        assert_eq!(coalesce(&first, || rest.next(), &mut joined), b"abcde");
        let mut joined = Vec::new();
        assert_eq!(coalesce(&first, || None, &mut joined), b"ab");
    }
}
