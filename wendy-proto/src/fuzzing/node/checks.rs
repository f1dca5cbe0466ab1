//! The checks of the node target: after every step ([`NodeHarness::check`]) and on every
//! output the node produces.

use bytes::Bytes;

use crate::harness::script::table_members;
use crate::output::{ConnId, Event, Output};
use crate::wire::{self, Message, LENGTH_PREFIX};

use super::model::Phase;
use super::{NodeHarness, CHECK_FORGOTTEN_CONNS};

impl NodeHarness {
    /// Runs every check; panics naming `step` if one fails.
    ///
    /// The checks: [`Node::check_invariants`] (leaf set sorted, bounded, without ourselves or
    /// duplicates; routing-table cells' prefixes; queue bounds; `poll_timeout` not in the
    /// past); `poll_timeout` not before the driver's clock; every table member reached the
    /// node over an authenticated connection; pending messages and connections within their
    /// configured bounds.
    ///
    /// [`Node::check_invariants`]: crate::Node::check_invariants
    pub fn check(&self, step: &str) {
        if let Err(e) = self.node.check_invariants() {
            panic!("after {step}: invariant broken: {e}");
        }
        if let Some(t) = self.node.poll_timeout() {
            assert!(t >= self.now, "after {step}: poll_timeout {t} is before now {}", self.now);
        }
        let node = &self.node;
        for id in table_members(node) {
            assert!(
                self.allowed.contains(&id),
                "after {step}: {id} is in a table but never came over an authenticated connection"
            );
        }
        assert!(
            node.pending_messages() <= self.cfg.max_pending_total,
            "after {step}: {} messages pending, bound {}",
            node.pending_messages(),
            self.cfg.max_pending_total
        );
        let driver_open = self.conns.iter().filter(|c| !c.closed).count();
        assert!(
            node.connection_count() <= driver_open,
            "after {step}: the node counts {} connections, the driver knows of {driver_open}",
            node.connection_count()
        );
        if CHECK_FORGOTTEN_CONNS {
            assert_eq!(
                node.connection_count(),
                driver_open,
                "after {step}: the node forgot a connection without closing it"
            );
        }
        let bound = self.cfg.max_connections;
        assert!(
            node.connection_count() <= bound,
            "after {step}: {} connections open, bound {bound}",
            node.connection_count()
        );
    }

    /// Drains every output, checks each, then runs [`NodeHarness::check`].
    pub(super) fn drain(&mut self, step: &str) {
        let mut n = 0usize;
        while let Some(out) = self.node.poll_output() {
            n += 1;
            assert!(n < 1_000_000, "after {step}: the node produces outputs without end");
            match out {
                Output::Connect { conn, addr } => {
                    assert!(!self.left, "after {step}: a node that left dials {addr}");
                    self.add_conn(conn, addr, true);
                }
                Output::Transmit { conn, data } => self.on_transmit(step, conn, data),
                Output::Close { conn } => {
                    let i = *self.by_id.get(&conn).unwrap_or_else(|| panic!("after {step}: close of unknown {conn}"));
                    self.conns[i].closed = true;
                    self.conns[i].phase = Phase::Dead;
                }
                Output::Deliver(d) => {
                    assert!(d.purpose >= 16, "after {step}: delivered a message with reserved purpose {}", d.purpose);
                }
                Output::Forwarded { purpose, next, .. } => {
                    assert!(purpose >= 16, "after {step}: forwarded a message with reserved purpose {purpose}");
                    assert!(next != self.cfg.info.id, "after {step}: forwarded to ourselves");
                }
                Output::Event(Event::Joined) => {}
                Output::Event(_) => {}
            }
        }
        self.check(step);
    }

    fn on_transmit(&mut self, step: &str, conn: ConnId, data: Bytes) {
        let i = *self.by_id.get(&conn).unwrap_or_else(|| panic!("after {step}: transmit on unknown {conn}"));
        let c = &mut self.conns[i];
        assert!(!c.closed, "after {step}: transmit on {conn} after it was closed");
        assert!(c.established, "after {step}: transmit on {conn} before it was established");
        assert!(
            data.len() <= LENGTH_PREFIX + self.cfg.max_frame_size,
            "after {step}: the node sends a frame of {} bytes over its own maximum",
            data.len()
        );
        let msg = match wire::decode_frame(data, usize::MAX) {
            Ok(m) => m,
            Err(e) => panic!("after {step}: the node sent an undecodable frame on {conn}: {e}"),
        };
        if c.outbound && matches!(msg, Message::Hello { .. }) {
            return;
        }
        if matches!(
            msg,
            Message::Ping { .. }
                | Message::Heartbeat { .. }
                | Message::Announce { .. }
                | Message::LeafSetRequest
                | Message::RowRequest { .. }
                | Message::JoinRequest { .. }
        ) && c.requests.len() < 64
        {
            c.requests.push(msg);
        }
    }
}
