//! Where replicas are kept: the [`Backend`] trait and its in-memory implementation.
//!
//! The storage layer calls its backend synchronously, as the node calls its
//! [`ForwardHook`](crate::ForwardHook): the layer decides *what* to keep and the backend only
//! keeps it. [`MemoryBackend`] is pure (the simulator and tests use it); the drivers use a
//! database on disk (`wendy_driver::RedbBackend`). The layer stays deterministic for a given
//! sequence of backend answers; a backend that fails is reported, and the layer keeps serving
//! what it can.

use core::fmt;
use std::collections::BTreeMap;

use crate::id::NodeId;

use super::record::{Meta, Record};

/// A backend could not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendError(pub String);

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage backend: {}", self.0)
    }
}

impl std::error::Error for BackendError {}

/// Keeps the records of one node, by key.
pub trait Backend: Send {
    /// The record of `key`, if any.
    fn get(&self, key: NodeId) -> Result<Option<Record>, BackendError>;
    /// Stores `record` under `key`, replacing what was there. A persistent backend may make
    /// it durable after returning (see [`close`](Backend::close)), but [`get`](Backend::get)
    /// sees it at once.
    fn put(&mut self, key: NodeId, record: &Record) -> Result<(), BackendError>;
    /// Removes `key`.
    fn remove(&mut self, key: NodeId) -> Result<(), BackendError>;
    /// Every key and what it holds, in key order (once, when the layer starts).
    fn scan(&self) -> Result<Vec<(NodeId, Meta)>, BackendError>;
    /// Makes every change durable and releases what the backend holds (a graceful stop; the
    /// backend is not used afterwards). Nothing to do for a memory backend.
    fn close(&mut self) {}
}

/// Records in memory, in a B-tree.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    records: BTreeMap<NodeId, Record>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Backend for MemoryBackend {
    fn get(&self, key: NodeId) -> Result<Option<Record>, BackendError> {
        Ok(self.records.get(&key).cloned())
    }

    fn put(&mut self, key: NodeId, record: &Record) -> Result<(), BackendError> {
        self.records.insert(key, record.clone());
        Ok(())
    }

    fn remove(&mut self, key: NodeId) -> Result<(), BackendError> {
        self.records.remove(&key);
        Ok(())
    }

    fn scan(&self) -> Result<Vec<(NodeId, Meta)>, BackendError> {
        Ok(self.records.iter().map(|(k, r)| (*k, r.meta())).collect())
    }
}
