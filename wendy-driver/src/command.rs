//! What a handle asks of its node task.

use std::net::SocketAddr;

use bytes::Bytes;
use wendy_proto::{ForwardHook, Node, NodeId, Target};

use crate::Error;

/// Answers a command, once: the driver wraps its runtime's one-shot channel in it.
pub type Responder<T> = Box<dyn FnOnce(T) + Send>;

/// Runs on the node inside its task (see `NodeHandle::inspect` in the drivers).
pub type Inspector = Box<dyn FnOnce(&Node) + Send>;

/// A command from the application's handles to the node task.
#[non_exhaustive]
pub enum Command {
    /// Join the ring of the node at this address; answered when the join completed or failed.
    Join(SocketAddr, Responder<Result<(), Error>>),
    /// Route a message towards a key.
    Send {
        /// The key.
        key: NodeId,
        /// The message's purpose (16..=255).
        purpose: u8,
        /// The payload.
        payload: Bytes,
    },
    /// Send a message straight to a node.
    SendTo {
        /// The node, by id or address.
        target: Target,
        /// The message's purpose (16..=255).
        purpose: u8,
        /// The payload.
        payload: Bytes,
    },
    /// Route many `(key, purpose, payload)` messages, in order.
    SendBatch(Vec<(NodeId, u8, Bytes)>),
    /// Install the forward hook.
    Hook(Box<dyn ForwardHook>),
    /// Run a function on the node.
    Inspect(Inspector),
    /// Leave the ring, then stop; answered once stopped.
    Leave(Responder<()>),
    /// Stop without announcing it; answered once stopped.
    Stop(Responder<()>),
}

impl Command {
    /// A [`Command::Send`], once [`check_send`](crate::check_send) accepts it.
    pub fn send(key: NodeId, purpose: u8, payload: Bytes, max_payload: usize) -> Result<Command, Error> {
        crate::check_send(purpose, payload.len(), max_payload)?;
        Ok(Command::Send { key, purpose, payload })
    }

    /// A [`Command::SendTo`], once [`check_send`](crate::check_send) accepts it.
    pub fn send_to(target: Target, purpose: u8, payload: Bytes, max_payload: usize) -> Result<Command, Error> {
        crate::check_send(purpose, payload.len(), max_payload)?;
        Ok(Command::SendTo { target, purpose, payload })
    }

    /// A [`Command::SendBatch`] if every message of `batch` is accepted (else none is sent);
    /// `None` for an empty batch.
    pub fn send_batch(batch: Vec<(NodeId, u8, Bytes)>, max_payload: usize) -> Result<Option<Command>, Error> {
        for (_, purpose, payload) in &batch {
            crate::check_send(*purpose, payload.len(), max_payload)?;
        }
        Ok((!batch.is_empty()).then_some(Command::SendBatch(batch)))
    }
}
