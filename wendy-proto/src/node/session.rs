//! The session layer: one per connection, the handshake that authenticates the peer.

use crate::id::NodeId;
use crate::info::NodeInfo;
use crate::output::{ConnId, Event, Output, RejectReason};
use crate::time::Instant;
use crate::wire::{Message, NONCE_LEN};

use super::connections::Phase;
use super::membership::{proximity, Peer};
use super::Node;

const ROLE_ACCEPTOR: u8 = 1;
const ROLE_DIALER: u8 = 2;

impl Node {
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
                let ack = Message::HelloAck { info: self.cfg.info.clone(), nonce: my_nonce, proof };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.phase = Phase::AwaitAuth { dialer_nonce: nonce, my_nonce, info: Box::new(info) };
                    c.handshake_sent = Some(now);
                }
                self.transmit(conn, &ack);
            }
            (Phase::AwaitHelloAck { nonce }, Message::HelloAck { info, nonce: their, proof }) => {
                let expected = c.expected;
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
                self.transmit(conn, &Message::Auth { proof });
                self.open(now, conn, info);
            }
            (Phase::AwaitAuth { dialer_nonce, my_nonce, info }, Message::Auth { proof }) => {
                if self.verify(&transcript(ROLE_DIALER, &dialer_nonce, &my_nonce, info.id, me), &proof) {
                    self.open(now, conn, *info);
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

    pub(super) fn open(&mut self, now: Instant, conn: ConnId, info: NodeInfo) {
        let id = info.id;
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.phase = Phase::Open;
        c.peer = Some(id);
        c.decoder.set_max_frame(self.cfg.max_frame_size);
        c.last_active = now;
        self.arm_conn(conn, now + self.cfg.idle_timeout);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let rtt = c.handshake_sent.map(|t| now - t);
        let pending = std::mem::take(&mut c.pending);
        self.pending_total -= pending.len();
        let peer = self.peers.entry(id).or_insert_with(|| Box::new(Peer::new(info.clone(), now)));
        peer.info = info;
        if let Some(rtt) = rtt {
            peer.proximity = proximity(rtt, &peer.info.region, &self.cfg.info.region, self.cfg.region_factor);
        }
        let current_open = peer
            .conn
            .is_some_and(|pc| pc != conn && self.conns.get(&pc).is_some_and(|x| matches!(x.phase, Phase::Open)));
        if !current_open {
            peer.conn = Some(conn);
        }
        for m in pending {
            self.transmit(conn, &m);
        }
    }

    pub(super) fn reject(&mut self, now: Instant, conn: ConnId, claimed: Option<NodeId>, reason: RejectReason) {
        self.stats.rejected_peers += 1;
        let Some(c) = self.conns.get(&conn) else { return };
        let (addr, expected) = (c.addr, c.expected);
        self.out.push_back(Output::Event(Event::PeerRejected { addr, claimed, reason }));
        // Tell the other side why, so that it need not wait for a timeout to find out.
        self.transmit(conn, &Message::Reject { reason: reason.code() });
        self.out.push_back(Output::Close { conn });
        self.drop_conn(now, conn);
        if let Some(id) = expected {
            self.peer_failed(now, id);
        }
    }

    /// The other side refused our handshake and said why.
    pub(super) fn on_rejected(&mut self, now: Instant, conn: ConnId, reason: u8) {
        let Some(c) = self.conns.get(&conn) else { return };
        let (addr, peer) = (c.addr, c.peer.or(c.expected));
        let reason = RejectReason::from_code(reason);
        self.stats.rejected_by_peers += 1;
        self.out.push_back(Output::Event(Event::RejectedByPeer { addr, reason }));
        self.out.push_back(Output::Close { conn });
        self.drop_conn(now, conn);
        self.bootstrap_failed(now, addr);
        if let Some(id) = peer {
            self.peer_failed(now, id);
        }
    }

    pub(super) fn prove(&self, transcript: &[u8]) -> Vec<u8> {
        self.cfg.credentials.as_ref().map(|c| c.prove(transcript)).unwrap_or_default()
    }

    pub(super) fn verify(&self, transcript: &[u8], proof: &[u8]) -> bool {
        self.cfg.credentials.as_ref().is_none_or(|c| c.verify(transcript, proof))
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
