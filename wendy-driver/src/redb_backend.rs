//! The storage layer's records on disk, in a [redb](https://docs.rs/redb) database.
//!
//! Why redb: it is pure Rust (no C toolchain, no `unsafe` C bindings to audit), keeps one
//! file, gives ACID transactions with copy-on-write B-trees (a crash mid-write leaves the last
//! committed state), and is actively maintained with a stable file format since 1.0. The
//! store's access pattern (point reads and writes by a 128-bit key, one scan at start) is
//! exactly a B-tree's.
//!
//! Every [`put`](Backend::put) and [`remove`](Backend::remove) is its own committed
//! transaction, with redb's `Eventual` durability: when the call returns the record is in the
//! file and survives a crash of the process; the file is synced to the disk later, so a crash
//! of the machine may lose the last writes (never corrupt the file), which the replicas still
//! hold and maintenance brings back. Syncing every write instead stalls the node task for a
//! disk flush per record, long enough to miss heartbeats under load. Expiry times are the node's monotonic [`Instant`]s, which start again at zero when
//! a node restarts: a record read back after a restart never expires early, and may outlive
//! its time to live by at most the time the node was down.

use std::path::Path;

use bytes::Bytes;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use wendy_proto::store::{Backend, BackendError, Meta, Record, Version};
use wendy_proto::{Instant, NodeId};

const RECORDS: TableDefinition<u128, &[u8]> = TableDefinition::new("records");
/// The format of a stored record; another is refused (and reported) rather than misread.
const FORMAT: u8 = 1;

/// Records kept in a redb database file.
pub struct RedbBackend {
    db: Database,
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

impl RedbBackend {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        let db = Database::create(path).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(RECORDS).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(RedbBackend { db })
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

impl Backend for RedbBackend {
    fn get(&self, key: NodeId) -> Result<Option<Record>, BackendError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(RECORDS).map_err(err)?;
        match table.get(key.as_u128()).map_err(err)? {
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
        let mut tx = self.db.begin_write().map_err(err)?;
        tx.set_durability(redb::Durability::Eventual);
        {
            let mut table = tx.open_table(RECORDS).map_err(err)?;
            table.insert(key.as_u128(), bytes.as_slice()).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn remove(&mut self, key: NodeId) -> Result<(), BackendError> {
        let mut tx = self.db.begin_write().map_err(err)?;
        tx.set_durability(redb::Durability::Eventual);
        {
            let mut table = tx.open_table(RECORDS).map_err(err)?;
            table.remove(key.as_u128()).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn scan(&self) -> Result<Vec<(NodeId, Meta)>, BackendError> {
        let tx = self.db.begin_read().map_err(err)?;
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
        }
        let b = RedbBackend::open(&path).unwrap();
        assert_eq!(b.get(k1).unwrap().unwrap().value.unwrap(), Bytes::from_static(b"hello"));
        let scan = b.scan().unwrap();
        assert_eq!(scan.len(), 1);
        assert_eq!(scan[0].1.version, v);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
