//! One wendy node from the command line: run it in a few terminals to form a cluster.
//!
//! ```text
//! # terminal 1
//! cargo run --release -p wendy-tokio --example node -- --listen 127.0.0.1:7000 --secret s3cret
//! # terminal 2, 3, ...
//! cargo run --release -p wendy-tokio --example node -- --listen 127.0.0.1:7001 --bootstrap 127.0.0.1:7000 --secret s3cret
//! ```
//! Then type at any node's prompt:
//! - `send <key> <text>`: route `text` towards `key` (32 hex digits, or any word, hashed);
//! - `to <addr> <text>`: send `text` straight to the node at `addr`;
//! - `status`: this node's leaf set and counters;
//! - `leave`: leave the ring gracefully and exit (end of input does the same).

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use tokio::sync::mpsc;
use wendy_proto::SharedSecret;
use wendy_tokio::{Config, Event, NodeEvent, NodeHandle, NodeId, Target};

/// Run one wendy node (Tokio driver).
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (port 0: the OS picks). Other nodes of the region dial it.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address other regions reach this node at (default: the listen address).
    #[arg(long)]
    global: Option<SocketAddr>,
    /// Region name (nodes of one region talk over their local addresses).
    #[arg(long, default_value = "")]
    region: String,
    /// A node of the ring to join; without it, this node starts a new ring.
    #[arg(long)]
    bootstrap: Option<SocketAddr>,
    /// Shared secret every member proves in each handshake (none: accept everyone).
    #[arg(long)]
    secret: Option<String>,
    /// Node id: 32 hex digits, or any text (hashed); default: hash of the listen address.
    #[arg(long)]
    id: Option<String>,
}

fn parse_id(s: &str) -> NodeId {
    s.parse().unwrap_or_else(|_| NodeId::hash(s.as_bytes()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "wendy_tokio=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let id = args.id.as_deref().map(parse_id).unwrap_or_else(|| {
        // Port 0 gives no stable name: mix in the process id.
        NodeId::hash(format!("{}/{}", args.listen, std::process::id()).as_bytes())
    });
    let global = args.global.unwrap_or(args.listen);
    let mut config = Config::new(id, args.listen).with_region(args.region.clone(), args.listen, global);
    if let Some(s) = &args.secret {
        config = config.with_credentials(Arc::new(SharedSecret::new(s)));
    }
    let mut node = NodeHandle::start(config).await?;
    println!("node {} listening on {} (region {:?})", node.id(), node.local_addr(), args.region);
    let mut events = node.take_events().expect("events not taken");
    if let Some(b) = args.bootstrap {
        println!("joining via {b} ...");
        node.join(b).await?;
        println!("joined");
    }
    println!("commands: send <key> <text> | to <addr> <text> | status | leave");

    // stdin is read on a thread: the runtime stays free for the node.
    let (line_tx, mut lines) = mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if line_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break };
                let mut parts = line.trim().splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("send"), Some(key), text) => {
                        let key = parse_id(key);
                        let text = text.unwrap_or("").as_bytes().to_vec();
                        match node.send(key, 16, text).await {
                            Ok(()) => println!("routing towards {key}"),
                            Err(e) => println!("error: {e}"),
                        }
                    }
                    (Some("to"), Some(addr), text) => match addr.parse::<SocketAddr>() {
                        Ok(addr) => {
                            let text = text.unwrap_or("").as_bytes().to_vec();
                            if let Err(e) = node.send_to(Target::Addr(addr), 16, text).await {
                                println!("error: {e}");
                            }
                        }
                        Err(e) => println!("bad address: {e}"),
                    },
                    (Some("status"), _, _) => {
                        let (leaves, table, stats) = node
                            .inspect(|n| (n.leaf_set().members(), n.routing_table().len(), n.stats()))
                            .await?;
                        println!("leaf set ({}):", leaves.len());
                        for l in leaves {
                            println!("  {l}");
                        }
                        println!("routing table: {table} entries");
                        println!("delivered {} forwarded {} frames in {} out {}",
                            stats.delivered, stats.forwarded, stats.frames_in, stats.frames_out);
                    }
                    (Some("leave"), _, _) => break,
                    (Some(""), _, _) | (None, _, _) => {}
                    _ => println!("commands: send <key> <text> | to <addr> <text> | status | leave"),
                }
            }
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                match ev {
                    NodeEvent::Deliver(d) => println!(
                        "<- from {} ({} hops{}): {}",
                        d.origin,
                        d.hops,
                        if d.direct { ", direct" } else { "" },
                        String::from_utf8_lossy(&d.payload)
                    ),
                    NodeEvent::Forwarded(f) => println!("   forwarded a message towards {} to {}", f.key, f.next),
                    NodeEvent::Event(Event::NodeJoined(i)) => println!("+ node {} at {}", i.id, i.local),
                    NodeEvent::Event(Event::NodeLeft(i)) => println!("- node {} at {}", i.id, i.local),
                    NodeEvent::Event(Event::PeerRejected { addr, reason, .. }) => {
                        println!("! rejected peer at {addr}: {reason:?}")
                    }
                    NodeEvent::Event(Event::Error(e)) => println!("! {e}"),
                    _ => {}
                }
            }
        }
    }
    println!("leaving");
    node.leave().await;
    Ok(())
}
