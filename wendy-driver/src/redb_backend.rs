//! The storage layer's records on disk, in a [redb](https://docs.rs/redb) database.
//!
//! Why redb: it is pure Rust (no C toolchain, no `unsafe` C bindings to audit), keeps one
//! file, gives ACID transactions with copy-on-write B-trees (a crash mid-write leaves the last
//! committed state), and is actively maintained with a stable file format since 1.0. The
//! store's access pattern (point reads and writes by a 128-bit key, one scan at start) is
//! exactly a B-tree's.
//!
//! Writes do not touch the disk on the caller's thread: [`put`](Backend::put) and
//! [`remove`](Backend::remove) queue the change (reads see it at once) and a writer thread
//! commits the queue in batches, each batch one transaction synced to the disk (redb's
//! `Immediate` durability). Both drivers call the backend from the node task, and on Linux
//! redb syncs the file at every commit whatever its durability setting says; a sync per
//! record on the node task stalled every node sharing the executor thread (smol runs one by
//! default) for long enough, on a busy disk, to miss heartbeats and break the ring. A crash
//! loses at most the batch not yet committed, which the other replicas still hold and
//! maintenance brings back; a graceful stop commits everything first
//! ([`close`](Backend::close)). The queue is bounded ([`MAX_QUEUED_BYTES`]); past it a
//! write fails with a [`BackendError`], which the storage layer reports as a refusal.
//!
//! Expiry times are the node's monotonic [`Instant`]s, which start again at zero when a node
//! restarts: a record read back after a restart never expires early, and may outlive its
//! time to live by at most the time the node was down.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use bytes::Bytes;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use wendy_proto::store::{Backend, BackendError, Meta, Record, Version};
use wendy_proto::{Instant, NodeId};

const RECORDS: TableDefinition<u128, &[u8]> = TableDefinition::new("records");
/// The format of a stored record; another is refused (and reported) rather than misread.
const FORMAT: u8 = 1;
/// Most bytes of changes queued for the writer thread; a write past it fails.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

/// Records kept in a redb database file, written by a thread of their own.
pub struct RedbBackend {
    db: Option<Arc<Database>>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

/// What the node task and the writer thread share.
#[derive(Default)]
struct Shared {
    state: Mutex<Queue>,
    wake: Condvar,
}

/// Changes not yet committed: encoded records, `None` for a removal.
#[derive(Default)]
struct Queue {
    queued: BTreeMap<u128, Option<Vec<u8>>>,
    queued_bytes: usize,
    /// The batch being committed (still read from here until its commit is done).
    committing: Arc<BTreeMap<u128, Option<Vec<u8>>>>,
    /// The last commit's failure, reported by the next write.
    failed: Option<String>,
    stop: bool,
    /// The handle's reference to the database, handed over at drop so that the last
    /// reference (whose drop syncs the file) is dropped on the writer thread.
    parting: Option<Arc<Database>>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: Version,
    value: Option<Vec<u8>>,
    expires_us: Option<u64>,
}

fn err(e: impl std::fmt::Display) -> BackendError {
    BackendError(e.to_string())
}

fn entry_bytes(v: &Option<Vec<u8>>) -> usize {
    v.as_ref().map_or(0, Vec::len) + 32
}

impl RedbBackend {
    /// Opens (or creates) the database at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        let db = Database::create(path).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(RECORDS).map_err(err)?;
        tx.commit().map_err(err)?;
        let db = Arc::new(db);
        let shared = Arc::new(Shared::default());
        let writer = {
            let (db, shared) = (db.clone(), shared.clone());
            std::thread::Builder::new()
                .name("wendy-store".into())
                .spawn(move || write_loop(&db, &shared))
                .map_err(err)?
        };
        Ok(RedbBackend { db: Some(db), shared, writer: Some(writer) })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enqueue(&mut self, key: NodeId, change: Option<Vec<u8>>) -> Result<(), BackendError> {
        let mut q = self.lock();
        if let Some(e) = q.failed.take() {
            return Err(BackendError(e));
        }
        if q.stop {
            return Err(err("closed"));
        }
        let added = entry_bytes(&change);
        if q.queued_bytes + added > MAX_QUEUED_BYTES {
            return Err(err("write queue full: the disk is not keeping up"));
        }
        if let Some(old) = q.queued.insert(key.as_u128(), change) {
            q.queued_bytes -= entry_bytes(&old);
        }
        q.queued_bytes += added;
        drop(q);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Stops the writer thread after it committed every queued change, and waits for it.
    fn shut(&mut self) {
        let db = self.db.take();
        {
            let mut q = self.lock();
            q.stop = true;
            q.parting = db;
        }
        self.shared.wake.notify_one();
    }

    fn decode(bytes: &[u8]) -> Result<Record, BackendError> {
        let (&format, body) = bytes.split_first().ok_or_else(|| err("empty record"))?;
        if format != FORMAT {
            return Err(err(format!("record of format {format}")));
        }
        let s: Stored = postcard::from_bytes(body).map_err(err)?;
        Ok(Record {
            version: s.version,
            value: s.value.map(Bytes::from),
            expires: s.expires_us.map(Instant::from_micros),
        })
    }
}

/// The writer thread: commits the queue, a batch at a time, until stopped and empty.
fn write_loop(db: &Database, shared: &Shared) {
    loop {
        let batch = {
            let mut q = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            while q.queued.is_empty() && !q.stop {
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if q.queued.is_empty() {
                // Stopped with nothing left: the database (and the handle's reference to
                // it, in `parting`) is dropped here, off the node task.
                let parting = q.parting.take();
                drop(q);
                drop(parting);
                return;
            }
            q.queued_bytes = 0;
            let batch = Arc::new(std::mem::take(&mut q.queued));
            q.committing = batch.clone();
            batch
        };
        let result = commit(db, &batch);
        let mut q = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        q.committing = Arc::default();
        if let Err(e) = result {
            tracing::warn!(error = %e, records = batch.len(), "store commit failed");
            q.failed = Some(e.0);
        }
    }
}

fn commit(db: &Database, batch: &BTreeMap<u128, Option<Vec<u8>>>) -> Result<(), BackendError> {
    let mut tx = db.begin_write().map_err(err)?;
    tx.set_durability(redb::Durability::Immediate);
    {
        let mut table = tx.open_table(RECORDS).map_err(err)?;
        for (k, v) in batch {
            match v {
                Some(bytes) => {
                    table.insert(*k, bytes.as_slice()).map_err(err)?;
                }
                None => {
                    table.remove(*k).map_err(err)?;
                }
            }
        }
    }
    tx.commit().map_err(err)
}

impl Drop for RedbBackend {
    /// Does not wait: the writer thread commits what is queued and then closes the file
    /// (a crash, simulated by dropping a node mid-flight, must not block the executor).
    fn drop(&mut self) {
        self.shut();
        drop(self.writer.take());
    }
}

impl Backend for RedbBackend {
    fn get(&self, key: NodeId) -> Result<Option<Record>, BackendError> {
        let k = key.as_u128();
        {
            let q = self.lock();
            if let Some(change) = q.queued.get(&k).or_else(|| q.committing.get(&k)) {
                return change.as_deref().map(Self::decode).transpose();
            }
        }
        let db = self.db.as_ref().ok_or_else(|| err("closed"))?;
        let tx = db.begin_read().map_err(err)?;
        let table = tx.open_table(RECORDS).map_err(err)?;
        match table.get(k).map_err(err)? {
            Some(v) => Self::decode(v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn put(&mut self, key: NodeId, record: &Record) -> Result<(), BackendError> {
        let stored = Stored {
            version: record.version,
            value: record.value.as_ref().map(|v| v.to_vec()),
            expires_us: record.expires.map(Instant::as_micros),
        };
        let mut bytes = vec![FORMAT];
        bytes.extend_from_slice(&postcard::to_allocvec(&stored).map_err(err)?);
        self.enqueue(key, Some(bytes))
    }

    fn remove(&mut self, key: NodeId) -> Result<(), BackendError> {
        self.enqueue(key, None)
    }

    fn scan(&self) -> Result<Vec<(NodeId, Meta)>, BackendError> {
        let db = self.db.as_ref().ok_or_else(|| err("closed"))?;
        let tx = db.begin_read().map_err(err)?;
        let table = tx.open_table(RECORDS).map_err(err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(err)? {
            let (k, v) = entry.map_err(err)?;
            // A record this version cannot read is skipped, not fatal: the replicas still
            // hold it and maintenance brings it back.
            if let Ok(r) = Self::decode(v.value()) {
                out.push((NodeId::from_u128(k.value()), r.meta()));
            }
        }
        Ok(out)
    }

    /// Commits every queued change, closes the file and waits for both.
    fn close(&mut self) {
        self.shut();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("wendy-redb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.redb");
        let _ = std::fs::remove_file(&path);
        let k1 = NodeId::from_u128(1);
        let v = Version { counter: 4, writer: NodeId::from_u128(9) };
        {
            let mut b = RedbBackend::open(&path).unwrap();
            let r = Record { version: v, value: Some(Bytes::from_static(b"hello")), expires: None };
            b.put(k1, &r).unwrap();
            b.put(NodeId::from_u128(2), &Record { version: v, value: None, expires: Some(Instant::from_secs(3)) })
                .unwrap();
            b.remove(NodeId::from_u128(2)).unwrap();
            // Read back from the queue, before the writer thread committed it (or after).
            assert_eq!(b.get(k1).unwrap().unwrap().version, v);
            assert_eq!(b.get(NodeId::from_u128(2)).unwrap(), None);
            b.close();
        }
        let b = RedbBackend::open(&path).unwrap();
        assert_eq!(b.get(k1).unwrap().unwrap().value.unwrap(), Bytes::from_static(b"hello"));
        let scan = b.scan().unwrap();
        assert_eq!(scan.len(), 1);
        assert_eq!(scan[0].1.version, v);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
