//! The engine: the clock, the event queue and the dispatch of each event to the concern that
//! handles it.

use wendy_proto::Instant;

use super::Sim;
use crate::queue::Ev;

impl Sim {
    /// Processes the next event; false if the queue is empty.
    pub fn step(&mut self) -> bool {
        let Some((t, ev)) = self.queue.pop() else { return false };
        self.now = self.now.max(t);
        self.events += 1;
        self.links.new_batch();
        match ev {
            Ev::Timer { host, gen } => self.on_timer(host, gen),
            Ev::SynAck { link, gen } => self.on_syn_ack(link, gen),
            Ev::Refused { link, gen } => self.on_refused(link, gen),
            Ev::Arrive { link, gen, side, slot } => self.on_arrive(link, gen, side, slot),
            Ev::Ctl(c) => self.on_ctl(c),
        }
        true
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
