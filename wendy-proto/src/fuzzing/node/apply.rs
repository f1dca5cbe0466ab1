//! How the harness carries out each operation of the node target.

use std::time::Duration;

use bytes::Bytes;

use crate::id::{NodeId, DIGITS};
use crate::info::NodeInfo;
use crate::output::{ConnId, Target};
use crate::time::Instant;
use crate::wire::{self, Message, Route, NONCE_LEN};

use super::model::Phase;
use super::{DialOutcome, Key, NodeHarness, Op, StateKind, Who, POOL};

impl NodeHarness {
    /// Runs one operation, then the checks.
    pub fn apply(&mut self, op: Op) {
        match op {
            Op::Dial(who) => {
                let info = self.who(&who);
                self.dial_as(info);
            }
            Op::Accept => {
                self.accept();
            }
            Op::Hello { conn, who, nonce } => {
                let info = self.who(&who);
                self.send_on(conn, &Message::Hello { info, nonce });
            }
            Op::Auth { conn, proof } => self.send_on(conn, &Message::Auth { proof, probe: None }),
            Op::AnswerDial { dial, outcome } => {
                let dials = self.dialing();
                if let Some(&i) = dials.get(usize::from(dial) % dials.len().max(1)) {
                    self.answer_dial(i, outcome);
                }
            }
            Op::AnswerAllDials => {
                for i in self.dialing() {
                    self.answer_dial(i, DialOutcome::Honest);
                }
            }
            Op::HelloAck { conn, who } => {
                let info = self.who(&who);
                self.send_on(conn, &Message::HelloAck { info, nonce: [9; NONCE_LEN], proof: Vec::new(), ready: true });
            }
            Op::Msg { conn, msg } => self.send_on(conn, &msg),
            Op::State { conn, kind, members } => {
                let msg = self.state_message(kind, &members);
                self.send_on(conn, &msg);
            }
            Op::Route { conn, key, purpose, hops, len } => {
                let msg = self.route_message(key, purpose, hops, len);
                self.send_on(conn, &msg);
            }
            Op::Reply { conn, members } => {
                if let Some(c) = self.pick(conn) {
                    self.reply(c, &members);
                }
            }
            Op::Raw { conn, bytes, split } => self.raw(conn, bytes, split),
            Op::Body { conn, body } => self.body(conn, &body),
            Op::Prefix { conn, len, bytes } => self.prefix(conn, len, &bytes),
            Op::Close { conn } => self.peer_closes(conn),
            Op::Advance(ms) => self.advance(Duration::from_millis(u64::from(ms))),
            Op::Jump(secs) => {
                self.now += Duration::from_secs(u64::from(secs));
                self.fire_timers("jump");
            }
            Op::EarlyTimeout(back) => {
                let t = Instant::from_micros(self.now.as_micros().saturating_sub(u64::from(back)));
                self.node.handle_timeout(t);
                self.drain("early handle_timeout");
            }
            Op::Send { key, purpose, len } => self.app_send(key, purpose, len),
            Op::SendToNode { key, purpose } => self.app_send_to_node(key, purpose),
            Op::SendToAddr { who, purpose } => self.app_send_to_addr(&who, purpose),
            Op::Join(who) => self.app_join(&who),
            Op::Leave => {
                // Leaving may dial table members to tell them; nothing after it may.
                self.node.leave(self.now);
                self.drain("leave");
                self.left = true;
            }
        }
    }

    /// Sends `msg` on the connection `sel` picks, if there is one.
    fn send_on(&mut self, sel: u8, msg: &Message) {
        if let Some(c) = self.pick(sel) {
            self.send(c, msg);
        }
    }

    /// The connections the node is still dialling (indices into `conns`).
    fn dialing(&self) -> Vec<usize> {
        (0..self.conns.len()).filter(|&i| self.conns[i].phase == Phase::Dialing).collect()
    }

    fn state_message(&self, kind: StateKind, members: &[u8]) -> Message {
        let infos = self.pool_subset(members);
        match kind {
            StateKind::LeafSet => Message::LeafSet { leaves: infos },
            StateKind::Row(row) => Message::Row { row: row % DIGITS as u8, entries: infos },
            StateKind::JoinState(with_leaves) => {
                let half = infos.len() / 2;
                let (rows, hood) = infos.split_at(half);
                let leaves = with_leaves.then(|| hood.to_vec());
                Message::JoinState { rows: rows.to_vec(), hood: hood.to_vec(), leaves }
            }
            StateKind::Welcome(seq, ready) => Message::Welcome { seq, ready, leaves: infos },
        }
    }

    fn route_message(&self, key: Key, purpose: u8, hops: u8, len: u8) -> Message {
        let key = self.key(key);
        let origin = self.pool[usize::from(len) % POOL].id;
        let payload = Bytes::from(vec![len; usize::from(len)]);
        Message::Route(Route { key, purpose, origin, hops, seq: u64::from(len), payload })
    }

    /// Raw bytes in two inputs: the first copied, the second owned.
    fn raw(&mut self, sel: u8, bytes: Vec<u8>, split: u8) {
        if let Some(c) = self.pick(sel) {
            let at = usize::from(split).min(bytes.len());
            let bytes = Bytes::from(bytes);
            self.send_bytes(c, &bytes[..at]);
            self.send_owned(c, bytes.slice(at..));
        }
    }

    /// A correctly framed body behind the right version byte.
    fn body(&mut self, sel: u8, body: &[u8]) {
        if let Some(c) = self.pick(sel) {
            let mut frame = Vec::with_capacity(body.len() + 5);
            let len = u32::try_from(body.len() + 1).unwrap_or(u32::MAX);
            frame.extend_from_slice(&len.to_be_bytes());
            frame.push(wire::PROTOCOL_VERSION);
            frame.extend_from_slice(body);
            self.send_bytes(c, &frame);
        }
    }

    /// A bare length prefix and the bytes after it.
    fn prefix(&mut self, sel: u8, len: u32, bytes: &[u8]) {
        if let Some(c) = self.pick(sel) {
            let mut frame = len.to_be_bytes().to_vec();
            frame.extend_from_slice(bytes);
            self.send_bytes(c, &frame);
        }
    }

    /// The peer closes a connection (told to the node once).
    fn peer_closes(&mut self, sel: u8) {
        if let Some(c) = self.pick(sel) {
            let i = self.by_id[&c];
            let was_closed = self.conns[i].closed;
            self.conns[i].closed = true;
            self.conns[i].phase = Phase::Dead;
            if !was_closed {
                self.node.handle_closed(self.now, c);
                self.drain("handle_closed");
            }
        }
    }

    /// The application routes a message towards `key` (a refusal is fine).
    fn app_send(&mut self, key: Key, purpose: u8, len: u16) {
        let key = self.key(key);
        let payload = Bytes::from(vec![0x5a; usize::from(len)]);
        let _ = self.node.send(self.now, key, purpose, payload);
        self.drain("send");
    }

    /// The application sends straight to a node by id (a refusal is fine).
    fn app_send_to_node(&mut self, key: Key, purpose: u8) {
        let id = self.key(key);
        let _ = self.node.send_to(self.now, Target::Node(id), purpose, Bytes::from_static(b"direct"));
        self.drain("send_to(node)");
    }

    /// The application sends straight to `who`'s address (a refusal is fine).
    fn app_send_to_addr(&mut self, who: &Who, purpose: u8) {
        let info = self.who(who);
        self.describe(&info);
        let r = self.node.send_to(self.now, Target::Addr(info.global), purpose, Bytes::from_static(b"ip"));
        let _ = r;
        self.drain("send_to(addr)");
    }

    /// The application joins through `who`'s address (a refusal is fine).
    fn app_join(&mut self, who: &Who) {
        let info = self.who(who);
        self.describe(&info);
        let _ = self.node.join(self.now, &[info.global]);
        self.drain("join");
    }

    fn pick(&self, sel: u8) -> Option<ConnId> {
        let n = self.conns.len();
        (n > 0).then(|| self.conns[usize::from(sel) % n].id)
    }

    fn who(&self, who: &Who) -> NodeInfo {
        match who {
            Who::Pool(i) => self.pool[usize::from(*i) % POOL].clone(),
            Who::Stranger(info) => info.clone(),
            Who::Me => self.cfg.info.clone(),
        }
    }

    fn key(&self, key: Key) -> NodeId {
        match key {
            Key::Pool(i) => self.pool[usize::from(i) % POOL].id,
            Key::Near(d) => NodeId::from_u128(self.cfg.info.id.as_u128().wrapping_add_signed(i128::from(d))),
            Key::Any(id) => id,
        }
    }

    fn pool_subset(&self, idx: &[u8]) -> Vec<NodeInfo> {
        idx.iter().take(64).map(|&i| self.pool[usize::from(i) % POOL].clone()).collect()
    }

    fn answer_dial(&mut self, i: usize, outcome: DialOutcome) {
        let conn = self.conns[i].id;
        if matches!(outcome, DialOutcome::Failed) {
            self.conns[i].phase = Phase::Dead;
            self.conns[i].closed = true;
            self.node.handle_connect_failed(self.now, conn);
            self.drain("handle_connect_failed");
            return;
        }
        self.conns[i].established = true;
        self.conns[i].phase = Phase::AwaitHelloAck;
        self.node.handle_connected(self.now, conn);
        self.drain("handle_connected");
        let info = match outcome {
            DialOutcome::Failed | DialOutcome::Connected => return,
            DialOutcome::Honest => match self.known.get(&self.conns[i].addr) {
                Some(info) => info.clone(),
                None => return,
            },
            DialOutcome::As(who) => self.who(&who),
        };
        self.send(conn, &Message::HelloAck { info, nonce: [9; NONCE_LEN], proof: Vec::new(), ready: true });
    }

    fn reply(&mut self, conn: ConnId, members: &[u8]) {
        let Some(&i) = self.by_id.get(&conn) else { return };
        let requests = std::mem::take(&mut self.conns[i].requests);
        let infos = self.pool_subset(members);
        for r in requests {
            let answer = match r {
                Message::Ping { seq } | Message::Heartbeat { seq, .. } => Message::Pong { seq, ready: true },
                Message::Announce { seq } => Message::Welcome { seq, ready: true, leaves: infos.clone() },
                Message::LeafSetRequest => Message::LeafSet { leaves: infos.clone() },
                Message::RowRequest { row } => Message::Row { row, entries: infos.clone() },
                Message::JoinRequest { .. } => {
                    Message::JoinState { rows: infos.clone(), hood: infos.clone(), leaves: Some(infos.clone()) }
                }
                _ => continue,
            };
            self.send(conn, &answer);
        }
    }

    /// Fires due timers at their deadlines (at most a few; after that the driver wakes late,
    /// once, at `now`).
    pub(super) fn fire_timers(&mut self, step: &str) {
        let target = self.now;
        for _ in 0..16 {
            match self.node.poll_timeout() {
                Some(t) if t <= target => {
                    // The driver's clock reads the deadline when it wakes for it.
                    self.now = t;
                    self.node.handle_timeout(t);
                    self.drain(step);
                }
                _ => {
                    self.now = target;
                    return;
                }
            }
        }
        self.now = target;
        self.node.handle_timeout(target);
        self.drain(step);
    }
}
