//! The harness's model of the node's connections: what it dialled or accepted, and the
//! handshake phase the node must be in given what the harness sent.

use std::net::SocketAddr;

use crate::id::{NodeId, DIGITS};
use crate::info::NodeInfo;
use crate::output::ConnId;
use crate::wire::{self, FrameDecoder, Message, MAX_HANDSHAKE_FRAME};

use super::NodeHarness;

/// The harness's view of one connection.
#[derive(Debug)]
pub(super) struct ConnModel {
    pub(super) id: ConnId,
    pub(super) addr: SocketAddr,
    /// The node dialled out (`Output::Connect`).
    pub(super) outbound: bool,
    /// We reported it established (always true for inbound ones).
    pub(super) established: bool,
    /// The node closed it, or we did.
    pub(super) closed: bool,
    /// Mirror of the node's handshake phase, computed from what we sent.
    pub(super) phase: Phase,
    /// Mirror of the node's decoder: what the node decodes from what we send.
    pub(super) tx: FrameDecoder,
    /// Requests from the node not yet answered.
    pub(super) requests: Vec<Message>,
}

/// The node's handshake phase as the harness can infer it. It errs towards `Open` (more ids
/// allowed in tables), never the other way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    AwaitHello,
    AwaitAuth(NodeId),
    Dialing,
    AwaitHelloAck,
    Open,
    Dead,
}

impl NodeHarness {
    /// Starts modelling a connection the node just named (dialled out, or accepted).
    pub(super) fn add_conn(&mut self, id: ConnId, addr: SocketAddr, outbound: bool) {
        assert!(!self.by_id.contains_key(&id), "the node reused {id}");
        self.by_id.insert(id, self.conns.len());
        self.conns.push(ConnModel {
            id,
            addr,
            outbound,
            established: !outbound,
            closed: false,
            phase: if outbound { Phase::Dialing } else { Phase::AwaitHello },
            tx: FrameDecoder::new(MAX_HANDSHAKE_FRAME.min(self.cfg.max_frame_size)),
            requests: Vec::new(),
        });
    }

    /// Remembers where the nodes a message describes live, to answer dials honestly.
    pub(super) fn describe_all(&mut self, msg: &Message) {
        for info in infos_of(msg) {
            self.describe(&info);
        }
    }

    pub(super) fn describe(&mut self, info: &NodeInfo) {
        self.known.entry(info.local).or_insert_with(|| info.clone());
        self.known.entry(info.global).or_insert_with(|| info.clone());
    }

    /// Feeds `bytes` to the mirror of the node's decoder and handshake for connection `i`.
    pub(super) fn mirror(&mut self, i: usize, bytes: &[u8]) {
        let me = self.cfg.info.id;
        let c = &mut self.conns[i];
        if c.closed || c.phase == Phase::Dead {
            return;
        }
        if c.phase == Phase::Dialing {
            c.phase = Phase::Dead;
            return;
        }
        c.tx.push(bytes);
        let max_frame = self.cfg.max_frame_size;
        loop {
            let msg = match c.tx.next_frame() {
                Ok(None) => return,
                Ok(Some(body)) => match wire::decode_body(body) {
                    Ok(m) => m,
                    Err(_) => {
                        c.phase = Phase::Dead;
                        return;
                    }
                },
                Err(_) => {
                    c.phase = Phase::Dead;
                    return;
                }
            };
            let was_open = c.phase == Phase::Open;
            c.phase = match (c.phase, &msg) {
                (Phase::AwaitHello, Message::Hello { info, .. }) if info.id != me => Phase::AwaitAuth(info.id),
                (Phase::AwaitAuth(id), Message::Auth { .. }) => {
                    self.allowed.insert(id);
                    Phase::Open
                }
                (Phase::AwaitHelloAck, Message::HelloAck { info, .. }) if info.id != me => {
                    self.allowed.insert(info.id);
                    Phase::Open
                }
                (Phase::Open, m) if !m.is_handshake() => {
                    self.allowed.extend(infos_of(m).into_iter().map(|x| x.id));
                    Phase::Open
                }
                _ => Phase::Dead,
            };
            // The node accepts full-size frames once the handshake is done.
            if c.phase == Phase::Open && !was_open {
                c.tx.set_max_frame(max_frame);
            }
        }
    }
}

/// Pool member `i`: a few leaf-set neighbours on each side, then nodes sharing 0..6 digits with
/// `me`, in various columns; every other one in region "eu" with distinct local and global
/// addresses.
pub(super) fn pool_info(me: NodeId, i: usize) -> NodeInfo {
    let m = me.as_u128();
    let mix = (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    let id = match i {
        0..=3 => m.wrapping_add((i as u128 + 1) << 90),
        4..=7 => m.wrapping_sub((i as u128 - 3) << 90),
        _ => {
            let row = (i - 8) % 6;
            let shift = 4 * (DIGITS - 1 - row);
            let digit = (u128::from(me.digit(row)) + 1 + (i as u128 - 8) / 6) % 16;
            let prefix = if row == 0 { 0 } else { m >> (128 - 4 * row) << (128 - 4 * row) };
            let low = mix & ((1u128 << shift) - 1);
            prefix | (digit << shift) | low
        }
    };
    let octet = u8::try_from(i + 1).unwrap_or(u8::MAX);
    let global = SocketAddr::from(([10, 0, 0, octet], 7000));
    let mut info = NodeInfo::new(NodeId::from_u128(id), global);
    if i % 2 == 1 {
        info.region = "eu".into();
        info.local = SocketAddr::from(([192, 168, 0, octet], 7000));
    }
    info
}

/// The node descriptions a message carries.
pub(super) fn infos_of(msg: &Message) -> Vec<NodeInfo> {
    match msg {
        Message::Hello { info, .. } | Message::HelloAck { info, .. } => vec![info.clone()],
        Message::JoinRequest { joiner, .. } | Message::Locate { origin: joiner, .. } => vec![joiner.clone()],
        Message::JoinState { rows, hood, leaves } => {
            rows.iter().chain(hood).chain(leaves.iter().flatten()).cloned().collect()
        }
        Message::Welcome { leaves, .. } | Message::LeafSet { leaves } | Message::Heartbeat { leaves, .. } => {
            leaves.clone()
        }
        Message::Row { entries, .. } => entries.clone(),
        _ => Vec::new(),
    }
}
