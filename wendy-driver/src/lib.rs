//! The wendy drivers, written once over a small [`Runtime`] trait.
//!
//! A driver runs a [`wendy_proto`] node over some async runtime's sockets, tasks and timers.
//! Everything is here, once: the application's [`NodeHandle`] and [`Sender`], the batched,
//! bounded event stream [`Events`] (a [`Stream`](futures_core::Stream)), the node task that
//! feeds the node its inputs, reads the sockets and carries out its outputs, and each
//! connection's writer. What needs a runtime, spawning, timers and TCP, is asked of a [`Runtime`]
//! (quinn's `Runtime` is the model); `wendy-tokio` and `wendy-smol` implement it and name
//! `NodeHandle<TheirRuntime>` for their users.
//!
//! - one task owns the [`Node`](wendy_proto::Node) (no locks on it); it waits on application
//!   commands, readable sockets (it reads them itself: each socket's waker marks its
//!   connection readable and wakes the node task, so bytes cross no channel and no other
//!   task), accepted sockets, dial results and its timer, and handles everything ready in one
//!   wake-up before writing;
//! - one persistent TCP connection per peer, reused for every message;
//! - frames produced while handling a batch of inputs are written together, many per syscall:
//!   straight from the node task when the socket takes them, else by the connection's writer
//!   task;
//! - queues are bounded: the application's `send` waits while the node has more than
//!   [`Options::max_queued_bytes`] unwritten, and a peer that lets more than
//!   [`Options::max_conn_queue_bytes`] pile up is disconnected;
//! - every task the node spawns is let go of once finished, and ended when the node stops.
//!
//! This crate depends on no async runtime.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "cluster")]
pub mod cluster;
mod command;
mod core;
mod error;
mod event;
mod events;
mod handle;
mod hostile;
mod metrics;
mod node_io;
mod node_task;
mod options;
mod redb_backend;
pub mod runtime;
mod task;
mod writer;

use std::net::SocketAddr;

pub use wendy_proto;
pub use wendy_proto::{Config, Identity, NodeId};

pub use crate::error::Error;
pub use crate::event::{Forwarded, NodeEvent};
pub use crate::events::{EventSender, Events};
pub use crate::handle::{NodeHandle, Sender};
pub use crate::hostile::{describe as describe_rejection, HOSTILE_LINES_PER_WINDOW, HOSTILE_WINDOW};
pub use crate::metrics::Metrics;
pub use crate::options::{Options, StoreOptions};
pub use crate::redb_backend::RedbBackend;
pub use crate::runtime::Runtime;
pub use crate::task::Task;
pub use crate::writer::coalesce;

/// The largest payload an application may send with `config` (room is left for the header).
pub fn max_payload(config: &Config) -> usize {
    config.max_payload()
}

/// 32 bytes from the operating system's random source.
pub fn os_entropy() -> Result<[u8; 32], Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| Error::Io(std::io::Error::other(format!("no OS entropy: {e}"))))?;
    Ok(b)
}

/// A new static key pair from the operating system's random source: a node's identity, whose
/// public key its id is derived from ([`Config::new`]). Persist [`Identity::secret`] to keep
/// the same id across restarts.
pub fn generate_identity() -> Result<Identity, Error> {
    Ok(Identity::from_secret(os_entropy()?))
}

/// Puts the bound port into the node's addresses when port 0 was asked for: the local address
/// becomes `bound`, and so does the global one if it was the same (else only its port 0 is
/// replaced).
fn fix_port(config: &mut Config, bound: SocketAddr) {
    let asked = config.info.local;
    if config.info.global == asked {
        config.info.global = bound;
    } else if config.info.global.port() == 0 {
        config.info.global.set_port(bound.port());
    }
    config.info.local = bound;
}
