//! Driver settings.

/// Driver settings, beyond the protocol's [`Config`](wendy_proto::Config).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// The address to listen on; `None`: the node's own local address. Set it to listen on
    /// another address than the one advertised (`0.0.0.0:7000` behind `10.0.0.1:7000`, say);
    /// if the advertised port is 0, the bound port replaces it.
    pub listen: Option<std::net::SocketAddr>,
    /// While more bytes than this wait to be written (all connections together), application
    /// commands wait: `send` applies back-pressure instead of growing queues.
    pub max_queued_bytes: usize,
    /// A peer that lets more unwritten bytes than this pile up for it is disconnected, so a
    /// slow peer cannot make the node use unbounded memory.
    pub max_conn_queue_bytes: usize,
    /// Size of each read from a socket (the node task reads every socket into one buffer of
    /// this size).
    pub read_buffer: usize,
    /// Events handed to the application and not yet read, at most. Past it the node keeps
    /// deliveries and tells its peers it has not handed them on, so that each peer's window
    /// (4 x `Config::max_pending_per_peer` messages per connection) bounds what waits; it
    /// reads on (probes and acknowledgements are answered, so an application that waits for
    /// room to send before it reads its events cannot stall its node), and stops reading the
    /// network only once 16 windows' worth of deliveries wait. Other events beyond twice this
    /// are dropped and counted.
    pub event_capacity: usize,
    /// How long a send waits for room when the node's window and queue towards the next hop
    /// are full (see `Config::max_pending_per_peer`) before it is answered
    /// [`CommandError::Backpressure`](wendy_proto::CommandError::Backpressure). The node task
    /// takes no other command meanwhile, and reads the network on. Zero: refused at once.
    pub send_wait: std::time::Duration,
    /// Capacity of the command channel.
    pub command_capacity: usize,
    /// After a leave, the node task stops once the node says it has drained
    /// ([`Event::Drained`](wendy_proto::Event::Drained)), or after this long at most.
    pub leave_limit: std::time::Duration,
    /// Report [`NodeEvent::Forwarded`](crate::NodeEvent::Forwarded) for every message passed on.
    pub report_forwarded: bool,
    /// Report [`Event::Heartbeat`](wendy_proto::Event::Heartbeat)s.
    pub report_heartbeats: bool,
    /// Run the storage layer ([`wendy_proto::store`]), so that
    /// [`NodeHandle::put`](crate::NodeHandle::put), `get` and `delete` work; `None`: no store.
    pub store: Option<StoreOptions>,
}

/// The storage layer's settings in a driver.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreOptions {
    /// The layer's parameters.
    pub config: wendy_proto::store::StoreConfig,
    /// Keep the records in a database in this directory (file `store.redb`), so that a node
    /// restarted with the same identity serves them again; `None`: in memory.
    pub data_dir: Option<std::path::PathBuf>,
}

impl StoreOptions {
    /// Records kept in memory.
    pub fn in_memory(config: wendy_proto::store::StoreConfig) -> Self {
        StoreOptions { config, data_dir: None }
    }

    /// Records kept on disk under `dir`.
    pub fn on_disk(config: wendy_proto::store::StoreConfig, dir: impl Into<std::path::PathBuf>) -> Self {
        StoreOptions { config, data_dir: Some(dir.into()) }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: None,
            max_queued_bytes: 8 << 20,
            max_conn_queue_bytes: 64 << 20,
            read_buffer: 64 << 10,
            event_capacity: 1 << 16,
            send_wait: crate::core::SEND_WAIT,
            command_capacity: 1024,
            leave_limit: std::time::Duration::from_secs(10),
            report_forwarded: true,
            report_heartbeats: true,
            store: None,
        }
    }
}
