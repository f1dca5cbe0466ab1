//! The session layer: one per connection, the handshake that authenticates the peer, and the
//! framing of what follows it.
//!
//! Encrypted (the default): a Noise XX handshake ([`crate::secure`]) in which each side proves
//! its static key and sends its node info encrypted; the id must be derived from the key unless
//! the node trusts claimed ids, and the credentials must admit the key. Then every frame is
//! sealed with the connection's keys, and a frame that fails to open closes the connection.
//!
//! Plaintext (`insecure_plaintext`): `Hello` / `HelloAck` / `Auth` with an HMAC, keyed by the
//! credentials' pre-shared key, over both nonces, both ids and the prover's role.

use bytes::{Buf, Bytes};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::id::NodeId;
use crate::identity::PublicKey;
use crate::info::NodeInfo;
use crate::output::{ConnId, Event, Output, RejectReason};
use crate::secure::{self, Handshake, Payload};
use crate::time::Instant;
use crate::wire::{self, Message, Probe, WireError, NONCE_LEN};

use super::connections::{AwaitAuth, ConnIo, Phase};
use super::counters::Counter;
use super::membership::proximity;
use super::peer::Peer;
use super::Node;

/// Records larger than this are not opened into memory the connection keeps for the next one:
/// an idle connection holds at most this much.
const RX_KEEP: usize = 16 << 10;

const ROLE_ACCEPTOR: u8 = 1;
const ROLE_DIALER: u8 = 2;

/// The seed of a node's cryptographic generator: its entropy, mixed with what distinguishes
/// it from other nodes (seed, id, secret key), so that nodes given the same entropy by mistake
/// still draw different ephemeral keys.
pub(super) fn crypto_seed(cfg: &Config) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"wendy/csprng/v1");
    h.update(cfg.entropy);
    h.update(cfg.seed.to_le_bytes());
    h.update(cfg.info.id.to_bytes());
    if let Some(k) = &cfg.identity {
        h.update(k.secret());
    }
    h.finalize().into()
}

impl Node {
    /// Our outbound connection is established: the first handshake message goes out.
    pub(super) fn start_handshake(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let Phase::Dialing { .. } = &c.phase else { return };
        if c.timing() {
            let (rtt, id) = (now - c.opened, c.expected());
            if !self.timed_on(now, conn, id, rtt) {
                return;
            }
        }
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let Phase::Dialing { nonce } = &c.phase else { return };
        let nonce = **nonce;
        c.last_active = now;
        c.handshake_sent = Some(now);
        if self.cfg.insecure_plaintext {
            c.phase = Phase::AwaitHelloAck { nonce: Box::new(nonce) };
            let hello = Message::Hello { info: self.cfg.info.clone(), nonce };
            self.transmit(conn, &hello);
            return;
        }
        match self.new_handshake(true).and_then(|mut hs| Ok((hs.write(&[])?, hs))) {
            Ok((frame, hs)) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.phase = Phase::AwaitReply(Box::new(hs));
                }
                self.send_frame(conn, frame, Some(wire::NOISE_HANDSHAKE_KIND));
            }
            Err(_) => self.protocol_error(now, conn, "the Noise handshake could not start"),
        }
    }

    /// One frame body from the decoder.
    pub(super) fn on_frame(&mut self, now: Instant, conn: ConnId, body: Bytes) {
        if self.cfg.insecure_plaintext {
            match wire::decode_body(body) {
                Ok(msg) => {
                    self.stats.add(Counter::FramesIn, 1);
                    self.on_message(now, conn, msg);
                }
                Err(error) => self.decode_error(now, conn, error),
            }
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else { return };
        match body.first().copied() {
            Some(secure::KIND_DATA) => {
                let max_frame = c.max_frame as usize;
                let Some(ch) = c.channel.as_mut() else {
                    self.protocol_error(now, conn, "encrypted data before the handshake completed");
                    return;
                };
                let io = c.io.get_or_insert_with(|| Box::new(ConnIo::new(max_frame)));
                let plain = match ch.open(&body[1..], &mut io.rx) {
                    Ok(p) => p,
                    Err(error) => {
                        self.stats.add(Counter::AuthFailures, 1);
                        self.decode_error(now, conn, error);
                        return;
                    }
                };
                c.heard = true;
                if body.len() > RX_KEEP {
                    // A large record: its memory goes with its payloads, not kept for the next.
                    io.rx = bytes::BytesMut::new();
                }
                self.on_record(now, conn, plain);
            }
            Some(secure::KIND_HANDSHAKE) => {
                self.stats.add(Counter::FramesIn, 1);
                self.on_noise(now, conn, body.slice(1..));
            }
            Some(secure::KIND_REJECT) if !c.heard && body.len() == 2 => {
                self.stats.add(Counter::FramesIn, 1);
                self.on_rejected(now, conn, body[1]);
            }
            Some(kind) => self.decode_error(now, conn, WireError::FrameKind(kind)),
            None => self.decode_error(now, conn, WireError::Empty),
        }
    }

    /// The plaintext of an authenticated record: whole wire frames, handled in order until
    /// one of them closes the connection.
    fn on_record(&mut self, now: Instant, conn: ConnId, mut plain: Bytes) {
        if plain.is_empty() {
            self.decode_error(now, conn, WireError::Empty);
            return;
        }
        while !plain.is_empty() && self.conns.contains_key(&conn) {
            let Some(len) = plain.get(..wire::LENGTH_PREFIX).map(|p| {
                let mut b = [0u8; wire::LENGTH_PREFIX];
                b.copy_from_slice(p);
                u32::from_be_bytes(b) as usize
            }) else {
                self.decode_error(now, conn, WireError::Malformed);
                return;
            };
            if len > self.cfg.max_frame_size {
                self.decode_error(now, conn, WireError::FrameTooLarge { len, max: self.cfg.max_frame_size });
                return;
            }
            let end = wire::LENGTH_PREFIX + len;
            if plain.len() < end {
                self.decode_error(now, conn, WireError::Malformed);
                return;
            }
            let body = plain.slice(wire::LENGTH_PREFIX..end);
            plain.advance(end);
            match wire::decode_body(body) {
                Ok(msg) if !msg.is_handshake() && !matches!(msg, Message::Reject { .. }) => {
                    self.stats.add(Counter::FramesIn, 1);
                    self.on_message(now, conn, msg);
                }
                Ok(_) => {
                    self.protocol_error(now, conn, "handshake message inside an encrypted connection");
                    return;
                }
                Err(error) => {
                    self.decode_error(now, conn, error);
                    return;
                }
            }
        }
    }

    /// A Noise handshake message.
    fn on_noise(&mut self, now: Instant, conn: ConnId, msg: Bytes) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let phase = std::mem::replace(&mut c.phase, Phase::AwaitHello);
        match phase {
            Phase::AwaitHello => {
                // The dialler's ephemeral key: answer with ours, our static key and our info.
                let payload = self.my_payload(None);
                let step = self.new_handshake(false).and_then(|mut hs| {
                    hs.read(&msg)?;
                    Ok((hs.write(&payload)?, hs))
                });
                let Ok((frame, hs)) = step else {
                    self.auth_failed(now, conn);
                    return;
                };
                let Some(c) = self.conns.get_mut(&conn) else { return };
                // The dialler's info comes with the last message; until then nothing is recorded.
                c.phase = Phase::AwaitFinish(Box::new(hs));
                c.handshake_sent = Some(now);
                self.send_frame(conn, frame, Some(wire::NOISE_HANDSHAKE_KIND));
            }
            Phase::AwaitReply(mut hs) => {
                let Ok(payload) = hs.read(&msg) else {
                    self.auth_failed(now, conn);
                    return;
                };
                let Some((theirs, key)) = self.peer_payload(now, conn, &payload, hs.remote_key()) else {
                    return;
                };
                let Payload { info, proof, ready, .. } = theirs;
                let expected = self.conns.get(&conn).and_then(|c| c.expected());
                let reason = if expected.is_some_and(|e| e != info.id) {
                    Some(RejectReason::WrongId)
                } else {
                    self.check_peer(&info, &key, &proof)
                };
                if let Some(reason) = reason {
                    self.reject(now, conn, Some(info.id), reason);
                    return;
                }
                let probe = self.take_probe(conn, info.id);
                let mine = self.my_payload(probe.map(|(p, _)| p));
                let done = hs.write(&mine).and_then(|frame| Ok((frame, hs.finish(self.cfg.rekey_after)?)));
                let Ok((frame, channel)) = done else {
                    self.protocol_error(now, conn, "the Noise handshake could not complete");
                    return;
                };
                self.send_frame(conn, frame, Some(wire::NOISE_HANDSHAKE_KIND));
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.channel = Some(Box::new(channel));
                }
                self.open(now, conn, info);
                self.probe_answered(now, conn, probe, ready);
            }
            Phase::AwaitFinish(mut hs) => {
                let Ok(payload) = hs.read(&msg) else {
                    if self.cfg.credentials.as_ref().is_some_and(|c| c.psk().is_some()) {
                        // The pre-shared key enters at this message: a different one fails it.
                        self.reject(now, conn, None, RejectReason::BadCredentials);
                    } else {
                        self.auth_failed(now, conn);
                    }
                    return;
                };
                let Some((theirs, key)) = self.peer_payload(now, conn, &payload, hs.remote_key()) else {
                    return;
                };
                let Payload { info, proof, probe, .. } = theirs;
                if let Some(reason) = self.check_peer(&info, &key, &proof) {
                    self.reject(now, conn, Some(info.id), reason);
                    return;
                }
                let Ok(channel) = hs.finish(self.cfg.rekey_after) else {
                    self.protocol_error(now, conn, "the Noise handshake could not complete");
                    return;
                };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.channel = Some(Box::new(channel));
                }
                self.open(now, conn, info);
                if let Some(probe) = probe {
                    self.on_probe(now, conn, probe);
                }
            }
            phase => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.phase = phase;
                }
                self.protocol_error(now, conn, "unexpected Noise handshake message");
            }
        }
    }

    /// A handshake for a connection, its ephemeral key drawn from a fresh seed.
    fn new_handshake(&mut self, initiator: bool) -> Result<Handshake, snow::Error> {
        let psk = self.cfg.credentials.as_ref().and_then(|c| c.psk());
        let seed = crate::secure::crypto_draw(crypto_seed(&self.cfg), self.crypto_draws);
        self.crypto_draws += 1;
        Handshake::new(initiator, self.identity(), psk.as_ref(), seed)
    }

    /// Our static key pair: the configured one, or the one derived from the cryptographic
    /// generator's first draw (made at the first call and kept).
    fn identity(&mut self) -> &crate::identity::Identity {
        let cfg = &self.cfg;
        match &cfg.identity {
            Some(k) => k,
            None => self.identity.get_or_insert_with(|| {
                Box::new(crate::identity::Identity::from_secret(crate::secure::crypto_draw(crypto_seed(cfg), 0)))
            }),
        }
    }

    fn my_payload(&mut self, probe: Option<Probe>) -> Vec<u8> {
        let public = self.identity().public();
        let proof = self.cfg.credentials.as_ref().map(|c| c.prove(&public)).unwrap_or_default();
        Payload { info: self.cfg.info.clone(), proof, ready: self.is_ready(), probe }.encode()
    }

    /// The peer's payload and proven key from its handshake message; `None` (and the
    /// connection closed) if the payload is malformed.
    fn peer_payload(
        &mut self,
        now: Instant,
        conn: ConnId,
        payload: &[u8],
        key: Option<PublicKey>,
    ) -> Option<(Payload, PublicKey)> {
        match (Payload::decode(payload), key) {
            (Ok(p), Some(key)) => Some((p, key)),
            (Err(error), _) => {
                self.decode_error(now, conn, error);
                None
            }
            (Ok(_), None) => {
                self.protocol_error(now, conn, "the peer proved no static key");
                None
            }
        }
    }

    /// Why a peer that proved `key` and claims `info` may not be admitted, if it may not.
    fn check_peer(&self, info: &NodeInfo, key: &PublicKey, proof: &[u8]) -> Option<RejectReason> {
        if info.id == self.cfg.info.id {
            return Some(RejectReason::SelfId);
        }
        if !self.cfg.trusted_ids && key.node_id() != info.id {
            return Some(RejectReason::WrongKey);
        }
        if self.cfg.credentials.as_ref().is_some_and(|c| !c.admit(key, proof)) {
            return Some(RejectReason::BadCredentials);
        }
        None
    }

    /// A handshake message failed to authenticate: counted, reported, and the connection closed.
    fn auth_failed(&mut self, now: Instant, conn: ConnId) {
        self.stats.add(Counter::AuthFailures, 1);
        self.decode_error(now, conn, WireError::Unauthenticated);
    }

    /// A plaintext handshake message (`insecure_plaintext`).
    pub(super) fn on_handshake(&mut self, now: Instant, conn: ConnId, msg: Message) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let me = self.cfg.info.id;
        let phase = std::mem::replace(&mut c.phase, Phase::AwaitHello);
        match (phase, msg) {
            (Phase::AwaitHello, Message::Hello { info, nonce }) => {
                if info.id == me {
                    self.reject(now, conn, Some(info.id), RejectReason::SelfId);
                    return;
                }
                let mut my_nonce = [0u8; NONCE_LEN];
                self.rng.fill_bytes(&mut my_nonce);
                let proof = self.prove(&transcript(ROLE_ACCEPTOR, &nonce, &my_nonce, me, info.id));
                let ready = self.is_ready();
                let ack = Message::HelloAck { info: self.cfg.info.clone(), nonce: my_nonce, proof, ready };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.phase = Phase::AwaitAuth(Box::new(AwaitAuth { dialer_nonce: nonce, my_nonce, info }));
                    c.handshake_sent = Some(now);
                }
                self.transmit(conn, &ack);
            }
            (Phase::AwaitHelloAck { nonce }, Message::HelloAck { info, nonce: their, proof, ready }) => {
                let nonce = *nonce;
                let expected = c.expected();
                let reason = if info.id == me {
                    Some(RejectReason::SelfId)
                } else if expected.is_some_and(|e| e != info.id) {
                    Some(RejectReason::WrongId)
                } else if !self.verify(&transcript(ROLE_ACCEPTOR, &nonce, &their, info.id, me), &proof) {
                    Some(RejectReason::BadCredentials)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    self.reject(now, conn, Some(info.id), reason);
                    return;
                }
                let proof = self.prove(&transcript(ROLE_DIALER, &nonce, &their, me, info.id));
                let probe = self.take_probe(conn, info.id);
                self.transmit(conn, &Message::Auth { proof, probe: probe.map(|(p, _)| p) });
                self.open(now, conn, info);
                self.probe_answered(now, conn, probe, ready);
            }
            (Phase::AwaitAuth(w), Message::Auth { proof, probe }) => {
                let AwaitAuth { dialer_nonce, my_nonce, info } = *w;
                if self.verify(&transcript(ROLE_DIALER, &dialer_nonce, &my_nonce, info.id, me), &proof) {
                    self.open(now, conn, info);
                    if let Some(probe) = probe {
                        self.on_probe(now, conn, probe);
                    }
                } else {
                    self.reject(now, conn, Some(info.id), RejectReason::BadCredentials);
                }
            }
            (_, Message::Reject { reason }) => self.on_rejected(now, conn, reason),
            (phase, _) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.phase = phase;
                }
                self.protocol_error(now, conn, "unexpected message during the handshake");
            }
        }
    }

    /// The connection `conn`, dialled only to time node `id`'s set-up, was set up after `rtt`
    /// ([`Node::timed`]). What that sends `id` at once (the probe that vets a candidate that
    /// won its cell, which is then an untrusted table member) goes on this connection, whose
    /// handshake then stands for the probe, rather than on a second one dialled a moment
    /// later; if nothing is sent, the connection is closed, as ever. True if it goes on to its
    /// handshake.
    fn timed_on(&mut self, now: Instant, conn: ConnId, id: Option<NodeId>, rtt: core::time::Duration) -> bool {
        let Some(id) = id else {
            self.close_conn(now, conn);
            return false;
        };
        let conns = &self.conns;
        let free = self.peers.get(&id).is_some_and(|p| p.conn().is_none_or(|c| !conns.contains_key(&c)));
        if free {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.clear_timing();
            }
            if let Some(p) = self.peers.get_mut(&id) {
                p.set_conn(Some(conn));
            }
        }
        self.timed(now, id, rtt);
        let used = free && self.conns.get(&conn).is_some_and(|c| c.pending_len() > 0);
        if !used {
            if let Some(p) = self.peers.get_mut(&id).filter(|p| p.conn() == Some(conn)) {
                p.set_conn(None);
            }
            self.close_conn(now, conn);
        }
        used
    }

    pub(super) fn open(&mut self, now: Instant, conn: ConnId, info: NodeInfo) {
        let id = info.id;
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.phase = Phase::Open;
        c.set_peer(id);
        let limit = if self.cfg.insecure_plaintext {
            self.cfg.max_frame_size
        } else {
            secure::sealed_max(self.cfg.max_frame_size)
        };
        c.set_max_frame(limit);
        c.last_active = now;
        let first = self.conns.get(&conn).map_or(self.cfg.idle_timeout, |c| self.first_idle_check(c));
        self.arm_conn(conn, now + first);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let rtt = c.handshake_sent.map(|t| now - t);
        let pending = c.io.as_ref().map(|io| &io.pending);
        let peer = self.peers.get_or_insert_with(id, || Box::new(Peer::new(info.clone(), now)));
        peer.named_by = peer.named_by.saturating_add(1);
        peer.set_info(info);
        if let Some(rtt) = rtt {
            peer.set_proximity(proximity(rtt, peer.region(), &self.cfg.info.region, self.cfg.region_factor));
        }
        // A probe queued while the connection was being set up leaves now: its round trip is
        // timed from here, not from the dial (which would add the connection's own set-up and
        // make every node reached over a new connection look two or three times farther than
        // one reached over an open connection, so that it could never win a table cell).
        if let Some((seq, sent)) = peer.ping() {
            let queued = pending
                .into_iter()
                .flatten()
                .any(|m| matches!(m, Message::Ping { seq: s } | Message::Heartbeat { seq: s, .. } | Message::Announce { seq: s } if *s == seq));
            if queued && sent < now {
                peer.set_ping(Some((seq, now)));
            }
        }
        let current_open = peer
            .conn()
            .is_some_and(|pc| pc != conn && self.conns.get(&pc).is_some_and(|x| matches!(x.phase, Phase::Open)));
        if !current_open {
            peer.set_conn(Some(conn));
        }
        self.flush_window(conn);
    }

    pub(super) fn reject(&mut self, now: Instant, conn: ConnId, claimed: Option<NodeId>, reason: RejectReason) {
        self.stats.add(Counter::RejectedPeers, 1);
        let Some(c) = self.conns.get(&conn) else { return };
        let (addr, expected) = (c.addr(), c.expected());
        self.out.push_back(Output::Event(Event::PeerRejected { addr, claimed, reason }));
        // Tell the other side why, so that it need not wait for a timeout to find out.
        self.transmit(conn, &Message::Reject { reason: reason.code() });
        self.close_conn(now, conn);
        if let Some(id) = expected {
            self.peer_failed(now, id);
        }
    }

    /// The other side refused our handshake and said why.
    pub(super) fn on_rejected(&mut self, now: Instant, conn: ConnId, reason: u8) {
        let Some(c) = self.conns.get(&conn) else { return };
        let (addr, peer) = (c.addr(), c.peer().or(c.expected()));
        let reason = RejectReason::from_code(reason);
        self.stats.add(Counter::RejectedByPeers, 1);
        self.out.push_back(Output::Event(Event::RejectedByPeer { addr, reason }));
        self.close_conn(now, conn);
        self.bootstrap_failed(now, addr);
        if let Some(id) = peer {
            self.peer_failed(now, id);
        }
    }

    /// The plaintext handshake's proof: an HMAC of the transcript keyed by the pre-shared key.
    fn prove(&self, transcript: &[u8]) -> Vec<u8> {
        self.plaintext_mac()
            .map(|mut m| {
                m.update(transcript);
                m.finalize().into_bytes().to_vec()
            })
            .unwrap_or_default()
    }

    fn verify(&self, transcript: &[u8], proof: &[u8]) -> bool {
        self.plaintext_mac().is_none_or(|mut m| {
            m.update(transcript);
            m.verify_slice(proof).is_ok()
        })
    }

    fn plaintext_mac(&self) -> Option<Hmac<Sha256>> {
        let psk = self.cfg.credentials.as_ref()?.psk()?;
        // HMAC takes keys of any length.
        <Hmac<Sha256> as Mac>::new_from_slice(&psk).ok()
    }
}

/// What each side of a handshake signs: both nonces, both ids, and the prover's role.
fn transcript(role: u8, dialer_nonce: &[u8], acceptor_nonce: &[u8], prover: NodeId, verifier: NodeId) -> Vec<u8> {
    let mut t = Vec::with_capacity(18 + 1 + 32 + 32);
    t.extend_from_slice(b"wendy/handshake/v1");
    t.push(role);
    t.extend_from_slice(dialer_nonce);
    t.extend_from_slice(acceptor_nonce);
    t.extend_from_slice(&prover.to_bytes());
    t.extend_from_slice(&verifier.to_bytes());
    t
}

/// A handshake that stands for the probe or announcement its connection was dialled for
/// ([`Probe`]): three frames where the handshake and a `Ping` and `Pong` took five.
impl Node {
    /// The probe or announcement of `id` at the head of a dialled connection's queue, taken
    /// out of it to travel in the handshake's last message, with its number; `None` if the
    /// connection was dialled for something else.
    fn take_probe(&mut self, conn: ConnId, id: NodeId) -> Option<(Probe, u32)> {
        let (outstanding, _) = self.peers.get(&id)?.ping()?;
        let answer = self.awaits_welcome(id);
        let io = self.conns.get_mut(&conn)?.io.as_mut()?;
        let probe = match io.pending.front()? {
            Message::Ping { seq } if *seq == outstanding => Probe::Ping,
            Message::Announce { seq } if *seq == outstanding => Probe::Announce { answer },
            _ => return None,
        };
        io.pending.pop_front();
        self.pending_total -= 1;
        Some((probe, outstanding))
    }

    /// Our handshake on `conn` carried `probe`, numbered `seq`, and the acceptor's proof
    /// answered it: taken as the `Pong` (`ready`) it would otherwise have sent, timed from our
    /// first handshake message, to which the proof was the answer.
    fn probe_answered(&mut self, now: Instant, conn: ConnId, probe: Option<(Probe, u32)>, ready: bool) {
        let Some((_, seq)) = probe else { return };
        let Some(c) = self.conns.get(&conn) else { return };
        let (Some(id), Some(sent)) = (c.peer(), c.handshake_sent) else { return };
        if let Some(p) = self.peers.get_mut(&id).filter(|p| p.ping().is_some_and(|(s, _)| s == seq)) {
            p.set_ping(Some((seq, sent)));
        }
        self.on_message(now, conn, Message::Pong { seq, ready });
    }

    /// The dialler's handshake on `conn` carried `probe`: handled as the `Ping` or `Announce`
    /// it stands for, except that a probe is not answered (our `HelloAck` was its answer), nor
    /// an announcement unless the dialler waits for a `Welcome` or we hold leaves for it.
    fn on_probe(&mut self, now: Instant, conn: ConnId, probe: Probe) {
        let Some(from) = self.conns.get(&conn).and_then(|c| c.peer()) else { return };
        let standing_for = match probe {
            Probe::Ping => Message::Ping { seq: 0 },
            Probe::Announce { .. } => Message::Announce { seq: 0 },
        };
        if !self.heard(now, from, &standing_for) {
            return;
        }
        match probe {
            Probe::Ping => self.pinged(now, from, None),
            Probe::Announce { answer } => self.announced(now, from, 0, answer),
        }
    }

    /// True if a `Welcome` from `id` is awaited: we announced ourselves to it as a member of
    /// our leaf set, which must have heard of us.
    fn awaits_welcome(&self, id: NodeId) -> bool {
        matches!(&self.state, super::State::Announcing { awaiting } if awaiting.binary_search(&id).is_ok())
            || self.unwelcomed.as_ref().is_some_and(|u| u.ids.contains(&id))
    }
}

/// The prologue of every message from an authenticated peer, and of a handshake that stands
/// for one (`on_message`, `on_probe`).
impl Node {
    /// What every message from `from` tells before it is handled: `from` was heard (and is no
    /// longer suspected), a node we declared failed is alive after all, and a node that is not
    /// in a ring (`Alone`) refuses the ring's traffic (it tells the sender it is not a member).
    /// False if the message goes no further.
    pub(super) fn heard(&mut self, now: Instant, from: NodeId, msg: &Message) -> bool {
        if self.state == super::State::Left {
            return false;
        }
        if let Some(p) = self.peers.get_mut(&from) {
            p.heard_directly(now);
        }
        if self.failed.contains_key(&from) {
            self.heard_from_failed(now, from, msg);
        }
        let ring_traffic = match msg {
            // (A reserved purpose is a protocol error whatever our state: checked below.)
            Message::Route(r) => self.accepts_purpose(r.purpose),
            Message::Ping { .. } | Message::Heartbeat { .. } | Message::Locate { .. } => true,
            // A row request is what a joiner's nearest-node discovery asks of the nodes a ring
            // named to it: answered, it could make us that joiner's nearest node, and its join
            // request (sent straight to us) a ring of two inside the other ring. So is a join
            // request a ring's node forwarded or a ring named us to (`hops` above 0; a joiner
            // given our address as its bootstrap sends 0).
            Message::RowRequest { .. } => true,
            Message::JoinRequest { hops, .. } => *hops > 0,
            _ => false,
        };
        if self.state == super::State::Alone && ring_traffic {
            // The sender has us in its tables but we are not in its ring (our join failed, or
            // we restarted and have not joined again). A ring of one would take every key:
            // the sender is told we are not a member, forgets us and routes the message
            // (unacknowledged here) again without us.
            let _ = self.send_msg(now, from, Message::Leaving);
            return false;
        }
        true
    }
}
