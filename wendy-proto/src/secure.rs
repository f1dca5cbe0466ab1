//! The secure transport: a Noise XX handshake on every connection, then every frame encrypted
//! and authenticated with the keys it agreed.
//!
//! ```text
//! frame      = length:u32be  kind:u8  rest
//! handshake  = kind 0xE0, rest = one Noise handshake message
//! reject     = kind 0xE1, rest = reason:u8        (plaintext; only before the peer's first data frame)
//! data       = kind 0xE2, rest = chunk+           (a record: whole plaintext wire frames, sealed)
//! chunk      = Noise transport message of at most 65,535 bytes (its last 16 bytes the tag)
//! record     = (length:u32be  body)+              (the plaintext: wire frames as in crate::wire)
//! ```
//!
//! The handshake is `Noise_XX_25519_ChaChaPoly_BLAKE2s`, or `Noise_XXpsk3_…` when the
//! credentials have a pre-shared key: three messages (dialler `e`; acceptor `e, ee, s, es` and
//! its node info; dialler `s, se` and its node info), so each side proves its static key and
//! the node info travels encrypted.
//!
//! After it, the frames a node queues for one connection during one input (until its outputs
//! are polled) are sealed together: packed into records of whole frames of at most one Noise
//! message's plaintext (65,519 bytes), one encryption and one tag per record, not per frame. A
//! frame larger than that is a record of its own, sealed in consecutive chunks. The receiver
//! opens a whole record, and only then decodes the frames inside it: nothing of a record that
//! fails to authenticate is read. Nonces are the per-direction message counters, never
//! reused; both sides rekey a direction after every `rekey_after` messages in it, at the same
//! message, since the stream is ordered. The length prefix is not encrypted (as in libp2p's
//! Noise framing): changing it makes the chunks fail to authenticate.
//!
//! The cipher is ring's implementation with the crate's `ring` feature (the default), and
//! RustCrypto's `chacha20poly1305` without it; the two produce the same bytes.
//!
//! Randomness: snow draws the ephemeral keys from the [`CryptoResolver`]'s generator. Ours is a
//! ChaCha20 generator seeded with 32 bytes drawn, per handshake, from the node's own ChaCha20
//! generator, which is seeded from [`Config::entropy`](crate::Config::entropy): reproducible in
//! a simulation, unpredictable when the driver supplies the OS's entropy.

use bytes::{Bytes, BytesMut};
use chacha20::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng};
use serde::{Deserialize, Serialize};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

use crate::credentials::PSK_LEN;
use crate::identity::{Identity, PublicKey, KEY_LEN};
use crate::info::NodeInfo;
use crate::wire::{Probe, WireError, LENGTH_PREFIX, MAX_PROOF};

/// The Noise protocol without a pre-shared key.
pub(crate) const NOISE_XX: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// The Noise protocol with the credentials' pre-shared key mixed in after the third message.
pub(crate) const NOISE_XX_PSK: &str = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s";
/// Bound into every handshake: a peer speaking another version fails it (v2: records of
/// several frames; v3: the handshake payloads carry readiness and a probe).
const PROLOGUE: &[u8] = b"wendy/noise/v3";
/// Largest Noise message.
pub(crate) const MAX_NOISE: usize = 65_535;
/// Authentication tag of every sealed chunk.
pub(crate) const TAG: usize = 16;
/// Largest plaintext sealed in one chunk.
pub(crate) const CHUNK: usize = MAX_NOISE - TAG;
/// Least room a node's buffer of sealed records is given when it must grow.
const SEAL_BUFFER: usize = 8 << 10;
/// A direction is rekeyed after this many messages by default.
pub const DEFAULT_REKEY: u64 = 1 << 20;

/// Frame kind: a Noise handshake message.
pub(crate) const KIND_HANDSHAKE: u8 = 0xE0;
/// Frame kind: a refusal of the handshake, in plaintext.
pub(crate) const KIND_REJECT: u8 = 0xE1;
/// Frame kind: a sealed wire frame body.
pub(crate) const KIND_DATA: u8 = 0xE2;

/// The largest data frame body (kind byte, chunks and tags) a peer sends when its frame bodies
/// are at most `max_frame` bytes: a record holds several frames in at most [`CHUNK`] bytes, or
/// one frame (length prefix included) of any size.
pub(crate) fn sealed_max(max_frame: usize) -> usize {
    let plain = (max_frame + LENGTH_PREFIX).max(CHUNK);
    1 + plain + TAG * plain.div_ceil(CHUNK)
}

/// What each side sends, encrypted, in its handshake message.
#[derive(Serialize, Deserialize)]
pub(crate) struct Payload {
    pub(crate) info: NodeInfo,
    pub(crate) proof: Vec<u8>,
    /// The acceptor's: whether it is a ready member of the ring (as `HelloAck::ready`).
    pub(crate) ready: bool,
    /// The dialler's: the probe or announcement its connection was dialled for (as
    /// `Auth::probe`).
    pub(crate) probe: Option<Probe>,
}

impl Payload {
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Serialising plain values into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self, WireError> {
        let p: Payload = postcard::from_bytes(b).map_err(|_| WireError::Malformed)?;
        if !p.info.is_valid() || p.proof.len() > MAX_PROOF {
            return Err(WireError::OutOfBounds);
        }
        Ok(p)
    }
}

/// snow's primitives, with our seeded generator as its source of randomness.
struct SeededResolver {
    seed: [u8; 32],
}

struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(self.seed))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    /// ring's ChaCha20-Poly1305 with the `ring` feature, RustCrypto's otherwise: the same
    /// cipher and the same bytes (`tests::ring_and_rustcrypto_ciphers_interoperate`), ring's
    /// 3.8 times as fast on a 926-byte record (`seal_open` in `benches/proto.rs`).
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        #[cfg(feature = "ring")]
        if let Some(c) = snow::resolvers::RingResolver.resolve_cipher(choice) {
            return Some(c);
        }
        DefaultResolver.resolve_cipher(choice)
    }
}

/// The node's cryptographic generator, ChaCha20 seeded from the configuration's entropy: the
/// `n`th 32-byte seed of its stream (words `8n` to `8n + 7`). A node keeps only how many it has
/// drawn, not the generator (320 bytes): it draws one per handshake, far less often than it
/// would pay to keep one in every node of a large simulation.
pub(crate) fn crypto_draw(seed: [u8; 32], n: u64) -> [u8; 32] {
    let mut rng = ChaCha20Rng::from_seed(seed);
    rng.set_word_pos(u128::from(n) * 8);
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    s
}

/// One side of a Noise handshake in progress.
pub(crate) struct Handshake {
    state: snow::HandshakeState,
}

impl core::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Handshake").field("initiator", &self.state.is_initiator()).finish_non_exhaustive()
    }
}

impl Handshake {
    /// A handshake as dialler (`initiator`) or acceptor, proving `identity`, mixing in `psk`,
    /// with its ephemeral key drawn from a generator seeded with `seed`.
    pub(crate) fn new(
        initiator: bool,
        identity: &Identity,
        psk: Option<&[u8; PSK_LEN]>,
        seed: [u8; 32],
    ) -> Result<Self, snow::Error> {
        let name = if psk.is_some() { NOISE_XX_PSK } else { NOISE_XX };
        let params = name.parse()?;
        let mut b = snow::Builder::with_resolver(params, Box::new(SeededResolver { seed }))
            .local_private_key(identity.secret())?
            .prologue(PROLOGUE)?;
        if let Some(psk) = psk {
            b = b.psk(3, psk)?;
        }
        let state = if initiator { b.build_initiator()? } else { b.build_responder()? };
        Ok(Handshake { state })
    }

    /// The next handshake message carrying `payload`, as a whole frame.
    pub(crate) fn write(&mut self, payload: &[u8]) -> Result<Bytes, snow::Error> {
        let mut out = vec![0u8; LENGTH_PREFIX + 1 + MAX_NOISE];
        let n = self.state.write_message(payload, &mut out[LENGTH_PREFIX + 1..])?;
        out.truncate(LENGTH_PREFIX + 1 + n);
        out[LENGTH_PREFIX] = KIND_HANDSHAKE;
        finish_frame(&mut out);
        Ok(Bytes::from(out))
    }

    /// Reads the peer's handshake message (the frame after its kind byte); its payload.
    pub(crate) fn read(&mut self, msg: &[u8]) -> Result<Vec<u8>, snow::Error> {
        let mut payload = vec![0u8; msg.len()];
        let n = self.state.read_message(msg, &mut payload)?;
        payload.truncate(n);
        Ok(payload)
    }

    /// The static key the peer proved, once its handshake message carrying it was read.
    pub(crate) fn remote_key(&self) -> Option<PublicKey> {
        let k: [u8; KEY_LEN] = self.state.get_remote_static()?.try_into().ok()?;
        Some(PublicKey(k))
    }

    /// The transport keys, once the three messages are through.
    pub(crate) fn finish(self, rekey_after: u64) -> Result<Channel, snow::Error> {
        Ok(Channel { transport: self.state.into_transport_mode()?, rekey_after: rekey_after.max(1) })
    }
}

/// The transport keys of an open connection, one per direction.
pub(crate) struct Channel {
    transport: snow::TransportState,
    rekey_after: u64,
}

impl core::fmt::Debug for Channel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Channel")
            .field("sent", &self.transport.sending_nonce())
            .field("received", &self.transport.receiving_nonce())
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// Seals `frames` (whole plaintext wire frames, length prefixes included, as
    /// [`wire::encode_into`](crate::wire::encode_into) writes them) into data frames appended to
    /// `out`, and returns them as one [`Bytes`] split off `out`.
    ///
    /// Frames are packed into records: each record holds as many whole frames as fit in one
    /// Noise message ([`CHUNK`] bytes of plaintext), so a batch of small frames costs one
    /// encryption and one tag per 65,519 bytes, not one per frame; a frame larger than a
    /// Noise message is a record of its own, sealed in consecutive chunks.
    pub(crate) fn seal_frames(&mut self, frames: &[u8], out: &mut BytesMut) -> Result<Bytes, snow::Error> {
        let mut rest = frames;
        while !rest.is_empty() {
            let mut take = frame_len(rest, 0);
            while take < rest.len() {
                let next = frame_len(rest, take);
                if take + next > CHUNK {
                    break;
                }
                take += next;
            }
            let take = take.min(rest.len());
            self.seal_record(&rest[..take], out)?;
            rest = &rest[take..];
        }
        Ok(out.split().freeze())
    }

    /// A data frame sealing an empty record (which a node never sends; for hostile tests).
    #[cfg(feature = "testing")]
    pub(crate) fn seal_empty(&mut self, out: &mut BytesMut) -> Result<Bytes, snow::Error> {
        self.seal_record(&[], out)?;
        Ok(out.split().freeze())
    }

    /// Appends one data frame sealing `body` to `out`.
    fn seal_record(&mut self, body: &[u8], out: &mut BytesMut) -> Result<(), snow::Error> {
        let chunks = body.len().div_ceil(CHUNK).max(1);
        let start = out.len();
        let max = LENGTH_PREFIX + 1 + body.len() + chunks * TAG;
        if out.capacity() - out.len() < max {
            // Room for more than this record: the records of the other connections sealed in
            // the same poll go after it without a buffer each.
            out.reserve(max.max(SEAL_BUFFER));
        }
        out.resize(start + max, 0);
        out[start + LENGTH_PREFIX] = KIND_DATA;
        let mut at = start + LENGTH_PREFIX + 1;
        let mut pieces = body.chunks(CHUNK);
        let empty: &[u8] = &[];
        for _ in 0..chunks {
            let piece = pieces.next().unwrap_or(empty);
            match self.transport.write_message(piece, &mut out[at..]) {
                Ok(n) => at += n,
                Err(e) => {
                    out.truncate(start);
                    return Err(e);
                }
            }
            if self.transport.sending_nonce() % self.rekey_after == 0 {
                self.transport.rekey_outgoing();
            }
        }
        out.truncate(at);
        finish_frame(&mut out[start..]);
        Ok(())
    }

    /// Opens a data frame's chunks (the frame after its kind byte) into its plaintext, written
    /// into `buf` (reused from call to call: it allocates only when earlier plaintexts are
    /// still referenced) and split off it; an error if any chunk fails to authenticate
    /// (tampered, replayed, reordered or forged), and then nothing of the record is returned.
    pub(crate) fn open(&mut self, sealed: &[u8], buf: &mut BytesMut) -> Result<Bytes, WireError> {
        if sealed.len() < TAG {
            return Err(WireError::Unauthenticated);
        }
        buf.clear();
        buf.reserve(sealed.len());
        buf.resize(sealed.len(), 0);
        let mut at = 0;
        for chunk in sealed.chunks(MAX_NOISE) {
            match self.transport.read_message(chunk, &mut buf[at..]) {
                Ok(n) => at += n,
                Err(_) => {
                    buf.clear();
                    return Err(WireError::Unauthenticated);
                }
            }
            if self.transport.receiving_nonce() % self.rekey_after == 0 {
                self.transport.rekey_incoming();
            }
        }
        buf.truncate(at);
        Ok(buf.split().freeze())
    }

    /// Seals one plaintext frame `body` (version byte and message) into a whole data frame:
    /// for tests, which look at records one by one.
    #[cfg(test)]
    pub(crate) fn seal(&mut self, body: &[u8]) -> Result<Bytes, snow::Error> {
        let mut out = BytesMut::new();
        self.seal_record(body, &mut out)?;
        Ok(out.freeze())
    }
}

/// The length of the whole frame (prefix included) at `at` in `frames`, or what is left of
/// `frames` if its prefix is cut short.
fn frame_len(frames: &[u8], at: usize) -> usize {
    let rest = &frames[at..];
    match rest.get(..LENGTH_PREFIX).and_then(|p| <[u8; LENGTH_PREFIX]>::try_from(p).ok()) {
        Some(p) => (LENGTH_PREFIX + u32::from_be_bytes(p) as usize).min(rest.len()),
        None => rest.len(),
    }
}

/// Writes the length prefix of a frame built in `out` (prefix space included).
fn finish_frame(out: &mut [u8]) {
    let len = u32::try_from(out.len() - LENGTH_PREFIX).unwrap_or(u32::MAX);
    out[..LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
}

/// The plaintext frame refusing a handshake with reason `code`.
pub(crate) fn reject_frame(code: u8) -> Bytes {
    let mut out = vec![0, 0, 0, 2, KIND_REJECT, code];
    finish_frame(&mut out);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, FrameDecoder, Message};

    fn open(ch: &mut Channel, sealed: &[u8]) -> Result<Bytes, WireError> {
        ch.open(sealed, &mut BytesMut::new())
    }

    #[test]
    fn each_draw_is_the_next_seed_of_one_stream() {
        let seed = [7u8; 32];
        let mut rng = ChaCha20Rng::from_seed(seed);
        for n in 0..40 {
            let mut s = [0u8; 32];
            rng.fill_bytes(&mut s);
            assert_eq!(crypto_draw(seed, n), s, "draw {n}");
        }
        assert_ne!(crypto_draw(seed, 0), crypto_draw([8; 32], 0));
    }

    fn pair(psk_a: Option<[u8; 32]>, psk_b: Option<[u8; 32]>, rekey: u64) -> Result<(Channel, Channel), snow::Error> {
        let (ia, ib) = (Identity::from_secret([1; 32]), Identity::from_secret([2; 32]));
        let mut a = Handshake::new(true, &ia, psk_a.as_ref(), [3; 32])?;
        let mut b = Handshake::new(false, &ib, psk_b.as_ref(), [4; 32])?;
        let m1 = a.write(&[])?;
        b.read(&m1[5..])?;
        let m2 = b.write(b"acceptor")?;
        assert_eq!(a.read(&m2[5..])?, b"acceptor");
        assert_eq!(a.remote_key(), Some(ib.public()));
        let m3 = a.write(b"dialler")?;
        assert_eq!(b.read(&m3[5..])?, b"dialler");
        assert_eq!(b.remote_key(), Some(ia.public()));
        Ok((a.finish(rekey)?, b.finish(rekey)?))
    }

    /// With the `ring` feature the node seals with ring's ChaCha20-Poly1305: its records must
    /// open with RustCrypto's (a node built without the feature) and the other way round, with
    /// the same bytes on the wire, through rekeys, and a tampered record must open with neither.
    #[cfg(feature = "ring")]
    #[test]
    fn ring_and_rustcrypto_ciphers_interoperate() {
        let make = |r: &dyn CryptoResolver| {
            let mut c = r.resolve_cipher(&CipherChoice::ChaChaPoly).expect("ChaChaPoly");
            c.set(&[9; 32]);
            c
        };
        let (mut ring, mut rust) = (make(&snow::resolvers::RingResolver), make(&DefaultResolver));
        for (i, len) in [0usize, 1, 15, 16, 17, 100, 926, 4096, CHUNK].into_iter().enumerate() {
            let nonce = [0, 1, 2, u64::from(u32::MAX) + 7, u64::MAX - 1][i % 5];
            let ad = [i as u8; 3];
            let plain: Vec<u8> = (0..len).map(|b| (b * 31 + i) as u8).collect();
            let (mut by_ring, mut by_rust) = (vec![0; len + TAG], vec![0; len + TAG]);
            assert_eq!(ring.encrypt(nonce, &ad, &plain, &mut by_ring), len + TAG);
            assert_eq!(rust.encrypt(nonce, &ad, &plain, &mut by_rust), len + TAG);
            assert_eq!(by_ring, by_rust, "{len} bytes at nonce {nonce}: the same bytes on the wire");
            let mut out = vec![0; len];
            assert_eq!(rust.decrypt(nonce, &ad, &by_ring, &mut out).expect("RustCrypto opens ring's"), len);
            assert_eq!(out, plain);
            assert_eq!(ring.decrypt(nonce, &ad, &by_rust, &mut out).expect("ring opens RustCrypto's"), len);
            assert_eq!(out, plain);
            by_ring[len / 2] ^= 1;
            assert!(ring.decrypt(nonce, &ad, &by_ring, &mut out).is_err(), "tampered, {len} bytes");
            assert!(rust.decrypt(nonce, &ad, &by_ring, &mut out).is_err(), "tampered, {len} bytes");
            assert!(ring.decrypt(nonce + 1, &ad, &by_rust, &mut out).is_err(), "another nonce");
            ring.rekey();
            rust.rekey();
        }
    }

    #[test]
    fn sealed_frames_open_only_once_and_in_order() {
        let (mut a, mut b) = pair(None, None, DEFAULT_REKEY).unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        for body in [&b"x"[..], &[], &big] {
            let f = a.seal(body).unwrap();
            assert_eq!(f.len(), LENGTH_PREFIX + 1 + body.len() + TAG * body.len().div_ceil(CHUNK).max(1));
            assert!(f.len() - LENGTH_PREFIX <= sealed_max(body.len().max(1)));
            assert_eq!(&open(&mut b, &f[5..]).unwrap()[..], body);
            // A replay of the same frame fails: its nonce was used.
            assert_eq!(open(&mut b, &f[5..]), Err(WireError::Unauthenticated));
            // The failed attempt does not move the receiver's counter.
            let g = a.seal(body).unwrap();
            assert_eq!(&open(&mut b, &g[5..]).unwrap()[..], body);
        }
        let mut f = a.seal(b"tamper me").unwrap().to_vec();
        f[7] ^= 1;
        assert_eq!(open(&mut b, &f[5..]), Err(WireError::Unauthenticated));
    }

    #[test]
    fn both_sides_rekey_at_the_same_message() {
        let (mut a, mut b) = pair(None, None, 3).unwrap();
        let (mut c, mut d) = pair(None, None, DEFAULT_REKEY).unwrap();
        let mut differs = false;
        for i in 0..10u8 {
            let (x, y) = (a.seal(&[i; 40]).unwrap(), c.seal(&[i; 40]).unwrap());
            // Same keys and nonces until the first rekey, different ones after.
            differs |= x != y;
            assert_eq!(i >= 3, differs, "message {i}");
            assert_eq!(&open(&mut b, &x[5..]).unwrap()[..], &[i; 40]);
            assert_eq!(&open(&mut d, &y[5..]).unwrap()[..], &[i; 40]);
            let back = b.seal(&[i]).unwrap();
            assert_eq!(&open(&mut a, &back[5..]).unwrap()[..], &[i]);
        }
    }

    #[test]
    fn different_pre_shared_keys_fail_the_third_message() {
        assert!(pair(Some([1; 32]), Some([1; 32]), DEFAULT_REKEY).is_ok());
        assert!(pair(Some([1; 32]), Some([2; 32]), DEFAULT_REKEY).is_err());
        assert!(pair(Some([1; 32]), None, DEFAULT_REKEY).is_err());
    }

    #[test]
    fn small_frames_share_a_record_and_large_ones_get_their_own() {
        let (mut a, mut b) = pair(None, None, DEFAULT_REKEY).unwrap();
        let mut frames = Vec::new();
        let mut sent = Vec::new();
        for i in 0..1000u32 {
            let m = Message::Ping { seq: i };
            wire::encode_into(&m, &mut frames);
            sent.push(m);
        }
        let big = Message::LeafSet { leaves: Vec::new() };
        // A frame of more than one Noise message, built by hand (the record layer does not
        // look inside frames).
        let mut huge = vec![0u8; LENGTH_PREFIX];
        huge.extend(std::iter::repeat_n(7u8, CHUNK + 100));
        let len = (huge.len() - LENGTH_PREFIX) as u32;
        huge[..LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
        frames.extend_from_slice(&huge);
        wire::encode_into(&big, &mut frames);
        let mut out = BytesMut::new();
        let sealed = a.seal_frames(&frames, &mut out).unwrap();
        // Three records: the pings, the huge frame (two chunks), the last small frame.
        let mut d = FrameDecoder::new(usize::MAX);
        d.push(&sealed);
        let mut plain = Vec::new();
        let mut records = 0;
        while let Some(rec) = d.next_frame().unwrap() {
            assert_eq!(rec[0], KIND_DATA);
            plain.extend_from_slice(&open(&mut b, &rec[1..]).unwrap());
            records += 1;
        }
        assert_eq!(records, 3);
        assert_eq!(plain, frames);
        // One tag per record, plus one for the second chunk of the huge frame.
        assert_eq!(sealed.len(), frames.len() + 3 * (LENGTH_PREFIX + 1) + 4 * TAG);
    }
}
