//! The stream side of the wire format: [`FrameDecoder`] splits received bytes into frame
//! bodies, bounded by the maximum frame size before anything is buffered.

use bytes::{Buf, Bytes, BytesMut};

use super::{WireError, LENGTH_PREFIX};

/// Splits a byte stream into frame bodies, whatever the chunking of the stream.
///
/// Frames that lie whole inside a pushed [`Bytes`] chunk are handed out as slices of it, without
/// copying. Only a frame split across chunks is assembled in a buffer of the decoder's own, which
/// therefore never holds more than one frame and is released as soon as that frame is complete.
/// A length prefix above the maximum is an error before any of its body is kept.
#[derive(Debug)]
pub struct FrameDecoder {
    /// A frame being assembled across chunks (empty most of the time).
    partial: BytesMut,
    /// The rest of the last chunk pushed, after `partial`.
    chunk: Bytes,
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder accepting bodies of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder { partial: BytesMut::new(), chunk: Bytes::new(), max_frame }
    }

    /// Changes the largest frame body accepted from now on.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// Appends bytes received from the stream (copied once; see [`FrameDecoder::push_bytes`]).
    pub fn push(&mut self, data: &[u8]) {
        self.push_bytes(Bytes::copy_from_slice(data));
    }

    /// Appends a chunk of the stream; whole frames inside it are later sliced out without copying.
    pub fn push_bytes(&mut self, mut data: Bytes) {
        if !self.chunk.is_empty() {
            // The caller pushed again without draining: keep the stream in order.
            let mut joined = BytesMut::with_capacity(self.chunk.len() + data.len());
            joined.extend_from_slice(&self.chunk);
            joined.extend_from_slice(&data);
            data = joined.freeze();
            self.chunk = Bytes::new();
        }
        // Complete a frame split across chunks, copying only its missing bytes.
        while !self.partial.is_empty() && !data.is_empty() {
            let need = match self.partial_len() {
                None => LENGTH_PREFIX - self.partial.len(),
                Some(len) if len > self.max_frame => break,
                Some(len) => (LENGTH_PREFIX + len).saturating_sub(self.partial.len()),
            };
            if need == 0 {
                break;
            }
            let take = need.min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data.advance(take);
        }
        self.chunk = data;
    }

    /// Bytes held that do not yet form a frame.
    pub fn buffered(&self) -> usize {
        self.partial.len() + self.chunk.len()
    }

    /// The next complete frame body, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, WireError> {
        if !self.partial.is_empty() {
            let Some(len) = self.partial_len() else { return Ok(None) };
            self.check(len)?;
            if self.partial.len() < LENGTH_PREFIX + len {
                return Ok(None);
            }
            // push_bytes copies exactly up to the end of the frame.
            let mut whole = std::mem::take(&mut self.partial);
            whole.advance(LENGTH_PREFIX);
            return Ok(Some(whole.freeze()));
        }
        let Some(len) = prefix(&self.chunk) else {
            self.stash();
            return Ok(None);
        };
        self.check(len)?;
        if self.chunk.len() < LENGTH_PREFIX + len {
            self.stash();
            return Ok(None);
        }
        let body = self.chunk.slice(LENGTH_PREFIX..LENGTH_PREFIX + len);
        self.chunk.advance(LENGTH_PREFIX + len);
        if self.chunk.is_empty() {
            // An emptied Bytes still holds its allocation: let it go.
            self.chunk = Bytes::new();
        }
        Ok(Some(body))
    }

    fn partial_len(&self) -> Option<usize> {
        prefix(&self.partial)
    }

    fn check(&mut self, len: usize) -> Result<(), WireError> {
        if len > self.max_frame {
            self.partial = BytesMut::new();
            self.chunk = Bytes::new();
            return Err(WireError::FrameTooLarge { len, max: self.max_frame });
        }
        Ok(())
    }

    /// Moves an incomplete frame at the end of the chunk into the decoder's own buffer, so the
    /// chunk (perhaps a large read buffer) is not kept alive by a few bytes.
    fn stash(&mut self) {
        if !self.chunk.is_empty() {
            self.partial.extend_from_slice(&self.chunk);
            self.chunk = Bytes::new();
        }
    }
}

fn prefix(b: &[u8]) -> Option<usize> {
    let p: [u8; LENGTH_PREFIX] = b.get(..LENGTH_PREFIX)?.try_into().ok()?;
    Some(u32::from_be_bytes(p) as usize)
}
