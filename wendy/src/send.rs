//! `wendy send`: route one message towards a key through a running node.
//!
//! wendy-proto has no client mode yet (a connection that may send without being a node), so
//! this command is the lightest correct thing available: a node of its own, which never
//! joins, sends the node at `--via` a direct message with purpose [`RELAY_PURPOSE`] holding
//! the key and the text; `wendy node` routes the text on towards the key (purpose
//! [`TEXT_PURPOSE`]), and the node numerically closest to the key logs its delivery. The
//! handshake is the same as between members, so a wrong secret is reported as such.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use wendy_driver::describe_rejection;
use wendy_proto::{Config, Event, NodeError, SharedSecret, Target};
use wendy_tokio::{NodeEvent, NodeHandle, Options};

use crate::{files, parse_key, Error, RELAY_PURPOSE, TEXT_PURPOSE};

/// After the message is written, how long a rejection may still come back.
const REJECTION_GRACE: Duration = Duration::from_millis(300);

/// Route one message towards a key through a running node.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The node to send through, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    via: String,
    /// File holding the ring's shared secret (default: the file named by WENDY_SECRET_FILE).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// The key: 32 hex digits, or any other text (hashed to a key).
    key: String,
    /// The message.
    text: String,
}

/// Resolves `via` and starts the short-lived node of a client command (`wendy send`, `put`,
/// `get`, `delete`): it never joins, listens on every address of `via`'s family, and proves
/// the ring's secret, if one is configured, in the same handshake as members do.
pub(crate) async fn client_node(via: &str, secret_file: Option<&Path>) -> Result<(SocketAddr, NodeHandle), Error> {
    let addr = tokio::net::lookup_host(via)
        .await
        .map_err(|e| format!("cannot resolve {via}: {e}"))?
        .next()
        .ok_or_else(|| format!("{via} resolves to no address"))?;
    let secret = files::secret(secret_file)?;
    let mut config = Config::new(wendy_driver::generate_identity()?, SocketAddr::new(unspecified(addr), 0));
    if let Some(s) = &secret {
        config = config.with_credentials(Arc::new(SharedSecret::new(s)));
    }
    let mut opts = Options::default();
    opts.report_heartbeats = false;
    Ok((addr, NodeHandle::start_with(config, opts).await?))
}

/// The unspecified address of `addr`'s family.
pub(crate) fn unspecified(addr: SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

pub async fn run(args: Args) -> Result<(), Error> {
    let key = parse_key(&args.key);
    let (via, mut node) = client_node(&args.via, args.secret_file.as_deref()).await?;
    let mut payload = BytesMut::with_capacity(16 + args.text.len());
    payload.put_slice(&key.to_bytes());
    payload.put_slice(args.text.as_bytes());
    node.send_to(Target::Addr(via), RELAY_PURPOSE, payload.freeze())
        .await
        .map_err(|e| format!("cannot send through {via}: {e}"))?;
    let outcome = wait_written(&mut node, via, Duration::from_secs(args.timeout)).await;
    node.stop().await;
    outcome?;
    println!("sent towards {key} through {via} (purpose {TEXT_PURPOSE})");
    Ok(())
}

/// Waits until the message has been written to `via`, and a little longer for a rejection.
async fn wait_written(node: &mut NodeHandle, via: SocketAddr, limit: Duration) -> Result<(), Error> {
    let end = Instant::now() + limit;
    let mut written_at: Option<Instant> = None;
    loop {
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(20), node.next_event()).await {
            match ev {
                NodeEvent::Event(Event::RejectedByPeer { addr, reason } | Event::PeerRejected { addr, reason, .. }) => {
                    return Err(format!("rejected by {addr}: {}", describe_rejection(reason)).into());
                }
                NodeEvent::Event(Event::Error(NodeError::ConnectFailed { addr })) if addr == via => {
                    return Err(format!("could not connect to {via}").into());
                }
                _ => {}
            }
        }
        match written_at {
            Some(t) if t.elapsed() >= REJECTION_GRACE => return Ok(()),
            Some(_) => {}
            None => {
                let m = node.metrics().await?;
                if m.pending_messages == 0 && m.queued_bytes == 0 && m.stats.frames_out > 0 {
                    written_at = Some(Instant::now());
                }
            }
        }
        if Instant::now() > end {
            return Err(format!("{via} did not take the message within {} s", limit.as_secs()).into());
        }
    }
}
