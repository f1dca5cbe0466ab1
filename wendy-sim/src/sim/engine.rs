//! The engine: the clock, the event queue and the dispatch of each event to the concern that
//! handles it.

use prefetch_index::prefetch_index;
use wendy_proto::Instant;

use super::hosts::Host;
use super::Sim;
use crate::queue::Ev;

impl Sim {
    /// Processes the next event; false if the queue is empty.
    pub fn step(&mut self) -> bool {
        let Some((t, ev)) = self.queue.pop() else { return false };
        self.now = self.now.max(t);
        self.events += 1;
        self.links.new_batch();
        self.warm_ahead();
        match ev {
            Ev::Timer { host, gen } => self.on_timer(host, gen),
            Ev::SynAck { link, gen } => self.on_syn_ack(link, gen),
            Ev::Refused { link, gen } => self.on_refused(link, gen),
            Ev::Arrive { link, gen, side, slot } => self.on_arrive(link, gen, side, slot),
            Ev::Ctl(c) => self.on_ctl(c),
        }
        true
    }

    /// Starts loading, a few events ahead, what the coming events will read, a step of the
    /// chain each event: the fourth next event's link or host record, the third next's host
    /// record (and frame slot), the second next's node struct
    /// ([`wendy_proto::Node::prefetch_struct`]) and connection map, and for the next one what
    /// its node's struct points to ([`wendy_proto::Node::prefetch_contents`]). At 100,000
    /// nodes the state is gigabytes read at random and almost every record is out of the cache
    /// when its event comes; each step reads only what an earlier step started loading, so the
    /// loads overlap the current event instead of being waited for one after another. A hint
    /// only: the run is the same, event for event.
    fn warm_ahead(&self) {
        if let Some(ev) = self.queue.ahead(3) {
            match ev {
                Ev::Timer { host, .. } => prefetch_index(&self.hosts, host as usize),
                Ev::SynAck { link, .. } | Ev::Refused { link, .. } | Ev::Arrive { link, .. } => {
                    self.links.all.prefetch(link as usize)
                }
                Ev::Ctl(_) => {}
            }
        }
        if let Some(ev) = self.queue.ahead(2) {
            if let Ev::Arrive { slot, .. } = ev {
                prefetch_index(&self.links.segments, slot as usize);
            }
            if let Some(h) = self.host_of(ev) {
                prefetch_index(&self.hosts, h as usize);
            }
        }
        if let Some(host) = self.queue.ahead(1).and_then(|ev| self.host_record(ev)) {
            host.conns.prefetch();
            if let Some(node) = host.node.as_deref() {
                node.prefetch_struct();
            }
        }
        if let Some(node) = self.queue.ahead(0).and_then(|ev| self.host_record(ev)).and_then(|h| h.node.as_deref()) {
            node.prefetch_contents();
        }
    }

    /// The record of the host whose node handles `ev`, if a node does.
    #[inline]
    fn host_record(&self, ev: Ev) -> Option<&Host> {
        self.host_of(ev).and_then(|h| self.hosts.get(h as usize))
    }

    /// The host whose node handles `ev`, if a node does.
    #[inline]
    fn host_of(&self, ev: Ev) -> Option<u32> {
        match ev {
            Ev::Timer { host, .. } => Some(host),
            Ev::SynAck { link, .. } | Ev::Refused { link, .. } => self.links.all.get(link as usize).map(|l| l.host[0]),
            Ev::Arrive { link, side, .. } => self.links.all.get(link as usize).map(|l| l.host[usize::from(side) & 1]),
            Ev::Ctl(_) => None,
        }
    }

    /// Processes every event due up to `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: Instant) {
        let t = t.as_micros();
        while self.queue.peek_time().is_some_and(|x| x <= t) {
            self.step();
        }
        self.now = self.now.max(t);
    }
}
