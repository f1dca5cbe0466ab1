//! Why a command failed.

use std::fmt;
use std::io;

use wendy_proto::{CommandError, NodeError};

/// Why a command failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The node refused the command (or the message of a `send`).
    Command(CommandError),
    /// Some messages of a batch were refused (the others were sent): their indices in the
    /// batch, and why.
    BatchRefused(Vec<(usize, CommandError)>),
    /// The join did not complete.
    JoinFailed(NodeError),
    /// The join did not complete: a node we asked refused our handshake, for this reason
    /// (a wrong shared secret, most often).
    Rejected {
        /// The node that refused us.
        addr: std::net::SocketAddr,
        /// The reason it gave.
        reason: wendy_proto::RejectReason,
    },
    /// The configuration is not valid.
    Config(wendy_proto::config::ConfigError),
    /// The node has stopped.
    Stopped,
    /// A socket operation failed.
    Io(io::Error),
    /// A put, get or delete failed.
    Store(wendy_proto::store::StoreError),
    /// The node runs no storage layer ([`Options::store`](crate::Options::store)).
    NoStore,
    /// The storage layer's database could not be opened.
    Backend(wendy_proto::store::BackendError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Command(e) => write!(f, "refused: {e}"),
            Error::BatchRefused(r) => match r.first() {
                Some((i, e)) => write!(f, "{} messages of the batch refused, the first (#{i}): {e}", r.len()),
                None => f.write_str("no message of the batch refused"),
            },
            Error::JoinFailed(e) => write!(f, "join failed: {e}"),
            Error::Rejected { addr, reason } => write!(f, "rejected by {addr}: {}", crate::hostile::describe(*reason)),
            Error::Config(e) => write!(f, "invalid configuration: {e}"),
            Error::Stopped => f.write_str("the node has stopped"),
            Error::Io(e) => write!(f, "i/o error: {e}"),
            Error::Store(e) => write!(f, "store: {e}"),
            Error::NoStore => f.write_str("the node runs no store"),
            Error::Backend(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Command(e) => Some(e),
            Error::JoinFailed(e) => Some(e),
            Error::Config(e) => Some(e),
            Error::Rejected { .. } => None,
            Error::Io(e) => Some(e),
            Error::Store(e) => Some(e),
            Error::Backend(e) => Some(e),
            Error::Stopped | Error::BatchRefused(_) | Error::NoStore => None,
        }
    }
}

impl From<CommandError> for Error {
    fn from(e: CommandError) -> Self {
        Error::Command(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}
