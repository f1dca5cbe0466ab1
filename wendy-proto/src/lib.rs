//! A sans-IO, deterministic implementation of a Pastry node (the Go wendy, re-created).
//!
//! This crate is the whole protocol and nothing else: it performs no I/O, reads no clock,
//! starts no threads and draws no OS randomness. A [`Node`] is a state machine; a driver feeds
//! it inputs and carries out the outputs it asks for. `wendy-tokio` and `wendy-smol` drive it
//! over TCP; `wendy-sim` drives thousands of them through a simulated network. The same inputs
//! always give the same outputs, byte for byte: time is an argument ([`Instant`]), randomness
//! comes from a seeded generator whose algorithm is fixed in this crate ([`rng::Rng`]), and no
//! hash-map order reaches an output.
//!
//! # Pastry in one paragraph
//! Every node has a 128-bit [`NodeId`]. A message is sent *towards a key* and delivered at the
//! live node whose id is numerically closest to it, in about log16(N) hops, using a
//! [`LeafSet`](leaf_set::LeafSet) (the closest ids on each side), a
//! [`RoutingTable`](routing_table::RoutingTable) (32 rows of 16 nodes sharing ever longer
//! prefixes with us) and a [`Neighbourhood`](neighbourhood::Neighbourhood) (the nodes nearest by
//! round-trip time).
//!
//! # The layers
//! ```text
//! application   Pastry's common API: send (route), Output::Deliver (deliver), the ForwardHook
//!               (forward: veto, rewrite, consume), Event::LeafSetChanged (update), and the
//!               getters local_lookup, neighbor_set, replica_set, range         node/kbr.rs
//! overlay       routing (next hop, delivery)                                   node/routing.rs
//!               join (consistent join), membership (learning, proximity)       node/join.rs, membership.rs
//!               liveness (heartbeats, probes, failure, repair)                 node/liveness.rs
//! session       per connection: handshake, phases, limits, queues              node/session.rs, connections.rs
//! wire          frame and message codec, bounded before allocation             wire.rs
//! ```
//! Every deadline of every layer is an entry in one timer table (`node/timers.rs`);
//! [`Node::poll_timeout`] is the earliest. Policy (join retries, timer ratios, the rules for
//! application messages, when a leaving node is done) lives here and nowhere else, so the
//! simulator runs exactly what the drivers run.
//!
//! # The node's methods
//! - **inputs** (`handle_*`): [`Node::handle_accepted`], [`Node::handle_connected`],
//!   [`Node::handle_connect_failed`], [`Node::handle_data`] (or [`Node::handle_bytes`]),
//!   [`Node::handle_closed`],
//!   [`Node::handle_timeout`];
//! - **application commands**: [`Node::join`], [`Node::send`], [`Node::send_to`], [`Node::leave`]
//!   (then wait for [`Event::Drained`]), [`Node::set_forward_hook`];
//! - **outputs**: [`Node::poll_output`] (connect, transmit, close, deliver, forwarded, events)
//!   and [`Node::poll_timeout`];
//! - **getters** on `&self`.
//!
//! Every mutating method takes `now` first. Time going backwards is treated as no time passing;
//! `handle_timeout` called early is a no-op.
//!
//! # The driver's loop
//! Feed one input, then drain **every** output with `poll_output` until it returns `None`,
//! then sleep until `poll_timeout()` or the next input, whichever comes first. When both are
//! ready at once (the driver was not run for a while), feed the input that has arrived first,
//! then `handle_timeout`: a deadline judges peers by what they sent (an acknowledgement not seen
//! by then makes its hop late), so input left unread counts against them. Connections are
//! named by the node ([`ConnId`]): it asks for outbound ones with [`Output::Connect`], and the
//! driver names inbound ones with [`Node::handle_accepted`].
//!
//! A routed message is written only while its connection's window has room (4 x
//! [`Config::max_pending_per_peer`] messages, and [`Config::route_window_bytes`] of payload,
//! sent and not yet handed on by the peer; the bytes start at 256 KiB a connection, grow as
//! the peer acknowledges promptly and halve when it acknowledges late); past the queue
//! behind it, [`Node::send`] refuses with [`CommandError::Backpressure`]. A driver whose
//! application can fall behind its deliveries calls [`Node::set_application_lagging`] and
//! keeps feeding network input: acknowledgements must be read for windows to reopen.
//!
//! Two nodes joined through an in-memory "network" (a real driver moves the same bytes
//! over sockets):
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::net::SocketAddr;
//! use bytes::Bytes;
//! use wendy_proto::{Config, ConnId, Identity, Instant, Node, Output};
//!
//! let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
//! let mut nodes = vec![
//!     // A real driver fills `entropy` from the OS (and keeps the identity in a file).
//!     Node::new(Config::new(Identity::from_entropy(&[1; 32]), addr(1)).with_entropy([11; 32]), Instant::ZERO).unwrap(),
//!     Node::new(Config::new(Identity::from_entropy(&[2; 32]), addr(2)).with_entropy([22; 32]), Instant::ZERO).unwrap(),
//! ];
//! let mut now = Instant::ZERO;
//! nodes[1].join(now, &[addr(1)]).unwrap();
//! // (node, conn) -> (other node, its conn)
//! let mut links: BTreeMap<(usize, ConnId), (usize, ConnId)> = BTreeMap::new();
//! let mut delivered = Vec::new();
//! let mut sent = false;
//! for _ in 0..50 {
//!     for i in 0..nodes.len() {
//!         while let Some(out) = nodes[i].poll_output() {
//!             match out {
//!                 Output::Connect { conn, addr } => {
//!                     let j = usize::from(addr.port() - 1);
//!                     let theirs = nodes[j].handle_accepted(now, addr);
//!                     links.insert((i, conn), (j, theirs));
//!                     links.insert((j, theirs), (i, conn));
//!                     nodes[i].handle_connected(now, conn);
//!                 }
//!                 Output::Transmit { conn, data } => {
//!                     if let Some(&(j, theirs)) = links.get(&(i, conn)) {
//!                         nodes[j].handle_data(now, theirs, &data);
//!                     }
//!                 }
//!                 Output::Deliver(d) => delivered.push((i, d.payload)),
//!                 _ => {}
//!             }
//!         }
//!     }
//!     now += std::time::Duration::from_millis(100);
//!     for n in &mut nodes {
//!         if n.poll_timeout().is_some_and(|t| t <= now) {
//!             n.handle_timeout(now);
//!         }
//!     }
//!     if nodes[1].is_ready() && !sent {
//!         // Route towards node a's id from node b: delivered at node a.
//!         let key = nodes[0].id();
//!         nodes[1].send(now, key, 16, Bytes::from_static(b"hi")).unwrap();
//!         sent = true;
//!     }
//! }
//! assert_eq!(delivered, vec![(0, Bytes::from_static(b"hi"))]);
//! ```
//!
//! # Security
//! Every connection is encrypted and authenticated: a Noise handshake
//! (`Noise_XX_25519_ChaChaPoly_BLAKE2s`, or `Noise_XXpsk3_…` when the [`Credentials`] have a
//! pre-shared key) in which each side proves its static key ([`Identity`]) and sends its
//! [`NodeInfo`] encrypted, then every frame sealed with the keys it agreed (rekeyed every
//! [`Config::rekey_after`] messages per direction). By default a node's id is derived from its
//! public key ([`PublicKey::node_id`]) and a peer whose id is not its key's is refused
//! ([`RejectReason::WrongKey`]); [`Credentials`] decide membership over the proven key. A frame
//! that fails authentication closes its connection with [`WireError::Unauthenticated`](wire::WireError::Unauthenticated)
//! (counted in [`Stats::auth_failures`]). [`Config::with_trusted_id`] (ids of the
//! application's choice, trusted as claimed) and [`Config::insecure_plaintext`] (no encryption)
//! are the weaker modes, named so.
//!
//! The crate draws no OS randomness, so the handshakes' ephemeral keys come from a ChaCha20
//! generator seeded from [`Config::entropy`]: **a driver must fill it from the operating system**
//! (wendy-driver does), while a simulation fills it from its seed and replays.
//!
//! # Panic policy
//! A panic is a bug. No input from the network or the application panics: bad bytes are a
//! [`WireError`](wire::WireError), counted in [`Stats`] and reported as an [`Event::Error`], and
//! the connection they came on is closed; misuse of a command is a [`CommandError`].
//!
//! # Feature flags
//! - `ring` (on by default): records are sealed and opened with ring's ChaCha20-Poly1305
//!   (assembly, built with the target's C compiler; 3.8 times as fast as RustCrypto's on a
//!   926-byte record). Without it the crate is pure Rust and uses RustCrypto's
//!   `chacha20poly1305`: the same cipher and the same bytes on the wire, so nodes built either
//!   way talk to each other. Neither library draws randomness for the node: it comes from
//!   [`Config::entropy`] either way.
//!
//! The other two are off by default; a production build carries neither.
//! - `arbitrary`: derives `arbitrary::Arbitrary` for wire messages and ids (for the fuzz
//!   targets).
//! - `testing`: test machinery. `harness` runs N nodes over an in-memory network on a virtual
//!   clock; `harness::script` holds the helpers that drive one node by hand (drain its
//!   outputs, pick out frames, closes and errors, play a fake peer through the handshake).
//!   With `arbitrary` as well, `fuzzing` holds the bodies of the fuzz targets.
//!
//! The crate's own tests, examples and benches turn both on through a dev-dependency on the
//! crate itself, so a plain `cargo test` runs all of them (and `cargo test
//! --no-default-features` runs them with RustCrypto's cipher).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod credentials;
#[cfg(all(feature = "arbitrary", feature = "testing"))]
pub mod fuzzing;
#[cfg(feature = "testing")]
pub mod harness;
mod hint;
pub mod id;
pub mod identity;
pub mod info;
pub mod leaf_set;
pub mod neighbourhood;
mod node;
pub mod output;
pub mod rng;
pub mod routing_table;
mod secure;
pub mod store;
pub mod time;
pub mod wire;

pub use config::{Config, ConfigError, MemberConnections};
pub use credentials::{AllowList, Credentials, SharedSecret};
pub use id::{IdError, KeyRange, NodeId};
pub use identity::{Identity, PublicKey};
pub use info::NodeInfo;
pub use node::{Node, LAYER_PURPOSES};
pub use output::{
    CommandError, ConnId, Delivery, Event, ForwardHook, Forwarding, NodeError, Output, RejectReason, Stats, Target,
    Verdict,
};
pub use time::Instant;
