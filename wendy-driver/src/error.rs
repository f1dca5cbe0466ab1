//! Why a command failed.

use std::fmt;
use std::io;

use wendy_proto::{CommandError, NodeError};

/// Why a command failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The node refused the command.
    Command(CommandError),
    /// The join did not complete.
    JoinFailed(NodeError),
    /// The node has stopped.
    Stopped,
    /// A socket operation failed.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Command(e) => write!(f, "command refused: {e}"),
            Error::JoinFailed(e) => write!(f, "join failed: {e}"),
            Error::Stopped => f.write_str("the node has stopped"),
            Error::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Command(e) => Some(e),
            Error::JoinFailed(e) => Some(e),
            Error::Io(e) => Some(e),
            Error::Stopped => None,
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
