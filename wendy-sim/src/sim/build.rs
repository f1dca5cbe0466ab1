//! Building the initial population from the oracle's view of the ring (`--build tables`),
//! instead of through the join protocol: for rings too large to join one node at a time
//! within a run (a join costs about two hundred connections network-wide).
//!
//! Each node gets what a settled ring would have given it: its exact leaf set (the
//! `leaf_set_size / 2` nearest ids on each side), and in each routing-table cell the nearest
//! (by the network model's latency) of the nodes around it in the network's space that fit
//! the cell and of up to [`CANDIDATES`] nodes drawn from the cell's id range, as proximity
//! neighbour selection approximates (the near rows get near nodes, the far rows, whose ranges
//! hold few nodes, whichever are there); the neighbourhood set takes the nearest of those.
//! The nodes then start as members ([`wendy_proto::Node::start_member`]) and run the protocol
//! from there: probing, heartbeats, repair and routing are the same code as after a join. The
//! nodes are created spread over one heartbeat interval, so that their ticks do not fall on
//! the same instants (their first heartbeats still come within the same ten seconds, since
//! they all hear from their members at the start: see wendy-sim/README.md).

use core::time::Duration;

use wendy_proto::id::DIGITS;
use wendy_proto::rng::Rng;
use wendy_proto::{Instant, NodeId, NodeInfo};

use super::Sim;

/// Nodes drawn from a routing-table cell's id range; the nearest takes the cell.
const CANDIDATES: u64 = 16;

/// Bits of one digit of an id.
const DIGIT_BITS: usize = 4;

impl Sim {
    /// Creates `nodes` hosts and starts each as a member of the ring they form together.
    pub(super) fn build_tables(&mut self, nodes: usize) {
        let spread = self.cfg.node.heartbeat.as_micros() as u64;
        let start = self.now;
        for i in 0..nodes as u64 {
            self.now = start + spread * i / nodes as u64;
            self.add_host();
        }
        let first = self.hosts.len() - nodes;
        let mut ring: Vec<(u128, u32)> =
            (first..self.hosts.len()).map(|h| (id_bits(self.hosts[h].id), h as u32)).collect();
        ring.sort_unstable();
        let infos: Vec<NodeInfo> =
            ring.iter().map(|&(_, h)| self.node(h).expect("just started").info().clone()).collect();
        let mut pos_of = vec![0u32; nodes];
        for (i, &(_, h)) in ring.iter().enumerate() {
            pos_of[h as usize - first] = i as u32;
        }
        let grid = Grid::new(self, first);
        let mut pool: Vec<(u16, u64, usize)> = Vec::new();
        let mut rng = Rng::new(self.cfg.seed ^ 0x7ab1_e5b0_0757_4a9e);
        let half = (self.cfg.node.leaf_set_size / 2).max(1).min(nodes.saturating_sub(1));
        let now = Instant::from_micros(self.now);
        let mut members: Vec<(NodeInfo, Duration)> = Vec::new();
        for pos in 0..ring.len() {
            let (me, h) = ring[pos];
            members.clear();
            let mut add = |sim: &Sim, i: usize| {
                let t = ring[i].1;
                let rtt = Duration::from_micros(2 * sim.latency(h, t));
                members.push((infos[i].clone(), rtt));
            };
            // The nearest node around us for each cell it fits: (cell, latency, ring position).
            pool.clear();
            for t in grid.around(&self.hosts[h as usize].place.pos) {
                if t == h {
                    continue;
                }
                let i = pos_of[t as usize - first] as usize;
                let id = NodeId::from_u128(ring[i].0);
                let row = NodeId::from_u128(me).common_prefix_len(id).min(DIGITS - 1);
                let cell = cell_of(row, id.digit(row));
                pool.push((cell, self.latency(h, t), i));
            }
            pool.sort_unstable();
            pool.dedup_by_key(|e| e.0);
            let n = ring.len();
            for k in 1..=half {
                add(self, (pos + k) % n);
                add(self, (pos + n - k) % n);
            }
            for row in 0..DIGITS {
                // Nodes sharing `row` digits with us: none but us, and no row from here on
                // has entries.
                let (lo, hi) = prefix_range(&ring, me, row, None);
                if hi - lo <= 1 {
                    break;
                }
                let own = NodeId::from_u128(me).digit(row);
                for col in (0..16u8).filter(|&c| c != own) {
                    let (a, b) = prefix_range(&ring, me, row, Some(col));
                    if a == b {
                        continue;
                    }
                    let draws = CANDIDATES.min((b - a) as u64);
                    let cell = cell_of(row, col);
                    let mut best: Option<(u64, usize)> =
                        pool.binary_search_by_key(&cell, |e| e.0).ok().map(|j| (pool[j].1, pool[j].2));
                    for d in 0..draws {
                        let i = if (b - a) as u64 <= CANDIDATES {
                            a + d as usize
                        } else {
                            a + rng.below((b - a) as u64) as usize
                        };
                        let lat = self.latency(h, ring[i].1);
                        if best.is_none_or(|(l, j)| (lat, i) < (l, j)) {
                            best = Some((lat, i));
                        }
                    }
                    if let Some((_, i)) = best {
                        add(self, i);
                    }
                }
            }
            let Some(mut node) = self.take(h) else { continue };
            node.start_member(now, &members).expect("a fresh node starts as a member");
            self.finish(h, node);
        }
    }
}

/// The hosts by where they are: a grid of cubes over [-1, 1]^3 (the network model's places
/// are on the unit sphere or in the unit disc), about [`PER_CELL`] hosts a cube on the
/// sphere, so that the 27 cubes around a place hold some dozens of its nearest hosts.
struct Grid {
    /// (cube, host), sorted.
    cubes: Vec<(u32, u32)>,
    /// Cubes along each axis.
    side: u32,
}

/// Hosts per occupied cube of [`Grid`], about.
const PER_CELL: usize = 8;

impl Grid {
    fn new(sim: &Sim, first: usize) -> Self {
        let n = sim.hosts.len() - first;
        // On the sphere about pi * side^2 cubes are occupied.
        let side = ((n / PER_CELL) as f64 / std::f64::consts::PI).sqrt().clamp(1.0, 1024.0) as u32;
        let mut cubes: Vec<(u32, u32)> = (first..sim.hosts.len())
            .map(|h| (Self::cube(side, &sim.hosts[h].place.pos, [0; 3]).unwrap_or(0), h as u32))
            .collect();
        cubes.sort_unstable();
        Grid { cubes, side }
    }

    /// The cube of `pos` moved by `d` cubes along each axis, if inside the grid.
    fn cube(side: u32, pos: &[f32; 3], d: [i32; 3]) -> Option<u32> {
        let mut key = 0u32;
        for (p, d) in pos.iter().zip(d) {
            let i = ((f64::from(*p) + 1.0) / 2.0 * f64::from(side)).floor() as i32;
            let i = i.clamp(0, side as i32 - 1) + d;
            if i < 0 || i >= side as i32 {
                return None;
            }
            key = key * side + i as u32;
        }
        Some(key)
    }

    /// The hosts in the 27 cubes around `pos`.
    fn around<'a>(&'a self, pos: &'a [f32; 3]) -> impl Iterator<Item = u32> + 'a {
        (0..27).filter_map(move |k| Self::cube(self.side, pos, [k / 9 - 1, k / 3 % 3 - 1, k % 3 - 1])).flat_map(
            move |c| {
                let a = self.cubes.partition_point(|e| e.0 < c);
                let b = self.cubes.partition_point(|e| e.0 <= c);
                self.cubes[a..b].iter().map(|e| e.1)
            },
        )
    }
}

/// A routing-table cell as one number, row by row (the order `pool` is sorted in).
fn cell_of(row: usize, col: u8) -> u16 {
    (row * 16 + usize::from(col)) as u16
}

/// The id as a number, most significant digit first.
fn id_bits(id: NodeId) -> u128 {
    u128::from_be_bytes(id.to_bytes())
}

/// The positions `[a, b)` in `ring` (sorted by id) of the ids that share the first `row`
/// digits with `me` and, if `col` is given, have `col` as their next digit.
fn prefix_range(ring: &[(u128, u32)], me: u128, row: usize, col: Option<u8>) -> (usize, usize) {
    let mask = |digits: usize| match 128 - DIGIT_BITS * digits {
        128 => 0,
        free => !0u128 << free,
    };
    let mut lo = me & mask(row);
    let mut keep = mask(row);
    if let Some(c) = col {
        let free = 128 - DIGIT_BITS * (row + 1);
        lo |= u128::from(c) << free;
        keep = mask(row + 1);
    }
    let hi = lo | !keep;
    let a = ring.partition_point(|&(x, _)| x < lo);
    let b = ring.partition_point(|&(x, _)| x <= hi);
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimConfig;

    /// Every node starts ready, with the exact leaf set and a routing-table entry in every
    /// cell whose id range holds a node.
    #[test]
    fn built_tables_are_complete() {
        let mut sim = Sim::new(SimConfig { nodes: 0, ..SimConfig::default() });
        let n = 600;
        sim.build_tables(n);
        let mut ring: Vec<(u128, u32)> = (0..n as u32).map(|h| (id_bits(sim.hosts[h as usize].id), h)).collect();
        ring.sort_unstable();
        for (pos, &(me, h)) in ring.iter().enumerate() {
            let node = sim.node(h).expect("up");
            assert!(node.is_ready());
            assert_eq!(node.leaf_set().len(), 32, "{pos}");
            for k in 1..=16 {
                for i in [(pos + k) % n, (pos + n - k) % n] {
                    assert!(node.leaf_set().contains(NodeId::from_u128(ring[i].0)), "{pos} {k}");
                }
            }
            let mut cells = 0;
            for row in 0..DIGITS {
                let own = NodeId::from_u128(me).digit(row);
                for col in (0..16u8).filter(|&c| c != own) {
                    let (a, b) = prefix_range(&ring, me, row, Some(col));
                    cells += usize::from(a < b);
                }
                if prefix_range(&ring, me, row + 1, None).1 - prefix_range(&ring, me, row + 1, None).0 <= 1 {
                    break;
                }
            }
            assert_eq!(node.routing_table().len(), cells, "node {pos}");
        }
        assert_eq!(sim.oracle.joined.len(), n);
    }

    #[test]
    fn a_prefix_range_holds_exactly_the_ids_with_that_prefix() {
        let ids = [0x00u128, 0x1f, 0x20, 0x2a, 0x2f, 0x30, 0xff].map(|x| x << 120);
        let ring: Vec<(u128, u32)> = ids.iter().enumerate().map(|(i, &x)| (x, i as u32)).collect();
        let me = 0x2au128 << 120;
        assert_eq!(prefix_range(&ring, me, 0, None), (0, 7));
        assert_eq!(prefix_range(&ring, me, 0, Some(2)), (2, 5));
        assert_eq!(prefix_range(&ring, me, 1, None), (2, 5));
        assert_eq!(prefix_range(&ring, me, 1, Some(0xf)), (4, 5));
        assert_eq!(prefix_range(&ring, me, 1, Some(0xa)), (3, 4));
        assert_eq!(prefix_range(&ring, me, 1, Some(0)), (2, 3));
        assert_eq!(prefix_range(&ring, me, 1, Some(1)), (3, 3));
        assert_eq!(prefix_range(&ring, me, 0, Some(0)), (0, 1));
        assert_eq!(prefix_range(&ring, me, 0, Some(0xf)), (6, 7));
        assert_eq!(prefix_range(&ring, me, 32, None), (3, 4));
    }
}
