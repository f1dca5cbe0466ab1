//! The runtime-independent half of the wendy drivers (`wendy-tokio`, `wendy-smol`).
//!
//! A driver runs a [`wendy_proto`] node over some async runtime's sockets, tasks and timers.
//! Everything that does not depend on which runtime lives here, so that both drivers share it:
//!
//! - the application-facing types: [`Options`], [`NodeEvent`], [`Forwarded`], [`Error`], and
//!   the batched, bounded event stream [`Events`] (built on `std` only: a mutex and wakers);
//! - the [`Command`]s a handle sends to its node task;
//! - the node task's logic, [`Core`]: it feeds the node its inputs, batches the frames the node
//!   transmits per connection, turns the node's outputs into events for the application and
//!   answers commands. What needs the runtime (dialing, starting a socket's reader and writer,
//!   writing) it asks of a [`Runtime`] and its [`Link`]s.
//!
//! This crate depends on no async runtime. The drivers re-export its public types, so an
//! application never names it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "cluster")]
pub mod cluster;
mod command;
mod core;
mod error;
mod event;
mod events;
mod options;
mod writer;

use std::net::SocketAddr;

pub use wendy_proto;
pub use wendy_proto::{Config, NodeId};

pub use crate::command::{Command, Inspector, Responder};
pub use crate::core::{Core, Link, Net, Runtime};
pub use crate::error::Error;
pub use crate::event::{Forwarded, NodeEvent};
pub use crate::events::{channel, EventSender, Events};
pub use crate::options::Options;
pub use crate::writer::coalesce;

/// The largest payload an application may send with `config` (room is left for the header).
pub fn max_payload(config: &Config) -> usize {
    config.max_frame_size.saturating_sub(64)
}

/// Checks what the application asks to send before it reaches the node task: purposes below
/// 16 are wendy's own, and a payload larger than `max` would not fit a frame.
pub fn check_send(purpose: u8, len: usize, max: usize) -> Result<(), Error> {
    if purpose < 16 {
        return Err(Error::Command(wendy_proto::CommandError::ReservedPurpose(purpose)));
    }
    if len > max {
        return Err(Error::Command(wendy_proto::CommandError::PayloadTooLarge { len, max }));
    }
    Ok(())
}

/// Puts the bound port into the node's addresses when port 0 was asked for: the local address
/// becomes `bound`, and so does the global one if it was the same (else only its port 0 is
/// replaced).
pub fn fix_port(config: &mut Config, bound: SocketAddr) {
    let asked = config.info.local;
    if config.info.global == asked {
        config.info.global = bound;
    } else if config.info.global.port() == 0 {
        config.info.global.set_port(bound.port());
    }
    config.info.local = bound;
}
