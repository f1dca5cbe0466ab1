//! Links: TCP-like connections between hosts. A connection attempt, its answer, frames in
//! order on each side (jitter and loss drawn per segment), the close, resets from a later
//! life of a host, and the network faults: partition/repair and hold/release.
//!
//! A link costs nothing while idle beyond its fixed record: the segments in flight wait in one
//! slab shared by all links, each named by the event that delivers it. Segments towards one
//! side never overtake each other (each is scheduled no earlier than the one before), so the
//! events deliver them in the order they were sent.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use wendy_proto::rng::Rng;
use wendy_proto::{ConnId, Instant};

use super::jobs::{Input, Job};
use super::{Sim, NONE};
use crate::config::SplitMode;
use crate::net::{addr_host, ephemeral_addr, host_addr};
use crate::queue::Ev;

/// A stream connection between two hosts. Side 0 dialled, side 1 accepted.
///
/// 64 bytes. Its latency is not kept: it is computed again from the two hosts' places when a
/// segment leaves (the same function of the same two places, so the same value).
#[derive(Debug, Default)]
pub(super) struct Link {
    pub(super) gen: u32,
    pub(super) host: [u32; 2],
    pub(super) inc: [u32; 2],
    /// The side has not closed it.
    pub(super) open: [bool; 2],
    /// The slot in [`Links::segments`] of the last segment queued towards each side during the
    /// current event, `NONE` if none: frames written on one connection while handling one
    /// input travel together, as one write. Reset when the next event starts
    /// ([`Links::new_batch`]).
    pub(super) tail: [u32; 2],
    /// The node's name for it on each side (0: not named yet).
    pub(super) conn: [u64; 2],
    /// Latest arrival scheduled towards each side: frames never overtake each other.
    pub(super) last: [u64; 2],
    /// Something was sent towards the accepting side before its node was handed the
    /// connection (see [`Sim::syn_ack_job`]).
    pub(super) fed: bool,
}

/// Links per chunk of [`LinkSlab`] (64 KiB of records).
const CHUNK: usize = 1024;

/// The link records, in chunks of [`CHUNK`]: the slab grows a chunk at a time, never copying
/// the records or doubling its capacity (a vector holds up to twice its peak, and both the old
/// and the new buffer while it grows).
#[derive(Debug, Default)]
pub(super) struct LinkSlab {
    chunks: Vec<Box<[Link]>>,
    len: usize,
}

impl LinkSlab {
    /// Records in use or free (free ones are in [`Links::free`]).
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Records allocated.
    pub(super) fn capacity(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    /// A new record at the end; returns its index.
    fn push(&mut self) -> u32 {
        if self.len == self.capacity() {
            self.chunks.push((0..CHUNK).map(|_| Link::default()).collect());
        }
        self.len += 1;
        (self.len - 1) as u32
    }

    /// Starts loading record `i` (a hint, see [`Sim::step`]).
    pub(super) fn prefetch(&self, i: usize) {
        if let Some(c) = self.chunks.get(i / CHUNK) {
            prefetch_index::prefetch_index(c, i % CHUNK);
        }
    }

    /// Record `i`, if there is one.
    pub(super) fn get(&self, i: usize) -> Option<&Link> {
        (i < self.len).then(|| &self.chunks[i / CHUNK][i % CHUNK])
    }
}

impl std::ops::Index<usize> for LinkSlab {
    type Output = Link;
    fn index(&self, i: usize) -> &Link {
        debug_assert!(i < self.len);
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl std::ops::IndexMut<usize> for LinkSlab {
    fn index_mut(&mut self, i: usize) -> &mut Link {
        debug_assert!(i < self.len);
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Drop,
    Hold,
}

/// Every link, the free list, and the faults in force between hosts.
#[derive(Debug)]
pub(super) struct Links {
    pub(super) all: LinkSlab,
    pub(super) free: Vec<u32>,
    /// The (link, side) whose `tail` was set during the current event.
    touched: Vec<(u32, u8)>,
    /// Jitter and loss draws.
    rng: Rng,
    /// The network-wide split in force, if any.
    pub(super) split: Option<SplitMode>,
    drop_pairs: BTreeSet<(u32, u32)>,
    pub(super) hold_pairs: BTreeSet<(u32, u32)>,
    /// Held segments: (link, generation, towards side, slot).
    held: Vec<(u32, u32, u8, u32)>,
    /// Segments in flight, each owned by the one event that delivers it; `None` is a close.
    pub(super) segments: Vec<Option<Bytes>>,
    /// Free slots of `segments`.
    pub(super) free_segments: Vec<u32>,
}

impl Links {
    pub(super) fn new(rng: Rng) -> Self {
        Links {
            all: LinkSlab::default(),
            free: Vec::new(),
            touched: Vec::new(),
            rng,
            split: None,
            drop_pairs: BTreeSet::new(),
            hold_pairs: BTreeSet::new(),
            held: Vec::new(),
            segments: Vec::new(),
            free_segments: Vec::new(),
        }
    }

    /// Stores a segment (or a close) in flight; returns its slot.
    fn put_segment(&mut self, item: Option<Bytes>) -> u32 {
        match self.free_segments.pop() {
            Some(i) => {
                self.segments[i as usize] = item;
                i
            }
            None => {
                self.segments.push(item);
                (self.segments.len() - 1) as u32
            }
        }
    }

    /// Takes the segment out of its slot, freeing it.
    fn take_segment(&mut self, i: u32) -> Option<Bytes> {
        self.free_segments.push(i);
        self.segments[i as usize].take()
    }

    /// A new event starts: the segments queued during the previous one take no more frames.
    pub(super) fn new_batch(&mut self) {
        for (l, side) in self.touched.drain(..) {
            self.all[l as usize].tail[usize::from(side)] = NONE;
        }
    }

    /// The two hosts of link `l`, lower first.
    fn pair(&self, l: u32) -> (u32, u32) {
        let [a, b] = self.all[l as usize].host;
        (a.min(b), a.max(b))
    }
}

impl Sim {
    /// Partition: drop everything between `a` and `b` (both directions) until [`Sim::repair`].
    pub fn partition(&mut self, a: u32, b: u32) {
        self.links.drop_pairs.insert((a.min(b), a.max(b)));
    }

    /// Repairs a partition between `a` and `b`.
    pub fn repair(&mut self, a: u32, b: u32) {
        self.links.drop_pairs.remove(&(a.min(b), a.max(b)));
    }

    /// Hold: frames between `a` and `b` wait, in order, until [`Sim::release`].
    pub fn hold(&mut self, a: u32, b: u32) {
        self.links.hold_pairs.insert((a.min(b), a.max(b)));
    }

    /// Releases held frames between `a` and `b`.
    pub fn release(&mut self, a: u32, b: u32) {
        let pair = (a.min(b), a.max(b));
        self.links.hold_pairs.remove(&pair);
        self.release_where(|s, l| s.links.pair(l) == pair);
    }

    /// Heals the network-wide split: a partition is repaired, held frames are released.
    pub(super) fn heal_split(&mut self) {
        let was = self.links.split.take();
        if was == Some(SplitMode::Hold) {
            let hold_pairs = std::mem::take(&mut self.links.hold_pairs);
            self.release_where(|s, l| !hold_pairs.contains(&s.links.pair(l)));
            self.links.hold_pairs = hold_pairs;
        }
    }

    pub(super) fn on_connect(&mut self, h: u32, conn: ConnId, addr: SocketAddr) {
        let target = addr_host(addr).filter(|&t| (t as usize) < self.hosts.len());
        // An address outside the plan is refused after a millisecond.
        let lat = target.map_or(1_000, |t| self.latency(h, t));
        let l = self.alloc_link();
        let inc = target.map_or(0, |t| self.hosts[t as usize].inc);
        let link = &mut self.links.all[l as usize];
        link.host = [h, target.unwrap_or(NONE)];
        link.inc = [self.hosts[h as usize].inc, inc];
        link.conn = [conn.0, 0];
        link.open = [true, false];
        link.last = [0, 0];
        link.fed = false;
        // A reused record may remember a batch of its former life: no coalescing into that.
        link.tail = [NONE, NONE];
        let gen = link.gen;
        self.hosts[h as usize].conns.insert(conn.0, l << 1);
        match target {
            Some(_) => self.queue.push(self.now + 2 * lat, Ev::SynAck { link: l, gen }),
            None => self.queue.push(self.now + lat, Ev::Refused { link: l, gen }),
        }
    }

    /// The connection's set-up is answered, one round trip after it was asked for. As a
    /// kernel does, the accepting host completed it without its node: the node is handed the
    /// connection with its first bytes (Linux's `TCP_DEFER_ACCEPT`), and never sees one that
    /// closes before it carries any (a candidate timed by its set-up alone). The accepting
    /// host is looked at now rather than when the SYN reached it half a round trip ago: it
    /// must be up in the life it had when the set-up began, and reachable.
    pub(super) fn syn_ack_job(&mut self, l: u32, gen: u32) -> Option<Job> {
        let link = &self.links.all[l as usize];
        if link.gen != gen {
            return None;
        }
        if !self.end_live(l, 0) {
            self.maybe_free(l);
            return None;
        }
        let (d, t, conn) = (link.host[0], link.host[1], ConnId(link.conn[0]));
        let host = &self.hosts[t as usize];
        let blocked = self.blocked(d, t).is_some();
        if !host.up || host.inc != link.inc[1] || blocked {
            if self.net.cfg().refuse_dead && !blocked {
                return self.refused_job(l, gen);
            }
            let delay = (self.net.cfg().syn_timeout.as_micros() as u64).saturating_sub(2 * self.latency(d, t));
            self.queue.push(self.now + delay, Ev::Refused { link: l, gen });
            return None;
        }
        self.links.all[l as usize].open[1] = true;
        self.job(d, Input::Connected(conn))
    }

    /// The address an accepting host sees for the dialler of link `l`.
    fn remote_addr(&self, l: u32) -> SocketAddr {
        let [d, t] = self.links.all[l as usize].host;
        let global = self.hosts[d as usize].place.region != self.hosts[t as usize].place.region;
        ephemeral_addr(d, global && self.net.cfg().regions > 0, l)
    }

    /// True if side 1 of link `l` was set up but its node was never handed it, and nothing
    /// was sent towards it: closing side 0 (or its host's crash) ends it with no event.
    pub(super) fn unfed(&self, l: u32) -> bool {
        let link = &self.links.all[l as usize];
        link.open[1] && link.conn[1] == 0 && !link.fed
    }

    /// Side 0 of link `l` is gone: if side 1 is [`Sim::unfed`], the accepting host drops it
    /// unseen (true); otherwise it must hear of it.
    pub(super) fn drop_unfed(&mut self, l: u32) -> bool {
        let unfed = self.unfed(l);
        if unfed {
            self.links.all[l as usize].open[1] = false;
        }
        unfed
    }

    /// The set-up of link `l` failed: its dialler's job, if its side is still live.
    pub(super) fn refused_job(&mut self, l: u32, gen: u32) -> Option<Job> {
        let link = &mut self.links.all[l as usize];
        if link.gen != gen {
            return None;
        }
        let (d, conn) = (link.host[0], link.conn[0]);
        let mut job = None;
        if self.end_live(l, 0) {
            self.links.all[l as usize].open[0] = false;
            self.hosts[d as usize].conns.remove(conn);
            job = self.job(d, Input::ConnectFailed(ConnId(conn)));
        }
        match job {
            Some(mut j) => {
                j.then_free = Some(l);
                Some(j)
            }
            None => {
                self.maybe_free(l);
                None
            }
        }
    }

    pub(super) fn on_transmit(&mut self, h: u32, conn: ConnId, data: Bytes) {
        self.m.trace.frame(self.now, h, conn.0, &data);
        self.m.frames += 1;
        self.m.bytes += data.len() as u64;
        let Some(code) = self.hosts[h as usize].conns.get(conn.0) else { return };
        let (l, side) = (code >> 1, (code & 1) as u8);
        let other = 1 - side;
        if self.end_live(l, other) {
            self.send_on(l, other, Some(data));
        }
    }

    pub(super) fn on_close(&mut self, h: u32, conn: ConnId) {
        let Some(code) = self.hosts[h as usize].conns.remove(conn.0) else { return };
        let (l, side) = (code >> 1, (code & 1) as u8);
        let other = 1 - side;
        self.links.all[l as usize].open[side as usize] = false;
        let dropped = side == 0 && self.drop_unfed(l);
        if !dropped && self.end_live(l, other) {
            self.send_on(l, other, None);
        }
        self.maybe_free(l);
    }

    /// Queues a frame (or the close, `None`) towards side `to` of link `l`.
    fn send_on(&mut self, l: u32, to: u8, item: Option<Bytes>) {
        let t = usize::from(to);
        let link = &self.links.all[l as usize];
        let (from_host, to_host, gen, tail) = (link.host[1 - t], link.host[t], link.gen, link.tail[t]);
        if t == 1 && link.conn[1] == 0 {
            self.links.all[l as usize].fed = true;
        }
        match self.blocked(from_host, to_host) {
            Some(Block::Drop) => return,
            Some(Block::Hold) => {
                let slot = self.links.put_segment(item);
                self.links.held.push((l, gen, to, slot));
                return;
            }
            None => {}
        }
        if let (Some(data), true) = (&item, tail != NONE && self.net.cfg().coalesce) {
            if let Some(last) = self.links.segments[tail as usize].as_mut() {
                let mut seg = BytesMut::with_capacity(last.len() + data.len());
                seg.extend_from_slice(last);
                seg.extend_from_slice(data);
                *last = seg.freeze();
                return;
            }
        }
        let lat = self.link_latency(l);
        let delay = if item.is_some() { self.net.frame_delay(&mut self.links.rng, lat) } else { Some(lat) };
        let Some(delay) = delay else { return };
        let slot = self.links.put_segment(item);
        let link = &mut self.links.all[l as usize];
        let at = (self.now + delay).max(link.last[t]);
        link.last[t] = at;
        if link.tail[t] == NONE {
            self.links.touched.push((l, to));
        }
        link.tail[t] = slot;
        self.queue.push(at, Ev::Arrive { link: l, gen, side: to, slot });
    }

    /// A segment (or the close) reaches side `side` of link `l`: the job of that side's node
    /// (handed the connection first if this is its first segment), if its side is still live.
    pub(super) fn arrive_job(&mut self, l: u32, gen: u32, side: u8, slot: u32) -> Option<Job> {
        let s = usize::from(side);
        let item = self.links.take_segment(slot);
        let link = &self.links.all[l as usize];
        if link.gen != gen {
            return None;
        }
        let (h, conn, inc, open) = (link.host[s], link.conn[s], link.inc[s], link.open[s]);
        if !self.end_live(l, side) {
            // A host that is up again (bounced), or up without the process (refuse_dead),
            // answers with a reset: the sender learns the connection is gone.
            let host = &self.hosts[h as usize];
            if open && (host.up || self.net.cfg().refuse_dead) && host.inc != inc {
                self.links.all[l as usize].open[s] = false;
                if self.end_live(l, 1 - side) {
                    self.send_on(l, 1 - side, None);
                }
            }
            self.maybe_free(l);
            return None;
        }
        if side == 1 && conn == 0 && item.is_none() {
            // Closed before it carried a byte: its node never knew of it.
            self.links.all[l as usize].open[1] = false;
            self.maybe_free(l);
            return None;
        }
        let input = match item {
            Some(data) => {
                let conn = if side == 1 && conn == 0 {
                    let remote = self.remote_addr(l);
                    let node = self.hosts[h as usize].node.as_deref_mut()?;
                    let c = node.handle_accepted(Instant::from_micros(self.now), remote);
                    self.links.all[l as usize].conn[1] = c.0;
                    self.hosts[h as usize].conns.insert(c.0, l << 1 | 1);
                    c.0
                } else {
                    conn
                };
                Input::Bytes(ConnId(conn), data)
            }
            None => {
                self.links.all[l as usize].open[s] = false;
                self.hosts[h as usize].conns.remove(conn);
                Input::Closed(ConnId(conn))
            }
        };
        let mut job = self.job(h, input)?;
        job.then_free = Some(l);
        Some(job)
    }

    fn alloc_link(&mut self) -> u32 {
        if let Some(l) = self.links.free.pop() {
            return l;
        }
        self.links.all.push()
    }

    /// True if side `s` of link `l` is open and its host still in the same life.
    fn end_live(&self, l: u32, s: u8) -> bool {
        let link = &self.links.all[l as usize];
        let s = usize::from(s);
        if !link.open[s] {
            return false;
        }
        let host = &self.hosts[link.host[s] as usize];
        host.up && host.inc == link.inc[s]
    }

    /// Frees the link once neither side can use it; events still in flight for it go stale.
    pub(super) fn maybe_free(&mut self, l: u32) {
        if self.end_live(l, 0) || self.end_live(l, 1) {
            return;
        }
        let link = &mut self.links.all[l as usize];
        if link.host[0] == NONE && link.host[1] == NONE {
            return; // already free
        }
        link.gen = link.gen.wrapping_add(1);
        link.host = [NONE, NONE];
        link.open = [false, false];
        // Its segments still in flight are freed as their (now stale) events come due.
        self.links.free.push(l);
    }

    fn blocked(&self, a: u32, b: u32) -> Option<Block> {
        if let Some(mode) = self.links.split {
            if self.hosts[a as usize].side != self.hosts[b as usize].side {
                return Some(match mode {
                    SplitMode::Partition => Block::Drop,
                    SplitMode::Hold => Block::Hold,
                });
            }
        }
        let pair = (a.min(b), a.max(b));
        if !self.links.drop_pairs.is_empty() && self.links.drop_pairs.contains(&pair) {
            return Some(Block::Drop);
        }
        if !self.links.hold_pairs.is_empty() && self.links.hold_pairs.contains(&pair) {
            return Some(Block::Hold);
        }
        None
    }

    /// Schedules the held frames of the links matching `pred`, in the order they were sent.
    fn release_where(&mut self, pred: impl Fn(&Sim, u32) -> bool) {
        let held = std::mem::take(&mut self.links.held);
        let mut keep = Vec::new();
        for (l, gen, side, slot) in held {
            if self.links.all[l as usize].gen != gen {
                self.links.take_segment(slot);
                continue;
            }
            if !pred(self, l) {
                keep.push((l, gen, side, slot));
                continue;
            }
            let lat = self.link_latency(l);
            let link = &mut self.links.all[l as usize];
            let at = (self.now + lat).max(link.last[usize::from(side)]);
            link.last[usize::from(side)] = at;
            self.queue.push(at, Ev::Arrive { link: l, gen, side, slot });
        }
        self.links.held = keep;
    }

    /// Model one-way latency between hosts `a` and `b`, microseconds.
    pub(super) fn latency(&self, a: u32, b: u32) -> u64 {
        self.net.latency_us(&self.hosts[a as usize].place, &self.hosts[b as usize].place)
    }

    /// Model one-way latency of link `l` (both of its hosts are set).
    fn link_latency(&self, l: u32) -> u64 {
        let [a, b] = self.links.all[l as usize].host;
        self.latency(a, b)
    }

    /// The address `from` uses to reach `to`: local in the same region, else global.
    pub(super) fn addr_from(&self, to: u32, from: u32) -> SocketAddr {
        let global = self.net.cfg().regions > 0
            && self.hosts[to as usize].place.region != self.hosts[from as usize].place.region;
        host_addr(to, global)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimConfig;

    /// The accepting node is handed a connection with its first bytes, as Linux's
    /// `TCP_DEFER_ACCEPT` does: one that its dialler closes before sending any (a candidate
    /// timed by its set-up alone) never reaches it and ends with no event.
    #[test]
    fn the_acceptor_is_handed_a_connection_with_its_first_bytes() {
        let mut sim = Sim::new(SimConfig { nodes: 0, ..SimConfig::default() });
        let (a, b) = (sim.add_host(), sim.add_host());
        let second = |sim: &mut Sim| {
            let t = Instant::from_micros(sim.now + 1_000_000);
            sim.run_until(t);
        };
        let accepted = |sim: &Sim| sim.node(b).map(|n| n.connection_count());
        // Set up, then closed unused.
        sim.on_connect(a, ConnId(1000), host_addr(b, false));
        second(&mut sim);
        let l = sim.hosts[a as usize].conns.get(1000).expect("the dialler's link") >> 1;
        assert!(sim.unfed(l), "set up by the accepting host, not handed to its node");
        assert_eq!(accepted(&sim), Some(0));
        let pending = sim.pending_events();
        sim.on_close(a, ConnId(1000));
        assert_eq!(sim.pending_events(), pending, "no close travels to a node that never saw it");
        assert!(sim.links.free.contains(&l), "the link is free at once");
        second(&mut sim);
        assert_eq!(accepted(&sim), Some(0));
        // Set up, then bytes: the accepting node gets the connection with them (garbage here,
        // which it reads as such).
        sim.on_connect(a, ConnId(1001), host_addr(b, false));
        second(&mut sim);
        assert_eq!(accepted(&sim), Some(0));
        sim.on_transmit(a, ConnId(1001), Bytes::from_static(b"\x00\x00\x00\x05\xff\xff\xff\xff\xff"));
        second(&mut sim);
        let node = sim.node(b).expect("up");
        assert!(
            node.stats().frames_in + node.stats().decode_errors + node.stats().protocol_errors > 0,
            "{:?}",
            node.stats()
        );
        // Set up, then its dialler's host crashes: the accepting host drops it, unseen.
        sim.on_connect(a, ConnId(1002), host_addr(b, false));
        second(&mut sim);
        let l = sim.hosts[a as usize].conns.get(1002).expect("the dialler's link") >> 1;
        sim.crash(a);
        assert!(sim.links.free.contains(&l), "the link is free at once");
    }
}
