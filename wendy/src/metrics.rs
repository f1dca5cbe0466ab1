//! Prometheus metrics at `http://ADDR/metrics`.
//!
//! The values come from [`NodeHandle::metrics`](wendy_tokio::NodeHandle::metrics), the same
//! snapshot the library gives applications; each scrape takes a fresh one and encodes it with
//! `prometheus-client` (the Prometheus project's own Rust client: text format done right, no
//! global registry). The HTTP side is a minimal responder: one `GET` per connection, bounded in
//! size and time.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wendy_driver::{Metrics, Sender};
use wendy_tokio::NodeHandle;

/// Largest request read.
const MAX_REQUEST: usize = 8 << 10;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The metrics in Prometheus' text format.
pub fn render(m: &Metrics) -> String {
    let mut reg = Registry::default();
    let gauge = |reg: &mut Registry, name: &str, help: &str, v: u64| {
        let g: Gauge<u64, AtomicU64> = Gauge::default();
        g.set(v);
        reg.register(name, help, g);
    };
    let counter = |reg: &mut Registry, name: &str, help: &str, v: u64| {
        let c: Counter = Counter::default();
        c.inc_by(v);
        reg.register(name, help, c);
    };
    let n = |v: usize| v as u64;
    gauge(&mut reg, "wendy_ready", "1 once the node has joined and routes", u64::from(m.ready));
    gauge(&mut reg, "wendy_leaf_set_size", "Members of the leaf set", n(m.leaf_set_size));
    gauge(&mut reg, "wendy_routing_table_size", "Entries of the routing table", n(m.routing_table_size));
    gauge(&mut reg, "wendy_connections", "Connections open or being set up", n(m.connections));
    gauge(&mut reg, "wendy_pending_messages", "Messages waiting for a connection", n(m.pending_messages));
    gauge(&mut reg, "wendy_queued_bytes", "Bytes waiting to be written to sockets", n(m.queued_bytes));
    gauge(&mut reg, "wendy_tasks", "Tasks of the node still running", n(m.tasks));
    let s = &m.stats;
    let store = m.store.unwrap_or_default();
    let delivered = s.delivered.saturating_sub(store.messages_in);
    counter(&mut reg, "wendy_messages_delivered", "Application messages delivered here", delivered);
    counter(&mut reg, "wendy_store_messages_in", "Storage-layer messages received", store.messages_in);
    counter(&mut reg, "wendy_store_bytes_out", "Storage-layer bytes sent", store.bytes_out);
    counter(
        &mut reg,
        "wendy_store_maintenance_bytes_out",
        "Storage-layer maintenance bytes sent (digests, key lists, transfers, repairs)",
        store.maintenance_bytes_out,
    );
    counter(&mut reg, "wendy_messages_forwarded", "Application messages forwarded", s.forwarded);
    counter(&mut reg, "wendy_messages_dropped", "Messages dropped (full queues, hop limit, no route)", s.dropped);
    counter(&mut reg, "wendy_peers_rejected", "Handshakes failed (bad credentials, wrong id)", s.rejected_peers);
    counter(
        &mut reg,
        "wendy_rejected_by_peers",
        "Our handshakes that peers refused, saying why (a wrong secret on one side)",
        s.rejected_by_peers,
    );
    counter(&mut reg, "wendy_decode_errors", "Connections closed for undecodable bytes", s.decode_errors);
    counter(&mut reg, "wendy_protocol_errors", "Connections closed for protocol violations", s.protocol_errors);
    counter(&mut reg, "wendy_connect_failures", "Connections that could not be set up", s.connect_failures);
    counter(&mut reg, "wendy_frames_in", "Frames received and decoded", s.frames_in);
    counter(&mut reg, "wendy_frames_out", "Frames transmitted", s.frames_out);
    counter(&mut reg, "wendy_bytes_out", "Bytes transmitted", s.bytes_out);
    counter(&mut reg, "wendy_events_dropped", "Events the application did not read in time", m.events_dropped);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// Serves the node's metrics on `listener` until the node stops.
pub async fn serve(listener: TcpListener, node: MetricsSource) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &node).await {
                tracing::debug!(error = %e, "metrics request failed");
            }
        });
    }
}

/// Where the metrics server takes its snapshots.
#[derive(Clone, Debug)]
pub struct MetricsSource(Sender);

impl MetricsSource {
    /// Snapshots of `node`.
    pub fn new(node: &NodeHandle) -> Self {
        MetricsSource(node.sender())
    }
}

async fn answer(mut stream: TcpStream, node: &MetricsSource) -> std::io::Result<()> {
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < MAX_REQUEST {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read).await.map_err(|_| std::io::ErrorKind::TimedOut)??;
    let line = req.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let (status, ctype, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => match node.0.metrics().await {
            Ok(m) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(&m)),
            Err(e) => ("503 Service Unavailable", "text/plain", format!("{e}\n")),
        },
        (Some(b"GET"), _) => ("404 Not Found", "text/plain", "try /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Binds the metrics address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::Error> {
    TcpListener::bind(addr).await.map_err(|e| format!("cannot listen for metrics on {addr}: {e}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_metric_is_rendered() {
        let mut m = Metrics::default();
        m.ready = true;
        m.leaf_set_size = 4;
        let text = render(&m);
        for name in [
            "wendy_ready 1",
            "wendy_leaf_set_size 4",
            "wendy_routing_table_size 0",
            "wendy_store_messages_in_total 0",
            "wendy_store_maintenance_bytes_out_total 0",
            "wendy_connections 0",
            "wendy_messages_delivered_total 0",
            "wendy_messages_forwarded_total 0",
            "wendy_peers_rejected_total 0",
            "wendy_decode_errors_total 0",
            "wendy_queued_bytes 0",
        ] {
            assert!(text.lines().any(|l| l == name), "{name} missing from\n{text}");
        }
    }
}
