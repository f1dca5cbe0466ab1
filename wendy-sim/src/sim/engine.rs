//! The engine: the clock, the event queue and the dispatch of each event to the concern that
//! handles it.

use prefetch_index::prefetch_index;
use wendy_proto::Instant;

use super::hosts::Host;
use super::jobs::Job;
use super::{Sim, NEVER};
use crate::queue::{Ctl, Ev};

impl Sim {
    /// Processes the next event, or with several threads ([`SimConfig::threads`]) the next
    /// batch of events; false if the queue is empty.
    ///
    /// [`SimConfig::threads`]: crate::SimConfig::threads
    pub fn step(&mut self) -> bool {
        self.step_until(NEVER)
    }

    /// [`Sim::step`] with none of the events after `limit` (microseconds); false if there
    /// is none due by then.
    pub(super) fn step_until(&mut self, limit: u64) -> bool {
        if self.pool.is_some() {
            return self.step_batch(limit);
        }
        if limit != NEVER && self.queue.peek_time().is_none_or(|t| t > limit) {
            return false;
        }
        let Some((t, ev)) = self.queue.pop() else { return false };
        self.now = self.now.max(t);
        self.events += 1;
        self.links.new_batch();
        self.warm_ahead();
        match ev {
            Ev::Ctl(c) => self.on_ctl(c),
            ev => {
                if let Some(job) = self.event_job(ev) {
                    self.run_job(job);
                }
            }
        }
        true
    }

    /// The simulator's part of an event before its node's job, and the job if there is one.
    fn event_job(&mut self, ev: Ev) -> Option<Job> {
        match ev {
            Ev::Timer { host, gen } => self.timer_job(host, gen),
            Ev::SynAck { link, gen } => self.syn_ack_job(link, gen),
            Ev::Refused { link, gen } => self.refused_job(link, gen),
            Ev::Arrive { link, gen, side, slot } => self.arrive_job(link, gen, side, slot),
            Ev::Ctl(_) => None,
        }
    }

    /// Processes the next batch of events: the next events, in their order, up to the first
    /// that is a control event or is due a window or more after the first (the least latency
    /// of the network, [`crate::net`]), less those of hosts with an event in the batch
    /// already: those are given back to the queue ([`crate::queue::Queue::give_back`]) and
    /// come first in the next batch. Nothing one host does reaches another sooner than that
    /// latency, so no event of the batch depends on what another one's node does, nor on the
    /// events set aside: the simulator's part of each event runs in their order, and the
    /// nodes' jobs ([`Job::run`]) run at once on the pool's threads. The batches, and so the
    /// run, are the same whatever the number of threads. A lookup is a job of its origin's
    /// (drawn when the batch reaches it; an origin already in the batch ends it, and the lookup
    /// comes first in the next); any other control event (a join, a crash, a sample) is a batch
    /// of its own.
    #[inline(never)]
    fn step_batch(&mut self, limit: u64) -> bool {
        let Some((t0, first)) = self.queue.peek() else { return false };
        if t0 > limit {
            return false;
        }
        let clock = self.now;
        self.batches += 1;
        match first {
            Ev::Ctl(Ctl::Lookup) => {}
            Ev::Ctl(c) => {
                self.queue.pop();
                self.now = clock.max(t0);
                self.events += 1;
                self.links.new_batch();
                self.on_ctl(c);
                return true;
            }
            _ => {}
        }
        let horizon = t0.saturating_add(self.window);
        let Some(mut pool) = self.pool.take() else { return false };
        let mut hosts = std::mem::take(&mut self.batch_hosts);
        let (mut last, mut jobs) = (t0, 0);
        while let Some((t, ev)) = self.queue.peek() {
            if t > limit || t >= horizon {
                break;
            }
            // A lookup is a job of its origin's, drawn when the batch reaches it: an origin
            // busy in the batch already waits for the next batch, whose first it is.
            let lookup = ev == Ev::Ctl(Ctl::Lookup);
            let host = if lookup {
                if self.next_lookup_origin().is_some_and(|o| hosts.contains(&o)) {
                    break;
                }
                None
            } else {
                let Some(h) = self.host_of(ev) else { break };
                Some(h)
            };
            self.queue.pop();
            self.warm_ahead();
            if let Some(h) = host {
                if hosts.contains(&h) {
                    // Its host's node is busy with an earlier event of the batch: it waits for
                    // a later batch, and so does every later event of that host.
                    self.queue.give_back(t, ev);
                    continue;
                }
                hosts.push(h);
            }
            // Each event's own time: an event may come a little before one of the previous
            // batch (a timer its own node set meanwhile), and its host sees it at its time.
            self.now = t;
            last = last.max(t);
            self.events += 1;
            self.links.new_batch();
            let job = if lookup { self.next_lookup_as(true).inspect(|j| hosts.push(j.h)) } else { self.event_job(ev) };
            if let Some(job) = job {
                let job = self.batch_job(job);
                pool.post(jobs, job);
                jobs += 1;
            }
        }
        self.queue.end_give_back();
        for i in 0..jobs {
            let job = pool.take(i);
            self.links.new_batch();
            self.finish_job(job);
        }
        self.pool = Some(pool);
        self.now = clock.max(last);
        hosts.clear();
        self.batch_hosts = hosts;
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
    /// only: the run is the same, event for event. The events ahead are those the queue has
    /// staged ([`crate::queue::Queue::ahead`]): on threads, events a batch set aside come
    /// before them and are not warmed.
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
        while self.step_until(t) {}
        self.now = self.now.max(t);
    }
}
