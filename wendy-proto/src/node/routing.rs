//! Routing: the next-hop decision, application routing and delivery.

use crate::id::NodeId;
use crate::output::{CommandError, ConnId, Delivery, Forwarding, NodeError, Output};
use crate::time::Instant;
use crate::wire::{Message, Route};

use super::join::Held;
use super::{Node, State};

pub(super) enum Hop {
    Here,
    Next(NodeId),
    /// Not ready and nobody better known: keep it until ready.
    Hold,
}

impl Node {
    /// A routed or direct application message from a peer.
    pub(super) fn on_app_message(&mut self, now: Instant, conn: ConnId, msg: Message) {
        match msg {
            Message::Route(r) => {
                if r.purpose < 16 {
                    self.protocol_error(now, conn, "routed message with a reserved purpose");
                    return;
                }
                // A failure was already counted and reported inside route_app.
                let _ = self.route_app(now, r, false);
            }
            Message::Direct(d) => {
                if d.purpose < 16 {
                    self.protocol_error(now, conn, "direct message with a reserved purpose");
                    return;
                }
                self.deliver_direct(Message::Direct(d));
            }
            _ => {}
        }
    }

    pub(super) fn decide(&self, key: NodeId, exclude: Option<NodeId>) -> Hop {
        let me = self.id();
        let ok = |id: NodeId| Some(id) != exclude;
        if !self.is_ready() {
            let best = self.table_members().into_iter().filter(|&x| ok(x)).fold(None, |b: Option<NodeId>, x| match b {
                Some(b) if !key.is_closer(x, b) => Some(b),
                _ => Some(x),
            });
            return match best {
                Some(b) if key.is_closer(b, me) => Hop::Next(b),
                _ => Hop::Hold,
            };
        }
        if self.leaf.covers(key) {
            let best = match exclude {
                Some(x) => self.leaf.closest_excluding(key, x),
                None => self.leaf.closest(key),
            };
            return if best == me { Hop::Here } else { Hop::Next(best) };
        }
        let row = me.common_prefix_len(key);
        if row >= crate::id::DIGITS {
            return Hop::Here;
        }
        if let Some(cell) = self.table.get(row, usize::from(key.digit(row))) {
            if ok(cell.id) {
                return Hop::Next(cell.id);
            }
        }
        // The rare case: anyone sharing as long a prefix and numerically closer.
        let mut best = me;
        let candidates = self.leaf.cw().iter().chain(self.leaf.ccw()).copied();
        let candidates = candidates.chain(self.table.iter().map(|c| c.id)).chain(self.hood.iter().map(|e| e.1));
        for x in candidates {
            if ok(x) && x.common_prefix_len(key) >= row && key.is_closer(x, best) {
                best = x;
            }
        }
        if best == me {
            Hop::Here
        } else {
            Hop::Next(best)
        }
    }

    pub(super) fn route_app(&mut self, now: Instant, mut route: Route, local: bool) -> Result<(), CommandError> {
        match self.decide(route.key, None) {
            Hop::Here => {
                self.stats.delivered += 1;
                self.out.push_back(Output::Deliver(Delivery {
                    key: route.key,
                    purpose: route.purpose,
                    origin: route.origin,
                    hops: route.hops,
                    direct: false,
                    payload: route.payload,
                }));
                Ok(())
            }
            Hop::Hold => {
                if self.pending_total >= self.cfg.max_pending_total {
                    return self.drop_msg(None, local);
                }
                self.pending_total += 1;
                self.held.push_back(Held::Route(route));
                Ok(())
            }
            Hop::Next(next) => {
                if route.hops >= self.cfg.max_hops {
                    self.stats.dropped += 1;
                    self.report(NodeError::HopLimit { key: route.key });
                    return Ok(());
                }
                if let Some(hook) = self.hook.as_mut() {
                    let info = &self.peers[&next].info;
                    let mut f = Forwarding {
                        key: route.key,
                        purpose: route.purpose,
                        origin: route.origin,
                        hops: route.hops,
                        payload: route.payload,
                    };
                    let pass = hook.on_forward(&mut f, info) && f.purpose >= 16;
                    route.purpose = f.purpose;
                    route.payload = f.payload;
                    if !pass {
                        self.stats.dropped += 1;
                        return Ok(());
                    }
                }
                route.hops = route.hops.saturating_add(1);
                let (key, purpose, origin, hops) = (route.key, route.purpose, route.origin, route.hops);
                match self.send_msg(now, next, Message::Route(route)) {
                    Ok(()) => {
                        self.stats.forwarded += u64::from(!local);
                        self.out.push_back(Output::Forwarded { key, purpose, origin, next, hops });
                        Ok(())
                    }
                    Err(_) => self.drop_msg(Some(next), local),
                }
            }
        }
    }

    pub(super) fn drop_msg(&mut self, peer: Option<NodeId>, local: bool) -> Result<(), CommandError> {
        if local {
            return Err(CommandError::Backpressure);
        }
        self.stats.dropped += 1;
        self.report(NodeError::QueueFull { peer });
        Ok(())
    }

    pub(super) fn check_app(&self, purpose: u8, len: usize) -> Result<(), CommandError> {
        if self.state == State::Left {
            return Err(CommandError::Left);
        }
        if purpose < 16 {
            return Err(CommandError::ReservedPurpose(purpose));
        }
        let max = self.cfg.max_frame_size.saturating_sub(64);
        if len > max {
            return Err(CommandError::PayloadTooLarge { len, max });
        }
        Ok(())
    }

    pub(super) fn deliver_direct(&mut self, msg: Message) {
        if let Message::Direct(d) = msg {
            self.stats.delivered += 1;
            self.out.push_back(Output::Deliver(Delivery {
                key: self.id(),
                purpose: d.purpose,
                origin: d.origin,
                hops: u8::from(d.origin != self.id()),
                direct: true,
                payload: d.payload,
            }));
        }
    }
}
