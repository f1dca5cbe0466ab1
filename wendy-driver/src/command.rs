//! What a handle asks of its node task.

use std::net::SocketAddr;

use bytes::Bytes;
use wendy_proto::{CommandError, ForwardHook, Node, NodeId, Target};

use crate::{Error, Metrics};

/// Answers a command, once.
pub(crate) struct Reply<T>(async_channel::Sender<T>);

impl<T> Reply<T> {
    /// Answers; nobody may be waiting any more.
    pub(crate) fn send(self, value: T) {
        let _ = self.0.try_send(value);
    }
}

/// A reply and where to wait for it.
pub(crate) fn reply<T>() -> (Reply<T>, async_channel::Receiver<T>) {
    let (tx, rx) = async_channel::bounded(1);
    (Reply(tx), rx)
}

/// Runs on the node inside its task (see [`NodeHandle::inspect`](crate::NodeHandle::inspect)).
pub(crate) type Inspector = Box<dyn FnOnce(&Node) + Send>;

/// A command from the application's handles to the node task.
pub(crate) enum Command {
    /// Join the ring through these nodes; answered when the join completed or failed.
    Join(Vec<SocketAddr>, Reply<Result<(), Error>>),
    /// Route a message towards a key; answered with the node's verdict.
    Send { key: NodeId, purpose: u8, payload: Bytes, reply: Reply<Result<(), CommandError>> },
    /// Send a message straight to a node; answered with the node's verdict.
    SendTo { target: Target, purpose: u8, payload: Bytes, reply: Reply<Result<(), CommandError>> },
    /// Route many `(key, purpose, payload)` messages, in order; answered with the refused ones.
    SendBatch(Vec<(NodeId, u8, Bytes)>, Reply<Vec<(usize, CommandError)>>),
    /// Install the forward hook.
    Hook(Box<dyn ForwardHook>),
    /// Run a function on the node.
    Inspect(Inspector),
    /// Take a snapshot of the node's metrics.
    Metrics(Reply<Metrics>),
    /// Leave the ring, then stop once drained; answered once stopped.
    Leave(Reply<()>),
    /// Stop without announcing it; answered once stopped.
    Stop(Reply<()>),
}

/// Checks what the application asks to send before it reaches the node task, by wendy-proto's
/// rules ([`wendy_proto::config::check_app_message`]).
pub(crate) fn check_send(purpose: u8, len: usize, max: usize) -> Result<(), Error> {
    wendy_proto::config::check_app_message(purpose, len, max).map_err(Error::Command)
}
