//! `wendy`: run a Pastry node as a service, send a message through a running node, or run a
//! cluster of nodes in one process to see routing at work.
//!
//! ```text
//! wendy node --listen 127.0.0.1:7000 --secret-file secret --identity id.txt --metrics 127.0.0.1:9000
//! wendy node --listen 127.0.0.2:7000 --bootstrap 127.0.0.1:7000 --secret-file secret --data-dir node2
//! wendy send --via 127.0.0.1:7000 --secret-file secret hello-key "some text"
//! wendy put --via 127.0.0.1:7000 --secret-file secret colour blue
//! wendy get --via 127.0.0.2:7000 --secret-file secret colour
//! wendy cluster --nodes 20 --messages 10000
//! ```

#![forbid(unsafe_code)]

mod cluster;
mod files;
mod kv;
mod logging;
mod metrics;
mod node;
mod send;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The purpose of the messages `wendy send` asks a node to route: the payload is the 16-byte
/// key, then the text. The node routes the text on towards the key with [`TEXT_PURPOSE`].
pub const RELAY_PURPOSE: u8 = 255;
/// The purpose of the text messages routed by `wendy node` on behalf of `wendy send`.
pub const TEXT_PURPOSE: u8 = 16;

/// A Pastry distributed hash table node.
#[derive(Parser, Debug)]
#[command(name = "wendy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a node as a service until SIGINT or SIGTERM, then leave the ring gracefully.
    Node(node::Args),
    /// Route one message towards a key through a running node.
    Send(send::Args),
    /// Store a value under a key through a running node (on the key's replicas).
    Put(kv::PutArgs),
    /// Read the newest value of a key through a running node.
    Get(kv::GetArgs),
    /// Delete a key through a running node.
    Delete(kv::DeleteArgs),
    /// Start many nodes in this process, route messages through them, and check where they
    /// arrive.
    Cluster(cluster::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = rt.block_on(async {
        match cli.command {
            Cmd::Node(args) => node::run(args).await,
            Cmd::Send(args) => send::run(args).await,
            Cmd::Put(args) => kv::put(args).await,
            Cmd::Get(args) => kv::get(args).await,
            Cmd::Delete(args) => kv::delete(args).await,
            Cmd::Cluster(args) => cluster::run(args).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An error for a person: what went wrong, in a sentence.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A key from the command line: 32 hex digits, or any other text, hashed.
pub fn parse_key(s: &str) -> wendy_proto::NodeId {
    s.parse().unwrap_or_else(|_| wendy_proto::NodeId::hash(s.as_bytes()))
}
