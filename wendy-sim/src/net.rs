//! The network model: where nodes are, how far apart, and how they are addressed.
//!
//! No link table: the latency between two nodes is computed from their coordinates or regions
//! when a frame is sent, so memory is linear in the number of nodes.

use std::net::{Ipv4Addr, SocketAddr};

use wendy_proto::rng::Rng;

use crate::config::{NetConfig, Topology};

/// Port every simulated node listens on.
pub const PORT: u16 = 7000;
/// First octet of local addresses (10/8).
const LOCAL_NET: u8 = 10;
/// First octet of global addresses when regions are used (11/8).
const GLOBAL_NET: u8 = 11;
/// Most hosts the address plan can name (24 bits of host number).
pub const MAX_HOSTS: usize = 1 << 24;

/// Where one host sits in the model.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Place {
    /// Coordinates: a point in the unit disc (z = 0) or on the unit sphere.
    pub pos: [f32; 3],
    /// Region number (0 when regions are off).
    pub region: u16,
}

/// Draws places and computes latencies.
#[derive(Debug)]
pub(crate) struct Net {
    cfg: NetConfig,
    diameter_us: f64,
    base_us: f64,
}

impl Net {
    pub(crate) fn new(cfg: NetConfig) -> Self {
        let diameter_us = cfg.diameter.as_micros() as f64;
        let base_us = cfg.base.as_micros() as f64;
        Net { cfg, diameter_us, base_us }
    }

    pub(crate) fn cfg(&self) -> &NetConfig {
        &self.cfg
    }

    /// A random place. Rejection sampling only (no trigonometry), so it replays exactly.
    pub(crate) fn place(&self, rng: &mut Rng) -> Place {
        let region = if self.cfg.regions > 0 { rng.below(u64::from(self.cfg.regions)) as u16 } else { 0 };
        let mut coord = || (rng.unit_f64() * 2.0 - 1.0) as f32;
        let pos = match self.cfg.topology {
            Topology::Plane => loop {
                let (x, y) = (coord(), coord());
                if x * x + y * y <= 1.0 {
                    break [x, y, 0.0];
                }
            },
            Topology::Sphere => loop {
                let (x, y, z) = (coord(), coord(), coord());
                let n = x * x + y * y + z * z;
                if n > 1e-6 && n <= 1.0 {
                    let r = n.sqrt();
                    break [x / r, y / r, z / r];
                }
            },
        };
        Place { pos, region }
    }

    /// Base one-way latency between two places, in microseconds (at least 1).
    pub(crate) fn latency_us(&self, a: &Place, b: &Place) -> u64 {
        if self.cfg.regions > 0 {
            let d = if a.region == b.region { self.cfg.intra_region } else { self.cfg.inter_region };
            return (d.as_micros() as u64).max(1);
        }
        let dx = f64::from(a.pos[0] - b.pos[0]);
        let dy = f64::from(a.pos[1] - b.pos[1]);
        let dz = f64::from(a.pos[2] - b.pos[2]);
        // Both the unit disc and the unit sphere are 2 across.
        let dist = (dx * dx + dy * dy + dz * dz).sqrt() / 2.0;
        ((self.base_us + dist * self.diameter_us) as u64).max(1)
    }

    /// The least one-way latency between any two places, microseconds (at least 1): nothing
    /// sent reaches another host sooner.
    pub(crate) fn least_latency_us(&self) -> u64 {
        if self.cfg.regions > 0 {
            let least = self.cfg.intra_region.min(self.cfg.inter_region);
            return (least.as_micros() as u64).max(1);
        }
        (self.base_us as u64).max(1)
    }

    /// The delay of one frame over a link of base latency `lat`: jitter, and loss as
    /// retransmission delay (TCP mode). `None` if the frame is dropped (datagram mode).
    pub(crate) fn frame_delay(&self, rng: &mut Rng, lat: u64) -> Option<u64> {
        let mut d = lat;
        if self.cfg.jitter > 0.0 {
            d += (lat as f64 * self.cfg.jitter * rng.unit_f64()) as u64;
        }
        if self.cfg.loss > 0.0 {
            match self.cfg.loss_mode {
                crate::config::LossMode::Drop => {
                    if rng.unit_f64() < self.cfg.loss {
                        return None;
                    }
                }
                crate::config::LossMode::Tcp => {
                    let rto = self.cfg.rto.as_micros() as u64;
                    // Bounded: a frame lost 64 times in a row is a modelling accident.
                    for _ in 0..64 {
                        if rng.unit_f64() >= self.cfg.loss {
                            break;
                        }
                        d += rto.max(2 * lat);
                    }
                }
            }
        }
        Some(d)
    }
}

/// The address a host listens on: local (`global == false`) or global.
pub(crate) fn host_addr(host: u32, global: bool) -> SocketAddr {
    let net = if global { GLOBAL_NET } else { LOCAL_NET };
    let [_, a, b, c] = host.to_be_bytes();
    SocketAddr::from((Ipv4Addr::new(net, a, b, c), PORT))
}

/// The address a connection from `host` appears to come from (an ephemeral port).
pub(crate) fn ephemeral_addr(host: u32, global: bool, link: u32) -> SocketAddr {
    let mut a = host_addr(host, global);
    a.set_port(32768 + (link % 28000) as u16);
    a
}

/// The host an address names, whatever the port; `None` for addresses outside the plan.
pub(crate) fn addr_host(addr: SocketAddr) -> Option<u32> {
    match addr {
        SocketAddr::V4(v4) => {
            let [n, a, b, c] = v4.ip().octets();
            (n == LOCAL_NET || n == GLOBAL_NET).then(|| u32::from_be_bytes([0, a, b, c]))
        }
        SocketAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for h in [0u32, 1, 255, 256, 70_000, (MAX_HOSTS - 1) as u32] {
            assert_eq!(addr_host(host_addr(h, false)), Some(h));
            assert_eq!(addr_host(host_addr(h, true)), Some(h));
            assert_eq!(addr_host(ephemeral_addr(h, true, 99)), Some(h));
        }
        assert_eq!(addr_host("127.0.0.1:1".parse().unwrap()), None);
    }

    #[test]
    fn latency_is_symmetric_and_bounded() {
        let net = Net::new(NetConfig { topology: Topology::Sphere, ..NetConfig::default() });
        let mut rng = Rng::new(3);
        let ps: Vec<Place> = (0..50).map(|_| net.place(&mut rng)).collect();
        for a in &ps {
            for b in &ps {
                let l = net.latency_us(a, b);
                assert_eq!(l, net.latency_us(b, a));
                assert!((1_000..=101_001).contains(&l), "{l}");
            }
        }
    }
}
