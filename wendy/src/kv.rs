//! `wendy put`, `wendy get`, `wendy delete`: store operations through a running node.
//!
//! Like `wendy send`, the command runs a short-lived node of its own that never joins. It
//! sends the node at `--via` a direct message with purpose [`STORE_REQUEST_PURPOSE`]: the
//! operation, the key, the value and the address the command listens at. `wendy node` runs
//! the operation with its own storage layer (`wendy_proto::store`, through the driver's
//! `Sender::put`/`get`/`delete`) and sends the outcome back to that address with purpose
//! [`STORE_REPLY_PURPOSE`].
//!
//! Why the node binary and not the store layer: the command is not a member of the ring, and
//! a member answers only the nodes it knows (`Node::send_layer_to`); handling the request in
//! `wendy node` keeps the storage layer's messages between members (where a record from a
//! node that is no replica is refused) and needs no change to wendy-proto. The answer goes
//! to the address the command gives, over a connection of its own.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use wendy_driver::{describe_rejection, Error as DriverError};
use wendy_proto::store::StoreError;
use wendy_proto::{Event, NodeError, Target};
use wendy_tokio::{NodeEvent, NodeHandle, Sender};

use crate::Error;

/// The purpose of a store request from `wendy put`/`get`/`delete` to `wendy node`.
pub const STORE_REQUEST_PURPOSE: u8 = 254;
/// The purpose of `wendy node`'s answer to a store request.
pub const STORE_REPLY_PURPOSE: u8 = 253;
/// The version of the request and answer formats.
const FORMAT: u8 = 1;

/// A store operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    Delete,
}

/// How an operation ended, on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Status {
    Ok = 0,
    NotFound = 1,
    Partial = 2,
    TooLarge = 3,
    Failed = 4,
}

/// A request as `wendy node` reads it.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    pub id: u64,
    pub reply_to: SocketAddr,
    pub key: Bytes,
    pub value: Bytes,
}

pub fn encode_request(r: &Request) -> Bytes {
    let addr = r.reply_to.to_string();
    let mut b = BytesMut::with_capacity(32 + addr.len() + r.key.len() + r.value.len());
    b.put_u8(FORMAT);
    b.put_u8(match r.op {
        Op::Put => 0,
        Op::Get => 1,
        Op::Delete => 2,
    });
    b.put_u64_le(r.id);
    b.put_u8(addr.len() as u8);
    b.put_slice(addr.as_bytes());
    b.put_u16_le(r.key.len() as u16);
    b.put_slice(&r.key);
    b.put_slice(&r.value);
    b.freeze()
}

/// Reads a request; `None` if it is not one.
pub fn decode_request(p: &Bytes) -> Option<Request> {
    if *p.first()? != FORMAT {
        return None;
    }
    let op = match *p.get(1)? {
        0 => Op::Put,
        1 => Op::Get,
        2 => Op::Delete,
        _ => return None,
    };
    let id = u64::from_le_bytes(p.get(2..10)?.try_into().ok()?);
    let alen = usize::from(*p.get(10)?);
    let reply_to = std::str::from_utf8(p.get(11..11 + alen)?).ok()?.parse().ok()?;
    let at = 11 + alen;
    let klen = usize::from(u16::from_le_bytes(p.get(at..at + 2)?.try_into().ok()?));
    let key = p.slice(at + 2..(at + 2 + klen).min(p.len()));
    if key.len() != klen {
        return None;
    }
    Some(Request { op, id, reply_to, key, value: p.slice(at + 2 + klen..) })
}

fn encode_reply(id: u64, status: Status, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(10 + payload.len());
    b.put_u8(FORMAT);
    b.put_u64_le(id);
    b.put_u8(status as u8);
    b.put_slice(payload);
    b.freeze()
}

/// What a reply says: the request id, then the value (get), or an error for a person.
fn decode_reply(p: &Bytes) -> Option<(u64, Result<Bytes, Error>)> {
    if *p.first()? != FORMAT {
        return None;
    }
    let id = u64::from_le_bytes(p.get(1..9)?.try_into().ok()?);
    let body = p.slice(10.min(p.len())..);
    let text = || String::from_utf8_lossy(&body).into_owned();
    let r = match *p.get(9)? {
        0 => Ok(body.clone()),
        1 => Err("not found".into()),
        2 => Err(format!("quorum failure: {}", text()).into()),
        3 => Err(format!("too large: {}", text()).into()),
        _ => Err(text().into()),
    };
    Some((id, r))
}

/// `wendy node`: runs a request with the node's store and sends the answer back.
pub async fn serve(sender: Sender, r: Request) {
    let outcome = match r.op {
        Op::Put => sender.put(&r.key, r.value.clone()).await.map(|v| Bytes::from(format!("version {}", v.counter))),
        Op::Get => sender.get(&r.key).await,
        Op::Delete => sender.delete(&r.key).await.map(|()| Bytes::new()),
    };
    let reply = match outcome {
        Ok(body) => encode_reply(r.id, Status::Ok, &body),
        Err(DriverError::Store(e)) => {
            let status = match e {
                StoreError::NotFound => Status::NotFound,
                StoreError::Partial { .. } | StoreError::StoreFull { .. } | StoreError::Timeout => Status::Partial,
                StoreError::ValueTooLarge { .. } => Status::TooLarge,
                _ => Status::Failed,
            };
            encode_reply(r.id, status, e.to_string().as_bytes())
        }
        Err(e) => encode_reply(r.id, Status::Failed, e.to_string().as_bytes()),
    };
    if let Err(e) = sender.send_to(Target::Addr(r.reply_to), STORE_REPLY_PURPOSE, reply).await {
        tracing::warn!(to = %r.reply_to, "cannot answer a store request: {e}");
    }
}

/// Store a value under a key through a running node.
#[derive(clap::Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    common: Common,
    /// The value.
    value: String,
}

/// Read the newest value of a key through a running node (printed on standard output).
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    common: Common,
}

/// Delete a key through a running node.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
struct Common {
    /// The node to ask, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    via: String,
    /// File holding the ring's shared secret (default: the file named by WENDY_SECRET_FILE).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 15)]
    timeout: u64,
    /// The key (any text).
    key: String,
}

pub async fn put(a: PutArgs) -> Result<(), Error> {
    let v = request(&a.common, Op::Put, Bytes::from(a.value.into_bytes())).await?;
    println!("stored {} ({})", a.common.key, String::from_utf8_lossy(&v));
    Ok(())
}

pub async fn get(a: GetArgs) -> Result<(), Error> {
    let v = request(&a.common, Op::Get, Bytes::new()).await?;
    println!("{}", String::from_utf8_lossy(&v));
    Ok(())
}

pub async fn delete(a: DeleteArgs) -> Result<(), Error> {
    request(&a.common, Op::Delete, Bytes::new()).await?;
    println!("deleted {}", a.common.key);
    Ok(())
}

/// Sends one request through `via` and waits for its answer.
async fn request(c: &Common, op: Op, value: Bytes) -> Result<Bytes, Error> {
    let (via, mut node) = crate::send::client_node(&c.via, c.secret_file.as_deref()).await?;
    // The node listens on every address; the answer comes to the one that reaches `via` (a
    // UDP socket "connected" to it names that address without sending anything).
    let any = crate::send::unspecified(via);
    let probe = UdpSocket::bind(SocketAddr::new(any, 0)).and_then(|s| s.connect(via).and(s.local_addr()));
    let here = probe.map_err(|e| format!("no route to {via}: {e}"))?.ip();
    let reply_to = SocketAddr::new(here, node.local_addr().port());
    let id = u64::from_le_bytes(wendy_driver::os_entropy()?[..8].try_into().unwrap_or_default());
    let key = Bytes::from(c.key.clone().into_bytes());
    let req = encode_request(&Request { op, id, reply_to, key, value });
    let outcome = async {
        node.send_to(Target::Addr(via), STORE_REQUEST_PURPOSE, req)
            .await
            .map_err(|e| format!("cannot send through {via}: {e}"))?;
        let limit = Duration::from_secs(c.timeout);
        tokio::time::timeout(limit, answer(&mut node, via, id))
            .await
            .unwrap_or_else(|_| Err(format!("no answer from {via} within {} s", limit.as_secs()).into()))
    }
    .await;
    node.stop().await;
    outcome
}

async fn answer(node: &mut NodeHandle, via: SocketAddr, id: u64) -> Result<Bytes, Error> {
    while let Some(ev) = node.next_event().await {
        match ev {
            NodeEvent::Deliver(d) if d.direct && d.purpose == STORE_REPLY_PURPOSE => {
                if let Some((got, r)) = decode_reply(&d.payload) {
                    if got == id {
                        return r;
                    }
                }
            }
            NodeEvent::Event(Event::RejectedByPeer { addr, reason } | Event::PeerRejected { addr, reason, .. }) => {
                return Err(format!("rejected by {addr}: {}", describe_rejection(reason)).into());
            }
            NodeEvent::Event(Event::Error(NodeError::ConnectFailed { addr })) if addr == via => {
                return Err(format!("could not connect to {via}").into());
            }
            _ => {}
        }
    }
    Err("the command's node stopped".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_and_garbage_is_refused() {
        let r = Request {
            op: Op::Put,
            id: 7,
            reply_to: "127.0.0.1:9".parse().unwrap(),
            key: Bytes::from_static(b"colour"),
            value: Bytes::from_static(b"blue"),
        };
        assert_eq!(decode_request(&encode_request(&r)), Some(r));
        assert_eq!(decode_request(&Bytes::from_static(b"\x01\x00")), None);
        assert_eq!(decode_request(&Bytes::new()), None);
        let (id, v) = decode_reply(&encode_reply(9, Status::Ok, b"v")).unwrap();
        assert_eq!((id, v.unwrap()), (9, Bytes::from_static(b"v")));
        let (_, e) = decode_reply(&encode_reply(9, Status::NotFound, b"")).unwrap();
        assert_eq!(e.unwrap_err().to_string(), "not found");
    }
}
