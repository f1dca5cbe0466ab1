//! A wendy node driven without any async runtime: `std::net` sockets, one thread per socket
//! reader and dial, and one thread that owns the `wendy_proto::Node` and runs the sans-IO loop
//! (feed an input, drain every output, sleep until `poll_timeout` or the next input).
//!
//! ```text
//! cargo run -p wendy --example blocking
//! ```
//! Starts two such nodes on 127.0.0.1, joins the second to the first, routes a message towards
//! the first node's id and prints its delivery.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use wendy_proto::{Config, ConnId, Delivery, Event, Instant, Node, NodeId, Output};

/// An input for the node's thread.
enum Input {
    Accepted(TcpStream, SocketAddr),
    Connected(ConnId, std::io::Result<TcpStream>),
    Data(ConnId, Bytes),
    Closed(ConnId),
    Send(NodeId, Bytes),
    Join(SocketAddr),
}

/// Starts a node listening on `listener`; deliveries go to `delivered`.
fn start(id: NodeId, listener: TcpListener, delivered: Sender<Delivery>) -> Sender<Input> {
    let (tx, rx) = mpsc::channel::<Input>();
    let addr = listener.local_addr().expect("bound");
    let accept_tx = tx.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let peer = stream.peer_addr().unwrap_or(addr);
            if accept_tx.send(Input::Accepted(stream, peer)).is_err() {
                return;
            }
        }
    });
    let inputs = tx.clone();
    thread::spawn(move || {
        let origin = std::time::Instant::now();
        let now = || Instant::from_micros(origin.elapsed().as_micros() as u64);
        // This example is a driver: it must give the node entropy from the OS.
        let entropy = wendy_driver::os_entropy().expect("OS entropy");
        let cfg = Config::with_trusted_id(id, addr).with_entropy(entropy);
        let mut node = Node::new(cfg, now()).expect("a valid config");
        let mut conns: HashMap<ConnId, TcpStream> = HashMap::new();
        loop {
            // Sleep until the node's next deadline or the next input.
            let wait = node.poll_timeout().map_or(Duration::from_secs(3600), |t| {
                Duration::from_micros(t.as_micros().saturating_sub(now().as_micros()))
            });
            match rx.recv_timeout(wait) {
                Ok(Input::Accepted(stream, peer)) => {
                    let conn = node.handle_accepted(now(), peer);
                    attach(conn, stream, &mut conns, &inputs);
                }
                Ok(Input::Connected(conn, Ok(stream))) => {
                    attach(conn, stream, &mut conns, &inputs);
                    node.handle_connected(now(), conn);
                }
                Ok(Input::Connected(conn, Err(_))) => node.handle_connect_failed(now(), conn),
                Ok(Input::Data(conn, data)) => node.handle_bytes(now(), conn, data),
                Ok(Input::Closed(conn)) => {
                    if conns.remove(&conn).is_some() {
                        node.handle_closed(now(), conn);
                    }
                }
                Ok(Input::Send(key, payload)) => {
                    if let Err(e) = node.send(now(), key, 16, payload) {
                        eprintln!("send refused: {e}");
                    }
                }
                Ok(Input::Join(bootstrap)) => {
                    if let Err(e) = node.join(now(), &[bootstrap]) {
                        eprintln!("join refused: {e}");
                    }
                }
                Err(RecvTimeoutError::Timeout) => node.handle_timeout(now()),
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Drain every output.
            while let Some(out) = node.poll_output() {
                match out {
                    Output::Connect { conn, addr } => {
                        let tx = inputs.clone();
                        thread::spawn(move || {
                            let r = TcpStream::connect_timeout(&addr, Duration::from_secs(3));
                            let _ = tx.send(Input::Connected(conn, r));
                        });
                    }
                    Output::Transmit { conn, data } => {
                        // A blocking write: simple, and fine for an example (a real driver
                        // queues per connection, as wendy-driver does).
                        if let Some(s) = conns.get_mut(&conn) {
                            let _ = s.write_all(&data);
                        }
                    }
                    Output::Close { conn } => {
                        if let Some(s) = conns.remove(&conn) {
                            let _ = s.shutdown(Shutdown::Write);
                        }
                    }
                    Output::Deliver(d) => {
                        let _ = delivered.send(d);
                    }
                    Output::Event(Event::Joined) => println!("node {id} joined"),
                    Output::Forwarded { .. } | Output::Event(_) => {}
                }
            }
        }
    });
    tx
}

/// Keeps the stream for writing and starts its reader thread.
fn attach(conn: ConnId, stream: TcpStream, conns: &mut HashMap<ConnId, TcpStream>, tx: &Sender<Input>) {
    let _ = stream.set_nodelay(true);
    let Ok(mut reader) = stream.try_clone() else {
        let _ = tx.send(Input::Closed(conn));
        return;
    };
    conns.insert(conn, stream);
    let tx = tx.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Input::Data(conn, Bytes::copy_from_slice(&buf[..n]))).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Input::Closed(conn));
    });
}

fn main() -> std::io::Result<()> {
    let (delivered_tx, delivered) = mpsc::channel();
    let (a_id, b_id) = (NodeId::hash(b"a"), NodeId::hash(b"b"));
    let a_listener = TcpListener::bind("127.0.0.1:0")?;
    let a_addr = a_listener.local_addr()?;
    let _a = start(a_id, a_listener, delivered_tx.clone());
    let b = start(b_id, TcpListener::bind("127.0.0.1:0")?, delivered_tx);
    b.send(Input::Join(a_addr)).expect("b runs");
    // Messages sent before the join completes are held by the node and routed once it has.
    b.send(Input::Send(a_id, Bytes::from_static(b"hello without a runtime"))).expect("b runs");
    match delivered.recv_timeout(Duration::from_secs(10)) {
        Ok(d) => {
            println!("delivered towards {} after {} hops: {}", d.key, d.hops, String::from_utf8_lossy(&d.payload));
            Ok(())
        }
        Err(_) => Err(std::io::Error::other("no delivery within 10 s")),
    }
}
