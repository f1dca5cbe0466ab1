//! The facade for `wendy-smol`: smol's global executor, blocking calls.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use wendy_proto::{Config, ForwardHook, Forwarding, Node, NodeId, NodeInfo, Target};
use wendy_smol::{Events, NodeHandle, Options, Sender};

use crate::facade::{pump, pump_slowly, relay, Driver, Ev, TestNode};

/// Runs nodes under smol.
#[derive(Debug, Default)]
pub struct SmolDriver;

struct SmolNode {
    handle: NodeHandle,
    events: mpsc::Receiver<Ev>,
}

/// Starts a node with `opts` and hands its events to `app` (a task on smol's executor), which
/// passes what the test sees to the returned node's channel.
fn boot<F>(
    config: Config,
    opts: Options,
    app: impl FnOnce(Events, Sender, mpsc::Sender<Ev>) -> F,
) -> std::io::Result<Box<dyn TestNode>>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut handle = smol::block_on(NodeHandle::start_with(config, opts)).map_err(std::io::Error::other)?;
    let rx = handle.take_events().expect("events not taken yet");
    let (tx, events) = mpsc::channel();
    smol::spawn(app(rx, handle.sender(), tx)).detach();
    Ok(Box::new(SmolNode { handle, events }))
}

/// Sleeps `d` on smol's timer.
async fn sleep(d: Duration) {
    smol::Timer::after(d).await;
}

impl Driver for SmolDriver {
    const NAME: &'static str = "smol";

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
        boot(config, opts, move |rx, _, tx| pump_slowly(rx, tx, move || sleep(pause)))
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
        boot(config, opts, move |rx, sender, tx| relay(rx, sender, to, purpose, tx, || sleep(Duration::from_millis(1))))
    }
}

impl TestNode for SmolNode {
    fn id(&self) -> NodeId {
        self.handle.id()
    }

    fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    fn join(&self, bootstrap: SocketAddr, timeout: Duration) -> Result<(), String> {
        use smol::future::FutureExt;
        smol::block_on((async { self.handle.join(&[bootstrap]).await.map_err(|e| e.to_string()) }).or(async {
            smol::Timer::after(timeout).await;
            Err("join timed out".into())
        }))
    }

    fn send(&self, key: NodeId, purpose: u8, payload: Bytes) -> Result<(), String> {
        smol::block_on(self.handle.send(key, purpose, payload)).map_err(|e| e.to_string())
    }

    fn send_batch(&self, batch: Vec<(NodeId, u8, Bytes)>) -> Result<(), String> {
        smol::block_on(self.handle.send_batch(batch)).map_err(|e| e.to_string())
    }

    fn send_to(&self, target: Target, purpose: u8, payload: Bytes) -> Result<(), String> {
        smol::block_on(self.handle.send_to(target, purpose, payload)).map_err(|e| e.to_string())
    }

    fn set_forward_hook(&self, mut hook: Box<dyn ForwardHook>) {
        let hook = move |f: &mut Forwarding, n: &NodeInfo| hook.on_forward(f, n);
        let _ = smol::block_on(self.handle.set_forward_hook(hook));
    }

    fn inspect(&self, f: Box<dyn FnOnce(&Node) + Send>) -> bool {
        smol::block_on(self.handle.inspect(f)).is_ok()
    }

    fn metrics(&self) -> Option<wendy_driver::Metrics> {
        smol::block_on(self.handle.metrics()).ok()
    }

    fn leave(&self) {
        use smol::future::FutureExt;
        smol::block_on(self.handle.leave().or(async {
            smol::Timer::after(Duration::from_secs(5)).await;
        }));
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
        smol::block_on(self.handle.put(key, value)).map(|_| ()).map_err(|e| e.to_string())
    }

    fn get(&self, key: &[u8]) -> Result<Bytes, String> {
        smol::block_on(self.handle.get(key)).map_err(|e| e.to_string())
    }

    fn events(&self) -> &mpsc::Receiver<Ev> {
        &self.events
    }
}
