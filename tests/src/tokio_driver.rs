//! The facade for `wendy-tokio`: one shared multi-threaded runtime, blocking calls.

use std::net::SocketAddr;
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use wendy_proto::{Config, ForwardHook, Forwarding, Node, NodeId, NodeInfo, Target};
use wendy_tokio::{Events, NodeHandle, Options, Sender};

use crate::facade::{pump, pump_slowly, relay, Driver, Ev, TestNode};

/// Runs nodes under Tokio.
#[derive(Debug, Default)]
pub struct TokioDriver;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a Tokio runtime can be built")
    })
}

struct TokioNode {
    handle: NodeHandle,
    events: mpsc::Receiver<Ev>,
}

/// Starts a node with `opts` and hands its events to `app` (a task on the runtime), which
/// passes what the test sees to the returned node's channel.
fn boot<F>(
    config: Config,
    opts: Options,
    app: impl FnOnce(Events, Sender, mpsc::Sender<Ev>) -> F,
) -> std::io::Result<Box<dyn TestNode>>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let rt = runtime();
    let mut handle = rt.block_on(NodeHandle::start_with(config, opts)).map_err(std::io::Error::other)?;
    let rx = handle.take_events().expect("events not taken yet");
    let (tx, events) = mpsc::channel();
    rt.spawn(app(rx, handle.sender(), tx));
    Ok(Box::new(TokioNode { handle, events }))
}

impl Driver for TokioDriver {
    const NAME: &'static str = "tokio";

    fn start_with_options(&self, config: Config, opts: Options) -> std::io::Result<Box<dyn TestNode>> {
        boot(config, opts, |rx, _, tx| pump(rx, tx))
    }

    fn start_slow_app(
        &self,
        config: Config,
        event_capacity: usize,
        pause: Duration,
    ) -> std::io::Result<Box<dyn TestNode>> {
        let mut opts = Options::default();
        opts.event_capacity = event_capacity;
        boot(config, opts, move |rx, _, tx| pump_slowly(rx, tx, move || tokio::time::sleep(pause)))
    }

    fn start_relay(
        &self,
        config: Config,
        event_capacity: usize,
        to: NodeId,
        purpose: u8,
    ) -> std::io::Result<Box<dyn TestNode>> {
        let mut opts = Options::default();
        opts.event_capacity = event_capacity;
        boot(config, opts, move |rx, sender, tx| {
            relay(rx, sender, to, purpose, tx, || tokio::time::sleep(Duration::from_millis(1)))
        })
    }
}

impl TestNode for TokioNode {
    fn id(&self) -> NodeId {
        self.handle.id()
    }

    fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    fn join(&self, bootstrap: SocketAddr, timeout: Duration) -> Result<(), String> {
        runtime().block_on(async {
            match tokio::time::timeout(timeout, self.handle.join(&[bootstrap])).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("join timed out".into()),
            }
        })
    }

    fn send(&self, key: NodeId, purpose: u8, payload: Bytes) -> Result<(), String> {
        runtime().block_on(self.handle.send(key, purpose, payload)).map_err(|e| e.to_string())
    }

    fn send_batch(&self, batch: Vec<(NodeId, u8, Bytes)>) -> Result<(), String> {
        runtime().block_on(self.handle.send_batch(batch)).map_err(|e| e.to_string())
    }

    fn send_to(&self, target: Target, purpose: u8, payload: Bytes) -> Result<(), String> {
        runtime().block_on(self.handle.send_to(target, purpose, payload)).map_err(|e| e.to_string())
    }

    fn set_forward_hook(&self, mut hook: Box<dyn ForwardHook>) {
        let hook = move |f: &mut Forwarding, n: &NodeInfo| hook.on_forward(f, n);
        let _ = runtime().block_on(self.handle.set_forward_hook(hook));
    }

    fn inspect(&self, f: Box<dyn FnOnce(&Node) + Send>) -> bool {
        runtime().block_on(self.handle.inspect(f)).is_ok()
    }

    fn metrics(&self) -> Option<wendy_driver::Metrics> {
        runtime().block_on(self.handle.metrics()).ok()
    }

    fn leave(&self) {
        runtime().block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.handle.leave()).await;
        });
    }

    fn crash(&self) {
        self.handle.abort();
    }

    fn freeze(&self) {
        self.handle.freeze();
    }

    fn thaw(&self) {
        self.handle.thaw();
    }

    fn put(&self, key: &[u8], value: Bytes) -> Result<(), String> {
        runtime().block_on(self.handle.put(key, value)).map(|_| ()).map_err(|e| e.to_string())
    }

    fn get(&self, key: &[u8]) -> Result<Bytes, String> {
        runtime().block_on(self.handle.get(key)).map_err(|e| e.to_string())
    }

    fn events(&self) -> &mpsc::Receiver<Ev> {
        &self.events
    }
}
