//! `wendy node`: one node, run as a service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::signal::unix::{signal, SignalKind};
use wendy_driver::{describe_rejection, StoreOptions};
use wendy_proto::store::StoreConfig;
use wendy_proto::{Config, Event, MemberConnections, NodeError, NodeId, SharedSecret};
use wendy_tokio::{NodeEvent, NodeHandle, Options, Sender};

use crate::kv::{self, STORE_REQUEST_PURPOSE};
use crate::{files, logging, metrics, Error, RELAY_PURPOSE, TEXT_PURPOSE};

/// Store requests of `wendy put`/`get`/`delete` served at once; more are dropped.
const MAX_STORE_REQUESTS: usize = 256;

/// How often the peers a node knows are saved to its data directory.
const SAVE_PEERS_EVERY: Duration = Duration::from_secs(10);
/// Longest graceful leave before the node stops anyway.
const LEAVE_LIMIT: Duration = Duration::from_secs(10);

/// Run a node as a service until SIGINT or SIGTERM, then leave the ring gracefully.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on, e.g. 0.0.0.0:7000 or 10.0.0.1:7000.
    #[arg(long)]
    listen: SocketAddr,
    /// Address the other nodes reach this one at (default: the listen address, which must
    /// then be a routable one, not 0.0.0.0).
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// Region name: nodes of one region talk over their local addresses.
    #[arg(long, requires = "local_advertise")]
    region: Option<String>,
    /// Address the nodes of this node's region reach it at.
    #[arg(long, requires = "region")]
    local_advertise: Option<SocketAddr>,
    /// A node of the ring to join, HOST:PORT (repeatable; tried in turn). Without any, and
    /// without peers remembered in --data-dir, the node starts a ring of its own.
    #[arg(long = "bootstrap", value_name = "HOST:PORT")]
    bootstraps: Vec<String>,
    /// File holding the shared secret every member proves (default: the file named by
    /// WENDY_SECRET_FILE; neither: no secret, every node is accepted).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// File holding this node's secret key (its id derives from it); created on first start
    /// (default: DATA_DIR/identity).
    #[arg(long)]
    identity: Option<PathBuf>,
    /// Directory for the node's identity, the peers it knew (to rejoin after a restart) and
    /// its store's replicas (store.redb; without it, they are kept in memory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Replicas per key of the store (`wendy put`/`get`/`delete`); every node of a ring
    /// should use the same.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Which idle connections to the members of this node's tables stay open: `kept` (every
    /// member's: the fewest control messages), `leaf-set` (the leaf set's only) or `closed`
    /// (none: the fewest open files, about twice the control traffic). See
    /// `Config::member_connections`.
    #[arg(long, default_value = "kept")]
    member_connections: MemberConnections,
    /// Log format.
    #[arg(long, value_enum, default_value_t)]
    log_format: logging::Format,
}

pub async fn run(args: Args) -> Result<(), Error> {
    logging::init(args.log_format);
    let secret = files::secret(args.secret_file.as_deref())?;
    let identity = args.identity.clone().or_else(|| args.data_dir.as_ref().map(|d| d.join("identity")));
    if let Some(dir) = &args.data_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    }
    let key = match &identity {
        Some(path) => {
            let (key, created) = files::identity(path)?;
            if created {
                tracing::info!(id = %key.node_id(), file = %path.display(), "new identity key created");
            }
            key
        }
        None => {
            tracing::warn!("no --identity or --data-dir: this node gets a new key, and so a new id, at every start");
            wendy_driver::generate_identity()?
        }
    };
    let advertise = args.advertise.unwrap_or(args.listen);
    if advertise.ip().is_unspecified() {
        return Err(format!("{advertise} cannot be reached by other nodes: give --advertise").into());
    }
    // The id is derived from the key; every connection is encrypted (Noise), and the driver
    // fills the entropy for the handshakes from the OS.
    let mut config = Config::new(key, advertise);
    if let (Some(region), Some(local)) = (&args.region, args.local_advertise) {
        config = config.with_region(region.clone(), local, advertise);
    }
    if let Some(secret) = &secret {
        config = config.with_credentials(Arc::new(SharedSecret::new(secret)));
    }
    config.member_connections = args.member_connections;
    let region = config.info.region.clone();
    let mut bootstraps = resolve(&args.bootstraps).await?;
    let remembered = args.data_dir.as_deref().map(files::load_peers).unwrap_or_default();
    bootstraps.extend(remembered.iter().filter(|a| **a != config.info.local && **a != config.info.global));

    let mut opts = Options::default();
    opts.listen = Some(args.listen);
    opts.report_heartbeats = false;
    opts.report_forwarded = false;
    let store = StoreConfig::default().with_replicas(args.replicas.max(1));
    opts.store = Some(match &args.data_dir {
        Some(dir) => StoreOptions::on_disk(store, dir),
        None => StoreOptions::in_memory(store),
    });
    let mut node = NodeHandle::start_with(config, opts)
        .await
        .map_err(|e| format!("cannot start a node listening on {}: {e}", args.listen))?;
    let info = node.info().clone();
    tracing::info!(
        id = %info.id, listen = %args.listen, global = %info.global, local = %info.local, region = %info.region,
        "node started"
    );
    if let Some(addr) = args.metrics {
        let listener = metrics::bind(addr).await?;
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
        tokio::spawn(metrics::serve(listener, metrics::MetricsSource::new(&node)));
    }

    let events = node.take_events().expect("events not taken yet");
    let (rejected_tx, mut rejected) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(handle_events(events, node.sender(), rejected_tx));

    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("cannot catch SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("cannot catch SIGINT: {e}"))?;
    let stop = async {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    };
    tokio::pin!(stop);

    if bootstraps.is_empty() {
        tracing::info!("no bootstrap: this node starts a ring of its own");
    } else {
        tokio::select! {
            r = join(&node, &bootstraps, &mut rejected) => r?,
            sig = &mut stop => {
                tracing::info!(signal = sig, "stopping before the join completed");
                node.stop().await;
                return Ok(());
            }
        }
    }

    let mut save = tokio::time::interval(SAVE_PEERS_EVERY);
    let sig = loop {
        tokio::select! {
            sig = &mut stop => break sig,
            _ = save.tick() => {
                if let Some(dir) = &args.data_dir {
                    save_peers(&node, dir, &region).await;
                }
            }
        }
    };
    tracing::info!(signal = sig, "leaving the ring");
    if let Some(dir) = &args.data_dir {
        save_peers(&node, dir, &region).await;
    }
    if tokio::time::timeout(LEAVE_LIMIT, node.leave()).await.is_err() {
        tracing::warn!("the graceful leave took too long: stopping");
    }
    tracing::info!("left the ring; stopped");
    Ok(())
}

/// Resolves every HOST:PORT.
async fn resolve(names: &[String]) -> Result<Vec<SocketAddr>, Error> {
    let mut out = Vec::new();
    for name in names {
        let addrs = tokio::net::lookup_host(name.as_str())
            .await
            .map_err(|e| format!("cannot resolve the bootstrap {name}: {e}"))?;
        let before = out.len();
        out.extend(addrs.filter(|a| !out.contains(a)).collect::<Vec<_>>());
        if out.len() == before {
            tracing::warn!(bootstrap = %name, "resolves to no new address");
        }
    }
    Ok(out)
}

/// Joins through the bootstraps (the node tries each in turn, then the nodes it learns of);
/// fails at once, saying why, when every bootstrap has refused our handshake.
async fn join(
    node: &NodeHandle,
    bootstraps: &[SocketAddr],
    rejected: &mut tokio::sync::mpsc::UnboundedReceiver<(SocketAddr, String)>,
) -> Result<(), Error> {
    tracing::info!(bootstraps = ?bootstraps, "joining");
    let mut refusals: Vec<(SocketAddr, String)> = Vec::new();
    let all_refused = async {
        while let Some((addr, why)) = rejected.recv().await {
            if bootstraps.contains(&addr) && !refusals.iter().any(|(a, _)| *a == addr) {
                refusals.push((addr, why));
            }
            if refusals.len() == bootstraps.len() {
                break;
            }
        }
        refusals.iter().map(|(a, why)| format!("rejected by {a}: {why}")).collect::<Vec<_>>().join("; ")
    };
    tokio::select! {
        r = node.join(bootstraps) => {
            r.map_err(|e| format!("could not join the ring: {e}"))?;
            tracing::info!("joined");
            Ok(())
        }
        why = all_refused => Err(format!("could not join the ring: {why}").into()),
    }
}

/// Logs deliveries, relays `wendy send`'s messages on towards their key, serves the store
/// requests of `wendy put`/`get`/`delete`, and passes the
/// refusals of our handshakes on to the join.
async fn handle_events(
    mut events: wendy_driver::Events,
    sender: Sender,
    rejected: tokio::sync::mpsc::UnboundedSender<(SocketAddr, String)>,
) {
    let serving = Arc::new(tokio::sync::Semaphore::new(MAX_STORE_REQUESTS));
    while let Some(ev) = events.recv().await {
        match ev {
            NodeEvent::Deliver(d) if d.direct && d.purpose == STORE_REQUEST_PURPOSE => {
                let Some(req) = kv::decode_request(&d.payload) else {
                    tracing::warn!(origin = %d.origin, "malformed store request: dropped");
                    continue;
                };
                let Ok(permit) = serving.clone().try_acquire_owned() else {
                    tracing::warn!(origin = %d.origin, "too many store requests at once: dropped");
                    continue;
                };
                tracing::info!(origin = %d.origin, op = ?req.op, "serving a store request");
                let sender = sender.clone();
                tokio::spawn(async move {
                    kv::serve(sender, req).await;
                    drop(permit);
                });
            }
            NodeEvent::Deliver(d) if d.direct && d.purpose == RELAY_PURPOSE => {
                let Some((key, text)) = relayed(&d.payload) else {
                    tracing::warn!(origin = %d.origin, "relay request without a key: dropped");
                    continue;
                };
                tracing::info!(%key, origin = %d.origin, bytes = text.len(), "routing a message for wendy send");
                if let Err(e) = sender.send(key, TEXT_PURPOSE, text).await {
                    tracing::warn!(%key, "could not route a message for wendy send: {e}");
                }
            }
            NodeEvent::Deliver(d) => tracing::info!(
                key = %d.key, purpose = d.purpose, origin = %d.origin, hops = d.hops, bytes = d.payload.len(),
                direct = d.direct, text = %String::from_utf8_lossy(&d.payload[..d.payload.len().min(64)]),
                "delivered"
            ),
            // Either side may be the first to find the secrets differ: the dialler checks
            // the acceptor's proof first (PeerRejected here), or the peer refuses ours and
            // says so (RejectedByPeer).
            NodeEvent::Event(Event::RejectedByPeer { addr, reason } | Event::PeerRejected { addr, reason, .. }) => {
                let _ = rejected.send((addr, describe_rejection(reason).to_owned()));
            }
            NodeEvent::Event(Event::NodeJoined(i)) => tracing::info!(peer = %i.id, addr = %i.global, "node joined"),
            NodeEvent::Event(Event::NodeLeft(i)) => tracing::info!(peer = %i.id, addr = %i.global, "node left"),
            NodeEvent::Event(Event::Error(e @ (NodeError::Undeliverable { .. } | NodeError::HopLimit { .. }))) => {
                tracing::warn!("{e}");
            }
            _ => {}
        }
    }
}

/// The key and text of a relay request.
pub fn relayed(payload: &Bytes) -> Option<(NodeId, Bytes)> {
    let key = NodeId::from_bytes(payload.get(..16)?).ok()?;
    Some((key, payload.slice(16..)))
}

/// Saves the addresses of the leaf set's members, as this node reaches them.
async fn save_peers(node: &NodeHandle, dir: &std::path::Path, region: &str) {
    let region = region.to_owned();
    let peers = node
        .inspect(move |n| {
            n.leaf_set().members().into_iter().filter_map(|id| n.peer(id).map(|i| i.addr_from(&region))).collect()
        })
        .await;
    let Ok(peers) = peers else { return };
    let peers: Vec<SocketAddr> = peers;
    if peers.is_empty() {
        return;
    }
    if let Err(e) = files::save_peers(dir, &peers) {
        tracing::warn!(dir = %dir.display(), "cannot save the peers: {e}");
    }
}
