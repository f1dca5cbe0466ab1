//! Target 1: the frame decoder over arbitrary bytes in arbitrary chunkings.

use bytes::Bytes;

use crate::wire::{self, FrameDecoder, Message, DEFAULT_MAX_FRAME, LENGTH_PREFIX};

/// Maximum frame sizes the decoder target picks from (the first input byte chooses).
const DECODER_MAX_FRAMES: [usize; 8] = [0, 1, 5, 16, 64, 512, 4096, DEFAULT_MAX_FRAME];

/// Target 1: the frame decoder over arbitrary bytes in arbitrary chunkings.
///
/// Input layout: byte 0 picks the maximum frame size, byte 1 the number `k` of chunk bytes that
/// follow (0..=15), then `k` chunk bytes (used cyclically), then the stream. A chunk byte gives
/// the chunk's size (its low 6 bits, plus one), whether it is pushed as an owned `Bytes`
/// (`push_bytes`, zero-copy slicing) or copied (`push`) (bit 7), and whether the decoder is
/// drained after it or the next chunk is pushed first (bit 6).
///
/// # Panics
/// On a bug: a panic inside the decoder, a body over the maximum, more than one incomplete frame
/// buffered, a result that depends on the chunking, or an accepted message that does not
/// survive re-encoding.
pub fn decoder(data: &[u8]) {
    let (max_frame, chunks, stream) = match data {
        [m, k, rest @ ..] => {
            let k = usize::from(k & 0x0f).min(rest.len());
            let (chunks, stream) = rest.split_at(k);
            (DECODER_MAX_FRAMES[usize::from(m & 7)], chunks.to_vec(), stream)
        }
        _ => (DEFAULT_MAX_FRAME, Vec::new(), data),
    };
    // One owned chunk, as a driver hands over a read buffer.
    let whole = decode_stream(max_frame, stream, &[], true);
    if !chunks.is_empty() {
        let chunked = decode_stream(max_frame, stream, &chunks, false);
        assert_eq!(whole, chunked, "the decoder's results depend on the chunking");
    }
    let bytewise = decode_stream(max_frame, stream, &[0], false);
    assert_eq!(whole, bytewise, "the decoder's results depend on the chunking (byte by byte)");
}

/// The most a call of [`decoder`] on `len` input bytes may allocate at once (checked by the
/// cargo-fuzz target with a measuring allocator): proportional to the bytes received, never
/// to what a length prefix or an element count announces.
pub fn decoder_alloc_bound(len: usize) -> usize {
    32 * len + 32 * 1024
}

/// What a connection sees of a stream: the messages decoded (re-encoded, concatenated, so that
/// comparing chunkings costs memory in proportion to the input only), how many, and the error
/// that closed the connection, if any.
#[derive(Debug, PartialEq, Eq)]
struct StreamResult {
    encoded: Vec<u8>,
    count: usize,
    error: Option<wire::WireError>,
}

/// Feeds `stream` to a decoder in the chunks that `chunks` describe (cyclically; see
/// [`decoder`]), or in one owned chunk if `chunks` is empty, as a node does: the first error
/// ends the connection.
fn decode_stream(max_frame: usize, stream: &[u8], chunks: &[u8], whole: bool) -> StreamResult {
    let mut dec = FrameDecoder::new(max_frame);
    let mut res = StreamResult { encoded: Vec::new(), count: 0, error: None };
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let (n, owned, drain) = if whole {
            (rest.len(), true, true)
        } else {
            let c = chunks[i % chunks.len()];
            (usize::from(c & 0x3f) + 1, c & 0x80 != 0, c & 0x40 == 0)
        };
        i += 1;
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        if owned {
            dec.push_bytes(Bytes::copy_from_slice(chunk));
        } else {
            dec.push(chunk);
        }
        if !drain && !rest.is_empty() {
            continue;
        }
        loop {
            match dec.next_frame() {
                Ok(None) => break,
                Ok(Some(body)) => {
                    assert!(body.len() <= max_frame, "body of {} bytes over the maximum {max_frame}", body.len());
                    match wire::decode_body(body) {
                        Ok(msg) => {
                            check_reencodes(&msg, &mut res.encoded);
                            res.count += 1;
                        }
                        Err(e) => {
                            res.error = Some(e);
                            return res;
                        }
                    }
                }
                Err(e) => {
                    assert!(matches!(e, wire::WireError::FrameTooLarge { .. }), "unexpected framing error {e:?}");
                    assert_eq!(dec.buffered(), 0, "an oversized frame's bytes stay buffered");
                    res.error = Some(e);
                    return res;
                }
            }
        }
        // Only an incomplete frame (or an incomplete length prefix) may stay buffered.
        assert!(
            dec.buffered() < LENGTH_PREFIX + max_frame,
            "decoder holds {} bytes with a maximum frame of {max_frame}",
            dec.buffered()
        );
    }
    res
}

/// A message the decoder accepted must respect the bounds and encode to a frame that decodes
/// to the same message; the frame is appended to `out`.
fn check_reencodes(msg: &Message, out: &mut Vec<u8>) {
    assert!(msg.validate().is_ok(), "decoder accepted a message that breaks a bound: {msg:?}");
    let start = out.len();
    wire::encode_into(msg, out);
    let frame = Bytes::copy_from_slice(&out[start..]);
    let again = wire::decode_frame(frame, usize::MAX).expect("a decoded message re-encodes to a valid frame");
    assert_eq!(&again, msg, "decode(encode(decode(bytes))) differs");
}
