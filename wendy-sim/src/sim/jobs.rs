//! A node's share of an event, apart from the simulator's: the input fed to one node and
//! every output it gives in answer ([`Job::run`]), which touches that node (and its storage
//! layer) alone, and the simulator's bookkeeping before and after it, which touches the
//! network, the queue and the measures. The engine runs the first part of the events of a
//! batch on several threads ([`super::pool`]) and everything else in the order of the events.

use bytes::Bytes;
use wendy_proto::store::Store;
use wendy_proto::{ConnId, Instant, Node, NodeId, Output};

use super::{Sim, LOOKUP_PURPOSE, NEVER};
use crate::queue::Ev;

/// What a node is fed.
pub(super) enum Input {
    /// `handle_timeout` (and the storage layer's).
    Timer,
    /// An outbound connection was established.
    Connected(ConnId),
    /// An outbound connection could not be established.
    ConnectFailed(ConnId),
    /// Bytes arrived on a connection.
    Bytes(ConnId, Bytes),
    /// The peer closed a connection.
    Closed(ConnId),
    /// The simulator's lookup number `lookup`: routed towards `key` ([`wendy_proto::Node::send`]).
    Send { key: NodeId, payload: Bytes, lookup: u64 },
}

/// One input to one node and the outputs it gave: the part of an event that reads and writes
/// nothing but the node and its storage layer, so the jobs of different hosts can run at once.
pub(super) struct Job {
    /// The host.
    pub(super) h: u32,
    /// The event's time, microseconds.
    pub(super) t: u64,
    node: Box<Node>,
    store: Option<Box<Store>>,
    input: Option<Input>,
    /// Every output, in the order the node (through its storage layer) gave them.
    outs: Vec<Output>,
    /// The node's counters after the input, and (without a storage layer) its next deadline:
    /// read where the job ran, whose cache holds the node.
    after: Option<After>,
    /// A link to free after the outputs, if neither side can use it any more.
    pub(super) then_free: Option<u32>,
    /// The lookup of an [`Input::Send`] the node refused: lost once the outputs are applied.
    refused: Option<u64>,
}

/// What a job read of its node after the input: the counters the simulator accounts
/// ([`Counts`]), and without a storage layer the node's next deadline.
#[derive(Clone, Copy)]
pub(super) struct After {
    counts: Counts,
    next: Option<u64>,
}

/// The counters of a node the simulator accounts after each input (a few of its `Stats`).
#[derive(Clone, Copy)]
struct Counts {
    control_frames_out: u64,
    control_bytes_out: u64,
    acks_out: u64,
    reroutes: u64,
    custody_reroutes: u64,
}

impl Counts {
    fn of(node: &Node) -> Self {
        let st = node.stats();
        Counts {
            control_frames_out: st.control_frames_out,
            control_bytes_out: st.control_bytes_out,
            acks_out: st.acks_out,
            reroutes: st.reroutes,
            custody_reroutes: st.custody_reroutes,
        }
    }
}

impl Job {
    /// Feeds the input and drains every output (the batches' way: the outputs wait in the job
    /// for [`Sim::finish_job`]).
    pub(super) fn run(&mut self) {
        self.feed();
        let now = Instant::from_micros(self.t);
        let node = &mut self.node;
        drain(now, node, self.store.as_deref_mut(), &mut self.outs);
        let next = if self.store.is_none() { deadline(node, None, self.t) } else { None };
        self.after = Some(After { counts: Counts::of(node), next });
    }

    /// Feeds the input.
    fn feed(&mut self) {
        let now = Instant::from_micros(self.t);
        let node = &mut self.node;
        match self.input.take() {
            Some(Input::Timer) => {
                node.handle_timeout(now);
                if let Some(s) = self.store.as_mut() {
                    s.handle_timeout(now, node);
                }
            }
            Some(Input::Connected(c)) => node.handle_connected(now, c),
            Some(Input::ConnectFailed(c)) => node.handle_connect_failed(now, c),
            Some(Input::Bytes(c, data)) => node.handle_bytes(now, c, data),
            Some(Input::Closed(c)) => node.handle_closed(now, c),
            Some(Input::Send { key, payload, lookup }) => {
                self.refused = node.send(now, key, LOOKUP_PURPOSE, payload).is_err().then_some(lookup);
            }
            None => {}
        }
    }
}

/// Every output of `node` in order, those its storage layer consumes left out.
fn drain(now: Instant, node: &mut Node, mut store: Option<&mut Store>, outs: &mut Vec<Output>) {
    while let Some(out) = node.poll_output() {
        match store.as_deref_mut() {
            Some(s) => outs.extend(s.handle_output(now, node, out)),
            None => outs.push(out),
        }
    }
}

/// When a node (and its storage layer) next needs `handle_timeout`, microseconds, never
/// before `now`.
pub(super) fn deadline(node: &Node, store: Option<&Store>, now: u64) -> Option<u64> {
    let next = match (node.poll_timeout(), store.and_then(|s| s.poll_timeout())) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    next.map(|t| t.as_micros().max(now))
}

impl Sim {
    /// A job feeding `input` to the node of host `h` at the current time, the node (and its
    /// storage layer) taken out of the host until [`Sim::finish_job`]; `None` if it is down.
    pub(super) fn job(&mut self, h: u32, input: Input) -> Option<Job> {
        let node = self.take(h)?;
        let store = self.hosts[h as usize].store.take();
        let input = Some(input);
        Some(Job { h, t: self.now, node, store, input, outs: Vec::new(), after: None, then_free: None, refused: None })
    }

    /// A job for a batch: [`Sim::job`] with an output buffer kept from an earlier one.
    pub(super) fn batch_job(&mut self, mut job: Job) -> Job {
        if let Some(outs) = self.spare_outs.pop() {
            job.outs = outs;
        }
        job
    }

    /// Feeds a job's input and applies each output as the node gives it (the one-thread
    /// engine's way, with no buffer between the two).
    pub(super) fn run_job(&mut self, mut job: Job) {
        job.feed();
        self.stream(job.h, job.node, job.store);
        self.job_done(job.then_free, job.refused);
    }

    /// The simulator's part of a job that ran: the outputs applied in order, the node put
    /// back and its timer re-armed, the link freed if the event asked for it.
    pub(super) fn finish_job(&mut self, mut job: Job) {
        self.now = job.t;
        let h = job.h;
        for out in job.outs.drain(..) {
            self.apply(h, out);
        }
        self.spare_outs.push(job.outs);
        self.put_back(h, job.node, job.store, job.after);
        self.job_done(job.then_free, job.refused);
    }

    /// What is left of a job once its outputs are applied: the link it asked to free, and the
    /// lookup its node refused (lost).
    fn job_done(&mut self, then_free: Option<u32>, refused: Option<u64>) {
        if let Some(l) = then_free {
            self.maybe_free(l);
        }
        if let Some(id) = refused {
            self.lookup_failed(id);
        }
    }

    /// Drains every output of `node` (host `h`), accounts, re-arms its timer, puts it back.
    pub(super) fn finish(&mut self, h: u32, node: Box<Node>) {
        let store = self.hosts[h as usize].store.take();
        self.stream(h, node, store);
    }

    /// Applies every output of `node` (host `h`) as it comes (through its storage layer),
    /// then [`Sim::put_back`].
    fn stream(&mut self, h: u32, mut node: Box<Node>, mut store: Option<Box<Store>>) {
        let now = Instant::from_micros(self.now);
        while let Some(out) = node.poll_output() {
            let out = match store.as_mut() {
                Some(s) => match s.handle_output(now, &mut node, out) {
                    Some(out) => out,
                    None => continue,
                },
                None => out,
            };
            self.apply(h, out);
        }
        self.put_back(h, node, store, None);
    }

    /// Applies one output of host `h`'s node to the network, the oracle and the measures.
    fn apply(&mut self, h: u32, out: Output) {
        match out {
            Output::Connect { conn, addr } => self.on_connect(h, conn, addr),
            Output::Transmit { conn, data } => self.on_transmit(h, conn, data),
            Output::Close { conn } => self.on_close(h, conn),
            Output::Deliver(d) => self.on_deliver(h, d),
            Output::Forwarded { key, purpose, next, .. } => self.on_forwarded(h, key, purpose, next),
            Output::Event(e) => self.on_event(h, e),
        }
    }

    /// Accounts, re-arms the timer of host `h` and puts its node and storage layer back, once
    /// every output was applied. `after`: the node's counters and next deadline if the job
    /// read them (the deadline is read here if the node has a storage layer, which the
    /// outputs may have changed).
    fn put_back(&mut self, h: u32, node: Box<Node>, mut store: Option<Box<Store>>, after: Option<After>) {
        let st = after.map_or_else(|| Counts::of(&node), |a| a.counts);
        if let Some(s) = store.as_mut() {
            self.kv_collect(h, s);
        }
        let host = &mut self.hosts[h as usize];
        let (df, db) = (host.ctl_seen[0].take(st.control_frames_out), host.ctl_seen[1].take(st.control_bytes_out));
        let (da, dr) = (host.ack_seen[0].take(st.acks_out), host.ack_seen[1].take(st.reroutes));
        let dc = host.ack_seen[2].take(st.custody_reroutes);
        self.m.acks += da;
        self.m.reroutes += dr;
        self.m.custody_reroutes += dc;
        let next = match after {
            Some(After { next, .. }) if store.is_none() => next,
            _ => deadline(&node, store.as_deref(), self.now),
        };
        host.node = Some(node);
        if host.up {
            host.store = store;
        }
        match next {
            // A later deadline keeps the pending event: when it comes due, `on_timer` finds
            // nothing due yet and schedules the real one. So a node whose deadline moves
            // back at every input leaves no trail of stale events in the queue.
            Some(t) if t < host.timer_at => self.arm_host(h, t),
            Some(_) => {}
            None => {
                host.timer_gen += 1;
                host.timer_at = NEVER;
            }
        }
        if df > 0 {
            self.m.count_control(self.now, df, db);
        }
    }

    /// Schedules host `h`'s timer event at `t`; any other pending one goes stale.
    fn arm_host(&mut self, h: u32, t: u64) {
        let host = &mut self.hosts[h as usize];
        host.timer_gen += 1;
        host.timer_at = t;
        let gen = host.timer_gen;
        self.queue.push(t, Ev::Timer { host: h, gen });
    }

    /// Host `h`'s timer event: the node's job if its deadline has come (a node whose deadline
    /// moved later is scheduled again instead).
    pub(super) fn timer_job(&mut self, h: u32, gen: u32) -> Option<Job> {
        let host = &mut self.hosts[h as usize];
        if host.timer_gen != gen || !host.up {
            return None;
        }
        host.timer_at = NEVER;
        let next = host.node.as_deref().and_then(|n| deadline(n, host.store.as_deref(), self.now));
        match next {
            Some(t) if t > self.now => {
                self.arm_host(h, t);
                return None;
            }
            Some(_) => {}
            None => return None,
        }
        self.job(h, Input::Timer)
    }
}
